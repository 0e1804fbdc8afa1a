/*
 * test-errors.c - the errors of the man pages that only an unusual setup
 * provokes: no memory, no file descriptor or process left, no privilege,
 * a system call refused, no route, no name server.  The other files test
 * each error where its concern is; tests/check-errors.sh checks that every
 * error listed in an ERRORS section has a test, by the tag comment
 * (errors: PAGE ERRNO...) on the assertion that proves it.
 *
 * Each test here runs in a fork child, which changes its limits, its user
 * ID, its namespaces or its seccomp filter for good.  The child checks
 * with CHILD_CHECK and exits 0, or CHILD_SKIP with the reason on stderr
 * when the machine cannot do what the test needs (no root, no namespaces);
 * the parent only forks and waits.  The tests that exhaust malloc skip
 * under ASan and valgrind, whose allocators RLIMIT_AS does not bound;
 * under valgrind, so do those that need seccomp (which it does not know).
 */
#include <arpa/inet.h>
#include <grp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "faults.h"

#define CHILD_SKIP	77

/* Where nothing listens and no name resolves: TEST-NET-1..3, .invalid. */
#define UNREACHABLE_NET	"192.0.2.0"	/* an "unreachable" route */
#define UNREACHABLE_IP	"192.0.2.1"
#define NO_ROUTE_IP	"203.0.113.1"	/* no route at all */
#define NO_SUCH_HOST	"corio-test-no-such-host.invalid"

/* In a child: the test cannot run here; say why. */
static void child_skip(const char *why)
{
	fprintf(stderr, "skipped: %s\n", why);
	_exit(CHILD_SKIP);
}

/*
 * Runs fn in a fork child, whose crashes must kill it rather than reach
 * cmocka's handlers (which would go on with the list in the child).
 * fn returning is a pass; its CHILD_CHECKs fail it, child_skip skips it.
 */
static void in_child(void (*fn)(void))
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
	int status;
	size_t i;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (i = 0; i < ARRAY_SIZE(sigs); i++)
			signal(sigs[i], SIG_DFL);
		fn();
		_exit(0);
	}
	status = child_wait(pid);
	if (status == CHILD_SKIP)
		skip();
	assert_int_equal(status, 0);
}

/*
 * Runs main as a loop's main task in the child: it must return 0.  A ring
 * refused (io_uring disabled, or only for privileged users) is a skip.
 */
static void child_run(corio_fn main)
{
	int ret = corio_run(main, NULL);

	if (ret == -EPERM || ret == -ENOSYS)
		child_skip("io_uring is unavailable to this process");
	CHILD_CHECK(ret == 0);
}

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

/* ---- the setups ---------------------------------------------------------- */

/* No new mapping beyond headroom bytes more than the process has now. */
static void limit_as(size_t headroom)
{
	struct rlimit rl;
	size_t vm = vm_size();

	CHILD_CHECK(vm > 0);
	CHILD_CHECK(getrlimit(RLIMIT_AS, &rl) == 0);
	rl.rlim_cur = (rlim_t)(vm + headroom);
	CHILD_CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

/* What exhaust_heap took: kept, so that the compiler keeps the mallocs. */
static void *volatile heap_taken;

/*
 * Leaves malloc nothing to give: RLIMIT_AS at the current size (no new
 * mapping, no brk), then all the heap still has, in ever smaller pieces.
 * Only glibc's malloc works so: callers skip under ASan and valgrind.
 */
static void exhaust_heap(void)
{
	static const size_t sizes[] = {
		1u << 20, 64u << 10, 4u << 10, 256, 64, sizeof(void *),
	};
	void *volatile last;
	size_t i;
	void **p;

	limit_as(0);
	for (i = 0; i < ARRAY_SIZE(sizes); i++)
		while ((p = malloc(sizes[i]))) {
			*p = heap_taken;
			heap_taken = p;
		}
	last = malloc(1);
	CHILD_CHECK(last == NULL);
}

/* The parent's check before a test that calls exhaust_heap. */
static void need_plain_malloc(void)
{
	if (CORIO_ASAN || UNDER_VALGRIND()) {
		print_message("skipped: RLIMIT_AS does not bound the malloc of "
			      "ASan or valgrind\n");
		skip();
	}
}

/* RLIMIT_NOFILE at the lowest free fd: no new fd from now on. */
static void no_fd_left(void)
{
	struct rlimit rl;
	int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);

	CHILD_CHECK(fd >= 0);
	close(fd);
	CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = (rlim_t)fd;
	CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	CHILD_CHECK(fcntl(0, F_DUPFD_CLOEXEC, 0) < 0 && errno == EMFILE);
}

