/*
 * tls.c - TLS streams over OpenSSL: corio_tls_accept, corio_tls_connect.
 *
 * OpenSSL never touches the socket: its BIO (bio_read, bio_write) is a
 * pair of corio's buffers.  in[pos, len) is ciphertext received and not
 * yet taken by OpenSSL, out[pos, len) what OpenSSL produced and corio has
 * not yet sent.  corio_recv fills in's end and corio_send sends straight
 * from out, so ciphertext is copied once between the ring and OpenSSL's
 * own record buffers (a memory BIO costs two more passes and a memset).
 * Ciphertext moves through corio's own awaits, so the handshake, reads
 * and writes are cancellation points that honour the task's deadline,
 * and nothing here blocks the loop.  A TLS stream is a corio_stream whose
 * reads and writes stream.c hands to corio__tls_read and corio__tls_write.
 *
 * Nothing is lost to a cancellation: ciphertext that arrived stays in
 * in, plaintext that SSL_read returned is in the stream's buffer, and
 * ciphertext not yet sent stays in out for the next write or flush.
 * While a send reads out (sending), out's bytes stay where they are: it
 * grows into a copy, and the old one is freed when the send returns
 * (out_old).  in is compacted only in fill_in, before it receives; one
 * task receives at a time, as one reads a plain stream at a time.
 *
 * OpenSSL's error queue is per thread, and the loop's tasks share a
 * thread: it is cleared before each SSL call and read right after, with
 * no suspension in between.
 *
 * kTLS: on a TCP socket, once the handshake is done, the kernel's TLS
 * ULP may take the keys (ktls.c derives them and says in which order and
 * with which fallbacks).  Then reads are corio__ktls_recv (recvmsg, the
 * record type in a cmsg) and writes plain ones (stream.c writes to the
 * fd as for a plain stream); in a direction the kernel did not take,
 * OpenSSL goes on as above.  While the handover may follow, read-ahead
 * is off (OpenSSL takes one record at a time, so none is hidden in its
 * buffer) and the records leaving OpenSSL are counted (bio_write); the
 * records that arrived with the handshake's last bytes are decrypted by
 * OpenSSL before the kernel decrypts (drain_early), their plaintext
 * returned by the next reads (early).
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
#define IN_CAP		(2u * NET_CHUNK)	/* received per recv, at most */
#define WRITE_CHUNK	(64u * 1024u)	/* plaintext encrypted between sends */
/* A record's header and body, at most (TLS 1.2's ciphertext limit). */
#define RECORD_MAX	(5u + 16384u + 2048u)

/*
 * Why the thread's last corio_tls_accept or corio_tls_connect failed,
 * for corio_tls_error(NULL, ...): read before the task's next await.
 */
static CORIO_TLS char last_err[256];

struct corio_tls {
	SSL *ssl;
	struct corio_tls_buf in;	/* ciphertext for OpenSSL */
	struct corio_tls_buf out;	/* ciphertext from OpenSSL, unsent */
	char *out_old;		/* what a send in flight reads, out having grown */
	corio_receiver *rx;	/* after the handshake, on the loop's ring */
	const char *lent;	/* rx's chunk, bio_read's after in */
	size_t lent_len;
	int fd;
	bool eof;		/* the peer closed the TCP connection */
	bool sending;		/* a task is in flush_out */
	int bio_err;		/* why the BIO failed OpenSSL: -ENOMEM */
	int failed;		/* a read's error kept for the next read */
	char *early;		/* plaintext drained before kTLS: [epos, elen) */
	size_t epos, elen;
	struct corio_ktls k;
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
 * Room for need more bytes at b's end: 0, or -ENOMEM.  With fixed (a
 * send reads b), nothing moves: b grows into a copy, and the old buffer,
 * which the send reads, waits in *old for the send to return.
 */
