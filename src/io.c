/*
 * io.c - awaiting SQEs: corio_sqe, corio_await and the op wrappers.
 *
 * Every await goes through corio__op_submit: the SQE's user_data becomes a
 * struct corio_waiter on the task's stack, a LINK_TIMEOUT follows it when
 * the task has a deadline, and the task parks until the op's last CQE.
 * op_result() is the one place a CQE's res is translated: a cancelled op's
 * -ECANCELED/-EINTR is -ECANCELED, a deadline's is -ETIMEDOUT, corio_close's
 * is -EBADF (corio__op_res_closed, at reap time).  An -EINTR or -ECANCELED
 * that neither a cancellation, a deadline nor a close caused is resubmitted
 * (op_spurious): the op did nothing, and the task never asked to stop.
 * Everything else passes through unchanged.
 *
 * Wrappers whose op writes user memory mark the bytes it reports as
 * defined for valgrind, which cannot see the kernel write them.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "corio-int.h"

#if CORIO_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#define vg_defined(p, n)	VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define vg_defined(p, n)	((void)(p), (void)(n))
#endif

#ifndef IORING_TIMEOUT_MULTISHOT
#define IORING_TIMEOUT_MULTISHOT	(1U << 6)
#endif
#define OP_READ_MULTISHOT		49	/* not in liburing 2.3 */

/* The kernel moves at most this much in one read or write. */
#define MAX_RW_COUNT	0x7ffff000u

/* Given out by corio_sqe outside a task, so a prep helper cannot crash. */
static CORIO_TLS struct io_uring_sqe scratch_sqe;

/* corio_cancel's hook for a task parked on an op. */
void corio__op_cancel(struct corio_task *t)
{
	struct corio_waiter *w = t->park_data;
	struct io_uring_sqe *sqe;

	if (w->cancel_sent || w->done)
		return;
	sqe = corio__loop_sqe(t->loop);
	io_uring_prep_cancel64(sqe, corio__waiter_ud(w), 0);
	sqe->user_data = CORIO_UD_INTERNAL;
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	w->cancel_sent = true;
}

/*
 * A cancelled op's CQE arrived while a corio_close of its fd was pending:
 * it was cancelled by that close, so its task sees -EBADF.
 */
int corio__op_res_closed(struct corio_loop *loop, struct corio_waiter *w)
{
	struct corio_closing *c;

	if ((w->res != -ECANCELED && w->res != -EINTR) || w->cancel_sent ||
	    w->fd < 0 || w->opcode == IORING_OP_CLOSE)
		return w->res;
	for (c = loop->closing; c; c = c->next)
		if (c->fd == w->fd)
			return -EBADF;
	return w->res;
}

/*
 * Parks t on sqe until its last CQE and returns the raw res.  With
 * CORIO_OP_DEADLINE and a deadline, a LINK_TIMEOUT follows the op (room
 * for it was reserved by corio__loop_sqe); its own CQE is skipped on
 * success and tagged internal otherwise, so it never wakes a task.
 */
static inline __attribute__((always_inline)) int
op_submit(struct corio_task *t, struct corio_waiter *w,
	  struct io_uring_sqe *sqe, unsigned int flags)
{
	struct corio_loop *loop = t->loop;

	w->task = t;
	w->opcode = sqe->opcode;
	/* The fd corio_close may cancel it by (a socket op's is a domain). */
	w->fd = sqe->flags & IOSQE_FIXED_FILE || sqe->opcode == IORING_OP_SOCKET
		? -1 : sqe->fd;
	w->cancel_sent = false;
	w->done = false;
	w->linked = false;
	w->gen = ++loop->next_gen & CORIO_UD_GEN_MASK;
	sqe->user_data = corio__waiter_ud(w);
	if ((flags & CORIO_OP_DEADLINE) && t->deadline_ns) {
		struct io_uring_sqe *lt = io_uring_get_sqe(&loop->ring);

		if (corio_unlikely(!lt))
			corio__bug("no SQE reserved for a LINK_TIMEOUT");
		sqe->flags |= IOSQE_IO_LINK;
		corio__ts_from_ns(&w->ts, t->deadline_ns);
		io_uring_prep_link_timeout(lt, &w->ts, IORING_TIMEOUT_ABS);
		lt->user_data = CORIO_UD_INTERNAL;
		lt->flags |= IOSQE_CQE_SKIP_SUCCESS;
		w->linked = true;
	}
	loop->stats.ops_in_flight++;
	corio__task_park(t, (flags & CORIO_OP_NOCANCEL) ? NULL : corio__op_cancel,
			  w);
	return w->res;
}

