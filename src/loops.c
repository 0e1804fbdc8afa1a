/*
 * loops.c - a loop per core: corio_run_loops, and calls and posts between
 * loops.
 *
 * Loop i runs on thread i (the caller's thread is loop 0).  Loops share
 * nothing but their mailboxes: a message (a post, a call, its reply) is
 * pushed on the target's mailbox, a lock-free LIFO that any thread may
 * push on and the target takes whole with one exchange; then the target is
 * woken, once for however many messages came meanwhile (mbox->notified).
 * A loop wakes another with an IORING_OP_MSG_RING from its own ring (Linux
 * 5.18; submitted with its turn's other SQEs, no syscall of its own); a
 * thread that runs no loop, or a kernel without MSG_RING, writes the
 * target's eventfd, which every loop of a cluster keeps a read armed on.
 * The target processes its messages before its next enter (a deferred
 * arm, not inside the reap), so fn always runs on the target's thread.
 *
 * A call's request, reply, cancel and acknowledgement live in a struct
 * corio_call on the caller's stack: it parks until the reply (and, if it
 * sent a cancel, the acknowledgement) has come, so the remote loop never
 * touches it after its last message.  Posts are allocated.
 *
 * Ending: when main returns, loop 0 cancels its tasks and sends every
 * other loop a stop; each cancels its own.  The cluster is done when every
 * loop is quiescent (no task, no op) and no message is on its way:
 * cluster->busy counts the loops not yet quiescent plus the messages
 * pushed and not yet processed (and a foreign poster while it pushes).
 * Whoever brings it to 0 sets final and wakes every loop, which then
 * returns; none of them sends anything after.  corio_run's single loop is
 * not a cluster: nothing outside it can post to it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "corio-int.h"

#define LOOPS_MAX	1024
/* Messages a loop takes per turn: a flood of posts must not make a task
 * (and a stack) for each of them at once. */
#define DRAIN_MAX	1024
/* Spin before sleeping only when messages came this lately. */
#define LOOPS_SPIN_RECENT_NS	CORIO_MSEC(10)

enum msg_kind { MSG_POST, MSG_CALL, MSG_REPLY, MSG_CANCEL, MSG_ACK,
		MSG_STOP };

struct corio_msg {
	struct corio_msg *next;
	uint8_t kind;
	corio_fn fn;			/* MSG_POST */
	void *arg;
	struct corio_call *call;	/* the others but MSG_STOP */
};

struct corio_call {
	corio_fn fn;
	void *arg;
	struct corio_loop *from, *to;
	struct corio_task *caller;
	struct corio_task *remote;	/* to's; NULL once it returned */
	int result;
	bool replied, acked, cancel_sent, parked;
	struct corio_waitq q;		/* the caller, while cancellable */
	struct corio_msg req, rep, can, ack;
};

struct corio_mbox {
	_Atomic(struct corio_msg *) head;
	atomic_bool notified;		/* a wake is on its way */
	struct corio_msg *backlog;	/* taken, in order, not yet processed */
	struct corio_msg **backlog_end;	/* its last next: appends are O(1) */
	uint64_t last_msg_ns;		/* the turn's clock when some came */
	int efd;
	uint64_t efd_buf;
	bool efd_armed;
	bool msg_ring;			/* this loop may send MSG_RING */
	struct corio_handler h_efd;	/* the eventfd read */
	struct corio_handler h_ring;	/* MSG_RING CQEs sent to this loop */
	struct corio_handler h_fail;	/* a MSG_RING to it that failed */
	struct corio_handler h_drain;	/* processes the messages */
	struct corio_msg stop;
	struct corio_cluster *cluster;
};

struct corio_cluster {
	unsigned int n;
	struct corio_loop **loops;
	pthread_t *threads;
	atomic_long busy;
	atomic_bool stopping, final;
	atomic_bool final_sent;		/* finalize has woken every loop */
	/* start-up */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int started;
	int start_err;
	bool abort_start;
	cpu_set_t cpus;
	int ncpus;
	bool pin;
};

