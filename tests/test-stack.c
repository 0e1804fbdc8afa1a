/*
 * test-stack.c - stacks: overflow caught and reported, 100,000 parked tasks
 * in little memory and few mappings, RSS given back after a burst, stack
 * sizes honoured.
 */
#include "helpers.h"

#include <pthread.h>
#include <signal.h>

#define PARKED		100000

static long status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t n = strlen(field);
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			v = strtol(line + n + 1, NULL, 10);
	fclose(f);
	return v;
}

static long maps_count(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* Memory figures mean nothing under ASan's shadow memory or valgrind. */
static bool memory_measurable(void)
{
	return !CORIO_ASAN && !UNDER_VALGRIND() && !getenv("CORIO_TEST_WRAPPER");
}

static int recurse(int depth)
{
	volatile char frame[512];

	memset((char *)frame, depth, sizeof(frame));
	return depth ? recurse(depth - 1) + frame[7] : 0;
}

static int overflow_main(void *arg)
{
	(void)arg;
	return recurse(1 << 20);
}

/* A task that runs past its stack dies with a message naming it. */
static void test_overflow_reported(void **state)
{
	int pipefd[2], status;
	char out[512] = "";
	ssize_t n, len = 0;
	pid_t pid;

	(void)state;
	if (CORIO_ASAN)
		skip();	/* ASan reports stack overflows itself */
	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		close(pipefd[0]);
		signal(SIGSEGV, SIG_DFL);
		corio_run(overflow_main, NULL);
		_exit(0);	/* not reached: the overflow aborts */
	}
	close(pipefd[1]);
	while ((n = read(pipefd[0], out + len, sizeof(out) - 1 - (size_t)len))
	       > 0)
		len += n;
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	assert_non_null(strstr(out, "corio: task 1 ("));
	assert_non_null(strstr(out, "overflowed its"));
	assert_non_null(strstr(out, "KiB stack"));
}

/* A fault that is not a stack overflow keeps its ordinary behaviour. */
static int null_main(void *arg)
{
	volatile int *p = arg;

	return *p;
}

static void test_other_fault_is_sigsegv(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (CORIO_ASAN)
		skip();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(STDERR_FILENO);
		signal(SIGSEGV, SIG_DFL);	/* not cmocka's: the default */
		corio_run(null_main, NULL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
}

static int parked_sleep(void *arg)
{
	(void)arg;
	return corio_sleep(CORIO_MSEC(300));
}

static int parked_main(void *arg)
{
	corio_task **t = malloc(PARKED * sizeof(*t));
	long rss0 = status_kib("VmRSS"), maps0 = maps_count(), rss1, maps1;
	int i, bad = 0;

	(void)arg;
	assert_non_null(t);
	for (i = 0; i < PARKED; i++) {
		t[i] = corio_spawn(parked_sleep, NULL);
		assert_non_null(t[i]);
	}
	corio_yield();	/* every task has run and parked */
	rss1 = status_kib("VmRSS");
	maps1 = maps_count();
	for (i = 0; i < PARKED; i++)
		bad += corio_join(t[i]) != 0;
	free(t);
	assert_int_equal(bad, 0);
	if (memory_measurable()) {
		/* A parked task: its task struct and the page it touched. */
		print_message("%d parked tasks: %.2f KiB RSS each, %ld more "
			      "mappings\n", PARKED,
			      (double)(rss1 - rss0) / PARKED, maps1 - maps0);
		assert_true((rss1 - rss0) * 1024 / PARKED <= 8 * 1024);
	}
	/* Slabs, not a mapping per stack: far below vm.max_map_count. */
	assert_true(maps1 - maps0 < 1000);
	assert_loop_clean();
	return 0;
}

static void test_100k_parked_tasks(void **state)
{
	(void)state;
	RUN(parked_main, NULL);
}

#define BURST		20000
#define BURST_TOUCH	(32 * 1024)

static int burst_task(void *arg)
{
	volatile char buf[BURST_TOUCH];

	(void)arg;
	memset((char *)buf, 1, sizeof(buf));
	return corio_sleep(CORIO_MSEC(20)) + buf[100] - 1;
}

static int burst_main(void *arg)
{
	corio_task **t = malloc(BURST * sizeof(*t));
	long before = status_kib("VmRSS"), peak, joined, after;
	uint64_t end;
	int i, bad = 0;

	(void)arg;
	assert_non_null(t);
	for (i = 0; i < BURST; i++) {
		t[i] = corio_spawn(burst_task, NULL);
		assert_non_null(t[i]);
	}
	corio_yield();
	peak = status_kib("VmRSS");
	for (i = 0; i < BURST; i++)
		bad += corio_join(t[i]) != 0;
	joined = status_kib("VmRSS");
	free(t);
	assert_int_equal(bad, 0);
	/* Free stacks are given back once they stay unused for a trim
	 * period (1 s), so within 2 s; the idle loop wakes for it. */
	end = corio_now() + test_slack_ns(CORIO_SEC(5));
	do {
		assert_int_equal(corio_sleep(CORIO_MSEC(100)), 0);
		after = status_kib("VmRSS");
	} while (after - before >= (peak - before) / 4 && corio_now() < end);
	if (memory_measurable()) {
		print_message("burst of %d: RSS %ld KiB before, %ld at the "
			      "peak, %ld once joined, %ld after\n", BURST,
			      before, peak, joined, after);
		/* The burst touched 20,000 x 32 KiB = 625 MiB of stack. */
		assert_true(peak - before > 400 * 1024);
		/* Not at once: the next burst reuses them, warm. */
		assert_true(joined - before > (peak - before) / 2);
		assert_true(after - before < (peak - before) / 4);
	}
	assert_loop_clean();
	return 0;
}

static void test_rss_falls_after_burst(void **state)
{
	(void)state;
	RUN(burst_main, NULL);
}

#define BIG_USE		(200 * 1024)

static int big_user(void *arg)
{
	volatile char buf[BIG_USE];

	(void)arg;
	memset((char *)buf, 7, sizeof(buf));
	if (corio_yield() < 0)
		return -1;
	return buf[BIG_USE - 1] + buf[0];
}

static int attr_main(void *arg)
{
	struct corio_spawn_attr attr = { .stack_size = 256 * 1024 };
	corio_task *t;

	(void)arg;
	if (CORIO_ASAN)
		attr.stack_size = 1024 * 1024;	/* redzones: bigger frames */
	t = corio_spawn_ex(big_user, NULL, &attr);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 14);

	attr.stack_size = CORIO_STACK_MIN - 1;
	errno = 0;
	assert_null(corio_spawn_ex(big_user, NULL, &attr));
	assert_int_equal(errno, EINVAL);
	attr.stack_size = (size_t)CORIO_STACK_MAX + 1;
	errno = 0;
	assert_null(corio_spawn_ex(big_user, NULL, &attr));
	assert_int_equal(errno, EINVAL);
	assert_loop_clean();
	return 0;
}

