/*
 * test-bufring.c - provided buffer rings and receivers: bytes whole and in
 * order under bursts from many connections while the ring runs dry, in
 * each way the ring can work (incremental buffers, bundles, whole
 * buffers); cancellation and deadlines of corio_receiver_next with data
 * racing in; EOF and reset; streams on the shared ring; the fallbacks and
 * the errors.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>

#include "helpers.h"

/* The ways a ring works, forced with CORIO_DISABLE. */
enum mode { MODE_INC, MODE_BUNDLE, MODE_WHOLE, NR_MODES };

static const char *const mode_disable[NR_MODES] = {
	"", "buf_inc", "buf_inc,bundle",
};

static void run_in_mode(corio_fn fn, enum mode m)
{
	assert_int_equal(setenv("CORIO_DISABLE", mode_disable[m], 1), 0);
	RUN(fn, &m);
	unsetenv("CORIO_DISABLE");
}

static void check_mode(corio_bufring *br, enum mode m)
{
	bool inc, bundle;
	unsigned long starved;

	corio__bufring_info(br, &inc, &bundle, &starved);
	assert_int_equal(inc, m == MODE_INC);
	assert_int_equal(bundle, m == MODE_BUNDLE);
}

/* The byte at offset off of connection c's stream. */
static unsigned char pattern(unsigned int c, size_t off)
{
	return (unsigned char)(off * 31 + c * 7 + (off >> 9));
}

#define CONNS		12
#define BURST_BYTES	(1u << 20)

struct conn {
	int sv[2];
	corio_receiver *r;
	size_t got;
	int slow;		/* holds each chunk for a while */
	int bad;		/* the first offset that was wrong, + 1 */
	int end;
};

static int conn_send(void *arg)
{
	struct conn *c = arg;
	unsigned int idx = (unsigned int)c->slow >> 8;
	static unsigned char buf[CONNS][65536];
	unsigned char *b = buf[idx];
	size_t sent = 0, n, i;

	while (sent < BURST_BYTES) {
		/* Bursts of varied sizes: 1 byte to 64 KiB. */
		n = 1 + (sent * 7919 + idx * 104729) % 65536;
		if (n > BURST_BYTES - sent)
			n = BURST_BYTES - sent;
		for (i = 0; i < n; i++)
			b[i] = pattern(idx, sent + i);
		if (send_all(c->sv[1], b, n) != (ssize_t)n)
			return -EIO;
		sent += n;
		if (sent % 3 == 0)
			corio_yield();
	}
	return shutdown(c->sv[1], SHUT_WR) < 0 ? -errno : 0;
}

static int conn_recv(void *arg)
{
	struct conn *c = arg;
	unsigned int idx = (unsigned int)c->slow >> 8;
	const void *p;
	ssize_t n, i;

	for (;;) {
		n = corio_receiver_next(c->r, &p);
		if (n <= 0) {
			c->end = (int)n;
			return 0;
		}
		for (i = 0; i < n && !c->bad; i++)
			if (((const unsigned char *)p)[i] !=
			    pattern(idx, c->got + (size_t)i))
				c->bad = (int)(c->got + (size_t)i) + 1;
		c->got += (size_t)n;
		/* A slow consumer keeps its chunk lent across turns. */
		if (c->slow & 1)
			corio_yield();
	}
}