/* The cluster that threads running no loop post to (the first one). */
static struct corio_cluster *published;
static pthread_mutex_t published_lock = PTHREAD_MUTEX_INITIALIZER;

static void finalize(struct corio_cluster *c)
{
	bool expected = false;
	unsigned int i;
	uint64_t one = 1;

	if (!atomic_compare_exchange_strong(&c->final, &expected, true))
		return;
	for (i = 0; i < c->n; i++)
		if (write(c->loops[i]->mbox->efd, &one, sizeof(one)) < 0)
			corio__bug("cannot wake a loop to end it");
	/* A loop that saw final by itself frees its mailbox only now. */
	atomic_store(&c->final_sent, true);
}

static void busy_put(struct corio_cluster *c)
{
	if (atomic_fetch_sub(&c->busy, 1) == 1)
		finalize(c);
}

/* Wakes loop `to` for its messages, once for a batch. */
static void wake(struct corio_loop *to)
{
	struct corio_mbox *mb = to->mbox;
	struct corio_loop *self = corio__loop;
	struct io_uring_sqe *sqe;
	uint64_t one = 1;

	if (atomic_exchange(&mb->notified, true))
		return;
	if (self && self->cluster == mb->cluster && self->mbox->msg_ring &&
	    (sqe = corio__loop_sqe(self))) {
		/* Goes out with the sender's turn; its CQE lands in to's
		 * ring, where h_ring takes it. */
		io_uring_prep_msg_ring(sqe, to->ring.ring_fd, 0,
				       corio__handler_ud(&mb->h_ring), 0);
		sqe->user_data = corio__handler_ud(&mb->h_fail);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		return;
	}
	if (write(mb->efd, &one, sizeof(one)) < 0)
		corio__bug("cannot wake a loop");
}

/* The caller holds a count on c->busy, which the message takes over. */
static void push(struct corio_loop *to, struct corio_msg *m)
{
	struct corio_mbox *mb = to->mbox;
	struct corio_msg *head = atomic_load(&mb->head);

	do
		m->next = head;
	while (!atomic_compare_exchange_weak(&mb->head, &head, m));
	wake(to);
}

static void send_msg(struct corio_loop *to, struct corio_msg *m)
{
	atomic_fetch_add(&to->cluster->busy, 1);
	push(to, m);
}

/* Messages. */

static int call_task(void *arg)
{
	struct corio_call *call = arg;
	int result = call->fn(call->arg);

	call->remote = NULL;
	call->result = result;
	if (call->to == call->from) {
		/* A call of one's own loop: no message. */
		call->replied = true;
		if (call->q.head)
			corio__wake(call->q.head, 0);
		else if (call->parked)
			corio__task_wake(call->caller);
		return 0;
	}
	call->rep.kind = MSG_REPLY;
	call->rep.call = call;
	send_msg(call->from, &call->rep);	/* call is not ours after */
	return 0;
}

static void caller_wake(struct corio_call *call)
{
	if (call->q.head)
		corio__wake(call->q.head, 0);
	else if (call->parked && call->caller->state == CORIO_T_PARKED)
		corio__task_wake(call->caller);
}

static void process(struct corio_loop *loop, struct corio_msg *m)
{
	struct corio_call *call = m->call;
	corio_task *t;

	switch (m->kind) {
	case MSG_POST:
		t = corio_spawn(m->fn, m->arg);
		if (t)
			corio_detach(t);
		free(m);
		break;
	case MSG_CALL:
		t = corio_spawn(call_task, call);
		if (!t) {
			call->result = -ENOMEM;
			call->rep.kind = MSG_REPLY;
			call->rep.call = call;
			send_msg(call->from, &call->rep);
			break;
		}
		call->remote = t;
		corio_detach(t);
		break;
	case MSG_REPLY:
		call->replied = true;
		caller_wake(call);
		break;
	case MSG_CANCEL:
		if (call->remote)
			corio_cancel(call->remote);
		call->ack.kind = MSG_ACK;
		call->ack.call = call;
		send_msg(call->from, &call->ack);
		break;
	case MSG_ACK:
		call->acked = true;
		caller_wake(call);
		break;
	case MSG_STOP:
		if (!loop->tearing_down)
			corio__loop_teardown(loop);
		break;
	}
}

