/*
 * test-sync.c - events, mutexes, semaphores, conditions, queues and task
 * groups: FIFO order and hand-over, what every wait does when its task is
 * cancelled or reaches its deadline, misuse, and no syscall while tasks
 * only wake each other.
 *
 * The first part runs the same checks over each kind of wait (a
 * KIND_TESTS entry per kind); the rest is one part per object.
 */
#include <limits.h>
#include <stdint.h>

#include "helpers.h"

/* An execution log: tasks append a letter. */
static char log_buf[256];
static size_t log_len;

static void log_reset(void)
{
	memset(log_buf, 0, sizeof(log_buf));
	log_len = 0;
}

static void log_add(char c)
{
	assert_true(log_len + 1 < sizeof(log_buf));
	log_buf[log_len++] = c;
}

/*
 * In a fork child: a crash must kill it, not be caught by cmocka's
 * handlers (which would go on running the list in the child).
 */
static void child_default_signals(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sigs); i++)
		signal(sigs[i], SIG_DFL);
}

static uint64_t turns_now(void)
{
	return stats_now().turns;
}

/* Queue items: only their addresses matter. */
static int item_a, item_b, item_c, item_d;

/*
 * Every kind of wait, over one set of objects in which each of them
 * blocks: the event is clear, main holds the mutex, the semaphore is 0,
 * the condition is never signalled, one queue is empty and one full, and
 * the group's one member waits for g_ev.
 */
enum kind { K_EVENT, K_MUTEX, K_SEM, K_COND, K_GET, K_PUT, K_ANY, NR_KINDS };

static const enum kind kind_ids[NR_KINDS] = {
	K_EVENT, K_MUTEX, K_SEM, K_COND, K_GET, K_PUT, K_ANY,
};

struct prims {
	corio_event *ev;
	corio_mutex *mu;	/* held by main */
	corio_sem *sem;		/* 0 */
	corio_cond *cond;
	corio_mutex *cmu;	/* the condition's, free */
	corio_queue *empty;	/* capacity 1, empty */
	corio_queue *full;	/* capacity 1, holding full_item */
	void *full_item;
	corio_group *g;		/* member, parked until g_ev is set */
	corio_event *g_ev;
	corio_task *member;
};

static int member_wait(void *arg)
{
	int ret = corio_event_wait(arg);

	return ret < 0 ? ret : 7;
}

static void prims_new(struct prims *p)
{
	memset(p, 0, sizeof(*p));
	assert_int_equal(corio_event_new(&p->ev), 0);
	assert_int_equal(corio_mutex_new(&p->mu), 0);
	assert_int_equal(corio_mutex_lock(p->mu), 0);
	assert_int_equal(corio_sem_new(0, &p->sem), 0);
	assert_int_equal(corio_cond_new(&p->cond), 0);
	assert_int_equal(corio_mutex_new(&p->cmu), 0);
	assert_int_equal(corio_queue_new(1, &p->empty), 0);
	assert_int_equal(corio_queue_new(1, &p->full), 0);
	assert_int_equal(corio_queue_tryput(p->full, &item_a), 0);
	p->full_item = &item_a;
	assert_int_equal(corio_event_new(&p->g_ev), 0);
	assert_int_equal(corio_group_new(&p->g), 0);
	p->member = corio_group_spawn(p->g, member_wait, p->g_ev);
	assert_non_null(p->member);
}

/*
 * Checks that no waiter was left in a wait queue (each free would return
 * -EBUSY) and that nothing was handed to a waiter that gave up, then frees
 * everything.
 */
static void prims_free(struct prims *p)
{
	void *item = NULL;

	assert_int_equal(corio_event_free(p->ev), 0);
	assert_int_equal(corio_mutex_trylock(p->mu), -EDEADLK);
	assert_int_equal(corio_mutex_unlock(p->mu), 0);
	assert_int_equal(corio_mutex_free(p->mu), 0);
	assert_int_equal(corio_sem_tryacquire(p->sem), -EAGAIN);
	assert_int_equal(corio_sem_free(p->sem), 0);
	assert_int_equal(corio_cond_free(p->cond), 0);
	assert_int_equal(corio_mutex_trylock(p->cmu), 0);
	assert_int_equal(corio_mutex_unlock(p->cmu), 0);
	assert_int_equal(corio_mutex_free(p->cmu), 0);
	assert_int_equal(corio_queue_len(p->empty), 0);
	assert_int_equal(corio_queue_free(p->empty), 0);
	assert_int_equal(corio_queue_len(p->full), 1);
	assert_int_equal(corio_queue_tryget(p->full, &item), 0);
	assert_ptr_equal(item, p->full_item);
	assert_int_equal(corio_queue_free(p->full), 0);
	assert_int_equal(corio_event_set(p->g_ev), 0);
	assert_int_equal(corio_group_free(p->g), 0);
	assert_int_equal(corio_event_free(p->g_ev), 0);
}

struct waiter {
	struct prims *p;
	enum kind k;
	uint64_t timeout;	/* corio_timeout(timeout) first, if not 0 */
	uint64_t deadline;	/* corio_deadline(deadline) first, if not 0 */
	int self_cancel;	/* cancels itself first */
	int parked;		/* set just before the wait */
	int ret;		/* the wait's result */
	int cond_held;		/* K_COND: it held cmu when the wait returned */
	void *item;		/* K_GET: what it got */
	int member_ret;		/* K_ANY: the member's result */
	uint64_t took;		/* how long the wait took */
	uint64_t turns;		/* turns of the loop during the wait */
};

#define WAITER_INIT(pp, kk) { .p = (pp), .k = (kk), .ret = 1, .member_ret = 1 }

static int waiter_fn(void *arg)
{
	struct waiter *w = arg;
	struct prims *p = w->p;
	corio_task *t = NULL;
	uint64_t t0, turns0;

	if (w->k == K_COND)
		assert_int_equal(corio_mutex_lock(p->cmu), 0);
	if (w->timeout)
		corio_timeout(w->timeout);
	if (w->deadline)
		corio_deadline(w->deadline);
	if (w->self_cancel)
		assert_int_equal(corio_cancel(corio_self()), 0);
	w->parked = 1;
	t0 = corio_now();
	turns0 = turns_now();
	switch (w->k) {
	case K_EVENT:
		w->ret = corio_event_wait(p->ev);
		break;
	case K_MUTEX:
		w->ret = corio_mutex_lock(p->mu);
		break;
	case K_SEM:
		w->ret = corio_sem_acquire(p->sem);
		break;
	case K_COND:
		w->ret = corio_cond_wait(p->cond, p->cmu);
		break;
	case K_GET:
		w->ret = corio_queue_get(p->empty, &w->item);
		break;
	case K_PUT:
		w->ret = corio_queue_put(p->full, &item_b);
		break;
	case K_ANY:
		w->ret = corio_group_wait_any(p->g, &t, &w->member_ret);
		break;
	default:
		fail();
	}
	w->took = corio_now() - t0;
	w->turns = turns_now() - turns0;
	corio_deadline(0);
	if (w->k == K_COND) {
		w->cond_held = corio_mutex_trylock(p->cmu) == -EDEADLK;
		if (w->cond_held)
			assert_int_equal(corio_mutex_unlock(p->cmu), 0);
	}
	if (w->k == K_MUTEX && w->ret == 0)
		assert_int_equal(corio_mutex_unlock(p->mu), 0);
	if (w->k == K_ANY && w->ret == 0) {
		assert_ptr_equal(t, p->member);
		p->member = NULL;
		/* Out of the group now: the caller's to join. */
		assert_int_equal(corio_join(t), w->member_ret);
	}
	return 0;
}

/*
 * Lets one parked waiter of kind k through.  For K_ANY the member has to
 * run and return first: one yield, after which the waiter is ready but
 * has not run yet, as for the other kinds.
 */
static void release_one(struct prims *p, enum kind k)
{
	void *item = NULL;

	switch (k) {
	case K_EVENT:
		assert_int_equal(corio_event_set(p->ev), 0);
		break;
	case K_MUTEX:
		assert_int_equal(corio_mutex_unlock(p->mu), 0);
		break;
	case K_SEM:
		assert_int_equal(corio_sem_release(p->sem), 0);
		break;
	case K_COND:
		assert_int_equal(corio_cond_signal(p->cond), 0);
		break;
	case K_GET:
		assert_int_equal(corio_queue_tryput(p->empty, &item_b), 0);
		assert_int_equal(corio_queue_len(p->empty), 0); /* handed over */
		break;
	case K_PUT:
		assert_int_equal(corio_queue_tryget(p->full, &item), 0);
		assert_ptr_equal(item, p->full_item);
		/* The waiting putter's item took the freed slot at once. */
		assert_int_equal(corio_queue_len(p->full), 1);
		p->full_item = &item_b;
		break;
	case K_ANY:
		assert_int_equal(corio_event_set(p->g_ev), 0);
		assert_int_equal(corio_yield(), 0);
		break;
	default:
		fail();
	}
}

/* After release_one and the waiter's return: back to the blocking state. */
static void restore(struct prims *p, const struct waiter *w)
{
	switch (w->k) {
	case K_EVENT:
		assert_int_equal(corio_event_clear(p->ev), 0);
		break;
	case K_MUTEX:
		/* The waiter unlocked it, or passed it on to nobody. */
		assert_int_equal(corio_mutex_trylock(p->mu), 0);
		break;
	case K_SEM:
		/* A unit handed to a waiter that gave up comes back. */
		if (w->ret < 0)
			assert_int_equal(corio_sem_tryacquire(p->sem), 0);
		break;
	case K_COND:
		assert_true(w->cond_held);
		break;
	case K_GET:
		if (w->ret == 0)
			assert_ptr_equal(w->item, &item_b);
		break;
	default:
		break;
	}
}

/* A waiter cancelled while it waits gets -ECANCELED and leaves the queue. */
static int kind_cancel_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;
	uint64_t t0;

	prims_new(&p);
	w = (struct waiter)WAITER_INIT(&p, k);
	t = corio_spawn(waiter_fn, &w);
	assert_non_null(t);
	yield_until(&w.parked);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(w.ret, 1);		/* still waiting */
	t0 = corio_now();
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));
	/* errors: corio_event.3 ECANCELED */
	/* errors: corio_mutex.3 ECANCELED */
	/* errors: corio_sem.3 ECANCELED */
	/* errors: corio_cond.3 ECANCELED */
	/* errors: corio_queue.3 ECANCELED */
	/* errors: corio_group.3 ECANCELED */
	assert_int_equal(w.ret, -ECANCELED);
	if (k == K_COND)
		assert_true(w.cond_held);
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_cancelled_while_waiting(void **state)
{
	RUN(kind_cancel_main, *state);
}

/*
 * The task's deadline ends the wait with -ETIMEDOUT, not before it; the
 * deadline's timer is reaped, so nothing is left in flight.
 */
static int kind_deadline_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;

	prims_new(&p);
	w = (struct waiter)WAITER_INIT(&p, k);
	w.timeout = CORIO_MSEC(30);
	t = corio_spawn(waiter_fn, &w);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	/* errors: corio_event.3 ETIMEDOUT */
	/* errors: corio_mutex.3 ETIMEDOUT */
	/* errors: corio_sem.3 ETIMEDOUT */
	/* errors: corio_cond.3 ETIMEDOUT */
	/* errors: corio_queue.3 ETIMEDOUT */
	/* errors: corio_group.3 ETIMEDOUT */
	assert_int_equal(w.ret, -ETIMEDOUT);
	assert_true(w.took >= CORIO_MSEC(30));
	assert_true(w.took < test_slack_ns(CORIO_SEC(2)));
	if (k == K_COND)
		assert_true(w.cond_held);
	assert_int_equal(stats_now().ops_in_flight, 0);
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_deadline(void **state)
{
	RUN(kind_deadline_main, *state);
}

/* A deadline already past: -ETIMEDOUT at once, without parking. */
static int kind_past_deadline_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;

	prims_new(&p);
	w = (struct waiter)WAITER_INIT(&p, k);
	w.deadline = 1;
	t = corio_spawn(waiter_fn, &w);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(w.ret, -ETIMEDOUT);
	assert_int_equal(w.turns, 0);
	if (k == K_COND)
		assert_true(w.cond_held);
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_past_deadline(void **state)
{
	RUN(kind_past_deadline_main, *state);
}

/*
 * A task cancelled before it waits: -ECANCELED at once, without parking,
 * also when its deadline has passed too (cancellation wins).
 */
