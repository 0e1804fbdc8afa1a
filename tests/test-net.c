/*
 * test-net.c - src/net.c and src/blocking.c: corio_listen, corio_dial and
 * their unix twins, corio_accept_retry, corio_run_blocking,
 * corio_signal_wait, and examples/echo-server end to end (one loop, and
 * two with -t 2).
 *
 * Each test runs corio_run on a task function that returns 0 on success or
 * the line of the first failed CHECK (printed on stderr), so a failure
 * never longjmps out of a task's stack.  Timing bounds are generous and
 * scaled by CORIO_TEST_TIMEOUT_MULT; nothing asserts speed.  Tests that
 * lower RLIMIT_NOFILE do it in a forked child.  The whole binary exits 77
 * when io_uring is unavailable.  Under valgrind the RLIMIT_NOFILE tests
 * skip, and so do the tests that need another thread to run while the
 * loop waits in io_uring_enter, if a probe shows that it cannot (valgrind
 * 3.19 keeps its lock during that syscall; the loop gives it away with a
 * sched_yield before each of its 10 ms waits under valgrind, so the probe
 * should pass).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <corio.h>

#include "config.h"
#if CORIO_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* Inside a task: report and return the line, so the test sees it. */
#define CHECK(c)							\
	do {								\
		if (!(c)) {						\
			fprintf(stderr, "%s:%d: %s: check failed: %s\n", \
				__FILE__, __LINE__, __func__, #c);	\
			return __LINE__;				\
		}							\
	} while (0)

#define CHECK_EQ(a, b)							\
	do {								\
		long long a_ = (long long)(a), b_ = (long long)(b);	\
		if (a_ != b_) {						\
			fprintf(stderr, "%s:%d: %s: %s is %lld (%s), "	\
				"expected %s = %lld (%s)\n", __FILE__,	\
				__LINE__, __func__, #a, a_, errname(a_), \
				#b, b_, errname(b_));			\
			return __LINE__;				\
		}							\
	} while (0)

/* A subcheck's failure line, passed up. */
#define CHECK_OK(call)							\
	do {								\
		int r_ = (call);					\
		if (r_ != 0) {						\
			fprintf(stderr, "%s:%d: %s: %s failed\n",	\
				__FILE__, __LINE__, __func__, #call);	\
			return r_;					\
		}							\
	} while (0)

static const char *argv0;
static pid_t child_pid = -1;	/* killed by kill_child() if a test fails */
/* Another thread cannot run while the loop waits in io_uring_enter. */
static bool threads_stall;

static void kill_child(void);
static int wait_child(uint64_t timeout_ns);

static const char *errname(long long v)
{
	return v < 0 && v > -4096 ? strerror((int)-v) : "-";
}

static unsigned int mult(void)
{
	const char *s = getenv("CORIO_TEST_TIMEOUT_MULT");
	long m = s ? strtol(s, NULL, 10) : 1;

	return m < 1 ? 1 : (unsigned int)m;
}

static uint64_t scaled(uint64_t ns)
{
	return ns * mult();
}

static int fd_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);

	return f >= 0 && (f & FD_CLOEXEC);
}

static int sockopt_int(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -errno;
	return v;
}

/* The port a socket is bound to (IPv4 or IPv6), or -1. */
static int local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

static int peer_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getpeername(fd, (struct sockaddr *)&sin, &len) < 0)
		return -1;
	return ntohs(sin.sin_port);
}

static int sock_family(int fd, int peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &len) :
		       getsockname(fd, (struct sockaddr *)&ss, &len);

	return r < 0 ? -errno : ss.ss_family;
}

/* Open fds of a process, from /proc/PID/fd; -1 if unreadable. */
static int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	/* Our own opendir's fd is in the count. */
	return pid == getpid() ? n - 1 : n;
}