int corio__tls_buf_room(struct corio_tls_buf *b, size_t need, bool fixed,
			char **old)
{
	size_t cap;
	char *p;

	if (b->cap - b->len >= need)
		return 0;
	if (!fixed && b->pos) {
		memmove(b->p, b->p + b->pos, b->len - b->pos);
		b->len -= b->pos;
		b->pos = 0;
		if (b->cap - b->len >= need)
			return 0;
	}
	cap = b->cap ? b->cap : NET_CHUNK;
	while (cap - b->len < need)
		cap *= 2;
	if (!fixed) {
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
	} else {
		p = malloc(cap);
		if (!p)
			return -ENOMEM;
		memcpy(p, b->p, b->len);
		if (*old)
			free(b->p);	/* a copy no send reads */
		else
			*old = b->p;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Whether the receiver holds chunks: taking one does not wait. */
static inline bool rx_queued(const struct corio_tls *t)
{
	return t->rx && corio__receiver_queued(t->rx) > 0;
}

/* Ciphertext that OpenSSL can have without a wait. */
static inline bool have_input(const struct corio_tls *t)
{
	return t->in.len > t->in.pos || t->lent_len || rx_queued(t);
}

/* The receiver's next chunk, to lend to bio_read: n > 0, 0, or -errno. */
static ssize_t lend(struct corio_tls *t)
{
	const void *p;
	ssize_t n = corio_receiver_next(t->rx, &p);

	if (n > 0) {
		t->lent = p;
		t->lent_len = (size_t)n;
	}
	return n;
}

/*
 * What is left of the lent chunk goes to in, and the chunk back to the
 * ring: no chunk is held across a wait, so an idle stream holds none.
 * Kept lent if in cannot grow: still in order, only holding a buffer.
 */
static void stash_lent(struct corio_tls *t)
{
	if (!t->lent_len)
		return;
	if (corio__tls_buf_room(&t->in, t->lent_len, false, NULL) < 0)
		return;
	memcpy(t->in.p + t->in.len, t->lent, t->lent_len);
	t->in.len += t->lent_len;
	t->lent = NULL;
	t->lent_len = 0;
	corio_receiver_release(t->rx);
}

/*
 * OpenSSL takes ciphertext from in, then from the receiver's chunks that
 * have arrived; none there is "retry": WANT_READ.  Never waits.
 */
static int bio_read(BIO *b, char *dst, size_t len, size_t *got)
{
	struct corio_tls *t = BIO_get_data(b);
	size_t n = t->in.len - t->in.pos;

	BIO_clear_retry_flags(b);
	if (n) {
		if (n > len)
			n = len;
		memcpy(dst, t->in.p + t->in.pos, n);
		t->in.pos += n;
		*got = n;
		return 1;
	}
	if (!t->lent_len && (!rx_queued(t) || lend(t) <= 0)) {
		BIO_set_retry_read(b);
		return 0;
	}
	n = t->lent_len < len ? t->lent_len : len;
	memcpy(dst, t->lent, n);
	t->lent += n;
	t->lent_len -= n;
	if (!t->lent_len) {
		t->lent = NULL;
		corio_receiver_release(t->rx);
	}
	*got = n;
	return 1;
}

/* OpenSSL's ciphertext, all of it, to out; counted while kTLS may follow. */
static int bio_write(BIO *b, const char *src, size_t len, size_t *put)
{
	struct corio_tls *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (corio__tls_buf_room(&t->out, len, t->sending, &t->out_old) < 0) {
		t->bio_err = -ENOMEM;
		return 0;
	}
	memcpy(t->out.p + t->out.len, src, len);
	t->out.len += len;
	if (t->k.track)
		corio__ktls_scan(&t->k.out, src, len);
	*put = len;
	return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct corio_tls *t = BIO_get_data(b);

	(void)num, (void)ptr;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		return (long)(t->in.len - t->in.pos);
	case BIO_CTRL_WPENDING:
		return (long)(t->out.len - t->out.pos);
	case BIO_CTRL_FLUSH:	/* sent by flush_out, after the SSL call */
		return 1;
	default:
		return 0;
	}
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_make(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "corio ciphertext");

	if (m && (!BIO_meth_set_read_ex(m, bio_read) ||
		  !BIO_meth_set_write_ex(m, bio_write) ||
		  !BIO_meth_set_ctrl(m, bio_ctrl) ||
		  !BIO_meth_set_create(m, bio_create))) {
		BIO_meth_free(m);
		m = NULL;
	}
	bio_method = m;	/* process-long, as OpenSSL's own methods */
}

static BIO *bio_new(struct corio_tls *t)
{
	BIO *b;

	pthread_once(&bio_once, bio_method_make);
	b = bio_method ? BIO_new(bio_method) : NULL;
	if (b)
		BIO_set_data(b, t);
	return b;
}

/*
 * Sends what OpenSSL produced, in order: out, from where a failed send
 * left it.  0, or -errno of the send (the rest stays for the next
 * flush).  One task at a time: another that comes meanwhile (a reader
 * whose record needs an answer) leaves it to the one sending, which
 * sends out to its end, what was added meanwhile too.
 */
static int flush_out(struct corio_tls *t)
{
	struct corio_tls_buf *o = &t->out;
	int ret = 0;

	if (t->sending || (t->k.dirs & CORIO_KTLS_TX))
		return 0;
	t->sending = true;
	while (o->pos < o->len) {
		ssize_t w = corio_send(t->fd, o->p + o->pos, o->len - o->pos,
				       0);

		free(t->out_old);	/* what that send read, if out grew */
		t->out_old = NULL;
		if (w < 0) {
			ret = (int)w;
			break;
		}
		o->pos += (size_t)w;
	}
	if (o->pos == o->len)
		o->pos = o->len = 0;
	t->sending = false;
	return ret;
}

int corio__tls_flush(struct corio_tls *t)
{
	return flush_out(t);
}

/*
 * One receive to in's end, or the receiver's next chunk lent: >0, 0 at
 * EOF, or -errno.
 */
static ssize_t fill_in(struct corio_tls *t)
{
	struct corio_tls_buf *in = &t->in;
	ssize_t n;

	/* The kernel decrypts: OpenSSL's read side is over, and nothing it
	 * does when it writes (no handshake runs) makes it read. */
	if (t->k.dirs & CORIO_KTLS_RX) {
		snprintf(t->err, sizeof(t->err), "OpenSSL wants to read, and "
			 "the kernel decrypts (kTLS)");
		return -EPROTO;
	}
	if (t->rx) {
		stash_lent(t);
		n = lend(t);
		if (n == 0)
			t->eof = true;
		return n;
	}
	if (in->pos == in->len)
		in->pos = in->len = 0;
	if (in->cap - in->len < NET_CHUNK &&
	    corio__tls_buf_room(in, NET_CHUNK, false, NULL) < 0) {
		snprintf(t->err, sizeof(t->err), "receive: out of memory");
		return -ENOMEM;
	}
	n = corio_recv(t->fd, in->p + in->len, in->cap - in->len, 0);
	if (n > 0)
		in->len += (size_t)n;
	else if (n == 0)
		t->eof = true;
	return n;
}

static int vanished(struct corio_tls *t, const char *what)
{
	snprintf(t->err, sizeof(t->err), "%s: the peer closed the "
		 "connection without close_notify", what);
	ERR_clear_error();
	return -ECONNRESET;
}

/*
 * OpenSSL needs ciphertext: first what it owes the peer goes out, then
 * one receive.  1, or -errno.
 */
static int want_input(struct corio_tls *t, const char *what)
{
	ssize_t n;
	int f = flush_out(t);

	if (f < 0)
		return f;
	if (t->eof)
		return vanished(t, what);
	n = fill_in(t);
	if (n < 0)
		return (int)n;
	return n ? 1 : vanished(t, what);
}

/*
 * After an SSL call returned ret <= 0: 1 to call it again (more input
 * came), 0 for a clean close (close_notify), or -errno.
 */
static int step(struct corio_tls *t, int ret, const char *what)
{
	int e = SSL_get_error(t->ssl, ret);
	int f;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return want_input(t, what);
	case SSL_ERROR_WANT_WRITE:
		f = flush_out(t);
		return f < 0 ? f : 1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SSL:
		err_keep(t, what);
		flush_out(t);	/* the alert, if any, for the peer */
		return -EPROTO;
	default:
		if (t->bio_err) {	/* out grew, and malloc said no */
			snprintf(t->err, sizeof(t->err), "%s: out of memory "
				 "for ciphertext", what);
			ERR_clear_error();
			return t->bio_err;
		}
		return vanished(t, what);
	}
}