static int kind_cancelled_before_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;
	int past;

	prims_new(&p);
	for (past = 0; past < 2; past++) {
		w = (struct waiter)WAITER_INIT(&p, k);
		w.self_cancel = 1;
		w.deadline = past ? 1 : 0;
		t = corio_spawn(waiter_fn, &w);
		assert_non_null(t);
		assert_int_equal(corio_join(t), 0);
		assert_int_equal(w.ret, -ECANCELED);
		assert_int_equal(w.turns, 0);
		if (k == K_COND)
			assert_true(w.cond_held);
	}
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_cancelled_before(void **state)
{
	RUN(kind_cancelled_before_main, *state);
}

/*
 * Released before its deadline: 0, and the deadline's timer is stopped and
 * reaped before the wait returns.
 */
static int kind_released_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;
	int dl;

	prims_new(&p);
	for (dl = 0; dl < 2; dl++) {
		w = (struct waiter)WAITER_INIT(&p, k);
		w.timeout = dl ? CORIO_SEC(3600) : 0;
		t = corio_spawn(waiter_fn, &w);
		assert_non_null(t);
		yield_until(&w.parked);
		release_one(&p, k);
		assert_int_equal(corio_join(t), 0);
		assert_int_equal(w.ret, 0);
		if (k == K_ANY)
			assert_int_equal(w.member_ret, 7);
		assert_true(w.took < test_slack_ns(CORIO_SEC(1)));
		assert_int_equal(stats_now().ops_in_flight, 0);
		restore(&p, &w);
		if (k == K_ANY && !dl) {	/* a new member for round 2 */
			assert_int_equal(corio_event_clear(p.g_ev), 0);
			p.member = corio_group_spawn(p.g, member_wait, p.g_ev);
			assert_non_null(p.member);
		}
	}
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_released_before_deadline(void **state)
{
	RUN(kind_released_main, *state);
}

/*
 * Released, then cancelled before it ran.  What was handed over is never
 * lost: a mutex or a semaphore unit goes back (to the next waiter, or
 * free) and the wait says -ECANCELED; an event, a signal, a queue item, a
 * queued put and a finished member are kept, and the wait returns 0 (the
 * cancellation then shows at the next await).  With and without a
 * deadline (whose timer then has to be stopped first).
 */
static const int handed_then_cancelled[NR_KINDS] = {
	[K_EVENT] = 0,
	[K_MUTEX] = -ECANCELED,
	[K_SEM] = -ECANCELED,
	[K_COND] = 0,
	[K_GET] = 0,
	[K_PUT] = 0,
	[K_ANY] = 0,
};

static int kind_handed_cancel_main(void *arg)
{
	enum kind k = *(const enum kind *)arg;
	struct prims p;
	struct waiter w;
	corio_task *t;
	int dl;

	prims_new(&p);
	for (dl = 0; dl < 2; dl++) {
		w = (struct waiter)WAITER_INIT(&p, k);
		w.timeout = dl ? CORIO_SEC(3600) : 0;
		t = corio_spawn(waiter_fn, &w);
		assert_non_null(t);
		yield_until(&w.parked);
		release_one(&p, k);
		assert_int_equal(w.ret, 1);	/* woken, has not run */
		assert_int_equal(corio_cancel(t), 0);
		assert_int_equal(corio_join(t), 0);
		assert_int_equal(w.ret, handed_then_cancelled[k]);
		if (k == K_ANY)
			assert_int_equal(w.member_ret, 7);
		assert_int_equal(stats_now().ops_in_flight, 0);
		restore(&p, &w);
		if (k == K_ANY && !dl) {
			assert_int_equal(corio_event_clear(p.g_ev), 0);
			p.member = corio_group_spawn(p.g, member_wait, p.g_ev);
			assert_non_null(p.member);
		}
	}
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_kind_handed_over_then_cancelled(void **state)
{
	RUN(kind_handed_cancel_main, *state);
}

/*
 * Parked waiters cost nothing: while one of each kind waits, a 50 ms sleep
 * of main takes a couple of turns, not one per waiter per turn.
 */
static int no_spin_main(void *arg)
{
	struct waiter w[NR_KINDS];
	corio_task *t[NR_KINDS];
	struct prims p;
	uint64_t turns0;
	int k;

	(void)arg;
	prims_new(&p);
	for (k = 0; k < NR_KINDS; k++) {
		w[k] = (struct waiter)WAITER_INIT(&p, (enum kind)k);
		t[k] = corio_spawn(waiter_fn, &w[k]);
		assert_non_null(t[k]);
	}
	yield_until(&w[NR_KINDS - 1].parked);
	assert_int_equal(corio_yield(), 0);
	turns0 = turns_now();
	assert_int_equal(corio_sleep(CORIO_MSEC(50)), 0);
	/* Under valgrind an idle loop wakes every 10 ms (see pump()). */
	assert_true(turns_now() - turns0 <= (UNDER_VALGRIND() ? 3 + 6 : 3));
	for (k = 0; k < NR_KINDS; k++) {
		assert_int_equal(w[k].ret, 1);
		assert_int_equal(corio_cancel(t[k]), 0);
		assert_int_equal(corio_join(t[k]), 0);
		assert_int_equal(w[k].ret, -ECANCELED);
	}
	prims_free(&p);
	assert_loop_clean();
	return 0;
}

static void test_waiters_do_not_spin(void **state)
{
	(void)state;
	RUN(no_spin_main, NULL);
}

/* Every wait needs a task: outside a loop, -EPERM and nothing else. */
static void test_waits_outside_a_task(void **state)
{
	corio_event *ev;
	corio_mutex *mu;
	corio_sem *sem, *sem1;
	corio_cond *cond;
	corio_queue *q;
	corio_group *g;
	corio_task *t;
	void *item = NULL;

	(void)state;
	/* Making objects needs no loop. */
	assert_int_equal(corio_event_new(&ev), 0);
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_sem_new(0, &sem), 0);
	assert_int_equal(corio_sem_new(1, &sem1), 0);
	assert_int_equal(corio_cond_new(&cond), 0);
	assert_int_equal(corio_queue_new(1, &q), 0);
	assert_int_equal(corio_group_new(&g), 0);

	/* errors: corio_event.3 EPERM */
	assert_int_equal(corio_event_wait(ev), -EPERM);
	/* errors: corio_mutex.3 EPERM */
	assert_int_equal(corio_mutex_lock(mu), -EPERM);
	assert_int_equal(corio_mutex_trylock(mu), -EPERM);
	assert_int_equal(corio_mutex_unlock(mu), -EPERM);
	/* errors: corio_sem.3 EPERM */
	assert_int_equal(corio_sem_acquire(sem), -EPERM);
	assert_int_equal(corio_sem_acquire(sem1), -EPERM);
	assert_int_equal(corio_sem_tryacquire(sem1), -EPERM);
	/* errors: corio_cond.3 EPERM */
	assert_int_equal(corio_cond_wait(cond, mu), -EPERM);
	/* errors: corio_queue.3 EPERM */
	assert_int_equal(corio_queue_get(q, &item), -EPERM);
	/* errors: corio_group.3 EPERM */
	assert_int_equal(corio_group_wait(g), -EPERM);
	assert_int_equal(corio_group_wait_any(g, &t, NULL), -EPERM);
	errno = 0;
	assert_null(corio_group_spawn(g, member_wait, ev));
	assert_int_equal(errno, EPERM);

	/* What never waits works anywhere: setting, releasing, signalling,
	 * the queue's try calls and a put or get that need not wait. */
	assert_int_equal(corio_event_set(ev), 0);
	assert_int_equal(corio_event_is_set(ev), 1);
	assert_int_equal(corio_event_clear(ev), 0);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_cond_signal(cond), 0);
	assert_int_equal(corio_cond_broadcast(cond), 0);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	assert_int_equal(corio_queue_tryput(q, &item_b), -EAGAIN);
	assert_int_equal(corio_queue_put(q, &item_b), -EPERM);
	assert_int_equal(corio_queue_len(q), 1);
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	assert_int_equal(corio_queue_tryget(q, &item), -EAGAIN);
	assert_int_equal(corio_queue_close(q), 0);
	assert_int_equal(corio_group_cancel(g), 0);

	assert_int_equal(corio_event_free(ev), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_int_equal(corio_sem_free(sem), 0);
	assert_int_equal(corio_sem_free(sem1), 0);
	assert_int_equal(corio_cond_free(cond), 0);
	assert_int_equal(corio_queue_free(q), 0);
	assert_int_equal(corio_group_free(g), 0);
}

/* NULL objects: -EINVAL (NULL and errno EINVAL for a spawn); free: 0. */
static void test_null_objects(void **state)
{
	void *item = NULL;
	corio_task *t;
	int res;

	(void)state;
	/* errors: corio_event.3 EINVAL */
	assert_int_equal(corio_event_new(NULL), -EINVAL);
	assert_int_equal(corio_event_set(NULL), -EINVAL);
	assert_int_equal(corio_event_clear(NULL), -EINVAL);
	assert_int_equal(corio_event_is_set(NULL), -EINVAL);
	assert_int_equal(corio_event_wait(NULL), -EINVAL);
	assert_int_equal(corio_event_free(NULL), 0);

	/* errors: corio_mutex.3 EINVAL */
	assert_int_equal(corio_mutex_new(NULL), -EINVAL);
	assert_int_equal(corio_mutex_lock(NULL), -EINVAL);
	assert_int_equal(corio_mutex_trylock(NULL), -EINVAL);
	assert_int_equal(corio_mutex_unlock(NULL), -EINVAL);
	assert_int_equal(corio_mutex_free(NULL), 0);

	/* errors: corio_sem.3 EINVAL */
	assert_int_equal(corio_sem_new(1, NULL), -EINVAL);
	assert_int_equal(corio_sem_acquire(NULL), -EINVAL);
	assert_int_equal(corio_sem_tryacquire(NULL), -EINVAL);
	assert_int_equal(corio_sem_release(NULL), -EINVAL);
	assert_int_equal(corio_sem_free(NULL), 0);

	/* errors: corio_cond.3 EINVAL */
	assert_int_equal(corio_cond_new(NULL), -EINVAL);
	assert_int_equal(corio_cond_wait(NULL, NULL), -EINVAL);
	assert_int_equal(corio_cond_signal(NULL), -EINVAL);
	assert_int_equal(corio_cond_broadcast(NULL), -EINVAL);
	assert_int_equal(corio_cond_free(NULL), 0);

	/* errors: corio_queue.3 EINVAL */
	assert_int_equal(corio_queue_new(1, NULL), -EINVAL);
	assert_int_equal(corio_queue_put(NULL, &item_a), -EINVAL);
	assert_int_equal(corio_queue_tryput(NULL, &item_a), -EINVAL);
	assert_int_equal(corio_queue_get(NULL, &item), -EINVAL);
	assert_int_equal(corio_queue_tryget(NULL, &item), -EINVAL);
	assert_int_equal(corio_queue_close(NULL), -EINVAL);
	assert_int_equal(corio_queue_len(NULL), 0);
	assert_int_equal(corio_queue_free(NULL), 0);

	/* errors: corio_group.3 EINVAL */
	assert_int_equal(corio_group_new(NULL), -EINVAL);
	errno = 0;
	assert_null(corio_group_spawn(NULL, member_wait, NULL));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(corio_group_wait(NULL), -EINVAL);
	assert_int_equal(corio_group_wait_any(NULL, &t, &res), -EINVAL);
	assert_int_equal(corio_group_cancel(NULL), -EINVAL);
	assert_int_equal(corio_group_free(NULL), 0);
}