static int count_threads(void)
{
	struct dirent *de;
	DIR *d = opendir("/proc/self/task");
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void fill(unsigned char *buf, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
}

static bool has_ipv6(void)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6,
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static int noop_main(void *arg)
{
	(void)arg;
	return 0;
}

/*
 * Valgrind keeps its own RLIMIT_NOFILE for the program and does not lower
 * the kernel's, so an accept done by io_uring never sees the limit.
 */
#define NEED_REAL_RLIMIT()						\
	do {								\
		if (RUNNING_ON_VALGRIND) {				\
			print_message("skipped: valgrind does not "	\
				      "pass RLIMIT_NOFILE on to the "	\
				      "kernel\n");			\
			skip();						\
		}							\
	} while (0)

/*
 * For the tests that need a thread (the blocking pool, a signal sender) to
 * run while the loop waits in io_uring_enter.  Valgrind 3.19 keeps its
 * global lock during that syscall, so such a thread never runs and the test
 * would hang: they skip when a probe shows it.
 */
#define NEED_THREADS()							\
	do {								\
		if (threads_stall) {					\
			print_message("skipped: under valgrind, no other " \
				      "thread runs while the loop waits in " \
				      "io_uring_enter\n");		\
			skip();						\
		}							\
	} while (0)

/* ---- task-side byte helpers ------------------------------------------ */

static ssize_t send_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = corio_send(fd, (const char *)buf + done,
				       len - done, 0);

		if (n < 0)
			return n;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Reads until len bytes or EOF: the bytes read, or -errno. */
static ssize_t recv_all(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = corio_recv(fd, (char *)buf + done, len - done, 0);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Accepts one connection on the listener arg and echoes it until EOF. */
static int echo_one(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	char buf[4096];
	ssize_t n;
	int fd;

	fd = corio_accept(lfd, NULL, NULL, 0);
	if (fd < 0)
		return fd;
	while ((n = corio_recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send_all(fd, buf, (size_t)n) < 0)
			break;
	corio_close(fd);
	return n < 0 ? (int)n : 0;
}

/* Sends a few patterned messages on fd and checks each comes back. */
static int round_trips(int fd)
{
	unsigned char out[3000], in[3000];
	int i;

	for (i = 0; i < 3; i++) {
		size_t len = 1 + (size_t)i * 1000;

		fill(out, len, (unsigned int)(i + 1));
		CHECK_EQ(send_all(fd, out, len), len);
		CHECK_EQ(recv_all(fd, in, len), len);
		CHECK(memcmp(in, out, len) == 0);
	}
	return 0;
}

struct target {
	const char *host;	/* TCP if non-NULL */
	int port;
	const char *path;	/* else unix */
};

/*
 * Serves one echo connection on lfd, dials it as t says, checks the
 * connected socket and a byte exchange, then the server's clean exit.
 */
static int exchange(int lfd, const struct target *t, int family)
{
	corio_task *server;
	int fd;

	server = corio_spawn(echo_one, (void *)(intptr_t)lfd);
	CHECK(server != NULL);
	fd = t->host ? corio_dial(t->host, t->port) : corio_dial_unix(t->path);
	CHECK(fd >= 0);
	CHECK(fd_cloexec(fd));
	if (family)
		CHECK_EQ(sock_family(fd, 1), family);
	if (t->host)
		CHECK_EQ(sockopt_int(fd, IPPROTO_TCP, TCP_NODELAY), 1);
	CHECK_OK(round_trips(fd));
	CHECK_EQ(corio_close(fd), 0);
	CHECK_EQ(corio_join(server), 0);
	return 0;
}

/* ---- listen and dial --------------------------------------------------- */

static int ipv4_main(void *arg)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct target t = { .host = "127.0.0.1" };
	int lfd;

	(void)arg;
	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	CHECK(lfd >= 0);
	CHECK(fd_cloexec(lfd));
	CHECK_EQ(sockopt_int(lfd, SOL_SOCKET, SO_REUSEADDR), 1);
	CHECK_EQ(sockopt_int(lfd, SOL_SOCKET, SO_ACCEPTCONN), 1);
	CHECK_EQ(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	CHECK_EQ(sin.sin_family, AF_INET);
	CHECK_EQ(sin.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	t.port = ntohs(sin.sin_port);
	CHECK(t.port > 0);
	CHECK_OK(exchange(lfd, &t, AF_INET));
	/* The listener still serves after its first client left. */
	CHECK_OK(exchange(lfd, &t, AF_INET));
	CHECK_EQ(corio_close(lfd), 0);
	return 0;
}

static void test_listen_dial_ipv4(void **state)
{
	(void)state;
	assert_int_equal(corio_run(ipv4_main, NULL), 0);
}

static int ipv6_main(void *arg)
{
	struct sockaddr_in6 sin6;
	socklen_t len = sizeof(sin6);
	struct target t = { .host = "::1" };
	int lfd;

	(void)arg;
	lfd = corio_listen("::1", 0, 16, 0);
	CHECK(lfd >= 0);
	CHECK(fd_cloexec(lfd));
	CHECK_EQ(getsockname(lfd, (struct sockaddr *)&sin6, &len), 0);
	CHECK_EQ(sin6.sin6_family, AF_INET6);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr));
	t.port = ntohs(sin6.sin6_port);
	CHECK(t.port > 0);
	CHECK_OK(exchange(lfd, &t, AF_INET6));
	CHECK_EQ(corio_close(lfd), 0);
	return 0;
}

static void test_listen_dial_ipv6(void **state)
{
	(void)state;
	if (!has_ipv6()) {
		print_message("no IPv6 on this kernel: skipped\n");
		skip();
	}
	assert_int_equal(corio_run(ipv6_main, NULL), 0);
}

static int any_main(void *arg)
{
	bool v6 = *(bool *)arg;
	struct target t4 = { .host = "127.0.0.1" }, t6 = { .host = "::1" };
	int lfd, fd;

	lfd = corio_listen(NULL, 0, 16, 0);
	CHECK(lfd >= 0);
	CHECK(fd_cloexec(lfd));
	t4.port = t6.port = local_port(lfd);
	CHECK(t4.port > 0);
	if (v6) {
		/* One dual-stack socket on "::". */
		struct sockaddr_in6 sin6;
		socklen_t len = sizeof(sin6);

		CHECK_EQ(getsockname(lfd, (struct sockaddr *)&sin6, &len), 0);
		CHECK_EQ(sin6.sin6_family, AF_INET6);
		CHECK(IN6_IS_ADDR_UNSPECIFIED(&sin6.sin6_addr));
		CHECK_EQ(sockopt_int(lfd, IPPROTO_IPV6, IPV6_V6ONLY), 0);
		CHECK_OK(exchange(lfd, &t4, AF_INET));
		CHECK_OK(exchange(lfd, &t6, AF_INET6));
	} else {
		CHECK_OK(exchange(lfd, &t4, AF_INET));
	}
	CHECK_EQ(corio_close(lfd), 0);
	if (!v6)
		return 0;

	/* CORIO_V6ONLY: IPv6 clients only. */
	lfd = corio_listen(NULL, 0, 16, CORIO_V6ONLY);
	CHECK(lfd >= 0);
	CHECK_EQ(sockopt_int(lfd, IPPROTO_IPV6, IPV6_V6ONLY), 1);
	t4.port = t6.port = local_port(lfd);
	CHECK_OK(exchange(lfd, &t6, AF_INET6));
	fd = corio_dial("127.0.0.1", t4.port);
	CHECK_EQ(fd, -ECONNREFUSED);
	CHECK_EQ(corio_close(lfd), 0);
	return 0;
}

static void test_listen_any_takes_ipv4_and_ipv6(void **state)
{
	bool v6 = has_ipv6();

	(void)state;
	if (!v6)
		print_message("no IPv6 on this kernel: IPv4 half only\n");
	assert_int_equal(corio_run(any_main, &v6), 0);
}

static int unix_path_main(void *arg)
{
	const char *path = arg;
	struct target t = { .path = path };
	struct stat st;
	int lfd, lfd2;

	lfd = corio_listen_unix(path, 16, 0);
	CHECK(lfd >= 0);
	CHECK(fd_cloexec(lfd));
	CHECK_EQ(stat(path, &st), 0);
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_OK(exchange(lfd, &t, AF_UNIX));
	/* The name is taken while the file exists, even once closed... */
	/* errors: corio_listen.3 EADDRINUSE */
	CHECK_EQ(corio_listen_unix(path, 16, 0), -EADDRINUSE);
	CHECK_EQ(corio_close(lfd), 0);
	CHECK_EQ(corio_listen_unix(path, 16, 0), -EADDRINUSE);
	/* ...nobody listens there now... */
	CHECK_EQ(corio_dial_unix(path), -ECONNREFUSED);
	/* ...and CORIO_UNLINK removes the stale file first. */
	lfd2 = corio_listen_unix(path, 16, CORIO_UNLINK);
	CHECK(lfd2 >= 0);
	CHECK_OK(exchange(lfd2, &t, AF_UNIX));
	CHECK_EQ(corio_close(lfd2), 0);
	return 0;
}

static void test_listen_dial_unix_path(void **state)
{
	char dir[] = "/tmp/corio-test-net.XXXXXX";
	char path[sizeof(dir) + 16];
	int ret;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	ret = corio_run(unix_path_main, path);
	unlink(path);
	rmdir(dir);
	assert_int_equal(ret, 0);
}

static int unix_abstract_main(void *arg)
{
	const char *name = arg;
	struct target t = { .path = name };
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	int lfd;

	lfd = corio_listen_unix(name, 16, 0);
	CHECK(lfd >= 0);
	CHECK(fd_cloexec(lfd));
	CHECK_EQ(getsockname(lfd, (struct sockaddr *)&sun, &len), 0);
	CHECK_EQ(sun.sun_family, AF_UNIX);
	/* Abstract: a leading NUL, then the name without the '@'. */
	CHECK_EQ(sun.sun_path[0], '\0');
	CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + strlen(name));
	CHECK(memcmp(sun.sun_path + 1, name + 1, strlen(name) - 1) == 0);
	CHECK_EQ(corio_listen_unix(name, 16, 0), -EADDRINUSE);
	/* CORIO_UNLINK is harmless on an abstract name. */
	CHECK_EQ(corio_listen_unix(name, 16, CORIO_UNLINK), -EADDRINUSE);
	CHECK_OK(exchange(lfd, &t, AF_UNIX));
	CHECK_EQ(corio_close(lfd), 0);
	/* Gone with its socket. */
	CHECK_EQ(corio_dial_unix(name), -ECONNREFUSED);
	return 0;
}

static void test_listen_dial_unix_abstract(void **state)
{
	char name[64];

	(void)state;
	snprintf(name, sizeof(name), "@corio-test-net-%d", (int)getpid());
	assert_int_equal(corio_run(unix_abstract_main, name), 0);
}

static int unix_errors_main(void *arg)
{
	char dir[] = "/tmp/corio-test-net.XXXXXX";
	char path[sizeof(dir) + 16], longpath[200];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int s, ret;

	(void)arg;
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	/* errors: corio_listen.3 EINVAL */
	CHECK_EQ(corio_listen_unix(NULL, 16, 0), -EINVAL);
	/* errors: corio_listen.3 ENAMETOOLONG */
	CHECK_EQ(corio_listen_unix("", 16, 0), -ENAMETOOLONG);
	CHECK_EQ(corio_listen_unix(longpath, 16, 0), -ENAMETOOLONG);
	CHECK_EQ(corio_listen_unix("@x", 16, CORIO_REUSEPORT), -EINVAL);
	CHECK_EQ(corio_listen_unix("@x", 16, 0x100), -EINVAL);
	/* errors: corio_dial.3 EINVAL */
	CHECK_EQ(corio_dial_unix(NULL), -EINVAL);
	/* errors: corio_dial.3 ENAMETOOLONG */
	CHECK_EQ(corio_dial_unix(""), -ENAMETOOLONG);
	CHECK_EQ(corio_dial_unix(longpath), -ENAMETOOLONG);

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/sock", dir);
	/* errors: corio_dial.3 ENOENT */
	CHECK_EQ(corio_dial_unix(path), -ENOENT);
	/* A socket file that is bound but not listening refuses. */
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0);
	strcpy(sun.sun_path, path);
	CHECK_EQ(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ret = corio_dial_unix(path);
	close(s);
	unlink(path);
	rmdir(dir);
	CHECK_EQ(ret, -ECONNREFUSED);
	return 0;
}

static void test_unix_errors(void **state)
{
	(void)state;
	assert_int_equal(corio_run(unix_errors_main, NULL), 0);
}

static int refused_main(void *arg)
{
	int port = *(int *)arg, before = count_fds(getpid());

	/* errors: corio_dial.3 ECONNREFUSED */
	CHECK_EQ(corio_dial("127.0.0.1", port), -ECONNREFUSED);
	/* The failed attempt's socket was closed. */
	CHECK_EQ(count_fds(getpid()), before);
	return 0;
}

static void test_dial_refused(void **state)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s, port, ret;

	(void)state;
	/* Bound, never listening: the port stays ours and refuses. */
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	port = local_port(s);
	assert_true(port > 0);
	ret = corio_run(refused_main, &port);
	close(s);
	assert_int_equal(ret, 0);
}

