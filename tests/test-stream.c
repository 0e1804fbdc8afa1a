/*
 * test-stream.c - src/stream.c: buffered reads (read, readexactly,
 * readline, readuntil) with data arriving in pieces, write buffering and
 * flushing, EOF and errors, and what cancellation and deadlines leave in
 * the stream.
 */
#include <limits.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "helpers.h"

static void socketpair_or_fail(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
}

static void pipe_or_fail(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
}

static corio_stream *stream_or_fail(int fd, size_t buf_size)
{
	corio_stream *s = NULL;

	assert_int_equal(corio_stream_new(fd, buf_size, &s), 0);
	assert_non_null(s);
	return s;
}

static int pending_bytes(int fd)
{
	int n = -1;

	assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

/* What the peer of a socket can take now, without waiting: -errno if none. */
static ssize_t recv_now(int fd, void *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

	return n < 0 ? -errno : n;
}

/* Asserts a result and the bytes it returned: "expect" is a C string. */
#define assert_got(n, buf, expect)					\
	do {								\
		ssize_t n_ = (n);					\
		size_t len_ = strlen(expect);				\
									\
		assert_int_equal(n_, (ssize_t)len_);			\
		assert_memory_equal((buf), (expect), len_);		\
	} while (0)

/*
 * A writer task: sends data to fd in chunks of the sizes in chunks[]
 * (cycling; 0 there means 1), yielding after each one so that the reader
 * sees the pieces separately, then closes fd if asked to (EOF).
 */
struct feeder {
	int fd;
	const char *data;
	size_t len;
	const size_t *chunks;
	size_t nr_chunks;
	int close_after;
};

static int feeder_fn(void *arg)
{
	struct feeder *f = arg;
	static const size_t one = 1;
	const size_t *chunks = f->nr_chunks ? f->chunks : &one;
	size_t nr = f->nr_chunks ? f->nr_chunks : 1;
	size_t off = 0, i = 0, part;
	ssize_t n;

	while (off < f->len) {
		part = chunks[i++ % nr];
		if (part == 0)
			part = 1;
		if (part > f->len - off)
			part = f->len - off;
		n = corio_write(f->fd, f->data + off, part, (uint64_t)-1);
		assert_int_equal(n, (ssize_t)part);
		off += part;
		assert_int_equal(corio_yield(), 0);
	}
	if (f->close_after)
		assert_int_equal(corio_close(f->fd), 0);
	return 0;
}

static corio_task *feed(struct feeder *f)
{
	corio_task *t = corio_spawn(feeder_fn, f);

	assert_non_null(t);
	return t;
}

/* ---- arguments ---------------------------------------------------------- */

static int invalid_main(void *arg)
{
	corio_stream *s = NULL;
	char buf[32];
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	/* errors: corio_stream.3 EINVAL */
	assert_int_equal(corio_stream_new(-1, 0, &s), -EINVAL);
	assert_int_equal(corio_stream_new(sv[0], 0, NULL), -EINVAL);
	assert_int_equal(corio_stream_new(sv[0], 15, &s), -EINVAL);
	assert_int_equal(corio_stream_new(sv[0], 256u * 1024u * 1024u + 1, &s),
			 -EINVAL);
	assert_null(s);

	assert_int_equal(corio_stream_fd(NULL), -EINVAL);
	assert_int_equal(corio_stream_read(NULL, buf, 1), -EINVAL);
	assert_int_equal(corio_stream_readexactly(NULL, buf, 1), -EINVAL);
	assert_int_equal(corio_stream_readline(NULL, buf, 1), -EINVAL);
	assert_int_equal(corio_stream_readuntil(NULL, "x", 1, buf, 1),
			 -EINVAL);
	assert_int_equal(corio_stream_write(NULL, "x", 1), -EINVAL);
	assert_int_equal(corio_stream_flush(NULL), -EINVAL);
	assert_int_equal(corio_stream_close(NULL), -EINVAL);
	corio_stream_free(NULL);

	s = stream_or_fail(sv[0], 16);
	assert_int_equal(corio_stream_fd(s), sv[0]);
	assert_int_equal(corio_stream_readuntil(s, NULL, 1, buf, 8), -EINVAL);
	assert_int_equal(corio_stream_readuntil(s, "x", 0, buf, 8), -EINVAL);
	assert_int_equal(corio_stream_read(s, NULL, 1), -EINVAL);
	assert_int_equal(corio_stream_readexactly(s, NULL, 1), -EINVAL);
	assert_int_equal(corio_stream_readexactly(s, buf,
						  (size_t)SSIZE_MAX + 1),
			 -EINVAL);
	assert_int_equal(corio_stream_readline(s, NULL, 1), -EINVAL);
	assert_int_equal(corio_stream_readuntil(s, "x", 1, NULL, 1), -EINVAL);
	assert_int_equal(corio_stream_write(s, NULL, 1), -EINVAL);

	/* Zero lengths: nothing to do, nothing waited for. */
	assert_int_equal(corio_stream_read(s, NULL, 0), 0);
	assert_int_equal(corio_stream_readexactly(s, NULL, 0), 0);
	assert_int_equal(corio_stream_write(s, NULL, 0), 0);
	assert_int_equal(corio_stream_flush(s), 0);

	/* A delimiter that cannot fit: -EMSGSIZE at once, without data. */
	/* errors: corio_stream.3 EMSGSIZE */
	assert_int_equal(corio_stream_readline(s, buf, 0), -EMSGSIZE);
	assert_int_equal(corio_stream_readuntil(s, "abc", 3, buf, 2),
			 -EMSGSIZE);
	assert_int_equal(pending_bytes(sv[0]), 0);

	assert_int_equal(corio_stream_close(s), 0);
	assert_false(fd_is_open(sv[0]));
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_invalid_arguments(void **state)
{
	(void)state;
	RUN(invalid_main, NULL);
}

/*
 * Outside a task a stream can be made, freed and closed (the fd is
 * closed with close(2)); only I/O needs a task.
 */
static void test_outside_a_task(void **state)
{
	corio_stream *s;
	char buf[8];
	int sv[2];

	(void)state;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 0);
	/* errors: corio_stream.3 EPERM */
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), -EPERM);
	assert_int_equal(corio_stream_write(s, "ab", 2), 2);
	assert_int_equal(corio_stream_flush(s), -EPERM);
	corio_stream_free(s);
	assert_true(fd_is_open(sv[0]));	/* free hands the fd back */

	s = stream_or_fail(sv[0], 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_false(fd_is_open(sv[0]));
	close(sv[1]);
}