/* Before the loop's next enter: every message that came, in order. */
static void drain(struct corio_loop *loop, struct corio_handler *h)
{
	struct corio_mbox *mb = corio__container_of(h, struct corio_mbox, h_drain);
	struct corio_msg *m, *next, *fifo = NULL, *last = NULL;
	struct corio_cluster *c = mb->cluster;
	unsigned int nr = 0;

	/* Cleared first: a push from now on wakes the loop again. */
	atomic_store(&mb->notified, false);
	m = atomic_exchange(&mb->head, NULL);
	for (; m; m = next) {
		next = m->next;
		m->next = fifo;
		fifo = m;
		if (!last)
			last = m;	/* the newest: the new run ends there */
	}
	/* Behind what an earlier turn left. */
	if (fifo) {
		mb->last_msg_ns = loop->now_ns;
		if (!mb->backlog)
			mb->backlog_end = &mb->backlog;
		*mb->backlog_end = fifo;
		mb->backlog_end = &last->next;
	}
	if (mb->backlog && loop->idle) {
		loop->idle = false;	/* before the messages' counts go */
		atomic_fetch_add(&c->busy, 1);
	}
	while ((m = mb->backlog) && nr++ < DRAIN_MAX) {
		mb->backlog = m->next;
		process(loop, m);
		busy_put(c);
	}
	if (mb->backlog)
		corio__loop_defer(loop, &mb->h_drain);	/* the rest next turn */
	if (!mb->efd_armed) {
		struct io_uring_sqe *sqe = corio__loop_handler_sqe(loop,
								   &mb->h_drain);

		if (sqe) {
			io_uring_prep_read(sqe, mb->efd, &mb->efd_buf,
					   sizeof(mb->efd_buf), 0);
			sqe->user_data = corio__handler_ud(&mb->h_efd);
			mb->efd_armed = true;
		}
	}
}

static void efd_cqe(struct corio_loop *loop, struct corio_handler *h,
		    const struct io_uring_cqe *cqe)
{
	struct corio_mbox *mb = corio__container_of(h, struct corio_mbox, h_efd);

	(void)cqe;
	mb->efd_armed = false;
	corio__loop_defer(loop, &mb->h_drain);
}

static void ring_cqe(struct corio_loop *loop, struct corio_handler *h,
		     const struct io_uring_cqe *cqe)
{
	struct corio_mbox *mb = corio__container_of(h, struct corio_mbox, h_ring);

	(void)cqe;
	corio__loop_defer(loop, &mb->h_drain);
}

/* Our MSG_RING to this mailbox's loop failed: wake it the other way. */
static void fail_cqe(struct corio_loop *loop, struct corio_handler *h,
		     const struct io_uring_cqe *cqe)
{
	struct corio_mbox *mb = corio__container_of(h, struct corio_mbox, h_fail);
	uint64_t one = 1;

	(void)loop;
	(void)cqe;
	if (write(mb->efd, &one, sizeof(one)) < 0)
		corio__bug("cannot wake a loop");
}

static CORIO_COLD int mbox_new(struct corio_loop *loop,
			       struct corio_cluster *c)
{
	struct corio_mbox *mb = calloc(1, sizeof(*mb));