static int bursts_main(void *arg)
{
	enum mode m = *(enum mode *)arg;
	struct conn c[CONNS];
	corio_task *ts[CONNS], *tr[CONNS];
	corio_bufring *br;
	unsigned long starved;
	bool inc, bundle;
	unsigned int i;
	int sz = 1 << 20;

	/* 32 buffers of 4 KiB for 12 MiB in flight: it runs dry. */
	assert_int_equal(corio_bufring_new(32, 4096, &br), 0);
	check_mode(br, m);
	for (i = 0; i < CONNS; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					    0, c[i].sv), 0);
		setsockopt(c[i].sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		c[i].slow = (int)(i << 8) | (int)(i % 2);
		assert_int_equal(corio_receiver_new(c[i].sv[0], br, &c[i].r),
				 0);
	}
	for (i = 0; i < CONNS; i++) {
		tr[i] = corio_spawn(conn_recv, &c[i]);
		ts[i] = corio_spawn(conn_send, &c[i]);
		assert_non_null(tr[i]);
		assert_non_null(ts[i]);
	}
	for (i = 0; i < CONNS; i++) {
		assert_int_equal(corio_join(ts[i]), 0);
		assert_int_equal(corio_join(tr[i]), 0);
		if (c[i].bad)
			fail_msg("mode %d conn %u: wrong byte at %d", m, i,
				 c[i].bad - 1);
		assert_int_equal(c[i].got, BURST_BYTES);
		assert_int_equal(c[i].end, 0);	/* EOF, after every byte */
	}
	corio__bufring_info(br, &inc, &bundle, &starved);
	assert_true(starved > 0);	/* the ring did run dry */
	/* errors: corio_bufring.3 EBUSY */
	assert_int_equal(corio_bufring_free(br), -EBUSY);
	for (i = 0; i < CONNS; i++) {
		assert_int_equal(corio_receiver_free(c[i].r), 0);
		assert_int_equal(corio_close(c[i].sv[0]), 0);
		assert_int_equal(corio_close(c[i].sv[1]), 0);
	}
	assert_int_equal(corio_bufring_free(br), 0);
	assert_loop_clean();
	return 0;
}

static void test_bursts_whole_and_in_order(void **state)
{
	enum mode m;

	(void)state;
	for (m = 0; m < NR_MODES; m++)
		run_in_mode(bursts_main, m);
}

/*
 * corio_receiver_next under short deadlines and cancellations while bytes
 * arrive one numbered message at a time, at varied moments: every byte
 * comes out once, in order, whatever the reader's await returned.
 */
#define RACE_MSGS	3000

struct race {
	int sv[2];
	corio_receiver *r;
	uint32_t next;		/* the next number expected */
	int bad;
	int timeouts, cancels;
};

static int race_send(void *arg)
{
	struct race *rc = arg;
	uint32_t i;

	for (i = 0; i < RACE_MSGS; i++) {
		if (send_all(rc->sv[1], &i, sizeof(i)) != sizeof(i))
			return -EIO;
		if (i % 7 == 0)
			corio_sleep(CORIO_USEC(i % 50));
		else if (i % 3 == 0)
			corio_yield();
	}
	return 0;
}

/* The bytes of a number may come split over chunks: keep the partial. */
static unsigned char partial[4];
static size_t partial_len;

static void race_take(struct race *rc, const unsigned char *p, size_t n)
{
	uint32_t v;

	while (n--) {
		partial[partial_len++] = *p++;
		if (partial_len == 4) {
			memcpy(&v, partial, 4);
			if (v != rc->next && !rc->bad)
				rc->bad = (int)rc->next + 1;
			rc->next++;
			partial_len = 0;
		}
	}
}

static int race_read_until_stopped(void *arg)
{
	struct race *rc = arg;
	const void *p;
	ssize_t n;

	while (rc->next < RACE_MSGS) {
		corio_timeout(CORIO_USEC(rc->next % 97));
		n = corio_receiver_next(rc->r, &p);
		corio_deadline(0);
		if (n == -ETIMEDOUT) {
			/* A deadline already past fails at once: let the
			 * sender run before the next try. */
			rc->timeouts++;
			if (corio_yield() == -ECANCELED)
				return 0;
			continue;
		}
		if (n == -ECANCELED)
			return 0;	/* the next reader goes on */
		if (n <= 0)
			return (int)(n < 0 ? n : -ENODATA);
		race_take(rc, p, (size_t)n);
	}
	return 0;
}

