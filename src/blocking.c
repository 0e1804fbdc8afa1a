/*
 * blocking.c - corio_run_blocking: blocking calls off the loop.
 *
 * asyncio.to_thread for C.  Each loop owns a small pool of threads, made
 * on demand (up to CORIO_BLOCKING_THREADS) and joined when corio_run ends.
 * A job lives on the waiting task's stack.  A worker runs it, pushes it on
 * the loop's lock-free stack of finished jobs and writes the loop's
 * eventfd; the loop keeps one IORING_OP_READ of that eventfd in flight
 * while jobs are outstanding, and its CQE (a handler, not a task) wakes
 * the tasks of the finished jobs.  No polling, no timer.
 *
 * Invariant: a task parked in corio_run_blocking resumes only after its
 * job's function returned, cancelled or not: the job and whatever it uses
 * stay valid for the worker.
 *
 * corio's own jobs whose arguments live on the heap (the name lookups of
 * net.c) use corio__run_blocking_owned instead: the task waits on a wait
 * queue, so a cancellation or a deadline ends its wait at once; the job
 * then runs on to its end and the loop hands its argument to release().
 */
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "corio-int.h"

#define CORIO_BLOCKING_THREADS	16

struct job {
	corio_fn fn;
	void *arg;
	int result;
	bool finished;		/* set by the loop when it drains the job */
	struct corio_task *task;
	struct job *next;
	/* Owned jobs only (on the heap): */
	void (*release)(void *arg);
	struct corio_waitq q;	/* the task, while it waits */
	bool abandoned;		/* the task left: free the job when done */
};

struct corio_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;	/* queued jobs, under lock */
	unsigned int nr_threads, nr_idle;
	unsigned int nr_queued;		/* jobs no worker has taken yet */
	bool stop;
	pthread_t threads[CORIO_BLOCKING_THREADS];
	_Atomic(struct job *) finished;	/* pushed by workers */
	int efd;
	uint64_t efd_buf;		/* the armed read's buffer */
	bool armed;
	unsigned int outstanding;	/* jobs queued or running */
	struct corio_handler h;
	struct corio_layer_state ls;	/* the pool is its loop's state */
};

static void pool_fini(struct corio_loop *loop, struct corio_layer_state *s);

/* Stops the workers and frees the pool when its loop goes. */
static const struct corio_layer blocking_layer = { .fini = pool_fini };

static void *worker(void *arg)
{
	struct corio_pool *pool = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct job *job;

		while (!pool->head && !pool->stop) {
			pool->nr_idle++;
			pthread_cond_wait(&pool->cond, &pool->lock);
			pool->nr_idle--;
		}
		if (!pool->head)
			break;
		job = pool->head;
		pool->nr_queued--;
		pool->head = job->next;
		if (!pool->head)
			pool->tail = NULL;
		pthread_mutex_unlock(&pool->lock);

		job->result = job->fn(job->arg);
		/* Release: the loop that pops the job sees its result. */
		job->next = atomic_load_explicit(&pool->finished,
						 memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&pool->finished,
				&job->next, job, memory_order_release,
				memory_order_relaxed))
			;
		/* After the push: the loop drains after reading this. */
		if (write(pool->efd, &one, sizeof(one)) < 0)
			abort();
		pthread_mutex_lock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void arm(struct corio_loop *loop, struct corio_handler *h)
{
	struct corio_pool *pool = corio__container_of(h, struct corio_pool,
						      h);
	struct io_uring_sqe *sqe;

	if (pool->armed || !pool->outstanding)
		return;
	sqe = corio__loop_handler_sqe(loop, &pool->h);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, pool->efd, &pool->efd_buf,
			   sizeof(pool->efd_buf), 0);
	sqe->user_data = corio__handler_ud(&pool->h);
	pool->armed = true;
	loop->stats.ops_in_flight++;
}

