/*
 * bufring.c - provided buffer rings and the receivers that fill them.
 *
 * A corio_bufring is a ring of nbufs buffers of bufsize bytes registered
 * with the kernel (IORING_REGISTER_PBUF_RING): a recv that names the ring
 * gets the next free buffer when data arrives, so an idle connection pins
 * no memory.  A corio_receiver keeps one multishot recv armed on its fd;
 * its CQEs (one per arrival) are queued as chunks on the receiver, and
 * corio_receiver_next lends them out one at a time.
 *
 * Buffer life: in the ring (the kernel may pick it) -> picked, holding
 * chunks -> back in the ring once its last chunk is given back and the
 * kernel is done with it.  refs[bid] counts the chunks out plus one while
 * the kernel still owns the buffer.  With IOU_PBUF_RING_INC (Linux 6.12)
 * the kernel fills a buffer a piece at a time, chunks of several receives
 * (of several sockets) may share it, and it stays the kernel's while CQEs
 * carry IORING_CQE_F_BUF_MORE; off[bid] says where its next data starts.
 * Without INC, a receive takes whole buffers, and with bundles (Linux
 * 6.10) one CQE may cover several, consecutive in ring order: slot_bid and
 * bid_slot remember where each buffer was put.  INC and bundles are not
 * used together: kernels until mid-2026 lose IORING_CQE_F_BUF_MORE on a
 * bundle's retry.
 *
 * Returned buffers are added to the ring at once but published with one
 * io_uring_buf_ring_advance before the loop's next enter (the flush
 * handler's arm, deferred with corio__loop_defer): a batch, no syscall.
 * A multishot that ends with -ENOBUFS (the ring ran dry: consumers hold
 * every buffer) is re-armed at that flush, once buffers came back.
 *
 * Invariants: a receiver's multishot is armed, starved (on its ring's
 * starved list) or ended (end != 0, or stopping); ops_in_flight counts an
 * armed multishot until its last CQE.
 */
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "corio-int.h"

