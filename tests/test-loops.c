/*
 * test-loops.c - corio_run_loops, corio_call and corio_post: results and
 * order, a million posts from plain threads each run once, cancellation
 * and deadlines of a call, a call answered by a call back, teardown with
 * work in flight, pinning, errors; through MSG_RING and through the
 * eventfd fallback.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "helpers.h"

static void run_loops(unsigned int n, corio_fn fn, void *arg)
{
	assert_int_equal(corio_run_loops(n, fn, arg), 0);
}

/* Each test runs with MSG_RING and again without it (eventfd wakes). */
static void both_ways(unsigned int n, corio_fn fn)
{
	unsetenv("CORIO_DISABLE");
	run_loops(n, fn, NULL);
	assert_int_equal(setenv("CORIO_DISABLE", "msg_ring", 1), 0);
	run_loops(n, fn, NULL);
	unsetenv("CORIO_DISABLE");
}

static int where(void *arg)
{
	return (int)(intptr_t)arg * 10 + (int)corio_loop_index();
}

static int order_log[64];
static atomic_int order_len;

static int log_post(void *arg)
{
	order_log[atomic_fetch_add(&order_len, 1)] = (int)(intptr_t)arg;
	return 0;
}

static int yield_until_count(atomic_int *n, int want)
{
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(10));

	while (atomic_load(n) < want && mono_ns() < end)
		corio_sleep(CORIO_MSEC(1));
	return atomic_load(n);
}

static int results_main(void *arg)
{
	int i;

	(void)arg;
	assert_int_equal(corio_loop_count(), 3);
	assert_int_equal(corio_loop_index(), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_call((unsigned int)i, where,
					    (void *)(intptr_t)i), i * 11);
	/* Posts from one loop to another run in the order they were made. */
	atomic_store(&order_len, 0);
	for (i = 0; i < 40; i++)
		assert_int_equal(corio_post(2, log_post, (void *)(intptr_t)i),
				 0);
	assert_int_equal(yield_until_count(&order_len, 40), 40);
	for (i = 0; i < 40; i++)
		assert_int_equal(order_log[i], i);
	/* errors: corio_call.3 EINVAL */
	assert_int_equal(corio_call(3, where, NULL), -EINVAL);
	assert_int_equal(corio_call(0, NULL, NULL), -EINVAL);
	/* errors: corio_post.3 EINVAL */
	assert_int_equal(corio_post(3, where, NULL), -EINVAL);
	assert_int_equal(corio_post(0, NULL, NULL), -EINVAL);
	/* errors: corio_run_loops.3 EBUSY */
	assert_int_equal(corio_run_loops(2, where, NULL), -EBUSY);
	return 0;
}

static void test_call_results_and_post_order(void **state)
{
	(void)state;
	both_ways(3, results_main);
}

/* A million posts from four plain threads to two loops: each runs once. */
#define POSTS		1000000
#define POSTERS		4

static atomic_uchar *seen;
static atomic_int ran;

static int mark(void *arg)
{
	atomic_fetch_add(&seen[(intptr_t)arg], 1);
	atomic_fetch_add(&ran, 1);
	return 0;
}

static void *poster(void *arg)
{
	intptr_t base = (intptr_t)arg, i, per = POSTS / POSTERS;
	int ret;

	if (UNDER_VALGRIND() || CORIO_ASAN)
		per /= 50;
	for (i = 0; i < per; i++) {
		while ((ret = corio_post((unsigned int)(i % 2), mark,
					 (void *)(base * (POSTS / POSTERS) + i)))
		       == -ENOMEM)
			sched_yield();
		if (ret < 0)
			return (void *)(intptr_t)ret;
	}
	return NULL;
}

static int million_main(void *arg)
{
	pthread_t th[POSTERS];
	void *res;
	int i, want = UNDER_VALGRIND() || CORIO_ASAN ? POSTS / 50 : POSTS;

	(void)arg;
	atomic_store(&ran, 0);
	for (i = 0; i < POSTERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, poster,
						(void *)(intptr_t)i), 0);
	for (i = 0; i < POSTERS; i++) {
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_null(res);
	}
	assert_int_equal(yield_until_count(&ran, want), want);
	return 0;
}

static void test_million_posts_from_threads_run_once(void **state)
{
	size_t i, per = POSTS / POSTERS;

	(void)state;
	seen = calloc(POSTS, 1);
	assert_non_null(seen);
	run_loops(2, million_main, NULL);
	if (UNDER_VALGRIND() || CORIO_ASAN)
		per /= 50;
	for (i = 0; i < POSTS; i++)
		if (atomic_load(&seen[i]) != (i % (POSTS / POSTERS) < per))
			fail_msg("post %zu ran %d times", i, seen[i]);
	free(seen);
	/* errors: corio_post.3 ESHUTDOWN */
	assert_int_equal(corio_post(0, mark, NULL), -ESHUTDOWN);
}