/*
 * Root becomes nobody for good: no capability left, so permissions and
 * RLIMIT_NPROC apply.  Anyone else has none of those privileges already.
 */
static void unprivileged(void)
{
	if (geteuid() != 0)
		return;
	if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
	    setresuid(65534, 65534, 65534) < 0)
		child_skip("root cannot become user 65534 here");
	CHILD_CHECK(geteuid() == 65534);
}


/* System call nr fails with err in this process from now on, or a skip. */
static void refuse_or_skip(long nr, int err)
{
	if (refuse_syscall(nr, err) < 0)
		child_skip("no seccomp filter (or none for this architecture)");
}

/* A namespace of our own (CLONE_NEWNET, CLONE_NEWNS), or a skip. */
static void new_namespaces(int flags)
{
	if (unshare(flags) < 0)
		child_skip("cannot unshare namespaces (needs root)");
	if ((flags & CLONE_NEWNS) &&
	    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
		child_skip("cannot make the mounts private");
}

/*
 * In a mount namespace of our own: /etc/<name> reads text.  The file is
 * bind-mounted over the real one, which nobody else sees changed.
 */
static void etc_file(const char *name, const char *text)
{
	char tmp[] = "/tmp/corio-test-errors-XXXXXX", target[64];
	size_t len = strlen(text);
	int fd = mkostemp(tmp, O_CLOEXEC);

	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(write(fd, text, len) == (ssize_t)len);
	CHILD_CHECK(fchmod(fd, 0644) == 0);
	close(fd);
	snprintf(target, sizeof(target), "/etc/%s", name);
	if (mount(tmp, target, "none", MS_BIND, NULL) < 0) {
		unlink(tmp);
		child_skip("cannot bind-mount over a file of /etc");
	}
	unlink(tmp);
}

/*
 * Adds an IPv4 route of a type such as RTN_UNREACHABLE to dst/prefix, in
 * this network namespace's main table, over rtnetlink.
 */
static void route_add(unsigned char type, const char *dst, int prefix)
{
	struct {
		struct nlmsghdr nh;
		struct rtmsg rt;
		char attrs[64];
	} req;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	union {
		struct nlmsghdr nh;
		char buf[512];
	} ack;
	struct rtattr *rta;
	struct nlmsgerr *e;
	struct in_addr addr;
	ssize_t n;
	int fd;

	CHILD_CHECK(inet_pton(AF_INET, dst, &addr) == 1);
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	req.nh.nlmsg_type = RTM_NEWROUTE;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL |
			     NLM_F_ACK;
	req.nh.nlmsg_seq = 1;
	req.rt.rtm_family = AF_INET;
	req.rt.rtm_dst_len = (unsigned char)prefix;
	req.rt.rtm_table = RT_TABLE_MAIN;
	req.rt.rtm_protocol = RTPROT_STATIC;
	req.rt.rtm_scope = RT_SCOPE_UNIVERSE;
	req.rt.rtm_type = type;
	rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
	rta->rta_type = RTA_DST;
	rta->rta_len = RTA_LENGTH(sizeof(addr));
	memcpy(RTA_DATA(rta), &addr, sizeof(addr));
	req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) +
			   RTA_ALIGN(rta->rta_len);

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(sendto(fd, &req, req.nh.nlmsg_len, 0,
			   (struct sockaddr *)&sa, sizeof(sa)) ==
		    (ssize_t)req.nh.nlmsg_len);
	n = recv(fd, &ack, sizeof(ack), 0);
	close(fd);
	CHILD_CHECK(n >= (ssize_t)NLMSG_LENGTH(sizeof(*e)));
	CHILD_CHECK(ack.nh.nlmsg_type == NLMSG_ERROR);
	e = NLMSG_DATA(&ack.nh);
	if (e->error == -EPERM)
		child_skip("cannot add a route");
	CHILD_CHECK(e->error == 0);
}

/* ---- no memory ------------------------------------------------------------- */

