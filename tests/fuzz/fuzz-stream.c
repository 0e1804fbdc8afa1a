/*
 * fuzz-stream.c - libFuzzer target for src/stream.c.  `make fuzz` builds
 * it with clang -fsanitize=fuzzer,address,undefined over the library's
 * sources and runs it on tests/fuzz/corpus-stream/.
 *
 * The low bit of the first byte picks one of two modes:
 *
 * 1: the delimiter search.  corio__stream_scan on a buffer, delimiter,
 *    start offset and length taken from the input, against a naive search;
 *    then the resumption readuntil relies on (a window searched in vain,
 *    then the rest from window - delim_len + 1) against the same answer.
 *    Buffer and delimiter sit in allocations of their exact size, so ASan
 *    catches a read one byte too far.
 *
 * 0: a stream end to end, one corio_run per input.  A writer task writes
 *    the payload through a stream of its own into a socketpair or a pipe,
 *    in chunks whose sizes (and flushes and yields) come from the input,
 *    then closes it.  A reader task runs read, readexactly, readline and
 *    readuntil with lengths, limits and delimiters from the input, checks
 *    each answer against a model that knows the whole payload (the answers
 *    do not depend on how the bytes were cut into reads), then reads what
 *    is left.  What it read, plus what readexactly discarded (more than
 *    buf_size bytes asked at EOF), must be the payload, in order.  Every
 *    output buffer is allocated at exactly the size the call is told.
 *
 * Layout of a mode-0 input, after the mode byte: read buffer size, write
 * buffer size, flags (bit 0: a pipe instead of a socketpair), the number
 * of control bytes; then the payload; then that many control bytes at the
 * end, consumed cyclically, forwards by the reader and backwards by the
 * writer.
 *
 * Any mismatch prints what differed and aborts, which libFuzzer reports
 * as a crash with the input that caused it.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "corio-int.h"

#define FAIL(...)							\
	do {								\
		fprintf(stderr, "fuzz-stream: %s:%d: ", __FILE__,	\
			__LINE__);					\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	} while (0)

#define MAX_OPS	64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- mode 1: corio__stream_scan against a naive search ------------------ */

static size_t naive_scan(const uint8_t *buf, size_t len, const uint8_t *delim,
			 size_t delim_len, size_t from)
{
	size_t i;

	for (i = from; i <= len && len - i >= delim_len; i++)
		if (memcmp(buf + i, delim, delim_len) == 0)
			return i + delim_len;
	return 0;
}

static void fuzz_scan(const uint8_t *d, size_t n)
{
	size_t delim_len, len, from, split, trim, want, got, next;
	uint8_t *buf, *delim;

	if (n < 4)
		return;
	delim_len = 1 + d[0] % 8;
	if (n - 4 < delim_len)
		return;
	len = n - 4 - delim_len;
	trim = d[2] < len ? d[2] : len;
	len -= trim;
	/* Mostly within the buffer, sometimes just past it. */
	from = d[1] < 240 ? d[1] % (len + 2) : len + (size_t)(d[1] - 240);
	split = d[3] % (len + 1);

	delim = malloc(delim_len);
	buf = malloc(len ? len : 1);
	if (!delim || !buf)
		abort();
	memcpy(delim, d + 4, delim_len);
	memcpy(buf, d + 4 + delim_len, len);

	want = naive_scan(buf, len, delim, delim_len, from);
	got = corio__stream_scan(buf, len, delim, delim_len, from);
	if (got != want)
		FAIL("scan(len %zu, delim_len %zu, from %zu) = %zu, naive %zu",
		     len, delim_len, from, got, want);

	/* readuntil's resumption: a window of split bytes, then the rest. */
	got = corio__stream_scan(buf, split, delim, delim_len, from);
	if (got == 0) {
		next = split >= delim_len ? split - delim_len + 1 : 0;
		if (next < from)
			next = from;
		got = corio__stream_scan(buf, len, delim, delim_len, next);
	}
	if (got != want)
		FAIL("resumed scan(len %zu, split %zu, delim_len %zu, "
		     "from %zu) = %zu, naive %zu", len, split, delim_len,
		     from, got, want);
	free(buf);
	free(delim);
}

/* ---- mode 0: a stream end to end ---------------------------------------- */