/* ---- reading ------------------------------------------------------------ */

struct piece_arg {
	int use_pipe;
	size_t chunk;		/* 0: one byte at a time */
};

static int lines_in_pieces_main(void *arg)
{
	const struct piece_arg *pa = arg;
	static const char text[] = "hello world\nsecond line\n\nthird";
	size_t chunks[] = { pa->chunk ? pa->chunk : 1, 3, 5, 7 };
	struct feeder f = { .data = text, .len = sizeof(text) - 1,
			    .chunks = chunks,
			    .nr_chunks = pa->chunk ? ARRAY_SIZE(chunks) : 1,
			    .close_after = 1 };
	corio_stream *s;
	corio_task *t;
	char buf[64];
	int fds[2];

	if (pa->use_pipe)
		pipe_or_fail(fds);
	else
		socketpair_or_fail(fds);
	f.fd = fds[1];
	s = stream_or_fail(fds[0], 16);
	t = feed(&f);
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf,
		   "hello world\n");
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf,
		   "second line\n");
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf, "\n");
	/* EOF without a newline: the rest as it is, then nothing. */
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf, "third");
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_readline_bytewise_socketpair(void **state)
{
	struct piece_arg pa = { 0, 0 };

	(void)state;
	RUN(lines_in_pieces_main, &pa);
}

static void test_readline_odd_chunks_pipe(void **state)
{
	struct piece_arg pa = { 1, 2 };

	(void)state;
	RUN(lines_in_pieces_main, &pa);
}

/*
 * A multi-byte delimiter split across reads, with near misses ("\r\n\r"
 * then not "\n") straddling the reads too.
 */
