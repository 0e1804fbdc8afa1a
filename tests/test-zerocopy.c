/*
 * test-zerocopy.c - corio_send_zc and corio_sendfile: a zero-copy send's
 * buffer is reusable once it returns; the fallbacks to a plain send; a
 * 50 MiB file sent byte for byte, with and without an offset, through a
 * pipe and through the copying fallback.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "helpers.h"


#define ZC_LEN	(256u * 1024u)

struct zc_reader {
	int fd;
	size_t len;
	unsigned char *got;
};

static int zc_read(void *arg)
{
	struct zc_reader *r = arg;

	return recv_all(r->fd, r->got, r->len) == (ssize_t)r->len ? 0 : -EIO;
}

/*
 * The sender overwrites its buffer as soon as corio_send_zc returns: the
 * reader still gets the bytes as they were (the kernel no longer reads
 * the pages once the notification came).
 */
static int send_zc_main(void *arg)
{
	unsigned char *buf = malloc(ZC_LEN), *got = malloc(3 * ZC_LEN);
	struct zc_reader r;
	corio_task *t;
	size_t i, done;
	int a, b, round;
	ssize_t n;

	(void)arg;
	assert_non_null(buf);
	assert_non_null(got);
	assert_int_equal(tcp_pair(&a, &b), 0);
	r.fd = b;
	r.len = 3 * ZC_LEN;
	r.got = got;
	t = corio_spawn(zc_read, &r);
	assert_non_null(t);
	for (round = 0; round < 3; round++) {
		for (i = 0; i < ZC_LEN; i++)
			buf[i] = (unsigned char)(i * 13 + (size_t)round);
		for (done = 0; done < ZC_LEN; done += (size_t)n) {
			n = corio_send_zc(a, buf + done, ZC_LEN - done, 0);
			assert_true(n > 0);
		}
		memset(buf, 0xee, ZC_LEN);	/* reused at once */
	}
	assert_int_equal(corio_join(t), 0);
	for (round = 0; round < 3; round++)
		for (i = 0; i < ZC_LEN; i++)
			if (got[(size_t)round * ZC_LEN + i] !=
			    (unsigned char)(i * 13 + (size_t)round))
				fail_msg("round %d byte %zu changed", round, i);
	assert_int_equal(corio_close(a), 0);
	assert_int_equal(corio_close(b), 0);

	/* AF_UNIX refuses zero copy: a plain send instead. */
	{
		int sv[2];
		char c = 0;

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					    0, sv), 0);
		assert_int_equal(corio_send_zc(sv[0], "z", 1, 0), 1);
		assert_int_equal(read(sv[1], &c, 1), 1);
		assert_int_equal(c, 'z');
		assert_int_equal(corio_close(sv[1]), 0);
		/* errors: corio_send_zc.3 EPIPE */
		assert_int_equal(corio_send_zc(sv[0], "z", 1, 0), -EPIPE);
		assert_int_equal(corio_close(sv[0]), 0);
	}
	/* errors: corio_send_zc.3 EBADF */
	assert_int_equal(corio_send_zc(-1, "z", 1, 0), -EBADF);
	free(buf);
	free(got);
	assert_loop_clean();
	return 0;
}

static void test_send_zc_buffer_reusable_on_return(void **state)
{
	(void)state;
	RUN(send_zc_main, NULL);
	/* The same through the plain send. */
	assert_int_equal(setenv("CORIO_DISABLE", "send_zc", 1), 0);
	RUN(send_zc_main, NULL);
	unsetenv("CORIO_DISABLE");
	/* errors: corio_send_zc.3 EPERM */
	assert_int_equal(corio_send_zc(0, "z", 1, 0), -EPERM);
}

#define FILE_LEN	(50u << 20)

struct sink {
	int fd;
	size_t want;
	unsigned char *got;
};

static int sink_read(void *arg)
{
	struct sink *s = arg;

	return recv_all(s->fd, s->got, s->want) == (ssize_t)s->want ? 0 :
	       -EIO;
}

static unsigned char file_byte(size_t off)
{
	return (unsigned char)((off * 2654435761u) >> 13);
}

/* A 50 MiB file, sent whole with off NULL, then from an offset. */
static int sendfile_main(void *arg)
{
	char path[] = "/tmp/corio-sendfile-XXXXXX";
	unsigned char *data = malloc(FILE_LEN), *got = malloc(FILE_LEN);
	struct sink s;
	corio_task *t;
	uint64_t off;
	size_t i;
	int fd, a, b;

	(void)arg;
	assert_non_null(data);
	assert_non_null(got);
	for (i = 0; i < FILE_LEN; i++)
		data[i] = file_byte(i);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, data, FILE_LEN), (ssize_t)FILE_LEN);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(tcp_pair(&a, &b), 0);

	s.fd = b;
	s.want = FILE_LEN;
	s.got = got;
	t = corio_spawn(sink_read, &s);
	assert_non_null(t);
	assert_int_equal(corio_sendfile(a, fd, NULL, FILE_LEN),
			 (ssize_t)FILE_LEN);
	assert_int_equal(corio_join(t), 0);
	assert_memory_equal(got, data, FILE_LEN);

	/* From offset 1000: the rest of the file, *off advanced. */
	off = 1000;
	s.want = FILE_LEN - 1000;
	t = corio_spawn(sink_read, &s);
	assert_non_null(t);
	assert_int_equal(corio_sendfile(a, fd, &off, FILE_LEN),
			 (ssize_t)(FILE_LEN - 1000));
	assert_int_equal(off, FILE_LEN);
	assert_int_equal(corio_join(t), 0);
	assert_memory_equal(got, data + 1000, FILE_LEN - 1000);
	/* At the end of the file: nothing more. */
	assert_int_equal(corio_sendfile(a, fd, &off, 10), 0);
	assert_int_equal(corio_sendfile(a, fd, &off, 0), 0);

	/* errors: corio_sendfile.3 EINVAL */
	assert_int_equal(corio_sendfile(-1, fd, NULL, 10), -EINVAL);
	off = (uint64_t)INT64_MAX + 1;
	assert_int_equal(corio_sendfile(a, fd, &off, 10), -EINVAL);
	/* errors: corio_sendfile.3 EBADF */
	assert_int_equal(corio_sendfile(a, 1000, NULL, 10), -EBADF);
	assert_int_equal(corio_close(a), 0);
	assert_int_equal(corio_close(b), 0);
	assert_int_equal(corio_close(fd), 0);
	free(data);
	free(got);
	assert_loop_clean();
	return 0;
}

