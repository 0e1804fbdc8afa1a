/*
 * ktls.c - handing a TLS stream's keys to the kernel (kTLS): after the
 * handshake, the "tls" upper layer protocol of TCP encrypts and decrypts,
 * and the stream moves plaintext with plain awaits on the ring.
 *
 * OpenSSL runs the handshake over corio's buffers (tls.c), so its own kTLS,
 * which wants a socket BIO, never starts: corio hands the keys over
 * itself, in this order (tls.c's ktls_start):
 * - track, before the handshake: only for a TCP socket, unless
 *   CORIO_DISABLE=ktls or this process already saw the kernel refuse the
 *   ULP with ENOENT (no tls module, none to load).  TLS 1.3 keys come
 *   from the application traffic secrets, which OpenSSL shows only to a
 *   keylog callback: corio sets one on the SSL_CTX that passes every line
 *   on to the callback the user had set.  TLS 1.2 keys come from the
 *   master secret and the randoms, through the TLS PRF's key block.
 * - Sequence numbers have no getter, so they are counted.  Ours, from the
 *   headers of the records that left OpenSSL (corio__ktls_scan, fed by
 *   tls.c's bio_write): in TLS 1.2 the records after our ChangeCipherSpec;
 *   in TLS 1.3 the records of the handshake calls after the one in which
 *   our write secret was logged (call_end).  That secret changes right
 *   after our Finished, the last message of its call's flight; a server's
 *   session tickets come in a later call, after the client's Finished.
 *   The peer's: tls.c turns read-ahead off while tracking, so OpenSSL
 *   takes one record at a time from its input and the handshake stops
 *   right after the peer's Finished: 1 record read under the final key
 *   in TLS 1.2 (that Finished), 0 in TLS 1.3.  Records that came with the
 *   handshake's last bytes are decrypted by OpenSSL in user space first,
 *   one at a time (tls.c's drain_early), and counted: rx_early.
 * - attach the ULP (the real probe: tcp_available_ulp lists only the
 *   modules loaded), derive both directions' crypto_info, then set RX,
 *   and TX only if RX was taken.  A ULP without keys passes bytes
 *   through, so a failure at any step leaves the stream in user space.
 *   If TX fails after RX, the kernel decrypts and OpenSSL still encrypts:
 *   that works, since OpenSSL reads nothing any more and so never has to
 *   answer anything.  The other mix (the kernel encrypts, OpenSSL
 *   decrypts) is never made: a KeyUpdate, renegotiation or alert that
 *   OpenSSL read would need an answer it could no longer send in order.
 * - After the handover, the kernel labels each record it decrypted with
 *   its type in a cmsg, and corio__ktls_record says what it means:
 *   close_notify is EOF, other alerts -EPROTO (but TLS 1.2 warnings and
 *   TLS 1.3 user_canceled are skipped, as OpenSSL does), session tickets
 *   and a TLS 1.2 HelloRequest are skipped, a KeyUpdate or any other
 *   handshake message -EPROTO: corio does not rekey the kernel.
 *
 * Secrets and keys are wiped (OPENSSL_cleanse) as soon as they are handed
 * over or given up; the kernel keeps its own copy.
 */
#include <ctype.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "corio-int.h"

/* TLS record content types (RFC 8446, 5.1). */
#define REC_CCS		20
#define REC_ALERT	21
#define REC_HANDSHAKE	22
#define REC_DATA	23

void corio__ktls_scan(struct corio_ktls_scan *s, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t take, h;

	while (n) {
		if (s->left) {
			take = n < s->left ? n : s->left;
			h = sizeof(s->head) - s->headlen;
			if (h > take)
				h = take;
			memcpy(s->head + s->headlen, b, h);
			s->headlen += (unsigned char)h;
			b += take;
			n -= take;
			s->left -= (uint32_t)take;
			continue;
		}
		s->hdr[s->hlen++] = *b++;
		n--;
		if (s->hlen < sizeof(s->hdr))
			continue;
		s->hlen = 0;
		s->nr++;
		if (s->hdr[0] == REC_CCS)
			s->since_ccs = 0;
		else
			s->since_ccs++;
		s->left = (uint32_t)s->hdr[3] << 8 | s->hdr[4];
		s->headlen = 0;
	}
}