int corio__op_submit(struct corio_task *t, struct corio_waiter *w,
		     struct io_uring_sqe *sqe, unsigned int flags)
{
	return op_submit(t, w, sqe, flags);
}

static CORIO_COLD int op_result_slow(struct corio_task *t,
				     struct corio_waiter *w, int res)
{
	if (w->cancel_sent || corio__task_stopped(t))
		return -ECANCELED;
	if (w->linked && corio__time_now() >= t->deadline_ns)
		return -ETIMEDOUT;
	return res;
}

static inline int op_result(struct corio_task *t, struct corio_waiter *w,
			    int res)
{
	if (corio_likely(res != -ECANCELED && res != -EINTR))
		return res;
	return op_result_slow(t, w, res);
}

/*
 * An -EINTR or -ECANCELED that nobody asked for: no corio_cancel reached
 * the op, the task may go on, and its deadline (if the op had one) has not
 * passed.  A corio_close's cancel was turned into -EBADF at reap time.
 * The kernel ends such an op before it moves a byte, so it may simply be
 * submitted again.
 */
bool corio__op_spurious(struct corio_task *t, const struct corio_waiter *w,
			int res)
{
	if (res != -EINTR && res != -ECANCELED)
		return false;
	if (w->cancel_sent || corio__task_stopped(t))
		return false;
	return !(w->linked && corio__time_now() >= t->deadline_ns);
}

/*
 * Awaits a prepared SQE with the task's deadline.  A spurious end comes
 * back as -EINTR for the caller to prepare the op again (OP_AWAIT): -EINTR
 * never escapes an await, an uncancelled task never sees -ECANCELED, and an
 * await copies no SQE for the rare retry.
 */
static inline __attribute__((always_inline)) int
op_await(struct corio_task *t, struct io_uring_sqe *sqe)
{
	struct corio_waiter w;
	int res = op_submit(t, &w, sqe, CORIO_OP_DEADLINE);

	if (corio_unlikely(res == -EINTR || res == -ECANCELED) &&
	    corio__op_spurious(t, &w, res))
		return -EINTR;
	return op_result(t, &w, res);
}

struct io_uring_sqe *corio_sqe(void)
{
	struct corio_task *t = corio__current();

	struct io_uring_sqe *sqe;

	if (corio_unlikely(!t))
		return &scratch_sqe;
	sqe = corio__loop_sqe(t->loop);
	/* Never awaited, it still completes into an ignored CQE. */
	sqe->user_data = CORIO_UD_INTERNAL;
	return sqe;
}

/*
 * Gives back an SQE that will not be awaited: the last one handed out is
 * simply not published; any other becomes an internal NOP that posts no
 * CQE.
 */
static void sqe_drop(struct io_uring *ring, struct io_uring_sqe *sqe)
{
	struct io_uring_sq *sq = &ring->sq;

	if (sq->sqe_tail != sq->sqe_head &&
	    sqe == &sq->sqes[(sq->sqe_tail - 1) & sq->ring_mask]) {
		sq->sqe_tail--;
		return;
	}
	io_uring_prep_nop(sqe);
	sqe->user_data = CORIO_UD_INTERNAL;
	sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
}

/* An SQE the await model cannot serve: one CQE per SQE, no chains. */
static bool sqe_unservable(const struct io_uring_sqe *sqe)
{
	if (sqe->flags & (IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK |
			  IOSQE_IO_HARDLINK))
		return true;
	switch (sqe->opcode) {
	case IORING_OP_ACCEPT:
		return sqe->ioprio & IORING_ACCEPT_MULTISHOT;
	case IORING_OP_RECV:
	case IORING_OP_RECVMSG:
		return sqe->ioprio & IORING_RECV_MULTISHOT;
	case IORING_OP_POLL_ADD:
		return sqe->len & IORING_POLL_ADD_MULTI;
	case IORING_OP_TIMEOUT:
		return sqe->timeout_flags & IORING_TIMEOUT_MULTISHOT;
	case OP_READ_MULTISHOT:
		return true;
	default:
		return false;
	}
}

