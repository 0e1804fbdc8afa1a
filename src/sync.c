/*
 * sync.c - waiting between the tasks of one loop: events, mutexes,
 * semaphores, conditions and queues (groups are in group.c).
 *
 * Everything here is a FIFO wait queue of struct corio_wait, each on its
 * waiting task's stack.  Waking is moving a task to the ready queue: no
 * syscall, no spinning.  A waiter leaves the queue when it is woken, when
 * its task is cancelled (the park hook) or when its deadline fires.
 *
 * A deadline needs a timer, since no op is in flight: a waiter with one
 * arms an IORING_OP_TIMEOUT whose CQE goes to a handler (not a task).  If
 * the wait ends first, the timer is cancelled and the task parks again
 * until the timer's CQE has arrived: the struct corio_wait it points to lives on
 * the task's stack, and an await never returns before its last CQE.
 *
 * Handing over: a mutex, a semaphore or a queue item goes straight to the
 * first waiter, so a task that arrives later cannot barge in front of it.
 */
#include <string.h>

#include "corio-int.h"

static void waitq_push(struct corio_waitq *q, struct corio_wait *w)
{
	w->q = q;
	w->next = NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
}

static void waitq_remove(struct corio_wait *w)
{
	struct corio_waitq *q = w->q;

	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->q = NULL;
}

/* Takes w out of its queue and readies its task with res. */
void corio__wake(struct corio_wait *w, int res)
{
	waitq_remove(w);
	w->res = res;
	corio__task_wake(w->task);
}

void corio__wake_all(struct corio_waitq *q, int res)
{
	while (q->head)
		corio__wake(q->head, res);
}

void corio__sync_cancel(struct corio_task *t)
{
	struct corio_wait *w = t->park_data;

	if (w->q)
		corio__wake(w, -ECANCELED);
}

static void timer_cqe(struct corio_loop *loop, struct corio_handler *h,
		      const struct io_uring_cqe *cqe)
{
	struct corio_wait *w = (struct corio_wait *)((char *)h -
					 offsetof(struct corio_wait, timer));

	(void)cqe;
	w->timer_armed = false;
	loop->stats.ops_in_flight--;
	if (w->q)
		corio__wake(w, -ETIMEDOUT);	/* it fired while w waited */
	else if (w->timer_waited)
		corio__task_wake(w->task);
}

static void timer_arm(struct corio_task *t, struct corio_wait *w)
{
	struct io_uring_sqe *sqe = corio__loop_sqe(t->loop);

	corio__ts_from_ns(&w->ts, t->deadline_ns);
	io_uring_prep_timeout(sqe, &w->ts, 0, IORING_TIMEOUT_ABS);
	w->timer.fn = timer_cqe;
	sqe->user_data = corio__handler_ud(&w->timer);
	w->timer_armed = true;
	t->loop->stats.ops_in_flight++;
}

/* The wait ended first: stop the timer and wait for its last CQE. */
static CORIO_COLD void timer_stop(struct corio_task *t, struct corio_wait *w)
{
	struct io_uring_sqe *sqe = corio__loop_sqe(t->loop);

	io_uring_prep_cancel64(sqe, corio__handler_ud(&w->timer), 0);
	sqe->user_data = CORIO_UD_INTERNAL;
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	w->timer_waited = true;
	while (w->timer_armed)
		corio__task_park(t, NULL, NULL);
}

/*
 * Parks the calling task on q until it is woken: the waker's result (0 or
 * -EPIPE), -ECANCELED or -ETIMEDOUT.  Fails at once like any await.
 */
int corio__wait_on(struct corio_waitq *q, struct corio_wait *w)
{
	struct corio_task *t = corio__current();
	int ret = corio__op_check(t, true);

	if (ret < 0)
		return ret;
	w->task = t;
	w->res = 0;
	w->timer_armed = false;
	w->timer_waited = false;
	waitq_push(q, w);
	if (t->deadline_ns)
		timer_arm(t, w);
	corio__task_park(t, corio__sync_cancel, w);
	if (corio_unlikely(w->timer_armed))
		timer_stop(t, w);
	return w->res;
}

/* Events. */

struct corio_event {
	struct corio_waitq q;
	bool set;
};