/* The calls that allocate an object, with malloc exhausted. */
static void objects_child(void)
{
	char *argv[] = { "true", NULL };
	corio_event *ev = NULL;
	corio_mutex *mu = NULL;
	corio_sem *sem = NULL;
	corio_cond *cond = NULL;
	corio_queue *q = NULL;
	corio_group *g = NULL;
	corio_stream *s = NULL;
	corio_process *p = (corio_process *)1;
	int sv[2];

	CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       sv) == 0);
	exhaust_heap();
	/* errors: corio_event.3 ENOMEM */
	CHILD_CHECK(corio_event_new(&ev) == -ENOMEM);
	/* errors: corio_mutex.3 ENOMEM */
	CHILD_CHECK(corio_mutex_new(&mu) == -ENOMEM);
	/* errors: corio_sem.3 ENOMEM */
	CHILD_CHECK(corio_sem_new(1, &sem) == -ENOMEM);
	/* errors: corio_cond.3 ENOMEM */
	CHILD_CHECK(corio_cond_new(&cond) == -ENOMEM);
	/* errors: corio_queue.3 ENOMEM */
	CHILD_CHECK(corio_queue_new(1, &q) == -ENOMEM);
	/* errors: corio_group.3 ENOMEM */
	CHILD_CHECK(corio_group_new(&g) == -ENOMEM);
	/* errors: corio_stream.3 ENOMEM */
	CHILD_CHECK(corio_stream_new(sv[0], 0, &s) == -ENOMEM);
	/* errors: corio_process.3 ENOMEM */
	CHILD_CHECK(corio_process_spawn("true", argv, NULL, 0, &p) == -ENOMEM);
	CHILD_CHECK(p == NULL);
	/* Nothing was handed out. */
	CHILD_CHECK(!ev && !mu && !sem && !cond && !q && !g);
	CHILD_CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

static void test_objects_out_of_memory(void **state)
{
	(void)state;
	need_plain_malloc();
	in_child(objects_child);
}

/* The calls of a task that allocate, with malloc exhausted. */
static int task_calls_main(void *arg)
{
	corio_acceptor *a = NULL;
	int lfd;

	(void)arg;
	corio_bufring *br = NULL;
	corio_receiver *r = NULL;

	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	CHILD_CHECK(lfd >= 0);
	CHILD_CHECK(corio_bufring_new(8, 64, &br) == 0);
	exhaust_heap();
	/* errors: corio_acceptor.3 ENOMEM */
	CHILD_CHECK(corio_acceptor_new(lfd, &a) == -ENOMEM);
	CHILD_CHECK(a == NULL);
	/* errors: corio_receiver.3 ENOMEM */
	CHILD_CHECK(corio_receiver_new(lfd, br, &r) == -ENOMEM);
	CHILD_CHECK(r == NULL);
	/* The loop's first corio_run_blocking makes the pool. */
	/* errors: corio_run_blocking.3 ENOMEM */
	CHILD_CHECK(corio_run_blocking(noop, NULL) == -ENOMEM);
	/* With no memory, corio_run's teardown is not this test's. */
	_exit(0);
}

static void task_calls_child(void)
{
	child_run(task_calls_main);
}

static void test_task_calls_out_of_memory(void **state)
{
	(void)state;
	need_plain_malloc();
	in_child(task_calls_child);
}

static int never_runs(void *arg)
{
	(void)arg;
	_exit(3);
}

/*
 * corio_group_spawn with no memory for the stack: NULL and ENOMEM.  The
 * stacks are mappings, which RLIMIT_AS bounds under ASan too.
 */
static int group_spawn_main(void *arg)
{
	corio_group *g;
	corio_task *t;

	(void)arg;
	CHILD_CHECK(corio_group_new(&g) == 0);
	CHILD_CHECK(corio_stack_size(CORIO_STACK_MAX) > 0);
	limit_as(64u << 20);
	errno = 0;
	t = corio_group_spawn(g, never_runs, NULL);
	/* errors: corio_group.3 ENOMEM */
	CHILD_CHECK(t == NULL && errno == ENOMEM);
	{
		corio_bufring *br = NULL;

		/* 32 GiB of buffers: a mapping past the limit. */
		/* errors: corio_bufring.3 ENOMEM */
		CHILD_CHECK(corio_bufring_new(32768, 1u << 20, &br) == -ENOMEM);
		CHILD_CHECK(br == NULL);
	}
	/* The failed spawn left the group empty. */
	CHILD_CHECK(corio_group_wait(g) == 0);
	CHILD_CHECK(corio_group_free(g) == 0);
	return 0;
}