#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE		(1U << 4)
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE		(1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE	(1U << 14)
#endif
#define PBUF_RING_INC			2u	/* IOU_PBUF_RING_INC */

/* The loop's shared ring, for streams (CORIO_STREAM_BUFRING). */
#define SHARED_NBUFS	1024u
#define SHARED_BUFSIZE	4096u

#define END_EOF		1	/* end: the peer closed; else -errno or 0 */

struct corio_bufring {
	struct corio_loop *loop;	/* NULL once the loop has ended */
	struct io_uring_buf_ring *ring;
	char *bufs;
	size_t ring_len, bufs_len;
	unsigned int nbufs, mask;
	uint32_t bufsize;
	uint16_t bgid;
	bool inc;			/* IOU_PBUF_RING_INC */
	bool bundle;			/* receivers ask for bundles */
	unsigned int pending;		/* added since the last advance */
	unsigned int in_ring;		/* buffers the kernel holds */
	uint32_t *off;			/* per buffer: next data (INC) */
	uint32_t *refs;			/* per buffer: see above */
	uint16_t *slot_bid, *bid_slot;	/* ring slot <-> buffer (bundles) */
	unsigned int users;		/* receivers on it */
	struct corio_handler flush;	/* publishes a batch before enter */
	struct corio_receiver *starved;	/* ended by ENOBUFS */
	unsigned long nr_starved;	/* ENOBUFS seen, for the tests */
	struct corio_bufring *next;	/* the loop's */
};

struct chunk {
	const char *data;
	uint32_t len;
	uint16_t bid;
};

struct corio_receiver {
	struct corio_handler h;
	struct corio_loop *loop;	/* NULL once the loop has ended */
	struct corio_bufring *br;
	int fd;
	struct chunk *q;		/* arrived, not yet lent */
	unsigned int qhead, qlen, qcap;
	struct chunk lent;		/* what the last _next returned */
	bool has_lent;
	size_t qbytes;			/* in the queue */
	int end;			/* END_EOF or -errno, after the queue */
	bool armed;			/* the multishot's last CQE is due */
	bool starved;
	bool stopping;			/* free or teardown cancels it */
	struct corio_waitq waiters;	/* the task in _next */
	struct corio_task *freer;	/* parked in _free until !armed */
	struct corio_receiver *next_starved;
	struct corio_receiver *prev, *next;	/* the loop's */
};

/* What this layer keeps in a loop. */
struct datapath {
	struct corio_layer_state ls;	/* first: the state is its ls */
	struct corio_bufring *rings;
	struct corio_receiver *receivers;
	struct corio_bufring *shared;
	uint16_t next_bgid;
};

static void datapath_teardown(struct corio_loop *loop,
			      struct corio_layer_state *s);
static void datapath_fini(struct corio_loop *loop,
			  struct corio_layer_state *s);

static const struct corio_layer datapath_layer = {
	.teardown = datapath_teardown,
	.fini = datapath_fini,
};

static struct datapath *datapath_get(struct corio_loop *loop)
{
	struct datapath *dp = (struct datapath *)corio__loop_state(loop,
							&datapath_layer);

	if (!dp) {
		dp = calloc(1, sizeof(*dp));
		if (!dp)
			return NULL;
		corio__loop_attach(loop, &dp->ls, &datapath_layer);
	}
	return dp;
}

/* Buffers. */

static char *buf_base(const struct corio_bufring *br, unsigned int bid)
{
	return br->bufs + (size_t)bid * br->bufsize;
}

/* Puts bid back in the ring, whole; published at the next flush. */
static void buf_recycle(struct corio_bufring *br, unsigned int bid)
{
	unsigned int slot = (br->ring->tail + br->pending) & br->mask;

	io_uring_buf_ring_add(br->ring, buf_base(br, bid), br->bufsize,
			      (unsigned short)bid, (int)br->mask,
			      (int)br->pending);
	br->pending++;
	br->off[bid] = 0;
	br->refs[bid] = 1;	/* the kernel's */
	br->in_ring++;
	br->slot_bid[slot] = (uint16_t)bid;
	br->bid_slot[bid] = (uint16_t)slot;
	if (br->loop)
		corio__loop_defer(br->loop, &br->flush);
}

static void buf_put(struct corio_bufring *br, unsigned int bid)
{
	if (--br->refs[bid] == 0)
		buf_recycle(br, bid);
}

static void receiver_arm(struct corio_loop *loop, struct corio_handler *h);

/* Before the loop's next enter: the batch goes out, starved recvs rearm. */
static void flush_arm(struct corio_loop *loop, struct corio_handler *h)
{
	struct corio_bufring *br = corio__container_of(h, struct corio_bufring, flush);
	struct corio_receiver *r;

	if (br->pending) {
		/* Pairs with the kernel's read of the tail: the entries
		 * added above are written before it sees them. */
		io_uring_buf_ring_advance(br->ring, (int)br->pending);
		br->pending = 0;
	}
	while ((r = br->starved)) {
		br->starved = r->next_starved;
		r->starved = false;
		if (!r->stopping && !r->end)
			receiver_arm(loop, &r->h);
	}
}

static CORIO_COLD int ring_register(struct corio_loop *loop,
				    struct corio_bufring *br, uint16_t bgid)
{
	struct io_uring_buf_reg reg;
	int ret = -EINVAL;

	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br->ring;
	reg.ring_entries = br->nbufs;
	reg.bgid = bgid;
	if (!(loop->disabled & CORIO_FEAT_BUF_INC)) {
		reg.pad = PBUF_RING_INC;
		ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
		br->inc = ret == 0;
	}
	if (ret == -EINVAL) {
		/* Before Linux 6.12: whole buffers. */
		reg.pad = 0;
		ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
	}
	return ret;
}

static void ring_unmap(struct corio_bufring *br)
{
	if (br->ring)
		munmap(br->ring, br->ring_len);
	if (br->bufs)
		munmap(br->bufs, br->bufs_len);
	br->ring = NULL;
	br->bufs = NULL;
}

static void ring_release(struct corio_bufring *br)
{
	ring_unmap(br);
	free(br->off);
	free(br->refs);
	free(br->slot_bid);
	free(br->bid_slot);
	free(br);
}

static CORIO_COLD int bufring_make(struct corio_loop *loop,
				   unsigned int nbufs, size_t bufsize,
				   struct corio_bufring **out)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct datapath *dp = datapath_get(loop);
	struct corio_bufring *br;
	unsigned int i, tries;
	int ret = -ENOMEM;

	if (loop->disabled & CORIO_FEAT_BUFRING)
		return -ENOSYS;
	if (!dp || !(br = calloc(1, sizeof(*br))))
		return -ENOMEM;
	br->nbufs = nbufs;
	br->mask = nbufs - 1;
	br->bufsize = (uint32_t)bufsize;
	br->ring_len = (nbufs * sizeof(struct io_uring_buf) + page - 1) &
		       ~(page - 1);
	br->bufs_len = nbufs * bufsize;
	br->ring = mmap(NULL, br->ring_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	br->bufs = mmap(NULL, br->bufs_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (br->ring == MAP_FAILED)
		br->ring = NULL;
	if (br->bufs == MAP_FAILED)
		br->bufs = NULL;
	br->off = calloc(nbufs, sizeof(*br->off));
	br->refs = calloc(nbufs, sizeof(*br->refs));
	br->slot_bid = calloc(nbufs, sizeof(*br->slot_bid));
	br->bid_slot = calloc(nbufs, sizeof(*br->bid_slot));
	if (!br->ring || !br->bufs || !br->off || !br->refs ||
	    !br->slot_bid || !br->bid_slot)
		goto err;
	io_uring_buf_ring_init(br->ring);
	/* A group id nobody uses: -EEXIST moves to the next. */
	for (tries = 0; tries < 65536; tries++) {
		br->bgid = dp->next_bgid++;
		ret = ring_register(loop, br, br->bgid);
		if (ret != -EEXIST)
			break;
	}
	if (ret < 0) {
		/* Before Linux 5.19 the register opcode is unknown. */
		if (ret == -EINVAL || ret == -EOPNOTSUPP)
			ret = -ENOSYS;
		goto err;
	}
	br->bundle = !br->inc && !(loop->disabled & CORIO_FEAT_BUNDLE) &&
		     (loop->ring.features & IORING_FEAT_RECVSEND_BUNDLE);
	br->loop = loop;
	br->flush.arm = flush_arm;
	for (i = 0; i < nbufs; i++)
		buf_recycle(br, i);
	br->next = dp->rings;
	dp->rings = br;
	*out = br;
	return 0;
err:
	ring_release(br);
	return ret;
}

int corio_bufring_new(unsigned int nbufs, size_t bufsize,
		      corio_bufring **out)
{
	struct corio_loop *loop = corio__loop;

	if (!out || !nbufs || nbufs > CORIO_BUFRING_MAX ||
	    (nbufs & (nbufs - 1)) || !bufsize || bufsize > UINT32_MAX ||
	    bufsize > SIZE_MAX / nbufs)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	return bufring_make(loop, nbufs, bufsize, out);
}

static void bufring_unlink(struct corio_bufring *br)
{
	struct datapath *dp = (struct datapath *)corio__loop_state(br->loop,
							&datapath_layer);
	struct corio_bufring **pp;

	for (pp = &dp->rings; *pp != br; pp = &(*pp)->next)
		;
	*pp = br->next;
}

int corio_bufring_free(corio_bufring *br)
{
	if (!br)
		return 0;
	if (br->users)
		return -EBUSY;
	if (br->loop) {
		if (br->loop != corio__loop)
			return -EPERM;
		io_uring_unregister_buf_ring(&br->loop->ring, br->bgid);
		corio__loop_undefer(br->loop, &br->flush);
		bufring_unlink(br);
	}
	ring_release(br);
	return 0;
}

/* The loop's shared ring, made on first use; NULL and -errno if none. */
struct corio_bufring *corio__bufring_shared(struct corio_loop *loop,
					    int *err)
{
	struct datapath *dp = datapath_get(loop);
	struct corio_bufring *br;

	*err = -ENOMEM;
	if (!dp)
		return NULL;
	if (!dp->shared) {
		*err = bufring_make(loop, SHARED_NBUFS, SHARED_BUFSIZE, &br);
		if (*err < 0)
			return NULL;
		dp->shared = br;
	}
	*err = 0;
	return dp->shared;
}

/* Receivers. */

static void receiver_arm(struct corio_loop *loop, struct corio_handler *h)
{
	struct corio_receiver *r = corio__container_of(h, struct corio_receiver, h);
	struct io_uring_sqe *sqe;

	if (r->stopping) {
		/* Deferred cancel (the SQ ring was full when it was due). */
		if (r->armed && (sqe = corio__loop_handler_sqe(loop, h))) {
			io_uring_prep_cancel64(sqe, corio__handler_ud(h), 0);
			sqe->user_data = CORIO_UD_INTERNAL;
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		}
		return;
	}
	if (r->armed || r->starved || r->end)
		return;
	sqe = corio__loop_handler_sqe(loop, h);
	if (!sqe)
		return;	/* arm() runs again before the next enter */
	io_uring_prep_recv_multishot(sqe, r->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = r->br->bgid;
	if (r->br->bundle)
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = corio__handler_ud(h);
	r->armed = true;
	loop->stats.ops_in_flight++;
}

static void receiver_cancel(struct corio_receiver *r);

static CORIO_COLD int queue_grow(struct corio_receiver *r)
{
	unsigned int cap = r->qcap ? r->qcap * 2 : 16, i;
	struct chunk *q = malloc(cap * sizeof(*q));

	if (!q)
		return -ENOMEM;
	for (i = 0; i < r->qlen; i++)
		q[i] = r->q[(r->qhead + i) % r->qcap];
	free(r->q);
	r->q = q;
	r->qcap = cap;
	r->qhead = 0;
	return 0;
}

static void queue_push(struct corio_receiver *r, const char *data,
		       uint32_t len, unsigned int bid)
{
	struct chunk *c;

	if (r->end == -ENOMEM || (r->qlen == r->qcap && queue_grow(r) < 0)) {
		/* No memory to keep it: the stream cannot go on whole, so
		 * nothing after the hole is kept either, and it stops. */
		buf_put(r->br, bid);
		if (r->end != -ENOMEM) {
			r->end = -ENOMEM;
			receiver_cancel(r);
		}
		return;
	}
	r->qbytes += len;
	c = &r->q[(r->qhead + r->qlen++) % r->qcap];
	c->data = data;
	c->len = len;
	c->bid = (uint16_t)bid;
}

/* One CQE's bytes, as chunks: one buffer, or a bundle's several. */
static void got_bytes(struct corio_receiver *r, unsigned int bid,
		      uint32_t res, uint32_t flags)
{
	struct corio_bufring *br = r->br;
	unsigned int slot = br->bid_slot[bid];
	uint32_t part;

	if (br->inc) {
		const char *data = buf_base(br, bid) + br->off[bid];

		br->off[bid] += res;
		br->refs[bid]++;
		if (!(flags & IORING_CQE_F_BUF_MORE)) {
			br->refs[bid]--;	/* the kernel is done with it */
			br->in_ring--;
		}
		queue_push(r, data, res, bid);
		return;
	}
	while (res) {
		part = res < br->bufsize ? res : br->bufsize;
		/* The chunk takes over the kernel's reference. */
		br->in_ring--;
		queue_push(r, buf_base(br, bid), part, bid);
		res -= part;
		slot = (slot + 1) & br->mask;
		bid = br->slot_bid[slot];
	}
}

static void receiver_cqe(struct corio_loop *loop, struct corio_handler *h,
			 const struct io_uring_cqe *cqe)
{
	struct corio_receiver *r = corio__container_of(h, struct corio_receiver, h);
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		r->armed = false;
		loop->stats.ops_in_flight--;
	}
	if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		got_bytes(r, cqe->flags >> IORING_CQE_BUFFER_SHIFT,
			  (uint32_t)res, cqe->flags);
	} else if (res == 0) {
		if (!r->end)
			r->end = END_EOF;
	} else if (res == -ENOBUFS) {
		r->br->nr_starved++;
		/* Buffers came back since the kernel found none: now.  Else
		 * when some do (flush_arm). */
		if (!r->armed && !r->starved && !r->stopping &&
		    r->br->in_ring <= r->br->pending) {
			r->starved = true;
			r->next_starved = r->br->starved;
			r->br->starved = r;
			if (r->br->pending)
				corio__loop_defer(loop, &r->br->flush);
		}
	} else if (res < 0 && !r->stopping) {
		struct corio_closing *c;

		/* A corio_close of the fd cancelled it: as for an op. */
		for (c = loop->closing; c && res == -ECANCELED; c = c->next)
			if (c->fd == r->fd)
				res = -EBADF;
		if (res != -ECANCELED && res != -EINTR && !r->end)
			r->end = res;
	}
	/* Ended for another reason (a spurious cancel, the CQ ring
	 * overflowing): armed again before the next enter. */
	if (!r->armed && !r->starved && !r->end && !r->stopping)
		corio__loop_defer(loop, &r->h);
	/* Stopped by teardown: a task still waiting must not wait on. */
	if (!r->armed && r->stopping && !r->end)
		r->end = -ECANCELED;
	if (r->waiters.head && (r->qlen || r->end))
		corio__wake(r->waiters.head, 0);
	if (!r->armed && r->freer) {
		corio__task_wake(r->freer);
		r->freer = NULL;
	}
}

int corio_receiver_new(int fd, corio_bufring *br, corio_receiver **out)
{
	struct corio_loop *loop = corio__loop;
	struct datapath *dp;
	struct corio_receiver *r;

	if (fd < 0 || !br || !out)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	if (br->loop != loop)
		return -EINVAL;
	dp = datapath_get(loop);
	r = dp ? calloc(1, sizeof(*r)) : NULL;
	if (!r)
		return -ENOMEM;
	r->loop = loop;
	r->br = br;
	r->fd = fd;
	r->h.fn = receiver_cqe;
	r->h.arm = receiver_arm;
	r->next = dp->receivers;
	if (r->next)
		r->next->prev = r;
	dp->receivers = r;
	br->users++;
	receiver_arm(loop, &r->h);
	*out = r;
	return 0;
}

static void lent_put(struct corio_receiver *r)
{
	if (r->has_lent) {
		r->has_lent = false;
		buf_put(r->br, r->lent.bid);
	}
}

/* Gives back the chunk lent by the last _next before the next call. */
int corio_receiver_release(corio_receiver *r)
{
	if (!r)
		return -EINVAL;
	if (r->loop && r->loop != corio__loop)
		return -EPERM;
	if (r->loop)
		lent_put(r);
	return 0;
}

ssize_t corio_receiver_next(corio_receiver *r, const void **data)
{
	struct corio_task *t = corio__current();
	struct corio_wait w;
	int ret;

	if (!r || !data)
		return -EINVAL;
	if (!t)
		return -EPERM;
	if (r->loop != t->loop)
		return -EINVAL;
	if (r->waiters.head)
		return -EBUSY;
	lent_put(r);
	while (!r->qlen) {
		if (r->end)
			return r->end == END_EOF ? 0 : r->end;
		ret = corio__wait_on(&r->waiters, &w);
		if (ret < 0)
			return ret;	/* what arrives meanwhile stays queued */
	}
	r->lent = r->q[r->qhead];
	r->qhead = (r->qhead + 1) % r->qcap;
	r->qlen--;
	r->qbytes -= r->lent.len;
	r->has_lent = true;
	*data = r->lent.data;
	return (ssize_t)r->lent.len;
}

static void receiver_cancel(struct corio_receiver *r)
{
	r->stopping = true;
	if (r->armed)
		receiver_arm(r->loop, &r->h);	/* sends the cancel */
}

static void receiver_unlink(struct corio_receiver *r)
{
	struct datapath *dp = (struct datapath *)corio__loop_state(r->loop,
							&datapath_layer);
	struct corio_receiver **pp;

	if (r->prev)
		r->prev->next = r->next;
	else
		dp->receivers = r->next;
	if (r->next)
		r->next->prev = r->prev;
	if (r->starved) {
		for (pp = &r->br->starved; *pp != r; pp = &(*pp)->next_starved)
			;
		*pp = r->next_starved;
		r->starved = false;
	}
}

int corio_receiver_free(corio_receiver *r)
{
	struct corio_task *t = corio__current();

	if (!r)
		return 0;
	if (r->loop && r->loop != corio__loop)
		return -EPERM;
	if (r->waiters.head || r->freer)
		return -EBUSY;
	if (r->loop) {
		if (r->armed) {
			if (!t || t->loop != r->loop)
				return -EPERM;
			receiver_cancel(r);
			/* Not cancellable: the multishot's last CQE points
			 * at r. */
			r->freer = t;
			while (r->armed)
				corio__task_park(t, NULL, NULL);
		}
		/* A re-arm may still be due: r must not be found there. */
		corio__loop_undefer(r->loop, &r->h);
		receiver_unlink(r);
		lent_put(r);
		while (r->qlen) {
			buf_put(r->br, r->q[r->qhead].bid);
			r->qhead = (r->qhead + 1) % r->qcap;
			r->qlen--;
		}
		r->br->users--;
	} else if (r->br) {
		r->br->users--;	/* the loop has ended: its buffers are gone */
	}
	free(r->q);
	free(r);
	return 0;
}

/* The loop's end. */

/* main returned: stop the multishots nobody freed, so the loop can end. */
static void datapath_teardown(struct corio_loop *loop,
			      struct corio_layer_state *s)
{
	struct datapath *dp = (struct datapath *)s;
	struct corio_receiver *r;

	(void)loop;
	for (r = dp->receivers; r; r = r->next)
		if (!r->stopping)
			receiver_cancel(r);
}

/* Left over when the loop goes: no longer of it; the shared ring goes. */
static void datapath_fini(struct corio_loop *loop,
			  struct corio_layer_state *s)
{
	struct datapath *dp = (struct datapath *)s;
	struct corio_receiver *r;
	struct corio_bufring *br, *next;

	(void)loop;
	for (r = dp->receivers; r; r = r->next) {
		r->loop = NULL;
		if (r->br == dp->shared)
			r->br = NULL;	/* freed below */
	}
	for (br = dp->rings; br; br = next) {
		next = br->next;
		br->loop = NULL;
		if (br == dp->shared)
			ring_release(br);	/* nobody else holds it */
		else
			ring_unmap(br);	/* the user's corio_bufring_free
					   frees the rest */
	}
	free(dp);
}

/* For the tests: which way the ring works, and how often it ran dry. */
void corio__bufring_info(const struct corio_bufring *br, bool *inc,
			 bool *bundle, unsigned long *starved)
{
	*inc = br->inc;
	*bundle = br->bundle;
	*starved = br->nr_starved;
}

/* Bytes queued on r and not yet lent: for corio_stream_buffered. */
size_t corio__receiver_queued(const struct corio_receiver *r)
{
	return r->qbytes;
}
