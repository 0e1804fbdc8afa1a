/*
 * test-loop.c - the loop itself: its counters, io_uring being refused,
 * many loops in a row, fork, running out of memory, CQ overflow.
 */
#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "faults.h"

static int ret_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static int stats_main(void *arg)
{
	struct corio_stats a, b, c;
	corio_task *t[3];
	int i;

	(void)arg;
	assert_int_equal(corio_stats(NULL), -EINVAL);
	a = stats_now();
	assert_int_equal(a.tasks_live, 1);
	assert_int_equal(a.ops_in_flight, 0);
	assert_true(a.turns >= 1);
	for (i = 0; i < 3; i++) {
		t[i] = corio_spawn(ret_arg, NULL);
		assert_non_null(t[i]);
	}
	assert_int_equal(stats_now().tasks_live, 4);
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	b = stats_now();
	assert_int_equal(b.tasks_live, 1);	/* returned, not yet joined */
	assert_true(b.turns > a.turns);
	assert_true(b.enters > a.enters);
	assert_true(b.cqes >= a.cqes + 2);
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_join(t[i]), 0);

	/* Turns with nothing to submit and nothing in flight make no
	 * system call. */
	b = stats_now();
	for (i = 0; i < 100; i++)
		assert_int_equal(corio_yield(), 0);
	c = stats_now();
	assert_int_equal(c.turns, b.turns + 100);
	assert_int_equal(c.enters, b.enters);
	assert_int_equal(c.cqes, b.cqes);
	assert_loop_clean();
	return 0;
}

static void test_stats_counters_move(void **state)
{
	(void)state;
	RUN(stats_main, NULL);
}

struct io_done {
	int fd;			/* a socket for the recv */
	int file;		/* a regular file for fsync and read */
	int done;
};

static int do_sleep(void *arg)
{
	struct io_done *d = arg;

	assert_int_equal(corio_sleep(CORIO_MSEC(5)), 0);
	d->done++;
	return 0;
}

static int do_recv(void *arg)
{
	struct io_done *d = arg;
	char buf[8];

	assert_int_equal(corio_recv(d->fd, buf, sizeof(buf), 0), 4);
	d->done++;
	return 0;
}

static int do_file(void *arg)
{
	struct io_done *d = arg;
	char buf[8];

	assert_int_equal(corio_write(d->file, "data", 4, 0), 4);
	assert_int_equal(corio_fsync(d->file, 0), 0);
	assert_int_equal(corio_read(d->file, buf, sizeof(buf), 0), 4);
	d->done++;
	return 0;
}

/*
 * A task that only yields does not starve I/O: with DEFER_TASKRUN the
 * kernel posts completions only inside io_uring_enter, so the loop must
 * still enter while tasks keep yielding.
 */
static int starve_main(void *arg)
{
	struct io_done d = { .done = 0 };
	char path[128];
	int sv[2], want = 3, i;
	corio_task *t[3];

	(void)arg;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	snprintf(path, sizeof(path), "/tmp/corio-test-loop-%ld",
		 (long)getpid());
	d.fd = sv[0];
	d.file = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(d.file >= 0);
	unlink(path);
	t[0] = corio_spawn(do_sleep, &d);
	t[1] = corio_spawn(do_recv, &d);
	t[2] = corio_spawn(do_file, &d);
	for (i = 0; i < 3; i++)
		assert_non_null(t[i]);
	assert_int_equal(corio_yield(), 0);	/* they are parked */
	assert_int_equal(send(sv[1], "ping", 4, 0), 4);
	{
		uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(10));

		while (d.done < want) {
			assert_int_equal(corio_yield(), 0);
			assert_true(mono_ns() < end);
		}
	}
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_join(t[i]), 0);
	assert_int_equal(corio_close(d.file), 0);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_yielding_does_not_starve_io(void **state)
{
	(void)state;
	RUN(starve_main, NULL);
}


#define CHILD_SKIP 77