static int unresolvable_main(void *arg)
{
	int ret;

	(void)arg;
	/* -ENXIO, or -EAGAIN in a sandbox with no resolver at all. */
	ret = corio_dial("no-such-host.invalid", 80);
	if (ret != -EAGAIN)
		CHECK_EQ(ret, -ENXIO);
	ret = corio_listen("no-such-host.invalid", 0, 16, 0);
	if (ret != -EAGAIN)
		CHECK_EQ(ret, -ENXIO);
	return 0;
}

static void test_dial_unresolvable_name(void **state)
{
	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(unresolvable_main, NULL), 0);
}

struct localhost {
	int threads_before;
};

static int localhost_main(void *arg)
{
	struct localhost *l = arg;
	struct target t = { .host = "localhost" };
	int lfd;

	/* A name: resolved on the blocking pool, for listen and dial. */
	lfd = corio_listen("localhost", 0, 16, 0);
	CHECK(lfd >= 0);
	t.port = local_port(lfd);
	CHECK(t.port > 0);
	CHECK_OK(exchange(lfd, &t, 0));
	/* The pool's threads live until corio_run returns. */
	CHECK(count_threads() > l->threads_before);
	CHECK_EQ(corio_close(lfd), 0);
	return 0;
}

static void test_dial_localhost(void **state)
{
	struct localhost l;

	(void)state;
	NEED_THREADS();
	l.threads_before = count_threads();
	assert_true(l.threads_before >= 1);
	assert_int_equal(corio_run(localhost_main, &l), 0);
	/* ... and are joined when it does. */
	assert_int_equal(count_threads(), l.threads_before);
}

/*
 * A listener with backlog 0 that never accepts, filled with non-blocking
 * connects until one stays in progress: Linux drops SYNs to a full accept
 * queue, so a further connect hangs.
 */
struct full {
	int lfd, port;
	int fillers[64];
	int nr;
};

static void full_listener(struct full *f)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool stuck = false;

	f->nr = 0;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
	assert_int_equal(listen(f->lfd, 0), 0);
	f->port = local_port(f->lfd);
	sin.sin_port = htons((uint16_t)f->port);
	while (!stuck && f->nr < 64) {
		struct pollfd p;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC |
			       SOCK_NONBLOCK, 0);

		assert_true(s >= 0);
		f->fillers[f->nr++] = s;
		if (connect(s, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			continue;
		assert_int_equal(errno, EINPROGRESS);
		p.fd = s;
		p.events = POLLOUT;
		stuck = poll(&p, 1, 100) == 0;
	}
	assert_true(stuck);
}

static void full_close(struct full *f)
{
	while (f->nr > 0)
		close(f->fillers[--f->nr]);
	close(f->lfd);
}

static int deadline_main(void *arg)
{
	struct full *f = arg;
	uint64_t old, start, took;
	int fd, before = count_fds(getpid());

	old = corio_timeout(CORIO_MSEC(200));
	start = corio_now();
	fd = corio_dial("127.0.0.1", f->port);
	took = corio_now() - start;
	corio_deadline(old);
	/* errors: corio_dial.3 ETIMEDOUT */
	CHECK_EQ(fd, -ETIMEDOUT);
	CHECK(took >= CORIO_MSEC(190));
	CHECK(took < CORIO_MSEC(200) + scaled(CORIO_MSEC(800)));
	/* The abandoned socket was closed. */
	CHECK_EQ(count_fds(getpid()), before);
	/* Past the deadline, a dial fails at once. */
	old = corio_deadline(corio_now() - 1);
	CHECK_EQ(corio_dial("127.0.0.1", f->port), -ETIMEDOUT);
	corio_deadline(old);
	return 0;
}

static void test_dial_deadline_full_backlog(void **state)
{
	struct full f;
	int ret;

	(void)state;
	full_listener(&f);
	ret = corio_run(deadline_main, &f);
	full_close(&f);
	assert_int_equal(ret, 0);
}

static int dial_port(void *arg)
{
	return corio_dial("127.0.0.1", *(int *)arg);
}

static int dial_cancel_main(void *arg)
{
	struct full *f = arg;
	corio_task *t;

	t = corio_spawn(dial_port, &f->port);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(50)), 0);
	CHECK_EQ(corio_cancel(t), 0);
	/* errors: corio_dial.3 ECANCELED */
	CHECK_EQ(corio_join(t), -ECANCELED);
	return 0;
}

static void test_dial_cancel_full_backlog(void **state)
{
	struct full f;
	int ret;

	(void)state;
	full_listener(&f);
	ret = corio_run(dial_cancel_main, &f);
	full_close(&f);
	assert_int_equal(ret, 0);
}

static int invalid_main(void *arg)
{
	(void)arg;
	CHECK_EQ(corio_listen("127.0.0.1", 0, 16, 0x100), -EINVAL);
	CHECK_EQ(corio_listen("127.0.0.1", 0, 16, CORIO_UNLINK), -EINVAL);
	CHECK_EQ(corio_listen(NULL, 0, 16, ~0), -EINVAL);
	CHECK_EQ(corio_listen("127.0.0.1", 70000, 16, 0), -EINVAL);
	CHECK_EQ(corio_listen("127.0.0.1", -1, 16, 0), -EINVAL);
	CHECK_EQ(corio_listen(NULL, 70000, 16, 0), -EINVAL);
	CHECK_EQ(corio_listen(NULL, -1, 16, 0), -EINVAL);
	CHECK_EQ(corio_listen("localhost", 70000, 16, 0), -EINVAL);
	CHECK_EQ(corio_dial("127.0.0.1", 70000), -EINVAL);
	CHECK_EQ(corio_dial("127.0.0.1", -1), -EINVAL);
	CHECK_EQ(corio_dial(NULL, 80), -EINVAL);
	return 0;
}

static void test_flags_and_ports_invalid(void **state)
{
	(void)state;
	assert_int_equal(corio_run(invalid_main, NULL), 0);
}

static int reuseport_main(void *arg)
{
	int a, b, port;

	(void)arg;
	a = corio_listen("127.0.0.1", 0, 16, 0);
	CHECK(a >= 0);
	port = local_port(a);
	CHECK_EQ(corio_listen("127.0.0.1", port, 16, 0), -EADDRINUSE);
	CHECK_EQ(corio_close(a), 0);

	a = corio_listen("127.0.0.1", 0, 16, CORIO_REUSEPORT);
	CHECK(a >= 0);
	CHECK_EQ(sockopt_int(a, SOL_SOCKET, SO_REUSEPORT), 1);
	port = local_port(a);
	b = corio_listen("127.0.0.1", port, 16, CORIO_REUSEPORT);
	CHECK(b >= 0);
	CHECK_EQ(local_port(b), port);
	CHECK_EQ(corio_close(b), 0);
	CHECK_EQ(corio_close(a), 0);
	return 0;
}

static void test_reuseport(void **state)
{
	(void)state;
	assert_int_equal(corio_run(reuseport_main, NULL), 0);
}

/* A host that is not an address of this machine: bind's -EADDRNOTAVAIL. */
static int not_here_main(void *arg)
{
	(void)arg;
	/* TEST-NET-1 (RFC 5737): never a local address. */
	/* errors: corio_listen.3 EADDRNOTAVAIL */
	CHECK_EQ(corio_listen("192.0.2.1", 0, 16, 0), -EADDRNOTAVAIL);
	return 0;
}

static void test_listen_address_not_here(void **state)
{
	(void)state;
	assert_int_equal(corio_run(not_here_main, NULL), 0);
}

static void test_outside_task(void **state)
{
	sigset_t set;
	int fd;

	(void)state;
	/* A numeric listen needs no task; names and dials do. */
	fd = corio_listen("127.0.0.1", 0, 16, 0);
	assert_true(fd >= 0);
	assert_true(fd_cloexec(fd));
	assert_true(local_port(fd) > 0);
	close(fd);
	fd = corio_listen(NULL, 0, 16, 0);
	assert_true(fd >= 0);
	close(fd);
	/* errors: corio_listen.3 EPERM */
	assert_int_equal(corio_listen("localhost", 0, 16, 0), -EPERM);
	/* errors: corio_dial.3 EPERM */
	assert_int_equal(corio_dial("127.0.0.1", 80), -EPERM);
	assert_int_equal(corio_dial("localhost", 80), -EPERM);
	assert_int_equal(corio_dial_unix("@corio-test-none"), -EPERM);
	/* errors: corio_run_blocking.3 EPERM */
	assert_int_equal(corio_run_blocking(noop_main, NULL), -EPERM);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	/* errors: corio_signal_wait.3 EPERM */
	assert_int_equal(corio_signal_wait(&set), -EPERM);
}

/* ---- corio_accept_retry ------------------------------------------------ */