static int multibyte_delim_main(void *arg)
{
	static const char text[] =
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		"a\r\n\rb\r\n\r\n"
		"\r\n\r\n"
		"tail";
	const size_t *chunk = arg;
	struct feeder f = { .data = text, .len = sizeof(text) - 1,
			    .chunks = chunk, .nr_chunks = 1,
			    .close_after = 1 };
	corio_stream *s;
	corio_task *t;
	char buf[128];
	int sv[2];

	socketpair_or_fail(sv);
	f.fd = sv[1];
	s = stream_or_fail(sv[0], 32);
	t = feed(&f);
	assert_got(corio_stream_readuntil(s, "\r\n\r\n", 4, buf, sizeof(buf)),
		   buf, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_got(corio_stream_readuntil(s, "\r\n\r\n", 4, buf, sizeof(buf)),
		   buf, "a\r\n\rb\r\n\r\n");
	assert_got(corio_stream_readuntil(s, "\r\n\r\n", 4, buf, sizeof(buf)),
		   buf, "\r\n\r\n");
	/* EOF before the delimiter: -ENODATA, and the bytes stay. */
	assert_int_equal(corio_stream_readuntil(s, "\r\n\r\n", 4, buf,
						sizeof(buf)), -ENODATA);
	assert_int_equal(corio_stream_readuntil(s, "\r\n\r\n", 4, buf,
						sizeof(buf)), -ENODATA);
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf, "tail");
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_readuntil_delimiter_split_across_reads(void **state)
{
	size_t chunk;

	(void)state;
	for (chunk = 1; chunk <= 7; chunk++)
		RUN(multibyte_delim_main, &chunk);
}

/*
 * -EMSGSIZE when the delimiter is not within min(max, buf_size) bytes:
 * the data stays buffered for corio_stream_read.
 */
static int msgsize_main(void *arg)
{
	static const char text[] = "0123456789abcdef\nline\n";
	char buf[256], big[100];
	corio_stream *s;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 64);
	assert_int_equal(send_all(sv[1], text, sizeof(text) - 1),
			 (ssize_t)sizeof(text) - 1);
	/* 17 bytes with the newline: max 16 is one short, 17 fits. */
	assert_int_equal(corio_stream_readline(s, buf, 16), -EMSGSIZE);
	assert_int_equal(corio_stream_readuntil(s, "\n", 1, buf, 10),
			 -EMSGSIZE);
	assert_got(corio_stream_readline(s, buf, 17), buf,
		   "0123456789abcdef\n");
	assert_int_equal(corio_stream_readuntil(s, "ne\n", 3, buf, 4),
			 -EMSGSIZE);
	assert_got(corio_stream_read(s, buf, 3), buf, "lin");
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf, "e\n");

	/*
	 * A line longer than the buffer: buf_size bounds it whatever max
	 * says, and the first buf_size bytes are then readable.
	 */
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\n';
	assert_int_equal(send_all(sv[1], big, sizeof(big)),
			 (ssize_t)sizeof(big));
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)),
			 -EMSGSIZE);
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), 64);
	assert_memory_equal(buf, big, 64);
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), 36);
	assert_memory_equal(buf, big + 64, 36);

	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_readuntil_msgsize_keeps_data(void **state)
{
	(void)state;
	RUN(msgsize_main, NULL);
}