int corio_await(struct io_uring_sqe *sqe)
{
	struct corio_task *t = corio__current();
	struct io_uring_sqe copy;
	struct io_uring *ring;
	int ret;

	if (!sqe)
		return -EINVAL;
	if (!t || sqe == &scratch_sqe)
		return -EPERM;
	ring = &t->loop->ring;
	if ((size_t)(sqe - ring->sq.sqes) >= ring->sq.ring_entries)
		return -EINVAL;
	ret = sqe_unservable(sqe) ? -EINVAL : corio__op_check(t, true);
	if (ret < 0) {
		sqe_drop(ring, sqe);
		return ret;
	}
	/* A caller's SQE cannot be prepared again: keep a copy for that. */
	memcpy(&copy, sqe, sizeof(copy));
	while ((ret = op_await(t, sqe)) == -EINTR) {
		ret = corio__op_check(t, true);
		if (ret < 0)
			return ret;
		sqe = corio__loop_sqe(t->loop);
		memcpy(sqe, &copy, sizeof(*sqe));
	}
	return ret;
}

/* Checks the task, then hands out the SQE of one wrapper's op. */
static inline struct io_uring_sqe *op_begin(struct corio_task *t, int *ret)
{
	*ret = corio__op_check(t, true);
	if (corio_unlikely(*ret < 0))
		return NULL;
	return corio__loop_sqe(t->loop);
}

/*
 * One wrapper's op: PREP fills sqe (a local of this macro) and runs again
 * when the op must be resubmitted after an -EINTR.  ret gets the result.
 */
#define OP_AWAIT(t, ret, PREP)						\
	do {								\
		struct io_uring_sqe *sqe = op_begin((t), &(ret));	\
									\
		if (!sqe)						\
			break;						\
		PREP;							\
		(ret) = op_await((t), sqe);				\
	} while ((ret) == -EINTR)

static unsigned int rw_len(size_t len)
{
	return len > MAX_RW_COUNT ? MAX_RW_COUNT : (unsigned int)len;
}

/* Marks the first n bytes an op wrote across iov as defined. */
static void vg_defined_iov(const struct iovec *iov, int iovcnt, ssize_t n)
{
	int i;

	for (i = 0; i < iovcnt && n > 0; i++) {
		size_t part = iov[i].iov_len < (size_t)n ? iov[i].iov_len :
			      (size_t)n;

		vg_defined(iov[i].iov_base, part);
		n -= (ssize_t)part;
	}
}

ssize_t corio_read(int fd, void *buf, size_t len, uint64_t off)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_read(sqe, fd, buf, rw_len(len), off));
	if (ret > 0)
		vg_defined(buf, (size_t)ret);
	return ret;
}

ssize_t corio_write(int fd, const void *buf, size_t len, uint64_t off)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_write(sqe, fd, buf, rw_len(len), off));
	return ret;
}

ssize_t corio_readv(int fd, const struct iovec *iov, int iovcnt,
		    uint64_t off)
{
	struct corio_task *t = corio__current();
	int ret;

	if (iovcnt < 0)
		return -EINVAL;
	OP_AWAIT(t, ret,
		 io_uring_prep_readv(sqe, fd, iov, (unsigned int)iovcnt, off));
	vg_defined_iov(iov, iovcnt, ret);
	return ret;
}

ssize_t corio_writev(int fd, const struct iovec *iov, int iovcnt,
		     uint64_t off)
{
	struct corio_task *t = corio__current();
	int ret;

	if (iovcnt < 0)
		return -EINVAL;
	OP_AWAIT(t, ret,
		 io_uring_prep_writev(sqe, fd, iov, (unsigned int)iovcnt, off));
	return ret;
}

ssize_t corio_recv(int fd, void *buf, size_t len, int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_recv(sqe, fd, buf, rw_len(len), flags));
	if (ret > 0)
		vg_defined(buf, (size_t)ret);
	return ret;
}

ssize_t corio_send(int fd, const void *buf, size_t len, int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_send(sqe, fd, buf, rw_len(len),
				    flags | MSG_NOSIGNAL));
	return ret;
}

ssize_t corio_recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_recvmsg(sqe, fd, msg, (unsigned int)flags));
	if (ret >= 0 && msg) {
		vg_defined(msg, sizeof(*msg));
		vg_defined_iov(msg->msg_iov, (int)msg->msg_iovlen, ret);
		if (msg->msg_name)
			vg_defined(msg->msg_name, msg->msg_namelen);
		if (msg->msg_control)
			vg_defined(msg->msg_control, msg->msg_controllen);
	}
	return ret;
}

ssize_t corio_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_sendmsg(sqe, fd, msg,
				       (unsigned int)(flags | MSG_NOSIGNAL)));
	return ret;
}

int corio_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
		 int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_accept(sqe, fd, addr, addrlen,
				      flags | SOCK_CLOEXEC));
	if (ret >= 0 && addr && addrlen) {
		vg_defined(addrlen, sizeof(*addrlen));
		vg_defined(addr, *addrlen);
	}
	return ret;
}

