/*
 * echo-server - one task per connection, receive then send until EOF.
 *
 *	echo-server [-c] [-h HOST] [-p PORT]	(default: every address, 7000)
 *
 * Each connection reads through a receiver: one multishot recv into the
 * loop's provided buffer ring, so an idle connection holds no buffer.
 * -c takes the classic path instead, for comparison: a corio_recv into a
 * 16 KiB buffer on the task's stack (also the path on kernels without
 * buffer rings).
 *
 * SIGTERM or SIGINT makes main return: corio_run then cancels the accept
 * task and every connection task, each closes its socket on the way out,
 * and the process exits 0.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <corio.h>

#define BUF_SIZE	(16 * 1024)

/* The ring all connections receive into: 32 MiB, touched as used. */
#define RING_BUFS	2048
#define RING_BUF_SIZE	16384

struct options {
	const char *host;
	int port;
	int classic;
};

static corio_bufring *ring;	/* NULL: the classic path */

static int serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[BUF_SIZE];
	ssize_t n = 0;

	for (;;) {
		ssize_t off = 0;

		n = corio_recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		while (off < n) {
			ssize_t w = corio_send(fd, buf + off, (size_t)(n - off),
					       0);

			if (w < 0)
				goto out;
			off += w;
		}
	}
out:
	corio_close(fd);
	return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = corio_send(fd, p, n, 0);

		if (w < 0)
			return (int)w;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The same through a receiver: the bytes are sent from the ring. */
static int serve_ring(void *arg)
{
	int fd = (int)(intptr_t)arg;
	corio_receiver *r;
	const void *p;
	ssize_t n;

	if (corio_receiver_new(fd, ring, &r) < 0) {
		corio_close(fd);
		return 0;
	}
	while ((n = corio_receiver_next(r, &p)) > 0) {
		if (send_all(fd, p, (size_t)n) < 0)
			break;
		corio_receiver_release(r);	/* before the next wait */
	}
	corio_receiver_free(r);
	corio_close(fd);
	return 0;
}

/* Takes connections off the listener's multishot accept. */
static int accept_loop(void *arg)
{
	corio_acceptor *acc = arg;

	for (;;) {
		int one = 1;
		int fd = corio_acceptor_accept(acc);
		corio_task *t;

		if (fd < 0)
			return fd == -ECANCELED || fd == -EBADF ? 0 : fd;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t = corio_spawn(ring ? serve_ring : serve,
				(void *)(intptr_t)fd);
		if (!t) {
			corio_close(fd);	/* out of memory: shed it */
			continue;
		}
		corio_detach(t);
	}
}

static void print_address(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		fprintf(stderr, "echo-server: listening on %s:%d\n", host,
			port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		fprintf(stderr, "echo-server: listening on [%s]:%d\n", host,
			port);
	}
}

static int server(void *arg)
{
	struct options *o = arg;
	sigset_t set;
	corio_acceptor *acc;
	corio_task *acceptor;
	int lfd, sig;

	lfd = corio_listen(o->host, o->port, 4096, 0);
	if (lfd < 0) {
		fprintf(stderr, "echo-server: listen: %s\n", strerror(-lfd));
		return 1;
	}
	print_address(lfd);
	/* Without buffer rings (Linux before 5.19): the classic path. */
	if (!o->classic && corio_bufring_new(RING_BUFS, RING_BUF_SIZE,
					     &ring) < 0)
		ring = NULL;
	if (corio_acceptor_new(lfd, &acc) < 0) {
		corio_close(lfd);
		return 1;
	}
	acceptor = corio_spawn(accept_loop, acc);
	if (!acceptor) {
		corio_acceptor_free(acc);
		corio_close(lfd);
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sig = corio_signal_wait(&set);
	if (sig > 0)
		fprintf(stderr, "echo-server: %s, shutting down\n",
			strsignal(sig));
	/* Stop accepting; returning cancels and reaps the connections. */
	corio_close(lfd);
	corio_join(acceptor);
	corio_acceptor_free(acc);
	/* The connections' receivers go as main returns: so does the ring,
	 * with the loop. */
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = NULL, .port = 7000, .classic = 0 };
	sigset_t set;
	int c, ret;

	while ((c = getopt(argc, argv, "ch:p:")) != -1) {
		switch (c) {
		case 'c':
			o.classic = 1;
			break;
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-c] [-h HOST] [-p PORT]\n",
				argv[0]);
			return 2;
		}
	}
	/* Blocked before any thread exists, so every thread inherits it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	ret = corio_run(server, &o);
	if (ret < 0) {
		fprintf(stderr, "echo-server: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
}