static int readexactly_main(void *arg)
{
	static const char text[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	static const size_t chunks[] = { 1, 4, 2, 9 };
	struct feeder f = { .data = text, .len = sizeof(text) - 1,
			    .chunks = chunks, .nr_chunks = ARRAY_SIZE(chunks),
			    .close_after = 1 };
	corio_stream *s;
	corio_task *t;
	char buf[64];
	int p[2];

	(void)arg;
	pipe_or_fail(p);
	f.fd = p[1];
	s = stream_or_fail(p[0], 16);
	t = feed(&f);
	assert_int_equal(corio_stream_readexactly(s, buf, 5), 5);
	assert_memory_equal(buf, "abcde", 5);
	/* More than the buffer holds: straight into buf. */
	assert_int_equal(corio_stream_readexactly(s, buf, 20), 20);
	assert_memory_equal(buf, "fghijklmnopqrstuvwxy", 20);
	assert_int_equal(corio_stream_readexactly(s, buf, 1), 1);
	assert_memory_equal(buf, "z", 1);
	/* 10 bytes left, 16 asked: -ENODATA, the 10 stay readable. */
	/* errors: corio_stream.3 ENODATA */
	assert_int_equal(corio_stream_readexactly(s, buf, 16), -ENODATA);
	assert_int_equal(corio_stream_readexactly(s, buf, 11), -ENODATA);
	assert_int_equal(corio_stream_readexactly(s, buf, 10), 10);
	assert_memory_equal(buf, "0123456789", 10);
	assert_int_equal(corio_stream_readexactly(s, buf, 1), -ENODATA);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_readexactly_pieces_and_short(void **state)
{
	(void)state;
	RUN(readexactly_main, NULL);
}

/*
 * readexactly of more than buf_size that meets EOF: -ENODATA, and the
 * bytes are gone (they went straight into the caller's buffer).
 */
static int readexactly_big_short_main(void *arg)
{
	char buf[64];
	corio_stream *s;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 16);
	assert_int_equal(send_all(sv[1], "0123456789", 10), 10);
	assert_int_equal(corio_stream_readexactly(s, buf, 2), 2);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_stream_readexactly(s, buf, 40), -ENODATA);
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_readexactly_beyond_buffer_at_eof(void **state)
{
	(void)state;
	RUN(readexactly_big_short_main, NULL);
}

/*
 * read returns what is buffered without waiting for more, else one read
 * of the fd; a read of buf_size or more with nothing buffered goes
 * straight into the caller's buffer.
 */
static int read_main(void *arg)
{
	char buf[64];
	corio_stream *s;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 16);
	assert_int_equal(send_all(sv[1], "one\ntwo", 7), 7);
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf, "one\n");
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf, "two");
	assert_int_equal(send_all(sv[1], "0123456789abcdefXYZ", 19), 19);
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf,
		   "0123456789abcdefXYZ");
	assert_int_equal(send_all(sv[1], "0123456789abcdefXYZ", 19), 19);
	assert_got(corio_stream_read(s, buf, 4), buf, "0123");
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf,
		   "456789abcdef");
	assert_got(corio_stream_read(s, buf, sizeof(buf)), buf, "XYZ");
	assert_int_equal(corio_stream_read(s, buf, 0), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_read_buffered_then_fd(void **state)
{
	(void)state;
	RUN(read_main, NULL);
}

/* A line that is already buffered costs no I/O at all. */
static int buffered_line_main(void *arg)
{
	struct corio_stats before, after;
	char buf[16];
	corio_stream *s;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 0);
	assert_int_equal(send_all(sv[1], "a\nbb\nccc\n", 9), 9);
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf, "a\n");
	before = stats_now();
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf, "bb\n");
	assert_got(corio_stream_readuntil(s, "c\n", 2, buf, sizeof(buf)), buf,
		   "ccc\n");
	after = stats_now();
	assert_int_equal(after.cqes, before.cqes);
	assert_int_equal(after.turns, before.turns);
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_buffered_line_does_no_io(void **state)
{
	(void)state;
	RUN(buffered_line_main, NULL);
}

/* A regular file: reads and writes advance the file position. */
static int file_main(void *arg)
{
	const char *path = arg;
	char buf[64];
	corio_stream *s;
	int fd, i;

	fd = corio_openat(AT_FDCWD, path, O_WRONLY | O_TRUNC, 0);
	assert_true(fd >= 0);
	s = stream_or_fail(fd, 16);
	for (i = 0; i < 10; i++) {
		int n = snprintf(buf, sizeof(buf), "line %d of ten\n", i);

		assert_int_equal(corio_stream_write(s, buf, (size_t)n), n);
	}
	assert_int_equal(corio_stream_write(s, "no newline", 10), 10);
	assert_int_equal(corio_stream_close(s), 0);

	fd = corio_openat(AT_FDCWD, path, O_RDONLY, 0);
	assert_true(fd >= 0);
	s = stream_or_fail(fd, 16);
	for (i = 0; i < 10; i++) {
		char expect[32];

		snprintf(expect, sizeof(expect), "line %d of ten\n", i);
		assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf,
			   expect);
	}
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf,
		   "no newline");
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_regular_file(void **state)
{
	char path[] = "/tmp/corio-test-stream.XXXXXX";
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	RUN(file_main, path);
	unlink(path);
}

/* ---- writing ------------------------------------------------------------ */

/*
 * Nothing reaches the peer until a flush or until the buffer fills; a
 * write of buf_size or more goes out right behind the buffered bytes.
 */
