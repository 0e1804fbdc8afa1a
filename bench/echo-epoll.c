/*
 * echo-epoll - the echo benchmark's readiness baseline: a plain epoll
 * server, the way event loops such as redis's ae or libuv work.
 *
 *	echo-epoll [-h HOST] -p PORT		(default host 127.0.0.1)
 *
 * Non-blocking sockets, level-triggered.  A readable connection gets one
 * read into its 16 KiB buffer (as echo-server's tasks have) and the bytes go
 * straight back with write; only when the socket's send buffer is full does
 * the connection switch to waiting for EPOLLOUT, and it reads no more until
 * the rest is out.  The listening socket is drained with accept4 on each
 * event.  "listening" goes to stderr when ready; SIGTERM or SIGINT (a
 * signalfd in the epoll set) ends it with status 0.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE	(16 * 1024)
#define MAX_EVENTS	1024

struct conn {
	int fd;
	bool want_out;		/* waiting for EPOLLOUT, not EPOLLIN */
	unsigned int len;	/* bytes the last read brought */
	unsigned int off;	/* bytes of them written back so far */
	char buf[BUF_SIZE];
};

static int ep;
/* Their addresses tag the listening socket's and the signalfd's events. */
static int listener_tag, stop_tag;

static void conn_close(struct conn *c)
{
	close(c->fd);		/* also takes it out of the epoll set */
	free(c);
}

static int watch(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is left of the buffer; false when c was closed. */
static bool flush(struct conn *c)
{
	while (c->off < c->len) {
		ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) {
				conn_close(c);
				return false;
			}
			if (!c->want_out) {
				c->want_out = true;
				if (watch(c, EPOLLOUT) < 0) {
					conn_close(c);
					return false;
				}
			}
			return true;
		}
		c->off += (unsigned int)n;
	}
	if (c->want_out) {
		c->want_out = false;
		if (watch(c, EPOLLIN) < 0) {
			conn_close(c);
			return false;
		}
	}
	return true;
}

static void on_conn(struct conn *c, uint32_t events)
{
	ssize_t n;

	if (c->want_out) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			flush(c);
		return;
	}
	n = read(c->fd, c->buf, BUF_SIZE);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);	/* EOF or error: the client is gone */
		return;
	}
	c->len = (unsigned int)n;
	c->off = 0;
	flush(c);
}

static void on_listener(int lfd)
{
	for (;;) {
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;
		int one = 1;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				fprintf(stderr, "echo-epoll: accept: %s\n",
					strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);	/* out of memory: shed it */
			continue;
		}
		c->fd = fd;
		c->want_out = false;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			conn_close(c);
	}
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
		fprintf(stderr, "echo-epoll: %s: %s\n", host, gai_strerror(ret));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "echo-epoll: listen on %s:%d: %s\n", host,
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

int main(int argc, char **argv)
{
	static struct epoll_event events[MAX_EVENTS];
	struct epoll_event ev = { .events = EPOLLIN };
	const char *host = "127.0.0.1";
	int port = -1, lfd, sfd, c;
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
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || lfd < 0 || ep < 0)
		return 1;
	ev.data.ptr = &listener_tag;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.ptr = &stop_tag;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	fprintf(stderr, "echo-epoll: listening on %s:%d\n", host, port);

	while (!stop) {
		int i, n = epoll_wait(ep, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("echo-epoll: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			void *p = events[i].data.ptr;

			if (p == &listener_tag)
				on_listener(lfd);
			else if (p == &stop_tag)
				stop = true;
			else
				on_conn(p, events[i].events);
		}
	}
	/* Exiting closes the connections. */
	return 0;
usage:
	fprintf(stderr, "usage: %s [-h HOST] -p PORT\n", argv[0]);
	return 2;
}