static int accept_port(void *arg)
{
	return corio_accept_retry(*(int *)arg, NULL, NULL, 0);
}

static int accept_retry_main(void *arg)
{
	struct sockaddr_storage ss;
	struct sockaddr_in sin;
	socklen_t len;
	corio_task *t;
	uint64_t old;
	int lfd, port, fd, cfd, p[2];

	(void)arg;
	lfd = corio_listen("127.0.0.1", 0, 16, 0);
	CHECK(lfd >= 0);
	port = local_port(lfd);

	/* An accepted fd, close-on-exec, with the peer's address. */
	t = corio_spawn(dial_port, &port);
	CHECK(t != NULL);
	len = sizeof(ss);
	fd = corio_accept_retry(lfd, (struct sockaddr *)&ss, &len, 0);
	CHECK(fd >= 0);
	CHECK(fd_cloexec(fd));
	CHECK_EQ(len, sizeof(sin));
	CHECK_EQ(ss.ss_family, AF_INET);
	memcpy(&sin, &ss, sizeof(sin));
	CHECK_EQ(sin.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	cfd = corio_join(t);
	CHECK(cfd >= 0);
	CHECK_EQ(local_port(cfd), ntohs(sin.sin_port));
	corio_close(cfd);
	corio_close(fd);

	/* Deadline and cancellation stop the wait. */
	old = corio_timeout(CORIO_MSEC(50));
	/* errors: corio_accept_retry.3 ETIMEDOUT */
	CHECK_EQ(corio_accept_retry(lfd, NULL, NULL, 0), -ETIMEDOUT);
	corio_deadline(old);
	t = corio_spawn(accept_port, &lfd);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(20)), 0);
	CHECK_EQ(corio_cancel(t), 0);
	/* errors: corio_accept_retry.3 ECANCELED */
	CHECK_EQ(corio_join(t), -ECANCELED);

	/* corio_close from another task: -EBADF. */
	t = corio_spawn(accept_port, &lfd);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(20)), 0);
	CHECK_EQ(corio_close(lfd), 0);
	/* errors: corio_accept_retry.3 EBADF */
	CHECK_EQ(corio_join(t), -EBADF);

	/* Not a listening socket, not a socket, not a stream socket. */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	/* errors: corio_accept_retry.3 EINVAL */
	CHECK_EQ(corio_accept_retry(fd, NULL, NULL, 0), -EINVAL);
	close(fd);
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	/* errors: corio_accept_retry.3 ENOTSOCK */
	CHECK_EQ(corio_accept_retry(p[0], NULL, NULL, 0), -ENOTSOCK);
	close(p[0]);
	close(p[1]);
	/* A datagram socket cannot accept. */
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	/* errors: corio_accept_retry.3 EOPNOTSUPP */
	CHECK_EQ(corio_accept_retry(fd, NULL, NULL, 0), -EOPNOTSUPP);
	close(fd);
	CHECK_EQ(corio_accept_retry(-1, NULL, NULL, 0), -EBADF);
	return 0;
}

static void test_accept_retry_basics(void **state)
{
	(void)state;
	assert_int_equal(corio_run(accept_retry_main, NULL), 0);
}

/*
 * Outside a task corio_accept returns -EPERM, which accept_retry must
 * return, not take for a firewall's refusal and retry forever: run in a
 * child, so that a spinning call fails the test instead of hanging it.
 */
static void test_accept_retry_outside_task(void **state)
{
	int fd, status;

	(void)state;
	fd = corio_listen("127.0.0.1", 0, 16, 0);
	assert_true(fd >= 0);
	fflush(NULL);
	child_pid = fork();
	assert_true(child_pid >= 0);
	if (child_pid == 0)
		/* errors: corio_accept_retry.3 EPERM */
		_exit(corio_accept_retry(fd, NULL, NULL, 0) == -EPERM ? 0 : 1);
	close(fd);
	status = wait_child(scaled(CORIO_SEC(2)));
	if (status == -1)
		print_message("corio_accept_retry outside a task did not "
			      "return within 2 s: it retries -EPERM\n");
	assert_true(status != -1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void kill_child(void)
{
	if (child_pid > 0) {
		kill(child_pid, SIGKILL);
		waitpid(child_pid, NULL, 0);
		child_pid = -1;
	}
}

static int teardown_child(void **state)
{
	(void)state;
	kill_child();
	return 0;
}

/* Waits for child_pid up to timeout_ns: its wait status, or -1. */
static int wait_child(uint64_t timeout_ns)
{
	uint64_t end = corio_now() + timeout_ns;
	int status;

	for (;;) {
		pid_t r = waitpid(child_pid, &status, WNOHANG);

		if (r == child_pid) {
			child_pid = -1;
			return status;
		}
		if (r < 0 || corio_now() >= end)
			return -1;
		usleep(5000);
	}
}

/* Lowest fd number not in use. */
static int lowest_free_fd(void)
{
	int fd = fcntl(0, F_DUPFD, 0);

	if (fd >= 0)
		close(fd);
	return fd;
}

static int set_nofile(rlim_t cur)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	rl.rlim_cur = cur;
	return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* A listener on 127.0.0.1 with one client waiting in its backlog. */
static int listener_with_client(int *lfd, int *c)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	*lfd = corio_listen("127.0.0.1", 0, 16, 0);
	CHECK(*lfd >= 0);
	sin.sin_port = htons((uint16_t)local_port(*lfd));
	*c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(*c >= 0);
	CHECK_EQ(connect(*c, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return 0;
}

/*
 * Child: out of fds with a client waiting, accept_retry backs off; its
 * deadline, cancellation and a corio_close of the listener end the
 * back-off, and a raised limit lets it accept.
 */
static int backoff_main(void *arg)
{
	uint64_t old, start, took;
	struct rlimit rl;
	corio_task *t;
	int lfd, c, fd, lfd2, c2;

	(void)arg;
	CHECK_EQ(listener_with_client(&lfd, &c), 0);
	CHECK_EQ(listener_with_client(&lfd2, &c2), 0);
	CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
	CHECK_EQ(set_nofile((rlim_t)lowest_free_fd()), 0);
	CHECK_EQ(fcntl(0, F_DUPFD_CLOEXEC, 0), -1);
	CHECK_EQ(errno, EMFILE);

	old = corio_timeout(CORIO_MSEC(100));
	start = corio_now();
	CHECK_EQ(corio_accept_retry(lfd, NULL, NULL, 0), -ETIMEDOUT);
	took = corio_now() - start;
	corio_deadline(old);
	CHECK(took >= CORIO_MSEC(90));
	CHECK(took < CORIO_MSEC(100) + scaled(CORIO_MSEC(900)));

	t = corio_spawn(accept_port, &lfd);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(50)), 0);
	CHECK_EQ(corio_cancel(t), 0);
	CHECK_EQ(corio_join(t), -ECANCELED);

	/*
	 * A corio_close of the listener ends a back-off at once with -EBADF:
	 * at 600 ms the task is in its 512 ms back-off, which a sleep would
	 * have finished 400 ms later, to try the closed (or reused) fd.
	 */
	t = corio_spawn(accept_port, &lfd2);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(600)), 0);
	start = corio_now();
	CHECK_EQ(corio_close(lfd2), 0);
	CHECK_EQ(corio_join(t), -EBADF);
	CHECK(corio_now() - start < scaled(CORIO_MSEC(200)));
	close(c2);

	/* The client waited in the backlog all along. */
	CHECK_EQ(set_nofile(rl.rlim_cur), 0);
	fd = corio_accept_retry(lfd, NULL, NULL, 0);
	CHECK(fd >= 0);
	CHECK_EQ(peer_port(fd), local_port(c));
	close(fd);
	close(c);
	corio_close(lfd);
	return 0;
}

