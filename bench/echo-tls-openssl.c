/*
 * echo-tls-openssl - the TLS echo benchmark's baseline: OpenSSL on its
 * socket BIOs, driven by epoll the way nginx's event module does it
 * (src/event/ngx_event_openssl.c: ngx_ssl_handshake, ngx_ssl_recv,
 * ngx_ssl_write), which is also the readiness loop of OpenSSL's own
 * s_server demo with epoll in place of select.
 *
 *	echo-tls-openssl [-h HOST] -p PORT --cert FILE --key FILE
 *						(default host 127.0.0.1)
 *
 * One thread, non-blocking sockets, level-triggered epoll.  Each accepted
 * socket gets an SSL with SSL_set_fd, so OpenSSL calls read and write on
 * the socket itself (no memory BIOs, no copies of ciphertext).  The
 * handshake is SSL_do_handshake, and it, SSL_read and SSL_write are called
 * again when the socket is ready in the direction that SSL_get_error's
 * SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE names: epoll watches EPOLLIN
 * or EPOLLOUT accordingly.  A readable connection gets one SSL_read into
 * its 16 KiB buffer (as echo-epoll's and echo-server's tasks have) and the
 * plaintext goes straight back with SSL_write; a write that cannot finish
 * is retried with the same arguments once the socket is writable, and the
 * connection reads nothing until then.
 *
 * The SSL_CTX is set up as nginx's ngx_ssl_create sets up its own, minus
 * what trades speed for memory: read-ahead on (one read takes all the
 * socket has, up to a record's buffer, instead of a header and then a
 * body), so after a record is echoed the loop calls SSL_read again while
 * SSL_has_pending says OpenSSL holds unread bytes that epoll cannot see;
 * no SSL_MODE_RELEASE_BUFFERS (nginx frees each idle connection's record
 * buffers, a malloc and a free per record here); compression off; TLS 1.2
 * and 1.3, OpenSSL's default ciphers and session tickets.  Certificate and
 * key come from --cert and --key (PEM).
 *
 * A close_notify from the client is answered with one (SSL_shutdown, best
 * effort) and the socket closed.  "listening" goes to stderr when ready;
 * SIGTERM or SIGINT (a signalfd in the epoll set) ends it with status 0.
 */
#include <errno.h>
#include <getopt.h>
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

#include "config.h"		/* CORIO_HAVE_TLS: configure found libssl */

#if CORIO_HAVE_TLS

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE	(16 * 1024)
#define MAX_EVENTS	1024

enum state {
	HANDSHAKE,		/* SSL_do_handshake until it returns 1 */
	READING,		/* SSL_read, then SSL_write of what it gave */
	WRITING,		/* an SSL_write to retry with len bytes */
};

struct conn {
	int fd;
	SSL *ssl;
	enum state state;
	uint32_t events;	/* what epoll watches for it */
	unsigned int len;	/* plaintext the last SSL_read brought */
	char buf[BUF_SIZE];
};

static int ep;
static SSL_CTX *ctx;
/* Their addresses tag the listening socket's and the signalfd's events. */
static int listener_tag, stop_tag;

static void conn_close(struct conn *c)
{
	SSL_free(c->ssl);
	close(c->fd);		/* also takes it out of the epoll set */
	free(c);
}

/* Watches c for events (EPOLLIN or EPOLLOUT); false when c was closed. */
static bool watch(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (c->events == events)
		return true;
	c->events = events;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		return true;
	conn_close(c);
	return false;
}

/*
 * After an SSL call on c returned ret <= 0: waits for the direction
 * OpenSSL asked for (true), or closes c (false): the peer's close_notify
 * is answered with ours, anything else (EOF, a reset, a protocol error)
 * just closes.
 */