static int write_buffering_main(void *arg)
{
	char buf[256], data[100];
	corio_stream *s;
	int sv[2];
	size_t i;

	(void)arg;
	for (i = 0; i < sizeof(data); i++)
		data[i] = (char)('A' + i % 26);
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 64);
	assert_int_equal(corio_stream_write(s, data, 10), 10);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), -EAGAIN);
	assert_int_equal(corio_stream_write(s, data + 10, 50), 50);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), -EAGAIN);
	/* 60 + 10: the full 64 go out, 6 stay. */
	assert_int_equal(corio_stream_write(s, data + 60, 10), 10);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), 64);
	assert_memory_equal(buf, data, 64);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), -EAGAIN);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), 6);
	assert_memory_equal(buf, data + 64, 6);
	assert_int_equal(corio_stream_flush(s), 0);	/* nothing left */

	/* Exactly filling the buffer writes it out. */
	assert_int_equal(corio_stream_write(s, data, 30), 30);
	assert_int_equal(corio_stream_write(s, data + 30, 34), 34);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), 64);
	assert_memory_equal(buf, data, 64);

	/* Bigger than the buffer: buffered bytes first, then all of it. */
	assert_int_equal(corio_stream_write(s, "abc", 3), 3);
	assert_int_equal(corio_stream_write(s, data, 100), 100);
	assert_int_equal(pending_bytes(sv[1]), 103);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), 103);
	assert_memory_equal(buf, "abc", 3);
	assert_memory_equal(buf + 3, data, 100);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), -EAGAIN);

	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_write_buffers_until_flush_or_full(void **state)
{
	(void)state;
	RUN(write_buffering_main, NULL);
}

#define BIG_LEN	(3u * 1024u * 1024u + 17u)

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 2654435761u >> 13);
}

/* Reads BIG_LEN bytes through a stream in odd pieces and checks them. */
static int big_reader(void *arg)
{
	corio_stream *s = arg;
	static const size_t sizes[] = { 1, 4095, 17, 70000, 3, 65536, 999 };
	unsigned char *buf = malloc(70000);
	size_t off = 0, i = 0, want, j;
	ssize_t n;

	assert_non_null(buf);
	while (off < BIG_LEN) {
		want = sizes[i++ % ARRAY_SIZE(sizes)];
		if (want > BIG_LEN - off)
			want = BIG_LEN - off;
		if (i % 2)
			n = corio_stream_readexactly(s, buf, want);
		else
			n = corio_stream_read(s, buf, want);
		assert_true(n > 0);
		for (j = 0; j < (size_t)n; j++)
			if (buf[j] != pattern(off + j))
				fail_msg("byte %zu differs", off + j);
		off += (size_t)n;
	}
	assert_int_equal(corio_stream_read(s, buf, 1), 0);
	free(buf);
	return 0;
}

static int big_write_main(void *arg)
{
	static const size_t sizes[] = { 5000, 1, 4096, 123457, 7, 4095, 300 };
	unsigned char *data = malloc(BIG_LEN);
	corio_stream *w, *r;
	corio_task *t;
	size_t off = 0, i = 0, part;
	int sv[2];

	(void)arg;
	assert_non_null(data);
	for (off = 0; off < BIG_LEN; off++)
		data[off] = pattern(off);
	socketpair_or_fail(sv);
	w = stream_or_fail(sv[0], 4096);
	r = stream_or_fail(sv[1], 8192);
	t = corio_spawn(big_reader, r);
	assert_non_null(t);
	for (off = 0; off < BIG_LEN; off += part) {
		part = sizes[i++ % ARRAY_SIZE(sizes)];
		if (part > BIG_LEN - off)
			part = BIG_LEN - off;
		assert_int_equal(corio_stream_write(w, data + off, part),
				 (ssize_t)part);
	}
	/* close flushes the tail, and the reader then sees EOF. */
	assert_int_equal(corio_stream_close(w), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_stream_close(r), 0);
	free(data);
	assert_loop_clean();
	return 0;
}

static void test_large_writes(void **state)
{
	(void)state;
	RUN(big_write_main, NULL);
}

