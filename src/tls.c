/*
 * tls.c - TLS streams over OpenSSL: corio_tls_accept, corio_tls_connect.
 *
 * OpenSSL works on two memory BIOs, never on the socket: rbio holds the
 * ciphertext received and not yet decrypted, wbio what OpenSSL produced
 * and corio has not yet sent.  Ciphertext moves through corio's own awaits
 * (corio_recv, corio_send), so the handshake, reads and writes are
 * cancellation points that honour the task's deadline, and nothing here
 * blocks the loop.  A TLS stream is a corio_stream whose reads and writes
 * stream.c hands to corio__tls_read and corio__tls_write.
 *
 * Nothing is lost to a cancellation: ciphertext that arrived stays in
 * rbio, plaintext that SSL_read returned is in the stream's buffer, and
 * ciphertext not yet sent stays in wbio for the next write or flush.
 *
 * OpenSSL's error queue is per thread, and the loop's tasks share a
 * thread: it is cleared before each SSL call and read right after, with
 * no suspension in between.  kTLS: the kernel's TLS ULP is probed
 * (tcp_available_ulp); encryption stays in user space, see corio(7).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "corio-int.h"

#if CORIO_HAVE_TLS

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define NET_CHUNK	(16u * 1024u + 512u)	/* a TLS record and then some */
#define WRITE_CHUNK	(64u * 1024u)	/* plaintext encrypted between sends */

/*
 * Why the thread's last corio_tls_accept or corio_tls_connect failed,
 * for corio_tls_error(NULL, ...): read before the task's next await.
 */
static CORIO_TLS char last_err[256];

struct corio_tls {
	SSL *ssl;
	BIO *rbio, *wbio;
	int fd;
	bool eof;		/* the peer closed the TCP connection */
	bool sending;		/* a task is in flush_out */
	char in[NET_CHUNK];	/* ciphertext received, on its way to rbio */
	char out[NET_CHUNK];	/* taken from wbio: out[opos, olen) unsent */
	int opos, olen;
	int failed;		/* a read's error kept for the next read */
	char err[256];
};