struct e2e {
	const uint8_t *payload;
	size_t len;
	const uint8_t *ctrl;
	size_t nr_ctrl;
	size_t rbuf_size, wbuf_size;
	int rfd, wfd;
	size_t rcur, wcur;	/* cursors into ctrl */
	size_t pos;		/* payload bytes the reader has consumed */
};

static unsigned int next_r(struct e2e *e)
{
	return e->nr_ctrl ? e->ctrl[e->rcur++ % e->nr_ctrl] : 0x55;
}

static unsigned int next_w(struct e2e *e)
{
	return e->nr_ctrl ? e->ctrl[e->nr_ctrl - 1 - e->wcur++ % e->nr_ctrl] :
			    0x2a;
}

static size_t buf_size_of(unsigned int sel)
{
	/* Small buffers, to reach the edges often; a few realistic ones. */
	if (sel < 200)
		return 16 + sel;
	return (size_t)256 << ((sel - 200) % 6);
}

static int writer_fn(void *arg)
{
	struct e2e *e = arg;
	corio_stream *s;
	size_t off = 0, part;
	unsigned int c;
	ssize_t n;
	int ret;

	ret = corio_stream_new(e->wfd, e->wbuf_size, &s);
	if (ret < 0)
		FAIL("writer: corio_stream_new: %d", ret);
	while (off < e->len) {
		c = next_w(e);
		/* Up to three buffers' worth, to cross every write path. */
		part = 1 + (c * 7 + next_w(e)) % (3 * e->wbuf_size);
		if (part > e->len - off)
			part = e->len - off;
		n = corio_stream_write(s, e->payload + off, part);
		if (n != (ssize_t)part)
			FAIL("writer: write(%zu) = %zd", part, n);
		off += part;
		if (c & 0x80) {
			ret = corio_stream_flush(s);
			if (ret < 0)
				FAIL("writer: flush: %d", ret);
		}
		if (c & 0x40)
			corio_yield();
	}
	ret = corio_stream_close(s);
	if (ret < 0)
		FAIL("writer: close: %d", ret);
	return 0;
}

/* The model of readuntil: the answer from what the payload holds. */
static ssize_t expect_until(const struct e2e *e, const uint8_t *delim,
			    size_t delim_len, size_t max)
{
	size_t limit = max < e->rbuf_size ? max : e->rbuf_size;
	size_t rem = e->len - e->pos, win, end;

	if (delim_len > limit)
		return -EMSGSIZE;
	win = rem < limit ? rem : limit;
	end = naive_scan(e->payload + e->pos, win, delim, delim_len, 0);
	if (end)
		return (ssize_t)end;
	return rem >= limit ? -EMSGSIZE : -ENODATA;
}

/* Checks n bytes the reader got against the payload, and moves on. */
static void consumed(struct e2e *e, const uint8_t *got, size_t n,
		     const char *op)
{
	if (n > e->len - e->pos)
		FAIL("%s: %zu bytes, only %zu left", op, n, e->len - e->pos);
	if (memcmp(got, e->payload + e->pos, n) != 0)
		FAIL("%s: %zu bytes at %zu differ from the payload", op, n,
		     e->pos);
	e->pos += n;
}

/* A length or limit: small mostly, sometimes around or past buf_size. */
static size_t limit_of(struct e2e *e)
{
	unsigned int c = next_r(e);

	if (c == 255)
		return SIZE_MAX;
	if (c & 0x80)
		return (c & 0x7f) % (3 * e->rbuf_size);
	return e->rbuf_size - 2 + c % 5;	/* rbuf_size - 2 .. + 2 */
}