static void group_spawn_child(void)
{
	child_run(group_spawn_main);
}

static void test_group_spawn_out_of_memory(void **state)
{
	(void)state;
	in_child(group_spawn_child);
}

/* ---- no file descriptor ---------------------------------------------------- */

/* Every call that makes an fd of its own, with none left. */
static int no_fd_main(void *arg)
{
	sigset_t set;
	int lfd, port;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	(void)arg;
	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	CHILD_CHECK(lfd >= 0);
	CHILD_CHECK(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
	port = ntohs(sin.sin_port);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	no_fd_left();
	/* errors: corio_listen.3 EMFILE */
	CHILD_CHECK(corio_listen("127.0.0.1", 0, 16, 0) == -EMFILE);
	CHILD_CHECK(corio_listen_unix("@corio-test-errors", 16, 0) == -EMFILE);
	/* The socket is IORING_OP_SOCKET's, which valgrind does not see. */
	if (!UNDER_VALGRIND()) {
		/* errors: corio_dial.3 EMFILE */
		CHILD_CHECK(corio_dial("127.0.0.1", port) == -EMFILE);
	}
	/* The pool's eventfd, made at the loop's first call. */
	/* errors: corio_run_blocking.3 EMFILE */
	CHILD_CHECK(corio_run_blocking(noop, NULL) == -EMFILE);
	/* errors: corio_signal_wait.3 EMFILE */
	CHILD_CHECK(corio_signal_wait(&set) == -EMFILE);
	/* The pipe sendfile moves the file through. */
	/* errors: corio_sendfile.3 EMFILE */
	CHILD_CHECK(corio_sendfile(lfd, 0, NULL, 1) == -EMFILE);
	CHILD_CHECK(corio_close(lfd) == 0);
	return 0;
}

static void no_fd_child(void)
{
	child_run(no_fd_main);
}

static void test_out_of_fds(void **state)
{
	(void)state;
	in_child(no_fd_child);
}

/* ---- no process --------------------------------------------------------- */

/*
 * RLIMIT_NPROC at 0 for a user without privileges: no process, no thread.
 * corio_process_spawn gets -EAGAIN and leaves nothing; corio_run_blocking
 * cannot start the pool's first thread.
 */
static int no_process_main(void *arg)
{
	char *argv[] = { "true", NULL };
	struct rlimit rl = { 0, 0 };
	corio_process *p = (corio_process *)1;
	int fds = fd_count();

	(void)arg;
	CHILD_CHECK(setrlimit(RLIMIT_NPROC, &rl) == 0);
	/* errors: corio_process.3 EAGAIN */
	CHILD_CHECK(corio_process_spawn("true", argv, NULL,
					CORIO_PROCESS_STDOUT, &p) == -EAGAIN);
	CHILD_CHECK(p == NULL);
	CHILD_CHECK(fd_count() == fds);
	/* errors: corio_run_blocking.3 EAGAIN */
	CHILD_CHECK(corio_run_blocking(noop, NULL) == -EAGAIN);
	return 0;
}

/* No thread for a second loop: corio_run_loops fails, nothing ran. */
static void no_thread_child(void)
{
	struct rlimit rl = { 0, 0 };

	unprivileged();
	CHILD_CHECK(setrlimit(RLIMIT_NPROC, &rl) == 0);
	/* errors: corio_run_loops.3 EAGAIN */
	CHILD_CHECK(corio_run_loops(2, never_runs, NULL) == -EAGAIN);
}

static void test_loops_out_of_threads(void **state)
{
	(void)state;
	in_child(no_thread_child);
}

/* io_uring refused: corio_run_loops fails as corio_run does. */
static void loops_no_ring_child(void)
{
	refuse_or_skip(__NR_io_uring_setup, EPERM);
	/* errors: corio_run_loops.3 EPERM */
	CHILD_CHECK(corio_run_loops(2, never_runs, NULL) == -EPERM);
}

static void loops_no_uring_child(void)
{
	refuse_or_skip(__NR_io_uring_setup, ENOSYS);
	/* errors: corio_run_loops.3 ENOSYS */
	CHILD_CHECK(corio_run_loops(2, never_runs, NULL) == -ENOSYS);
}

static void test_loops_without_io_uring(void **state)
{
	(void)state;
	if (UNDER_VALGRIND())
		skip();	/* valgrind does not know seccomp */
	in_child(loops_no_ring_child);
	in_child(loops_no_uring_child);
}

/* Out of memory: no cluster, no message, no remote task. */
static int trivial(void *arg)
{
	(void)arg;
	return 1;
}

static int loops_nomem_main(void *arg)
{
	(void)arg;
	/* The remote loop has mapped no stack yet: none can be mapped. */
	limit_as(0);
	/* errors: corio_call.3 ENOMEM */
	CHILD_CHECK(corio_call(1, trivial, NULL) == -ENOMEM);
	exhaust_heap();
	/* errors: corio_post.3 ENOMEM */
	CHILD_CHECK(corio_post(1, trivial, NULL) == -ENOMEM);
	_exit(0);
}

static void loops_nomem_child(void)
{
	int ret = corio_run_loops(2, loops_nomem_main, NULL);

	if (ret == -EPERM || ret == -ENOSYS)
		child_skip("io_uring is unavailable to this process");
	CHILD_CHECK(0);
}

static void loops_nomem_start_child(void)
{
	exhaust_heap();
	/* errors: corio_run_loops.3 ENOMEM */
	CHILD_CHECK(corio_run_loops(2, never_runs, NULL) == -ENOMEM);
}

static void test_loops_out_of_memory(void **state)
{
	(void)state;
	need_plain_malloc();
	in_child(loops_nomem_child);
	in_child(loops_nomem_start_child);
}

static void no_process_child(void)
{
	unprivileged();
	child_run(no_process_main);
}

static void test_out_of_processes(void **state)
{
	(void)state;
	in_child(no_process_child);
}

/* ---- no privilege ---------------------------------------------------------- */

static char noperm_dir[] = "/tmp/corio-test-errors-XXXXXX";

/* The lowest port that needs no privilege, or -1 if unknown. */
static int unprivileged_port_start(void)
{
	char buf[32] = { 0 };
	int fd = open("/proc/sys/net/ipv4/ip_unprivileged_port_start",
		      O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : -1;
}

/*
 * Without privileges: a unix socket in a directory that may not be
 * written, and (unless the system allows any port) a port below 1024.
 */
static void noperm_child(void)
{
	char path[sizeof(noperm_dir) + 8];
	int start = unprivileged_port_start();

	unprivileged();
	snprintf(path, sizeof(path), "%s/sock", noperm_dir);
	/* errors: corio_listen.3 EACCES */
	CHILD_CHECK(corio_listen_unix(path, 16, 0) == -EACCES);
	if (start > 1)
		CHILD_CHECK(corio_listen("127.0.0.1", 1, 16, 0) == -EACCES);
}

static void test_listen_not_permitted(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(noperm_dir));
	assert_int_equal(chmod(noperm_dir, 0500), 0);
	in_child(noperm_child);
	assert_int_equal(rmdir(noperm_dir), 0);
}

/* ---- a refused system call ------------------------------------------------ */

/*
 * The child is reaped behind corio's back before it opens the pidfd (a
 * race that a program reaping every child could lose): pidfd_open says
 * ESRCH, and the spawn -ECHILD.  Forced here with a seccomp filter.
 */
static void pidfd_esrch_child(void)
{
	char *argv[] = { "true", NULL };
	corio_process *p = (corio_process *)1;
	int fds = fd_count();

	refuse_or_skip(__NR_pidfd_open, ESRCH);
	/* errors: corio_process.3 ECHILD */
	CHILD_CHECK(corio_process_spawn("true", argv, NULL,
					CORIO_PROCESS_STDOUT, &p) == -ECHILD);
	CHILD_CHECK(p == NULL);
	CHILD_CHECK(fd_count() == fds);
}

static void test_spawn_child_reaped_before_pidfd(void **state)
{
	(void)state;
	in_child(pidfd_esrch_child);
}

/*
 * No pidfd_open (a seccomp filter, or a kernel before 5.3): the spawn
 * works; with IORING_OP_WAITID a wait goes by pid, without it (here
 * CORIO_NO_WAITID) it cannot; free still kills and reaps the child.
 */
static int no_pidfd_main(void *arg)
{
	char *argv[] = { "sleep", "5", NULL };
	char *quick[] = { "sh", "-c", "exit 3", NULL };
	corio_process *p = NULL;
	pid_t pid;

	(void)arg;
	if (corio__process_has_waitid()) {
		CHILD_CHECK(corio_process_spawn("sh", quick, NULL, 0, &p) == 0);
		CHILD_CHECK(corio_process_wait(p) == (3 << 8));
		CHILD_CHECK(corio_process_kill(p, 0) == -ESRCH);
		CHILD_CHECK(corio_process_free(p) == 0);
		return 0;
	}
	CHILD_CHECK(corio_process_spawn("sleep", argv, NULL, 0, &p) == 0);
	pid = corio_process_pid(p);
	/* errors: corio_process.3 ENOSYS */
	CHILD_CHECK(corio_process_wait(p) == -ENOSYS);
	CHILD_CHECK(corio_process_kill(p, 0) == 0);
	CHILD_CHECK(corio_process_free(p) == 0);
	CHILD_CHECK(waitpid(pid, NULL, WNOHANG) < 0 && errno == ECHILD);
	return 0;
}

static void no_pidfd_child(void)
{
	refuse_or_skip(__NR_pidfd_open, ENOSYS);
	child_run(no_pidfd_main);
}

static void no_pidfd_no_waitid_child(void)
{
	CHILD_CHECK(setenv("CORIO_NO_WAITID", "1", 1) == 0);
	no_pidfd_child();
}

static void test_wait_without_pidfd(void **state)
{
	(void)state;
	in_child(no_pidfd_child);		/* by pid, where it can */
	in_child(no_pidfd_no_waitid_child);	/* -ENOSYS */
}

/* ---- no route ---------------------------------------------------------------- */

/*
 * A network namespace of our own: loopback down, no route but an
 * "unreachable" one.  connect(2)'s -ENETUNREACH and -EHOSTUNREACH pass
 * through corio_dial.
 */
static int no_route_main(void *arg)
{
	(void)arg;
	/* errors: corio_dial.3 ENETUNREACH */
	CHILD_CHECK(corio_dial(NO_ROUTE_IP, 80) == -ENETUNREACH);
	/* errors: corio_dial.3 EHOSTUNREACH */
	CHILD_CHECK(corio_dial(UNREACHABLE_IP, 80) == -EHOSTUNREACH);
	return 0;
}

static void no_route_child(void)
{
	new_namespaces(CLONE_NEWNET);
	route_add(RTN_UNREACHABLE, UNREACHABLE_NET, 24);
	child_run(no_route_main);
}

static void test_dial_no_route(void **state)
{
	(void)state;
	in_child(no_route_child);
}

/* ---- names that do not resolve ------------------------------------------ */

/*
 * The resolver is the machine's: a mount namespace of our own puts our
 * /etc/nsswitch.conf, /etc/hosts and /etc/resolv.conf in its place.
 */
static int unknown_name_main(void *arg)
{
	(void)arg;
	/* errors: corio_dial.3 ENXIO */
	CHILD_CHECK(corio_dial(NO_SUCH_HOST, 80) == -ENXIO);
	/* errors: corio_listen.3 ENXIO */
	CHILD_CHECK(corio_listen(NO_SUCH_HOST, 0, 16, 0) == -ENXIO);
	return 0;
}

/* Names come from /etc/hosts only, which does not have it. */
static void unknown_name_child(void)
{
	new_namespaces(CLONE_NEWNS);
	etc_file("nsswitch.conf", "hosts: files\n");
	etc_file("hosts", "127.0.0.1 localhost\n");
	child_run(unknown_name_main);
}

static void test_name_unknown(void **state)
{
	(void)state;
	in_child(unknown_name_child);
}

static int no_answer_main(void *arg)
{
	(void)arg;
	/* errors: corio_dial.3 EAGAIN */
	CHILD_CHECK(corio_dial(NO_SUCH_HOST, 80) == -EAGAIN);
	/* errors: corio_listen.3 EAGAIN */
	CHILD_CHECK(corio_listen(NO_SUCH_HOST, 0, 16, 0) == -EAGAIN);
	return 0;
}

/*
 * Names come from DNS only, and the name server cannot be reached (a
 * network namespace with its loopback down): a temporary failure.
 */
static void no_answer_child(void)
{
	new_namespaces(CLONE_NEWNS | CLONE_NEWNET);
	etc_file("nsswitch.conf", "hosts: dns\n");
	etc_file("resolv.conf", "nameserver 127.0.0.1\n"
				"options timeout:1 attempts:1\n");
	child_run(no_answer_main);
}

static void test_name_server_silent(void **state)
{
	(void)state;
	in_child(no_answer_child);
}

/*
 * A name server that takes the query and never answers: the lookup hangs
 * for the resolver's timeout (2 s), but a deadline or a cancellation ends
 * the task's wait at once; corio_run still waits for the lookup's thread.
 */
#define SILENT_NS	"127.0.0.77"

static int dial_name(void *arg)
{
	(void)arg;
	return corio_dial(NO_SUCH_HOST, 80);
}

static int listen_name(void *arg)
{
	(void)arg;
	return corio_listen(NO_SUCH_HOST, 0, 16, 0);
}

static int hanging_lookup_main(void *arg)
{
	uint64_t t0 = corio_now(), old;
	corio_task *t, *t2;

	(void)arg;
	old = corio_timeout(CORIO_MSEC(100));
	CHILD_CHECK(corio_dial(NO_SUCH_HOST, 80) == -ETIMEDOUT);
	/* errors: corio_listen.3 ETIMEDOUT */
	CHILD_CHECK(corio_listen(NO_SUCH_HOST, 0, 16, 0) == -ETIMEDOUT);
	corio_deadline(old);
	CHILD_CHECK(corio_now() - t0 >= CORIO_MSEC(100));
	CHILD_CHECK(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));

	t0 = corio_now();
	t = corio_spawn(dial_name, NULL);
	t2 = corio_spawn(listen_name, NULL);
	CHILD_CHECK(t != NULL && t2 != NULL);
	CHILD_CHECK(corio_sleep(CORIO_MSEC(50)) == 0);
	CHILD_CHECK(corio_cancel(t) == 0);
	CHILD_CHECK(corio_cancel(t2) == 0);
	CHILD_CHECK(corio_join(t) == -ECANCELED);
	/* errors: corio_listen.3 ECANCELED */
	CHILD_CHECK(corio_join(t2) == -ECANCELED);
	CHILD_CHECK(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));
	/* Four lookups still run: corio_run waits for them, then frees
	 * them (ASan and valgrind would see a leak). */
	return 0;
}