static int race_main(void *arg)
{
	struct race rc = { 0 };
	corio_bufring *br;
	corio_task *s, *r;
	unsigned int round = 0;

	(void)arg;
	partial_len = 0;
	assert_int_equal(corio_bufring_new(64, 256, &br), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    rc.sv), 0);
	assert_int_equal(corio_receiver_new(rc.sv[0], br, &rc.r), 0);
	s = corio_spawn(race_send, &rc);
	assert_non_null(s);
	while (rc.next < RACE_MSGS) {
		r = corio_spawn(race_read_until_stopped, &rc);
		assert_non_null(r);
		/* Cancelled after a varied number of turns. */
		for (unsigned int k = 0; k < 1 + round % 13; k++)
			assert_int_equal(corio_yield(), 0);
		if (corio_cancel(r) == 0)
			rc.cancels++;
		assert_int_equal(corio_join(r), 0);
		round++;
	}
	assert_int_equal(corio_join(s), 0);
	if (rc.bad)
		fail_msg("message %d lost, doubled or out of order",
			 rc.bad - 1);
	assert_int_equal(rc.next, RACE_MSGS);
	assert_true(rc.cancels > 0);
	assert_true(rc.timeouts > 0);
	assert_int_equal(corio_receiver_free(rc.r), 0);
	assert_int_equal(corio_bufring_free(br), 0);
	assert_int_equal(corio_close(rc.sv[0]), 0);
	assert_int_equal(corio_close(rc.sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_next_cancel_and_deadline_lose_nothing(void **state)
{
	enum mode m;

	(void)state;
	for (m = 0; m < NR_MODES; m++)
		run_in_mode(race_main, m);
}

/* EOF after the last byte; a reset as -ECONNRESET; close as -EBADF. */

static int eof_reset_main(void *arg)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	corio_receiver *r;
	corio_bufring *br;
	const void *p;
	int a, b;

	(void)arg;
	assert_int_equal(corio_bufring_new(8, 64, &br), 0);
	assert_int_equal(tcp_pair(&a, &b), 0);
	assert_int_equal(corio_receiver_new(a, br, &r), 0);
	assert_int_equal(write(b, "hello", 5), 5);
	assert_int_equal(close(b), 0);
	assert_int_equal(corio_receiver_next(r, &p), 5);
	assert_memory_equal(p, "hello", 5);
	assert_int_equal(corio_receiver_next(r, &p), 0);
	assert_int_equal(corio_receiver_next(r, &p), 0);	/* stays */
	assert_int_equal(corio_receiver_free(r), 0);
	assert_int_equal(corio_close(a), 0);

	assert_int_equal(tcp_pair(&a, &b), 0);
	assert_int_equal(corio_receiver_new(a, br, &r), 0);
	assert_int_equal(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	assert_int_equal(close(b), 0);
	/* errors: corio_receiver.3 ECONNRESET */
	assert_int_equal(corio_receiver_next(r, &p), -ECONNRESET);
	assert_int_equal(corio_receiver_free(r), 0);
	assert_int_equal(corio_close(a), 0);

	assert_int_equal(tcp_pair(&a, &b), 0);
	assert_int_equal(corio_receiver_new(a, br, &r), 0);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_close(a), 0);
	/* errors: corio_receiver.3 EBADF */
	assert_int_equal(corio_receiver_next(r, &p), -EBADF);
	assert_int_equal(corio_receiver_free(r), 0);
	assert_int_equal(close(b), 0);
	assert_int_equal(corio_bufring_free(br), 0);
	assert_loop_clean();
	return 0;
}

static void test_eof_reset_and_close(void **state)
{
	(void)state;
	RUN(eof_reset_main, NULL);
}

/*
 * A stream on the loop's shared ring: lines and exact reads as on a plain
 * stream, and no read buffer while it is idle.
 */
static int stream_main(void *arg)
{
	char line[64], big[10000], want[10000];
	corio_stream *s;
	int sv[2];
	size_t i;

	(void)arg;
	for (i = 0; i < sizeof(want); i++)
		want[i] = (char)('a' + i % 26);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(corio_stream_new(sv[0], CORIO_STREAM_BUFRING | 256,
					  &s), 0);
	assert_int_equal(write(sv[1], "one\ntwo\nthr", 11), 11);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 4);
	assert_memory_equal(line, "one\n", 4);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 4);
	assert_int_equal(write(sv[1], "ee\n", 3), 3);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 6);
	assert_memory_equal(line, "three\n", 6);
	assert_int_equal(corio_stream_buffered(s), 0);
	/* Idle: no read buffer, nothing lent. */
	assert_null(corio_stream_peek(s, &i));
	assert_int_equal(i, 0);
	assert_int_equal(send_all(sv[1], want, sizeof(want)),
			 (ssize_t)sizeof(want));
	assert_int_equal(corio_stream_readexactly(s, big, 100), 100);
	assert_int_equal(corio_stream_readexactly(s, big + 100,
						  sizeof(big) - 100),
			 (ssize_t)sizeof(big) - 100);
	assert_memory_equal(big, want, sizeof(want));
	assert_int_equal(corio_stream_write(s, "ok\n", 3), 3);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(read(sv[1], line, 3), 3);
	assert_int_equal(close(sv[1]), 0);
	assert_int_equal(corio_stream_read(s, line, sizeof(line)), 0);
	assert_int_equal(corio_stream_close(s), 0);
	assert_loop_clean();
	return 0;
}

