/*
 * echo-uring-mshot - the echo benchmark's data-path baseline: a hand-written
 * liburing server that receives with one multishot recv per connection into
 * a provided buffer ring and sends straight out of the ring's buffers.
 *
 *	echo-uring-mshot [-W] [-h HOST] -p PORT	(default host 127.0.0.1)
 *
 * The ring is set up as echo-uring's and corio's loop (SQ 1024, CQ 16384,
 * SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, TASKRUN_FLAG, SUBMIT_ALL, the
 * ring fd registered); a multishot accept feeds connections.  One buffer
 * ring of 2048 x 16 KiB, as examples/echo-server's, mapped MAP_NORESERVE
 * and touched as used.  It is registered with IOU_PBUF_RING_INC (reg.pad =
 * 2, not in liburing 2.3's headers) where the kernel takes it (Linux 6.12):
 * the kernel then fills a buffer a piece at a time, so a 64-byte message
 * uses 64 bytes of it, and a CQE with IORING_CQE_F_BUF_MORE says the
 * kernel keeps the buffer for the next piece.  Elsewhere, or with -W, each
 * receive takes a whole buffer.  No bundles (liburing 2.3 has no
 * IORING_RECVSEND_BUNDLE, and corio does not use them together with INC).
 *
 * Each connection keeps one multishot recv armed.  Its CQEs queue chunks
 * (pointers into the ring) on the connection; one send at a time goes out
 * straight from the oldest chunk (again for a short send), and when a
 * chunk is all sent its buffer loses a reference.  A buffer goes back to
 * the ring when no chunk and no longer the kernel uses it: it is added at
 * once and published with one io_uring_buf_ring_advance just before the
 * next submit, a batch per loop turn.  A multishot that ends with -ENOBUFS
 * (the ring ran dry) is re-armed at that point; one that the kernel ends
 * for another reason is re-armed at once.  The SQEs that one batch of CQEs
 * produces go out in the next io_uring_submit_and_wait.  "listening" goes
 * to stderr when ready; SIGTERM or SIGINT (a signalfd polled in the ring)
 * ends it with status 0.
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
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <liburing.h>

#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE	(1U << 4)
#endif
#define PBUF_RING_INC		2u	/* IOU_PBUF_RING_INC, reg.pad */

#define NR_BUFS		2048u
#define BUF_SIZE	16384u
#define BGID		0

/* user_data: a struct conn pointer with the op in its low bit, or a tag. */
#define OP_RECV		0ull
#define OP_SEND		1ull
#define UD_ACCEPT	2ull
#define UD_IGNORE	4ull	/* a cancel's own CQE */
#define UD_STOP		6ull

struct chunk {
	const char *data;
	unsigned int len;
	unsigned int bid;
};

struct conn {
	int fd;
	bool armed;		/* the multishot's last CQE is due */
	bool sending;		/* a send is in flight */
	bool closing;		/* EOF or an error: free when nothing is due */
	bool starved;		/* on the starved list, to re-arm */
	unsigned int sent;	/* bytes of the oldest chunk sent so far */
	unsigned int qhead, qlen, qcap;
	struct chunk *q;	/* received, not yet all sent */
	struct conn *next_starved;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static bool inc;		/* IOU_PBUF_RING_INC */
static unsigned int pending;	/* buffers added since the last advance */
static unsigned int off[NR_BUFS];	/* per buffer: next data (INC) */
static unsigned int refs[NR_BUFS];	/* chunks out, +1 while the kernel's */
static struct conn *starved;

static void buf_recycle(unsigned int bid)
{
	io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
			      (unsigned short)bid,
			      io_uring_buf_ring_mask(NR_BUFS), (int)pending);
	pending++;
	off[bid] = 0;
	refs[bid] = 1;
}

static void buf_put(unsigned int bid)
{
	if (--refs[bid] == 0)
		buf_recycle(bid);
}

static void queue_recv(struct conn *c);

/* Before each submit: publish the returned buffers, re-arm the starved. */
static void flush(void)
{
	struct conn *c;

	if (!pending)
		return;
	/* A store-release of the tail: the entries are seen before it. */
	io_uring_buf_ring_advance(br, (int)pending);
	pending = 0;
	while ((c = starved)) {
		starved = c->next_starved;
		c->starved = false;
		if (!c->closing)
			queue_recv(c);
	}
}

/* An SQE; when the SQ ring is full, what is queued goes out first. */
static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	while (!sqe) {
		flush();
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

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
	c->armed = true;
}

static void queue_send(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();
	const struct chunk *k = &c->q[c->qhead];

	io_uring_prep_send(sqe, c->fd, k->data + c->sent, k->len - c->sent,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
	c->sending = true;
}

/* Frees c once neither its multishot nor a send can post a CQE. */
static void conn_maybe_free(struct conn *c)
{
	if (!c->closing || c->armed || c->sending)
		return;
	while (c->qlen) {
		buf_put(c->q[c->qhead].bid);
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qlen--;
	}
	if (c->starved) {
		struct conn **pp;

		for (pp = &starved; *pp != c; pp = &(*pp)->next_starved)
			;
		*pp = c->next_starved;
	}
	close(c->fd);
	free(c->q);
	free(c);
}

/* An error: stop the multishot; c goes when its last CQE is in. */
static void conn_close(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->closing)
		return;
	c->closing = true;
	if (c->armed) {
		sqe = get_sqe();
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | OP_RECV,
				       0);
		io_uring_sqe_set_data64(sqe, UD_IGNORE);
	}
}