static bool want(struct conn *c, int ret)
{
	switch (SSL_get_error(c->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		return watch(c, EPOLLIN);
	case SSL_ERROR_WANT_WRITE:
		return watch(c, EPOLLOUT);
	case SSL_ERROR_ZERO_RETURN:
		SSL_shutdown(c->ssl);
		break;
	default:
		break;
	}
	ERR_clear_error();
	conn_close(c);
	return false;
}

/* Echoes until OpenSSL must wait for the socket, or c is closed. */
static void echo(struct conn *c)
{
	int n;

	for (;;) {
		if (c->state == WRITING) {
			n = SSL_write(c->ssl, c->buf, (int)c->len);
			if (n <= 0) {
				want(c, n);
				return;
			}
			c->state = READING;
			/* Bytes read ahead are invisible to epoll. */
			if (!SSL_has_pending(c->ssl)) {
				watch(c, EPOLLIN);
				return;
			}
		}
		n = SSL_read(c->ssl, c->buf, BUF_SIZE);
		if (n <= 0) {
			want(c, n);
			return;
		}
		c->len = (unsigned int)n;
		c->state = WRITING;
	}
}

static void on_conn(struct conn *c)
{
	int ret;

	if (c->state == HANDSHAKE) {
		ret = SSL_do_handshake(c->ssl);
		if (ret != 1) {
			want(c, ret);
			return;
		}
		c->state = READING;
		/* The first message may be read ahead already: read now. */
	}
	echo(c);
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
				fprintf(stderr, "echo-tls-openssl: accept: "
					"%s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);	/* out of memory: shed it */
			continue;
		}
		c->fd = fd;
		c->ssl = SSL_new(ctx);
		c->state = HANDSHAKE;
		c->events = EPOLLIN;
		if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
			ERR_clear_error();
			conn_close(c);
			continue;
		}
		SSL_set_accept_state(c->ssl);
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			conn_close(c);
		/* The ClientHello comes in a later EPOLLIN. */
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
		fprintf(stderr, "echo-tls-openssl: %s: %s\n", host,
			gai_strerror(ret));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "echo-tls-openssl: listen on %s:%d: %s\n",
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

	signal(SIGPIPE, SIG_IGN);	/* the socket BIO writes with write */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
	SSL_CTX *c = SSL_CTX_new(TLS_server_method());
	const char *what = "SSL_CTX_new";

	if (!c)
		goto err;
	SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
	SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_read_ahead(c, 1);
	what = cert;
	if (SSL_CTX_use_certificate_chain_file(c, cert) != 1)
		goto err;
	what = key;
	if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c) != 1)
		goto err;
	return c;
err:
	fprintf(stderr, "echo-tls-openssl: %s: %s\n", what,
		ERR_reason_error_string(ERR_get_error()));
	SSL_CTX_free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 }
	};
	static struct epoll_event events[MAX_EVENTS];
	struct epoll_event ev = { .events = EPOLLIN };
	const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
	int port = -1, lfd, sfd, c;
	bool stop = false;

	while ((c = getopt_long(argc, argv, "h:p:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'C':
			cert = optarg;
			break;
		case 'K':
			key = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (port < 0 || !cert || !key || optind != argc)
		goto usage;
	ctx = server_ctx(cert, key);
	if (!ctx)
		return 1;
	sfd = stop_fd();
	lfd = listen_on(host, port);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || lfd < 0 || ep < 0)
		return 1;
	ev.data.ptr = &listener_tag;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.ptr = &stop_tag;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	fprintf(stderr, "echo-tls-openssl: listening on %s:%d\n", host, port);

	while (!stop) {
		int i, n = epoll_wait(ep, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("echo-tls-openssl: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			void *p = events[i].data.ptr;

			if (p == &listener_tag)
				on_listener(lfd);
			else if (p == &stop_tag)
				stop = true;
			else
				on_conn(p);
		}
	}
	/* Exiting closes the connections. */
	SSL_CTX_free(ctx);
	return 0;
usage:
	fprintf(stderr, "usage: %s [-h HOST] -p PORT --cert FILE --key FILE\n",
		argv[0]);
	return 2;
}

#else	/* !CORIO_HAVE_TLS */

int main(void)
{
	fprintf(stderr, "echo-tls-openssl: built without libssl: install "
		"libssl-dev and rerun ./configure\n");
	return 2;
}

#endif