	if (!mb)
		return -ENOMEM;
	mb->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mb->efd < 0) {
		int ret = -errno;

		free(mb);
		return ret;
	}
	mb->cluster = c;
	mb->msg_ring = corio__loop_has_op(loop, IORING_OP_MSG_RING) &&
		       !(loop->disabled & CORIO_FEAT_MSG_RING);
	mb->h_efd.fn = efd_cqe;
	mb->h_ring.fn = ring_cqe;
	mb->h_fail.fn = fail_cqe;
	mb->h_drain.arm = drain;
	mb->stop.kind = MSG_STOP;
	loop->mbox = mb;
	loop->cluster = c;
	/* The first drain arms the eventfd read. */
	corio__loop_defer(loop, &mb->h_drain);
	return 0;
}

/* After the loop's ring: its eventfd read may be pending until then. */
static void loop_free(struct corio_loop *loop)
{
	struct corio_mbox *mb = loop->mbox;

	corio__loop_destroy(loop);
	close(mb->efd);
	free(mb);
}

/* The loop API. */

void corio__loops_stop(struct corio_loop *loop)
{
	struct corio_cluster *c = loop->cluster;
	unsigned int i;

	/* Under the lock of the posts from plain threads: one that saw the
	 * cluster running has pushed its message (and counted it) before
	 * this, so the count cannot reach 0 under it. */
	pthread_mutex_lock(&published_lock);
	atomic_store(&c->stopping, true);
	pthread_mutex_unlock(&published_lock);
	for (i = 0; i < c->n; i++)
		if (c->loops[i] != loop)
			send_msg(c->loops[i], &c->loops[i]->mbox->stop);
}

/*
 * An idle loop that had messages lately polls for the next one a while
 * before it sleeps (loop.c's spin): a reply then costs no wake-up of a
 * sleeping thread, which is most of a call's cost.  Meanwhile senders
 * see notified set and send no wake; spin_end clears it and takes any
 * message that came in between.
 */
bool corio__loops_spin_begin(struct corio_loop *loop)
{
	struct corio_mbox *mb = loop->mbox;

	if (loop->now_ns - mb->last_msg_ns > LOOPS_SPIN_RECENT_NS)
		return false;
	/* Already set: a wake is on its way and a drain will follow. */
	return !atomic_exchange(&mb->notified, true);
}

bool corio__loops_msg_waiting(const struct corio_loop *loop)
{
	return atomic_load_explicit(&loop->mbox->head,
				    memory_order_relaxed) != NULL;
}

void corio__loops_spin_end(struct corio_loop *loop)
{
	struct corio_mbox *mb = loop->mbox;

	/* Cleared first: a push from now on wakes the loop again. */
	atomic_store(&mb->notified, false);
	if (atomic_load(&mb->head))
		corio__loop_defer(loop, &mb->h_drain);
}

bool corio__loops_done(struct corio_loop *loop)
{
	struct corio_cluster *c = loop->cluster;

	if (!loop->idle) {
		loop->idle = true;
		busy_put(c);
	}
	return atomic_load(&c->final);
}

unsigned int corio_loop_index(void)
{
	struct corio_loop *loop = corio__loop;

	return loop ? loop->index : 0;
}

unsigned int corio_loop_count(void)
{
	struct corio_loop *loop = corio__loop;

	if (!loop)
		return 0;
	return loop->cluster ? loop->cluster->n : 1;
}

/* The target of loop index i from this thread, or NULL and *err. */
static struct corio_loop *target(struct corio_loop *self, unsigned int i,
				 int *err)
{
	if (i >= corio_loop_count()) {
		*err = -EINVAL;
		return NULL;
	}
	if (!self->cluster)
		return self;
	if (atomic_load(&self->cluster->stopping)) {
		*err = -ESHUTDOWN;
		return NULL;
	}
	return self->cluster->loops[i];
}

static struct corio_msg *post_new(corio_fn fn, void *arg)
{
	struct corio_msg *m = calloc(1, sizeof(*m));

	if (m) {
		m->kind = MSG_POST;
		m->fn = fn;
		m->arg = arg;
	}
	return m;
}