/* io_uring_setup fails with err in this process from now on. */
static int refuse_io_uring(int err)
{
	return refuse_syscall(__NR_io_uring_setup, err);
}

static int set_flag(void *arg)
{
	*(int *)arg = 1;
	return 0;
}

/*
 * RLIMIT_NOFILE at the lowest free fd: no new fd in this process from now
 * on, so io_uring_setup fails with EMFILE.
 */
static int no_fd_left(int err)
{
	struct rlimit rl;
	int fd;

	(void)err;
	fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
	if (fd < 0 || close(fd) < 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	rl.rlim_cur = (rlim_t)fd;
	return setrlimit(RLIMIT_NOFILE, &rl);
}

/*
 * In a child where refuse(err) has made io_uring_setup fail with err:
 * corio_run returns -err without running main and prints exactly one
 * line on stderr.  refuse < 0: the child cannot, and the test skips.
 */
static void failed_setup(int err, int (*refuse)(int err))
{
	char out[4096];
	size_t len = 0;
	ssize_t n;
	int pfd[2], lines = 0, status;
	size_t i;
	pid_t pid;

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int flag = 0, ret;

		if (dup2(pfd[1], STDERR_FILENO) < 0)
			_exit(2);
		if (refuse(err) < 0)
			_exit(CHILD_SKIP);
		ret = corio_run(set_flag, &flag);
		if (ret != -err)
			_exit(3);
		if (flag)
			_exit(4);
		_exit(0);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	close(pfd[0]);
	out[len] = 0;
	status = child_wait(pid);
	if (status == CHILD_SKIP)
		skip();
	if (status != 0)
		print_message("child stderr: %s", out);
	assert_int_equal(status, 0);
	for (i = 0; i < len; i++)
		lines += out[i] == '\n';
	print_message("corio_run said: %s", out);
	assert_int_equal(lines, 1);
	assert_true(len > 1 && out[len - 1] == '\n');
}

static void test_io_uring_enosys(void **state)
{
	(void)state;
	/* errors: corio_run.3 ENOSYS */
	failed_setup(ENOSYS, refuse_io_uring);
}

static void test_io_uring_eperm(void **state)
{
	(void)state;
	/* errors: corio_run.3 EPERM */
	failed_setup(EPERM, refuse_io_uring);
}

/* Any other error of io_uring_setup is passed on the same way. */
static void test_io_uring_enomem(void **state)
{
	(void)state;
	/* errors: corio_run.3 ENOMEM */
	failed_setup(ENOMEM, refuse_io_uring);
}

/* Out of fds: io_uring_setup's own -EMFILE, no seccomp needed. */
static void test_io_uring_emfile(void **state)
{
	(void)state;
	/* errors: corio_run.3 EMFILE */
	failed_setup(EMFILE, no_fd_left);
}

static int short_main(void *arg)
{
	int ret = corio_nop();

	return ret < 0 ? ret : (int)(intptr_t)arg;
}

/* Each loop gives back its ring and everything else it opened. */
static void test_1000_runs_leak_no_fd(void **state)
{
	int before, i;

	(void)state;
	before = fd_count();
	for (i = 0; i < 1000; i++)
		assert_int_equal(corio_run(short_main, (void *)(intptr_t)i), i);
	assert_int_equal(fd_count(), before);
}

/* The child's new loop, on a new thread.  No cmocka: a fork child. */
static int child_task(void *arg)
{
	(void)arg;
	return corio_sleep(CORIO_MSEC(1)) == 0 ? 5 : -1;
}

static int child_loop_main(void *arg)
{
	corio_task *t;

	(void)arg;
	if (corio_sleep(CORIO_MSEC(1)) != 0)
		return -1;
	t = corio_spawn(child_task, NULL);
	if (!t)
		return -2;
	return corio_join(t);
}

static void *child_thread(void *arg)
{
	*(int *)arg = corio_run(child_loop_main, NULL);
	return NULL;
}

static int never_run(void *arg)
{
	(void)arg;
	_exit(9);
}

static void child_after_fork(void)
{
	struct corio_stats st;
	pthread_t th;
	int res = 0;

	/* The parent's loop is not this process's. */
	CHILD_CHECK(corio_sleep(CORIO_MSEC(1)) == -EPERM);
	CHILD_CHECK(corio_nop() == -EPERM);
	CHILD_CHECK(corio_yield() == -EPERM);
	CHILD_CHECK(corio_stats(&st) == -EPERM);
	errno = 0;
	CHILD_CHECK(corio_spawn(never_run, NULL) == NULL && errno == EPERM);
	errno = 0;
	CHILD_CHECK(corio_self() == NULL && errno == EPERM);
	/* A new loop on a new thread works. */
	CHILD_CHECK(pthread_create(&th, NULL, child_thread, &res) == 0);
	CHILD_CHECK(pthread_join(th, NULL) == 0);
	CHILD_CHECK(res == 5);
	_exit(0);
}

static int fork_main(void *arg)
{
	int pidfd, status;
	pid_t pid;

	(void)arg;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_after_fork();	/* does not return */

	/* Wait for the child without blocking the loop, if pidfds exist. */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0) {
		assert_true(corio_poll(pidfd, POLLIN) & POLLIN);
		assert_int_equal(corio_close(pidfd), 0);
	}
	status = child_wait(pid);
	assert_int_equal(status, 0);
	/* The parent's loop is unharmed. */
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_loop_clean();
	return 0;
}