#if CORIO_HAVE_TLS

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/ssl.h>

static int fail(struct corio_ktls_rx *rx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rx->why, sizeof(rx->why), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

/* OpenSSL lets a few warnings pass in a row, then gives up; so do we. */
#define WARNINGS_MAX	5

static int alerts(struct corio_ktls_rx *rx, const unsigned char *p, size_t n)
{
	int level, desc;

	for (; n; p++, n--) {
		rx->alert[rx->alen++] = *p;
		if (rx->alen < sizeof(rx->alert))
			continue;
		rx->alen = 0;
		level = rx->alert[0];
		desc = rx->alert[1];
		if (desc == SSL_AD_CLOSE_NOTIFY) {
			rx->closed = true;
			return 0;
		}
		/* TLS 1.3 makes every other alert fatal but user_canceled,
		 * which precedes a close_notify. */
		if (level == SSL3_AL_WARNING &&
		    (rx->version != TLS1_3_VERSION ||
		     desc == SSL_AD_USER_CANCELLED) &&
		    ++rx->warnings < WARNINGS_MAX)
			continue;
		return fail(rx, "read: %s alert from the peer: %s",
			    level == SSL3_AL_WARNING ? "warning" : "fatal",
			    SSL_alert_desc_string_long(desc));
	}
	return CORIO_KTLS_SKIP;
}

/* Handshake messages, which may span records: parsed as one stream. */
static int handshakes(struct corio_ktls_rx *rx, const unsigned char *p,
		      size_t n)
{
	uint32_t len, take;
	int type;

	while (n) {
		if (rx->hsleft) {
			take = n < rx->hsleft ? (uint32_t)n : rx->hsleft;
			p += take;
			n -= take;
			rx->hsleft -= take;
			continue;
		}
		rx->hs[rx->hslen++] = *p++;
		n--;
		if (rx->hslen < sizeof(rx->hs))
			continue;
		rx->hslen = 0;
		type = rx->hs[0];
		len = (uint32_t)rx->hs[1] << 16 | (uint32_t)rx->hs[2] << 8 |
		      rx->hs[3];
		if (rx->version == TLS1_3_VERSION &&
		    type == SSL3_MT_NEWSESSION_TICKET) {
			/* The stream gives no access to its session. */
			rx->hsleft = len;
			continue;
		}
		if (rx->version != TLS1_3_VERSION &&
		    type == SSL3_MT_HELLO_REQUEST && len == 0)
			continue;	/* RFC 5246 7.4.1.1: may be ignored */
		if (type == SSL3_MT_KEY_UPDATE)
			return fail(rx, "read: the peer sent a KeyUpdate, "
				    "and corio does not rekey kTLS");
		return fail(rx, "read: handshake message %d after the "
			    "handshake (kTLS: no renegotiation)", type);
	}
	return CORIO_KTLS_SKIP;
}

int corio__ktls_record(struct corio_ktls_rx *rx, int type,
		       const unsigned char *p, size_t n)
{
	/* A message of a control record goes on only in a record of its
	 * own type (RFC 8446, 5.1). */
	if ((rx->hslen || rx->hsleft) && type != REC_HANDSHAKE)
		return fail(rx, "read: a handshake message cut by a record "
			    "of type %d", type);
	if (rx->alen && type != REC_ALERT)
		return fail(rx, "read: an alert cut by a record of type %d",
			    type);
	switch (type) {
	case REC_DATA:
		rx->warnings = 0;
		return n ? CORIO_KTLS_DATA : CORIO_KTLS_SKIP;
	case REC_ALERT:
		return alerts(rx, p, n);
	case REC_HANDSHAKE:
		return handshakes(rx, p, n);
	default:
		return fail(rx, "read: record type %d after the handshake",
			    type);
	}
}

#if CORIO_HAVE_KTLS

/* The process saw setsockopt(TCP_ULP, "tls") fail with ENOENT. */
static atomic_bool ulp_absent;

void corio__ktls_forget(void)
{
	atomic_store(&ulp_absent, false);
}

static bool no(struct corio_ktls *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(k->why, sizeof(k->why), fmt, ap);
	va_end(ap);
	return false;
}

/* ---- the keylog callback ------------------------------------------------ */

/*
 * The user's keylog callback of an SSL_CTX on which corio set its own,
 * in the SSL_CTX's ex_data.  Atomic: another loop's handshake may read
 * it while one of this loop's sets it again.
 */
struct chain {
	_Atomic(SSL_CTX_keylog_cb_func) user;
};

static int ssl_idx = -1, ctx_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t chain_lock = PTHREAD_MUTEX_INITIALIZER;

static void chain_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
		       long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void idx_make(void)
{
	ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, chain_free);
}