/* ERR_clear_error takes a lock-free but costly path even when empty. */
static inline void err_clear(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

static void err_keep(struct corio_tls *t, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	long v = SSL_get_verify_result(t->ssl);

	/* The verify result only when verification is what failed: with
	 * SSL_VERIFY_NONE it stays set through every later error. */
	if (v != X509_V_OK && ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
		snprintf(t->err, sizeof(t->err), "%s: certificate verify "
			 "failed: %s", what, X509_verify_cert_error_string(v));
	else if (e)
		snprintf(t->err, sizeof(t->err), "%s: %s", what,
			 ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : "unknown error");
	else
		snprintf(t->err, sizeof(t->err), "%s", what);
	ERR_clear_error();
}

/*
 * Sends what OpenSSL produced, in order: first what a failed send left in
 * out, then wbio.  0, or -errno of the send (the rest stays for the next
 * flush).  One task at a time: another that comes meanwhile (a reader
 * whose record needs an answer) leaves it to the one sending, which
 * drains wbio to the end.
 */
static int flush_out(struct corio_tls *t)
{
	int ret = 0;

	if (t->sending)
		return 0;
	t->sending = true;
	for (;;) {
		if (t->opos == t->olen) {
			t->opos = 0;
			t->olen = BIO_read(t->wbio, t->out, sizeof(t->out));
			if (t->olen <= 0) {
				t->olen = 0;
				break;
			}
		}
		while (t->opos < t->olen) {
			ssize_t w = corio_send(t->fd, t->out + t->opos,
					       (size_t)(t->olen - t->opos), 0);

			if (w < 0) {
				ret = (int)w;
				goto out;
			}
			t->opos += (int)w;
		}
	}
out:
	t->sending = false;
	return ret;
}

int corio__tls_flush(struct corio_tls *t)
{
	return flush_out(t);
}

/* One receive into rbio: >0, 0 at EOF, or -errno. */
static ssize_t fill_in(struct corio_tls *t)
{
	ssize_t n = corio_recv(t->fd, t->in, sizeof(t->in), 0);

	if (n > 0)
		BIO_write(t->rbio, t->in, (int)n);
	else if (n == 0)
		t->eof = true;
	return n;
}

/*
 * After an SSL call returned ret <= 0: 1 to call it again (more input
 * came), 0 for a clean close (close_notify), or -errno.
 */
static int step(struct corio_tls *t, int ret, const char *what)
{
	int e = SSL_get_error(t->ssl, ret);
	ssize_t n;
	int f;

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		f = flush_out(t);
		if (f < 0)
			return f;
		if (e == SSL_ERROR_WANT_WRITE)
			return 1;
		if (t->eof)
			goto vanished;
		n = fill_in(t);
		if (n < 0)
			return (int)n;
		if (n == 0)
			goto vanished;
		return 1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SSL:
		err_keep(t, what);
		flush_out(t);	/* the alert, if any, for the peer */
		return -EPROTO;
	default:
		break;
	}
vanished:
	snprintf(t->err, sizeof(t->err), "%s: the peer closed the "
		 "connection without close_notify", what);
	ERR_clear_error();
	return -ECONNRESET;
}

static int handshake(struct corio_tls *t)
{
	int ret, s;

	for (;;) {
		err_clear();
		ret = SSL_do_handshake(t->ssl);
		if (ret == 1)
			return flush_out(t);
		s = step(t, ret, "handshake");
		if (s <= 0)
			return s == 0 ? -ECONNRESET : s;
	}
}

ssize_t corio__tls_read(struct corio_tls *t, void *buf, size_t len)
{
	int ret, s;

	if (len > INT32_MAX)
		len = INT32_MAX;
	if (t->failed)
		return t->failed;
	for (;;) {
		err_clear();
		ret = SSL_read(t->ssl, buf, (int)len);
		if (ret > 0)
			break;
		s = step(t, ret, "read");
		if (s <= 0)
			return s;
	}
	/* Every record already received, not just the first: a pipelined
	 * batch is one read for the stream. */
	/* Only while OpenSSL holds more: a call bound to fail costs. */
	while ((size_t)ret < len &&
	       (SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->rbio) > 0)) {
		int more = SSL_read(t->ssl, (char *)buf + ret,
				    (int)(len - (size_t)ret));

		if (more <= 0) {
			int e = SSL_get_error(t->ssl, more);

			/* A fatal error behind good records: the bytes now,
			 * the error (and the alert for the peer) next time. */
			if (e == SSL_ERROR_SSL) {
				err_keep(t, "read");
				flush_out(t);
				t->failed = -EPROTO;
			}
			ERR_clear_error();
			break;
		}
		ret += more;
	}
	return ret;
}

/* All of p[0, len) encrypted and sent: len, or -errno. */
ssize_t corio__tls_write(struct corio_tls *t, const void *p, size_t len)
{
	size_t done = 0;
	int ret, s;

	while (done < len) {
		int part = len - done > WRITE_CHUNK ? (int)WRITE_CHUNK :
			   (int)(len - done);

		err_clear();
		/* Into wbio, which takes it all; sent before the next part,
		 * so a big write holds one part's ciphertext, not all. */
		ret = SSL_write(t->ssl, (const char *)p + done, part);
		if (ret > 0) {
			done += (size_t)ret;
			s = flush_out(t);
			if (s < 0)
				return s;
			continue;
		}
		s = step(t, ret, "write");
		if (s < 0)
			return s;
		if (s == 0)
			return -EPIPE;	/* the peer closed its side */
	}
	s = flush_out(t);
	return s < 0 ? s : (ssize_t)len;
}