static void test_accept_retry_backoff_deadline_cancel(void **state)
{
	int status;

	(void)state;
	NEED_REAL_RLIMIT();
	fflush(NULL);
	child_pid = fork();
	assert_true(child_pid >= 0);
	if (child_pid == 0)
		_exit(corio_run(backoff_main, NULL) == 0 ? 0 : 1);
	status = wait_child(scaled(CORIO_SEC(20)));
	assert_true(status != -1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * The EMFILE server, in a forked child: room for SLOTS connections, an
 * accept_retry loop spawning echo tasks, and a control pipe on which the
 * parent asks for the child's CPU time ('r') or for it to quit ('q').
 */
#define SLOTS 3

struct emfile {
	int ctl, rep;		/* the child's ends */
	int lfd;
};

static int echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	ssize_t n;

	while ((n = corio_recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send_all(fd, buf, (size_t)n) < 0)
			break;
	corio_close(fd);
	return 0;
}

static int emfile_acceptor(void *arg)
{
	struct emfile *e = arg;

	for (;;) {
		int fd = corio_accept_retry(e->lfd, NULL, NULL, 0);
		corio_task *t;

		if (fd == -EBADF || fd == -ECANCELED)
			return 0;
		CHECK(fd >= 0);
		t = corio_spawn(echo_conn, (void *)(intptr_t)fd);
		CHECK(t != NULL);
		corio_detach(t);
	}
}

static int emfile_main(void *arg)
{
	struct emfile *e = arg;
	corio_task *acceptor;
	int port, fd, free_seen, limit;

	e->lfd = corio_listen("127.0.0.1", 0, 64, 0);
	CHECK(e->lfd >= 0);
	/* Room for exactly SLOTS more fds under the limit. */
	for (fd = 0, free_seen = 0; free_seen < SLOTS; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			free_seen++;
	limit = fd;
	CHECK_EQ(set_nofile((rlim_t)limit), 0);
	acceptor = corio_spawn(emfile_acceptor, e);
	CHECK(acceptor != NULL);
	port = local_port(e->lfd);
	CHECK_EQ(write(e->rep, &port, sizeof(port)), sizeof(port));
	for (;;) {
		char cmd;
		ssize_t n = corio_read(e->ctl, &cmd, 1, 0);
		struct rusage ru;
		uint64_t cpu_us;

		CHECK(n >= 0);
		if (n == 0 || cmd == 'q')
			break;
		CHECK_EQ(cmd, 'r');
		CHECK_EQ(getrusage(RUSAGE_SELF, &ru), 0);
		cpu_us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
			 1000000u + (uint64_t)(ru.ru_utime.tv_usec +
					       ru.ru_stime.tv_usec);
		CHECK_EQ(write(e->rep, &cpu_us, sizeof(cpu_us)),
			 sizeof(cpu_us));
	}
	CHECK_EQ(corio_close(e->lfd), 0);
	CHECK_EQ(corio_join(acceptor), 0);
	return 0;
}

/* Parent side: blocking sockets and pipes with poll timeouts. */
static int read_timeout(int fd, void *buf, size_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t done = 0;

	while (done < len) {
		ssize_t n;

		if (poll(&p, 1, timeout_ms) != 1)
			return -ETIMEDOUT;
		n = read(fd, (char *)buf + done, len - done);
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		done += (size_t)n;
	}
	return 0;
}

static int plain_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		int ret = -errno;

		close(s);
		return ret;
	}
	return s;
}

/* Sends msg, expects it back within timeout_ms. */
static int echo_check(int fd, const char *msg, int timeout_ms)
{
	char buf[64];
	size_t len = strlen(msg);

	if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	if (read_timeout(fd, buf, len, timeout_ms) < 0)
		return -ETIMEDOUT;
	return memcmp(buf, msg, len) ? -EPROTO : 0;
}

static uint64_t child_cpu_us(int ctl, int rep)
{
	uint64_t us = UINT64_MAX;

	assert_int_equal(write(ctl, "r", 1), 1);
	assert_int_equal(read_timeout(rep, &us, sizeof(us), 5000 * (int)mult()),
			 0);
	return us;
}

static void test_accept_retry_emfile_recovers(void **state)
{
	int ctl[2], rep[2], c[SLOTS + 2], port, i, status;
	int long_ms = 5000 * (int)mult();
	struct pollfd p;
	uint64_t cpu0, cpu1, t0, wall;
	struct emfile e;

	(void)state;
	NEED_REAL_RLIMIT();
	assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
	fflush(NULL);
	child_pid = fork();
	assert_true(child_pid >= 0);
	if (child_pid == 0) {
		close(ctl[1]);
		close(rep[0]);
		e.ctl = ctl[0];
		e.rep = rep[1];
		_exit(corio_run(emfile_main, &e) == 0 ? 0 : 1);
	}
	close(ctl[0]);
	close(rep[1]);
	assert_int_equal(read_timeout(rep[0], &port, sizeof(port), long_ms), 0);

	/* SLOTS clients fill the server's fds; each is served. */
	for (i = 0; i < SLOTS; i++) {
		c[i] = plain_connect(port);
		assert_true(c[i] >= 0);
		assert_int_equal(echo_check(c[i], "hello", long_ms), 0);
	}
	/* Two more wait in the backlog: accepting them would be -EMFILE. */
	for (; i < SLOTS + 2; i++) {
		c[i] = plain_connect(port);
		assert_true(c[i] >= 0);
		assert_int_equal(send(c[i], "queued", 6, MSG_NOSIGNAL), 6);
	}
	p.fd = c[SLOTS];
	p.events = POLLIN;
	assert_int_equal(poll(&p, 1, 200), 0);

	/*
	 * A second of back-off: the served connections keep working and
	 * the server does not spin (it would burn about a second of CPU).
	 */
	cpu0 = child_cpu_us(ctl[1], rep[0]);
	t0 = corio_now();
	for (i = 0; i < 10; i++) {
		assert_int_equal(echo_check(c[i % SLOTS], "still here",
					    long_ms), 0);
		usleep(100 * 1000);
	}
	wall = corio_now() - t0;
	cpu1 = child_cpu_us(ctl[1], rep[0]);
	print_message("server CPU during %llu ms of back-off: %llu us\n",
		      (unsigned long long)(wall / 1000000),
		      (unsigned long long)(cpu1 - cpu0));
	assert_true(cpu1 - cpu0 < wall / 1000 / 4);
	p.fd = c[SLOTS];
	assert_int_equal(poll(&p, 1, 0), 0);
	p.fd = c[SLOTS + 1];
	assert_int_equal(poll(&p, 1, 0), 0);

	/* Two served clients leave: the waiting two are accepted. */
	close(c[0]);
	close(c[1]);
	{
		char buf[6];

		assert_int_equal(read_timeout(c[SLOTS], buf, 6, long_ms), 0);
		assert_memory_equal(buf, "queued", 6);
		assert_int_equal(read_timeout(c[SLOTS + 1], buf, 6, long_ms),
				 0);
		assert_memory_equal(buf, "queued", 6);
	}
	for (i = 2; i < SLOTS + 2; i++) {
		assert_int_equal(echo_check(c[i], "recovered", long_ms), 0);
		close(c[i]);
	}
	assert_int_equal(write(ctl[1], "q", 1), 1);
	status = wait_child(scaled(CORIO_SEC(5)));
	close(ctl[1]);
	close(rep[0]);
	assert_true(status != -1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- corio_run_blocking ------------------------------------------------ */

struct probe {
	int value;
	pid_t tid;
	int sleep_res, dial_res, usr1_blocked, term_blocked;
	bool self_null, spawn_null;
	int spawn_errno;
};

static int probe_fn(void *arg)
{
	struct probe *p = arg;
	sigset_t mask;

	p->tid = (pid_t)syscall(SYS_gettid);
	p->sleep_res = corio_sleep(0);
	p->dial_res = corio_dial("127.0.0.1", 80);
	p->self_null = corio_self() == NULL;
	errno = 0;
	p->spawn_null = corio_spawn(noop_main, NULL) == NULL;
	p->spawn_errno = errno;
	pthread_sigmask(SIG_BLOCK, NULL, &mask);
	p->usr1_blocked = sigismember(&mask, SIGUSR1);
	p->term_blocked = sigismember(&mask, SIGTERM);
	return p->value * 2;
}

static int blocking_result_main(void *arg)
{
	struct probe p = { .value = 21 };	/* on the task's stack */

	(void)arg;
	CHECK_EQ(corio_run_blocking(probe_fn, &p), 42);
	/* Another thread, with every signal blocked, outside any loop. */
	CHECK(p.tid != (pid_t)syscall(SYS_gettid));
	CHECK_EQ(p.usr1_blocked, 1);
	CHECK_EQ(p.term_blocked, 1);
	CHECK_EQ(p.sleep_res, -EPERM);
	CHECK_EQ(p.dial_res, -EPERM);
	CHECK(p.self_null);
	CHECK(p.spawn_null);
	CHECK_EQ(p.spawn_errno, EPERM);
	/* Negative results pass through. */
	p.value = -ENOENT;
	CHECK_EQ(corio_run_blocking(probe_fn, &p), -2 * ENOENT);
	/* errors: corio_run_blocking.3 EINVAL */
	CHECK_EQ(corio_run_blocking(NULL, &p), -EINVAL);
	return 0;
}

static void test_run_blocking_result(void **state)
{
	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(blocking_result_main, NULL), 0);
}

static void test_run_blocking_errors(void **state)
{
	(void)state;
	/* Outside a loop. */
	assert_int_equal(corio_run_blocking(noop_main, NULL), -EPERM);
	assert_int_equal(corio_run_blocking(NULL, NULL), -EPERM);
}

static int sleep_200ms(void *arg)
{
	usleep(200 * 1000);
	return (int)(intptr_t)arg;
}

static int blocking_job(void *arg)
{
	return corio_run_blocking(sleep_200ms, arg);
}

/*
 * A meeting of nr jobs: each waits until all have arrived, which only
 * happens if they run at the same time.  1 if they met, 0 on timeout.
 */
struct meeting {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int arrived, nr;
	uint64_t timeout_ns;
};

static int meet(void *arg)
{
	struct meeting *m = arg;
	struct timespec ts;
	int met;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(m->timeout_ns / 1000000000u);
	pthread_mutex_lock(&m->lock);
	m->arrived++;
	pthread_cond_broadcast(&m->cond);
	while (m->arrived < m->nr)
		if (pthread_cond_timedwait(&m->cond, &m->lock, &ts))
			break;
	met = m->arrived >= m->nr;
	pthread_mutex_unlock(&m->lock);
	return met;
}

static int meet_job(void *arg)
{
	return corio_run_blocking(meet, arg);
}

static int parallel_main(void *arg)
{
	struct meeting *m = arg;
	corio_task *t[4];
	uint64_t start, took;
	int i;

	start = corio_now();
	for (i = 0; i < 4; i++) {
		t[i] = corio_spawn(blocking_job, (void *)(intptr_t)(i + 10));
		CHECK(t[i] != NULL);
	}
	for (i = 0; i < 4; i++)
		CHECK_EQ(corio_join(t[i]), i + 10);
	took = corio_now() - start;
	/* One after another they would take 800 ms. */
	CHECK(took >= CORIO_MSEC(200));
	CHECK(took < CORIO_MSEC(200) + scaled(CORIO_MSEC(400)));

	/* The same without a clock: 4 jobs that can only finish together. */
	for (i = 0; i < 4; i++) {
		t[i] = corio_spawn(meet_job, m);
		CHECK(t[i] != NULL);
	}
	for (i = 0; i < 4; i++)
		CHECK_EQ(corio_join(t[i]), 1);
	return 0;
}

/* Runs fn with a meeting of 4 jobs that gives up after timeout_ns. */
static void run_meeting(corio_fn fn, uint64_t timeout_ns)
{
	struct meeting m = { .nr = 4, .timeout_ns = timeout_ns };

	pthread_mutex_init(&m.lock, NULL);
	pthread_cond_init(&m.cond, NULL);
	assert_int_equal(corio_run(fn, &m), 0);
	pthread_cond_destroy(&m.cond);
	pthread_mutex_destroy(&m.lock);
}

static void test_run_blocking_parallel(void **state)
{
	(void)state;
	NEED_THREADS();
	run_meeting(parallel_main, scaled(CORIO_SEC(10)));
}

static int idle_then_meet_main(void *arg)
{
	struct meeting *m = arg;
	corio_task *t[4];
	int i;

	/* One job first: its thread goes idle. */
	CHECK_EQ(blocking_job((void *)(intptr_t)3), 3);
	CHECK_EQ(corio_sleep(CORIO_MSEC(20)), 0);
	/*
	 * Then jobs that can only finish together: one idle thread is not a
	 * thread for each of them.
	 */
	for (i = 0; i < m->nr; i++) {
		t[i] = corio_spawn(meet_job, m);
		CHECK(t[i] != NULL);
	}
	for (i = 0; i < m->nr; i++)
		CHECK_EQ(corio_join(t[i]), 1);
	return 0;
}

static void test_run_blocking_parallel_after_idle(void **state)
{
	(void)state;
	NEED_THREADS();
	run_meeting(idle_then_meet_main, scaled(CORIO_SEC(2)));
}

static int square(void *arg)
{
	int v = *(int *)arg;

	usleep(1000);
	return v * v;
}

static int square_job(void *arg)
{
	int v = (int)(intptr_t)arg;

	/* arg lives on this task's stack while the job runs. */
	return corio_run_blocking(square, &v);
}

static int many_main(void *arg)
{
	corio_task *t[40];
	int i;

	(void)arg;
	/* More jobs than the pool has threads: the rest queue. */
	for (i = 0; i < 40; i++) {
		t[i] = corio_spawn(square_job, (void *)(intptr_t)i);
		CHECK(t[i] != NULL);
	}
	for (i = 0; i < 40; i++)
		CHECK_EQ(corio_join(t[i]), i * i);
	return 0;
}

static void test_run_blocking_many_jobs(void **state)
{
	int before = count_threads();

	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(many_main, NULL), 0);
	assert_int_equal(count_threads(), before);
}

struct gated {
	atomic_int started, go, done;
	int result, done_seen, after;
	uint64_t timeout_ns;
};

/* Runs until the test says go (or a long timeout): 7. */
static int gated_fn(void *arg)
{
	struct gated *g = arg;
	uint64_t end = corio_now() + g->timeout_ns;

	atomic_store(&g->started, 1);
	while (!atomic_load(&g->go) && corio_now() < end)
		usleep(1000);
	usleep(10 * 1000);
	atomic_store(&g->done, 1);
	return 7;
}

static int gated_task(void *arg)
{
	struct gated *g = arg;

	g->result = corio_run_blocking(gated_fn, g);
	g->done_seen = atomic_load(&g->done);
	g->after = corio_yield();
	return 0;
}

static int wait_started(struct gated *g)
{
	uint64_t end = corio_now() + g->timeout_ns;

	while (!atomic_load(&g->started)) {
		CHECK(corio_now() < end);
		CHECK_EQ(corio_sleep(CORIO_MSEC(1)), 0);
	}
	return 0;
}

static int blocking_cancel_main(void *arg)
{
	struct gated *g = arg;
	corio_task *t;

	t = corio_spawn(gated_task, g);
	CHECK(t != NULL);
	CHECK_OK(wait_started(g));
	CHECK_EQ(corio_cancel(t), 0);
	/* Cancelled, the task still waits for fn. */
	CHECK_EQ(corio_sleep(CORIO_MSEC(30)), 0);
	CHECK_EQ(g->result, INT_MIN);
	atomic_store(&g->go, 1);
	CHECK_EQ(corio_join(t), 0);
	CHECK_EQ(g->result, 7);
	CHECK_EQ(g->done_seen, 1);
	/* Its next await sees the cancellation. */
	CHECK_EQ(g->after, -ECANCELED);
	return 0;
}

static void test_run_blocking_cancelled_waits(void **state)
{
	struct gated g = { .result = INT_MIN,
			   .timeout_ns = scaled(CORIO_SEC(10)) };

	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(blocking_cancel_main, &g), 0);
}