static int close_flushes_main(void *arg)
{
	char buf[64];
	corio_stream *s;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 0);
	assert_int_equal(corio_stream_write(s, "bye\n", 4), 4);
	assert_int_equal(recv_now(sv[1], buf, sizeof(buf)), -EAGAIN);
	assert_int_equal(corio_stream_close(s), 0);
	assert_false(fd_is_open(sv[0]));
	assert_int_equal(recv_all(sv[1], buf, 4), 4);
	assert_memory_equal(buf, "bye\n", 4);
	assert_int_equal(corio_recv(sv[1], buf, sizeof(buf), 0), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_close_flushes(void **state)
{
	(void)state;
	RUN(close_flushes_main, NULL);
}

/*
 * corio_stream_close in a cancelled task: the flush fails with
 * -ECANCELED, the buffered bytes are dropped, and still the fd is closed
 * and the stream freed.
 */
struct closer {
	corio_stream *s;
	int ret;
};

static int cancelled_closer(void *arg)
{
	struct closer *c = arg;

	assert_int_equal(corio_stream_write(c->s, "lost", 4), 4);
	assert_int_equal(corio_cancel(corio_self()), 0);
	c->ret = corio_stream_close(c->s);
	return 0;
}

static int close_cancelled_main(void *arg)
{
	struct closer c = { .ret = 1 };
	char buf[8];
	corio_task *t;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	c.s = stream_or_fail(sv[0], 0);
	t = corio_spawn(cancelled_closer, &c);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(c.ret, -ECANCELED);
	assert_false(fd_is_open(sv[0]));
	assert_int_equal(corio_recv(sv[1], buf, sizeof(buf), 0), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_close_in_cancelled_task_still_closes(void **state)
{
	(void)state;
	RUN(close_cancelled_main, NULL);
}

/* ---- errors ------------------------------------------------------------- */

static int peer_gone_main(void *arg)
{
	char buf[16];
	corio_stream *s;
	int sv[2], p[2];

	(void)arg;
	/* A socket whose peer has closed: -EPIPE on flush, EOF on read. */
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_stream_write(s, "x", 1), 1);
	/* errors: corio_stream.3 EPIPE */
	assert_int_equal(corio_stream_flush(s), -EPIPE);
	/* The unwritten byte is still buffered: close reports it. */
	assert_int_equal(corio_stream_close(s), -EPIPE);

	/* A pipe with no reader. */
	pipe_or_fail(p);
	assert_int_equal(corio_close(p[0]), 0);
	s = stream_or_fail(p[1], 16);
	assert_int_equal(corio_stream_write(s, "0123456789abcdefg", 17),
			 -EPIPE);
	assert_int_equal(corio_stream_close(s), 0);

	/* An fd that is not open. */
	pipe_or_fail(p);
	assert_int_equal(corio_close(p[0]), 0);
	assert_int_equal(corio_close(p[1]), 0);
	s = stream_or_fail(p[0], 0);
	/* errors: corio_stream.3 EBADF */
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), -EBADF);
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), -EBADF);
	corio_stream_free(s);
	assert_loop_clean();
	return 0;
}

static void test_peer_gone_epipe(void **state)
{
	(void)state;
	RUN(peer_gone_main, NULL);
}

/*
 * The read side's I/O error passes through: a pty master whose slave was
 * opened and closed again reads -EIO (Linux), and so does the stream.
 */
static int pty_eio_main(void *arg)
{
	int master = *(int *)arg, slave;
	char buf[16];
	corio_stream *s;

	slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(slave >= 0);
	assert_int_equal(close(slave), 0);
	s = stream_or_fail(master, 0);
	/* errors: corio_stream.3 EIO */
	assert_int_equal(corio_stream_read(s, buf, sizeof(buf)), -EIO);
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), -EIO);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_pty_hangup_eio(void **state)
{
	int master;

	(void)state;
	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
		print_message("skipped: no pseudo-terminal (%s)\n",
			      strerror(errno));
		if (master >= 0)
			close(master);
		skip();
	}
	RUN(pty_eio_main, &master);
}

static int local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Serves one connection of lfd: echoes lines through streams. */
static int line_echo_server(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd;
	corio_stream *s;
	char line[128];
	ssize_t n;

	fd = corio_accept(lfd, NULL, NULL, 0);
	assert_true(fd >= 0);
	s = stream_or_fail(fd, 64);
	while ((n = corio_stream_readline(s, line, sizeof(line))) > 0) {
		assert_int_equal(corio_stream_write(s, line, (size_t)n), n);
		/* Answer each batch of requests once it is all read. */
		if (n == 5 && memcmp(line, "over\n", 5) == 0)
			assert_int_equal(corio_stream_flush(s), 0);
	}
	assert_int_equal(n, 0);
	return corio_stream_close(s);
}

