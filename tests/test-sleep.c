/*
 * test-sleep.c - time: corio_sleep, corio_now, many timers at once, and
 * the loop's one io_uring_enter per turn.
 */
#include <stdint.h>

#include "helpers.h"

static int sleep_200_main(void *arg)
{
	uint64_t t0 = corio_now(), m0 = mono_ns();

	(void)arg;
	assert_int_equal(corio_sleep(CORIO_MSEC(200)), 0);
	assert_true(corio_now() - t0 >= CORIO_MSEC(200));
	assert_true(mono_ns() - m0 >= CORIO_MSEC(200));
	assert_loop_clean();
	return 0;
}

static void test_sleep_200ms(void **state)
{
	(void)state;
	RUN(sleep_200_main, NULL);
}

struct timed {
	uint64_t ns;		/* how long to sleep */
	int ret;		/* what corio_sleep returned */
	uint64_t slept;		/* how long it took */
};

static int timed_sleep(void *arg)
{
	struct timed *t = arg;
	uint64_t t0 = corio_now();

	t->ret = corio_sleep(t->ns);
	t->slept = corio_now() - t0;
	return 0;
}

#define OVERLAP 1000

/* 1000 sleeps of 200 ms run at once: together they take about 200 ms. */
static int overlap_main(void *arg)
{
	static struct timed tm[OVERLAP];
	static corio_task *t[OVERLAP];
	uint64_t t0 = corio_now();
	int i;

	(void)arg;
	for (i = 0; i < OVERLAP; i++) {
		tm[i] = (struct timed){ .ns = CORIO_MSEC(200), .ret = 1 };
		t[i] = corio_spawn(timed_sleep, &tm[i]);
		assert_non_null(t[i]);
	}
	for (i = 0; i < OVERLAP; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(tm[i].ret, 0);
		assert_true(tm[i].slept >= CORIO_MSEC(200));
	}
	assert_true(corio_now() - t0 >= CORIO_MSEC(200));
	assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));
	assert_loop_clean();
	return 0;
}

static void test_1000_sleeps_overlap(void **state)
{
	(void)state;
	RUN(overlap_main, NULL);
}

static int wake_log[8], wake_n;

static int log_sleep(void *arg)
{
	int i = (int)(intptr_t)arg;

	assert_int_equal(corio_sleep(CORIO_MSEC(20) * (uint64_t)(5 - i)), 0);
	wake_log[wake_n++] = i;
	return 0;
}

/*
 * Tasks spawned longest sleep first wake shortest first: the order of
 * their timers, which are 20 ms apart, and CQEs resume tasks in order.
 */
static int wake_order_main(void *arg)
{
	corio_task *t[5];
	int i;

	(void)arg;
	wake_n = 0;
	for (i = 0; i < 5; i++) {	/* task i sleeps (5 - i) * 20 ms */
		t[i] = corio_spawn(log_sleep, (void *)(intptr_t)i);
		assert_non_null(t[i]);
	}
	for (i = 0; i < 5; i++)
		assert_int_equal(corio_join(t[i]), 0);
	assert_int_equal(wake_n, 5);
	for (i = 0; i < 5; i++)
		assert_int_equal(wake_log[i], 4 - i);
	assert_loop_clean();
	return 0;
}

static void test_wake_order_follows_duration(void **state)
{
	(void)state;
	RUN(wake_order_main, NULL);
}

static int ran;

static int set_ran(void *arg)
{
	(void)arg;
	ran = 1;
	return 0;
}

static int sleep_zero_main(void *arg)
{
	struct corio_stats before, after;
	corio_task *t;

	(void)arg;
	ran = 0;
	t = corio_spawn(set_ran, NULL);
	assert_non_null(t);
	before = stats_now();
	assert_int_equal(corio_sleep(0), 0);
	after = stats_now();
	assert_true(ran);
	/* A yield: no timeout was submitted. */
	assert_int_equal(after.enters, before.enters);
	assert_int_equal(corio_join(t), 0);
	/* Alone, it returns at once too. */
	assert_int_equal(corio_sleep(0), 0);
	assert_loop_clean();
	return 0;
}