/* The same inside a task, where -EPERM does not mask them. */
static int null_in_task_main(void *arg)
{
	corio_mutex *mu;
	corio_cond *cond;
	corio_queue *q;
	corio_group *g;
	corio_task *t;
	int res;

	(void)arg;
	test_null_objects(NULL);
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_cond_new(&cond), 0);
	assert_int_equal(corio_queue_new(1, &q), 0);
	assert_int_equal(corio_group_new(&g), 0);
	assert_int_equal(corio_mutex_lock(mu), 0);
	assert_int_equal(corio_cond_wait(cond, NULL), -EINVAL);
	assert_int_equal(corio_cond_wait(NULL, mu), -EINVAL);
	assert_int_equal(corio_queue_get(q, NULL), -EINVAL);
	assert_int_equal(corio_queue_tryget(q, NULL), -EINVAL);
	assert_int_equal(corio_group_wait_any(g, NULL, &res), -EINVAL);
	errno = 0;
	assert_null(corio_group_spawn(g, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	/* The failed spawn left the group empty. */
	/* errors: corio_group.3 ENOENT */
	assert_int_equal(corio_group_wait_any(g, &t, &res), -ENOENT);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_int_equal(corio_cond_free(cond), 0);
	assert_int_equal(corio_queue_free(q), 0);
	assert_int_equal(corio_group_free(g), 0);
	assert_loop_clean();
	return 0;
}

static void test_null_objects_in_a_task(void **state)
{
	(void)state;
	RUN(null_in_task_main, NULL);
}

/*
 * Events.
 */

struct logger {
	corio_event *ev;
	corio_mutex *mu;
	corio_sem *sem;
	corio_cond *cond;
	corio_queue *q;
	char letter;
	int ret;
	void *item;
};

static int event_logger(void *arg)
{
	struct logger *l = arg;

	l->ret = corio_event_wait(l->ev);
	log_add(l->letter);
	return 0;
}

static int event_basics_main(void *arg)
{
	corio_event *ev;
	uint64_t turns0;

	(void)arg;
	assert_int_equal(corio_event_new(&ev), 0);
	assert_int_equal(corio_event_is_set(ev), 0);
	assert_int_equal(corio_event_set(ev), 0);
	assert_int_equal(corio_event_is_set(ev), 1);
	assert_int_equal(corio_event_set(ev), 0);	/* twice: harmless */
	assert_int_equal(corio_event_is_set(ev), 1);
	/* Set: returns 0 at once, without parking. */
	turns0 = turns_now();
	assert_int_equal(corio_event_wait(ev), 0);
	assert_int_equal(corio_event_wait(ev), 0);
	assert_int_equal(turns_now(), turns0);
	assert_int_equal(corio_event_clear(ev), 0);
	assert_int_equal(corio_event_is_set(ev), 0);
	assert_int_equal(corio_event_clear(ev), 0);
	assert_int_equal(corio_event_is_set(ev), 0);
	assert_int_equal(corio_event_free(ev), 0);
	assert_loop_clean();
	return 0;
}

static void test_event_basics(void **state)
{
	(void)state;
	RUN(event_basics_main, NULL);
}

/*
 * corio_event_set wakes every waiter, in the order they came; clearing
 * the event before they run does not take it back.  A wait on a clear
 * event then blocks again.  No syscall for any of it.
 */
static int event_wakes_all_main(void *arg)
{
	struct logger l[5];
	corio_task *t[5];
	struct corio_stats st0, st1;
	corio_event *ev;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_event_new(&ev), 0);
	st0 = stats_now();
	for (i = 0; i < 4; i++) {
		l[i] = (struct logger){ .ev = ev, .letter = (char)('A' + i),
					.ret = 1 };
		t[i] = corio_spawn(event_logger, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(log_len, 0);
	/* errors: corio_event.3 EBUSY */
	assert_int_equal(corio_event_free(ev), -EBUSY);
	assert_int_equal(corio_event_set(ev), 0);
	assert_int_equal(log_len, 0);	/* set does not switch */
	assert_int_equal(corio_event_clear(ev), 0);
	assert_int_equal(corio_yield(), 0);
	assert_string_equal(log_buf, "ABCD");
	for (i = 0; i < 4; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(l[i].ret, 0);
	}
	st1 = stats_now();
	assert_int_equal(st1.enters, st0.enters);

	/* Clear again: a new waiter blocks until the next set. */
	l[4] = (struct logger){ .ev = ev, .letter = 'E', .ret = 1 };
	t[4] = corio_spawn(event_logger, &l[4]);
	assert_non_null(t[4]);
	assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	assert_int_equal(l[4].ret, 1);
	assert_int_equal(corio_event_set(ev), 0);
	assert_int_equal(corio_join(t[4]), 0);
	assert_int_equal(l[4].ret, 0);
	assert_string_equal(log_buf, "ABCDE");
	assert_int_equal(corio_event_free(ev), 0);
	assert_loop_clean();
	return 0;
}

static void test_event_set_wakes_all_in_order(void **state)
{
	(void)state;
	RUN(event_wakes_all_main, NULL);
}

/*
 * Calls that need not wait succeed even in a cancelled task or past the
 * deadline, as in asyncio (only a call that would wait is an await):
 * a wait on a set event, a lock of a free mutex, an acquire of an
 * available unit, a get from a non-empty queue, a put into a non-full one.
 */
static int fast_paths(void *arg)
{
	corio_event *ev;
	corio_mutex *mu;
	corio_sem *sem;
	corio_queue *q;
	void *item = NULL;
	int pass = *(int *)arg;

	if (pass == 0)
		assert_int_equal(corio_cancel(corio_self()), 0);
	else
		corio_deadline(1);
	assert_int_equal(corio_event_new(&ev), 0);
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_sem_new(1, &sem), 0);
	assert_int_equal(corio_queue_new(1, &q), 0);
	assert_int_equal(corio_event_set(ev), 0);
	assert_int_equal(corio_event_wait(ev), 0);
	assert_int_equal(corio_mutex_lock(mu), 0);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_sem_acquire(sem), 0);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	/* The ones that would wait do not. */
	assert_int_equal(corio_sem_acquire(sem), pass ? -ETIMEDOUT :
			 -ECANCELED);
	assert_int_equal(corio_queue_get(q, &item), pass ? -ETIMEDOUT :
			 -ECANCELED);
	assert_int_equal(corio_event_free(ev), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_int_equal(corio_sem_free(sem), 0);
	assert_int_equal(corio_queue_free(q), 0);
	return 0;
}

static int fast_paths_main(void *arg)
{
	int pass;

	(void)arg;
	for (pass = 0; pass < 2; pass++) {
		corio_task *t = corio_spawn(fast_paths, &pass);

		assert_non_null(t);
		assert_int_equal(corio_join(t), 0);
	}
	assert_loop_clean();
	return 0;
}

static void test_calls_that_need_not_wait(void **state)
{
	(void)state;
	RUN(fast_paths_main, NULL);
}

/*
 * Mutexes.
 */

static int mutex_other(void *arg)
{
	corio_mutex *mu = arg;

	/* errors: corio_mutex.3 EBUSY */
	assert_int_equal(corio_mutex_trylock(mu), -EBUSY);
	assert_int_equal(corio_mutex_unlock(mu), -EPERM);
	return 0;
}

static int mutex_basics_main(void *arg)
{
	corio_mutex *mu;
	corio_task *t;

	(void)arg;
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_mutex_unlock(mu), -EPERM);	/* not held */
	assert_int_equal(corio_mutex_trylock(mu), 0);
	assert_int_equal(corio_mutex_trylock(mu), -EDEADLK);
	/* errors: corio_mutex.3 EDEADLK */
	assert_int_equal(corio_mutex_lock(mu), -EDEADLK);
	assert_int_equal(corio_mutex_free(mu), -EBUSY);		/* held */
	t = corio_spawn(mutex_other, mu);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_mutex_unlock(mu), -EPERM);
	assert_int_equal(corio_mutex_lock(mu), 0);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_basics(void **state)
{
	(void)state;
	RUN(mutex_basics_main, NULL);
}

static int mutex_logger(void *arg)
{
	struct logger *l = arg;

	l->ret = corio_mutex_lock(l->mu);
	if (l->ret == 0) {
		log_add(l->letter);
		assert_int_equal(corio_yield(), 0);	/* hold it a while */
		assert_int_equal(corio_mutex_unlock(l->mu), 0);
	}
	return 0;
}

/*
 * Waiters get the mutex in the order they came, and one that comes after
 * an unlock cannot take it from the waiter it was handed to.
 */
static int mutex_fifo_main(void *arg)
{
	struct logger l[6];
	corio_task *t[6];
	corio_mutex *mu;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_mutex_lock(mu), 0);
	for (i = 0; i < 5; i++) {
		l[i] = (struct logger){ .mu = mu, .letter = (char)('A' + i),
					.ret = 1 };
		t[i] = corio_spawn(mutex_logger, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_mutex_free(mu), -EBUSY);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	/* Handed to A, which has not run yet: nobody can barge in. */
	assert_int_equal(corio_mutex_trylock(mu), -EBUSY);
	assert_int_equal(corio_mutex_unlock(mu), -EPERM);
	assert_int_equal(corio_mutex_free(mu), -EBUSY);
	l[5] = (struct logger){ .mu = mu, .letter = 'F', .ret = 1 };
	t[5] = corio_spawn(mutex_logger, &l[5]);
	assert_non_null(t[5]);
	assert_int_equal(corio_yield(), 0);		/* F queues */
	assert_int_equal(corio_mutex_lock(mu), 0);	/* after everyone */
	assert_string_equal(log_buf, "ABCDEF");
	assert_int_equal(corio_mutex_unlock(mu), 0);
	for (i = 0; i < 6; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(l[i].ret, 0);
	}
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_fifo(void **state)
{
	(void)state;
	RUN(mutex_fifo_main, NULL);
}

struct locker {
	corio_mutex *mu;
	uint64_t timeout;
	int parked;
	int ret;
	int next;	/* the result of its next await */
};

static int locker_fn(void *arg)
{
	struct locker *l = arg;

	if (l->timeout)
		corio_timeout(l->timeout);
	l->parked = 1;
	l->ret = corio_mutex_lock(l->mu);
	if (l->ret == 0)
		assert_int_equal(corio_mutex_unlock(l->mu), 0);
	l->next = corio_nop();
	return 0;
}

/*
 * The mutex is handed to W1, which is cancelled before it runs: W1 gets
 * -ECANCELED and never holds it; it goes on to W2.  With a deadline on W1
 * too, whose timer W1 stops first.
 */
static int mutex_handed_cancel_main(void *arg)
{
	struct locker l1, l2;
	corio_task *t1, *t2;
	corio_mutex *mu;
	int dl;

	(void)arg;
	assert_int_equal(corio_mutex_new(&mu), 0);
	for (dl = 0; dl < 2; dl++) {
		l1 = (struct locker){ .mu = mu, .ret = 1, .next = 1,
				      .timeout = dl ? CORIO_SEC(3600) : 0 };
		l2 = (struct locker){ .mu = mu, .ret = 1, .next = 1 };
		assert_int_equal(corio_mutex_lock(mu), 0);
		t1 = corio_spawn(locker_fn, &l1);
		t2 = corio_spawn(locker_fn, &l2);
		assert_non_null(t1);
		assert_non_null(t2);
		yield_until(&l2.parked);
		assert_int_equal(corio_mutex_unlock(mu), 0);
		assert_int_equal(corio_cancel(t1), 0);
		assert_int_equal(corio_join(t1), 0);
		assert_int_equal(l1.ret, -ECANCELED);
		assert_int_equal(l1.next, -ECANCELED);
		assert_int_equal(corio_join(t2), 0);
		assert_int_equal(l2.ret, 0);
		assert_int_equal(l2.next, 0);
		assert_int_equal(corio_mutex_trylock(mu), 0);
		assert_int_equal(corio_mutex_unlock(mu), 0);
		assert_int_equal(stats_now().ops_in_flight, 0);
	}
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_handed_over_then_cancelled(void **state)
{
	(void)state;
	RUN(mutex_handed_cancel_main, NULL);
}

/* A cancelled waiter leaves the queue: the next unlock skips it. */
static int mutex_cancel_middle_main(void *arg)
{
	struct locker l[3];
	corio_task *t[3];
	corio_mutex *mu;
	int i;

	(void)arg;
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_mutex_lock(mu), 0);
	for (i = 0; i < 3; i++) {
		l[i] = (struct locker){ .mu = mu, .ret = 1, .next = 1 };
		t[i] = corio_spawn(locker_fn, &l[i]);
		assert_non_null(t[i]);
	}
	yield_until(&l[2].parked);
	assert_int_equal(corio_cancel(t[0]), 0);
	assert_int_equal(corio_join(t[0]), 0);
	assert_int_equal(l[0].ret, -ECANCELED);
	assert_int_equal(l[1].ret, 1);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_join(t[1]), 0);
	assert_int_equal(corio_join(t[2]), 0);
	assert_int_equal(l[1].ret, 0);
	assert_int_equal(l[2].ret, 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_cancelled_waiter_leaves_queue(void **state)
{
	(void)state;
	RUN(mutex_cancel_middle_main, NULL);
}

static int shielded_locker(void *arg)
{
	struct locker *l = arg;

	corio_shield(1);
	l->parked = 1;
	l->ret = corio_mutex_lock(l->mu);
	corio_shield(0);
	l->next = corio_nop();
	if (l->ret == 0)
		assert_int_equal(corio_mutex_unlock(l->mu), 0);
	return 0;
}

/* A shielded waiter is not stopped by a cancel: it gets the mutex. */
static int mutex_shield_main(void *arg)
{
	struct locker l = { .ret = 1, .next = 1 };
	corio_task *t;

	(void)arg;
	assert_int_equal(corio_mutex_new(&l.mu), 0);
	assert_int_equal(corio_mutex_lock(l.mu), 0);
	t = corio_spawn(shielded_locker, &l);
	assert_non_null(t);
	yield_until(&l.parked);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(5)), 0);
	assert_int_equal(l.ret, 1);
	assert_int_equal(corio_mutex_unlock(l.mu), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(l.ret, 0);
	assert_int_equal(l.next, -ECANCELED);	/* once the shield is off */
	assert_int_equal(corio_mutex_free(l.mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_shielded_waiter(void **state)
{
	(void)state;
	RUN(mutex_shield_main, NULL);
}

struct pingpong {
	corio_mutex *mu;
	corio_sem *sem[2];
	corio_cond *cond;
	corio_event *ev[2];
	corio_queue *q;
	int turn;
	int stop;
	int count;
};

#define ROUNDS 1000

static int mutex_pong(void *arg)
{
	struct pingpong *pp = arg;

	for (;;) {
		assert_int_equal(corio_mutex_lock(pp->mu), 0);
		if (pp->stop)
			break;
		pp->count++;
		assert_int_equal(corio_mutex_unlock(pp->mu), 0);
	}
	assert_int_equal(corio_mutex_unlock(pp->mu), 0);
	return 0;
}

/* One round trip costs no syscall: unlock hands over, lock parks. */
static int mutex_pingpong_main(void *arg)
{
	struct pingpong pp = { 0 };
	struct corio_stats st0, st1;
	corio_task *t;
	int i;

	(void)arg;
	assert_int_equal(corio_mutex_new(&pp.mu), 0);
	assert_int_equal(corio_mutex_lock(pp.mu), 0);
	t = corio_spawn(mutex_pong, &pp);
	assert_non_null(t);
	assert_int_equal(corio_yield(), 0);
	st0 = stats_now();
	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(corio_mutex_unlock(pp.mu), 0);
		assert_int_equal(corio_mutex_lock(pp.mu), 0);
		assert_int_equal(pp.count, i + 1);
	}
	pp.stop = 1;
	assert_int_equal(corio_mutex_unlock(pp.mu), 0);
	assert_int_equal(corio_join(t), 0);
	st1 = stats_now();
	assert_int_equal(st1.enters, st0.enters);
	assert_int_equal(st1.cqes, st0.cqes);
	assert_true(st1.turns - st0.turns >= ROUNDS);
	assert_int_equal(corio_mutex_free(pp.mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_mutex_pingpong_no_syscall(void **state)
{
	(void)state;
	RUN(mutex_pingpong_main, NULL);
}

/*
 * Semaphores.
 */

static int sem_basics_main(void *arg)
{
	corio_sem *sem;
	int i;

	(void)arg;
	assert_int_equal(corio_sem_new(3, &sem), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_sem_tryacquire(sem), 0);
	/* errors: corio_sem.3 EAGAIN */
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_acquire(sem), 0);
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_free(sem), 0);	/* units left: fine */

	assert_int_equal(corio_sem_new(0, &sem), 0);
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_free(sem), 0);

	/* The count is an unsigned int and does not wrap. */
	assert_int_equal(corio_sem_new(UINT_MAX, &sem), 0);
	/* errors: corio_sem.3 EOVERFLOW */
	assert_int_equal(corio_sem_release(sem), -EOVERFLOW);
	assert_int_equal(corio_sem_tryacquire(sem), 0);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_release(sem), -EOVERFLOW);
	assert_int_equal(corio_sem_free(sem), 0);
	assert_loop_clean();
	return 0;
}

static void test_sem_basics(void **state)
{
	(void)state;
	RUN(sem_basics_main, NULL);
}

static int sem_logger(void *arg)
{
	struct logger *l = arg;

	l->ret = corio_sem_acquire(l->sem);
	if (l->ret == 0)
		log_add(l->letter);
	return 0;
}

/*
 * Units go to waiters in the order they came; a released unit is handed
 * over, so a later tryacquire cannot take it.
 */
static int sem_fifo_main(void *arg)
{
	struct logger l[4];
	corio_task *t[4];
	corio_sem *sem;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_sem_new(0, &sem), 0);
	for (i = 0; i < 4; i++) {
		l[i] = (struct logger){ .sem = sem, .letter = (char)('A' + i),
					.ret = 1 };
		t[i] = corio_spawn(sem_logger, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	/* errors: corio_sem.3 EBUSY */
	assert_int_equal(corio_sem_free(sem), -EBUSY);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_yield(), 0);
	assert_string_equal(log_buf, "A");
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_yield(), 0);
	assert_string_equal(log_buf, "ABC");
	/* D waits: tryacquire fails even right after a release. */
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_sem_release(sem), 0);	/* one unit left */
	for (i = 0; i < 4; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(l[i].ret, 0);
	}
	assert_string_equal(log_buf, "ABCD");
	assert_int_equal(corio_sem_tryacquire(sem), 0);
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_free(sem), 0);
	assert_loop_clean();
	return 0;
}