/* The eventfd read completed: wake the tasks of the finished jobs. */
static void drain(struct corio_loop *loop, struct corio_handler *h,
		  const struct io_uring_cqe *cqe)
{
	struct corio_pool *pool = corio__container_of(h, struct corio_pool,
						      h);
	struct job *job, *next, *fifo = NULL;

	(void)cqe;
	pool->armed = false;
	loop->stats.ops_in_flight--;
	job = atomic_exchange_explicit(&pool->finished, NULL,
				       memory_order_acquire);
	/* The stack is newest first; wake in the order they finished. */
	while (job) {
		next = job->next;
		job->next = fifo;
		fifo = job;
		job = next;
	}
	for (job = fifo; job; job = next) {
		next = job->next;
		job->finished = true;
		pool->outstanding--;
		if (!job->release) {
			corio__task_wake(job->task);
		} else if (job->q.head) {
			corio__wake(job->q.head, 0);
		} else if (job->abandoned) {
			job->release(job->arg);
			free(job);
		}
		/* Else its task, woken by a cancel or a deadline, has not
		 * run yet: it sees finished and frees the job. */
	}
	arm(loop, &pool->h);
}

static CORIO_COLD int pool_new(struct corio_loop *loop,
				struct corio_pool **out)
{
	struct corio_pool *pool = calloc(1, sizeof(*pool));

	if (!pool)
		return -ENOMEM;
	pool->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pool->efd < 0) {
		int ret = -errno;

		free(pool);
		return ret;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	pool->h.fn = drain;
	pool->h.arm = arm;
	corio__loop_attach(loop, &pool->ls, &blocking_layer);
	*out = pool;
	return 0;
}

/* A worker with every signal blocked: signals belong to the loop. */
static CORIO_COLD int thread_new(struct corio_pool *pool)
{
	sigset_t all, old;
	int ret;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&pool->threads[pool->nr_threads], NULL, worker,
			      pool);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret == 0)
		pool->nr_threads++;
	return ret;
}

/* Queues job for a worker, making the pool or a thread as needed. */
static int submit(struct corio_loop *loop, struct job *job)
{
	struct corio_layer_state *ls = corio__loop_state(loop, &blocking_layer);
	struct corio_pool *pool;
	int ret;

	if (ls) {
		pool = corio__container_of(ls, struct corio_pool, ls);
	} else {
		ret = pool_new(loop, &pool);
		if (ret < 0)
			return ret;
	}
	pthread_mutex_lock(&pool->lock);
	/* Idle workers that have not woken yet are spoken for already. */
	if (pool->nr_idle <= pool->nr_queued &&
	    pool->nr_threads < CORIO_BLOCKING_THREADS) {
		ret = thread_new(pool);
		if (ret < 0 && pool->nr_threads == 0) {
			pthread_mutex_unlock(&pool->lock);
			return ret;
		}
	}
	if (pool->tail)
		pool->tail->next = job;
	else
		pool->head = job;
	pool->tail = job;
	pool->nr_queued++;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	pool->outstanding++;
	arm(loop, &pool->h);
	return 0;
}

int corio_run_blocking(corio_fn fn, void *arg)
{
	struct corio_task *t = corio__current();
	struct job job = { .fn = fn, .arg = arg };
	int ret;

	if (!t)
		return -EPERM;
	if (!fn)
		return -EINVAL;
	job.task = t;
	ret = submit(t->loop, &job);
	if (ret < 0)
		return ret;
	/* Not cancellable: the worker may be using the job's memory. */
	while (!job.finished)
		corio__task_park(t, NULL, NULL);
	return job.result;
}

int corio__run_blocking_owned(corio_fn fn, void *arg,
			      void (*release)(void *arg), bool *kept)
{
	struct corio_task *t = corio__current();
	struct corio_wait w;
	struct job *job;
	int ret;

	*kept = false;
	ret = corio__op_check(t, true);
	if (ret < 0)
		return ret;
	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->fn = fn;
	job->arg = arg;
	job->task = t;
	job->release = release;
	ret = submit(t->loop, job);
	if (ret < 0) {
		free(job);
		return ret;
	}
	ret = corio__wait_on(&job->q, &w);
	if (ret < 0) {
		/* Cancelled or past the deadline: whatever the job gets is
		 * dropped, now or when it ends. */
		if (job->finished) {
			release(arg);
			free(job);
		} else {
			job->abandoned = true;
		}
		*kept = true;
		return ret;
	}
	ret = job->result;
	free(job);
	return ret;
}

static void pool_fini(struct corio_loop *loop, struct corio_layer_state *s)
{
	struct corio_pool *pool = corio__container_of(s, struct corio_pool,
						      ls);
	unsigned int i;

	(void)loop;
	pthread_mutex_lock(&pool->lock);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < pool->nr_threads; i++)
		pthread_join(pool->threads[i], NULL);
	close(pool->efd);
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}
