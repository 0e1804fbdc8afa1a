/*
 * task.c - tasks: spawn, join, detach, cancel, yield, and the switch.
 *
 * A task is a stackful coroutine on Boost.Context's fcontext.  The
 * scheduler (the thread's own stack, inside corio_run) jumps into a task;
 * the task jumps back when it parks, yields or returns.  Tasks never jump
 * to each other, so there is one place that switches in each direction and
 * one place to tell ASan about it.
 *
 * The task struct lives at the top of its own stack (stack.c), so a spawn
 * allocates nothing else.  It is freed by corio_join, by its own return if
 * detached, or by corio_run at the end.
 *
 * Invariants: a task is on the ready queue at most once (state READY);
 * park_hook is set exactly while the task is PARKED; a DONE task never runs
 * again.
 */
#include <string.h>

#include "corio-int.h"

#if CORIO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

void corio__task_wake(struct corio_task *t)
{
	struct corio_loop *loop = t->loop;

	if (corio_unlikely(t->state == CORIO_T_READY ||
			   t->state == CORIO_T_DONE))
		corio__bug("woke a task that was not waiting");
	t->state = CORIO_T_READY;
	t->next_ready = NULL;
	if (loop->ready_tail)
		loop->ready_tail->next_ready = t;
	else
		loop->ready_head = t;
	loop->ready_tail = t;
}

/* The one place a task jumps back to the scheduler, but for its return. */
static void switch_out(struct corio_task *t)
{
	struct corio_loop *loop = t->loop;
	transfer_t from;

#if CORIO_ASAN
	__sanitizer_start_switch_fiber(&t->asan_fake_stack,
				       loop->sched_stack_bottom,
				       loop->sched_stack_size);
#endif
	from = jump_fcontext(loop->sched_ctx, t);
	/* Resumed: the scheduler that jumped here is where to go back. */
	loop->sched_ctx = from.fctx;
#if CORIO_ASAN
	__sanitizer_finish_switch_fiber(t->asan_fake_stack,
					&loop->sched_stack_bottom,
					&loop->sched_stack_size);
#endif
}

void corio__task_park(struct corio_task *t, corio_cancel_hook hook,
		      void *data)
{
	t->state = CORIO_T_PARKED;
	t->park_hook = hook;
	t->park_data = data;
	t->park_ns = t->loop->now_ns;
	switch_out(t);
	t->park_hook = NULL;
	t->park_data = NULL;
}

static _Noreturn void trampoline(transfer_t from)
{
	struct corio_task *t = from.data;
	struct corio_loop *loop = t->loop;

	loop->sched_ctx = from.fctx;
#if CORIO_ASAN
	__sanitizer_finish_switch_fiber(NULL, &loop->sched_stack_bottom,
					&loop->sched_stack_size);
#endif
	t->result = t->fn(t->arg);
	t->state = CORIO_T_DONE;
	loop->stats.tasks_live--;
	if (t->owner)
		t->owner->done(t);
	if (t->joiner)
		corio__task_wake(t->joiner);
#if CORIO_ASAN
	/* NULL: this stack is done, ASan may drop its fake frames. */
	__sanitizer_start_switch_fiber(NULL, loop->sched_stack_bottom,
				       loop->sched_stack_size);
#endif
	jump_fcontext(loop->sched_ctx, NULL);
	corio__bug("a returned task was resumed");
}

void corio__task_run(struct corio_loop *loop, struct corio_task *t)
{
	uint64_t started = 0;
	transfer_t back;

	loop->current = t;
	t->state = CORIO_T_RUNNING;
	if (corio_unlikely(!t->started)) {
		t->started = true;
		char *top = corio__stack_top(t);

		t->ctx = make_fcontext(top, (size_t)(top - t->stack.base),
				       trampoline);
	}
	if (corio_unlikely(loop->debug_slow_ns))
		started = corio__time_now();
#if CORIO_ASAN
	__sanitizer_start_switch_fiber(&loop->sched_fake_stack, t->stack.base,
				       t->stack.size);
#endif
	back = jump_fcontext(t->ctx, t);
#if CORIO_ASAN
	__sanitizer_finish_switch_fiber(loop->sched_fake_stack, NULL, NULL);
#endif
	if (corio_unlikely(loop->debug_slow_ns))
		corio__dump_slow(loop, t, started);
	loop->current = NULL;
	if (corio_unlikely(t->stack.canary))
		corio__stack_check(t);
	if (t->state == CORIO_T_DONE) {
		if (t->detached)
			corio__task_free(t);
		else if (t->stack.heap)
			corio__stack_release(t);	/* its record waits */
		return;
	}
	t->ctx = back.fctx;
}