static void test_stream_on_the_shared_ring(void **state)
{
	enum mode m;

	(void)state;
	for (m = 0; m < NR_MODES; m++)
		run_in_mode(stream_main, m);
}

/* Without buffer rings: -ENOSYS, and a stream reads as a plain one. */
static int fallback_main(void *arg)
{
	corio_bufring *br = NULL;
	corio_stream *s;
	char line[16];
	int sv[2];

	(void)arg;
	/* errors: corio_bufring.3 ENOSYS */
	assert_int_equal(corio_bufring_new(8, 64, &br), -ENOSYS);
	assert_null(br);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(corio_stream_new(sv[0], CORIO_STREAM_BUFRING, &s), 0);
	assert_int_equal(write(sv[1], "x\n", 2), 2);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 2);
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_fallback_without_buffer_rings(void **state)
{
	(void)state;
	assert_int_equal(setenv("CORIO_DISABLE", "bufring", 1), 0);
	RUN(fallback_main, NULL);
	unsetenv("CORIO_DISABLE");
}

/* Bad arguments, and main returning with a receiver armed. */
static corio_bufring *left_ring;
static corio_receiver *left_rx;
static int left_sv[2];

static int errors_main(void *arg)
{
	corio_bufring *br, *tmp;
	corio_receiver *r;
	const void *p;
	int *sv = left_sv;

	(void)arg;
	/* errors: corio_bufring.3 EINVAL */
	assert_int_equal(corio_bufring_new(0, 64, &br), -EINVAL);
	assert_int_equal(corio_bufring_new(3, 64, &br), -EINVAL);
	assert_int_equal(corio_bufring_new(65536, 64, &br), -EINVAL);
	assert_int_equal(corio_bufring_new(8, 0, &br), -EINVAL);
	assert_int_equal(corio_bufring_new(8, 64, NULL), -EINVAL);
	assert_int_equal(corio_bufring_new(8, 64, &br), 0);
	/* errors: corio_receiver.3 EINVAL */
	assert_int_equal(corio_receiver_new(-1, br, &r), -EINVAL);
	assert_int_equal(corio_receiver_new(0, NULL, &r), -EINVAL);
	assert_int_equal(corio_receiver_next(NULL, &p), -EINVAL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(corio_receiver_new(sv[0], br, &r), 0);
	assert_int_equal(corio_receiver_next(r, NULL), -EINVAL);
	assert_int_equal(corio_bufring_free(NULL), 0);
	assert_int_equal(corio_receiver_free(NULL), 0);
	/* Two rings at once: group ids do not clash. */
	assert_int_equal(corio_bufring_new(8, 64, &tmp), 0);
	assert_int_equal(corio_bufring_free(tmp), 0);
	/* Left armed: teardown stops it; the loop still ends. */
	left_ring = br;
	left_rx = r;
	return 0;
}

static corio_bufring *leftover;

static int outside_main(void *arg)
{
	(void)arg;
	return corio_bufring_new(8, 64, &leftover);
}

static void test_errors_and_teardown(void **state)
{
	corio_bufring *br;
	const void *p;

	(void)state;
	RUN(errors_main, NULL);
	/* What outlived its loop is still freed. */
	assert_int_equal(corio_bufring_free(left_ring), -EBUSY);
	assert_int_equal(corio_receiver_free(left_rx), 0);
	assert_int_equal(corio_bufring_free(left_ring), 0);
	close(left_sv[0]);
	close(left_sv[1]);
	/* errors: corio_bufring.3 EPERM */
	assert_int_equal(corio_bufring_new(8, 64, &br), -EPERM);
	/* errors: corio_receiver.3 EPERM */
	assert_int_equal(corio_receiver_next((corio_receiver *)&p, &p),
			 -EPERM);
	/* A ring that outlives its loop is still freed. */
	RUN(outside_main, NULL);
	assert_int_equal(corio_bufring_free(leftover), 0);
}

/* A second reader is refused; cancellation and a deadline end a wait. */
static int rx_waiter(void *arg)
{
	const void *p;

	return (int)corio_receiver_next(arg, &p);
}

static int rx_errors_main(void *arg)
{
	corio_receiver *r;
	corio_bufring *br;
	corio_task *t;
	const void *p;
	int sv[2];

	(void)arg;
	assert_int_equal(corio_bufring_new(8, 64, &br), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(corio_receiver_new(sv[0], br, &r), 0);
	t = corio_spawn(rx_waiter, r);
	assert_non_null(t);
	assert_int_equal(corio_yield(), 0);
	/* errors: corio_receiver.3 EBUSY */
	assert_int_equal(corio_receiver_next(r, &p), -EBUSY);
	assert_int_equal(corio_receiver_free(r), -EBUSY);
	assert_int_equal(corio_cancel(t), 0);
	/* errors: corio_receiver.3 ECANCELED */
	assert_int_equal(corio_join(t), -ECANCELED);
	corio_timeout(CORIO_MSEC(10));
	/* errors: corio_receiver.3 ETIMEDOUT */
	assert_int_equal(corio_receiver_next(r, &p), -ETIMEDOUT);
	corio_deadline(0);
	/* Nothing was lost meanwhile. */
	assert_int_equal(write(sv[1], "ab", 2), 2);
	assert_int_equal(corio_receiver_next(r, &p), 2);
	assert_int_equal(corio_receiver_free(r), 0);
	assert_int_equal(corio_bufring_free(br), 0);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	/* A stream on the ring reads a socket only. */
	{
		corio_stream *s;
		char c;
		int pp[2];

		assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
		assert_int_equal(corio_stream_new(pp[0], CORIO_STREAM_BUFRING,
						  &s), 0);
		assert_int_equal(write(pp[1], "x", 1), 1);
		/* errors: corio_stream.3 ENOTSOCK */
		assert_int_equal(corio_stream_read(s, &c, 1), -ENOTSOCK);
		assert_int_equal(corio_stream_close(s), 0);
		assert_int_equal(close(pp[1]), 0);
	}
	assert_loop_clean();
	return 0;
}

static void test_next_busy_cancelled_timed_out(void **state)
{
	(void)state;
	RUN(rx_errors_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_bursts_whole_and_in_order),
		CORIO_TEST(test_next_cancel_and_deadline_lose_nothing),
		CORIO_TEST(test_eof_reset_and_close),
		CORIO_TEST(test_stream_on_the_shared_ring),
		CORIO_TEST(test_fallback_without_buffer_rings),
		CORIO_TEST(test_errors_and_teardown),
		CORIO_TEST(test_next_busy_cancelled_timed_out),
	};

	return RUN_GROUP(tests);
}
