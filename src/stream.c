/*
 * stream.c - buffered streams over an fd: asyncio's StreamReader and
 * StreamWriter in one handle.
 *
 * A stream owns its fd (from corio_stream_new until corio_stream_close,
 * or until corio_stream_free hands it back) and two malloc'd buffers of
 * buf_size bytes each, made once by corio_stream_new: nothing is allocated
 * per call.  All I/O goes through io.c's corio_read, corio_write and
 * corio_writev at the file position ((uint64_t)-1), so every suspension is
 * an ordinary op await: a cancellation point that honours the deadline,
 * whose errors pass through unchanged.
 *
 * Invariants, true whenever no call is suspended in the middle:
 * - rbuf[rpos, rend) are the bytes read from fd and not yet returned, in
 *   order; 0 <= rpos <= rend <= buf_size.  A failed call (EOF, error,
 *   cancellation, deadline) leaves every byte it took from fd in there,
 *   except readexactly of more than buf_size bytes, which reads straight
 *   into the caller's buffer.
 * - wbuf[0, wlen) are bytes accepted by corio_stream_write and not yet
 *   written to fd, in order; after a successful write or flush
 *   wlen < buf_size.
 * The read side (rbuf, rpos, rend) and the write side (wbuf, wlen) share
 * nothing, so one reading task and one writing task may each be suspended
 * in the stream at once.  Two readers (or two writers) at once are not
 * supported: both would read into the same free end of rbuf.
 *
 * The delimiter search is corio__stream_scan, a pure function, so that
 * tests/fuzz/fuzz-stream.c can check it against a naive search.
 */
#include <limits.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "corio-int.h"

#define STREAM_BUF_MIN	16u
#define STREAM_BUF_MAX	(256u * 1024u * 1024u)

/* The file position: pipes and sockets have none, files advance theirs. */
#define POS_CURRENT	((uint64_t)-1)

struct corio_stream {
	int fd;
	size_t buf_size;	/* of rbuf and of wbuf each */
	char *rbuf;		/* the reading task's; NULL while empty (rx) */
	size_t rpos, rend;
	char *wbuf;		/* the writing task's */
	size_t wlen;
	corio_receiver *rx;	/* CORIO_STREAM_BUFRING: reads come here */
	struct corio_tls *tls;	/* a TLS stream's: tls.c moves the bytes */
	const char *lent;	/* the rest of rx's last chunk */
	size_t lent_len;
};

/*
 * The first occurrence of delim in buf[0, len) that starts at from or
 * later: returns the offset just past it (the length of the message it
 * ends, always >= delim_len), or 0 if there is none.  A caller that
 * searched a window of w bytes in vain resumes at w - delim_len + 1, so
 * bytes arriving one at a time cost O(n) in all, not O(n^2).
 */
size_t corio__stream_scan(const void *buf, size_t len, const void *delim,
			  size_t delim_len, size_t from)
{
	const char *p = buf, *hit;

	if (delim_len == 0 || from > len || len - from < delim_len)
		return 0;
	if (delim_len == 1)
		hit = memchr(p + from, *(const char *)delim, len - from);
	else
		hit = memmem(p + from, len - from, delim, delim_len);
	return hit ? (size_t)(hit - p) + delim_len : 0;
}

