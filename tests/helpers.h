/*
 * helpers.h - what the cmocka tests share.
 *
 * Each test calls corio_run with a task function: RUN() asserts its result,
 * assert_loop_clean() is the last thing a main task checks (no task but
 * main alive, no operation in flight).  Timing checks scale with
 * CORIO_TEST_TIMEOUT_MULT (test_slack_ns); a test that needs a kernel
 * feature that is missing calls skip().  Everything here is static inline:
 * the Makefile links every other .c file of tests/ into each test; headers are
 * free.
 *
 * cmocka asserts may be used inside tasks: a failure longjmps out of the
 * task's stack back to cmocka, leaving the thread's loop half-run.
 * CORIO_TEST() wraps each test with a teardown that abandons such a loop,
 * so the next test of the binary starts clean instead of getting -EBUSY.
 * Inside a forked child, never use cmocka asserts (the child would go on
 * running cmocka's list): use CHILD_CHECK, which _exits.
 */
#ifndef CORIO_TESTS_HELPERS_H
#define CORIO_TESTS_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <corio.h>
#include "corio-int.h"	/* corio__loop, only to recover from a failure */

#if CORIO_ASAN
#include <sanitizer/asan_interface.h>
#endif
#if CORIO_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND()	(RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND()	0
#endif

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* Runs fn as a loop's main task; the test fails unless it returns 0. */
#define RUN(fn, arg)	assert_int_equal(corio_run((fn), (arg)), 0)

/*
 * Every test binary's main: CORIO_TEST_FILTER=pattern runs only the
 * matching tests (cmocka's wildcards), for debugging one test.
 */
#define RUN_GROUP(tests)						\
	(getenv("CORIO_TEST_FILTER") ?					\
	 cmocka_set_test_filter(getenv("CORIO_TEST_FILTER")) : (void)0, \
	 cmocka_run_group_tests((tests), NULL, NULL))

/* A test with the teardown that recovers from a failure inside a task. */
#define CORIO_TEST(f)	cmocka_unit_test_teardown(f, corio_test_teardown)

static inline int corio_test_teardown(void **state)
{
	(void)state;
	if (corio__loop) {
		fprintf(stderr, "helpers: a test failed inside a task; its "
			"loop is abandoned (leaked)\n");
		corio__loop = NULL;
#if CORIO_ASAN
		/* The longjmp left from a task's stack, so ASan did not
		 * unpoison the frames it skipped on this one. */
		{
			char here;
			uintptr_t sp = (uintptr_t)&here, len = 1u << 20;

			__asan_unpoison_memory_region((void *)(sp - len), len);
		}
#endif
	}
	return 0;
}

/* A check inside a fork child: on failure, say where and _exit(1). */
#define CHILD_CHECK(cond)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: child: check failed: %s\n", \
				__FILE__, __LINE__, #cond);		\
			_exit(1);					\
		}							\
	} while (0)

/* CORIO_TEST_TIMEOUT_MULT, at least 1: slow machines, valgrind, ASan. */
static inline double test_mult(void)
{
	const char *s = getenv("CORIO_TEST_TIMEOUT_MULT");
	double m = s && *s ? strtod(s, NULL) : 1.0;

	return m >= 1.0 ? m : 1.0;
}

/* A generous bound for "this happens promptly", scaled by the multiplier. */
static inline uint64_t test_slack_ns(uint64_t ns)
{
	return (uint64_t)((double)ns * test_mult());
}

/* CLOCK_MONOTONIC, read independently of corio_now. */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The end of a main task: only main alive and nothing in flight. */
static inline void assert_loop_clean(void)
{
	struct corio_stats st;

	assert_int_equal(corio_stats(&st), 0);
	assert_int_equal(st.tasks_live, 1);
	assert_int_equal(st.ops_in_flight, 0);
}

static inline struct corio_stats stats_now(void)
{
	struct corio_stats st;

	assert_int_equal(corio_stats(&st), 0);
	return st;
}

/*
 * Open fds of process pid, from /proc/PID/fd (for this process, but the
 * listing's own); -1 if unreadable.
 */
static inline int pid_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return pid == getpid() ? n - 1 : n;
}

/* Open fds of this process. */
static inline int fd_count(void)
{
	int n = pid_fd_count(getpid());

	assert_true(n >= 0);
	return n;
}

/* Is fd open?  (fcntl F_GETFD fails with EBADF when it is not.) */
static inline int fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

static inline int fd_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	return fl >= 0 && (fl & FD_CLOEXEC);
}

/* Raises RLIMIT_NOFILE to at least nr; false if the hard limit is lower. */
static inline int nofile_at_least(rlim_t nr)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur >= nr)
		return 1;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < nr)
		return 0;
	rl.rlim_cur = nr;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/*
 * Inside a task: yields until *flag is set, failing after 10 s (scaled).
 * A task that sets a flag just before it parks has parked by the time the
 * yielding task sees it, since tasks switch only at awaits.
 */
static inline void yield_until(const int *flag)
{
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(10));

	while (!*flag) {
		assert_int_equal(corio_yield(), 0);
		assert_true(mono_ns() < end);
	}
}

/* Inside a task: sends or receives exactly len bytes; the last result. */
static inline ssize_t send_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = corio_send(fd, (const char *)buf + done,
				       len - done, 0);

		if (n <= 0)
			return n;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static inline ssize_t recv_all(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = corio_recv(fd, (char *)buf + done, len - done, 0);

		if (n <= 0)
			return n;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Waits for a fork child; its exit status, or -1 if it did not exit. */
static inline int child_wait(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	fprintf(stderr, "helpers: child %d killed by signal %d\n", (int)pid,
		WIFSIGNALED(status) ? WTERMSIG(status) : -1);
	return -1;
}

/* A connected pair of loopback TCP sockets (plain syscalls): 0 or -1. */
static inline int tcp_pair(int *a, int *b)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	*a = *b = -1;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l < 0 || bind(l, (struct sockaddr *)&sin, len) < 0 ||
	    listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) < 0)
		return -1;
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&sin, len) < 0)
		return -1;
	*b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	return *b < 0 ? -1 : 0;
}

#endif