/* close_notify, sent: the best effort of a close. */
int corio__tls_close(struct corio_tls *t)
{
	int ret;

	ERR_clear_error();
	ret = SSL_shutdown(t->ssl);
	ERR_clear_error();
	(void)ret;
	return flush_out(t);
}

void corio__tls_free(struct corio_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);	/* and its BIOs */
	free(t);
}

const char *corio__tls_errstr(const struct corio_tls *t)
{
	return t ? t->err : last_err;
}

static bool ktls;
static pthread_once_t ktls_once = PTHREAD_ONCE_INIT;

static void ktls_probe(void)
{
	char line[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (!f)
		return;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	ktls = strstr(line, "tls") != NULL;
}

/* Whether the kernel could encrypt (the TLS ULP is loaded): once. */
static bool ktls_available(void)
{
	pthread_once(&ktls_once, ktls_probe);
	return ktls;
}

static int tls_start(int fd, struct ssl_ctx_st *ctx, const char *name,
		     bool server, corio_stream **out)
{
	struct corio_task *self = corio__current();
	struct corio_tls *t;
	corio_stream *s;
	int ret;

	if (fd < 0 || !ctx || !out)
		return -EINVAL;
	*out = NULL;
	if (name && (!*name || strlen(name) > 255))
		return -EINVAL;	/* no DNS name is empty or that long */
	if (!self)
		return -EPERM;
	ret = corio__op_check(self, true);
	if (ret < 0)
		return ret;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fd = fd;
	t->ssl = SSL_new(ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		ret = -ENOMEM;
		goto err;
	}
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	/* Take whole chunks of ciphertext at a time, not a header first. */
	SSL_set_read_ahead(t->ssl, 1);
	if (server) {
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_connect_state(t->ssl);
		if (name && (!SSL_set_tlsext_host_name(t->ssl, name) ||
			     !SSL_set1_host(t->ssl, name))) {
			ret = -ENOMEM;
			goto err;
		}
	}
	ret = handshake(t);
	if (ret < 0)
		goto err;
	(void)ktls_available();	/* see the file's comment */
	ret = corio_stream_new(fd, 0, &s);
	if (ret < 0)
		goto err;
	corio__stream_set_tls(s, t);
	*out = s;
	return 0;
err:
	memcpy(last_err, t->err, sizeof(last_err));
	if (!last_err[0])
		snprintf(last_err, sizeof(last_err), "%s", strerror(-ret));
	corio__tls_free(t);
	return ret;
}

#else	/* !CORIO_HAVE_TLS */

struct corio_tls;

ssize_t corio__tls_read(struct corio_tls *t, void *buf, size_t len)
{
	(void)t, (void)buf, (void)len;
	return -ENOTSUP;
}

ssize_t corio__tls_write(struct corio_tls *t, const void *p, size_t len)
{
	(void)t, (void)p, (void)len;
	return -ENOTSUP;
}

int corio__tls_close(struct corio_tls *t)
{
	(void)t;
	return 0;
}

int corio__tls_flush(struct corio_tls *t)
{
	(void)t;
	return 0;
}

void corio__tls_free(struct corio_tls *t)
{
	(void)t;
}

const char *corio__tls_errstr(const struct corio_tls *t)
{
	(void)t;
	return "";
}

static int tls_start(int fd, struct ssl_ctx_st *ctx, const char *name,
		     bool server, corio_stream **out)
{
	(void)fd, (void)ctx, (void)name, (void)server;
	if (out)
		*out = NULL;
	return -ENOTSUP;	/* built without libssl */
}

#endif

int corio_tls_accept(int fd, struct ssl_ctx_st *ctx, corio_stream **out)
{
	return tls_start(fd, ctx, NULL, true, out);
}

int corio_tls_connect(int fd, struct ssl_ctx_st *ctx, const char *servername,
		      corio_stream **out)
{
	return tls_start(fd, ctx, servername, false, out);
}