void corio__task_free(struct corio_task *t)
{
	if (corio_unlikely(t->owner))
		t->owner->forget(t);
	t->prev->next = t->next;
	t->next->prev = t->prev;
	corio__stack_put(t);
}

/* heap: the task's record on the heap (corio__stack_get_heap). */
struct corio_task *corio__task_spawn(corio_fn fn, void *arg,
				     const struct corio_spawn_attr *attr,
				     bool heap)
{
	struct corio_loop *loop = corio__loop;
	size_t size;
	struct corio_task *t;

	if (!loop) {
		errno = EPERM;
		return NULL;
	}
	if (!fn) {
		errno = EINVAL;
		return NULL;
	}
	size = loop->stack_size;
	if (attr && attr->stack_size) {
		if (attr->stack_size < CORIO_STACK_MIN ||
		    attr->stack_size > CORIO_STACK_MAX) {
			errno = EINVAL;
			return NULL;
		}
		size = corio__stack_round(attr->stack_size);
	}
	t = heap ? corio__stack_get_heap(loop, size) :
		   corio__stack_get(loop, size);
	if (!t)
		return NULL;
	t->loop = loop;
	t->fn = fn;
	t->arg = arg;
	t->id = ++loop->next_id;
	t->state = CORIO_T_PARKED;	/* so that the wake below is legal */
	t->cancelled = loop->tearing_down;
	t->next = &loop->all;
	t->prev = loop->all.prev;
	loop->all.prev->next = t;
	loop->all.prev = t;
	loop->stats.tasks_live++;
	corio__task_wake(t);
	return t;
}

corio_task *corio_spawn_ex(corio_fn fn, void *arg,
			   const struct corio_spawn_attr *attr)
{
	return corio__task_spawn(fn, arg, attr, false);
}

corio_task *corio_spawn(corio_fn fn, void *arg)
{
	return corio__task_spawn(fn, arg, NULL, false);
}

/* The joiner was cancelled: so is the task it joins (as in asyncio). */
void corio__task_join_cancel(struct corio_task *self)
{
	corio_cancel(self->park_data);
}

int corio_join(corio_task *t)
{
	struct corio_task *self = corio__current();
	int ret;

	if (!t)
		return -EINVAL;
	if (!self)
		return -EPERM;
	if (t == self)
		return -EDEADLK;
	if (t->loop != self->loop || t->detached || t->joiner || t->owner ||
	    t == self->loop->main)
		return -EINVAL;
	if (t->state != CORIO_T_DONE) {
		t->joiner = self;
		if (corio__task_stopped(self))
			corio_cancel(t);
		corio__task_park(self, corio__task_join_cancel, t);
	}
	ret = t->result;
	corio__task_free(t);
	return ret;
}

void corio_detach(corio_task *t)
{
	struct corio_loop *loop = corio__loop;

	if (!t || !loop || t->loop != loop || t->detached || t->joiner ||
	    t == loop->main)
		return;
	if (t->owner)
		t->owner->detach(t);
	else if (t->state == CORIO_T_DONE)
		corio__task_free(t);
	else
		t->detached = true;
}

int corio_cancel(corio_task *t)
{
	struct corio_loop *loop = corio__loop;

	if (!t)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	if (t->loop != loop)
		return -EINVAL;
	if (t->state == CORIO_T_DONE)
		return -ESRCH;
	if (t->cancelled)
		return 0;
	t->cancelled = true;
	if (t->state == CORIO_T_PARKED && !t->shield && t->park_hook)
		t->park_hook(t);
	return 0;
}

int corio_yield(void)
{
	struct corio_task *t = corio__current();

	if (!t)
		return -EPERM;
	if (corio__task_stopped(t))
		return -ECANCELED;
	if (t->deadline_ns && corio__time_now() >= t->deadline_ns)
		return -ETIMEDOUT;
	t->state = CORIO_T_PARKED;
	corio__task_wake(t);
	switch_out(t);
	return corio__task_stopped(t) ? -ECANCELED : 0;
}

int corio_shield(int on)
{
	struct corio_task *t = corio__current();
	int old;

	if (!t)
		return -EPERM;
	old = t->shield;
	t->shield = on != 0;
	return old;
}

corio_task *corio_self(void)
{
	struct corio_task *t = corio__current();

	if (!t)
		errno = EPERM;
	return t;
}