static void test_sem_fifo(void **state)
{
	(void)state;
	RUN(sem_fifo_main, NULL);
}

/* A unit handed to a waiter cancelled before it ran goes to the next. */
static int sem_handed_cancel_main(void *arg)
{
	struct logger l[2];
	corio_task *t[2];
	corio_sem *sem;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_sem_new(0, &sem), 0);
	for (i = 0; i < 2; i++) {
		l[i] = (struct logger){ .sem = sem, .letter = (char)('A' + i),
					.ret = 1 };
		t[i] = corio_spawn(sem_logger, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_sem_release(sem), 0);
	assert_int_equal(corio_cancel(t[0]), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(corio_join(t[i]), 0);
	assert_int_equal(l[0].ret, -ECANCELED);
	assert_int_equal(l[1].ret, 0);
	assert_string_equal(log_buf, "B");
	assert_int_equal(corio_sem_tryacquire(sem), -EAGAIN);
	assert_int_equal(corio_sem_free(sem), 0);
	assert_loop_clean();
	return 0;
}

static void test_sem_handed_over_then_cancelled(void **state)
{
	(void)state;
	RUN(sem_handed_cancel_main, NULL);
}

static int sem_pong(void *arg)
{
	struct pingpong *pp = arg;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(corio_sem_acquire(pp->sem[1]), 0);
		pp->count++;
		assert_int_equal(corio_sem_release(pp->sem[0]), 0);
	}
	return 0;
}