int corio_post(unsigned int loop, corio_fn fn, void *arg)
{
	struct corio_loop *self = corio__loop, *to;
	struct corio_cluster *c;
	struct corio_msg *m;
	int ret = 0;

	if (!fn)
		return -EINVAL;
	if (self) {
		to = target(self, loop, &ret);
		if (!to)
			return ret;
		if (to == self) {
			corio_task *t = corio_spawn(fn, arg);

			if (!t)
				return -errno;
			corio_detach(t);
			return 0;
		}
		m = post_new(fn, arg);
		if (!m)
			return -ENOMEM;
		send_msg(to, m);
		return 0;
	}
	/* A thread that runs no loop: the published cluster's. */
	m = post_new(fn, arg);
	if (!m)
		return -ENOMEM;
	pthread_mutex_lock(&published_lock);
	c = published;
	if (!c || atomic_load(&c->stopping)) {
		ret = -ESHUTDOWN;
	} else if (loop >= c->n) {
		ret = -EINVAL;
	} else {
		/* c cannot be freed meanwhile: it is unpublished under this
		 * lock first. */
		atomic_fetch_add(&c->busy, 1);
		push(c->loops[loop], m);
	}
	pthread_mutex_unlock(&published_lock);
	if (ret < 0)
		free(m);
	return ret;
}

/* The caller was cancelled or its deadline passed: so is the remote. */
static void call_cancel(struct corio_call *call)
{
	call->cancel_sent = true;
	if (call->to == call->from) {
		call->acked = true;
		if (call->remote)
			corio_cancel(call->remote);
		return;
	}
	call->can.kind = MSG_CANCEL;
	call->can.call = call;
	send_msg(call->to, &call->can);
}

int corio_call(unsigned int loop, corio_fn fn, void *arg)
{
	struct corio_task *self = corio__current();
	struct corio_call call;
	struct corio_wait w;
	int ret;

	if (!fn)
		return -EINVAL;
	if (!self)
		return -EPERM;
	ret = corio__op_check(self, true);
	if (ret < 0)
		return ret;
	memset(&call, 0, sizeof(call));
	call.fn = fn;
	call.arg = arg;
	call.from = self->loop;
	call.caller = self;
	call.to = target(self->loop, loop, &ret);
	if (!call.to)
		return ret;
	if (call.to == call.from) {
		corio_task *t = corio_spawn(call_task, &call);

		if (!t)
			return -errno;
		call.remote = t;
		corio_detach(t);
	} else {
		call.req.kind = MSG_CALL;
		call.req.call = &call;
		send_msg(call.to, &call.req);
	}
	ret = corio__wait_on(&call.q, &w);
	if (ret < 0 && !call.replied)
		call_cancel(&call);
	/* As corio_join: the remote task is waited for, whatever. */
	while (!call.replied || (call.cancel_sent && !call.acked)) {
		call.parked = true;
		corio__task_park(self, NULL, NULL);
		call.parked = false;
	}
	/* A result that came before the deadline's cancel is returned. */
	if (ret == -ETIMEDOUT && call.cancel_sent)
		return ret;
	return call.result;
}

/* Start-up and the end. */

struct start {
	struct corio_cluster *c;
	unsigned int index;
};

static void pin(struct corio_cluster *c, unsigned int index)
{
	cpu_set_t one;
	int cpu, seen = -1;

	if (!c->pin)
		return;
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &c->cpus) && ++seen == (int)index) {
			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			pthread_setaffinity_np(pthread_self(), sizeof(one),
					       &one);
			return;
		}
	}
}

static CORIO_COLD int loop_join(struct corio_cluster *c, unsigned int index,
				struct corio_loop **out)
{
	struct corio_loop *loop;
	int ret = corio__loop_create(&loop);

	if (ret == 0) {
		ret = mbox_new(loop, c);
		if (ret < 0)
			corio__loop_destroy(loop);
	}
	if (ret < 0)
		return ret;
	loop->index = index;
	c->loops[index] = loop;
	*out = loop;
	return 0;
}