int corio_stream_new(int fd, size_t buf_size, corio_stream **out)
{
	bool bufring = buf_size & CORIO_STREAM_BUFRING;
	struct corio_bufring *br = NULL;
	struct corio_stream *s;
	int ret;

	buf_size &= ~CORIO_STREAM_BUFRING;
	if (fd < 0 || !out)
		return -EINVAL;
	if (buf_size == 0)
		buf_size = CORIO_STREAM_BUF_DEFAULT;
	if (buf_size < STREAM_BUF_MIN || buf_size > STREAM_BUF_MAX)
		return -EINVAL;
	if (bufring) {
		if (!corio__loop)
			return -EPERM;
		/* Without buffer rings (CORIO_DISABLE, Linux before 5.19)
		 * the stream reads as a plain one does. */
		br = corio__bufring_shared(corio__loop, &ret);
		if (!br && ret != -ENOSYS)
			return ret;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (!br) {
		s->rbuf = malloc(buf_size);
		if (!s->rbuf)
			goto err_free_stream;
	} else if (corio_receiver_new(fd, br, &s->rx) < 0) {
		goto err_free_stream;
	}
	s->wbuf = malloc(buf_size);
	if (!s->wbuf)
		goto err_free_rbuf;
	s->fd = fd;
	s->buf_size = buf_size;
	*out = s;
	return 0;

err_free_rbuf:
	free(s->rbuf);
	corio_receiver_free(s->rx);
err_free_stream:
	free(s);
	return -ENOMEM;
}

int corio_stream_fd(const corio_stream *s)
{
	return s ? s->fd : -EINVAL;
}

/*
 * The size from which a read or write skips the stream's buffer: the
 * buffer's own, or on a TLS stream that OpenSSL runs in that direction,
 * one record's plaintext.  There OpenSSL already holds the ciphertext
 * received and the record being read, and encrypts what a write hands
 * it, so the buffer would only add a copy to a read or write of a whole
 * record.
 */
#define TLS_RECORD_PLAIN	16384u

static size_t direct_min(const struct corio_stream *s, int ktls_dir)
{
	if (s->tls && s->buf_size > TLS_RECORD_PLAIN &&
	    !(corio__tls_ktls(s->tls, NULL) & ktls_dir))
		return TLS_RECORD_PLAIN;
	return s->buf_size;
}

/* Hands n buffered bytes to the caller. */
static void take(struct corio_stream *s, void *buf, size_t n)
{
	if (n)
		memcpy(buf, s->rbuf + s->rpos, n);
	s->rpos += n;
	if (s->rpos == s->rend) {
		/* Empty: the next fill needs no memmove.  An idle stream on
		 * a buffer ring holds no read buffer. */
		s->rpos = 0;
		s->rend = 0;
		if (s->rx) {
			free(s->rbuf);
			s->rbuf = NULL;
		}
	}
}

/*
 * Up to len bytes of the receiver's chunks, into dst: >0, 0 at EOF, or
 * -errno (a chunk that arrived stays for the next call).
 */
static ssize_t rx_take(struct corio_stream *s, char *dst, size_t len)
{
	const void *p;
	ssize_t n;

	if (!s->lent_len) {
		n = corio_receiver_next(s->rx, &p);
		if (n <= 0)
			return n;
		s->lent = p;
		s->lent_len = (size_t)n;
	}
	if (len > s->lent_len)
		len = s->lent_len;
	memcpy(dst, s->lent, len);
	s->lent += len;
	s->lent_len -= len;
	if (!s->lent_len) {
		/* All copied: the ring's buffer goes back now, not at the
		 * next read, which an idle stream may never make. */
		s->lent = NULL;
		corio_receiver_release(s->rx);
	}
	return (ssize_t)len;
}

/* A read of the fd, or of the receiver, straight into the caller's buf. */
static ssize_t read_direct(struct corio_stream *s, void *buf, size_t len)
{
	if (s->tls)
		return corio__tls_read(s->tls, buf, len);
	if (s->rx)
		return rx_take(s, buf, len);
	return corio_read(s->fd, buf, len, POS_CURRENT);
}

/*
 * One read into the free end of rbuf, after moving the unread bytes to
 * its start.  Callers come here only with fewer than buf_size bytes
 * buffered, so there is room; the memmove is at most the partial message
 * the caller is waiting to complete.  >0 bytes added, 0 at EOF, or -errno.
 */
static ssize_t fill(struct corio_stream *s)
{
	size_t avail = s->rend - s->rpos;
	ssize_t n;

	if (!s->rbuf) {
		s->rbuf = malloc(s->buf_size);
		if (!s->rbuf)
			return -ENOMEM;
	}
	if (s->rpos > 0) {
		memmove(s->rbuf, s->rbuf + s->rpos, avail);
		s->rpos = 0;
		s->rend = avail;
	}
	n = read_direct(s, s->rbuf + s->rend, s->buf_size - s->rend);
	if (n > 0)
		s->rend += (size_t)n;
	return n;
}

ssize_t corio_stream_read(corio_stream *s, void *buf, size_t len)
{
	size_t avail;
	ssize_t n;

	if (!s || (!buf && len))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (s->rend == s->rpos) {
		/* A read that would fill the whole buffer skips the copy. */
		if (len >= direct_min(s, CORIO_KTLS_RX) || s->lent_len)
			return read_direct(s, buf, len);
		n = fill(s);
		if (n <= 0)
			return n;
	}
	avail = s->rend - s->rpos;
	if (len > avail)
		len = avail;
	take(s, buf, len);
	return (ssize_t)len;
}

ssize_t corio_stream_readexactly(corio_stream *s, void *buf, size_t len)
{
	char *p = buf;
	size_t avail, done;
	ssize_t n;

	if (!s || (!buf && len) || len > SSIZE_MAX)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (len <= s->buf_size) {
		/* Gather in rbuf, so EOF or an error loses nothing. */
		while (s->rend - s->rpos < len) {
			n = fill(s);
			if (n < 0)
				return n;
			if (n == 0)
				return -ENODATA;
		}
		take(s, buf, len);
		return (ssize_t)len;
	}
	/* Bigger than rbuf: what is buffered, then straight into buf. */
	avail = s->rend - s->rpos;
	take(s, p, avail);
	for (done = avail; done < len; done += (size_t)n) {
		n = read_direct(s, p + done, len - done);
		if (n < 0)
			return n;
		if (n == 0)
			return -ENODATA;
	}
	return (ssize_t)len;
}

/*
 * readuntil's work, with readline's -ENODATA as is: the caller checked
 * the arguments.  limit = min(max, buf_size); the delimiter must end
 * within the first limit buffered bytes.
 */
static ssize_t until(struct corio_stream *s, const void *delim,
		     size_t delim_len, void *buf, size_t max)
{
	size_t limit = max < s->buf_size ? max : s->buf_size;
	size_t avail, win, end, from = 0;
	ssize_t n;

	/* Cannot fit, whatever arrives: say so without waiting for it. */
	if (delim_len > limit)
		return -EMSGSIZE;
	for (;;) {
		avail = s->rend - s->rpos;
		win = avail < limit ? avail : limit;
		end = corio__stream_scan(s->rbuf + s->rpos, win, delim,
					 delim_len, from);
		if (end) {
			take(s, buf, end);
			return (ssize_t)end;
		}
		if (avail >= limit)
			return -EMSGSIZE;
		/* win == avail: every start up to avail - delim_len failed. */
		from = avail >= delim_len ? avail - delim_len + 1 : 0;
		n = fill(s);
		if (n < 0)
			return n;
		if (n == 0)
			return -ENODATA;
	}
}

ssize_t corio_stream_readuntil(corio_stream *s, const void *delim,
			       size_t delim_len, void *buf, size_t max)
{
	if (!s || !delim || delim_len == 0 || (!buf && max))
		return -EINVAL;
	return until(s, delim, delim_len, buf, max);
}

ssize_t corio_stream_readline(corio_stream *s, void *buf, size_t max)
{
	ssize_t n;
	size_t avail;

	if (!s || (!buf && max))
		return -EINVAL;
	n = until(s, "\n", 1, buf, max);
	if (n != -ENODATA)
		return n;
	/* EOF: the rest is a last line without its newline, and fits. */
	avail = s->rend - s->rpos;
	take(s, buf, avail);
	return (ssize_t)avail;
}

/*
 * Writes wbuf[0, wlen) and then p[0, len) to fd, in one writev while
 * both have bytes.  On failure the unwritten part of wbuf stays buffered
 * (moved to its start) and p's is dropped.  0 or -errno.
 */
static int drain(struct corio_stream *s, const char *p, size_t len)
{
	struct iovec iov[2];
	size_t off = 0, part;
	ssize_t n;
	int nr;

	/* With kTLS the kernel encrypts what the fd takes: a plain write. */
	if (s->tls && !(corio__tls_ktls(s->tls, NULL) & CORIO_KTLS_TX)) {
		/* Taken whole by OpenSSL: what is not sent yet stays in its
		 * output buffer, ahead of the next write. */
		n = s->wlen ? corio__tls_write(s->tls, s->wbuf, s->wlen) : 0;
		s->wlen = 0;
		if (n >= 0 && len)
			n = corio__tls_write(s->tls, p, len);
		return n < 0 ? (int)n : 0;
	}

	while (off < s->wlen || len > 0) {
		nr = 0;
		if (off < s->wlen) {
			iov[nr].iov_base = s->wbuf + off;
			iov[nr++].iov_len = s->wlen - off;
		}
		if (len > 0) {
			iov[nr].iov_base = (void *)p;
			iov[nr++].iov_len = len;
		}
		if (nr == 1)
			n = corio_write(s->fd, iov[0].iov_base, iov[0].iov_len,
					POS_CURRENT);
		else
			n = corio_writev(s->fd, iov, nr, POS_CURRENT);
		if (corio_unlikely(n <= 0)) {
			memmove(s->wbuf, s->wbuf + off, s->wlen - off);
			s->wlen -= off;
			/* A write that takes nothing would loop forever. */
			return n < 0 ? (int)n : -EIO;
		}
		part = s->wlen - off < (size_t)n ? s->wlen - off : (size_t)n;
		off += part;
		if ((size_t)n > part) {
			/* Not p += 0 when p is NULL: that is undefined. */
			p += (size_t)n - part;
			len -= (size_t)n - part;
		}
	}
	s->wlen = 0;
	return 0;
}

ssize_t corio_stream_write(corio_stream *s, const void *buf, size_t len)
{
	size_t room;
	bool big;
	int ret;

	if (!s || (!buf && len) || len > SSIZE_MAX)
		return -EINVAL;
	if (len == 0)
		return 0;
	room = s->buf_size - s->wlen;
	big = len >= direct_min(s, CORIO_KTLS_TX);
	if (len < room && !big) {
		memcpy(s->wbuf + s->wlen, buf, len);
		s->wlen += len;
		return (ssize_t)len;
	}
	if (big) {
		/* Too big to buffer: out right after the buffered bytes. */
		ret = drain(s, buf, len);
		return ret < 0 ? ret : (ssize_t)len;
	}
	/* The buffer fills: out with the head of buf; the tail stays. */
	ret = drain(s, buf, room);
	if (ret < 0)
		return ret;
	memcpy(s->wbuf, (const char *)buf + room, len - room);
	s->wlen = len - room;
	return (ssize_t)len;
}

int corio_stream_flush(corio_stream *s)
{
	if (!s)
		return -EINVAL;
	if (s->wlen == 0)	/* a TLS stream may still hold ciphertext */
		return s->tls ? corio__tls_flush(s->tls) : 0;
	return drain(s, NULL, 0);
}

int corio_stream_close(corio_stream *s)
{
	int ret, cret;

	if (!s)
		return -EINVAL;
	/* In a cancelled task this is -ECANCELED at once: bytes dropped. */
	ret = corio_stream_flush(s);
	/* Its multishot ends before the fd does, so it cannot re-arm on a
	 * number the fd's close frees for reuse. */
	corio_receiver_free(s->rx);
	s->rx = NULL;
	corio__tls_stop(s->tls);
	/* close_notify, unless the flush failed (the peer is gone). */
	if (s->tls && ret == 0 && corio__current())
		ret = corio__tls_close(s->tls);
	if (corio__current()) {
		cret = corio_close(s->fd);
	} else {
		/* Outside a task corio_close cannot run; the fd must go.
		 * Linux has closed it even when close reports EINTR. */
		cret = close(s->fd) < 0 && errno != EINTR ? -errno : 0;
	}
	corio_stream_free(s);
	return ret < 0 ? ret : cret;
}

void corio_stream_free(corio_stream *s)
{
	if (!s)
		return;
	corio_receiver_free(s->rx);
	corio__tls_free(s->tls);
	free(s->rbuf);
	free(s->wbuf);
	free(s);
}

void corio__stream_set_tls(struct corio_stream *s, struct corio_tls *t)
{
	s->tls = t;
}

bool corio__stream_tls_receiver(const struct corio_stream *s)
{
	return corio__tls_receiver(s->tls);
}

int corio__stream_ktls(const struct corio_stream *s, const char **why)
{
	if (!s->tls) {
		if (why)
			*why = "not a TLS stream";
		return 0;
	}
	return corio__tls_ktls(s->tls, why);
}

int corio_tls_error(const corio_stream *s, char *buf, size_t len)
{
	const char *e;

	if (!buf || !len)
		return -EINVAL;
	if (s && !s->tls)
		return -EINVAL;
	e = corio__tls_errstr(s ? s->tls : NULL);
	snprintf(buf, len, "%s", e);
	return (int)strlen(e);
}

/* A server flushes its replies when no further request is buffered. */
size_t corio_stream_buffered(const corio_stream *s)
{
	if (!s)
		return 0;
	/* And what came through the receiver, which a read takes at once. */
	return s->rend - s->rpos + s->lent_len +
	       (s->rx ? corio__receiver_queued(s->rx) : 0);
}

/* The buffered bytes themselves, to decide whether a read would wait. */
const void *corio_stream_peek(const corio_stream *s, size_t *len)
{
	if (!s) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (s->rend == s->rpos && s->lent_len) {
		/* Still in the receiver's chunk (CORIO_STREAM_BUFRING). */
		if (len)
			*len = s->lent_len;
		return s->lent;
	}
	if (len)
		*len = s->rend - s->rpos;
	return s->rbuf ? s->rbuf + s->rpos : s->lent;
}