static int tcp_main(void *arg)
{
	char line[128];
	corio_stream *s;
	corio_task *t;
	int lfd, fd, i;

	(void)arg;
	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	assert_true(lfd >= 0);
	t = corio_spawn(line_echo_server, (void *)(intptr_t)lfd);
	assert_non_null(t);
	fd = corio_dial("127.0.0.1", local_port(lfd));
	assert_true(fd >= 0);
	s = stream_or_fail(fd, 0);
	for (i = 0; i < 100; i++) {
		int n = snprintf(line, sizeof(line), "request %d\n", i);

		assert_int_equal(corio_stream_write(s, line, (size_t)n), n);
	}
	assert_int_equal(corio_stream_write(s, "over\n", 5), 5);
	assert_int_equal(corio_stream_flush(s), 0);
	for (i = 0; i < 100; i++) {
		char expect[32];

		snprintf(expect, sizeof(expect), "request %d\n", i);
		assert_got(corio_stream_readline(s, line, sizeof(line)), line,
			   expect);
	}
	assert_got(corio_stream_readline(s, line, sizeof(line)), line,
		   "over\n");
	assert_int_equal(corio_shutdown(fd, SHUT_WR), 0);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_close(lfd), 0);
	assert_loop_clean();
	return 0;
}

static void test_over_listen_dial_accept(void **state)
{
	(void)state;
	RUN(tcp_main, NULL);
}

/* The peer resets the connection: reads see -ECONNRESET. */
static int reset_main(void *arg)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char buf[16];
	corio_stream *s;
	int lfd, fd, afd, ret;

	(void)arg;
	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	assert_true(lfd >= 0);
	fd = corio_dial("127.0.0.1", local_port(lfd));
	assert_true(fd >= 0);
	afd = corio_accept(lfd, NULL, NULL, 0);
	assert_true(afd >= 0);
	s = stream_or_fail(fd, 0);
	/* Linger 0: the close sends an RST, not a FIN. */
	assert_int_equal(setsockopt(afd, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	assert_int_equal(corio_close(afd), 0);
	/* errors: corio_stream.3 ECONNRESET */
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)),
			 -ECONNRESET);
	assert_int_equal(corio_stream_write(s, "x", 1), 1);
	ret = corio_stream_flush(s);
	assert_true(ret == -EPIPE || ret == -ECONNRESET);
	corio_stream_close(s);
	assert_int_equal(corio_close(lfd), 0);
	assert_loop_clean();
	return 0;
}

static void test_peer_reset_econnreset(void **state)
{
	(void)state;
	RUN(reset_main, NULL);
}

/* ---- cancellation and deadlines ----------------------------------------- */

struct blocked {
	corio_stream *s;
	int parked;
	ssize_t ret;
	char buf[64];
};

static int readline_task(void *arg)
{
	struct blocked *b = arg;

	b->parked = 1;
	b->ret = corio_stream_readline(b->s, b->buf, sizeof(b->buf));
	return 0;
}

/*
 * A task blocked in readline with half a line buffered is cancelled:
 * -ECANCELED, and the half line stays for the next reader.
 */
static int cancel_readline_main(void *arg)
{
	struct blocked b = { .ret = 1 };
	char buf[64];
	corio_task *t;
	int sv[2], i;

	(void)arg;
	socketpair_or_fail(sv);
	b.s = stream_or_fail(sv[0], 0);
	assert_int_equal(send_all(sv[1], "hel", 3), 3);
	t = corio_spawn(readline_task, &b);
	assert_non_null(t);
	yield_until(&b.parked);
	/* Until the stream has taken the 3 bytes, and parked again. */
	for (i = 0; i < 1000 && pending_bytes(sv[0]) > 0; i++)
		assert_int_equal(corio_yield(), 0);
	assert_int_equal(pending_bytes(sv[0]), 0);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(b.ret, 1);	/* still blocked */
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	/* errors: corio_stream.3 ECANCELED */
	assert_int_equal(b.ret, -ECANCELED);

	assert_int_equal(send_all(sv[1], "lo\nworld\n", 9), 9);
	assert_got(corio_stream_readline(b.s, buf, sizeof(buf)), buf,
		   "hello\n");

	/* And another task can block in it and be served. */
	b.parked = 0;
	b.ret = 1;
	t = corio_spawn(readline_task, &b);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_got(b.ret, b.buf, "world\n");

	assert_int_equal(corio_stream_close(b.s), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_cancel_blocked_readline_keeps_stream(void **state)
{
	(void)state;
	RUN(cancel_readline_main, NULL);
}

static int deadline_main(void *arg)
{
	char buf[64];
	corio_stream *s;
	uint64_t old, t0, took;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 16);
	assert_int_equal(send_all(sv[1], "part", 4), 4);

	old = corio_timeout(CORIO_MSEC(20));
	t0 = corio_now();
	/* errors: corio_stream.3 ETIMEDOUT */
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)),
			 -ETIMEDOUT);
	took = corio_now() - t0;
	assert_true(took >= CORIO_MSEC(20));
	assert_true(took < test_slack_ns(CORIO_SEC(5)));
	/* Past the deadline: fails at once, even with data on the way. */
	assert_int_equal(corio_stream_readexactly(s, buf, 8), -ETIMEDOUT);
	corio_deadline(old);

	/* The partial line survived both. */
	assert_int_equal(send_all(sv[1], "ial\n", 4), 4);
	assert_got(corio_stream_readline(s, buf, sizeof(buf)), buf,
		   "partial\n");

	/* Writes too: a full socket and a deadline. */
	old = corio_timeout(CORIO_MSEC(20));
	for (;;) {
		static char junk[4096];
		ssize_t n = corio_stream_write(s, junk, sizeof(junk));

		if (n < 0) {
			assert_int_equal(n, -ETIMEDOUT);
			break;
		}
	}
	corio_deadline(old);
	corio_stream_free(s);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_deadline_gives_etimedout(void **state)
{
	(void)state;
	RUN(deadline_main, NULL);
}

