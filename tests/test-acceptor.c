/*
 * test-acceptor.c - corio_acceptor: one multishot accept shared by the
 * accepting tasks; back-off when out of fds; cancellation, deadlines,
 * close and teardown.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

static int listen_port(int *port)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = corio_listen("127.0.0.1", 0, 1024, 0);

	assert_true(fd >= 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

struct dialer {
	int port, fd;
};

static int dial_task(void *arg)
{
	struct dialer *d = arg;

	d->fd = corio_dial("127.0.0.1", d->port);
	return d->fd < 0 ? d->fd : 0;
}

/* Dials path and returns the fd as its result, for fd_close_joined. */
static int dial_unix_task(void *arg)
{
	return corio_dial_unix(arg);
}

static void fd_close_joined(corio_task *t)
{
	int fd = corio_join(t);

	assert_true(fd >= 0);
	close(fd);
}

struct taker {
	corio_acceptor *acc;
	int want, got, last;
	int fds[256];
};

static int take_task(void *arg)
{
	struct taker *k = arg;

	while (k->got < k->want) {
		int fd = corio_acceptor_accept(k->acc);

		k->last = fd;
		if (fd < 0)
			return fd;
		k->fds[k->got++] = fd;
	}
	return 0;
}

#define CONNS	200

/* Two tasks share one acceptor: every connection is taken once. */
static int share_main(void *arg)
{
	static struct dialer d[CONNS];
	struct taker k[2] = { { .want = CONNS / 2 }, { .want = CONNS / 2 } };
	corio_task *tk[2], *td[CONNS];
	corio_acceptor *acc;
	int lfd, port, i, j, fds0 = fd_count();

	(void)arg;
	lfd = listen_port(&port);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);
	for (i = 0; i < 2; i++) {
		k[i].acc = acc;
		tk[i] = corio_spawn(take_task, &k[i]);
	}
	for (i = 0; i < CONNS; i++) {
		d[i].port = port;
		td[i] = corio_spawn(dial_task, &d[i]);
	}
	for (i = 0; i < CONNS; i++)
		assert_int_equal(corio_join(td[i]), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(corio_join(tk[i]), 0);
	for (i = 0; i < 2; i++)
		for (j = 0; j < k[i].got; j++) {
			assert_true(fd_cloexec(k[i].fds[j]));
			close(k[i].fds[j]);
		}
	for (i = 0; i < CONNS; i++)
		close(d[i].fd);
	assert_int_equal(corio_acceptor_free(acc), 0);
	close(lfd);
	assert_int_equal(fd_count(), fds0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_shared(void **state)
{
	(void)state;
	RUN(share_main, NULL);
}

/*
 * Connections that arrive while nobody accepts are queued and handed out
 * later; freeing the acceptor closes what was never taken.
 */
static int queue_main(void *arg)
{
	struct dialer d[9];
	struct taker k = { .want = 1 };
	corio_task *t[9];
	corio_acceptor *acc;
	struct corio_stats st;
	int lfd, port, i, fds0 = fd_count();

	(void)arg;
	lfd = listen_port(&port);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);
	k.acc = acc;
	/* One connection taken: the multishot is armed from then on. */
	d[0].port = port;
	t[0] = corio_spawn(dial_task, &d[0]);
	assert_int_equal(corio_join(corio_spawn(take_task, &k)), 0);
	assert_int_equal(corio_join(t[0]), 0);
	close(k.fds[0]);
	for (i = 1; i < 9; i++) {
		d[i].port = port;
		t[i] = corio_spawn(dial_task, &d[i]);
	}
	for (i = 1; i < 9; i++)
		assert_int_equal(corio_join(t[i]), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(50)), 0);
	k.got = 0;
	k.want = 3;
	assert_int_equal(corio_join(corio_spawn(take_task, &k)), 0);
	for (i = 0; i < 3; i++)
		close(k.fds[i]);
	/* Five were queued, untaken: free closes them and ends the op. */
	assert_int_equal(corio_acceptor_free(acc), 0);
	st = stats_now();
	assert_int_equal(st.ops_in_flight, 0);
	for (i = 0; i < 9; i++)
		close(d[i].fd);
	close(lfd);
	assert_int_equal(fd_count(), fds0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_queue_and_free(void **state)
{
	(void)state;
	RUN(queue_main, NULL);
}

/* Cancellation, the deadline and corio_close reach a waiting task. */
static int wait_main(void *arg)
{
	struct taker k = { .want = 1 };
	corio_acceptor *acc;
	corio_task *t;
	struct dialer d;
	uint64_t old;
	int lfd, port;

	(void)arg;
	lfd = listen_port(&port);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);
	k.acc = acc;

	t = corio_spawn(take_task, &k);
	assert_int_equal(corio_yield(), 0);
	/* errors: corio_acceptor.3 EBUSY */
	assert_int_equal(corio_acceptor_free(acc), -EBUSY);	/* a waiter */
	assert_int_equal(corio_cancel(t), 0);
	/* errors: corio_acceptor.3 ECANCELED */
	assert_int_equal(corio_join(t), -ECANCELED);

	old = corio_timeout(CORIO_MSEC(30));
	/* errors: corio_acceptor.3 ETIMEDOUT */
	assert_int_equal(corio_acceptor_accept(acc), -ETIMEDOUT);
	corio_deadline(old);

	/* Still usable after both. */
	d.port = port;
	t = corio_spawn(dial_task, &d);
	k.got = 0;
	assert_int_equal(corio_join(corio_spawn(take_task, &k)), 0);
	assert_int_equal(corio_join(t), 0);
	close(k.fds[0]);
	close(d.fd);

	/* corio_close of the listener: the waiter sees -EBADF. */
	k.got = 0;
	t = corio_spawn(take_task, &k);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_close(lfd), 0);
	/* errors: corio_acceptor.3 EBADF */
	assert_int_equal(corio_join(t), -EBADF);
	assert_int_equal(corio_acceptor_free(acc), 0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_cancel_deadline_close(void **state)
{
	(void)state;
	RUN(wait_main, NULL);
}

static int errors_main(void *arg)
{
	corio_acceptor *acc;

	(void)arg;
	/* errors: corio_acceptor.3 EINVAL */
	assert_int_equal(corio_acceptor_new(-1, &acc), -EINVAL);
	assert_int_equal(corio_acceptor_new(0, NULL), -EINVAL);
	assert_int_equal(corio_acceptor_accept(NULL), -EINVAL);
	assert_int_equal(corio_acceptor_free(NULL), 0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_errors(void **state)
{
	corio_acceptor *acc;

	(void)state;
	/* errors: corio_acceptor.3 EPERM */
	assert_int_equal(corio_acceptor_new(3, &acc), -EPERM);
	RUN(errors_main, NULL);
}

/*
 * corio_acceptor_accept_addr: the peer's address as accept(2) gives it,
 * truncated as accept(2) truncates it; a NULL addr asks for none.
 */
static int connect_to(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Loopback: the handshake ends in the kernel, the connect at once. */
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void assert_same_addr(const struct sockaddr_in *a, int client)
{
	struct sockaddr_in b;
	socklen_t len = sizeof(b);

	assert_int_equal(getsockname(client, (struct sockaddr *)&b, &len), 0);
	assert_int_equal(len, sizeof(b));
	assert_int_equal(a->sin_family, AF_INET);
	assert_int_equal(a->sin_port, b.sin_port);
	assert_int_equal(a->sin_addr.s_addr, b.sin_addr.s_addr);
}

static int addr_main(void *arg)
{
	struct sockaddr_in peer;
	unsigned char raw[sizeof(struct sockaddr_in)];
	socklen_t len;
	corio_acceptor *acc;
	int lfd, port, c, fd, i, fds0 = fd_count();

	(void)arg;
	lfd = listen_port(&port);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);

	/* The address of a TCP peer is the client's own socket name. */
	c = connect_to(port);
	memset(&peer, 0xaa, sizeof(peer));
	len = sizeof(peer);
	fd = corio_acceptor_accept_addr(acc, (struct sockaddr *)&peer, &len);
	assert_true(fd >= 0);
	assert_true(fd_cloexec(fd));
	assert_int_equal(len, sizeof(peer));
	assert_same_addr(&peer, c);
	close(fd);
	close(c);

	/* Room for 4 bytes: 4 written, the full size in *addrlen. */
	c = connect_to(port);
	memset(raw, 0xaa, sizeof(raw));
	len = 4;
	fd = corio_acceptor_accept_addr(acc, (struct sockaddr *)raw, &len);
	assert_true(fd >= 0);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_equal(((struct sockaddr *)raw)->sa_family, AF_INET);
	for (i = 4; i < (int)sizeof(raw); i++)
		assert_int_equal(raw[i], 0xaa);
	close(fd);
	close(c);

	/* No addr: no address, addrlen ignored, as with accept(2). */
	c = connect_to(port);
	len = 1234;
	fd = corio_acceptor_accept_addr(acc, NULL, &len);
	assert_true(fd >= 0);
	assert_int_equal(len, 1234);
	close(fd);
	close(c);
	c = connect_to(port);
	fd = corio_acceptor_accept_addr(acc, NULL, NULL);
	assert_true(fd >= 0);
	close(fd);
	close(c);

	/*
	 * Bad arguments fail before any wait: the connection that waits
	 * meanwhile goes to the next call.
	 */
	c = connect_to(port);
	len = sizeof(peer);
	/* errors: corio_acceptor.3 EINVAL */
	assert_int_equal(corio_acceptor_accept_addr(NULL,
						    (struct sockaddr *)&peer,
						    &len), -EINVAL);
	/* errors: corio_acceptor.3 EINVAL */
	assert_int_equal(corio_acceptor_accept_addr(acc,
						    (struct sockaddr *)&peer,
						    NULL), -EINVAL);
	len = (socklen_t)-1;
	/* errors: corio_acceptor.3 EINVAL */
	assert_int_equal(corio_acceptor_accept_addr(acc,
						    (struct sockaddr *)&peer,
						    &len), -EINVAL);
	assert_int_equal(len, (socklen_t)-1);
	len = sizeof(peer);
	fd = corio_acceptor_accept_addr(acc, (struct sockaddr *)&peer, &len);
	assert_true(fd >= 0);
	assert_same_addr(&peer, c);
	close(fd);
	close(c);

	assert_int_equal(corio_acceptor_free(acc), 0);
	close(lfd);
	assert_int_equal(fd_count(), fds0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_accept_addr(void **state)
{
	(void)state;
	RUN(addr_main, NULL);
}

/*
 * A peer that resets its connection before the server asks for its
 * address has none (getpeername: ENOTCONN): that connection is closed and
 * the next one returned, with its address.
 */
static int addr_reset_main(void *arg)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	corio_acceptor *acc;
	int lfd, port, gone, c, fd, fds0 = fd_count();

	(void)arg;
	lfd = listen_port(&port);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);
	gone = connect_to(port);
	assert_int_equal(setsockopt(gone, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	close(gone);	/* an RST, while the connection waits in the backlog */
	/* Loopback delivers it at once; the sleep is a margin, no more. */
	assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	c = connect_to(port);
	fd = corio_acceptor_accept_addr(acc, (struct sockaddr *)&peer, &len);
	assert_true(fd >= 0);
	assert_int_equal(len, sizeof(peer));
	assert_same_addr(&peer, c);
	close(fd);
	close(c);
	assert_int_equal(corio_acceptor_free(acc), 0);
	close(lfd);
	assert_int_equal(fd_count(), fds0);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_accept_addr_reset(void **state)
{
	(void)state;
	RUN(addr_reset_main, NULL);
}

/* A unix peer that did not bind has an address of just its family. */
static int addr_unix_main(void *arg)
{
	struct sockaddr_un peer;
	socklen_t len = sizeof(peer);
	corio_acceptor *acc;
	char path[64];
	corio_task *t;
	int lfd, fd;

	(void)arg;
	snprintf(path, sizeof(path), "@corio-test-acceptor-%ld",
		 (long)getpid());
	lfd = corio_listen_unix(path, 16, 0);
	assert_true(lfd >= 0);
	assert_int_equal(corio_acceptor_new(lfd, &acc), 0);
	t = corio_spawn(dial_unix_task, path);
	assert_non_null(t);
	fd = corio_acceptor_accept_addr(acc, (struct sockaddr *)&peer, &len);
	assert_true(fd >= 0);
	assert_int_equal(len, sizeof(sa_family_t));
	assert_int_equal(peer.sun_family, AF_UNIX);
	fd_close_joined(t);
	close(fd);
	assert_int_equal(corio_acceptor_free(acc), 0);
	close(lfd);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_accept_addr_unix(void **state)
{
	(void)state;
	RUN(addr_unix_main, NULL);
}

/*
 * An fd that cannot accept: the kernel's error reaches the waiting task,
 * -ENOTSOCK for a pipe, -EINVAL for a socket that does not listen; the
 * acceptor is freed as usual.
 */
static int not_listening_main(void *arg)
{
	corio_acceptor *acc;
	int p[2], fd;

	(void)arg;
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(corio_acceptor_new(p[0], &acc), 0);
	/* errors: corio_acceptor.3 ENOTSOCK */
	assert_int_equal(corio_acceptor_accept(acc), -ENOTSOCK);
	assert_int_equal(corio_acceptor_free(acc), 0);
	close(p[0]);
	close(p[1]);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(corio_acceptor_new(fd, &acc), 0);
	/* errors: corio_acceptor.3 EINVAL */
	assert_int_equal(corio_acceptor_accept(acc), -EINVAL);
	assert_int_equal(corio_acceptor_free(acc), 0);
	close(fd);
	assert_loop_clean();
	return 0;
}

static void test_acceptor_not_listening(void **state)
{
	(void)state;
	RUN(not_listening_main, NULL);
}

/* main returns with the multishot armed: corio_run still ends. */
static corio_acceptor *left_over;

static int leftover_main(void *arg)
{
	int port, lfd = listen_port(&port);
	int *lfdp = arg;
	corio_task *t;
	static struct taker k = { .want = 1 };

	*lfdp = lfd;
	assert_int_equal(corio_acceptor_new(lfd, &left_over), 0);
	k.acc = left_over;
	t = corio_spawn(take_task, &k);
	corio_detach(t);
	assert_int_equal(corio_yield(), 0);
	return 0;
}

static void test_acceptor_teardown(void **state)
{
	uint64_t start = mono_ns();
	int lfd = -1;

	(void)state;
	RUN(leftover_main, &lfd);
	assert_true(mono_ns() - start < test_slack_ns(CORIO_SEC(2)));
	/* Its loop is gone; freeing it is still fine. */
	assert_int_equal(corio_acceptor_free(left_over), 0);
	close(lfd);
}

/*
 * Out of fds: the server keeps what it has, backs off instead of spinning,
 * and takes the waiting connections once some of its own close.  Runs in a
 * child (RLIMIT_NOFILE); the clients are the parent's.
 */
struct emfile {
	int lfd;
	struct taker k;
	int stop;
};

static int emfile_taker(void *arg)
{
	struct emfile *e = arg;

	while (!e->stop && e->k.got < 64) {
		int fd = corio_acceptor_accept(e->k.acc);

		if (fd < 0)
			return fd;
		e->k.fds[e->k.got++] = fd;
	}
	return 0;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int emfile_main(void *arg)
{
	struct emfile *e = arg;
	struct rlimit rl;
	corio_task *t;
	double cpu;
	int i, before;
	uint64_t end;

	CHILD_CHECK(corio_acceptor_new(e->lfd, &e->k.acc) == 0);
	CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = (rlim_t)fd_count() + 6;
	CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	t = corio_spawn(emfile_taker, e);
	CHILD_CHECK(t);
	CHILD_CHECK(corio_sleep(CORIO_MSEC(300)) == 0);
	before = e->k.got;
	CHILD_CHECK(before > 0 && before < 20);
	/* Stuck at the limit: backing off, not spinning. */
	cpu = cpu_s();
	CHILD_CHECK(corio_sleep(CORIO_MSEC(500)) == 0);
	CHILD_CHECK(cpu_s() - cpu < 0.2 * test_mult());
	CHILD_CHECK(e->k.got == before);
	for (i = 0; i < before; i++)
		close(e->k.fds[i]);
	/* Recovers: takes the connections that waited in the backlog. */
	end = mono_ns() + test_slack_ns(CORIO_SEC(5));
	while (e->k.got < before + 3 && mono_ns() < end)
		CHILD_CHECK(corio_sleep(CORIO_MSEC(20)) == 0);
	CHILD_CHECK(e->k.got >= before + 3);
	e->stop = 1;
	corio_cancel(t);
	corio_join(t);
	CHILD_CHECK(corio_acceptor_free(e->k.acc) == 0);
	return 0;
}

static void test_acceptor_emfile_backs_off(void **state)
{
	static struct emfile e;
	int port, i, status, clients[20];
	pid_t pid;
	struct sockaddr_in sa = { .sin_family = AF_INET };

	(void)state;
	if (UNDER_VALGRIND())
		skip();	/* valgrind does not enforce RLIMIT_NOFILE */
	e.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(e.lfd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(e.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(e.lfd, 64), 0);
	{
		socklen_t len = sizeof(sa);

		assert_int_equal(getsockname(e.lfd, (struct sockaddr *)&sa,
					     &len), 0);
		port = ntohs(sa.sin_port);
	}
	(void)port;
	for (i = 0; i < 20; i++) {
		clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(clients[i] >= 0);
		assert_int_equal(connect(clients[i], (struct sockaddr *)&sa,
					 sizeof(sa)), 0);
	}
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(corio_run(emfile_main, &e) == 0 ? 0 : 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	for (i = 0; i < 20; i++)
		close(clients[i]);
	close(e.lfd);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_acceptor_shared),
		CORIO_TEST(test_acceptor_queue_and_free),
		CORIO_TEST(test_acceptor_cancel_deadline_close),
		CORIO_TEST(test_acceptor_errors),
		CORIO_TEST(test_acceptor_accept_addr),
		CORIO_TEST(test_acceptor_accept_addr_reset),
		CORIO_TEST(test_acceptor_accept_addr_unix),
		CORIO_TEST(test_acceptor_not_listening),
		CORIO_TEST(test_acceptor_teardown),
		CORIO_TEST(test_acceptor_emfile_backs_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