/* Cancellation and a deadline of a call whose remote task sleeps. */
static atomic_int remote_done;

static int remote_sleep(void *arg)
{
	int ret = corio_sleep(CORIO_SEC(60));

	(void)arg;
	assert_int_equal(corio_loop_index(), 1);
	atomic_store(&remote_done, 1);
	return ret;
}

static int cancelled_caller(void *arg)
{
	(void)arg;
	return corio_call(1, remote_sleep, NULL);
}

static int cancel_main(void *arg)
{
	corio_task *t;
	uint64_t t0;

	(void)arg;
	atomic_store(&remote_done, 0);
	t = corio_spawn(cancelled_caller, NULL);
	assert_non_null(t);
	assert_int_equal(corio_sleep(CORIO_MSEC(20)), 0);
	assert_int_equal(corio_cancel(t), 0);
	/* The remote task was cancelled and waited for, as by corio_join. */
	assert_int_equal(corio_join(t), -ECANCELED);
	assert_int_equal(atomic_load(&remote_done), 1);

	atomic_store(&remote_done, 0);
	t0 = corio_now();
	corio_timeout(CORIO_MSEC(30));
	/* errors: corio_call.3 ETIMEDOUT */
	assert_int_equal(corio_call(1, remote_sleep, NULL), -ETIMEDOUT);
	corio_deadline(0);
	assert_true(corio_now() - t0 >= CORIO_MSEC(30));
	assert_int_equal(atomic_load(&remote_done), 1);
	/* A cancelled caller does not call: -ECANCELED at once. */
	assert_int_equal(corio_cancel(corio_self()), 0);
	/* errors: corio_call.3 ECANCELED */
	assert_int_equal(corio_call(1, where, NULL), -ECANCELED);
	return 0;
}

static void test_call_cancel_and_deadline(void **state)
{
	(void)state;
	both_ways(2, cancel_main);
}

/* Loop 0 calls loop 1, which calls back loop 0: no deadlock. */
static atomic_int ticks;

static int ticker(void *arg)
{
	(void)arg;
	for (;;) {
		if (corio_sleep(CORIO_MSEC(1)) < 0)
			return 0;
		atomic_fetch_add(&ticks, 1);
	}
}

static int back_on_0(void *arg)
{
	int before = atomic_load(&ticks);

	(void)arg;
	assert_int_equal(corio_loop_index(), 0);
	/* Loop 0 kept running its other tasks meanwhile. */
	corio_sleep(CORIO_MSEC(10));
	return atomic_load(&ticks) > before ? 7 : -1;
}

static int on_1(void *arg)
{
	(void)arg;
	assert_int_equal(corio_loop_index(), 1);
	return corio_call(0, back_on_0, NULL) + 1;
}

static int nested_main(void *arg)
{
	corio_task *t;

	(void)arg;
	atomic_store(&ticks, 0);
	t = corio_spawn(ticker, NULL);
	assert_non_null(t);
	assert_int_equal(corio_call(1, on_1, NULL), 8);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	return 0;
}

static void test_call_answered_by_a_call_back(void **state)
{
	(void)state;
	both_ways(2, nested_main);
}

/*
 * main returns while loops call each other, plain threads post and posts
 * wait in mailboxes: every loop's tasks are cancelled and waited for,
 * every post that was taken runs once, and main's result comes back.
 */
static atomic_int taken, done_posts;
static atomic_bool posters_stop;

static int counted(void *arg)
{
	(void)arg;
	atomic_fetch_add(&done_posts, 1);
	return 0;
}

static void *steady_poster(void *arg)
{
	unsigned int i = 0;
	int ret;

	(void)arg;
	while (!atomic_load(&posters_stop)) {
		ret = corio_post(i++ % 2, counted, NULL);
		if (ret == 0)
			atomic_fetch_add(&taken, 1);
		else if (ret == -ESHUTDOWN)
			break;
		/* Steady, not a flood: the loops keep up. */
		if (i % 64 == 0)
			usleep(100);
	}
	return NULL;
}

static int ping_pong(void *arg)
{
	unsigned int other = 1 - corio_loop_index();

	(void)arg;
	for (;;) {
		int ret = corio_call(other, where, NULL);

		if (ret < 0)
			return ret == -ECANCELED || ret == -ESHUTDOWN ? 0 : ret;
		if (corio_post(other, counted, NULL) == 0)
			atomic_fetch_add(&taken, 1);
	}
}

static int start_ping(void *arg)
{
	corio_task *t = corio_spawn(ping_pong, arg);

	if (t)
		corio_detach(t);
	return 0;
}

