/*
 * echo-client - the echo server's demo partner and load generator.
 *
 *	echo-client [-h HOST] [-p PORT] [-c CONNS] [-n MSGS] [-s SIZE]
 *		    [--tls [--ca FILE]]
 *
 * CONNS tasks each send SIZE bytes, await them back and verify every byte,
 * MSGS times.  Prints round trips per second and p50/p99 latency; exits 1
 * on any error or mismatch.
 *
 * --tls speaks TLS (echo-server --tls CERT KEY): each task dials, runs
 * the handshake with corio_tls_connect (HOST as the server name, sent in
 * SNI and checked against the certificate) and then does the same round
 * trips through the stream: corio_stream_write and _flush out,
 * corio_stream_readexactly back.  --ca FILE verifies the server's
 * certificate against the CAs in FILE (PEM); without it nothing is
 * verified (SSL_VERIFY_NONE): a test or benchmark convenience, never a
 * way to talk to a server you need to trust.  The time and the latencies
 * include each connection's handshake, as they include its connect.
 * Built without OpenSSL's headers, --tls says so and exits 2.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <corio.h>

/*
 * configure passes examples no feature macro: OpenSSL's header is the
 * sign that it found libssl (and so put -lssl -lcrypto in LIBS).
 */
#if defined(__has_include)
#if __has_include(<openssl/ssl.h>)
#define HAVE_OPENSSL 1
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif
#endif
#ifndef HAVE_OPENSSL
#define HAVE_OPENSSL 0
#endif

struct options {
	const char *host;
	int port, conns, msgs;
	size_t size;
	uint64_t *lat;		/* conns * msgs round-trip times, ns */
	int failed;
	int tls;		/* --tls */
	const char *ca;		/* --ca FILE, or NULL: no verification */
	struct ssl_ctx_st *ctx;	/* --tls: the one SSL_CTX all tasks share */
};

struct conn {
	struct options *o;
	int id;
};

/*
 * Message i of a connection is SIZE bytes of its pattern from offset
 * i % PAT_SHIFT: consecutive messages differ everywhere, and the pattern
 * is made once (an LCG byte costs a few cycles: 16 KiB of them per
 * message would cost the client more than its TLS does).
 */
#define PAT_SHIFT	251u

static void fill(unsigned char *buf, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
}

/* SIZE bytes out, whole: through the stream (TLS) or straight to fd. */
static int send_all(int fd, corio_stream *s, const unsigned char *p,
		    size_t len)
{
	size_t done = 0;
	ssize_t n;

	if (s) {
		n = corio_stream_write(s, p, len);
		return n < 0 ? (int)n : corio_stream_flush(s);
	}
	while (done < len) {
		n = corio_send(fd, p + done, len - done, 0);
		if (n < 0)
			return (int)n;
		done += (size_t)n;
	}
	return 0;
}

/* len bytes back, whole, or -errno (-ECONNRESET for an early EOF). */
static int recv_all(int fd, corio_stream *s, unsigned char *p, size_t len)
{
	size_t done;
	ssize_t n;

	if (s) {
		n = corio_stream_readexactly(s, p, len);
		return n == -ENODATA ? -ECONNRESET : n < 0 ? (int)n : 0;
	}
	for (done = 0; done < len;) {
		n = corio_recv(fd, p + done, len - done, 0);
		if (n <= 0)
			return n ? (int)n : -ECONNRESET;
		done += (size_t)n;
	}
	return 0;
}