static int hexval(int c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* "LABEL <client random> <secret>", both in hex (NSS's key log format). */
static void capture(struct corio_ktls *k, const SSL *ssl, const char *line)
{
	static const char *const label[2] = {
		"CLIENT_TRAFFIC_SECRET_0 ", "SERVER_TRAFFIC_SECRET_0 ",
	};
	int server = SSL_is_server(ssl) ? 1 : 0, dir;
	const char *hex;
	size_t n = 0;

	if (!strncmp(line, label[server], strlen(label[server])))
		dir = 0;
	else if (!strncmp(line, label[!server], strlen(label[!server])))
		dir = 1;
	else
		return;
	hex = strrchr(line, ' ');
	if (!hex++)
		return;
	while (n < sizeof(k->secret[dir]) && isxdigit((unsigned char)hex[0]) &&
	       isxdigit((unsigned char)hex[1])) {
		k->secret[dir][n++] = (unsigned char)(hexval(hex[0]) << 4 |
						      hexval(hex[1]));
		hex += 2;
	}
	k->secret_len[dir] = (unsigned char)n;
	if (dir == 0)
		k->tx_logged = true;
}

static void keylog(const SSL *ssl, const char *line)
{
	struct chain *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx);
	struct corio_ktls *k = SSL_get_ex_data(ssl, ssl_idx);
	SSL_CTX_keylog_cb_func user = c ? atomic_load(&c->user) : NULL;

	if (k && k->track)
		capture(k, ssl, line);
	if (user)
		user(ssl, line);
}

/*
 * Sets keylog on ctx, keeping the callback there for keylog to call.
 * Again if the user set another since: that one is then the one called.
 */
static bool chain_keylog(SSL_CTX *ctx)
{
	SSL_CTX_keylog_cb_func cur;
	struct chain *c;
	bool ok = true;

	pthread_mutex_lock(&chain_lock);
	cur = SSL_CTX_get_keylog_callback(ctx);
	if (cur == keylog)
		goto out;
	c = SSL_CTX_get_ex_data(ctx, ctx_idx);
	if (!c) {
		c = malloc(sizeof(*c));
		if (!c || !SSL_CTX_set_ex_data(ctx, ctx_idx, c)) {
			free(c);
			ok = false;
			goto out;
		}
	}
	atomic_store(&c->user, cur);
	SSL_CTX_set_keylog_callback(ctx, keylog);
out:
	pthread_mutex_unlock(&chain_lock);
	return ok;
}

/* ---- before and during the handshake ------------------------------------ */

bool corio__ktls_track(struct corio_ktls *k, SSL *ssl, int fd)
{
	int proto = 0;
	socklen_t len = sizeof(proto);

	if (corio__loop && (corio__loop->disabled & CORIO_FEAT_KTLS))
		return no(k, "CORIO_DISABLE=ktls");
	if (atomic_load(&ulp_absent))
		return no(k, "TCP_ULP tls: %s (seen before: not tried again)",
			  strerror(ENOENT));
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) < 0 ||
	    proto != IPPROTO_TCP)
		return no(k, "not a TCP socket");
	pthread_once(&idx_once, idx_make);
	if (ssl_idx < 0 || ctx_idx < 0 || !SSL_set_ex_data(ssl, ssl_idx, k) ||
	    !chain_keylog(SSL_get_SSL_CTX(ssl)))
		return no(k, "OpenSSL's ex_data: out of memory");
	k->track = true;
	return true;
}