static int no_ops(void *arg)
{
	struct corio_stats st;

	(void)arg;
	corio_stats(&st);
	return (int)st.ops_in_flight;
}

static int teardown_main(void *arg)
{
	pthread_t *th = arg;
	int i;

	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, steady_poster,
						NULL), 0);
	assert_int_equal(corio_post(1, start_ping, NULL), 0);
	assert_int_equal(start_ping(NULL), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(50)), 0);
	/* No op is in flight on loop 1 beyond what its tasks await. */
	assert_true(corio_call(1, no_ops, NULL) >= 0);
	return 5;
}

static void test_teardown_with_work_in_flight(void **state)
{
	pthread_t th[2];
	int round;

	(void)state;
	for (round = 0; round < 5; round++) {
		atomic_store(&taken, 0);
		atomic_store(&done_posts, 0);
		atomic_store(&posters_stop, false);
		assert_int_equal(corio_run_loops(2, teardown_main, th), 5);
		atomic_store(&posters_stop, true);
		assert_int_equal(pthread_join(th[0], NULL), 0);
		assert_int_equal(pthread_join(th[1], NULL), 0);
		assert_int_equal(atomic_load(&done_posts),
				 atomic_load(&taken));
	}
}

/* A shielded task that outlives main: calls after teardown began fail. */
static atomic_int late_call;

static int late_caller(void *arg)
{
	(void)arg;
	corio_shield(1);
	corio_sleep(CORIO_MSEC(20));	/* main returns meanwhile */
	atomic_store(&late_call, corio_call(1, where, NULL));
	return 0;
}

static int late_main(void *arg)
{
	corio_task *t = corio_spawn(late_caller, NULL);

	(void)arg;
	assert_non_null(t);
	corio_detach(t);
	return 0;
}

static void test_call_after_teardown_began(void **state)
{
	(void)state;
	atomic_store(&late_call, 0);
	run_loops(2, late_main, NULL);
	/* errors: corio_call.3 ESHUTDOWN */
	assert_int_equal(atomic_load(&late_call), -ESHUTDOWN);
}

/* Loop i's thread runs on the i-th CPU of the mask; CORIO_NOPIN=1 not. */
static int cpus_here(void *arg)
{
	cpu_set_t set;

	(void)arg;
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	return CPU_COUNT(&set);
}

static int pin_main(void *arg)
{
	int *expect = arg;

	assert_int_equal(corio_call(0, cpus_here, NULL), *expect);
	assert_int_equal(corio_call(1, cpus_here, NULL), *expect);
	return 0;
}

static void test_pinning(void **state)
{
	cpu_set_t set;
	int all, one = 1;

	(void)state;
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	all = CPU_COUNT(&set);
	if (all < 2)
		skip();
	run_loops(2, pin_main, &one);
	/* The caller's mask is back. */
	assert_int_equal(cpus_here(NULL), all);
	assert_int_equal(setenv("CORIO_NOPIN", "1", 1), 0);
	run_loops(2, pin_main, &all);
	unsetenv("CORIO_NOPIN");
	/* More loops than CPUs: none pinned. */
	run_loops((unsigned int)all + 1, pin_main, &all);
}

/* corio_run is one loop: calls of loop 0 run locally. */
static int single_main(void *arg)
{
	(void)arg;
	assert_int_equal(corio_loop_count(), 1);
	assert_int_equal(corio_call(0, where, (void *)4), 40);
	assert_int_equal(corio_call(1, where, NULL), -EINVAL);
	atomic_store(&order_len, 0);
	assert_int_equal(corio_post(0, log_post, (void *)9), 0);
	assert_int_equal(yield_until_count(&order_len, 1), 1);
	return 0;
}

static void test_single_loop_and_errors(void **state)
{
	(void)state;
	RUN(single_main, NULL);
	run_loops(1, single_main, NULL);
	assert_int_equal(corio_loop_count(), 0);
	/* errors: corio_run_loops.3 EINVAL */
	assert_int_equal(corio_run_loops(2, NULL, NULL), -EINVAL);
	assert_int_equal(corio_run_loops(100000, where, NULL), -EINVAL);
	/* errors: corio_call.3 EPERM */
	assert_int_equal(corio_call(0, where, NULL), -EPERM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_call_results_and_post_order),
		CORIO_TEST(test_million_posts_from_threads_run_once),
		CORIO_TEST(test_call_cancel_and_deadline),
		CORIO_TEST(test_call_answered_by_a_call_back),
		CORIO_TEST(test_teardown_with_work_in_flight),
		CORIO_TEST(test_call_after_teardown_began),
		CORIO_TEST(test_pinning),
		CORIO_TEST(test_single_loop_and_errors),
	};

	return RUN_GROUP(tests);
}