static void test_fork_from_task(void **state)
{
	(void)state;
	/* valgrind does not model MADV_DONTFORK (the ring): in the child, its
	 * map of the address space is wrong and the first mmap asserts. */
	if (UNDER_VALGRIND())
		skip();
	RUN(fork_main, NULL);
}

static int oom_task(void *arg)
{
	if (corio_sleep(CORIO_MSEC(1)) != 0)
		return -1;
	return (int)(intptr_t)arg;
}

#define OOM_MAX 4096

/*
 * No cmocka: runs in a fork child.  Lowers RLIMIT_AS to the current size
 * plus some headroom, spawns tasks with 1 MiB stacks until corio_spawn_ex
 * fails, then checks that the loop still runs them all.  The headroom
 * grows until at least one spawn fits (how much memory a spawn maps at
 * once is stack.c's business).  Returns the tasks spawned, or < 0.
 */
static int oom_main(void *arg)
{
	struct corio_spawn_attr attr = { .stack_size = 1024 * 1024 };
	corio_task **t = malloc(OOM_MAX * sizeof(*t));
	size_t vm, headroom;
	struct rlimit rl;
	int n = 0, i, err = 0;
	corio_task *small;

	(void)arg;
	if (!t || getrlimit(RLIMIT_AS, &rl) < 0)
		return -1;
	vm = vm_size();
	if (!vm)
		return -2;
	for (headroom = 40u << 20; headroom <= 1280u << 20; headroom *= 2) {
		/* rlim_max stays, so the limit can grow again. */
		rl.rlim_cur = vm + headroom;
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			return -3;
		for (n = 0; n < OOM_MAX; n++) {
			t[n] = corio_spawn_ex(oom_task, (void *)(intptr_t)n,
					      &attr);
			if (!t[n]) {
				err = errno;
				break;
			}
		}
		if (n > 0 || err != ENOMEM)
			break;
	}
	if (n == OOM_MAX)
		return -4;	/* never ran out */
	/* errors: corio_spawn.3 ENOMEM */
	if (err != ENOMEM)
		return -5;
	if (n == 0)
		return -6;
	/* The loop goes on: the tasks it has run, a small one still fits. */
	small = corio_spawn(ret_arg, (void *)(intptr_t)77);
	if (!small || corio_join(small) != 77)
		return -7;
	for (i = 0; i < n; i++)
		if (corio_join(t[i]) != i)
			return -8;
	free(t);
	return n;
}