void corio__ktls_call_end(struct corio_ktls *k)
{
	if (k->tx_logged && !k->tx_marked) {
		k->tx_mark = k->out.nr;
		k->tx_marked = true;
	}
	k->tx_logged = false;
}

/* ---- after the handshake ------------------------------------------------ */

static bool kernel_cipher(int nid)
{
	return nid == NID_aes_128_gcm || nid == NID_aes_256_gcm ||
	       nid == NID_chacha20_poly1305;
}

bool corio__ktls_ready(struct corio_ktls *k, SSL *ssl)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
	SSL_SESSION *sess = SSL_get_session(ssl);
	int v = SSL_version(ssl);
	int nid = c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef;
	unsigned char mdlen = md ? (unsigned char)EVP_MD_get_size(md) : 0;

	if (v != TLS1_2_VERSION && v != TLS1_3_VERSION)
		return no(k, "%s: the kernel takes TLS 1.2 and 1.3",
			  SSL_get_version(ssl));
	if (!kernel_cipher(nid) || !md)
		return no(k, "cipher %s: the kernel takes AES-GCM and "
			  "ChaCha20-Poly1305", c ? SSL_CIPHER_get_name(c) :
			  "(none)");
	if (SSL_get_shutdown(ssl))
		return no(k, "closed in the handshake");
	if (v == TLS1_3_VERSION && (k->secret_len[0] != mdlen ||
				    k->secret_len[1] != mdlen ||
				    !k->tx_marked))
		return no(k, "no TLS 1.3 traffic secrets: the SSL_CTX's "
			  "keylog callback is not corio's");
	if (v == TLS1_2_VERSION && (k->out.since_ccs == 0 ||
				    k->out.left || k->out.hlen ||
				    (nid != NID_chacha20_poly1305 &&
				     k->out.headlen < sizeof(k->out.head))))
		return no(k, "no whole record sent under the TLS 1.2 keys");
	k->tx_ok = true;
	if (sess && SSL_SESSION_get_max_fragment_length(sess) !=
	    TLSEXT_max_fragment_length_DISABLED) {
		/* The kernel writes records of 16 KiB. */
		k->tx_ok = false;
		no(k, "TX: a maximum fragment length was negotiated");
	}
	return true;
}

int corio__ktls_attach(struct corio_ktls *k, int fd)
{
	int err;

	/* Another stream's handshake may have seen it since ours began. */
	if (atomic_load(&ulp_absent)) {
		no(k, "TCP_ULP tls: %s (seen before: not tried again)",
		   strerror(ENOENT));
		return -ENOENT;
	}
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0)
		return 0;
	err = errno;
	/* No module, and none could be loaded: no use asking per socket
	 * (as root each ask runs modprobe). */
	if (err == ENOENT)
		atomic_store(&ulp_absent, true);
	no(k, "TCP_ULP tls: %s", strerror(err));
	return -err;
}

/* While tls.c drains: anything but session tickets spoils the handover. */
static void watch_cb(const SSL *ssl, int where, int ret)
{
	struct corio_ktls *k = SSL_get_ex_data(ssl, ssl_idx);
	void (*user)(const SSL *, int, int) =
		SSL_CTX_get_info_callback(SSL_get_SSL_CTX(ssl));
	OSSL_HANDSHAKE_STATE st = SSL_get_state(ssl);

	if (k && ((where & (SSL_CB_ALERT | SSL_CB_HANDSHAKE_START)) ||
		  ((where & SSL_CB_LOOP) && st != TLS_ST_OK &&
		   st != TLS_ST_CR_SESSION_TICKET)))
		k->spoiled = true;
	if (user)
		user(ssl, where, ret);
}

void corio__ktls_watch(struct corio_ktls *k, SSL *ssl, bool on)
{
	k->spoiled = false;
	/* NULL: OpenSSL calls the SSL_CTX's callback again. */
	SSL_set_info_callback(ssl, on ? watch_cb : NULL);
}

