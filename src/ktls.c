/*
 * ktls.c - the kernel's TLS offload (kTLS) under TLS streams.
 *
 * After a handover the kernel decrypts every record and labels its type
 * in a cmsg; corio__ktls_record says what a record that is not data
 * means: close_notify is EOF, other alerts -EPROTO (but TLS 1.2 warnings
 * and TLS 1.3 user_canceled are skipped, as OpenSSL does), session
 * tickets and a TLS 1.2 HelloRequest are skipped, a KeyUpdate or any
 * other handshake message -EPROTO: corio does not rekey the kernel.
 */
#include <stdarg.h>
#include <string.h>

#include "corio-int.h"

/* TLS record content types (RFC 8446, 5.1). */
#define REC_ALERT	21
#define REC_HANDSHAKE	22
#define REC_DATA	23

#if CORIO_HAVE_TLS

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

#endif	/* CORIO_HAVE_TLS */
