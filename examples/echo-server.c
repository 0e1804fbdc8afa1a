/*
 * echo-server - one task per connection, receive then send until EOF.
 *
 *	echo-server [-c] [-h HOST] [-p PORT] [-t LOOPS] [--tls CERT KEY]
 *			(default: every address, port 7000, one loop)
 *
 * --tls CERT KEY serves TLS: each connection's task runs corio_tls_accept
 * with one SSL_CTX loaded from the PEM files (shared by the loops:
 * OpenSSL's contexts are thread-safe once set up), then echoes through the
 * TLS stream, and closes it with close_notify.
 *
 * Each connection reads through a receiver: one multishot recv into the
 * loop's provided buffer ring, so an idle connection holds no buffer.
 * -c takes the classic path instead, for comparison: a corio_recv into a
 * 16 KiB buffer on the task's stack (also the path on kernels without
 * buffer rings).
 *
 * -t N serves the port from N loops on N threads (corio_run_loops; 0: one
 * per CPU).  Loop 0's main sets up every loop with a corio_call (a plain
 * call for itself), so that it learns each one's result: loop i opens its
 * own listener on the port (corio_listen with CORIO_REUSEPORT: the kernel
 * spreads connections over the listeners, each with its own accept
 * queue), its own buffer ring (a ring belongs to the loop that made it)
 * and its own acceptor task, and serves the connections it accepts.  Loop
 * 0 prints the listening line once all are up.  A port already taken, even
 * by another server with SO_REUSEPORT, is "in use" (probe_port).  -t 1
 * (the default) is corio_run on one listener without SO_REUSEPORT, as
 * before -t existed: the thread is not pinned.
 *
 * SIGTERM or SIGINT (blocked in every thread, so loop 0's signalfd gets
 * it) makes main stop every loop's accepting and return: corio_run (or
 * corio_run_loops, on every loop) then cancels every connection task,
 * each closes its socket on the way out, and the process exits 0.
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
#if __has_include(<openssl/ssl.h>)
#define HAVE_OPENSSL 1
#include <openssl/ssl.h>
#else
#define HAVE_OPENSSL 0	/* corio built without TLS: no --tls */
typedef struct ssl_ctx_st SSL_CTX;
#endif

#define BUF_SIZE	(16 * 1024)

/* The ring all connections receive into: 32 MiB, touched as used. */
#define RING_BUFS	2048
#define RING_BUF_SIZE	16384

struct options {
	const char *host;
	int port;
	int classic;
	unsigned int loops;	/* -t: 0 is one per CPU */
};

/* What each loop serves with, touched only by that loop once set up. */
struct loop_state {
	struct options *o;
	int lfd;
	corio_acceptor *acc;
	corio_task *acceptor;
	corio_bufring *ring;	/* NULL: the classic path */
};

static SSL_CTX *tls_ctx;	/* --tls: set up before any loop runs */

static struct loop_state *loops;	/* [corio_loop_count()] */
static unsigned int nr_loops;

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
	corio_bufring *ring = loops[corio_loop_index()].ring;
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

/* The same over TLS: a handshake, then the decrypted bytes echoed. */
static int serve_tls(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[BUF_SIZE];
	corio_stream *s;
	ssize_t n;

	if (corio_tls_accept(fd, tls_ctx, &s) < 0) {
		corio_close(fd);
		return 0;
	}
	while ((n = corio_stream_read(s, buf, sizeof(buf))) > 0)
		if (corio_stream_write(s, buf, (size_t)n) < 0 ||
		    corio_stream_flush(s) < 0)
			break;
	corio_stream_close(s);	/* close_notify, then the fd */
	return 0;
}