int corio_event_new(corio_event **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

int corio_event_free(corio_event *ev)
{
	if (!ev)
		return 0;
	if (ev->q.head)
		return -EBUSY;
	free(ev);
	return 0;
}

int corio_event_set(corio_event *ev)
{
	if (!ev)
		return -EINVAL;
	ev->set = true;
	corio__wake_all(&ev->q, 0);
	return 0;
}

int corio_event_clear(corio_event *ev)
{
	if (!ev)
		return -EINVAL;
	ev->set = false;
	return 0;
}

int corio_event_is_set(const corio_event *ev)
{
	if (!ev)
		return -EINVAL;
	return ev->set;
}

int corio_event_wait(corio_event *ev)
{
	struct corio_wait w;

	if (!ev)
		return -EINVAL;
	if (!corio__current())
		return -EPERM;
	if (ev->set)
		return 0;
	return corio__wait_on(&ev->q, &w);
}

/* Mutexes: ownership goes to the first waiter. */

struct corio_mutex {
	struct corio_waitq q;
	uint64_t owner;		/* the holder's task id, 0 when free: ids
				 * are never reused, task structs are */
};

int corio_mutex_new(corio_mutex **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

int corio_mutex_free(corio_mutex *mu)
{
	if (!mu)
		return 0;
	if (mu->owner || mu->q.head)
		return -EBUSY;
	free(mu);
	return 0;
}

static void mutex_release(corio_mutex *mu)
{
	if (mu->q.head) {
		mu->owner = mu->q.head->task->id;
		corio__wake(mu->q.head, 0);
	} else {
		mu->owner = 0;
	}
}

int corio_mutex_trylock(corio_mutex *mu)
{
	struct corio_task *t = corio__current();

	if (!mu)
		return -EINVAL;
	if (!t)
		return -EPERM;
	if (mu->owner == t->id)
		return -EDEADLK;
	if (mu->owner || mu->q.head)
		return -EBUSY;
	mu->owner = t->id;
	return 0;
}

int corio_mutex_lock(corio_mutex *mu)
{
	struct corio_task *t = corio__current();
	struct corio_wait w;
	int ret = corio_mutex_trylock(mu);

	if (ret != -EBUSY)
		return ret;
	ret = corio__wait_on(&mu->q, &w);
	/*
	 * Handed over, but cancelled before it could run: pass it on, so
	 * that a cancelled waiter never ends up holding the mutex.
	 */
	if (ret == 0 && corio__task_stopped(t)) {
		mutex_release(mu);
		return -ECANCELED;
	}
	return ret;
}

int corio_mutex_unlock(corio_mutex *mu)
{
	struct corio_task *t = corio__current();

	if (!mu)
		return -EINVAL;
	if (!t || mu->owner != t->id)
		return -EPERM;
	mutex_release(mu);
	return 0;
}

/* Semaphores: a released unit goes to the first waiter. */

struct corio_sem {
	struct corio_waitq q;
	unsigned int value;
};

int corio_sem_new(unsigned int value, corio_sem **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->value = value;
	return 0;
}

int corio_sem_free(corio_sem *sem)
{
	if (!sem)
		return 0;
	if (sem->q.head)
		return -EBUSY;
	free(sem);
	return 0;
}

int corio_sem_tryacquire(corio_sem *sem)
{
	if (!sem)
		return -EINVAL;
	if (!corio__current())
		return -EPERM;
	if (!sem->value || sem->q.head)
		return -EAGAIN;
	sem->value--;
	return 0;
}

int corio_sem_release(corio_sem *sem)
{
	if (!sem)
		return -EINVAL;
	if (sem->q.head) {
		corio__wake(sem->q.head, 0);
		return 0;
	}
	if (sem->value == UINT32_MAX)
		return -EOVERFLOW;
	sem->value++;
	return 0;
}

int corio_sem_acquire(corio_sem *sem)
{
	struct corio_wait w;
	int ret = corio_sem_tryacquire(sem);

	if (ret != -EAGAIN)
		return ret;
	ret = corio__wait_on(&sem->q, &w);
	if (ret == 0 && corio__task_stopped(w.task)) {
		corio_sem_release(sem);	/* as for a mutex */
		return -ECANCELED;
	}
	return ret;
}

/* Conditions. */

struct corio_cond {
	struct corio_waitq q;
};

int corio_cond_new(corio_cond **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

int corio_cond_free(corio_cond *cond)
{
	if (!cond)
		return 0;
	if (cond->q.head)
		return -EBUSY;
	free(cond);
	return 0;
}

int corio_cond_wait(corio_cond *cond, corio_mutex *mu)
{
	struct corio_task *t = corio__current();
	struct corio_wait w;
	uint64_t deadline;
	int ret, shield;

	if (!cond || !mu)
		return -EINVAL;
	if (!t || mu->owner != t->id)
		return -EPERM;
	mutex_release(mu);
	ret = corio__wait_on(&cond->q, &w);
	/*
	 * The caller holds the mutex again whatever happened, as with
	 * pthread_cond_wait and asyncio's Condition: relock with neither
	 * cancellation nor the deadline.
	 */
	shield = corio_shield(1);
	deadline = corio_deadline(0);
	if (corio_mutex_lock(mu) < 0)
		corio__bug("relocking a condition's mutex failed");
	corio_deadline(deadline);
	corio_shield(shield);
	return ret;
}

int corio_cond_signal(corio_cond *cond)
{
	if (!cond)
		return -EINVAL;
	if (cond->q.head)
		corio__wake(cond->q.head, 0);
	return 0;
}

int corio_cond_broadcast(corio_cond *cond)
{
	if (!cond)
		return -EINVAL;
	corio__wake_all(&cond->q, 0);
	return 0;
}

/*
 * Queues: a ring of pointers.  Getters wait only while it is empty,
 * putters only while it is full, so at most one of the two queues of
 * waiters is non-empty.
 */

struct corio_queue {
	void **ring;
	size_t cap, head, len;
	struct corio_waitq getters, putters;
	bool closed;
};

int corio_queue_new(size_t capacity, corio_queue **out)
{
	corio_queue *q;

	if (!out || !capacity || capacity > SIZE_MAX / sizeof(void *))
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->ring = malloc(capacity * sizeof(void *));
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	q->cap = capacity;
	*out = q;
	return 0;
}

int corio_queue_free(corio_queue *q)
{
	if (!q)
		return 0;
	if (q->getters.head || q->putters.head)
		return -EBUSY;
	free(q->ring);
	free(q);
	return 0;
}

static void ring_push(corio_queue *q, void *item)
{
	q->ring[(q->head + q->len++) % q->cap] = item;
}

static void *ring_pop(corio_queue *q)
{
	void *item = q->ring[q->head];

	q->head = (q->head + 1) % q->cap;
	q->len--;
	return item;
}

int corio_queue_tryput(corio_queue *q, void *item)
{
	if (!q)
		return -EINVAL;
	if (q->closed)
		return -EPIPE;
	if (q->getters.head) {
		q->getters.head->item = item;
		corio__wake(q->getters.head, 0);
		return 0;
	}
	if (q->len == q->cap)
		return -EAGAIN;
	ring_push(q, item);
	return 0;
}

int corio_queue_put(corio_queue *q, void *item)
{
	struct corio_wait w;
	int ret = corio_queue_tryput(q, item);

	if (ret != -EAGAIN)
		return ret;
	w.item = item;
	return corio__wait_on(&q->putters, &w);	/* a getter queues w.item */
}

int corio_queue_tryget(corio_queue *q, void **item)
{
	if (!q || !item)
		return -EINVAL;
	if (q->len) {
		*item = ring_pop(q);
		if (q->putters.head) {
			ring_push(q, q->putters.head->item);
			corio__wake(q->putters.head, 0);
		}
		return 0;
	}
	return q->closed ? -EPIPE : -EAGAIN;
}

int corio_queue_get(corio_queue *q, void **item)
{
	struct corio_wait w;
	int ret = corio_queue_tryget(q, item);

	if (ret != -EAGAIN)
		return ret;
	ret = corio__wait_on(&q->getters, &w);
	if (ret == 0)
		*item = w.item;	/* handed over: never dropped */
	return ret;
}

int corio_queue_close(corio_queue *q)
{
	if (!q)
		return -EINVAL;
	q->closed = true;
	corio__wake_all(&q->getters, -EPIPE);
	corio__wake_all(&q->putters, -EPIPE);
	return 0;
}

size_t corio_queue_len(const corio_queue *q)
{
	return q ? q->len : 0;
}