static void *loop_thread(void *arg)
{
	struct start *st = arg;
	struct corio_cluster *c = st->c;
	struct corio_loop *loop = NULL;
	unsigned int index = st->index;
	bool go;
	int ret;

	free(st);
	pin(c, index);
	ret = loop_join(c, index, &loop);
	pthread_mutex_lock(&c->lock);
	if (ret < 0 && !c->start_err)
		c->start_err = ret;
	c->started++;
	pthread_cond_broadcast(&c->cond);
	while (!c->abort_start && c->started <= c->n)
		pthread_cond_wait(&c->cond, &c->lock);	/* until loop 0 says */
	go = !c->abort_start;
	pthread_mutex_unlock(&c->lock);
	if (!loop)
		return NULL;
	corio__loop = loop;
	if (go)
		corio__loop_run(loop);
	corio__loop = NULL;
	while (go && !atomic_load(&c->final_sent))
		sched_yield();	/* finalize may still write our eventfd */
	loop_free(loop);
	return NULL;
}

int corio_run_loops(unsigned int n, corio_fn main, void *arg)
{
	struct corio_cluster *c;
	struct corio_loop *loop = NULL;
	cpu_set_t saved;
	unsigned int i, made = 0;
	const char *nopin = getenv("CORIO_NOPIN");
	int ret;

	if (!main || n > LOOPS_MAX)
		return -EINVAL;
	if (corio__loop)
		return -EBUSY;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (sched_getaffinity(0, sizeof(saved), &saved) < 0) {
		CPU_ZERO(&saved);
		nopin = "1";	/* nothing to pin to, nothing to restore */
	}
	c->cpus = saved;
	c->ncpus = CPU_COUNT(&saved) ? CPU_COUNT(&saved) : 1;
	if (n == 0)
		n = c->ncpus > 0 ? (unsigned int)c->ncpus : 1;
	c->n = n;
	c->pin = n <= (unsigned int)c->ncpus && !(nopin && !strcmp(nopin, "1"));
	atomic_store(&c->busy, (long)n);
	c->loops = calloc(n, sizeof(*c->loops));
	c->threads = calloc(n, sizeof(*c->threads));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	ret = c->loops && c->threads ? 0 : -ENOMEM;
	pin(c, 0);
	if (ret == 0)
		ret = loop_join(c, 0, &loop);
	for (i = 1; ret == 0 && i < n; i++) {
		struct start *st = malloc(sizeof(*st));

		if (!st) {
			ret = -ENOMEM;
			break;
		}
		st->c = c;
		st->index = i;
		ret = -pthread_create(&c->threads[i], NULL, loop_thread, st);
		if (ret < 0)
			free(st);
		else
			made++;
	}
	pthread_mutex_lock(&c->lock);
	while (c->started < made)
		pthread_cond_wait(&c->cond, &c->lock);
	if (!ret)
		ret = c->start_err;
	c->abort_start = ret < 0;
	c->started = n + 1;	/* go */
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (ret == 0) {
		pthread_mutex_lock(&published_lock);
		if (!published)
			published = c;
		pthread_mutex_unlock(&published_lock);
		corio__loop = loop;
		loop->main = corio_spawn(main, arg);
		if (!loop->main) {
			ret = -errno;
			/* Nothing ran: end the others as if main returned. */
			corio__loop_teardown(loop);
			corio__loops_stop(loop);
			corio__loop_run(loop);
		} else {
			corio__loop_run(loop);
			ret = loop->main->result;
		}
		corio__loop = NULL;
	}
	for (i = 1; i <= made; i++)
		pthread_join(c->threads[i], NULL);
	pthread_mutex_lock(&published_lock);
	if (published == c)
		published = NULL;
	pthread_mutex_unlock(&published_lock);
	if (loop) {
		while (ret == 0 && !atomic_load(&c->final_sent))
			sched_yield();
		loop_free(loop);
	}
	if (c->pin)
		sched_setaffinity(0, sizeof(saved), &saved);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->loops);
	free(c->threads);
	free(c);
	return ret;
}
