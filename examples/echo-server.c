/*
 * echo-server - one task per connection, recv then send until EOF.
 *
 *	echo-server [-h HOST] [-p PORT]		(default: every address, 7000)
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

struct options {
	const char *host;
	int port;
};

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
		t = corio_spawn(serve, (void *)(intptr_t)fd);
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
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = NULL, .port = 7000 };
	sigset_t set;
	int c, ret;

	while ((c = getopt(argc, argv, "h:p:")) != -1) {
		switch (c) {
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-h HOST] [-p PORT]\n",
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