static void reader_op(struct e2e *e, corio_stream *s)
{
	uint8_t delim[4], *out;
	size_t len, cap, delim_len, i, rem = e->len - e->pos;
	ssize_t n, want;
	unsigned int op = next_r(e) % 5;

	if (op == 4) {
		corio_yield();
		return;
	}
	len = limit_of(e);
	/* readline and readuntil never return more than rbuf_size. */
	cap = op >= 2 && len > e->rbuf_size ? e->rbuf_size : len;
	if (op < 2 && len > 3 * e->rbuf_size)
		len = cap = 3 * e->rbuf_size;
	out = malloc(cap ? cap : 1);
	if (!out)
		abort();
	switch (op) {
	case 0:
		n = corio_stream_read(s, out, len);
		if (n < 0 || (n == 0 && len > 0 && rem > 0) ||
		    (size_t)n > len || (rem == 0 && n != 0))
			FAIL("read(%zu) = %zd with %zu left", len, n, rem);
		consumed(e, out, (size_t)n, "read");
		break;
	case 1:
		n = corio_stream_readexactly(s, out, len);
		want = len <= rem ? (ssize_t)len : -ENODATA;
		if (n != want)
			FAIL("readexactly(%zu) = %zd with %zu left, want %zd",
			     len, n, rem, want);
		if (n >= 0)
			consumed(e, out, (size_t)n, "readexactly");
		else if (len > e->rbuf_size)
			e->pos = e->len;	/* discarded, as documented */
		break;
	case 2:
		n = corio_stream_readline(s, out, len);
		want = expect_until(e, (const uint8_t *)"\n", 1, len);
		if (want == -ENODATA)
			want = (ssize_t)rem;	/* the last line, as it is */
		if (n != want)
			FAIL("readline(%zu) = %zd with %zu left, want %zd",
			     len, n, rem, want);
		if (n >= 0)
			consumed(e, out, (size_t)n, "readline");
		break;
	default:
		delim_len = 1 + next_r(e) % 4;
		for (i = 0; i < delim_len; i++)
			delim[i] = (uint8_t)next_r(e);
		n = corio_stream_readuntil(s, delim, delim_len, out, len);
		want = expect_until(e, delim, delim_len, len);
		if (n != want)
			FAIL("readuntil(delim_len %zu, %zu) = %zd with %zu "
			     "left, want %zd", delim_len, len, n, rem, want);
		if (n >= 0)
			consumed(e, out, (size_t)n, "readuntil");
		break;
	}
	free(out);
}

static int reader_fn(void *arg)
{
	struct e2e *e = arg;
	corio_stream *s;
	uint8_t rest[512];
	ssize_t n;
	int i, ret;

	ret = corio_stream_new(e->rfd, e->rbuf_size, &s);
	if (ret < 0)
		FAIL("reader: corio_stream_new: %d", ret);
	for (i = 0; i < MAX_OPS && i < (int)e->nr_ctrl; i++)
		reader_op(e, s);
	/* What is left, then EOF. */
	while ((n = corio_stream_read(s, rest, sizeof(rest))) > 0)
		consumed(e, rest, (size_t)n, "the rest");
	if (n < 0)
		FAIL("reader: read of the rest: %zd", n);
	if (e->pos != e->len)
		FAIL("reader: EOF after %zu of %zu bytes", e->pos, e->len);
	ret = corio_stream_close(s);
	if (ret < 0)
		FAIL("reader: close: %d", ret);
	return 0;
}

static int e2e_main(void *arg)
{
	corio_task *w, *r;
	int ret;

	w = corio_spawn(writer_fn, arg);
	r = corio_spawn(reader_fn, arg);
	if (!w || !r)
		FAIL("corio_spawn failed");
	ret = corio_join(w);
	if (ret)
		FAIL("writer returned %d", ret);
	ret = corio_join(r);
	if (ret)
		FAIL("reader returned %d", ret);
	return 0;
}

static void fuzz_stream(const uint8_t *d, size_t n)
{
	static int no_uring;
	struct e2e e = { 0 };
	int fds[2], ret;

	if (n < 4 || no_uring)
		return;
	e.rbuf_size = buf_size_of(d[0]);
	e.wbuf_size = buf_size_of(d[1]);
	e.nr_ctrl = d[3] < n - 4 ? d[3] : n - 4;
	e.payload = d + 4;
	e.len = n - 4 - e.nr_ctrl;
	e.ctrl = e.payload + e.len;
	if (d[2] & 1)
		ret = pipe2(fds, O_CLOEXEC);
	else
		ret = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
	if (ret < 0)
		FAIL("pipe or socketpair: %m");
	e.rfd = fds[0];
	e.wfd = fds[1];
	ret = corio_run(e2e_main, &e);
	if (ret == -ENOSYS || ret == -EPERM) {
		/* No io_uring here: only the scan mode can run. */
		fprintf(stderr, "fuzz-stream: corio_run: %d: end-to-end mode "
			"disabled\n", ret);
		no_uring = 1;
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (ret != 0)
		FAIL("corio_run returned %d", ret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_scan(data + 1, size - 1);
	else
		fuzz_stream(data + 1, size - 1);
	return 0;
}