static void test_stack_size_attribute(void **state)
{
	(void)state;
	RUN(attr_main, NULL);
}

static int size_main(void *arg)
{
	ssize_t old = corio_stack_size(0);
	corio_task *t;

	(void)arg;
	assert_true(old >= (ssize_t)CORIO_STACK_DEFAULT);
	assert_int_equal(corio_stack_size(CORIO_STACK_MIN - 1), -EINVAL);
	assert_int_equal(corio_stack_size(512 * 1024), old);
	assert_int_equal(corio_stack_size(0), 512 * 1024);
	t = corio_spawn(big_user, NULL);	/* the new default fits it */
	assert_non_null(t);
	assert_int_equal(corio_join(t), 14);
	assert_int_equal(corio_stack_size((size_t)old), 512 * 1024);
	assert_loop_clean();
	return 0;
}

static void test_default_stack_size(void **state)
{
	(void)state;
	RUN(size_main, NULL);
}

/* corio_stack_size(0) in a new thread, which reads CORIO_STACK_SIZE anew. */
static void *read_default(void *arg)
{
	*(ssize_t *)arg = corio_stack_size(0);
	return NULL;
}

static ssize_t default_with_env(const char *value)
{
	pthread_t th;
	ssize_t size = -1;

	if (value)
		assert_int_equal(setenv("CORIO_STACK_SIZE", value, 1), 0);
	else
		assert_int_equal(unsetenv("CORIO_STACK_SIZE"), 0);
	assert_int_equal(pthread_create(&th, NULL, read_default, &size), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	return size;
}

/*
 * CORIO_STACK_SIZE: decimal bytes with an optional K or M, in range, or
 * ignored.  The parser itself, with the values that strtoull would have
 * let through: a sign, a blank, a suffix shifted past 64 bits.
 */
static void test_stack_size_env(void **state)
{
	static const char *const bad[] = {
		"", "-1", "+64K", " 64K", "64KB", "64k ", "1G", "0x10000",
		"16383", "257M", "K", "18446744073709551616",
		"18014398509482048K",	/* (2^54 + 64) K wraps to 64 KiB */
		"17592186044480M",	/* (2^44 + 64) M wraps to 64 MiB */
	};
	const char *saved = getenv("CORIO_STACK_SIZE");
	char *copy = saved ? strdup(saved) : NULL;
	ssize_t def;
	uint64_t v;
	size_t i;

	(void)state;
	def = default_with_env(NULL);
	assert_true(def >= (ssize_t)CORIO_STACK_DEFAULT);
	assert_int_equal(default_with_env("131072"), 131072);
	assert_int_equal(default_with_env("128K"), 128 * 1024);
	assert_int_equal(default_with_env("2m"), 2 * 1024 * 1024);
	assert_int_equal(default_with_env("20000"), 20480);	/* a page */
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		if (*bad[i])
			assert_int_equal(corio__parse_size(bad[i],
					 CORIO_STACK_MIN, CORIO_STACK_MAX,
					 &v), -EINVAL);
		assert_int_equal(default_with_env(bad[i]), def);
	}
	assert_int_equal(corio__parse_size("18446744073709551615", 0,
					   UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(corio__parse_size("17592186044415M", 0, UINT64_MAX,
					   &v), 0);
	assert_true(v == 17592186044415ull << 20);
	assert_int_equal(corio__parse_size("17592186044416M", 0, UINT64_MAX,
					   &v), -EINVAL);
	assert_int_equal(corio__parse_ms("250", &v), 0);
	assert_true(v == CORIO_MSEC(250));
	assert_int_equal(corio__parse_ms("0", &v), -EINVAL);
	assert_int_equal(corio__parse_ms("-5", &v), -EINVAL);
	assert_int_equal(corio__parse_ms("18446744073710", &v), -EINVAL);
	if (copy)
		setenv("CORIO_STACK_SIZE", copy, 1);
	else
		unsetenv("CORIO_STACK_SIZE");
	free(copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_overflow_reported),
		CORIO_TEST(test_other_fault_is_sigsegv),
		CORIO_TEST(test_100k_parked_tasks),
		CORIO_TEST(test_rss_falls_after_burst),
		CORIO_TEST(test_stack_size_attribute),
		CORIO_TEST(test_default_stack_size),
		CORIO_TEST(test_stack_size_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