static void test_sleep_zero_yields(void **state)
{
	(void)state;
	RUN(sleep_zero_main, NULL);
}

#define MASS 50000

static int mass_ok;

static int one_ms(void *arg)
{
	(void)arg;
	if (corio_sleep(CORIO_MSEC(1)) == 0)
		mass_ok++;
	return 0;
}

/*
 * More timers than the CQ ring has entries, all firing at about the same
 * time: every sleep returns 0 (NODROP: an overflowed CQE is held back by
 * the kernel, not lost).
 */
static int mass_sleep_main(void *arg)
{
	struct corio_spawn_attr attr = { .stack_size = CORIO_STACK_MIN };
	struct corio_stats before, after;
	corio_task **t;
	int i;

	(void)arg;
	t = calloc(MASS, sizeof(*t));
	assert_non_null(t);
	mass_ok = 0;
	before = stats_now();
	for (i = 0; i < MASS; i++) {
		t[i] = corio_spawn_ex(one_ms, NULL, &attr);
		assert_non_null(t[i]);
	}
	for (i = 0; i < MASS; i++)
		assert_int_equal(corio_join(t[i]), 0);
	after = stats_now();
	free(t);
	assert_int_equal(mass_ok, MASS);
	assert_true(after.cqes - before.cqes >= MASS);
	print_message("50,000 sleeps: %" PRIu64 " turns, %" PRIu64
		      " enters, %" PRIu64 " turns found the CQ overflowed\n",
		      after.turns - before.turns, after.enters - before.enters,
		      after.cq_overflows - before.cq_overflows);
	assert_loop_clean();
	return 0;
}

static void test_50000_sleeps_at_once(void **state)
{
	(void)state;
	RUN(mass_sleep_main, NULL);
}

static int now_main(void *arg)
{
	uint64_t prev = corio_now(), t0, now;
	int i;

	(void)arg;
	for (i = 0; i < 10000; i++) {
		now = corio_now();
		assert_true(now >= prev);
		prev = now;
	}
	t0 = corio_now();
	assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	assert_true(corio_now() - t0 >= CORIO_MSEC(10));
	assert_loop_clean();
	return 0;
}

/* corio_now is CLOCK_MONOTONIC, read on every call, in or out of a loop. */
static void test_now_monotonic(void **state)
{
	uint64_t a, b, c;

	(void)state;
	a = mono_ns();
	b = corio_now();
	c = mono_ns();
	assert_true(a <= b && b <= c);
	RUN(now_main, NULL);
}

#define BATCH 100

static int three_sleeps(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	return 0;
}

/* Each turn makes at most one io_uring_enter, for the whole batch. */
static int one_enter_main(void *arg)
{
	corio_task *t[BATCH];
	struct corio_stats before, after;
	int i;

	(void)arg;
	before = stats_now();
	for (i = 0; i < BATCH; i++) {
		t[i] = corio_spawn(three_sleeps, NULL);
		assert_non_null(t[i]);
	}
	for (i = 0; i < BATCH; i++)
		assert_int_equal(corio_join(t[i]), 0);
	after = stats_now();
	assert_true(after.cqes - before.cqes >= 3 * BATCH);
	/* 300 sleeps took a handful of enters, not hundreds. */
	assert_true(after.enters - before.enters <=
		    after.turns - before.turns + 2);
	assert_loop_clean();
	return 0;
}

static void test_one_enter_per_turn(void **state)
{
	(void)state;
	RUN(one_enter_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_sleep_200ms),
		CORIO_TEST(test_1000_sleeps_overlap),
		CORIO_TEST(test_wake_order_follows_duration),
		CORIO_TEST(test_sleep_zero_yields),
		CORIO_TEST(test_50000_sleeps_at_once),
		CORIO_TEST(test_now_monotonic),
		CORIO_TEST(test_one_enter_per_turn),
	};

	return RUN_GROUP(tests);
}