static int kdf(const char *name, OSSL_PARAM *params, unsigned char *out,
	       size_t len)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, name, NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int ok = ctx && EVP_KDF_derive(ctx, out, len, params) == 1;

	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : -EINVAL;
}

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446, 7.1. */
static int expand_label(const EVP_MD *md, const unsigned char *secret,
			size_t secret_len, const char *label,
			unsigned char *out, size_t len)
{
	unsigned char info[2 + 1 + 6 + 8 + 1];
	size_t llen = strlen(label), n = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM p[5];

	info[n++] = (unsigned char)(len >> 8);
	info[n++] = (unsigned char)len;
	info[n++] = (unsigned char)(6 + llen);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, llen);
	n += llen;
	info[n++] = 0;		/* the empty context */
	p[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	p[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						(char *)EVP_MD_get0_name(md),
						0);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
						 (void *)secret, secret_len);
	p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	p[4] = OSSL_PARAM_construct_end();
	return kdf(OSSL_KDF_NAME_HKDF, p, out, len);
}

/*
 * One side's write key and IV of TLS 1.2 (RFC 5246, 6.3): an AEAD's
 * key block is client key, server key, client IV, server IV.
 */
static int tls12_keys(SSL *ssl, const EVP_MD *md, bool client,
		      unsigned char *key, size_t klen, unsigned char *iv,
		      size_t ivlen)
{
	unsigned char ms[SSL_MAX_MASTER_KEY_LENGTH];
	unsigned char seed[13 + 2 * SSL3_RANDOM_SIZE];
	unsigned char block[2 * (32 + 12)];
	size_t mslen = SSL_SESSION_get_master_key(SSL_get_session(ssl), ms,
						  sizeof(ms));
	OSSL_PARAM p[4];
	int ret;

	memcpy(seed, "key expansion", 13);
	if (!mslen ||
	    SSL_get_server_random(ssl, seed + 13, SSL3_RANDOM_SIZE) !=
	    SSL3_RANDOM_SIZE ||
	    SSL_get_client_random(ssl, seed + 13 + SSL3_RANDOM_SIZE,
				  SSL3_RANDOM_SIZE) != SSL3_RANDOM_SIZE) {
		OPENSSL_cleanse(ms, sizeof(ms));
		return -EINVAL;
	}
	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						(char *)EVP_MD_get0_name(md),
						0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, ms,
						 mslen);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed,
						 sizeof(seed));
	p[3] = OSSL_PARAM_construct_end();
	ret = kdf(OSSL_KDF_NAME_TLS1_PRF, p, block, 2 * (klen + ivlen));
	if (ret == 0) {
		memcpy(key, block + (client ? 0 : klen), klen);
		memcpy(iv, block + 2 * klen + (client ? 0 : ivlen), ivlen);
	}
	OPENSSL_cleanse(ms, sizeof(ms));
	OPENSSL_cleanse(block, sizeof(block));
	return ret;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

/* The 8 bytes at p as a big-endian counter, plus one. */
static void inc_be64(unsigned char *p)
{
	int i = 8;

	while (i-- > 0 && ++p[i] == 0)
		;
}