static void test_sendfile_50mib_byte_for_byte(void **state)
{
	(void)state;
	RUN(sendfile_main, NULL);
	/* errors: corio_sendfile.3 EPERM */
	assert_int_equal(corio_sendfile(1, 0, NULL, 1), -EPERM);
}

static void test_sendfile_copy_fallback(void **state)
{
	(void)state;
	assert_int_equal(setenv("CORIO_DISABLE", "splice", 1), 0);
	RUN(sendfile_main, NULL);
	unsetenv("CORIO_DISABLE");
}

/*
 * Sends that wait for a peer that does not read: a deadline and a cancel
 * end them; a peer that resets or closes gives -ECONNRESET or -EPIPE.
 */
static int blocked_send_zc(void *arg)
{
	static char big[1 << 20];
	int fd = *(int *)arg;
	ssize_t n;

	do
		n = corio_send_zc(fd, big, sizeof(big), 0);
	while (n > 0);
	return (int)n;
}

static int blocked_sendfile(void *arg)
{
	int *fds = arg;	/* socket, file */
	uint64_t off;
	ssize_t n;

	do {
		off = 0;
		n = corio_sendfile(fds[0], fds[1], &off, 4u << 20);
	} while (n > 0);
	return (int)n;
}

static int blocked_main(void *arg)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char path[] = "/tmp/corio-sendfile-XXXXXX";
	int a, b, fds[2], pp[2], sv[2], sz = 4096;
	corio_task *t;
	uint64_t off = 0;

	(void)arg;
	fds[1] = mkstemp(path);
	assert_true(fds[1] >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fds[1], 4u << 20), 0);

	assert_int_equal(tcp_pair(&a, &b), 0);
	setsockopt(a, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	corio_timeout(CORIO_MSEC(30));
	/* errors: corio_send_zc.3 ETIMEDOUT */
	assert_int_equal(blocked_send_zc(&a), -ETIMEDOUT);
	fds[0] = a;
	/* errors: corio_sendfile.3 ETIMEDOUT */
	assert_int_equal(blocked_sendfile(fds), -ETIMEDOUT);
	corio_deadline(0);
	t = corio_spawn(blocked_send_zc, &a);
	assert_non_null(t);
	assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	assert_int_equal(corio_cancel(t), 0);
	/* errors: corio_send_zc.3 ECANCELED */
	assert_int_equal(corio_join(t), -ECANCELED);
	t = corio_spawn(blocked_sendfile, fds);
	assert_non_null(t);
	assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	assert_int_equal(corio_cancel(t), 0);
	/* errors: corio_sendfile.3 ECANCELED */
	assert_int_equal(corio_join(t), -ECANCELED);
	/* The peer resets: what is still queued is lost, sends fail. */
	assert_int_equal(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	assert_int_equal(close(b), 0);
	corio_sleep(CORIO_MSEC(5));
	/* errors: corio_send_zc.3 ECONNRESET */
	assert_true(corio_send_zc(a, "x", 1, 0) == -ECONNRESET ||
		    corio_send_zc(a, "x", 1, 0) == -EPIPE);
	assert_int_equal(corio_close(a), 0);

	assert_int_equal(tcp_pair(&a, &b), 0);
	assert_int_equal(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	assert_int_equal(close(b), 0);
	corio_sleep(CORIO_MSEC(5));
	/* errors: corio_sendfile.3 ECONNRESET */
	assert_int_equal(corio_sendfile(a, fds[1], &off, 100), -ECONNRESET);
	assert_int_equal(corio_close(a), 0);

	/* A peer gone: -EPIPE, and no SIGPIPE. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(close(sv[1]), 0);
	off = 0;
	/* errors: corio_sendfile.3 EPIPE */
	assert_int_equal(corio_sendfile(sv[0], fds[1], &off, 100), -EPIPE);
	assert_int_equal(corio_close(sv[0]), 0);
	/* An offset for what cannot seek. */
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	assert_int_equal(write(pp[1], "abc", 3), 3);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	off = 0;
	/* errors: corio_sendfile.3 ESPIPE */
	assert_int_equal(corio_sendfile(sv[0], pp[0], &off, 3), -ESPIPE);
	assert_int_equal(corio_sendfile(sv[0], pp[0], NULL, 3), 3);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_close(pp[0]), 0);
	assert_int_equal(corio_close(pp[1]), 0);
	assert_int_equal(corio_close(fds[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_blocked_sends_and_peer_errors(void **state)
{
	(void)state;
	RUN(blocked_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_send_zc_buffer_reusable_on_return),
		CORIO_TEST(test_sendfile_50mib_byte_for_byte),
		CORIO_TEST(test_sendfile_copy_fallback),
		CORIO_TEST(test_blocked_sends_and_peer_errors),
	};

	return RUN_GROUP(tests);
}
