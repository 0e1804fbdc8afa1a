/*
 * zerocopy.c - sends that copy nothing to or from user space:
 * corio_send_zc (IORING_OP_SEND_ZC) and corio_sendfile (a file to a
 * socket through a pipe with IORING_OP_SPLICE).
 *
 * A zero-copy send posts two CQEs: the result (flagged MORE) and, once the
 * kernel no longer reads the buffer, a notification (NOTIF).  The loop's
 * reap wakes the waiter at the second (loop.c), so the await returns only
 * when the buffer may be reused, as io.c's memory rule asks.  Where the
 * kernel or the socket refuses zero copy (-EOPNOTSUPP, AF_UNIX for one),
 * the send is made again as a plain send; the refusal is remembered per
 * loop only for a kernel without the opcode.
 *
 * corio_sendfile moves file pages into a pipe and from the pipe to the
 * socket (without IORING_OP_SPLICE, through a buffer instead).  Pipes are kept per loop and reused; a pipe that may still hold
 * bytes (a splice into the socket failed or was cancelled) is closed, not
 * reused, so no stale byte reaches another send.
 */
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "corio-int.h"

#define SPLICE_CHUNK	(1u << 20)	/* per round trip through the pipe */
#define PIPES_KEPT	8

ssize_t corio_send_zc(int fd, const void *buf, size_t len, int flags)
{
	struct corio_task *t = corio__current();
	unsigned int n = len > 0x7ffff000u ? 0x7ffff000u : (unsigned int)len;
	struct io_uring_sqe *sqe;
	int ret;

	if (!t)
		return -EPERM;
	if ((t->loop->disabled & CORIO_FEAT_SEND_ZC) ||
	    !corio__loop_has_op(t->loop, IORING_OP_SEND_ZC))
		return corio_send(fd, buf, len, flags);
	/* The SQE is copied by corio_await, for a resubmission. */
	ret = corio__op_check(t, true);
	if (ret < 0)
		return ret;
	sqe = corio_sqe();
	io_uring_prep_send_zc(sqe, fd, buf, n, flags | MSG_NOSIGNAL, 0);
	ret = corio_await(sqe);
	if (ret == -EOPNOTSUPP)
		return corio_send(fd, buf, len, flags);
	return ret;
}

/* What this layer keeps in a loop: pipes to reuse. */
struct pipes {
	struct corio_layer_state ls;	/* first: the state is its ls */
	int fds[PIPES_KEPT][2];
	unsigned int nr;
};

static void pipes_fini(struct corio_loop *loop, struct corio_layer_state *s)
{
	struct pipes *p = (struct pipes *)s;

	(void)loop;
	while (p->nr--) {
		close(p->fds[p->nr][0]);
		close(p->fds[p->nr][1]);
	}
	free(p);
}

static const struct corio_layer pipes_layer = { .fini = pipes_fini };

static int pipe_get(struct corio_loop *loop, int fds[2])
{
	struct pipes *p = (struct pipes *)corio__loop_state(loop,
							     &pipes_layer);

	if (p && p->nr) {
		p->nr--;
		fds[0] = p->fds[p->nr][0];
		fds[1] = p->fds[p->nr][1];
		return 0;
	}
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	/* Bigger than the default 64 KiB: fewer round trips; a refusal
	 * (pipe-max-size, pipe-user-pages-soft) only costs more of them. */
	(void)fcntl(fds[1], F_SETPIPE_SZ, SPLICE_CHUNK);
	return 0;
}

static void pipe_put(struct corio_loop *loop, int fds[2], bool clean)
{
	struct pipes *p = (struct pipes *)corio__loop_state(loop,
							     &pipes_layer);

	if (clean && !p && (p = calloc(1, sizeof(*p))))
		corio__loop_attach(loop, &p->ls, &pipes_layer);
	if (clean && p && p->nr < PIPES_KEPT) {
		p->fds[p->nr][0] = fds[0];
		p->fds[p->nr][1] = fds[1];
		p->nr++;
		return;
	}
	close(fds[0]);
	close(fds[1]);
}

/* Without splice (CORIO_DISABLE=splice): through a buffer, as before. */
static CORIO_COLD ssize_t sendfile_copy(int out_fd, int in_fd, uint64_t *off,
					size_t len)
{
	size_t cap = len < SPLICE_CHUNK ? len : SPLICE_CHUNK, sent = 0, done;
	uint64_t pos = off ? *off : (uint64_t)-1;
	char *buf = malloc(cap);
	ssize_t n = 0, m;

	if (!buf)
		return -ENOMEM;
	while (sent < len) {
		n = corio_read(in_fd, buf, len - sent < cap ? len - sent : cap,
			       pos);
		if (n <= 0)
			break;
		for (done = 0; done < (size_t)n; done += (size_t)m) {
			m = corio_send(out_fd, buf + done, (size_t)n - done, 0);
			if (m <= 0) {
				n = m < 0 ? m : -EIO;
				sent += done;
				goto out;
			}
		}
		sent += (size_t)n;
		if (off)
			pos += (uint64_t)n;
	}
out:
	free(buf);
	if (off)
		*off += sent;
	return sent ? (ssize_t)sent : n;
}

ssize_t corio_sendfile(int out_fd, int in_fd, uint64_t *off, size_t len)
{
	struct corio_task *t = corio__current();
	int64_t pos = off ? (int64_t)*off : -1;
	size_t sent = 0;
	bool clean = true;
	int fds[2];
	ssize_t n = 0, m;

	if (!t)
		return -EPERM;
	if (out_fd < 0 || in_fd < 0 || (off && *off > INT64_MAX))
		return -EINVAL;
	if (len == 0)
		return 0;
	if ((t->loop->disabled & CORIO_FEAT_SPLICE) ||
	    !corio__loop_has_op(t->loop, IORING_OP_SPLICE))
		return sendfile_copy(out_fd, in_fd, off, len);
	n = pipe_get(t->loop, fds);
	if (n < 0)
		return n;
	while (sent < len) {
		size_t want = len - sent < SPLICE_CHUNK ? len - sent :
			      SPLICE_CHUNK;

		n = corio_splice(in_fd, pos, fds[1], -1, (unsigned int)want,
				 SPLICE_F_MOVE);
		if (n <= 0)
			break;	/* EOF, or an error: nothing in the pipe */
		if (pos >= 0)
			pos += n;
		/* All of it out of the pipe before the next read. */
		while (n > 0) {
			m = corio_splice(fds[0], -1, out_fd, -1,
					 (unsigned int)n, SPLICE_F_MOVE);
			if (m <= 0) {
				clean = false;	/* bytes left in the pipe */
				n = m < 0 ? m : -EIO;
				goto out;
			}
			n -= m;
			sent += (size_t)m;
		}
	}
out:
	pipe_put(t->loop, fds, clean);
	if (off)
		*off += sent;
	/* What moved counts, as with a short write; else the error. */
	return sent ? (ssize_t)sent : n;
}