int corio__ktls_crypto_info(const struct corio_ktls *k, SSL *ssl, bool tx,
			    uint64_t rx_early, union corio_ktls_info *out)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
	int v = SSL_version(ssl), nid = c ? SSL_CIPHER_get_cipher_nid(c) : 0;
	bool chacha = nid == NID_chacha20_poly1305;
	/* TLS 1.2 AES-GCM: a 4-byte implicit salt, 8 explicit bytes sent
	 * in each record; otherwise a 12-byte IV xor the sequence number. */
	size_t klen = nid == NID_aes_128_gcm ? 16 : 32;
	size_t ivlen = v == TLS1_3_VERSION || chacha ? 12 : 4;
	unsigned char key[32], iv[12], seq[8], nonce[8];
	bool client = !SSL_is_server(ssl);
	uint64_t nr;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!md || !kernel_cipher(nid))
		return -EINVAL;
	if (v == TLS1_3_VERSION) {
		ret = expand_label(md, k->secret[tx ? 0 : 1],
				   k->secret_len[tx ? 0 : 1], "key", key, klen);
		if (ret == 0)
			ret = expand_label(md, k->secret[tx ? 0 : 1],
					   k->secret_len[tx ? 0 : 1], "iv",
					   iv, ivlen);
		nr = tx ? k->out.nr - k->tx_mark : rx_early;
	} else if (v == TLS1_2_VERSION) {
		ret = tls12_keys(ssl, md, tx == client, key, klen, iv, ivlen);
		nr = tx ? k->out.since_ccs : 1 + rx_early;
	} else {
		return -EINVAL;
	}
	if (ret < 0)
		goto out;
	put_be64(seq, nr);
	/* The first explicit nonce the kernel sends: the one after ours,
	 * as OpenSSL would have gone on (its first was random), so that
	 * none repeats under the key.  The kernel reads the peer's from
	 * its records. */
	if (tx && v == TLS1_2_VERSION && !chacha) {
		memcpy(nonce, k->out.head, sizeof(nonce));
		inc_be64(nonce);
	} else {
		memcpy(nonce, v == TLS1_3_VERSION ? iv + 4 : seq,
		       sizeof(nonce));
	}
	out->info.version = (unsigned short)v;
	switch (nid) {
	case NID_aes_128_gcm:
		out->info.cipher_type = TLS_CIPHER_AES_GCM_128;
		memcpy(out->gcm128.key, key, klen);
		memcpy(out->gcm128.salt, iv, 4);
		memcpy(out->gcm128.iv, nonce, 8);
		memcpy(out->gcm128.rec_seq, seq, 8);
		break;
	case NID_aes_256_gcm:
		out->info.cipher_type = TLS_CIPHER_AES_GCM_256;
		memcpy(out->gcm256.key, key, klen);
		memcpy(out->gcm256.salt, iv, 4);
		memcpy(out->gcm256.iv, nonce, 8);
		memcpy(out->gcm256.rec_seq, seq, 8);
		break;
	default:
		out->info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		memcpy(out->chacha.key, key, klen);
		memcpy(out->chacha.iv, iv, 12);
		memcpy(out->chacha.rec_seq, seq, 8);
		break;
	}
out:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return ret;
}

static socklen_t info_len(const union corio_ktls_info *i)
{
	switch (i->info.cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		return sizeof(i->gcm128);
	case TLS_CIPHER_AES_GCM_256:
		return sizeof(i->gcm256);
	default:
		return sizeof(i->chacha);
	}
}

void corio__ktls_set(struct corio_ktls *k, SSL *ssl, int fd,
		     uint64_t rx_early)
{
	union corio_ktls_info rx, tx;

	memset(&tx, 0, sizeof(tx));
	if (corio__ktls_crypto_info(k, ssl, false, rx_early, &rx) < 0 ||
	    (k->tx_ok && corio__ktls_crypto_info(k, ssl, true, 0, &tx) < 0)) {
		no(k, "the keys could not be derived");
		goto out;
	}
	if (setsockopt(fd, SOL_TLS, TLS_RX, &rx, info_len(&rx)) < 0) {
		no(k, "TLS_RX: %s", strerror(errno));
		goto out;
	}
	k->dirs = CORIO_KTLS_RX;
	k->rx.version = SSL_version(ssl);
	if (!k->tx_ok)
		goto out;	/* why says why */
	if (setsockopt(fd, SOL_TLS, TLS_TX, &tx, info_len(&tx)) < 0) {
		no(k, "TLS_TX: %s", strerror(errno));
		goto out;
	}
	k->dirs |= CORIO_KTLS_TX;
	k->why[0] = 0;
out:
	OPENSSL_cleanse(&rx, sizeof(rx));
	OPENSSL_cleanse(&tx, sizeof(tx));
}

void corio__ktls_end(struct corio_ktls *k, SSL *ssl)
{
	k->track = false;
	OPENSSL_cleanse(k->secret, sizeof(k->secret));
	memset(k->secret_len, 0, sizeof(k->secret_len));
	if (ssl && ssl_idx >= 0)
		SSL_set_ex_data(ssl, ssl_idx, NULL);
}

/* ---- after the handover ------------------------------------------------- */