/* Takes connections off the listener's multishot accept. */
static int accept_loop(void *arg)
{
	struct loop_state *ls = arg;
	corio_acceptor *acc = ls->acc;
	corio_fn fn = tls_ctx ? serve_tls : ls->ring ? serve_ring : serve;

	for (;;) {
		int one = 1;
		int fd = corio_acceptor_accept(acc);
		corio_task *t;

		if (fd < 0)
			return fd == -ECANCELED || fd == -EBADF ? 0 : fd;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t = corio_spawn(fn, (void *)(intptr_t)fd);
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

/* Runs on loop i: its listener, its ring and its acceptor task. */
static int loop_start(void *arg)
{
	struct loop_state *ls = arg;
	struct options *o = ls->o;
	int flags = nr_loops > 1 ? CORIO_REUSEPORT : 0;

	ls->lfd = corio_listen(o->host, o->port, 4096, flags);
	if (ls->lfd < 0) {
		fprintf(stderr, "echo-server: listen: %s\n",
			strerror(-ls->lfd));
		return 1;
	}
	/* Without buffer rings (Linux before 5.19): the classic path. */
	if (!o->classic && corio_bufring_new(RING_BUFS, RING_BUF_SIZE,
					     &ls->ring) < 0)
		ls->ring = NULL;
	if (corio_acceptor_new(ls->lfd, &ls->acc) < 0)
		goto err_close;
	ls->acceptor = corio_spawn(accept_loop, ls);
	if (!ls->acceptor)
		goto err_free_acc;
	return 0;

err_free_acc:
	corio_acceptor_free(ls->acc);
	ls->acc = NULL;
err_close:
	corio_close(ls->lfd);
	ls->lfd = -1;
	return 1;
}

/* Runs on loop i: stop accepting; its connections go with the loops. */
static int loop_stop(void *arg)
{
	struct loop_state *ls = arg;

	if (!ls->acceptor)
		return 0;
	corio_close(ls->lfd);
	corio_join(ls->acceptor);
	corio_acceptor_free(ls->acc);
	ls->acceptor = NULL;
	return 0;
}

/* fn(arg) on loop i: a call to another loop, a plain call on this one. */
static int on_loop(unsigned int i, corio_fn fn, void *arg)
{
	return i == corio_loop_index() ? fn(arg) : corio_call(i, fn, arg);
}

static int local_port(int fd)
{
	struct sockaddr_in6 sa;
	socklen_t len = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -1;
	return ntohs(sa.sin6_port);	/* the same offset in sockaddr_in */
}

/*
 * With SO_REUSEPORT, a listener shares the port with any other that has
 * it, of the same user: two servers would split the clients between them.
 * A listener without it first fails on a port that is taken, as with one
 * loop, and then goes again.
 */
static int probe_port(struct options *o)
{
	int fd;

	if (corio_loop_count() == 1 || o->port == 0)
		return 0;
	fd = corio_listen(o->host, o->port, 1, 0);
	if (fd < 0) {
		fprintf(stderr, "echo-server: listen: %s\n", strerror(-fd));
		return fd;
	}
	return corio_close(fd);
}

static int server(void *arg)
{
	struct options *o = arg;
	sigset_t set;
	unsigned int i;
	int sig, ret;

	nr_loops = corio_loop_count();
	loops = calloc(nr_loops, sizeof(*loops));
	if (!loops || probe_port(o) < 0)
		return 1;
	for (i = 0; i < nr_loops; i++) {
		loops[i].o = o;
		loops[i].lfd = -1;
		ret = on_loop(i, loop_start, &loops[i]);
		if (ret != 0) {
			if (ret < 0)
				fprintf(stderr, "echo-server: loop %u: %s\n",
					i, strerror(-ret));
			while (i-- > 0)
				on_loop(i, loop_stop, &loops[i]);
			return 1;
		}
		/* -p 0: the other loops listen on the port loop 0 got. */
		if (i == 0 && o->port == 0)
			o->port = local_port(loops[0].lfd);
	}
	print_address(loops[0].lfd);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sig = corio_signal_wait(&set);
	if (sig > 0)
		fprintf(stderr, "echo-server: %s, shutting down\n",
			strsignal(sig));
	/* Stop accepting; returning cancels and reaps the connections. */
	for (i = 0; i < nr_loops; i++)
		on_loop(i, loop_stop, &loops[i]);
	/* The connections' receivers go as main returns; each ring goes
	 * from its loop as the loop ends, and main() frees what is left. */
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = NULL, .port = 7000, .classic = 0,
			     .loops = 1 };
	sigset_t set;
	unsigned int i;
	char *end;
	long n;
	int c, ret, k;

	/* --tls CERT KEY, taken out before getopt sees the rest. */
	for (k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--tls"))
			continue;
		if (k + 2 >= argc) {
			fprintf(stderr, "echo-server: --tls takes CERT KEY\n");
			return 2;
		}
#if HAVE_OPENSSL
		tls_ctx = SSL_CTX_new(TLS_server_method());
		if (!tls_ctx ||
		    SSL_CTX_use_certificate_chain_file(tls_ctx, argv[k + 1]) != 1 ||
		    SSL_CTX_use_PrivateKey_file(tls_ctx, argv[k + 2],
						SSL_FILETYPE_PEM) != 1) {
			fprintf(stderr, "echo-server: cannot load %s and %s\n",
				argv[k + 1], argv[k + 2]);
			return 1;
		}
#else
		fprintf(stderr, "echo-server: built without OpenSSL\n");
		return 1;
#endif
		memmove(&argv[k], &argv[k + 3],
			(size_t)(argc - k - 2) * sizeof(*argv));
		argc -= 3;
		break;
	}
	while ((c = getopt(argc, argv, "ch:p:t:")) != -1) {
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
		case 't':
			n = strtol(optarg, &end, 10);
			if (*optarg && !*end && n >= 0 && n <= 1024) {
				o.loops = (unsigned int)n;
				break;
			}
			fprintf(stderr, "echo-server: -t takes a number of "
				"loops from 0 (one per CPU) to 1024\n");
			return 2;
		default:
			fprintf(stderr, "usage: %s [-c] [-h HOST] [-p PORT] "
				"[-t LOOPS] [--tls CERT KEY]\n", argv[0]);
			return 2;
		}
	}
	/* Blocked before any thread exists, so every thread inherits it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* One loop: corio_run, unpinned, as before -t. */
	if (o.loops == 1)
		ret = corio_run(server, &o);
	else
		ret = corio_run_loops(o.loops, server, &o);
	for (i = 0; loops && i < nr_loops; i++)
		corio_bufring_free(loops[i].ring);
	free(loops);
#if HAVE_OPENSSL
	SSL_CTX_free(tls_ctx);
#endif
	if (ret < 0) {
		fprintf(stderr, "echo-server: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
}