static int sem_pingpong_main(void *arg)
{
	struct pingpong pp = { 0 };
	struct corio_stats st0, st1;
	corio_task *t;
	int i;

	(void)arg;
	assert_int_equal(corio_sem_new(0, &pp.sem[0]), 0);
	assert_int_equal(corio_sem_new(0, &pp.sem[1]), 0);
	st0 = stats_now();
	t = corio_spawn(sem_pong, &pp);
	assert_non_null(t);
	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(corio_sem_release(pp.sem[1]), 0);
		assert_int_equal(corio_sem_acquire(pp.sem[0]), 0);
		assert_int_equal(pp.count, i + 1);
	}
	assert_int_equal(corio_join(t), 0);
	st1 = stats_now();
	assert_int_equal(st1.enters, st0.enters);
	assert_int_equal(corio_sem_free(pp.sem[0]), 0);
	assert_int_equal(corio_sem_free(pp.sem[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_sem_pingpong_no_syscall(void **state)
{
	(void)state;
	RUN(sem_pingpong_main, NULL);
}

/*
 * Conditions.
 */

struct condw {
	corio_cond *cond;
	corio_mutex *mu;
	char letter;
	uint64_t timeout;
	int parked;
	int ret;
	int held;	/* it held mu when corio_cond_wait returned */
	uint64_t took;
};

static int cond_waiter(void *arg)
{
	struct condw *c = arg;
	uint64_t t0;

	assert_int_equal(corio_mutex_lock(c->mu), 0);
	if (c->timeout)
		corio_timeout(c->timeout);
	c->parked = 1;
	t0 = corio_now();
	c->ret = corio_cond_wait(c->cond, c->mu);
	c->took = corio_now() - t0;
	corio_deadline(0);
	c->held = corio_mutex_trylock(c->mu) == -EDEADLK;
	if (c->letter)
		log_add(c->letter);
	(void)corio_yield();	/* hold it a while (fails if cancelled) */
	if (c->held)
		assert_int_equal(corio_mutex_unlock(c->mu), 0);
	return 0;
}

static int cond_other_holds(void *arg)
{
	struct condw *c = arg;

	assert_int_equal(corio_cond_wait(c->cond, c->mu), -EPERM);
	return 0;
}

/* corio_cond_wait needs the mutex held by the caller. */
static int cond_eperm_main(void *arg)
{
	struct condw c = { 0 };
	corio_task *t;

	(void)arg;
	assert_int_equal(corio_cond_new(&c.cond), 0);
	assert_int_equal(corio_mutex_new(&c.mu), 0);
	assert_int_equal(corio_cond_wait(c.cond, c.mu), -EPERM);
	assert_int_equal(corio_mutex_lock(c.mu), 0);
	t = corio_spawn(cond_other_holds, &c);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	/* Still held by main: a failed wait did not release it. */
	assert_int_equal(corio_mutex_trylock(c.mu), -EDEADLK);
	assert_int_equal(corio_mutex_unlock(c.mu), 0);
	/* A signal with no waiter is not remembered. */
	assert_int_equal(corio_cond_signal(c.cond), 0);
	assert_int_equal(corio_cond_broadcast(c.cond), 0);
	c.timeout = CORIO_MSEC(20);
	t = corio_spawn(cond_waiter, &c);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(c.ret, -ETIMEDOUT);
	assert_true(c.held);
	assert_int_equal(corio_cond_free(c.cond), 0);
	assert_int_equal(corio_mutex_free(c.mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_cond_needs_the_mutex(void **state)
{
	(void)state;
	RUN(cond_eperm_main, NULL);
}

/*
 * signal wakes the first waiter only, broadcast all the others; each
 * returns holding the mutex, taking it in the order they were woken.
 */
static int cond_signal_main(void *arg)
{
	struct condw c[4];
	corio_task *t[4];
	corio_cond *cond;
	corio_mutex *mu;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_cond_new(&cond), 0);
	assert_int_equal(corio_mutex_new(&mu), 0);
	for (i = 0; i < 4; i++) {
		c[i] = (struct condw){ .cond = cond, .mu = mu, .ret = 1,
				       .letter = (char)('A' + i) };
		t[i] = corio_spawn(cond_waiter, &c[i]);
		assert_non_null(t[i]);
	}
	yield_until(&c[3].parked);
	/* errors: corio_cond.3 EBUSY */
	assert_int_equal(corio_cond_free(cond), -EBUSY);
	/* All four released the mutex while waiting. */
	assert_int_equal(corio_mutex_lock(mu), 0);
	assert_int_equal(corio_cond_signal(cond), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(5)), 0);
	/* A is woken but needs the mutex main holds. */
	assert_int_equal(log_len, 0);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_sleep(CORIO_MSEC(5)), 0);
	assert_string_equal(log_buf, "A");
	assert_int_equal(c[1].ret, 1);		/* B, C, D still wait */
	assert_int_equal(corio_cond_broadcast(cond), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(c[i].ret, 0);
		assert_true(c[i].held);
	}
	assert_string_equal(log_buf, "ABCD");
	assert_int_equal(corio_cond_free(cond), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_cond_signal_and_broadcast(void **state)
{
	(void)state;
	RUN(cond_signal_main, NULL);
}

/*
 * A cancelled or timed-out wait returns only once it holds the mutex
 * again, however long another task keeps it: the relock is bounded by
 * neither the cancellation nor the deadline.
 */
static int cond_relock_main(void *arg)
{
	struct condw c;
	corio_task *t;
	corio_cond *cond;
	corio_mutex *mu;
	int pass;

	(void)arg;
	assert_int_equal(corio_cond_new(&cond), 0);
	assert_int_equal(corio_mutex_new(&mu), 0);
	for (pass = 0; pass < 2; pass++) {
		c = (struct condw){ .cond = cond, .mu = mu, .ret = 1,
				    .timeout = pass ? CORIO_MSEC(20) : 0 };
		t = corio_spawn(cond_waiter, &c);
		assert_non_null(t);
		yield_until(&c.parked);
		assert_int_equal(corio_mutex_lock(mu), 0);
		if (!pass)
			assert_int_equal(corio_cancel(t), 0);
		assert_int_equal(corio_sleep(CORIO_MSEC(100)), 0);
		assert_int_equal(c.ret, 1);	/* still waiting for mu */
		assert_int_equal(corio_mutex_unlock(mu), 0);
		assert_int_equal(corio_join(t), 0);
		assert_int_equal(c.ret, pass ? -ETIMEDOUT : -ECANCELED);
		assert_true(c.held);
		assert_true(c.took >= CORIO_MSEC(100));
		assert_int_equal(stats_now().ops_in_flight, 0);
	}
	assert_int_equal(corio_cond_free(cond), 0);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_cond_relocks_when_cancelled_or_timed_out(void **state)
{
	(void)state;
	RUN(cond_relock_main, NULL);
}

/* Waiting on a condition hands the mutex to its first waiter. */
static int cond_hands_mutex_main(void *arg)
{
	struct locker l = { .ret = 1, .next = 1 };
	struct condw c = { .ret = 1 };
	corio_task *tc, *tl;

	(void)arg;
	assert_int_equal(corio_cond_new(&c.cond), 0);
	assert_int_equal(corio_mutex_new(&c.mu), 0);
	l.mu = c.mu;
	assert_int_equal(corio_mutex_lock(c.mu), 0);
	tc = corio_spawn(cond_waiter, &c);	/* queues on mu first */
	tl = corio_spawn(locker_fn, &l);	/* then this one */
	assert_non_null(tc);
	assert_non_null(tl);
	yield_until(&l.parked);
	assert_int_equal(corio_mutex_unlock(c.mu), 0);	/* to the waiter */
	assert_int_equal(corio_join(tl), 0);		/* got it from it */
	assert_int_equal(l.ret, 0);
	assert_int_equal(c.ret, 1);
	assert_int_equal(corio_cond_signal(c.cond), 0);
	assert_int_equal(corio_join(tc), 0);
	assert_int_equal(c.ret, 0);
	assert_true(c.held);
	assert_int_equal(corio_cond_free(c.cond), 0);
	assert_int_equal(corio_mutex_free(c.mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_cond_wait_hands_mutex_over(void **state)
{
	(void)state;
	RUN(cond_hands_mutex_main, NULL);
}

static int cond_pong(void *arg)
{
	struct pingpong *pp = arg;

	assert_int_equal(corio_mutex_lock(pp->mu), 0);
	while (!pp->stop) {
		while (pp->turn != 1 && !pp->stop)
			assert_int_equal(corio_cond_wait(pp->cond, pp->mu), 0);
		pp->count++;
		pp->turn = 0;
		assert_int_equal(corio_cond_signal(pp->cond), 0);
	}
	assert_int_equal(corio_mutex_unlock(pp->mu), 0);
	return 0;
}

/* A condition ping-pong (and an event one) make no syscall. */
static int event_pong(void *arg)
{
	struct pingpong *pp = arg;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(corio_event_wait(pp->ev[1]), 0);
		assert_int_equal(corio_event_clear(pp->ev[1]), 0);
		pp->count++;
		assert_int_equal(corio_event_set(pp->ev[0]), 0);
	}
	return 0;
}

static int cond_pingpong_main(void *arg)
{
	struct pingpong pp = { 0 };
	struct corio_stats st0, st1;
	corio_task *t;
	int i;

	(void)arg;
	assert_int_equal(corio_mutex_new(&pp.mu), 0);
	assert_int_equal(corio_cond_new(&pp.cond), 0);
	st0 = stats_now();
	t = corio_spawn(cond_pong, &pp);
	assert_non_null(t);
	assert_int_equal(corio_mutex_lock(pp.mu), 0);
	for (i = 0; i < ROUNDS; i++) {
		pp.turn = 1;
		assert_int_equal(corio_cond_signal(pp.cond), 0);
		while (pp.turn != 0)
			assert_int_equal(corio_cond_wait(pp.cond, pp.mu), 0);
		assert_int_equal(pp.count, i + 1);
	}
	pp.stop = 1;
	assert_int_equal(corio_cond_signal(pp.cond), 0);
	assert_int_equal(corio_mutex_unlock(pp.mu), 0);
	assert_int_equal(corio_join(t), 0);
	st1 = stats_now();
	assert_int_equal(st1.enters, st0.enters);

	pp.count = 0;
	assert_int_equal(corio_event_new(&pp.ev[0]), 0);
	assert_int_equal(corio_event_new(&pp.ev[1]), 0);
	t = corio_spawn(event_pong, &pp);
	assert_non_null(t);
	for (i = 0; i < ROUNDS; i++) {
		assert_int_equal(corio_event_set(pp.ev[1]), 0);
		assert_int_equal(corio_event_wait(pp.ev[0]), 0);
		assert_int_equal(corio_event_clear(pp.ev[0]), 0);
		assert_int_equal(pp.count, i + 1);
	}
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(stats_now().enters, st0.enters);
	assert_int_equal(corio_event_free(pp.ev[0]), 0);
	assert_int_equal(corio_event_free(pp.ev[1]), 0);
	assert_int_equal(corio_cond_free(pp.cond), 0);
	assert_int_equal(corio_mutex_free(pp.mu), 0);
	assert_loop_clean();
	return 0;
}

static void test_cond_and_event_pingpong_no_syscall(void **state)
{
	(void)state;
	RUN(cond_pingpong_main, NULL);
}

/*
 * Queues.
 */

static void test_queue_new(void **state)
{
	corio_queue *q = NULL;

	(void)state;
	assert_int_equal(corio_queue_new(0, &q), -EINVAL);
	assert_int_equal(corio_queue_new(SIZE_MAX, &q), -EINVAL);
	assert_int_equal(corio_queue_new(SIZE_MAX / sizeof(void *) + 1, &q),
			 -EINVAL);
	assert_null(q);
	if (!CORIO_ASAN && !UNDER_VALGRIND()) {
		/* Allowed, but too big to allocate (ASan would abort,
		 * valgrind complain). */
		/* errors: corio_queue.3 ENOMEM */
		assert_int_equal(corio_queue_new(SIZE_MAX / sizeof(void *),
						 &q), -ENOMEM);
		assert_null(q);
	}
	assert_int_equal(corio_queue_new(1, &q), 0);
	assert_non_null(q);
	assert_int_equal(corio_queue_len(q), 0);
	assert_int_equal(corio_queue_free(q), 0);
}

/* try variants: FIFO, -EAGAIN when full or empty, wrapping around. */
static int queue_try_main(void *arg)
{
	corio_queue *q;
	void *item = &item_d;
	intptr_t i, next_put = 1, next_get = 1;

	(void)arg;
	assert_int_equal(corio_queue_new(3, &q), 0);
	/* errors: corio_queue.3 EAGAIN */
	assert_int_equal(corio_queue_tryget(q, &item), -EAGAIN);
	assert_ptr_equal(item, &item_d);	/* untouched */
	assert_int_equal(corio_queue_tryput(q, &item_a), 0);
	assert_int_equal(corio_queue_tryput(q, NULL), 0);  /* a valid item */
	assert_int_equal(corio_queue_put(q, &item_c), 0);
	assert_int_equal(corio_queue_len(q), 3);
	assert_int_equal(corio_queue_tryput(q, &item_d), -EAGAIN);
	assert_int_equal(corio_queue_len(q), 3);
	assert_int_equal(corio_queue_tryget(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_null(item);
	assert_int_equal(corio_queue_tryget(q, &item), 0);
	assert_ptr_equal(item, &item_c);
	assert_int_equal(corio_queue_len(q), 0);
	/* Round and round the ring. */
	for (i = 0; i < 100; i++) {
		while (corio_queue_tryput(q, (void *)next_put) == 0)
			next_put++;
		assert_int_equal(corio_queue_len(q), 3);
		assert_int_equal(corio_queue_tryget(q, &item), 0);
		assert_ptr_equal(item, (void *)next_get);
		next_get++;
		if (i % 3 == 0) {
			assert_int_equal(corio_queue_tryget(q, &item), 0);
			assert_ptr_equal(item, (void *)next_get);
			next_get++;
		}
	}
	while (corio_queue_tryget(q, &item) == 0) {
		assert_ptr_equal(item, (void *)next_get);
		next_get++;
	}
	assert_int_equal(next_get, next_put);
	assert_int_equal(corio_queue_free(q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_try_variants(void **state)
{
	(void)state;
	RUN(queue_try_main, NULL);
}

static int queue_getter(void *arg)
{
	struct logger *l = arg;

	l->ret = corio_queue_get(l->q, &l->item);
	log_add(l->letter);
	return 0;
}

static int queue_putter(void *arg)
{
	struct logger *l = arg;

	l->ret = corio_queue_put(l->q, l->item);
	log_add(l->letter);
	return 0;
}

/*
 * Getters waiting on an empty queue get items in the order they came,
 * handed straight over (the ring stays empty, so a tryget finds nothing).
 */
static int queue_getters_main(void *arg)
{
	void *items[3] = { &item_a, &item_b, &item_c };
	struct logger l[3];
	corio_task *t[3];
	corio_queue *q;
	void *item = NULL;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_queue_new(2, &q), 0);
	for (i = 0; i < 3; i++) {
		l[i] = (struct logger){ .q = q, .letter = (char)('A' + i),
					.ret = 1 };
		t[i] = corio_spawn(queue_getter, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	/* errors: corio_queue.3 EBUSY */
	assert_int_equal(corio_queue_free(q), -EBUSY);
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_queue_tryput(q, items[i]), 0);
		assert_int_equal(corio_queue_len(q), 0);
		assert_int_equal(corio_queue_tryget(q, &item), -EAGAIN);
	}
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(l[i].ret, 0);
		assert_ptr_equal(l[i].item, items[i]);
	}
	assert_string_equal(log_buf, "ABC");
	assert_int_equal(corio_queue_free(q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_waiting_getters_fifo(void **state)
{
	(void)state;
	RUN(queue_getters_main, NULL);
}

/*
 * Putters waiting on a full queue put in the order they came: a get moves
 * the first one's item in at once, so the queue stays full for others.
 */
static int queue_putters_main(void *arg)
{
	void *items[3] = { &item_b, &item_c, &item_d };
	struct logger l[3];
	corio_task *t[3];
	corio_queue *q;
	void *item = NULL;
	int i;

	(void)arg;
	log_reset();
	assert_int_equal(corio_queue_new(1, &q), 0);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	for (i = 0; i < 3; i++) {
		l[i] = (struct logger){ .q = q, .letter = (char)('A' + i),
					.ret = 1, .item = items[i] };
		t[i] = corio_spawn(queue_putter, &l[i]);
		assert_non_null(t[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(log_len, 0);
	assert_int_equal(corio_queue_free(q), -EBUSY);
	assert_int_equal(corio_queue_tryget(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	assert_int_equal(corio_queue_len(q), 1);  /* the first's is in */
	assert_int_equal(corio_queue_tryput(q, &item_a), -EAGAIN);
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_queue_get(q, &item), 0);
		assert_ptr_equal(item, items[i]);
	}
	assert_int_equal(corio_queue_len(q), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_join(t[i]), 0);
		assert_int_equal(l[i].ret, 0);
	}
	assert_string_equal(log_buf, "ABC");
	assert_int_equal(corio_queue_free(q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_waiting_putters_fifo(void **state)
{
	(void)state;
	RUN(queue_putters_main, NULL);
}

/*
 * Cancelled waiters leave the queue: an item put later goes to the next
 * getter; a cancelled putter's item is never queued.
 */
static int queue_cancel_main(void *arg)
{
	struct logger l[2];
	corio_task *t[2];
	corio_queue *q;
	void *item = NULL;

	(void)arg;
	log_reset();
	assert_int_equal(corio_queue_new(1, &q), 0);
	l[0] = (struct logger){ .q = q, .letter = 'A', .ret = 1 };
	l[1] = (struct logger){ .q = q, .letter = 'B', .ret = 1 };
	t[0] = corio_spawn(queue_getter, &l[0]);
	t[1] = corio_spawn(queue_getter, &l[1]);
	assert_non_null(t[0]);
	assert_non_null(t[1]);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_cancel(t[0]), 0);
	assert_int_equal(corio_join(t[0]), 0);
	assert_int_equal(l[0].ret, -ECANCELED);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	assert_int_equal(corio_join(t[1]), 0);
	assert_int_equal(l[1].ret, 0);
	assert_ptr_equal(l[1].item, &item_a);

	assert_int_equal(corio_queue_put(q, &item_a), 0);
	l[0] = (struct logger){ .q = q, .letter = 'C', .ret = 1,
				.item = &item_b };
	l[1] = (struct logger){ .q = q, .letter = 'D', .ret = 1,
				.item = &item_c };
	t[0] = corio_spawn(queue_putter, &l[0]);
	t[1] = corio_spawn(queue_putter, &l[1]);
	assert_non_null(t[0]);
	assert_non_null(t[1]);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_cancel(t[0]), 0);
	assert_int_equal(corio_join(t[0]), 0);
	assert_int_equal(l[0].ret, -ECANCELED);
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_ptr_equal(item, &item_c);	/* not C's &item_b */
	assert_int_equal(corio_join(t[1]), 0);
	assert_int_equal(l[1].ret, 0);
	assert_int_equal(corio_queue_len(q), 0);
	assert_int_equal(corio_queue_free(q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_cancelled_waiters(void **state)
{
	(void)state;
	RUN(queue_cancel_main, NULL);
}

/*
 * Closing: waiting getters and putters get -EPIPE (the putters' items are
 * not queued), puts fail at once, gets drain what is left and then fail.
 */
static int queue_close_main(void *arg)
{
	struct logger g[2], p[2];
	corio_task *tg[2], *tp[2];
	corio_queue *q;
	void *item = NULL;
	int i;

	(void)arg;
	log_reset();
	/* Getters waiting on an empty queue. */
	assert_int_equal(corio_queue_new(2, &q), 0);
	for (i = 0; i < 2; i++) {
		g[i] = (struct logger){ .q = q, .letter = (char)('a' + i),
					.ret = 1, .item = &item_d };
		tg[i] = corio_spawn(queue_getter, &g[i]);
		assert_non_null(tg[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_queue_close(q), 0);
	for (i = 0; i < 2; i++) {
		assert_int_equal(corio_join(tg[i]), 0);
		assert_int_equal(g[i].ret, -EPIPE);
		assert_ptr_equal(g[i].item, &item_d);	/* untouched */
	}
	assert_string_equal(log_buf, "ab");
	/* errors: corio_queue.3 EPIPE */
	assert_int_equal(corio_queue_get(q, &item), -EPIPE);
	assert_int_equal(corio_queue_tryget(q, &item), -EPIPE);
	assert_int_equal(corio_queue_put(q, &item_a), -EPIPE);
	assert_int_equal(corio_queue_tryput(q, &item_a), -EPIPE);
	assert_int_equal(corio_queue_close(q), 0);	/* twice: fine */
	assert_int_equal(corio_queue_free(q), 0);

	/* Putters waiting on a full queue; its items are drained. */
	log_reset();
	assert_int_equal(corio_queue_new(2, &q), 0);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	assert_int_equal(corio_queue_put(q, &item_b), 0);
	for (i = 0; i < 2; i++) {
		p[i] = (struct logger){ .q = q, .letter = (char)('A' + i),
					.ret = 1, .item = &item_c };
		tp[i] = corio_spawn(queue_putter, &p[i]);
		assert_non_null(tp[i]);
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_queue_close(q), 0);
	assert_int_equal(corio_queue_len(q), 2);
	assert_int_equal(corio_queue_put(q, &item_c), -EPIPE);
	for (i = 0; i < 2; i++) {
		assert_int_equal(corio_join(tp[i]), 0);
		assert_int_equal(p[i].ret, -EPIPE);
	}
	assert_string_equal(log_buf, "AB");
	assert_int_equal(corio_queue_get(q, &item), 0);
	assert_ptr_equal(item, &item_a);
	assert_int_equal(corio_queue_tryget(q, &item), 0);
	assert_ptr_equal(item, &item_b);
	assert_int_equal(corio_queue_get(q, &item), -EPIPE);
	assert_int_equal(corio_queue_len(q), 0);
	assert_int_equal(corio_queue_free(q), 0);

	/* A queue freed with items in it: fine (they are only pointers). */
	assert_int_equal(corio_queue_new(2, &q), 0);
	assert_int_equal(corio_queue_put(q, &item_a), 0);
	assert_int_equal(corio_queue_free(q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_close(void **state)
{
	(void)state;
	RUN(queue_close_main, NULL);
}

static int queue_consumer(void *arg)
{
	struct pingpong *pp = arg;
	void *item = NULL;
	int ret;

	while ((ret = corio_queue_get(pp->q, &item)) == 0) {
		assert_ptr_equal(item, (void *)(intptr_t)(pp->count + 1));
		pp->count++;
	}
	assert_int_equal(ret, -EPIPE);
	return 0;
}

/* A producer and a consumer through a queue of 1: no syscall. */
static int queue_pingpong_main(void *arg)
{
	struct pingpong pp = { 0 };
	struct corio_stats st0, st1;
	corio_task *t;
	intptr_t i;

	(void)arg;
	assert_int_equal(corio_queue_new(1, &pp.q), 0);
	st0 = stats_now();
	t = corio_spawn(queue_consumer, &pp);
	assert_non_null(t);
	for (i = 1; i <= ROUNDS; i++)
		assert_int_equal(corio_queue_put(pp.q, (void *)i), 0);
	assert_int_equal(corio_queue_close(pp.q), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(pp.count, ROUNDS);
	st1 = stats_now();
	assert_int_equal(st1.enters, st0.enters);
	assert_int_equal(st1.cqes, st0.cqes);
	assert_int_equal(corio_queue_free(pp.q), 0);
	assert_loop_clean();
	return 0;
}

static void test_queue_pingpong_no_syscall(void **state)
{
	(void)state;
	RUN(queue_pingpong_main, NULL);
}

/*
 * Task groups.
 */

struct member {
	corio_event *go;	/* waits for it, if not NULL */
	uint64_t sleep;		/* else sleeps this long */
	int result;		/* returned when the wait succeeds */
	int quiet;		/* no await after the wait */
	int ran;
	int wait_ret;		/* what the wait returned */
	int next;		/* its next await after that, if it ran */
};

#define MEMBER_INIT { .wait_ret = 1, .next = 1 }

static int member_fn(void *arg)
{
	struct member *m = arg;

	m->ran = 1;
	if (m->go)
		m->wait_ret = corio_event_wait(m->go);
	else if (m->sleep)
		m->wait_ret = corio_sleep(m->sleep);
	else
		m->wait_ret = 0;
	if (m->wait_ret < 0)
		return m->wait_ret;
	if (!m->quiet)
		m->next = corio_nop();
	return m->result;
}

/* corio_group_wait waits for all of them and frees them; 0 if none failed. */
static int group_all_main(void *arg)
{
	struct member m[3] = { MEMBER_INIT, MEMBER_INIT, MEMBER_INIT };
	struct corio_stats st0;
	corio_group *g;
	uint64_t t0;
	int i;

	(void)arg;
	assert_int_equal(corio_group_new(&g), 0);
	assert_int_equal(corio_group_wait(g), 0);	/* empty: at once */
	t0 = corio_now();
	m[0].sleep = CORIO_MSEC(10);
	m[1].sleep = CORIO_MSEC(40);
	m[2].sleep = CORIO_MSEC(20);
	for (i = 0; i < 3; i++) {
		m[i].result = 3 + i;	/* positive: not a failure */
		assert_non_null(corio_group_spawn(g, member_fn, &m[i]));
	}
	assert_int_equal(stats_now().tasks_live, 4);
	assert_int_equal(corio_group_wait(g), 0);
	assert_true(corio_now() - t0 >= CORIO_MSEC(40));
	for (i = 0; i < 3; i++) {
		assert_int_equal(m[i].wait_ret, 0);
		assert_int_equal(m[i].next, 0);
	}
	assert_loop_clean();	/* all freed */

	/* Again, in the same group; members that never await: no syscall. */
	st0 = stats_now();
	for (i = 0; i < 3; i++) {
		m[i] = (struct member)MEMBER_INIT;
		m[i].quiet = 1;
		assert_non_null(corio_group_spawn(g, member_fn, &m[i]));
	}
	assert_int_equal(corio_group_wait(g), 0);
	for (i = 0; i < 3; i++)
		assert_true(m[i].ran);
	assert_int_equal(stats_now().enters, st0.enters);
	assert_int_equal(corio_group_free(g), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_wait_all(void **state)
{
	(void)state;
	RUN(group_all_main, NULL);
}

/*
 * A member that fails (returns < 0) cancels the others; corio_group_wait
 * still waits for them all and returns the first failure.
 */
static int group_fail_main(void *arg)
{
	struct member a = MEMBER_INIT, b = MEMBER_INIT, c = MEMBER_INIT;
	corio_event *go;
	corio_group *g;
	uint64_t t0;

	(void)arg;
	assert_int_equal(corio_event_new(&go), 0);
	assert_int_equal(corio_group_new(&g), 0);
	a.go = go;
	a.result = -EIO;
	a.quiet = 1;
	b.sleep = CORIO_SEC(3600);
	c.go = go;
	c.result = -EBADMSG;
	assert_non_null(corio_group_spawn(g, member_fn, &a));
	assert_non_null(corio_group_spawn(g, member_fn, &b));
	assert_non_null(corio_group_spawn(g, member_fn, &c));
	assert_int_equal(corio_yield(), 0);
	/* A and C wake in that order; A fails first. */
	assert_int_equal(corio_event_set(go), 0);
	t0 = corio_now();
	assert_int_equal(corio_group_wait(g), -EIO);
	assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));
	assert_int_equal(b.wait_ret, -ECANCELED);
	/* C was already woken when A failed: its next await is cancelled. */
	assert_int_equal(c.wait_ret, 0);
	assert_int_equal(c.next, -ECANCELED);
	assert_loop_clean();

	/* The group stays failed: a new member starts cancelled, and the
	 * next wait says the same. */
	a = (struct member)MEMBER_INIT;
	a.sleep = CORIO_SEC(3600);
	assert_non_null(corio_group_spawn(g, member_fn, &a));
	assert_int_equal(corio_group_wait(g), -EIO);
	assert_true(a.ran);
	assert_int_equal(a.wait_ret, -ECANCELED);
	assert_int_equal(corio_group_free(g), 0);
	assert_int_equal(corio_event_free(go), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_failure_cancels_the_others(void **state)
{
	(void)state;
	RUN(group_fail_main, NULL);
}

/*
 * corio_group_wait_any returns the members in the order they finished,
 * with their results, each out of the group and for the caller to join;
 * -ENOENT once the group is empty.
 */
static int group_any_main(void *arg)
{
	struct member m[3] = { MEMBER_INIT, MEMBER_INIT, MEMBER_INIT };
	corio_event *go[3];
	corio_task *t[3], *done = NULL;
	corio_group *g;
	uint64_t turns0;
	int i, res = 0;

	(void)arg;
	assert_int_equal(corio_group_new(&g), 0);
	assert_int_equal(corio_group_wait_any(g, &done, &res), -ENOENT);
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_event_new(&go[i]), 0);
		m[i].go = go[i];
		m[i].result = 10 + i;
		m[i].quiet = 1;
		t[i] = corio_group_spawn(g, member_fn, &m[i]);
		assert_non_null(t[i]);
	}
	/* Members are the group's: not joined by hand. */
	assert_int_equal(corio_join(t[0]), -EINVAL);

	assert_int_equal(corio_event_set(go[1]), 0);
	assert_int_equal(corio_group_wait_any(g, &done, &res), 0);
	assert_ptr_equal(done, t[1]);
	assert_int_equal(res, 11);
	assert_int_equal(corio_join(done), 11);

	/* Already finished: returned at once, without parking. */
	assert_int_equal(corio_event_set(go[2]), 0);
	assert_int_equal(corio_yield(), 0);
	turns0 = turns_now();
	assert_int_equal(corio_group_wait_any(g, &done, NULL), 0);
	assert_int_equal(turns_now(), turns0);
	assert_ptr_equal(done, t[2]);
	corio_detach(done);		/* or detached, once it is out */

	assert_int_equal(corio_event_set(go[0]), 0);
	assert_int_equal(corio_group_wait_any(g, &done, &res), 0);
	assert_ptr_equal(done, t[0]);
	assert_int_equal(res, 10);
	assert_int_equal(corio_join(done), 10);
	assert_int_equal(corio_group_wait_any(g, &done, &res), -ENOENT);
	assert_int_equal(corio_group_wait(g), 0);
	assert_int_equal(corio_group_free(g), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(corio_event_free(go[i]), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_wait_any(void **state)
{
	(void)state;
	RUN(group_any_main, NULL);
}

/* A member returned by wait_any that failed has cancelled the others. */
static int group_any_fail_main(void *arg)
{
	struct member a = MEMBER_INIT, b = MEMBER_INIT;
	corio_task *ta, *done = NULL;
	corio_group *g;
	int res = 0;

	(void)arg;
	assert_int_equal(corio_group_new(&g), 0);
	a.result = -EIO;
	a.quiet = 1;
	b.sleep = CORIO_SEC(3600);
	ta = corio_group_spawn(g, member_fn, &a);
	assert_non_null(ta);
	assert_non_null(corio_group_spawn(g, member_fn, &b));
	assert_int_equal(corio_group_wait_any(g, &done, &res), 0);
	assert_ptr_equal(done, ta);
	assert_int_equal(res, -EIO);
	assert_int_equal(corio_join(done), -EIO);
	assert_int_equal(corio_group_wait(g), -EIO);
	assert_int_equal(b.wait_ret, -ECANCELED);
	assert_int_equal(corio_group_free(g), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_wait_any_failure(void **state)
{
	(void)state;
	RUN(group_any_fail_main, NULL);
}

struct gwaiter {
	corio_group *g;
	int self_cancel;
	int parked;
	int ret;
};

static int group_waiter(void *arg)
{
	struct gwaiter *w = arg;

	if (w->self_cancel)
		assert_int_equal(corio_cancel(corio_self()), 0);
	w->parked = 1;
	w->ret = corio_group_wait(w->g);
	return 0;
}

/*
 * A task cancelled while it waits in corio_group_wait (or before) cancels
 * the group's members and goes on waiting for them.
 */
static int group_waiter_cancel_main(void *arg)
{
	struct member m[2];
	struct gwaiter w;
	corio_group *g;
	corio_task *t;
	int pass, i;

	(void)arg;
	for (pass = 0; pass < 2; pass++) {
		assert_int_equal(corio_group_new(&g), 0);
		for (i = 0; i < 2; i++) {
			m[i] = (struct member)MEMBER_INIT;
			m[i].sleep = CORIO_SEC(3600);
			assert_non_null(corio_group_spawn(g, member_fn,
							  &m[i]));
		}
		w = (struct gwaiter){ .g = g, .ret = 1, .self_cancel = pass };
		t = corio_spawn(group_waiter, &w);
		assert_non_null(t);
		yield_until(&w.parked);
		assert_int_equal(corio_yield(), 0);
		if (!pass) {
			assert_int_equal(w.ret, 1);
			/* A second waiter is refused, the group not freed. */
			/* errors: corio_group.3 EBUSY */
			assert_int_equal(corio_group_wait(g), -EBUSY);
			assert_int_equal(corio_group_free(g), -EBUSY);
			assert_int_equal(corio_cancel(t), 0);
		}
		assert_int_equal(corio_join(t), 0);
		assert_int_equal(w.ret, -ECANCELED);
		for (i = 0; i < 2; i++)
			assert_int_equal(m[i].wait_ret, -ECANCELED);
		assert_loop_clean();
		assert_int_equal(corio_group_free(g), 0);
	}
	assert_loop_clean();
	return 0;
}

static void test_group_waiter_cancelled(void **state)
{
	(void)state;
	RUN(group_waiter_cancel_main, NULL);
}

/*
 * A deadline applies to corio_group_wait as asyncio's timeout does to a
 * TaskGroup: when it passes (or has passed), the members are cancelled,
 * waited for and freed, and the wait returns -ETIMEDOUT; a member's own
 * failure still comes first; members that finish in time leave no timer
 * behind.
 */
static int group_deadline_main(void *arg)
{
	struct member m[2];
	corio_group *g;
	uint64_t t0, old;
	int pass, i;

	(void)arg;
	for (pass = 0; pass < 4; pass++) {
		assert_int_equal(corio_group_new(&g), 0);
		for (i = 0; i < 2; i++) {
			m[i] = (struct member)MEMBER_INIT;
			m[i].sleep = pass == 2 ? CORIO_MSEC(10) : CORIO_SEC(3600);
			assert_non_null(corio_group_spawn(g, member_fn,
							  &m[i]));
		}
		if (pass == 3) {
			/* A member fails before the deadline. */
			m[0].sleep = CORIO_MSEC(5);
			m[0].result = -EIO;
		}
		t0 = corio_now();
		old = pass == 1 ? corio_deadline(t0 - 1)	/* already past */
				: corio_timeout(pass == 2 ? test_slack_ns(
						CORIO_SEC(2)) : CORIO_MSEC(30));
		switch (pass) {
		case 0:
		case 1:
			/* errors: corio_group.3 ETIMEDOUT */
			assert_int_equal(corio_group_wait(g), -ETIMEDOUT);
			for (i = 0; i < 2; i++)
				assert_int_equal(m[i].wait_ret, -ECANCELED);
			break;
		case 2:
			assert_int_equal(corio_group_wait(g), 0);
			for (i = 0; i < 2; i++)
				assert_int_equal(m[i].wait_ret, 0);
			break;
		case 3:
			assert_int_equal(corio_group_wait(g), -EIO);
			assert_int_equal(m[1].wait_ret, -ECANCELED);
			break;
		}
		corio_deadline(old);
		if (pass == 0)
			assert_true(corio_now() - t0 >= CORIO_MSEC(30));
		assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(2)));
		assert_loop_clean();	/* members freed, no timer left */
		assert_int_equal(corio_group_free(g), 0);
	}
	return 0;
}

static void test_group_wait_deadline(void **state)
{
	(void)state;
	RUN(group_deadline_main, NULL);
}

/* corio_group_cancel cancels every member; the wait sees their results. */
static int group_cancel_main(void *arg)
{
	struct member m[2] = { MEMBER_INIT, MEMBER_INIT };
	corio_group *g;
	int i;

	(void)arg;
	assert_int_equal(corio_group_new(&g), 0);
	assert_int_equal(corio_group_cancel(g), 0);	/* empty: fine */
	for (i = 0; i < 2; i++) {
		m[i].sleep = CORIO_SEC(3600);
		assert_non_null(corio_group_spawn(g, member_fn, &m[i]));
	}
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_group_cancel(g), 0);
	assert_int_equal(corio_group_wait(g), -ECANCELED);
	for (i = 0; i < 2; i++)
		assert_int_equal(m[i].wait_ret, -ECANCELED);
	assert_int_equal(corio_group_free(g), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_cancel(void **state)
{
	(void)state;
	RUN(group_cancel_main, NULL);
}

struct anywaiter {
	corio_group *g;
	int parked;
	int ret;
	int res;
	corio_task *done;
};

static int any_waiter(void *arg)
{
	struct anywaiter *w = arg;

	w->parked = 1;
	w->ret = corio_group_wait_any(w->g, &w->done, &w->res);
	if (w->ret == 0)
		assert_int_equal(corio_join(w->done), w->res);
	return 0;
}

/*
 * corio_group_free cancels and frees the members left, so nothing leaks
 * (tasks_live is back to 1); it is refused while a task waits on the
 * group.
 */
static int group_free_main(void *arg)
{
	struct member m[3] = { MEMBER_INIT, MEMBER_INIT, MEMBER_INIT };
	struct anywaiter aw = { .ret = 1 };
	struct gwaiter gw = { .ret = 1 };
	corio_group *g;
	corio_task *t;
	int i;

	(void)arg;
	assert_int_equal(corio_group_new(&g), 0);
	m[0].quiet = 1;
	for (i = 1; i < 3; i++)
		m[i].sleep = CORIO_SEC(3600);
	for (i = 0; i < 3; i++)
		assert_non_null(corio_group_spawn(g, member_fn, &m[i]));
	assert_int_equal(corio_yield(), 0);
	assert_true(m[0].ran);			/* done, not yet freed */

	/* A task in corio_group_wait_any: refused. */
	aw.g = g;
	t = corio_spawn(any_waiter, &aw);
	assert_non_null(t);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(aw.ret, 0);		/* took m[0] at once */
	aw.ret = 1;
	aw.parked = 0;
	t = corio_spawn(any_waiter, &aw);
	assert_non_null(t);
	yield_until(&aw.parked);
	assert_int_equal(corio_group_free(g), -EBUSY);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(aw.ret, -ECANCELED);

	/* A task in corio_group_wait: refused too. */
	gw.g = g;
	t = corio_spawn(group_waiter, &gw);
	assert_non_null(t);
	yield_until(&gw.parked);
	assert_int_equal(corio_group_free(g), -EBUSY);
	assert_int_equal(corio_group_wait(g), -EBUSY);
	assert_int_equal(gw.ret, 1);
	assert_int_equal(corio_group_cancel(g), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(gw.ret, -ECANCELED);
	assert_loop_clean();
	assert_int_equal(corio_group_free(g), 0);

	/* Members left, some never run: cancelled, waited for, freed. */
	assert_int_equal(corio_group_new(&g), 0);
	for (i = 0; i < 3; i++) {
		m[i] = (struct member)MEMBER_INIT;
		m[i].sleep = CORIO_SEC(3600);
		assert_non_null(corio_group_spawn(g, member_fn, &m[i]));
	}
	assert_int_equal(corio_yield(), 0);
	m[2] = (struct member)MEMBER_INIT;
	m[2].sleep = CORIO_SEC(3600);
	assert_non_null(corio_group_spawn(g, member_fn, &m[2]));
	assert_int_equal(stats_now().tasks_live, 5);
	assert_int_equal(corio_group_free(g), 0);
	for (i = 0; i < 3; i++) {
		assert_true(m[i].ran);		/* fn runs, cancelled */
		assert_int_equal(m[i].wait_ret, -ECANCELED);
	}
	assert_loop_clean();
	return 0;
}

static void test_group_free_cancels_and_frees(void **state)
{
	(void)state;
	RUN(group_free_main, NULL);
}

/*
 * A group left unfreed when main returns: corio_run cancels and frees its
 * members like any task.  Freeing the group after corio_run has returned
 * should then just free it; it touches the members' freed stacks instead
 * (in a fork child: it may crash).
 */
static corio_group *left_group;

static int group_left_main(void *arg)
{
	static struct member m = MEMBER_INIT;

	(void)arg;
	if (corio_group_new(&left_group) < 0)
		return 2;
	m.sleep = CORIO_SEC(3600);
	if (!corio_group_spawn(left_group, member_fn, &m))
		return 3;
	corio_yield();
	return 0;
}

static void test_group_freed_after_its_loop(void **state)
{
	pid_t pid;

	(void)state;
	/* valgrind does not model MADV_DONTFORK (the ring): a fork child's
	 * first mmap may assert. */
	if (UNDER_VALGRIND())
		skip();
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		CHILD_CHECK(corio_run(group_left_main, NULL) == 0);
		CHILD_CHECK(corio_group_free(left_group) == 0);
		_exit(0);
	}
	assert_int_equal(child_wait(pid), 0);
}

/*
 * Bug: a task woken in corio_group_wait_any for a member that finished
 * can find that member gone, taken by another task's corio_group_wait_any
 * that ran before it (it then dereferences the empty done list).  The
 * member should go to the waiter it woke, as a queue item does.  In a
 * fork child, since the bug crashes.
 */
struct steal {
	corio_group *g;
	corio_event *go;
	corio_task *a, *b;
	struct anywaiter w1, x;
};

static int quick_member(void *arg)
{
	(void)arg;
	corio_yield();
	return 1;
}

static int thief(void *arg)
{
	struct anywaiter *x = arg;

	corio_yield();
	x->ret = corio_group_wait_any(x->g, &x->done, &x->res);
	if (x->ret == 0)
		corio_join(x->done);
	return 0;
}

static int steal_main(void *arg)
{
	struct steal *s = arg;
	corio_task *w1, *x;

	if (corio_group_new(&s->g) < 0 || corio_event_new(&s->go) < 0)
		return 2;
	s->a = corio_group_spawn(s->g, quick_member, NULL);
	s->b = corio_group_spawn(s->g, member_wait, s->go);
	s->w1 = (struct anywaiter){ .g = s->g, .ret = 1 };
	s->x = (struct anywaiter){ .g = s->g, .ret = 1 };
	w1 = corio_spawn(any_waiter, &s->w1);
	x = corio_spawn(thief, &s->x);
	if (!s->a || !s->b || !w1 || !x)
		return 3;
	/*
	 * Turn 2: a yields, b and w1 park, x yields.  Turn 3: a returns
	 * and wakes w1; x then calls corio_group_wait_any.
	 */
	corio_yield();
	corio_yield();
	corio_event_set(s->go);
	corio_join(w1);
	corio_join(x);
	corio_group_free(s->g);
	corio_event_free(s->go);
	return 0;
}

static void test_group_wait_any_woken_member_not_stolen(void **state)
{
	pid_t pid;

	(void)state;
	/* valgrind does not model MADV_DONTFORK (the ring): a fork child's
	 * first mmap may assert. */
	if (UNDER_VALGRIND())
		skip();
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct steal s;

		child_default_signals();
		memset(&s, 0, sizeof(s));
		CHILD_CHECK(corio_run(steal_main, &s) == 0);
		/* w1, parked first, gets a (1); x gets b (7). */
		CHILD_CHECK(s.w1.ret == 0);
		CHILD_CHECK(s.w1.done == s.a);
		CHILD_CHECK(s.w1.res == 1);
		CHILD_CHECK(s.x.ret == 0);
		CHILD_CHECK(s.x.done == s.b);
		CHILD_CHECK(s.x.res == 7);
		_exit(0);
	}
	assert_int_equal(child_wait(pid), 0);
}

/*
 * A member cancelled by hand is not a failure of the group, as in asyncio
 * (TaskGroup ignores a child's cancellation, gather does not cancel the
 * others): its siblings go on and the group's wait returns 0.
 */
static struct {
	int wait_ret, b_wait_ret, b_next;
} member_cancel;

static int group_member_cancel_main(void *arg)
{
	struct member a = MEMBER_INIT, b = MEMBER_INIT;
	corio_event *go;
	corio_group *g;
	corio_task *ta;

	(void)arg;
	assert_int_equal(corio_event_new(&go), 0);
	assert_int_equal(corio_group_new(&g), 0);
	a.sleep = CORIO_SEC(3600);
	b.go = go;
	ta = corio_group_spawn(g, member_fn, &a);
	assert_non_null(ta);
	assert_non_null(corio_group_spawn(g, member_fn, &b));
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_cancel(ta), 0);
	while (a.wait_ret == 1)		/* a returns as it sets it */
		assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_int_equal(a.wait_ret, -ECANCELED);
	assert_int_equal(corio_event_set(go), 0);
	member_cancel.wait_ret = corio_group_wait(g);
	member_cancel.b_wait_ret = b.wait_ret;
	member_cancel.b_next = b.next;
	assert_int_equal(corio_group_free(g), 0);
	assert_int_equal(corio_event_free(go), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_member_cancelled_is_not_a_failure(void **state)
{
	(void)state;
	RUN(group_member_cancel_main, NULL);
	assert_int_equal(member_cancel.b_wait_ret, 0);
	assert_int_equal(member_cancel.b_next, 0);
	assert_int_equal(member_cancel.wait_ret, 0);
}

#define KIND_TEST(f, k) \
	{ #f "/" #k, f, NULL, corio_test_teardown, (void *)&kind_ids[k] }
#define KIND_TESTS(f)							\
	KIND_TEST(f, K_EVENT), KIND_TEST(f, K_MUTEX), KIND_TEST(f, K_SEM), \
	KIND_TEST(f, K_COND), KIND_TEST(f, K_GET), KIND_TEST(f, K_PUT),	\
	KIND_TEST(f, K_ANY)

/*
 * corio_detach of a member (gh12): a running member stays in the group,
 * which still cancels it, waits for it and takes its failure, but it
 * leaves no record for corio_group_wait_any; a returned one is freed.
 */
static int group_detach_main(void *arg)
{
	struct member a = MEMBER_INIT, b = MEMBER_INIT, c = MEMBER_INIT;
	corio_task *ta, *tb, *tc, *done = NULL;
	corio_event *go;
	corio_group *g;
	int res = 0;

	(void)arg;
	assert_int_equal(corio_event_new(&go), 0);
	assert_int_equal(corio_group_new(&g), 0);
	a.go = b.go = c.go = go;
	a.quiet = b.quiet = c.quiet = 1;
	a.result = 1;
	b.result = 2;
	c.result = -EIO;
	ta = corio_group_spawn(g, member_fn, &a);
	tb = corio_group_spawn(g, member_fn, &b);
	tc = corio_group_spawn(g, member_fn, &c);
	assert_non_null(ta);
	assert_non_null(tb);
	assert_non_null(tc);
	corio_detach(ta);
	corio_detach(tc);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_event_set(go), 0);
	/* Only b is kept: a and c free themselves as they return. */
	assert_int_equal(corio_group_wait_any(g, &done, &res), 0);
	assert_ptr_equal(done, tb);
	assert_int_equal(res, 2);
	assert_int_equal(corio_join(done), 2);
	assert_int_equal(corio_group_wait_any(g, &done, &res), -ENOENT);
	/* c's failure is still the group's. */
	assert_int_equal(corio_group_wait(g), -EIO);
	assert_int_equal(a.wait_ret, 0);

	/* A member that already returned: detach frees it at once. */
	assert_int_equal(corio_event_clear(go), 0);
	a = (struct member)MEMBER_INIT;
	a.quiet = 1;
	a.result = 7;
	ta = corio_group_spawn(g, member_fn, &a);
	assert_non_null(ta);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(a.ran, 1);
	corio_detach(ta);
	assert_int_equal(corio_group_wait_any(g, &done, &res), -ENOENT);
	assert_int_equal(corio_group_free(g), 0);
	assert_int_equal(corio_event_free(go), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_detached_member_gh12(void **state)
{
	(void)state;
	RUN(group_detach_main, NULL);
}

/*
 * corio_group_wait_any with nothing to wait for (gh12) returns -ENOENT at
 * once, as tokio's JoinSet::join_next returns None: an empty group, or
 * one whose running members are all detached.  A task parked in it when
 * the last kept member is detached is woken with -ENOENT.
 */
static int any_waiter_fn(void *arg)
{
	corio_group *g = arg;
	corio_task *done = NULL;

	return corio_group_wait_any(g, &done, NULL);
}

static int group_any_empty_main(void *arg)
{
	struct member a = MEMBER_INIT;
	corio_task *ta, *w, *done = NULL;
	corio_event *go;
	corio_group *g;
	uint64_t turns0;

	(void)arg;
	assert_int_equal(corio_event_new(&go), 0);
	assert_int_equal(corio_group_new(&g), 0);
	turns0 = turns_now();
	/* errors: corio_group.3 ENOENT */
	assert_int_equal(corio_group_wait_any(g, &done, NULL), -ENOENT);
	assert_int_equal(turns_now(), turns0);
	assert_null(done);

	a.go = go;
	a.quiet = 1;
	ta = corio_group_spawn(g, member_fn, &a);
	assert_non_null(ta);
	w = corio_spawn(any_waiter_fn, g);
	assert_non_null(w);
	assert_int_equal(corio_yield(), 0);
	assert_int_equal(corio_yield(), 0);
	corio_detach(ta);	/* w has nothing left to get */
	assert_int_equal(corio_join(w), -ENOENT);
	assert_int_equal(corio_group_wait_any(g, &done, NULL), -ENOENT);
	assert_int_equal(corio_event_set(go), 0);
	assert_int_equal(corio_group_wait(g), 0);
	assert_int_equal(a.wait_ret, 0);
	assert_int_equal(corio_group_free(g), 0);
	assert_int_equal(corio_event_free(go), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_wait_any_empty_gh12(void **state)
{
	(void)state;
	RUN(group_any_empty_main, NULL);
}

/*
 * A long-lived group with churning members (gh12): 100,000 members, in
 * batches, each of which parks once before it returns.  A member's stack
 * goes back to the pool when it returns, so the stacks mapped after the
 * first batch never grow; RSS stays flat for detached members and for
 * members taken by corio_group_wait_any, and grows only by a small record
 * per member that nobody takes until corio_group_wait.
 */
#define CHURN_BATCH	1000
#define CHURN_TOTAL	100000

enum churn_mode { CHURN_DETACHED, CHURN_TAKEN, CHURN_KEPT };

static long status_kib(const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = strtol(line + n + 1, NULL, 10);
	fclose(f);
	return v;
}

static int churn_member(void *arg)
{
	int *live = arg;

	corio_yield();
	--*live;
	return 0;
}

static int churn_main(void *arg)
{
	enum churn_mode mode = *(enum churn_mode *)arg;
	int total = UNDER_VALGRIND() ? CHURN_TOTAL / 20 : CHURN_TOTAL;
	/* Batches before the snapshot: the pool has warmed up by then. */
	int warm = total / CHURN_BATCH / 10 ? total / CHURN_BATCH / 10 : 1;
	size_t mapped0 = 0;
	long rss0 = 0, rss1;
	corio_group *g;
	int n, i, live = 0;

	assert_int_equal(corio_group_new(&g), 0);
	for (n = 0; n < total; n += CHURN_BATCH) {
		for (i = 0; i < CHURN_BATCH; i++) {
			corio_task *t = corio_group_spawn(g, churn_member,
							  &live);

			assert_non_null(t);
			live++;
			if (mode == CHURN_DETACHED)
				corio_detach(t);
		}
		if (mode == CHURN_TAKEN) {
			for (i = 0; i < CHURN_BATCH; i++) {
				corio_task *done = NULL;
				int res = -1;

				assert_int_equal(corio_group_wait_any(g, &done,
								      &res), 0);
				assert_int_equal(res, 0);
				assert_int_equal(corio_join(done), 0);
			}
		}
		while (live)
			assert_int_equal(corio_yield(), 0);
		if (n == warm * CHURN_BATCH) {
			mapped0 = corio__stack_mapped(corio__loop);
			rss0 = status_kib("VmRSS");
		}
	}
	/* No stack was mapped after the warm-up: the pool is reused. */
	assert_int_equal(corio__stack_mapped(corio__loop), mapped0);
	assert_true(mapped0 <= 2 * CHURN_BATCH);
	rss1 = status_kib("VmRSS");
	if (!CORIO_ASAN && !UNDER_VALGRIND()) {
		long grown = rss1 - rss0;
		/* A record is a task struct on the heap: a few hundred bytes,
		 * where a kept stack cost 4 KiB or more. */
		long limit = mode == CHURN_KEPT ?
			     (long)(total - (warm + 1) * CHURN_BATCH) / 2 :
			     4096;

		print_message("mode %d: RSS %ld KiB -> %ld KiB, %zu stacks\n",
			      mode, rss0, rss1, mapped0);
		assert_true(grown < limit);
	}
	assert_int_equal(corio_group_wait(g), 0);
	assert_int_equal(corio_group_free(g), 0);
	assert_loop_clean();
	return 0;
}

static void test_group_churn_memory_flat_gh12(void **state)
{
	enum churn_mode mode;

	(void)state;
	for (mode = CHURN_DETACHED; mode <= CHURN_KEPT; mode++)
		RUN(churn_main, &mode);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		KIND_TESTS(test_kind_cancelled_while_waiting),
		KIND_TESTS(test_kind_deadline),
		KIND_TESTS(test_kind_past_deadline),
		KIND_TESTS(test_kind_cancelled_before),
		KIND_TESTS(test_kind_released_before_deadline),
		KIND_TESTS(test_kind_handed_over_then_cancelled),
		CORIO_TEST(test_waiters_do_not_spin),
		CORIO_TEST(test_waits_outside_a_task),
		CORIO_TEST(test_null_objects),
		CORIO_TEST(test_null_objects_in_a_task),
		CORIO_TEST(test_event_basics),
		CORIO_TEST(test_event_set_wakes_all_in_order),
		CORIO_TEST(test_calls_that_need_not_wait),
		CORIO_TEST(test_mutex_basics),
		CORIO_TEST(test_mutex_fifo),
		CORIO_TEST(test_mutex_handed_over_then_cancelled),
		CORIO_TEST(test_mutex_cancelled_waiter_leaves_queue),
		CORIO_TEST(test_mutex_shielded_waiter),
		CORIO_TEST(test_mutex_pingpong_no_syscall),
		CORIO_TEST(test_sem_basics),
		CORIO_TEST(test_sem_fifo),
		CORIO_TEST(test_sem_handed_over_then_cancelled),
		CORIO_TEST(test_sem_pingpong_no_syscall),
		CORIO_TEST(test_cond_needs_the_mutex),
		CORIO_TEST(test_cond_signal_and_broadcast),
		CORIO_TEST(test_cond_relocks_when_cancelled_or_timed_out),
		CORIO_TEST(test_cond_wait_hands_mutex_over),
		CORIO_TEST(test_cond_and_event_pingpong_no_syscall),
		CORIO_TEST(test_queue_new),
		CORIO_TEST(test_queue_try_variants),
		CORIO_TEST(test_queue_waiting_getters_fifo),
		CORIO_TEST(test_queue_waiting_putters_fifo),
		CORIO_TEST(test_queue_cancelled_waiters),
		CORIO_TEST(test_queue_close),
		CORIO_TEST(test_queue_pingpong_no_syscall),
		CORIO_TEST(test_group_wait_all),
		CORIO_TEST(test_group_failure_cancels_the_others),
		CORIO_TEST(test_group_wait_any),
		CORIO_TEST(test_group_wait_any_failure),
		CORIO_TEST(test_group_waiter_cancelled),
		CORIO_TEST(test_group_wait_deadline),
		CORIO_TEST(test_group_cancel),
		CORIO_TEST(test_group_free_cancels_and_frees),
		CORIO_TEST(test_group_freed_after_its_loop),
		CORIO_TEST(test_group_wait_any_woken_member_not_stolen),
		CORIO_TEST(test_group_member_cancelled_is_not_a_failure),
		CORIO_TEST(test_group_detached_member_gh12),
		CORIO_TEST(test_group_wait_any_empty_gh12),
		CORIO_TEST(test_group_churn_memory_flat_gh12),
	};

	return RUN_GROUP(tests);
}