static int blocking_deadline_main(void *arg)
{
	struct gated *g = arg;
	uint64_t old;

	atomic_store(&g->go, 1);
	old = corio_timeout(CORIO_MSEC(1));
	/* fn takes 10 ms: longer than the deadline, which does not cut it. */
	CHECK_EQ(corio_run_blocking(gated_fn, g), 7);
	CHECK_EQ(atomic_load(&g->done), 1);
	CHECK_EQ(corio_yield(), -ETIMEDOUT);
	corio_deadline(old);
	return 0;
}

static void test_run_blocking_deadline_waits(void **state)
{
	struct gated g = { .timeout_ns = scaled(CORIO_SEC(10)) };

	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(blocking_deadline_main, &g), 0);
}

static int blocking_teardown_main(void *arg)
{
	struct gated *g = arg;
	corio_task *t;

	t = corio_spawn(gated_task, g);
	CHECK(t != NULL);
	CHECK_OK(wait_started(g));
	atomic_store(&g->go, 1);
	/* Returning cancels t; corio_run still waits for its job. */
	return 0;
}

static void test_run_blocking_teardown_waits(void **state)
{
	struct gated g = { .result = INT_MIN,
			   .timeout_ns = scaled(CORIO_SEC(10)) };

	(void)state;
	NEED_THREADS();
	assert_int_equal(corio_run(blocking_teardown_main, &g), 0);
	assert_int_equal(g.result, 7);
	assert_int_equal(g.done_seen, 1);
	assert_int_equal(g.after, -ECANCELED);
}

/* ---- corio_signal_wait --------------------------------------------------- */

struct sigwait {
	sigset_t set;
	int result;
	bool returned;
};

static int sig_waiter(void *arg)
{
	struct sigwait *w = arg;

	w->result = corio_signal_wait(&w->set);
	w->returned = true;
	return 0;
}

