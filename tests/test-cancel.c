/*
 * test-cancel.c - corio_cancel, corio_shield, corio_close of an fd with
 * pending ops: what a cancelled task sees, what it leaves behind.
 */
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "helpers.h"

static void socketpair_or_fail(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
}

struct parked {
	int fd;
	int parked;		/* set just before the task parks */
	int ret;		/* what its await returned */
	int second;		/* its next await's result */
	char buf[64];
};

static int sleeper(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = corio_sleep(CORIO_SEC(3600));
	p->second = corio_nop();
	return 0;
}

static int cancel_sleep_main(void *arg)
{
	struct parked p = { .ret = 1, .second = 1 };
	corio_task *t;
	uint64_t t0;

	(void)arg;
	t = corio_spawn(sleeper, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	t0 = corio_now();
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(5)));
	/* errors: corio_sleep.3 ECANCELED */
	assert_int_equal(p.ret, -ECANCELED);
	assert_int_equal(p.second, -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_cancel_sleeping_task(void **state)
{
	(void)state;
	RUN(cancel_sleep_main, NULL);
}

static int receiver(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = (int)corio_recv(p->fd, p->buf, sizeof(p->buf), 0);
	return 0;
}

/*
 * A recv cancelled while parked: -ECANCELED, its buffer untouched, and
 * the data that arrives later stays in the socket for the next reader.
 */
static int cancel_recv_main(void *arg)
{
	struct parked p = { .ret = 1 };
	char expect[sizeof(p.buf)], got[16];
	corio_task *t;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	memset(p.buf, 0xaa, sizeof(p.buf));
	memset(expect, 0xaa, sizeof(expect));
	p.fd = sv[0];
	t = corio_spawn(receiver, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	/* errors: corio_read.3 ECANCELED */
	assert_int_equal(p.ret, -ECANCELED);

	assert_int_equal(corio_send(sv[1], "later", 5, 0), 5);
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_memory_equal(p.buf, expect, sizeof(expect));
	assert_int_equal(corio_recv(sv[0], got, sizeof(got), 0), 5);
	assert_memory_equal(got, "later", 5);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_cancel_parked_recv(void **state)
{
	(void)state;
	RUN(cancel_recv_main, NULL);
}

/*
 * After a cancel, every blocking await fails at once without submitting;
 * corio_close still closes.
 */
static int after_cancel_main(void *arg)
{
	struct corio_stats before, after;
	struct io_uring_sqe *sqe;
	char buf[8];
	int sv[2], p[2];

	(void)arg;
	socketpair_or_fail(sv);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(corio_cancel(corio_self()), 0);
	before = stats_now();
	/* errors: corio_sleep.3 ECANCELED */
	assert_int_equal(corio_sleep(CORIO_SEC(10)), -ECANCELED);
	assert_int_equal(corio_sleep(0), -ECANCELED);
	/* errors: corio_yield.3 ECANCELED */
	assert_int_equal(corio_yield(), -ECANCELED);
	assert_int_equal(corio_nop(), -ECANCELED);
	/* errors: corio_read.3 ECANCELED */
	assert_int_equal(corio_recv(sv[0], buf, sizeof(buf), 0), -ECANCELED);
	assert_int_equal(corio_send(sv[1], "x", 1, 0), -ECANCELED);
	assert_int_equal(corio_read(p[0], buf, sizeof(buf), 0), -ECANCELED);
	assert_int_equal(corio_write(p[1], "x", 1, 0), -ECANCELED);
	assert_int_equal(corio_poll(sv[0], POLLIN), -ECANCELED);
	assert_int_equal(corio_socket(AF_UNIX, SOCK_STREAM, 0, 0), -ECANCELED);
	sqe = corio_sqe();
	io_uring_prep_nop(sqe);
	/* errors: corio_sqe.3 ECANCELED */
	assert_int_equal(corio_await(sqe), -ECANCELED);
	after = stats_now();
	assert_int_equal(after.enters, before.enters);
	assert_int_equal(after.turns, before.turns);
	assert_int_equal(after.ops_in_flight, 0);

	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_close(p[0]), 0);
	assert_int_equal(corio_close(p[1]), 0);
	errno = 0;
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_false(fd_is_open(sv[1]));
	assert_false(fd_is_open(p[0]));
	assert_false(fd_is_open(p[1]));
	assert_loop_clean();
	return 0;
}

static void test_after_cancel_awaits_fail_close_works(void **state)
{
	(void)state;
	RUN(after_cancel_main, NULL);
}

static int shielded(void *arg)
{
	struct parked *p = arg;

	assert_int_equal(corio_shield(1), 0);
	assert_int_equal(corio_shield(1), 1);
	p->parked = 1;
	p->ret = corio_sleep(CORIO_MSEC(20));
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_shield(0), 1);
	p->second = corio_nop();
	return 0;
}

/* While shielded, a cancel waits; it applies when the shield is off. */
static int shield_main(void *arg)
{
	struct parked p = { .ret = 1, .second = 1 };
	corio_task *t;

	(void)arg;
	t = corio_spawn(shielded, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(p.ret, 0);
	assert_int_equal(p.second, -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_shield_defers_cancel(void **state)
{
	(void)state;
	RUN(shield_main, NULL);
}

static int first_await(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;	/* here: it ran */
	p->ret = corio_nop();
	return 3;
}

/* Cancelled before its first run: fn runs, its first await fails. */
static int cancel_unstarted_main(void *arg)
{
	struct parked p = { .ret = 1 };
	corio_task *t;

	(void)arg;
	t = corio_spawn(first_await, &p);
	assert_non_null(t);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 3);
	assert_true(p.parked);
	assert_int_equal(p.ret, -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_cancel_before_first_run(void **state)
{
	(void)state;
	RUN(cancel_unstarted_main, NULL);
}

static int ret_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static int cancel_twice_and_finished_main(void *arg)
{
	struct parked p = { .ret = 1, .second = 1 };
	corio_task *t;

	(void)arg;
	t = corio_spawn(ret_arg, (void *)(intptr_t)4);
	assert_non_null(t);
	assert_int_equal(corio_yield(), 0);
	/* errors: corio_cancel.3 ESRCH */
	assert_int_equal(corio_cancel(t), -ESRCH);
	assert_int_equal(corio_join(t), 4);

	t = corio_spawn(sleeper, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(p.ret, -ECANCELED);

	/* Cancelling oneself: the next await fails. */
	assert_int_equal(corio_cancel(corio_self()), 0);
	assert_int_equal(corio_cancel(corio_self()), 0);
	assert_int_equal(corio_nop(), -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_cancel_finished_and_twice(void **state)
{
	(void)state;
	RUN(cancel_twice_and_finished_main, NULL);
}

struct joiner {
	struct parked w;	/* the joined task's */
	int joined;		/* set just before the joiner parks */
	int join_ret;
	int after_join;		/* the joiner's next await */
};

static int joined_sleeper(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = corio_sleep(CORIO_SEC(3600));
	return p->ret == -ECANCELED ? 55 : -1;
}

static int joiner(void *arg)
{
	struct joiner *j = arg;
	corio_task *t = corio_spawn(joined_sleeper, &j->w);

	assert_non_null(t);
	j->joined = 1;
	j->join_ret = corio_join(t);
	j->after_join = corio_nop();
	return 0;
}

/*
 * A joiner that is cancelled passes the cancel on to the task it joins,
 * and its join still returns that task's result.
 */
static int joiner_cancel_main(void *arg)
{
	struct joiner j = { .w = { .ret = 1 }, .join_ret = 1,
			    .after_join = 1 };
	corio_task *t;

	(void)arg;
	t = corio_spawn(joiner, &j);
	assert_non_null(t);
	yield_until(&j.joined);
	yield_until(&j.w.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(j.w.ret, -ECANCELED);
	assert_int_equal(j.join_ret, 55);
	assert_int_equal(j.after_join, -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_cancelled_joiner_cancels_joined(void **state)
{
	(void)state;
	RUN(joiner_cancel_main, NULL);
}

static int cancelled_then_join(void *arg)
{
	struct joiner *j = arg;
	corio_task *t = corio_spawn(joined_sleeper, &j->w);

	assert_non_null(t);
	corio_cancel(corio_self());
	j->join_ret = corio_join(t);
	return 0;
}

/* Already cancelled when it joins: the same. */
static int joiner_precancel_main(void *arg)
{
	struct joiner j = { .w = { .ret = 1 }, .join_ret = 1 };
	corio_task *t;

	(void)arg;
	t = corio_spawn(cancelled_then_join, &j);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(j.join_ret, 55);
	assert_int_equal(j.w.ret, -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_cancelled_task_joins(void **state)
{
	(void)state;
	RUN(joiner_precancel_main, NULL);
}

static int poller(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = corio_poll(p->fd, POLLIN);
	return 0;
}

static int pipe_reader(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = (int)corio_read(p->fd, p->buf, sizeof(p->buf), (uint64_t)-1);
	return 0;
}

static int acceptor(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = corio_accept(p->fd, NULL, NULL, 0);
	return 0;
}

/* Spawns fn on fd, waits until it is parked, closes fd: it gets -EBADF. */
static void close_under(corio_fn fn, int fd, int submitted)
{
	struct parked p = { .fd = fd, .ret = 1 };
	corio_task *t = corio_spawn(fn, &p);

	assert_non_null(t);
	yield_until(&p.parked);
	if (submitted)
		assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_close(fd), 0);
	assert_false(fd_is_open(fd));
	assert_int_equal(corio_join(t), 0);
	/* errors: corio_read.3 EBADF */
	assert_int_equal(p.ret, -EBADF);
}

/*
 * corio_close(fd) while other tasks wait on fd (recv, poll, a pipe read,
 * accept): each gets -EBADF.  Repeated, since the order of the CQEs
 * involved (the waiters', the cancel's, the close's) is the kernel's.
 */
#define READERS 8
#define CLOSE_ROUNDS 200

static int close_under_recv_main(void *arg)
{
	struct parked p[READERS];
	corio_task *t[READERS];
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int sv[2], i, round, lfd;

	(void)arg;
	for (round = 0; round < CLOSE_ROUNDS; round++) {
		socketpair_or_fail(sv);
		for (i = 0; i < READERS; i++) {
			p[i] = (struct parked){ .fd = sv[0], .ret = 1 };
			t[i] = corio_spawn(i & 1 ? poller : receiver, &p[i]);
			assert_non_null(t[i]);
		}
		yield_until(&p[READERS - 1].parked);
		if (round & 1)
			assert_int_equal(corio_nop(), 0);  /* ops submitted */
		assert_int_equal(corio_close(sv[0]), 0);
		assert_false(fd_is_open(sv[0]));
		for (i = 0; i < READERS; i++) {
			assert_int_equal(corio_join(t[i]), 0);
			assert_int_equal(p[i].ret, -EBADF);
		}
		assert_int_equal(corio_close(sv[1]), 0);

		assert_int_equal(pipe2(sv, O_CLOEXEC), 0);
		close_under(pipe_reader, sv[0], round & 1);
		assert_int_equal(corio_close(sv[1]), 0);
	}

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(listen(lfd, 8), 0);
	close_under(acceptor, lfd, 1);
	assert_loop_clean();
	return 0;
}

static void test_close_wakes_ops_on_fd(void **state)
{
	(void)state;
	RUN(close_under_recv_main, NULL);
}

/*
 * A cancelled op that completes anyway returns its real result: a recv
 * whose data is already there completes when submitted, before the cancel
 * queued behind it.
 */
static int real_result_main(void *arg)
{
	struct parked p = { .ret = 1, .second = 1 };
	corio_task *t;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	assert_int_equal(write(sv[1], "ready", 5), 5);
	p.fd = sv[0];
	t = corio_spawn(receiver, &p);
	assert_non_null(t);
	yield_until(&p.parked);	/* queued, not submitted yet */
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(p.ret, 5);
	assert_memory_equal(p.buf, "ready", 5);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_cancel_keeps_real_result(void **state)
{
	(void)state;
	RUN(real_result_main, NULL);
}

static int closer(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	p->ret = corio_close(p->fd);
	return 0;
}

static int spinner(void *arg)
{
	struct parked *p = arg;
	int ret;

	p->parked = 1;
	while ((ret = corio_yield()) == 0)
		;
	p->ret = ret;
	return 0;
}

/*
 * corio_close cannot be stopped: a task cancelled while parked in it
 * still closes the fd.  A task cancelled while it is ready (it yielded)
 * sees -ECANCELED from that yield.  A cancelled task that turns its
 * shield on can await again.
 */
static int uncancellable_main(void *arg)
{
	struct parked p = { .ret = 1 }, y = { .ret = 1 };
	corio_task *t;
	int fds[2];

	(void)arg;
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	p.fd = fds[0];
	t = corio_spawn(closer, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(p.ret, 0);
	assert_false(fd_is_open(fds[0]));
	assert_int_equal(corio_close(fds[1]), 0);

	t = corio_spawn(spinner, &y);
	assert_non_null(t);
	yield_until(&y.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(y.ret, -ECANCELED);

	assert_int_equal(corio_cancel(corio_self()), 0);
	assert_int_equal(corio_nop(), -ECANCELED);
	assert_int_equal(corio_shield(1), 0);
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_shield(0), 1);
	assert_int_equal(corio_nop(), -ECANCELED);
	assert_loop_clean();
	return 0;
}

static void test_close_and_yield_under_cancel(void **state)
{
	(void)state;
	RUN(uncancellable_main, NULL);
}

#define MANY 1000

static int many_cancel_main(void *arg)
{
	static struct parked p[MANY];
	static corio_task *t[MANY];
	static int sv[MANY][2];
	int i, nfd = fd_count();

	(void)arg;
	for (i = 0; i < MANY; i++) {
		socketpair_or_fail(sv[i]);
		p[i] = (struct parked){ .fd = sv[i][0], .ret = 1 };
		t[i] = corio_spawn(receiver, &p[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(fd_count(), nfd + 2 * MANY);
	yield_until(&p[MANY - 1].parked);
	assert_int_equal(corio_nop(), 0);	/* the recvs are submitted */
	assert_int_equal(stats_now().ops_in_flight, MANY);
	for (i = 0; i < MANY; i++)
		assert_int_equal(corio_cancel(t[i]), 0);
	for (i = 0; i < MANY; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(p[i].ret, -ECANCELED);
	}
	assert_int_equal(stats_now().ops_in_flight, 0);
	for (i = 0; i < MANY; i++) {
		assert_int_equal(corio_close(sv[i][0]), 0);
		assert_int_equal(corio_close(sv[i][1]), 0);
	}
	assert_loop_clean();
	return 0;
}

/* 1000 recvs in flight, cancelled at once: nothing leaks. */
static void test_cancel_1000_recvs(void **state)
{
	int before;

	(void)state;
	if (!nofile_at_least(2 * MANY + 64))
		skip();
	before = fd_count();
	RUN(many_cancel_main, NULL);
	assert_int_equal(fd_count(), before);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_cancel_sleeping_task),
		CORIO_TEST(test_cancel_parked_recv),
		CORIO_TEST(test_after_cancel_awaits_fail_close_works),
		CORIO_TEST(test_shield_defers_cancel),
		CORIO_TEST(test_cancel_before_first_run),
		CORIO_TEST(test_cancel_finished_and_twice),
		CORIO_TEST(test_cancelled_joiner_cancels_joined),
		CORIO_TEST(test_cancelled_task_joins),
		CORIO_TEST(test_close_wakes_ops_on_fd),
		CORIO_TEST(test_cancel_keeps_real_result),
		CORIO_TEST(test_close_and_yield_under_cancel),
		CORIO_TEST(test_cancel_1000_recvs),
	};

	return RUN_GROUP(tests);
}
