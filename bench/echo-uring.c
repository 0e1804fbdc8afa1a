/*
 * echo-uring - the echo benchmark's baseline: a hand-written liburing
 * callback server, what corio's echo-server would be without tasks.
 *
 *	echo-uring [-h HOST] -p PORT		(default host 127.0.0.1)
 *
 * One ring, set up as corio's loop sets up its own (SQ 1024, CQ 16384,
 * SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, TASKRUN_FLAG, SUBMIT_ALL, the
 * ring fd registered).  A multishot accept feeds connections; each one has
 * a 16 KiB buffer (as echo-server's tasks have) and exactly one op in
 * flight: a recv, then a send of what it brought (again for a short send),
 * then the next recv.  The SQEs that one batch of CQEs produces go out in
 * the next io_uring_submit_and_wait.  "listening" goes to stderr when ready;
 * SIGTERM or SIGINT (a signalfd polled in the ring) ends it with status 0.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <liburing.h>

#define BUF_SIZE	(16 * 1024)

/* user_data: a struct conn pointer with the op in its low bit, or a tag. */
#define OP_RECV		0ull
#define OP_SEND		1ull
#define UD_ACCEPT	2ull
#define UD_STOP		6ull

struct conn {
	int fd;
	unsigned int len;	/* bytes the last recv brought */
	unsigned int off;	/* bytes of them sent back so far */
	char buf[BUF_SIZE];
};

static struct io_uring ring;

/* An SQE; when the SQ ring is full, what is queued goes out first. */
static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	while (!sqe) {
		io_uring_submit(&ring);
		sqe = io_uring_get_sqe(&ring);
	}
	return sqe;
}

static void queue_accept(int lfd)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, UD_ACCEPT);
}

static void queue_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_recv(sqe, c->fd, c->buf, BUF_SIZE, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
}

static void queue_send(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_send(sqe, c->fd, c->buf + c->off, c->len - c->off,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

static void on_accept(int lfd, const struct io_uring_cqe *cqe)
{
	struct conn *c;
	int one = 1;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		queue_accept(lfd);	/* the multishot ended: rearm it */
	if (cqe->res < 0) {
		if (cqe->res != -ECONNABORTED && cqe->res != -EINTR)
			fprintf(stderr, "echo-uring: accept: %s\n",
				strerror(-cqe->res));
		return;
	}
	setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = malloc(sizeof(*c));
	if (!c) {
		close(cqe->res);	/* out of memory: shed it */
		return;
	}
	c->fd = cqe->res;
	queue_recv(c);
}

static void on_recv(struct conn *c, int res)
{
	if (res <= 0) {		/* EOF or error: the client is gone */
		conn_close(c);
		return;
	}
	c->len = (unsigned int)res;
	c->off = 0;
	queue_send(c);
}

static void on_send(struct conn *c, int res)
{
	if (res < 0) {
		conn_close(c);
		return;
	}
	c->off += (unsigned int)res;
	if (c->off < c->len)
		queue_send(c);
	else
		queue_recv(c);
}

static int listen_on(const char *host, int port)
{
	struct addrinfo hints, *ai;
	char serv[16];
	int fd, one = 1, ret;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(serv, sizeof(serv), "%d", port);
	ret = getaddrinfo(host, serv, &hints, &ai);
	if (ret) {
		fprintf(stderr, "echo-uring: %s: %s\n", host, gai_strerror(ret));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "echo-uring: listen on %s:%d: %s\n", host,
			port, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* SIGTERM and SIGINT, blocked, as a signalfd to poll. */
static int stop_fd(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int ring_init(void)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	ret = io_uring_queue_init_params(1024, &ring, &p);
	if (ret < 0)
		return ret;
	/* liburing enters through the registered index from now on. */
	io_uring_register_ring_fd(&ring);
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = -1, lfd, sfd, c, ret;
	struct io_uring_sqe *sqe;
	bool stop = false;

	while ((c = getopt(argc, argv, "h:p:")) != -1) {
		switch (c) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (port < 0 || optind != argc)
		goto usage;
	sfd = stop_fd();
	lfd = listen_on(host, port);
	if (sfd < 0 || lfd < 0)
		return 1;
	ret = ring_init();
	if (ret < 0) {
		fprintf(stderr, "echo-uring: io_uring_queue_init: %s\n",
			strerror(-ret));
		return 1;
	}
	queue_accept(lfd);
	sqe = get_sqe();
	io_uring_prep_poll_add(sqe, sfd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD_STOP);
	fprintf(stderr, "echo-uring: listening on %s:%d\n", host, port);

	while (!stop) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;

		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY) {
			fprintf(stderr, "echo-uring: io_uring_enter: %s\n",
				strerror(-ret));
			return 1;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			uint64_t ud = cqe->user_data;

			n++;
			if (ud == UD_ACCEPT)
				on_accept(lfd, cqe);
			else if (ud == UD_STOP)
				stop = true;
			else if ((ud & 1) == OP_SEND)
				on_send((struct conn *)(uintptr_t)(ud - OP_SEND),
					cqe->res);
			else
				on_recv((struct conn *)(uintptr_t)ud, cqe->res);
		}
		io_uring_cq_advance(&ring, n);
	}
	/* Exiting closes the connections and the ring. */
	return 0;
usage:
	fprintf(stderr, "usage: %s [-h HOST] -p PORT\n", argv[0]);
	return 2;
}