static int signal_task_main(void *arg)
{
	struct sigwait w = { .result = INT_MIN };
	corio_task *t;
	sigset_t mask;

	(void)arg;
	sigemptyset(&w.set);
	sigaddset(&w.set, SIGUSR1);
	t = corio_spawn(sig_waiter, &w);
	CHECK(t != NULL);
	/* Let the waiter block SIGUSR1 and park on its signalfd. */
	CHECK_EQ(corio_sleep(CORIO_MSEC(20)), 0);
	CHECK(!w.returned);
	CHECK_EQ(kill(getpid(), SIGUSR1), 0);
	CHECK_EQ(corio_join(t), 0);
	CHECK_EQ(w.result, SIGUSR1);
	/* The set stays blocked, so the next signal would wait for us. */
	CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &mask), 0);
	CHECK_EQ(sigismember(&mask, SIGUSR1), 1);
	return 0;
}

static void test_signal_wait_from_task(void **state)
{
	sigset_t old;

	(void)state;
	pthread_sigmask(SIG_BLOCK, NULL, &old);
	assert_int_equal(corio_run(signal_task_main, NULL), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *kill_later(void *arg)
{
	sigset_t all;

	(void)arg;
	/* This thread must not take the signal itself. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	usleep(50 * 1000);
	kill(getpid(), SIGUSR2);
	return NULL;
}

static int signal_thread_main(void *arg)
{
	sigset_t set;
	pthread_t th;
	int ret;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	/* Blocked before the thread exists, as a daemon would in main(). */
	CHECK_EQ(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	CHECK_EQ(pthread_create(&th, NULL, kill_later, NULL), 0);
	ret = corio_signal_wait(&set);
	pthread_join(th, NULL);
	CHECK_EQ(ret, SIGUSR2);
	return 0;
}

static void test_signal_wait_from_thread(void **state)
{
	sigset_t old;

	(void)state;
	NEED_THREADS();
	pthread_sigmask(SIG_BLOCK, NULL, &old);
	assert_int_equal(corio_run(signal_thread_main, NULL), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int signal_pending_main(void *arg)
{
	sigset_t set;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	CHECK_EQ(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	/* Sent before the wait: pending, returned at once; then the next. */
	CHECK_EQ(kill(getpid(), SIGUSR2), 0);
	CHECK_EQ(corio_signal_wait(&set), SIGUSR2);
	CHECK_EQ(kill(getpid(), SIGUSR1), 0);
	CHECK_EQ(corio_signal_wait(&set), SIGUSR1);
	return 0;
}

static void test_signal_wait_pending(void **state)
{
	sigset_t old;

	(void)state;
	pthread_sigmask(SIG_BLOCK, NULL, &old);
	assert_int_equal(corio_run(signal_pending_main, NULL), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int signal_stop_main(void *arg)
{
	struct sigwait w = { .result = INT_MIN };
	corio_task *t;
	uint64_t old, start;
	int fds = count_fds(getpid());

	(void)arg;
	sigemptyset(&w.set);
	sigaddset(&w.set, SIGUSR1);
	/* errors: corio_signal_wait.3 EINVAL */
	CHECK_EQ(corio_signal_wait(NULL), -EINVAL);

	old = corio_timeout(CORIO_MSEC(50));
	start = corio_now();
	/* errors: corio_signal_wait.3 ETIMEDOUT */
	CHECK_EQ(corio_signal_wait(&w.set), -ETIMEDOUT);
	CHECK(corio_now() - start >= CORIO_MSEC(45));
	corio_deadline(old);

	t = corio_spawn(sig_waiter, &w);
	CHECK(t != NULL);
	CHECK_EQ(corio_sleep(CORIO_MSEC(20)), 0);
	CHECK_EQ(corio_cancel(t), 0);
	CHECK_EQ(corio_join(t), 0);
	/* errors: corio_signal_wait.3 ECANCELED */
	CHECK_EQ(w.result, -ECANCELED);
	/* Each wait's signalfd is closed. */
	CHECK_EQ(count_fds(getpid()), fds);
	return 0;
}

static void test_signal_wait_cancel_deadline(void **state)
{
	sigset_t old;

	(void)state;
	pthread_sigmask(SIG_BLOCK, NULL, &old);
	assert_int_equal(corio_run(signal_stop_main, NULL), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- examples/echo-server end to end ------------------------------------- */

#define E2E_CONNS	100
#define BIG		(1024 * 1024)

static int free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	if (s < 0)
		return -1;
	if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(s);
		return -1;
	}
	port = local_port(s);
	close(s);
	return port;
}

/*
 * The idle server's open fds, once it is fully up: it prints its listening
 * line before its main task makes the signalfd of corio_signal_wait, so
 * wait for that one too.  -1 if it does not appear.
 */
static int server_idle_fds(pid_t pid)
{
	uint64_t end = corio_now() + scaled(CORIO_SEC(5));

	do {
		char dir[64], link[64];
		struct dirent *de;
		bool found = false;
		DIR *d;

		snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
		d = opendir(dir);
		if (!d)
			return -1;
		while ((de = readdir(d)) && !found) {
			ssize_t n;

			n = readlinkat(dirfd(d), de->d_name, link,
				       sizeof(link) - 1);
			if (n > 0) {
				link[n] = '\0';
				found = strstr(link, "signalfd") != NULL;
			}
		}
		closedir(d);
		if (found)
			return count_fds(pid);
		usleep(1000);
	} while (corio_now() < end);
	return -1;
}

/* examples/echo-server from the top of the tree or beside tests/. */
static bool find_server(char *path, size_t len)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;

	snprintf(path, len, "examples/echo-server");
	if (access(path, X_OK) == 0)
		return true;
	if (!slash)
		return false;
	snprintf(path, len, "%.*s/../examples/echo-server",
		 (int)(slash - argv0), argv0);
	return access(path, X_OK) == 0;
}

/*
 * Starts the server on a free port, with -t loops unless loops is NULL; 0
 * and the port once it printed its listening line, -EADDRINUSE to try
 * another port, or another error.
 */
static int start_server(const char *path, int port, const char *loops,
			int *err_fd)
{
	char arg[16], buf[512], want[64];
	size_t have = 0;
	uint64_t end = corio_now() + scaled(CORIO_SEC(10));
	int p[2];

	snprintf(arg, sizeof(arg), "%d", port);
	snprintf(want, sizeof(want), "listening on 127.0.0.1:%d\n", port);
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	child_pid = fork();
	if (child_pid < 0)
		return -errno;
	if (child_pid == 0) {
		dup2(p[1], 2);
		if (loops)
			execl(path, path, "-h", "127.0.0.1", "-p", arg, "-t",
			      loops, (char *)NULL);
		else
			execl(path, path, "-h", "127.0.0.1", "-p", arg,
			      (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (!memmem(buf, have, want, strlen(want))) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		uint64_t now = corio_now();
		ssize_t n;

		if (now >= end ||
		    poll(&pf, 1, (int)((end - now) / 1000000) + 1) != 1)
			break;
		n = read(p[0], buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
	}
	if (memmem(buf, have, want, strlen(want))) {
		*err_fd = p[0];
		return 0;
	}
	close(p[0]);
	kill_child();
	buf[have] = '\0';
	if (strstr(buf, "in use"))
		return -EADDRINUSE;
	fprintf(stderr, "echo-server did not start; it said: %s\n", buf);
	return -EIO;
}

struct e2e {
	int port;
	pid_t pid;
	int base_fds;		/* the idle server's */
	int exchanged;		/* clients done exchanging */
	bool release;		/* clients may close */
	int sent_before_reset;
};

struct e2e_client {
	struct e2e *e;
	int id;
};

struct big_send {
	int fd;
	const unsigned char *buf;
};

static int big_sender(void *arg)
{
	struct big_send *b = arg;

	return send_all(b->fd, b->buf, BIG) == BIG ? 0 : -EIO;
}

/* 1 MiB out and back, sent and received at once so neither side stalls. */
static int big_exchange(int fd)
{
	unsigned char *out = malloc(BIG), *in = malloc(BIG);
	struct big_send b = { .fd = fd, .buf = out };
	corio_task *t;
	ssize_t got;
	int ret;

	CHECK(out && in);
	fill(out, BIG, 12345);
	t = corio_spawn(big_sender, &b);
	CHECK(t != NULL);
	got = recv_all(fd, in, BIG);
	ret = corio_join(t);
	CHECK_EQ(ret, 0);
	CHECK_EQ(got, BIG);
	CHECK(memcmp(in, out, BIG) == 0);
	free(out);
	free(in);
	return 0;
}

/* Fills the pipe towards the server, then resets: RST mid-stream. */
static int reset_midstream(struct e2e *e, int fd)
{
	static unsigned char chunk[16384];
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int i;

	for (i = 0; i < 64; i++) {
		ssize_t n = corio_send(fd, chunk, sizeof(chunk), MSG_DONTWAIT);

		if (n == -EAGAIN)
			break;
		CHECK(n > 0);
		e->sent_before_reset += (int)n;
	}
	CHECK(e->sent_before_reset > 0);
	CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	CHECK_EQ(corio_close(fd), 0);
	return 0;
}

static int e2e_client(void *arg)
{
	struct e2e_client *c = arg;
	struct e2e *e = c->e;
	unsigned char out[2048], in[2048];
	int fd, m;

	fd = corio_dial("127.0.0.1", e->port);
	CHECK(fd >= 0);
	for (m = 0; m < 3; m++) {
		size_t len = 1 + (size_t)(c->id * 37 + m * 101) % sizeof(out);

		fill(out, len, (unsigned int)(c->id * 7919 + m));
		CHECK_EQ(send_all(fd, out, len), len);
		CHECK_EQ(recv_all(fd, in, len), len);
		CHECK(memcmp(in, out, len) == 0);
	}
	if (c->id == 0)
		CHECK_OK(big_exchange(fd));
	if (c->id == 1) {
		CHECK_OK(reset_midstream(e, fd));
		e->exchanged++;
		return 0;
	}
	e->exchanged++;
	while (!e->release) {
		int ret = corio_sleep(CORIO_MSEC(2));

		if (ret == -ECANCELED)	/* e2e_main failed: quietly */
			break;
		CHECK_EQ(ret, 0);
	}
	CHECK_EQ(corio_close(fd), 0);
	return 0;
}

/* Waits until the server holds want fds; the last count seen. */
static int wait_server_fds(struct e2e *e, int want)
{
	uint64_t end = corio_now() + scaled(CORIO_SEC(5));
	int n;

	while ((n = count_fds(e->pid)) != want && corio_now() < end)
		corio_sleep(CORIO_MSEC(5));
	return n;
}

static int e2e_main(void *arg)
{
	struct e2e *e = arg;
	struct e2e_client cl[E2E_CONNS];
	corio_task *t[E2E_CONNS];
	struct target tgt = { .host = "127.0.0.1", .port = e->port };
	uint64_t end;
	int i, fd, n;

	for (i = 0; i < E2E_CONNS; i++) {
		cl[i].e = e;
		cl[i].id = i;
		t[i] = corio_spawn(e2e_client, &cl[i]);
		CHECK(t[i] != NULL);
	}
	end = corio_now() + scaled(CORIO_SEC(20));
	while (e->exchanged < E2E_CONNS) {
		CHECK(corio_now() < end);
		CHECK_EQ(corio_sleep(CORIO_MSEC(5)), 0);
	}
	/* 99 connections open at once; the reset one is gone. */
	n = wait_server_fds(e, e->base_fds + E2E_CONNS - 1);
	CHECK_EQ(n, e->base_fds + E2E_CONNS - 1);
	CHECK_EQ(waitpid(e->pid, NULL, WNOHANG), 0);
	/* And it still takes new ones. */
	fd = corio_dial(tgt.host, tgt.port);
	CHECK(fd >= 0);
	CHECK_OK(round_trips(fd));
	CHECK_EQ(corio_close(fd), 0);

	e->release = true;
	for (i = 0; i < E2E_CONNS; i++)
		CHECK_EQ(corio_join(t[i]), 0);
	n = wait_server_fds(e, e->base_fds);
	CHECK_EQ(n, e->base_fds);
	return 0;
}

/* The server with -t loops (NULL: none), end to end, then SIGTERM. */
static void echo_server_end_to_end(const char *loops)
{
	struct e2e e = { 0 };
	char path[PATH_MAX];
	int i, ret = -EADDRINUSE, err_fd = -1, status;
	uint64_t start;

	if (!find_server(path, sizeof(path))) {
		print_message("no examples/echo-server (run make): skipped\n");
		skip();
	}
	for (i = 0; i < 10 && ret == -EADDRINUSE; i++) {
		e.port = free_port();
		assert_true(e.port > 0);
		ret = start_server(path, e.port, loops, &err_fd);
	}
	assert_int_equal(ret, 0);
	e.pid = child_pid;
	e.base_fds = server_idle_fds(e.pid);
	assert_true(e.base_fds > 0);

	assert_int_equal(corio_run(e2e_main, &e), 0);

	/* SIGTERM: a clean exit, status 0, within a second. */
	start = corio_now();
	assert_int_equal(kill(e.pid, SIGTERM), 0);
	status = wait_child(scaled(CORIO_SEC(1)));
	print_message("echo-server exited %llu ms after SIGTERM\n",
		      (unsigned long long)((corio_now() - start) / 1000000));
	close(err_fd);
	assert_true(status != -1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_echo_server_end_to_end(void **state)
{
	(void)state;
	echo_server_end_to_end(NULL);
}

/*
 * echo-server -t 2: two loops, each with its own SO_REUSEPORT listener on
 * the port, so the 100 connections land on both (the kernel hashes each
 * to a listener: all 100 on one is a 2^-99 chance).  The same exchanges,
 * resets, fd counts and SIGTERM as with one loop.
 */
static void test_echo_server_two_loops(void **state)
{
	(void)state;
	echo_server_end_to_end("2");
}

static int ret5(void *arg)
{
	(void)arg;
	return 5;
}

static int probe_threads_main(void *arg)
{
	(void)arg;
	return corio_run_blocking(ret5, NULL) == 5 ? 0 : 1;
}

/* True if a pool thread cannot finish a job while the loop waits. */
static bool probe_threads_stall(void)
{
	int status;

	if (!RUNNING_ON_VALGRIND)
		return false;
	fflush(NULL);
	child_pid = fork();
	if (child_pid < 0)
		return false;
	if (child_pid == 0)
		_exit(corio_run(probe_threads_main, NULL));
	/* Not scaled: under valgrind a job takes well under a second. */
	status = wait_child(CORIO_SEC(5));
	if (status != -1)
		return false;
	kill_child();
	return true;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_dial_ipv4),
		cmocka_unit_test(test_listen_dial_ipv6),
		cmocka_unit_test(test_listen_any_takes_ipv4_and_ipv6),
		cmocka_unit_test(test_listen_dial_unix_path),
		cmocka_unit_test(test_listen_dial_unix_abstract),
		cmocka_unit_test(test_unix_errors),
		cmocka_unit_test(test_dial_refused),
		cmocka_unit_test(test_dial_unresolvable_name),
		cmocka_unit_test(test_dial_localhost),
		cmocka_unit_test(test_dial_deadline_full_backlog),
		cmocka_unit_test(test_dial_cancel_full_backlog),
		cmocka_unit_test(test_flags_and_ports_invalid),
		cmocka_unit_test(test_reuseport),
		cmocka_unit_test(test_listen_address_not_here),
		cmocka_unit_test(test_outside_task),
		cmocka_unit_test(test_accept_retry_basics),
		cmocka_unit_test_teardown(test_accept_retry_outside_task,
					  teardown_child),
		cmocka_unit_test_teardown(
			test_accept_retry_backoff_deadline_cancel,
			teardown_child),
		cmocka_unit_test_teardown(test_accept_retry_emfile_recovers,
					  teardown_child),
		cmocka_unit_test(test_run_blocking_result),
		cmocka_unit_test(test_run_blocking_errors),
		cmocka_unit_test(test_run_blocking_parallel),
		cmocka_unit_test(test_run_blocking_parallel_after_idle),
		cmocka_unit_test(test_run_blocking_many_jobs),
		cmocka_unit_test(test_run_blocking_cancelled_waits),
		cmocka_unit_test(test_run_blocking_deadline_waits),
		cmocka_unit_test(test_run_blocking_teardown_waits),
		cmocka_unit_test(test_signal_wait_from_task),
		cmocka_unit_test(test_signal_wait_from_thread),
		cmocka_unit_test(test_signal_wait_pending),
		cmocka_unit_test(test_signal_wait_cancel_deadline),
		cmocka_unit_test_teardown(test_echo_server_end_to_end,
					  teardown_child),
		cmocka_unit_test_teardown(test_echo_server_two_loops,
					  teardown_child),
	};
	int ret;

	(void)argc;
	argv0 = argv[0];
	ret = corio_run(noop_main, NULL);
	if (ret == -ENOSYS || ret == -EPERM) {
		printf("test-net: io_uring is unavailable (%s): skipped\n",
		       strerror(-ret));
		return 77;
	}
	threads_stall = probe_threads_stall();
	return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