static void test_spawn_out_of_memory(void **state)
{
	pid_t pid;

	(void)state;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ret = corio_run(oom_main, NULL);

		if (ret <= 0)
			fprintf(stderr, "oom_main: %d\n", ret);
		else
			fprintf(stderr, "oom child: %d tasks with 1 MiB "
				"stacks, then ENOMEM\n", ret);
		_exit(ret > 0 ? 0 : 1);
	}
	assert_int_equal(child_wait(pid), 0);
}

#define NOPS 50000

static int nops_ok;

static int one_nop(void *arg)
{
	(void)arg;
	if (corio_nop() == 0)
		nops_ok++;
	return 0;
}

/* More completions at once than the CQ ring holds: none is lost. */
static int cq_overflow_main(void *arg)
{
	struct corio_spawn_attr attr = { .stack_size = CORIO_STACK_MIN };
	struct corio_stats before, after;
	corio_task **t;
	int i;

	(void)arg;
	t = calloc(NOPS, sizeof(*t));
	assert_non_null(t);
	nops_ok = 0;
	before = stats_now();
	for (i = 0; i < NOPS; i++) {
		t[i] = corio_spawn_ex(one_nop, NULL, &attr);
		assert_non_null(t[i]);
	}
	for (i = 0; i < NOPS; i++)
		assert_int_equal(corio_join(t[i]), 0);
	after = stats_now();
	free(t);
	assert_int_equal(nops_ok, NOPS);
	assert_true(after.cqes - before.cqes >= NOPS);
	print_message("50,000 NOPs: %" PRIu64 " enters, %" PRIu64
		      " turns found the CQ overflowed\n",
		      after.enters - before.enters,
		      after.cq_overflows - before.cq_overflows);
	assert_loop_clean();
	return 0;
}

static void test_50000_nops_at_once(void **state)
{
	(void)state;
	RUN(cq_overflow_main, NULL);
}

/*
 * Teardown waits for every task; every 10 s of waiting it names on stderr
 * each task still alive.  A shielded task sleeps 10.5 s past main's end:
 * one report, naming it, then corio_run returns main's result.
 */
static int lingerer(void *arg)
{
	(void)arg;
	corio_shield(1);
	return corio_sleep(CORIO_MSEC(10500));
}

static int leave_a_lingerer(void *arg)
{
	corio_task *t = corio_spawn(lingerer, NULL);

	(void)arg;
	if (!t)
		return 1;
	corio_detach(t);
	return 7;
}

static void test_teardown_reports(void **state)
{
	char out[4096], want[64];
	size_t len = 0;
	ssize_t n;
	int pfd[2], lines = 0;
	uint64_t t0 = mono_ns();
	size_t i;
	pid_t pid;

	(void)state;
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (dup2(pfd[1], STDERR_FILENO) < 0)
			_exit(2);
		_exit(corio_run(leave_a_lingerer, NULL) == 7 ? 0 : 3);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	close(pfd[0]);
	out[len] = 0;
	print_message("teardown said: %s", out);
	assert_int_equal(child_wait(pid), 0);
	assert_true(mono_ns() - t0 >= CORIO_MSEC(10500));
	for (i = 0; i < len; i++)
		lines += out[i] == '\n';
	assert_int_equal(lines, 1);
	snprintf(want, sizeof(want), "corio: teardown: task 2 (%p) still "
		 "running", (void *)(uintptr_t)lingerer);
	assert_non_null(strstr(out, want));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_stats_counters_move),
		CORIO_TEST(test_yielding_does_not_starve_io),
		CORIO_TEST(test_io_uring_enosys),
		CORIO_TEST(test_io_uring_eperm),
		CORIO_TEST(test_io_uring_enomem),
		CORIO_TEST(test_io_uring_emfile),
		CORIO_TEST(test_1000_runs_leak_no_fd),
		CORIO_TEST(test_fork_from_task),
		CORIO_TEST(test_spawn_out_of_memory),
		CORIO_TEST(test_50000_nops_at_once),
		CORIO_TEST(test_teardown_reports),
	};

	return RUN_GROUP(tests);
}