static void hanging_lookup_child(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(53) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	uint64_t t0;

	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(inet_pton(AF_INET, SILENT_NS, &a.sin_addr) == 1);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		child_skip("cannot bind a UDP socket to " SILENT_NS ":53");
	new_namespaces(CLONE_NEWNS);
	etc_file("nsswitch.conf", "hosts: dns\n");
	etc_file("resolv.conf", "nameserver " SILENT_NS "\n"
				"options timeout:2 attempts:1\n");
	t0 = mono_ns();
	child_run(hanging_lookup_main);
	/* The lookups had to end before corio_run returned. */
	CHILD_CHECK(mono_ns() - t0 >= CORIO_SEC(1));
	close(fd);
}

static void test_name_lookup_does_not_hold_the_task(void **state)
{
	(void)state;
	in_child(hanging_lookup_child);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_objects_out_of_memory),
		CORIO_TEST(test_task_calls_out_of_memory),
		CORIO_TEST(test_group_spawn_out_of_memory),
		CORIO_TEST(test_out_of_fds),
		CORIO_TEST(test_out_of_processes),
		CORIO_TEST(test_listen_not_permitted),
		CORIO_TEST(test_spawn_child_reaped_before_pidfd),
		CORIO_TEST(test_wait_without_pidfd),
		CORIO_TEST(test_dial_no_route),
		CORIO_TEST(test_name_unknown),
		CORIO_TEST(test_name_server_silent),
		CORIO_TEST(test_name_lookup_does_not_hold_the_task),
		CORIO_TEST(test_loops_out_of_threads),
		CORIO_TEST(test_loops_without_io_uring),
		CORIO_TEST(test_loops_out_of_memory),
	};

	return RUN_GROUP(tests);
}