static bool chunk_push(struct conn *c, const char *data, unsigned int len,
		       unsigned int bid)
{
	struct chunk *k;

	if (c->qlen == c->qcap) {
		unsigned int cap = c->qcap ? c->qcap * 2 : 4, i;
		struct chunk *q = malloc(cap * sizeof(*q));

		if (!q)
			return false;
		for (i = 0; i < c->qlen; i++)
			q[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = q;
		c->qcap = cap;
		c->qhead = 0;
	}
	k = &c->q[(c->qhead + c->qlen++) % c->qcap];
	k->data = data;
	k->len = len;
	k->bid = bid;
	return true;
}

static void on_accept(int lfd, const struct io_uring_cqe *cqe)
{
	struct conn *c;
	int one = 1;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		queue_accept(lfd);	/* the multishot ended: rearm it */
	if (cqe->res < 0) {
		if (cqe->res != -ECONNABORTED && cqe->res != -EINTR)
			fprintf(stderr, "echo-uring-mshot: accept: %s\n",
				strerror(-cqe->res));
		return;
	}
	setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(cqe->res);	/* out of memory: shed it */
		return;
	}
	c->fd = cqe->res;
	queue_recv(c);
}

static void on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned int bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0) {
			const char *data = bufs + (size_t)bid * BUF_SIZE +
					   off[bid];

			off[bid] += (unsigned int)res;
			refs[bid]++;
			if (c->closing || !chunk_push(c, data,
						      (unsigned int)res, bid)) {
				buf_put(bid);
				conn_close(c);
			}
		}
		/* Whole buffers, or INC's last piece: the kernel is done. */
		if (!inc || !(cqe->flags & IORING_CQE_F_BUF_MORE))
			buf_put(bid);
	}
	if (res == -ENOBUFS && !c->armed && !c->closing) {
		/* The ring ran dry: re-armed once buffers come back. */
		c->starved = true;
		c->next_starved = starved;
		starved = c;
	} else if (res == 0 || (res < 0 && res != -ENOBUFS)) {
		conn_close(c);		/* EOF or error: the client is gone */
	} else if (!c->armed && !c->closing) {
		queue_recv(c);		/* the kernel ended it: rearm */
	}
	if (!c->sending && c->qlen && !c->closing)
		queue_send(c);
	conn_maybe_free(c);
}

static void on_send(struct conn *c, int res)
{
	struct chunk *k = &c->q[c->qhead];

	c->sending = false;
	if (res < 0) {
		conn_close(c);
	} else {
		c->sent += (unsigned int)res;
		if (c->sent == k->len) {
			buf_put(k->bid);
			c->qhead = (c->qhead + 1) % c->qcap;
			c->qlen--;
			c->sent = 0;
		}
		if (c->qlen && !c->closing)
			queue_send(c);
	}
	conn_maybe_free(c);
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
		fprintf(stderr, "echo-uring-mshot: %s: %s\n", host,
			gai_strerror(ret));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "echo-uring-mshot: listen on %s:%d: %s\n",
			host, port, strerror(errno));
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

/* The provided buffer ring, INC unless refused or not wanted. */
static int bufring_init(bool whole)
{
	struct io_uring_buf_reg reg;
	size_t ring_len = NR_BUFS * sizeof(struct io_uring_buf);
	unsigned int i;
	int ret = -EINVAL;

	br = mmap(NULL, ring_len, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bufs = mmap(NULL, (size_t)NR_BUFS * BUF_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (br == MAP_FAILED || bufs == MAP_FAILED)
		return -ENOMEM;
	io_uring_buf_ring_init(br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = NR_BUFS;
	reg.bgid = BGID;
	if (!whole) {
		reg.pad = PBUF_RING_INC;
		ret = io_uring_register_buf_ring(&ring, &reg, 0);
		inc = ret == 0;
	}
	if (ret == -EINVAL) {		/* before Linux 6.12: whole buffers */
		reg.pad = 0;
		ret = io_uring_register_buf_ring(&ring, &reg, 0);
	}
	if (ret < 0)
		return ret;
	for (i = 0; i < NR_BUFS; i++)
		buf_recycle(i);
	flush();
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = -1, lfd, sfd, c, ret;
	struct io_uring_sqe *sqe;
	bool stop = false, whole = false;

	while ((c = getopt(argc, argv, "Wh:p:")) != -1) {
		switch (c) {
		case 'W':
			whole = true;
			break;
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
		fprintf(stderr, "echo-uring-mshot: io_uring_queue_init: %s\n",
			strerror(-ret));
		return 1;
	}
	ret = bufring_init(whole);
	if (ret < 0) {
		fprintf(stderr, "echo-uring-mshot: buffer ring: %s\n",
			strerror(-ret));
		return 1;
	}
	queue_accept(lfd);
	sqe = get_sqe();
	io_uring_prep_poll_add(sqe, sfd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD_STOP);
	fprintf(stderr, "echo-uring-mshot: listening on %s:%d (%s)\n", host,
		port, inc ? "incremental buffers" : "whole buffers");

	while (!stop) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;

		flush();
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY) {
			fprintf(stderr, "echo-uring-mshot: io_uring_enter: %s\n",
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
			else if (ud == UD_IGNORE)
				continue;
			else if ((ud & 1) == OP_SEND)
				on_send((struct conn *)(uintptr_t)(ud - OP_SEND),
					cqe->res);
			else
				on_recv((struct conn *)(uintptr_t)ud, cqe);
		}
		io_uring_cq_advance(&ring, n);
	}
	/* Exiting closes the connections and the ring. */
	return 0;
usage:
	fprintf(stderr, "usage: %s [-W] [-h HOST] -p PORT\n", argv[0]);
	return 2;
}