static int handshake(struct corio_tls *t)
{
	int ret, s;

	for (;;) {
		err_clear();
		ret = SSL_do_handshake(t->ssl);
		if (ret == 1) {
			s = flush_out(t);
			corio__ktls_call_end(&t->k);
			return s;
		}
		s = step(t, ret, "handshake");
		if (s <= 0)
			return s == 0 ? -ECONNRESET : s;
		/* This call's records are all counted: bio_write saw them. */
		corio__ktls_call_end(&t->k);
	}
}

/* Plaintext drained before the kernel decrypted, for the reads first. */
static ssize_t take_early(struct corio_tls *t, void *buf, size_t len)
{
	size_t n = t->elen - t->epos;

	if (n > len)
		n = len;
	memcpy(buf, t->early + t->epos, n);
	t->epos += n;
	if (t->epos == t->elen) {
		free(t->early);
		t->early = NULL;
		t->epos = t->elen = 0;
	}
	return (ssize_t)n;
}

static ssize_t tls_read(struct corio_tls *t, void *buf, size_t len)
{
	int ret, s;

	if (len > INT32_MAX)
		len = INT32_MAX;
	if (t->early)
		return take_early(t, buf, len);
	if (t->failed)
		return t->failed;
	if (t->k.dirs & CORIO_KTLS_RX) {
		ssize_t n = corio__ktls_recv(&t->k, t->fd, buf, len, t->err,
					     sizeof(t->err));

		if (n == -EPROTO)
			t->failed = -EPROTO;
		return n;
	}
	/* Nothing there for OpenSSL to decrypt: receive first, rather than
	 * make an SSL_read bound to fail.  Not after close_notify or an
	 * error, which SSL_read answers without input. */
	if (!have_input(t) && !SSL_has_pending(t->ssl) &&
	    SSL_is_init_finished(t->ssl) &&
	    !(SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN)) {
		s = want_input(t, "read");
		if (s < 0)
			return s;
	}
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
	       (SSL_pending(t->ssl) > 0 || have_input(t))) {
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

ssize_t corio__tls_read(struct corio_tls *t, void *buf, size_t len)
{
	ssize_t n = tls_read(t, buf, len);

	stash_lent(t);
	return n;
}

/* All of p[0, len) encrypted and sent: len, or -errno. */
static ssize_t tls_write(struct corio_tls *t, const void *p, size_t len)
{
	size_t done = 0;
	int ret, s;

	while (done < len) {
		int part = len - done > WRITE_CHUNK ? (int)WRITE_CHUNK :
			   (int)(len - done);

		err_clear();
		/* Into out, which takes it all; sent before the next part,
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

/* A TLS 1.2 renegotiation can make a write read. */
ssize_t corio__tls_write(struct corio_tls *t, const void *p, size_t len)
{
	ssize_t n = tls_write(t, p, len);

	stash_lent(t);
	return n;
}

/* close_notify, sent: the best effort of a close. */
int corio__tls_close(struct corio_tls *t)
{
	int ret;

	if (t->k.dirs & CORIO_KTLS_TX) {
		ret = corio__ktls_close(t->fd);
		/* As SSL_shutdown would: the session stays resumable. */
		if (ret == 0)
			SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) |
					 SSL_SENT_SHUTDOWN);
		return ret;
	}
	ERR_clear_error();
	ret = SSL_shutdown(t->ssl);
	ERR_clear_error();
	(void)ret;
	return flush_out(t);
}

/* The receiver ends before the fd does (corio_stream_close). */
void corio__tls_stop(struct corio_tls *t)
{
	if (!t)
		return;
	corio_receiver_free(t->rx);	/* and its lent chunk */
	t->rx = NULL;
	t->lent = NULL;
	t->lent_len = 0;
}

void corio__tls_free(struct corio_tls *t)
{
	if (!t)
		return;
	corio__tls_stop(t);
	corio__ktls_end(&t->k, t->ssl);
	SSL_free(t->ssl);	/* and its BIOs */
	free(t->in.p);
	free(t->out.p);
	free(t->out_old);
	free(t->early);
	free(t);
}

const char *corio__tls_errstr(const struct corio_tls *t)
{
	return t ? t->err : last_err;
}

int corio__tls_ktls(const struct corio_tls *t, const char **why)
{
	if (why)
		*why = t->k.why;
	return t->k.dirs;
}

bool corio__tls_receiver(const struct corio_tls *t)
{
	return t && t->rx;
}

/*
 * After the handshake, where OpenSSL decrypts: ciphertext comes from a
 * receiver on the loop's shared buffer ring (one multishot receive, no
 * SQE per read, no buffer held while idle) rather than a corio_recv per
 * read.  Without buffer rings (CORIO_DISABLE=bufring, an old kernel) or
 * memory for one, reads stay on corio_recv.  What OpenSSL and in hold
 * already came first, so the order holds.
 */
static void rx_start(struct corio_tls *t)
{
	struct corio_bufring *br;
	int ret;

	if (t->k.dirs & CORIO_KTLS_RX)
		return;
	br = corio__bufring_shared(corio__loop, &ret);
	if (br && corio_receiver_new(t->fd, br, &t->rx) < 0)
		t->rx = NULL;
}

/* The length of the record whose 5-byte header is at h, header included. */
static inline size_t record_len(const char *h)
{
	return 5 + ((size_t)(unsigned char)h[3] << 8 | (unsigned char)h[4]);
}

/*
 * Before the kernel decrypts: the records that came with the handshake's
 * last bytes (in in: read-ahead is off, so OpenSSL holds none) go through
 * OpenSSL here, one at a time (in's end set at the record's end, the rest
 * out of OpenSSL's sight), their plaintext to t->early; a record cut
 * short is completed from the socket first, reading no byte past it.
 * *nr gets how many were drained.  false if the kernel must not take
 * over: a record that changed more than data (a key update, an alert, a
 * renegotiation: ktls.c's watch), something OpenSSL wrote, an error, no
 * memory; what was not drained stays in in for OpenSSL.
 */
static bool drain_early(struct corio_tls *t, uint64_t *nr)
{
	struct corio_tls_buf *in = &t->in;
	size_t off, want, end, have, size;
	bool ok = true;
	ssize_t n;
	int r, e;

	*nr = 0;
	/* Read-ahead is off, so this is only a check of it. */
	if (SSL_has_pending(t->ssl)) {
		snprintf(t->k.why, sizeof(t->k.why), "OpenSSL holds records "
			 "received");
		return false;
	}
	if (in->len == in->pos)
		return true;
	if (corio__tls_buf_room(in, RECORD_MAX, false, NULL) < 0)
		goto nomem;
	for (off = in->pos; off < in->len; off += want) {
		have = in->len - off;
		want = have < 5 ? 5 : record_len(in->p + off);
		if (want > RECORD_MAX) {
			snprintf(t->k.why, sizeof(t->k.why), "early records: "
				 "a record of %zu bytes", want);
			return false;
		}
		if (have >= want)
			continue;
		/* The peer writes whole records: the rest is on its way.
		 * Only the last record can be short, and room for a whole
		 * one is there. */
		n = corio_recv(t->fd, in->p + in->len, want - have, 0);
		if (n <= 0) {
			if (n == 0)
				t->eof = true;
			snprintf(t->k.why, sizeof(t->k.why), "early records: "
				 "%s", n ? strerror((int)-n) : "EOF");
			return false;
		}
		in->len += (size_t)n;
		want = 0;	/* the same record again */
	}
	/* Plaintext is shorter than its records. */
	size = in->len - in->pos;
	t->early = malloc(size);
	if (!t->early)
		goto nomem;
	corio__ktls_watch(&t->k, t->ssl, true);
	end = in->len;
	while (ok && in->pos < end) {
		off = in->pos;
		in->len = off + record_len(in->p + off);
		do {
			err_clear();
			r = SSL_read(t->ssl, t->early + t->elen,
				     (int)(size - t->elen));
			if (r > 0)
				t->elen += (size_t)r;
		} while (r > 0);
		e = SSL_get_error(t->ssl, r);
		if (e == SSL_ERROR_SSL) {
			/* For the read after the plaintext before it. */
			err_keep(t, "read");
			t->failed = -EPROTO;
		}
		ERR_clear_error();
		if (e != SSL_ERROR_WANT_READ || t->k.spoiled ||
		    t->out.len > t->out.pos || in->pos != in->len ||
		    SSL_has_pending(t->ssl)) {
			snprintf(t->k.why, sizeof(t->k.why), "early records: "
				 "%s", e == SSL_ERROR_ZERO_RETURN ?
				 "close_notify" : e == SSL_ERROR_SSL ?
				 "an error" : "more than data");
			ok = false;
		} else {
			(*nr)++;
		}
		in->len = end;
	}
	corio__ktls_watch(&t->k, t->ssl, false);
	if (!t->elen) {
		free(t->early);
		t->early = NULL;
	}
	if (t->out.len > t->out.pos)
		flush_out(t);	/* an alert or a key update: best effort */
	return ok;
nomem:
	snprintf(t->k.why, sizeof(t->k.why), "early records: out of memory");
	return false;
}

/*
 * After the handshake: the kernel takes the keys if it can; otherwise,
 * and in a direction it does not take, OpenSSL goes on.  Never fails.
 */
static void ktls_start(struct corio_tls *t)
{
	struct corio_ktls *k = &t->k;
	uint64_t early;

	if (!corio__ktls_ready(k, t->ssl))
		goto out;
	if (t->out.len > t->out.pos) {
		snprintf(k->why, sizeof(k->why), "ciphertext still queued");
		goto out;
	}
	if (corio__ktls_attach(k, t->fd) < 0 || !drain_early(t, &early))
		goto out;
	corio__ktls_set(k, t->ssl, t->fd, early);
	if (k->dirs & CORIO_KTLS_TX) {
		/* OpenSSL moves no more records: its buffers and ours go. */
		SSL_free_buffers(t->ssl);
		free(t->in.p);
		free(t->out.p);
		memset(&t->in, 0, sizeof(t->in));
		memset(&t->out, 0, sizeof(t->out));
	}
out:
	corio__ktls_end(k, t->ssl);
	if (!(k->dirs & CORIO_KTLS_RX))
		SSL_set_read_ahead(t->ssl, 1);
}

static int tls_start(int fd, struct ssl_ctx_st *ctx, const char *name,
		     bool server, corio_stream **out)
{
	struct corio_task *self = corio__current();
	struct corio_tls *t;
	corio_stream *s;
	BIO *bio;
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
	t->in.p = malloc(IN_CAP);
	t->in.cap = IN_CAP;
	t->out.p = malloc(NET_CHUNK);
	t->out.cap = NET_CHUNK;
	t->ssl = SSL_new(ctx);
	bio = t->ssl ? bio_new(t) : NULL;
	if (!t->in.p || !t->out.p || !bio) {
		ret = -ENOMEM;
		goto err;
	}
	SSL_set_bio(t->ssl, bio, bio);	/* one reference, both ways */
	/* Take whole chunks of ciphertext at a time, not a header first;
	 * but one record at a time while the kernel may take over. */
	SSL_set_read_ahead(t->ssl, !corio__ktls_track(&t->k, t->ssl, fd));
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
	/* First, so that a failure hands back an fd without kernel keys. */
	ret = corio_stream_new(fd, 0, &s);
	if (ret < 0)
		goto err;
	if (t->k.track)
		ktls_start(t);
	rx_start(t);
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

void corio__tls_stop(struct corio_tls *t)
{
	(void)t;
}

void corio__tls_free(struct corio_tls *t)
{
	(void)t;
}

bool corio__tls_receiver(const struct corio_tls *t)
{
	(void)t;
	return false;
}

const char *corio__tls_errstr(const struct corio_tls *t)
{
	(void)t;
	return "";
}

int corio__tls_ktls(const struct corio_tls *t, const char **why)
{
	(void)t;
	if (why)
		*why = "built without TLS";
	return 0;
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