ssize_t corio__ktls_recv(struct corio_ktls *k, int fd, void *buf, size_t len,
			 char *err, size_t errlen)
{
	struct corio_ktls_rx *rx = &k->rx;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(unsigned char))];
	} c;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr m;
	struct cmsghdr *h;
	ssize_t n;
	int type, r;

	for (;;) {
		if (rx->closed)
			return 0;
		memset(&m, 0, sizeof(m));
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = c.b;
		m.msg_controllen = sizeof(c.b);
		n = corio_recvmsg(fd, &m, 0);
		switch (n) {
		case -EBADMSG:
			fail(rx, "read: a record failed to decrypt (kTLS)");
			goto proto;
		case -EMSGSIZE:
			fail(rx, "read: a record too long (kTLS)");
			goto proto;
		case -EKEYEXPIRED:
			fail(rx, "read: records after a KeyUpdate (kTLS)");
			goto proto;
		default:
			if (n < 0)
				return n;
		}
		type = -1;
		for (h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
			if (h->cmsg_level == SOL_TLS &&
			    h->cmsg_type == TLS_GET_RECORD_TYPE)
				type = *CMSG_DATA(h);
		if (type < 0) {
			if (n == 0) {
				snprintf(err, errlen, "read: the peer closed "
					 "the connection without "
					 "close_notify");
				return -ECONNRESET;
			}
			/* The kernel labels what it decrypted. */
			type = REC_DATA;
		}
		r = corio__ktls_record(rx, type, buf, (size_t)n);
		if (r == CORIO_KTLS_DATA)
			return n;
		if (r == 0)
			return 0;
		if (r < 0)
			goto proto;
	}
proto:
	snprintf(err, errlen, "%s", rx->why);
	return -EPROTO;
}

int corio__ktls_close(int fd)
{
	unsigned char close_notify[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(unsigned char))];
	} c;
	struct iovec iov = { .iov_base = close_notify, .iov_len = 2 };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = c.b, .msg_controllen = sizeof(c.b),
	};
	struct cmsghdr *h;
	ssize_t n;

	memset(&c, 0, sizeof(c));
	h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_TLS;
	h->cmsg_type = TLS_SET_RECORD_TYPE;
	h->cmsg_len = CMSG_LEN(sizeof(unsigned char));
	*CMSG_DATA(h) = REC_ALERT;
	n = corio_sendmsg(fd, &m, 0);
	return n < 0 ? (int)n : 0;
}

#else	/* !CORIO_HAVE_KTLS: the kernel's headers have no kTLS */

void corio__ktls_forget(void)
{
}

bool corio__ktls_track(struct corio_ktls *k, SSL *ssl, int fd)
{
	(void)ssl, (void)fd;
	snprintf(k->why, sizeof(k->why), "built without linux/tls.h");
	return false;
}

void corio__ktls_call_end(struct corio_ktls *k)
{
	(void)k;
}

bool corio__ktls_ready(struct corio_ktls *k, SSL *ssl)
{
	(void)k, (void)ssl;
	return false;
}

int corio__ktls_attach(struct corio_ktls *k, int fd)
{
	(void)k, (void)fd;
	return -ENOTSUP;
}

void corio__ktls_watch(struct corio_ktls *k, SSL *ssl, bool on)
{
	(void)k, (void)ssl, (void)on;
}

void corio__ktls_set(struct corio_ktls *k, SSL *ssl, int fd,
		     uint64_t rx_early)
{
	(void)k, (void)ssl, (void)fd, (void)rx_early;
}

void corio__ktls_end(struct corio_ktls *k, SSL *ssl)
{
	(void)k, (void)ssl;
}

ssize_t corio__ktls_recv(struct corio_ktls *k, int fd, void *buf, size_t len,
			 char *err, size_t errlen)
{
	(void)k, (void)fd, (void)buf, (void)len, (void)err, (void)errlen;
	return -ENOTSUP;
}

int corio__ktls_close(int fd)
{
	(void)fd;
	return -ENOTSUP;
}

#endif	/* CORIO_HAVE_KTLS */
#endif	/* CORIO_HAVE_TLS */