static int client(void *arg)
{
	struct conn *c = arg;
	struct options *o = c->o;
	unsigned char *pat = malloc(o->size + PAT_SHIFT), *in = malloc(o->size);
	unsigned char *out;
	corio_stream *s = NULL;
	char why[256];
	int fd = -1, i, ret = -ENOMEM, said = 0;

	if (!pat || !in)
		goto out;
	fill(pat, o->size + PAT_SHIFT, (unsigned int)c->id * 7919u);
	fd = corio_dial(o->host, o->port);
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	if (o->tls) {
		ret = corio_tls_connect(fd, o->ctx, o->host, &s);
		if (ret < 0) {
			corio_tls_error(NULL, why, sizeof(why));
			fprintf(stderr, "echo-client: conn %d: TLS handshake: "
				"%s (%s)\n", c->id, strerror(-ret), why);
			said = 1;
			goto out;
		}
	}
	for (i = 0; i < o->msgs; i++) {
		uint64_t start = corio_now();

		out = pat + (unsigned int)i % PAT_SHIFT;
		ret = send_all(fd, s, out, o->size);
		if (ret == 0)
			ret = recv_all(fd, s, in, o->size);
		if (ret < 0)
			goto out;
		if (memcmp(in, out, o->size)) {
			fprintf(stderr, "echo-client: conn %d msg %d: "
				"mismatch\n", c->id, i);
			ret = -EPROTO;
			said = 1;
			goto out;
		}
		o->lat[(size_t)c->id * (size_t)o->msgs + (size_t)i] =
			corio_now() - start;
	}
	ret = 0;
out:
	if (ret < 0 && !said) {
		/* A TLS stream's failure has OpenSSL's reason beside it. */
		if (s && corio_tls_error(s, why, sizeof(why)) > 0)
			fprintf(stderr, "echo-client: conn %d: %s (%s)\n",
				c->id, strerror(-ret), why);
		else
			fprintf(stderr, "echo-client: conn %d: %s\n", c->id,
				strerror(-ret));
	}
	if (ret < 0)
		o->failed++;
	if (s)
		corio_stream_close(s);	/* close_notify, and the fd */
	else if (fd >= 0)
		corio_close(fd);
	free(pat);
	free(in);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int run(void *arg)
{
	struct options *o = arg;
	struct conn *conns = calloc((size_t)o->conns, sizeof(*conns));
	corio_task **tasks = calloc((size_t)o->conns, sizeof(*tasks));
	uint64_t start, elapsed;
	size_t total = (size_t)o->conns * (size_t)o->msgs;
	int i;

	if (!conns || !tasks)
		return 1;
	start = corio_now();
	for (i = 0; i < o->conns; i++) {
		conns[i].o = o;
		conns[i].id = i;
		tasks[i] = corio_spawn(client, &conns[i]);
		if (!tasks[i]) {
			o->failed++;
			break;
		}
	}
	while (i-- > 0)
		corio_join(tasks[i]);
	elapsed = corio_now() - start;
	free(conns);
	free(tasks);
	if (o->failed) {
		fprintf(stderr, "echo-client: %d connection(s) failed\n",
			o->failed);
		return 1;
	}
	qsort(o->lat, total, sizeof(*o->lat), cmp_u64);
	printf("%zu round trips of %zu B over %d connections in %.3f s: "
	       "%.0f round trips/s, p50 %.1f us, p99 %.1f us\n", total,
	       o->size, o->conns, (double)elapsed / 1e9,
	       (double)total * 1e9 / (double)elapsed,
	       (double)o->lat[total / 2] / 1e3,
	       (double)o->lat[total * 99 / 100] / 1e3);
	return 0;
}

/*
 * The client side's SSL_CTX: any TLS version OpenSSL offers, the server
 * verified against ca's certificates, or not at all without ca.
 */
static struct ssl_ctx_st *tls_ctx(const char *ca)
{
#if HAVE_OPENSSL
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		fprintf(stderr, "echo-client: SSL_CTX_new: %s\n",
			ERR_reason_error_string(ERR_get_error()));
		return NULL;
	}
	if (!ca) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		fprintf(stderr, "echo-client: --ca %s: %s\n", ca,
			ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
#else
	(void)ca;
	fprintf(stderr, "echo-client: built without OpenSSL's headers: "
		"no --tls\n");
	return NULL;
#endif
}

static void tls_ctx_free(struct ssl_ctx_st *ctx)
{
#if HAVE_OPENSSL
	SSL_CTX_free(ctx);
#else
	(void)ctx;
#endif
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "tls", no_argument, NULL, 'T' },
		{ "ca", required_argument, NULL, 'C' },
		{ NULL, 0, NULL, 0 }
	};
	struct options o = { .host = "127.0.0.1", .port = 7000, .conns = 10,
			     .msgs = 1000, .size = 64 };
	int c, ret;

	while ((c = getopt_long(argc, argv, "h:p:c:n:s:", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'T':
			o.tls = 1;
			break;
		case 'C':
			o.ca = optarg;
			break;
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		case 'c':
			o.conns = atoi(optarg);
			break;
		case 'n':
			o.msgs = atoi(optarg);
			break;
		case 's':
			o.size = (size_t)strtoul(optarg, NULL, 10);
			break;
		default:
			goto usage;
		}
	}
	if (o.conns <= 0 || o.msgs <= 0 || o.size == 0 || optind != argc ||
	    (o.ca && !o.tls))
		goto usage;
	if (o.tls) {
		o.ctx = tls_ctx(o.ca);
		if (!o.ctx)
			return 2;
	}
	o.lat = calloc((size_t)o.conns * (size_t)o.msgs, sizeof(*o.lat));
	if (!o.lat) {
		tls_ctx_free(o.ctx);
		return 1;
	}
	ret = corio_run(run, &o);
	free(o.lat);
	tls_ctx_free(o.ctx);
	if (ret < 0) {
		fprintf(stderr, "echo-client: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
usage:
	fprintf(stderr, "usage: %s [-h HOST] [-p PORT] [-c CONNS] [-n MSGS] "
		"[-s SIZE] [--tls [--ca FILE]]\n"
		"  --tls      TLS (corio_tls_connect), HOST as the server "
		"name\n"
		"  --ca FILE  verify the server's certificate against FILE; "
		"without --ca\n"
		"             the certificate is not verified "
		"(SSL_VERIFY_NONE)\n", argv[0]);
	return 2;
}