/*
 * A connect submitted again (after a spurious -ECANCELED or -EINTR) finds
 * the first attempt under way: -EALREADY.  Its outcome is then the
 * socket's once it is writable, as for a nonblocking connect(2).
 */
static CORIO_COLD int connect_finish(int fd)
{
	socklen_t len = sizeof(int);
	int ret, err = 0;

	ret = corio_poll(fd, POLLOUT);
	if (ret < 0)
		return ret;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

int corio_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	struct corio_task *t = corio__current();
	int ret, tries = 0;

	OP_AWAIT(t, ret,
		 (tries++, io_uring_prep_connect(sqe, fd, addr, addrlen)));
	if (corio_unlikely(ret == -EALREADY) && tries > 1)
		ret = connect_finish(fd);
	return ret;
}

int corio_openat(int dfd, const char *path, int flags, mode_t mode)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_openat(sqe, dfd, path, flags | O_CLOEXEC, mode));
	return ret;
}

int corio_fsync(int fd, unsigned int fsync_flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_fsync(sqe, fd, fsync_flags));
	return ret;
}

int corio_statx(int dfd, const char *path, int flags, unsigned int mask,
		struct statx *statxbuf)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_statx(sqe, dfd, path, flags, mask, statxbuf));
	if (ret == 0 && statxbuf)
		vg_defined(statxbuf, sizeof(*statxbuf));
	return ret;
}

int corio_shutdown(int fd, int how)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_shutdown(sqe, fd, how));
	return ret;
}

int corio_poll(int fd, unsigned int poll_mask)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_poll_add(sqe, fd, poll_mask));
	return ret;
}

ssize_t corio_splice(int fd_in, int64_t off_in, int fd_out, int64_t off_out,
		     unsigned int nbytes, unsigned int splice_flags)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret,
		 io_uring_prep_splice(sqe, fd_in, off_in, fd_out, off_out,
				      rw_len(nbytes), splice_flags));
	return ret;
}

int corio_socket(int domain, int type, int protocol, unsigned int flags)
{
	struct corio_task *t = corio__current();
	int ret;

	if (t && !corio__loop_has_op(t->loop, IORING_OP_SOCKET)) {
		/* Kernels before 5.19 lack IORING_OP_SOCKET. */
		ret = corio__op_check(t, true);
		if (ret < 0)
			return ret;
		ret = socket(domain, type | SOCK_CLOEXEC, protocol);
		return ret < 0 ? -errno : ret;
	}
	OP_AWAIT(t, ret,
		 io_uring_prep_socket(sqe, domain, type | SOCK_CLOEXEC,
				      protocol, flags));
	return ret;
}

int corio_nop(void)
{
	struct corio_task *t = corio__current();
	int ret;

	OP_AWAIT(t, ret, io_uring_prep_nop(sqe));
	return ret;
}

/*
 * Cancels this loop's ops on fd first (their tasks get -EBADF, translated
 * at reap time while the closing record is linked), then closes it.  The
 * cancel is hard-linked to the close so the close starts after the
 * cancelled ops' completions are queued, whatever the cancel's result.
 * Runs even in a cancelled task and past the deadline.
 */
int corio_close(int fd)
{
	struct corio_task *t = corio__current();
	struct corio_loop *loop;
	struct corio_closing c, **pp;
	struct corio_waiter w;
	struct io_uring_sqe *sqe;
	int ret;

	if (!t)
		return -EPERM;
	loop = t->loop;
	c.fd = fd;
	c.next = loop->closing;
	loop->closing = &c;
	sqe = corio__loop_sqe(loop);
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	sqe->user_data = CORIO_UD_INTERNAL;
	sqe->flags |= IOSQE_IO_HARDLINK;
	sqe = io_uring_get_sqe(&loop->ring);	/* reserved by the above */
	io_uring_prep_close(sqe, fd);
	ret = corio__op_submit(t, &w, sqe, CORIO_OP_NOCANCEL);
	/* A spurious cancel (corio__op_spurious) left fd open: close it. */
	while (corio_unlikely(ret == -ECANCELED)) {
		sqe = corio__loop_sqe(loop);
		io_uring_prep_close(sqe, fd);
		ret = corio__op_submit(t, &w, sqe, CORIO_OP_NOCANCEL);
	}
	for (pp = &loop->closing; *pp != &c; pp = &(*pp)->next)
		;
	*pp = c.next;
	return ret == -EINTR ? 0 : ret;
}