/* ---- one reader and one writer at once ---------------------------------- */

#define DUPLEX_LINES	2000

static int echo_peer(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[1000];
	ssize_t n;

	while ((n = corio_recv(fd, buf, sizeof(buf), 0)) > 0)
		assert_int_equal(send_all(fd, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	return corio_close(fd);
}

static int duplex_writer(void *arg)
{
	corio_stream *s = arg;
	char line[32];
	int i, n;

	for (i = 0; i < DUPLEX_LINES; i++) {
		n = snprintf(line, sizeof(line), "%d\n", i);
		assert_int_equal(corio_stream_write(s, line, (size_t)n), n);
		if (i % 100 == 99)
			assert_int_equal(corio_stream_flush(s), 0);
	}
	assert_int_equal(corio_stream_flush(s), 0);
	return corio_shutdown(corio_stream_fd(s), SHUT_WR);
}

static int duplex_main(void *arg)
{
	char line[32], expect[32];
	corio_task *peer, *w;
	corio_stream *s;
	int sv[2], i;

	(void)arg;
	socketpair_or_fail(sv);
	s = stream_or_fail(sv[0], 64);
	peer = corio_spawn(echo_peer, (void *)(intptr_t)sv[1]);
	w = corio_spawn(duplex_writer, s);
	assert_non_null(peer);
	assert_non_null(w);
	for (i = 0; i < DUPLEX_LINES; i++) {
		snprintf(expect, sizeof(expect), "%d\n", i);
		assert_got(corio_stream_readline(s, line, sizeof(line)), line,
			   expect);
	}
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 0);
	assert_int_equal(corio_join(w), 0);
	assert_int_equal(corio_join(peer), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_one_reader_one_writer(void **state)
{
	(void)state;
	RUN(duplex_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_invalid_arguments),
		CORIO_TEST(test_outside_a_task),
		CORIO_TEST(test_readline_bytewise_socketpair),
		CORIO_TEST(test_readline_odd_chunks_pipe),
		CORIO_TEST(test_readuntil_delimiter_split_across_reads),
		CORIO_TEST(test_readuntil_msgsize_keeps_data),
		CORIO_TEST(test_readexactly_pieces_and_short),
		CORIO_TEST(test_readexactly_beyond_buffer_at_eof),
		CORIO_TEST(test_read_buffered_then_fd),
		CORIO_TEST(test_buffered_line_does_no_io),
		CORIO_TEST(test_regular_file),
		CORIO_TEST(test_write_buffers_until_flush_or_full),
		CORIO_TEST(test_large_writes),
		CORIO_TEST(test_close_flushes),
		CORIO_TEST(test_close_in_cancelled_task_still_closes),
		CORIO_TEST(test_peer_gone_epipe),
		CORIO_TEST(test_pty_hangup_eio),
		CORIO_TEST(test_over_listen_dial_accept),
		CORIO_TEST(test_peer_reset_econnreset),
		CORIO_TEST(test_cancel_blocked_readline_keeps_stream),
		CORIO_TEST(test_deadline_gives_etimedout),
		CORIO_TEST(test_one_reader_one_writer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
