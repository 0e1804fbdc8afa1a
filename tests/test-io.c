/*
 * test-io.c - corio_sqe/corio_await and the op wrappers: files, sockets,
 * pipes, bad fds, SIGPIPE, and many tasks doing I/O at once.
 */
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "helpers.h"

static void socketpair_or_fail(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
}

static int pending_bytes(int fd)
{
	int n = -1;

	assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

/* A listening TCP socket on 127.0.0.1, ephemeral port, plain syscalls. */
static int listener(struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	assert_int_equal(listen(fd, 128), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

static int nop_main(void *arg)
{
	struct io_uring_sqe *sqe;

	(void)arg;
	sqe = corio_sqe();
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);
	sqe->user_data = 0xdeadbeef;	/* overwritten by corio_await */
	assert_int_equal(corio_await(sqe), 0);
	assert_int_equal(corio_nop(), 0);
	/* errors: corio_sqe.3 EINVAL */
	assert_int_equal(corio_await(NULL), -EINVAL);
	assert_loop_clean();
	return 0;
}

static void test_nop_through_sqe_and_await(void **state)
{
	(void)state;
	RUN(nop_main, NULL);
}

/*
 * SQEs that an await cannot serve (multishot, CQE_SKIP_SUCCESS, a link)
 * get -EINVAL and are never submitted; the ring stays usable.
 */
static int unservable_main(void *arg)
{
	struct corio_stats before, after;
	struct sockaddr_in addr;
	struct io_uring_sqe *sqe;
	int lfd, cfd, afd, p[2];

	(void)arg;
	lfd = listener(&addr);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	before = stats_now();

	sqe = corio_sqe();
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, 0);
	assert_int_equal(corio_await(sqe), -EINVAL);

	sqe = corio_sqe();
	io_uring_prep_write(sqe, p[1], "x", 1, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	assert_int_equal(corio_await(sqe), -EINVAL);

	/* A link would tie another task's next SQE to this one. */
	sqe = corio_sqe();
	io_uring_prep_write(sqe, p[1], "l", 1, 0);
	sqe->flags |= IOSQE_IO_LINK;
	assert_int_equal(corio_await(sqe), -EINVAL);
	sqe = corio_sqe();
	io_uring_prep_write(sqe, p[1], "h", 1, 0);
	sqe->flags |= IOSQE_IO_HARDLINK;
	assert_int_equal(corio_await(sqe), -EINVAL);

	/* Not the last SQE handed out: it must not go out either. */
	sqe = corio_sqe();
	io_uring_prep_write(sqe, p[1], "y", 1, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	{
		struct io_uring_sqe *nop = corio_sqe();

		io_uring_prep_nop(nop);
		assert_int_equal(corio_await(sqe), -EINVAL);
		assert_int_equal(corio_await(nop), 0);
	}

	after = stats_now();
	assert_int_equal(after.ops_in_flight, before.ops_in_flight);
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_int_equal(pending_bytes(p[0]), 0);

	/* No armed multishot accept steals this connection. */
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(cfd >= 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&addr, sizeof(addr)),
			 0);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	close(afd);
	close(cfd);
	close(lfd);
	close(p[0]);
	close(p[1]);
	assert_loop_clean();
	return 0;
}

static void test_await_refuses_multishot_and_skip(void **state)
{
	(void)state;
	RUN(unservable_main, NULL);
}

/* Outside a task corio_sqe still gives an SQE, which cannot be awaited. */
static void test_sqe_outside_task(void **state)
{
	struct io_uring_sqe *sqe;

	(void)state;
	sqe = corio_sqe();
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);
	/* errors: corio_sqe.3 EPERM */
	assert_int_equal(corio_await(sqe), -EPERM);
}

struct raw_recv {
	int fd;
	int parked;
	int ret;
	char buf[8];
};

/* A recv prepped by hand and awaited. */
static int raw_recv(void *arg)
{
	struct raw_recv *r = arg;
	struct io_uring_sqe *sqe = corio_sqe();

	io_uring_prep_recv(sqe, r->fd, r->buf, sizeof(r->buf), 0);
	r->parked = 1;
	r->ret = corio_await(sqe);
	return 0;
}

/*
 * corio_close of the fd that a hand-prepped SQE waits on: its await gets
 * -EBADF, as the wrappers' do.
 */
static int await_closed_main(void *arg)
{
	struct raw_recv r = { .ret = 1 };
	corio_task *t;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	r.fd = sv[0];
	t = corio_spawn(raw_recv, &r);
	assert_non_null(t);
	yield_until(&r.parked);
	assert_int_equal(corio_nop(), 0);	/* the recv is submitted */
	assert_int_equal(r.ret, 1);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_join(t), 0);
	/* errors: corio_sqe.3 EBADF */
	assert_int_equal(r.ret, -EBADF);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_await_fd_closed_by_another_task(void **state)
{
	(void)state;
	RUN(await_closed_main, NULL);
}

static void tmp_path(char *buf, size_t len, const char *what)
{
	snprintf(buf, len, "/tmp/corio-test-io-%s-%ld", what, (long)getpid());
}

static int file_main(void *arg)
{
	char path[128], buf[32];
	struct statx stx;
	int fd;

	(void)arg;
	tmp_path(path, sizeof(path), "file");
	unlink(path);
	fd = corio_openat(AT_FDCWD, path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_true(fd_cloexec(fd));
	assert_int_equal(corio_write(fd, "hello world", 11, 0), 11);
	assert_int_equal(corio_fsync(fd, 0), 0);
	assert_int_equal(corio_fsync(fd, IORING_FSYNC_DATASYNC), 0);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(corio_read(fd, buf, 5, 6), 5);
	assert_string_equal(buf, "world");
	assert_int_equal(corio_read(fd, buf, sizeof(buf), 11), 0); /* EOF */
	memset(&stx, 0, sizeof(stx));
	assert_int_equal(corio_statx(AT_FDCWD, path, 0, STATX_SIZE, &stx), 0);
	assert_true(stx.stx_mask & STATX_SIZE);
	assert_int_equal(stx.stx_size, 11);
	assert_int_equal(corio_close(fd), 0);
	assert_false(fd_is_open(fd));

	/* O_CLOEXEC is added even when the caller did not ask. */
	fd = corio_openat(AT_FDCWD, path, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_true(fd_cloexec(fd));
	assert_int_equal(corio_close(fd), 0);
	assert_int_equal(corio_openat(AT_FDCWD, "/nonexistent/corio", O_RDONLY,
				      0), -ENOENT);
	assert_int_equal(unlink(path), 0);
	assert_loop_clean();
	return 0;
}

static void test_file_round_trip(void **state)
{
	(void)state;
	RUN(file_main, NULL);
}

static int vec_main(void *arg)
{
	char path[128], a[4] = { 0 }, b[8] = { 0 };
	struct iovec out[3] = {
		{ "one", 3 }, { "two", 3 }, { "three", 5 },
	};
	struct iovec in[2] = { { a, 4 }, { b, 7 } };
	int fd;

	(void)arg;
	tmp_path(path, sizeof(path), "vec");
	fd = corio_openat(AT_FDCWD, path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(corio_writev(fd, out, 3, 0), 11);
	assert_int_equal(corio_readv(fd, in, 2, 0), 11);
	assert_memory_equal(a, "onet", 4);
	assert_memory_equal(b, "wothree", 7);
	/* errors: corio_read.3 EINVAL */
	assert_int_equal(corio_readv(fd, in, -1, 0), -EINVAL);
	assert_int_equal(corio_writev(fd, out, -1, 0), -EINVAL);
	assert_int_equal(corio_close(fd), 0);
	assert_int_equal(unlink(path), 0);
	assert_loop_clean();
	return 0;
}

static void test_readv_writev(void **state)
{
	(void)state;
	RUN(vec_main, NULL);
}

static int sock_main(void *arg)
{
	char buf[32], b1[3], b2[16];
	struct iovec out[2] = { { "head", 4 }, { "-tail", 5 } };
	struct iovec in[2] = { { b1, sizeof(b1) }, { b2, sizeof(b2) } };
	struct msghdr msg;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	assert_int_equal(corio_send(sv[0], "ping", 4, 0), 4);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(corio_recv(sv[1], buf, sizeof(buf), 0), 4);
	assert_string_equal(buf, "ping");
	/* Nothing there and MSG_DONTWAIT: -EAGAIN passes through. */
	assert_int_equal(corio_recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT),
			 -EAGAIN);

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = out;
	msg.msg_iovlen = 2;
	assert_int_equal(corio_sendmsg(sv[1], &msg, 0), 9);
	memset(&msg, 0, sizeof(msg));
	memset(b2, 0, sizeof(b2));
	msg.msg_iov = in;
	msg.msg_iovlen = 2;
	assert_int_equal(corio_recvmsg(sv[0], &msg, 0), 9);
	assert_memory_equal(b1, "hea", 3);
	assert_string_equal(b2, "d-tail");
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_send_recv_sendmsg_recvmsg(void **state)
{
	(void)state;
	RUN(sock_main, NULL);
}

struct acceptor {
	int lfd;
	int fd;
	struct sockaddr_in peer;
	socklen_t peer_len;
};

static int accept_one(void *arg)
{
	struct acceptor *a = arg;
	char buf[8] = { 0 };

	a->peer_len = sizeof(a->peer);
	a->fd = corio_accept(a->lfd, (struct sockaddr *)&a->peer,
			     &a->peer_len, 0);
	if (a->fd < 0)
		return a->fd;
	assert_int_equal(recv_all(a->fd, buf, 5), 5);
	assert_string_equal(buf, "hello");
	assert_int_equal(send_all(a->fd, "world", 5), 5);
	return 0;
}

static int tcp_main(void *arg)
{
	struct acceptor a = { .fd = -1 };
	struct sockaddr_in addr;
	corio_task *t;
	char buf[8] = { 0 };
	int fd;

	(void)arg;
	a.lfd = listener(&addr);
	t = corio_spawn(accept_one, &a);
	assert_non_null(t);
	assert_int_equal(corio_yield(), 0);	/* t waits in accept */

	fd = corio_socket(AF_INET, SOCK_STREAM, 0, 0);
	assert_true(fd >= 0);
	assert_true(fd_cloexec(fd));
	assert_int_equal(corio_connect(fd, (struct sockaddr *)&addr,
				       sizeof(addr)), 0);
	assert_int_equal(send_all(fd, "hello", 5), 5);
	assert_int_equal(recv_all(fd, buf, 5), 5);
	assert_string_equal(buf, "world");
	assert_int_equal(corio_join(t), 0);

	assert_true(a.fd >= 0);
	assert_true(fd_cloexec(a.fd));
	assert_int_equal(a.peer_len, sizeof(struct sockaddr_in));
	assert_int_equal(a.peer.sin_family, AF_INET);
	assert_int_equal(ntohl(a.peer.sin_addr.s_addr), INADDR_LOOPBACK);

	/* shutdown(SHUT_WR): the peer reads end of file. */
	assert_int_equal(corio_shutdown(fd, SHUT_WR), 0);
	assert_int_equal(corio_recv(a.fd, buf, sizeof(buf), 0), 0);
	assert_int_equal(corio_send(a.fd, "x", 1, 0), 1);
	assert_int_equal(corio_recv(fd, buf, sizeof(buf), 0), 1);

	/* Connecting where nobody listens. */
	assert_int_equal(corio_close(a.lfd), 0);
	assert_int_equal(corio_close(a.fd), 0);
	assert_int_equal(corio_close(fd), 0);
	fd = corio_socket(AF_INET, SOCK_STREAM, 0, 0);
	assert_true(fd >= 0);
	assert_int_equal(corio_connect(fd, (struct sockaddr *)&addr,
				       sizeof(addr)), -ECONNREFUSED);
	assert_int_equal(corio_close(fd), 0);
	assert_loop_clean();
	return 0;
}

static void test_socket_connect_accept_shutdown(void **state)
{
	(void)state;
	RUN(tcp_main, NULL);
}

struct poller {
	int fd;
	int parked;
	int revents;
};

static int poll_in(void *arg)
{
	struct poller *p = arg;

	p->parked = 1;
	p->revents = corio_poll(p->fd, POLLIN);
	return 0;
}

static int poll_main(void *arg)
{
	struct poller p = { .revents = -1 };
	corio_task *t;
	char c;
	int sv[2];

	(void)arg;
	socketpair_or_fail(sv);
	/* Writable at once. */
	assert_true(corio_poll(sv[0], POLLOUT) & POLLOUT);
	/* Readable once the peer writes. */
	p.fd = sv[0];
	t = corio_spawn(poll_in, &p);
	assert_non_null(t);
	yield_until(&p.parked);
	assert_int_equal(corio_nop(), 0);
	assert_int_equal(p.revents, -1);	/* still waiting */
	assert_int_equal(corio_send(sv[1], "z", 1, 0), 1);
	assert_int_equal(corio_join(t), 0);
	assert_true(p.revents > 0);
	assert_true(p.revents & POLLIN);
	assert_int_equal(corio_recv(sv[0], &c, 1, 0), 1);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_poll_readable(void **state)
{
	(void)state;
	RUN(poll_main, NULL);
}

static int splice_main(void *arg)
{
	char path[128], buf[32] = { 0 };
	int p[2], sv[2], fd;

	(void)arg;
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	socketpair_or_fail(sv);

	/* pipe -> socket */
	assert_int_equal(write(p[1], "spliced", 7), 7);
	assert_int_equal(corio_splice(p[0], -1, sv[1], -1, 7, 0), 7);
	assert_int_equal(corio_recv(sv[0], buf, sizeof(buf), 0), 7);
	assert_string_equal(buf, "spliced");

	/* file -> pipe -> file, with offsets on the file side */
	tmp_path(path, sizeof(path), "splice");
	fd = corio_openat(AT_FDCWD, path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(corio_write(fd, "0123456789", 10, 0), 10);
	assert_int_equal(corio_splice(fd, 2, p[1], -1, 5, 0), 5);
	assert_int_equal(corio_splice(p[0], -1, fd, 10, 5, 0), 5);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(corio_read(fd, buf, sizeof(buf), 0), 15);
	assert_string_equal(buf, "012345678923456");
	assert_int_equal(corio_close(fd), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(corio_close(p[0]), 0);
	assert_int_equal(corio_close(p[1]), 0);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_splice(void **state)
{
	(void)state;
	RUN(splice_main, NULL);
}

/*
 * Every op on a closed fd: -EBADF, from the kernel's fd lookup, which
 * comes before any check of the file's type.  So corio_shutdown gives
 * -EBADF too; -ENOTSOCK is for an open fd that is not a socket.
 */
static int badfd_main(void *arg)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	char buf[8] = { 0 };
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct statx stx;
	int fd, p[2];

	(void)arg;
	fd = dup(0);
	assert_true(fd >= 0);
	close(fd);	/* the loop opens no fd: fd stays closed */
	assert_false(fd_is_open(fd));
	assert_int_equal(corio_read(fd, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(corio_write(fd, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(corio_readv(fd, &iov, 1, 0), -EBADF);
	assert_int_equal(corio_writev(fd, &iov, 1, 0), -EBADF);
	assert_int_equal(corio_recv(fd, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(corio_send(fd, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(corio_recvmsg(fd, &msg, 0), -EBADF);
	assert_int_equal(corio_sendmsg(fd, &msg, 0), -EBADF);
	assert_int_equal(corio_fsync(fd, 0), -EBADF);
	assert_int_equal(corio_poll(fd, POLLIN), -EBADF);
	assert_int_equal(corio_shutdown(fd, SHUT_RDWR), -EBADF);
	assert_int_equal(corio_accept(fd, (struct sockaddr *)&addr, &alen, 0),
			 -EBADF);
	assert_int_equal(corio_connect(fd, (struct sockaddr *)&addr,
				       sizeof(addr)), -EBADF);
	assert_int_equal(corio_splice(fd, -1, fd, -1, 1, 0), -EBADF);
	assert_int_equal(corio_statx(fd, "relative", 0, STATX_SIZE, &stx),
			 -EBADF);
	assert_int_equal(corio_openat(fd, "relative", O_RDONLY, 0), -EBADF);
	/* errors: corio_close.3 EBADF */
	assert_int_equal(corio_close(fd), -EBADF);
	assert_false(fd_is_open(fd));

	/* An open fd that is not a socket. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(corio_shutdown(p[0], SHUT_RDWR), -ENOTSOCK);
	assert_int_equal(corio_close(p[0]), 0);
	assert_int_equal(corio_close(p[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_ops_on_closed_fd(void **state)
{
	(void)state;
	RUN(badfd_main, NULL);
}

struct resetter {
	int lfd;
	int got;	/* bytes received before the reset */
};

/* Accepts, reads a little of what the peer sends, then resets. */
static int reset_peer(void *arg)
{
	struct resetter *r = arg;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char buf[1024];
	int fd;

	fd = corio_accept(r->lfd, NULL, NULL, 0);
	assert_true(fd >= 0);
	r->got = (int)corio_recv(fd, buf, sizeof(buf), 0);
	assert_true(r->got > 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	/* A reset: data left unread, and linger 0. */
	assert_int_equal(corio_close(fd), 0);
	return 0;
}

static int sigpipe_main(void *arg)
{
	static char chunk[64 * 1024];
	struct resetter r = { .got = 0 };
	struct sockaddr_in addr;
	struct sigaction sa;
	corio_task *t;
	ssize_t n;
	long sends = 0;
	int fd, p[2];

	(void)arg;
	/* corio_run turned the default disposition into SIG_IGN. */
	assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
	assert_true(sa.sa_handler == SIG_IGN);

	/* A pipe with no reader: -EPIPE, not death. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(corio_close(p[0]), 0);
	assert_int_equal(corio_write(p[1], "x", 1, 0), -EPIPE);
	assert_int_equal(corio_close(p[1]), 0);

	/* A socket whose peer closed: -EPIPE. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p),
			 0);
	assert_int_equal(corio_close(p[1]), 0);
	assert_int_equal(corio_send(p[0], "x", 1, 0), -EPIPE);
	assert_int_equal(corio_close(p[0]), 0);

	/* A TCP peer that resets while we send. */
	r.lfd = listener(&addr);
	t = corio_spawn(reset_peer, &r);
	assert_non_null(t);
	fd = corio_socket(AF_INET, SOCK_STREAM, 0, 0);
	assert_true(fd >= 0);
	assert_int_equal(corio_connect(fd, (struct sockaddr *)&addr,
				       sizeof(addr)), 0);
	memset(chunk, 'r', sizeof(chunk));
	while ((n = corio_send(fd, chunk, sizeof(chunk), 0)) > 0)
		assert_true(++sends < 100000);
	assert_true(n == -ECONNRESET || n == -EPIPE);
	assert_int_equal(corio_join(t), 0);
	assert_true(r.got > 0);
	n = corio_send(fd, chunk, 1, 0);
	assert_true(n == -EPIPE || n == -ECONNRESET);
	assert_int_equal(corio_close(fd), 0);
	assert_int_equal(corio_close(r.lfd), 0);
	assert_loop_clean();
	return 0;
}

static volatile sig_atomic_t sigpipes;

static void sigpipe_count(int sig)
{
	(void)sig;
	sigpipes++;
}

/*
 * The program's own SIGPIPE handler stays; corio's sends add MSG_NOSIGNAL,
 * so a send to a closed peer raises no SIGPIPE at all.
 */
static int sigpipe_kept_main(void *arg)
{
	struct iovec iov = { "x", 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct sigaction sa;
	int sv[2];

	(void)arg;
	assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
	assert_true(sa.sa_handler == sigpipe_count);
	socketpair_or_fail(sv);
	assert_int_equal(corio_close(sv[1]), 0);
	sigpipes = 0;
	assert_int_equal(corio_send(sv[0], "x", 1, 0), -EPIPE);
	assert_int_equal(corio_sendmsg(sv[0], &msg, 0), -EPIPE);
	assert_int_equal(sigpipes, 0);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_loop_clean();
	return 0;
}

/*
 * SIGPIPE at its default becomes SIG_IGN, so a write to a peer that is
 * gone returns -EPIPE or -ECONNRESET and the process lives; a disposition
 * the program chose is left alone.
 */
static void test_peer_reset_and_sigpipe(void **state)
{
	struct sigaction sa, old;

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
	RUN(sigpipe_main, NULL);
	assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
	assert_true(sa.sa_handler == SIG_IGN);	/* never restored */

	sa.sa_handler = sigpipe_count;
	assert_int_equal(sigaction(SIGPIPE, &sa, NULL), 0);
	RUN(sigpipe_kept_main, NULL);
	assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

#define PAIRS 2000
#define ROUNDS 20

static int pingpong_done;

static int pinger(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint32_t i, v;

	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(send_all(fd, &i, sizeof(i)), sizeof(i));
		assert_int_equal(recv_all(fd, &v, sizeof(v)), sizeof(v));
		assert_int_equal(v, i + 1);
	}
	pingpong_done++;
	return 0;
}

static int ponger(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint32_t i, v;

	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(recv_all(fd, &v, sizeof(v)), sizeof(v));
		assert_int_equal(v, i);
		v++;
		assert_int_equal(send_all(fd, &v, sizeof(v)), sizeof(v));
	}
	/* The pinger sends no more: end of file once it closes. */
	return 0;
}

static int pingpong_main(void *arg)
{
	static corio_task *t[2 * PAIRS];
	static int sv[PAIRS][2];
	int i;

	(void)arg;
	pingpong_done = 0;
	for (i = 0; i < PAIRS; i++) {
		socketpair_or_fail(sv[i]);
		t[2 * i] = corio_spawn(pinger, (void *)(intptr_t)sv[i][0]);
		t[2 * i + 1] = corio_spawn(ponger, (void *)(intptr_t)sv[i][1]);
		assert_non_null(t[2 * i]);
		assert_non_null(t[2 * i + 1]);
	}
	for (i = 0; i < 2 * PAIRS; i++)
		assert_int_equal(corio_join(t[i]), 0);
	assert_int_equal(pingpong_done, PAIRS);
	for (i = 0; i < PAIRS; i++) {
		assert_int_equal(corio_close(sv[i][0]), 0);
		assert_int_equal(corio_close(sv[i][1]), 0);
	}
	assert_loop_clean();
	return 0;
}

/* 4000 tasks ping-pong over 2000 socketpairs. */
static void test_4000_tasks_ping_pong(void **state)
{
	int before;

	(void)state;
	if (!nofile_at_least(2 * PAIRS + 64))
		skip();
	before = fd_count();
	RUN(pingpong_main, NULL);
	assert_int_equal(fd_count(), before);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_nop_through_sqe_and_await),
		CORIO_TEST(test_await_refuses_multishot_and_skip),
		CORIO_TEST(test_sqe_outside_task),
		CORIO_TEST(test_await_fd_closed_by_another_task),
		CORIO_TEST(test_file_round_trip),
		CORIO_TEST(test_readv_writev),
		CORIO_TEST(test_send_recv_sendmsg_recvmsg),
		CORIO_TEST(test_socket_connect_accept_shutdown),
		CORIO_TEST(test_poll_readable),
		CORIO_TEST(test_splice),
		CORIO_TEST(test_ops_on_closed_fd),
		CORIO_TEST(test_peer_reset_and_sigpipe),
		CORIO_TEST(test_4000_tasks_ping_pong),
	};

	return RUN_GROUP(tests);
}
