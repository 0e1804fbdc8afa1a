/*
 * task.c - tasks: spawn, join, detach, cancel, yield, and the switch.
 *
 * A task is a stackful coroutine on Boost.Context's fcontext.  The
 * scheduler (the thread's own stack, inside corio_run) jumps into the
 * first task of a turn; a task that parks, yields or returns jumps
 * straight to the turn's next one.  Once the turn has run out, the task
 * switching out either begins the next turn itself, when the scheduler
 * would have nothing else to do (corio__loop_turn_quick), or jumps to the
 * scheduler, which submits and reaps.  So a switch is one jump, and the
 * loop's own context runs only when the ring needs it.
 *
 * The context that is resumed finishes the switch for the one it came
 * from (landed): it saves that context, or, when that task has returned,
 * gives back its stack, which no task can free while running on it.  A
 * jump's data is the task that jumped, NULL from the scheduler.
 *
 * The task struct lives at the top of its own stack (stack.c), so a spawn
 * allocates nothing else.  It is freed by corio_join, by its own return if
 * detached, or by corio_run at the end.
 *
 * Invariants: a task is on the ready queue or the turn's list at most once
 * (state READY); park_hook is set exactly while the task is PARKED; a DONE
 * task never runs again.
 */
#include <string.h>

#include "corio-int.h"

#if CORIO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/*
 * jump_fcontext, entered by a jump with the return address pushed by
 * hand instead of by a call.  Boost's jump_fcontext resumes the other
 * context with an indirect jmp, not a ret, so a plain call leaves its
 * entry on the CPU's return stack buffer: every return the resumed task
 * then makes is predicted one frame off, and mispredicted (about 20 ns a
 * switch here, measured by bench/micro's yield case).  Entered this way
 * the buffer stays as the switching task left it, and since tasks switch
 * from the same few places, the returns of the task resumed are
 * predicted right.  The push writes below %rsp, which is why task.c is
 * built with -mno-red-zone (Makefile.in); every register the ABI lets a
 * call clobber is clobbered here too.
 */
static inline transfer_t switch_to(fcontext_t to, void *data)
{
#if defined(__x86_64__)
	register void *rdi __asm__("rdi") = to;
	register void *rsi __asm__("rsi") = data;
	register void *rax __asm__("rax");
	register void *rdx __asm__("rdx");

	__asm__ volatile("lea 1f(%%rip), %%rax\n\t"
			 "push %%rax\n\t"
			 "jmp jump_fcontext@PLT\n"
			 "1:"
			 : "=a"(rax), "=d"(rdx), "+D"(rdi), "+S"(rsi)
			 :
			 : "rcx", "r8", "r9", "r10", "r11", "memory", "cc",
			   "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
			   "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
			   "xmm12", "xmm13", "xmm14", "xmm15", "st", "st(1)",
			   "st(2)", "st(3)", "st(4)", "st(5)", "st(6)",
			   "st(7)");
	return (transfer_t){ rax, rdx };
#else
	return jump_fcontext(to, data);
#endif
}

/* t is about to be resumed (or started): it is the running task now. */
static inline void run_begin(struct corio_loop *loop, struct corio_task *t)
{
	loop->current = t;
	t->state = CORIO_T_RUNNING;
	t->started = true;
	if (corio_unlikely(loop->debug_slow_ns))
		loop->run_started = corio__time_now();
}

/* prev returned and has switched away for good: its stack can go. */
static CORIO_COLD void finished(struct corio_task *prev)
{
	if (prev->detached)
		corio__task_free(prev);
	else if (prev->stack.heap)
		corio__stack_release(prev);	/* its record waits */
}

/* Just resumed by a jump: finish the switch for the context it left. */
static inline void landed(struct corio_loop *loop, transfer_t from)
{
	struct corio_task *prev = from.data;

	if (!prev) {
		loop->sched_ctx = from.fctx;
		return;
	}
	if (corio_unlikely(prev->stack.canary))
		corio__stack_check(prev);
	if (corio_likely(prev->state != CORIO_T_DONE))
		prev->ctx = from.fctx;
	else
		finished(prev);
}

#if CORIO_ASAN
/* ASan must hear of every stack change: the stack the jump goes to. */
static void asan_leave(struct corio_loop *loop, struct corio_task *self,
		       struct corio_task *next)
{
	/* A returned task passes NULL: ASan may drop its fake frames. */
	void **fake = self->state == CORIO_T_DONE ? NULL :
		      &self->asan_fake_stack;

	if (next)
		__sanitizer_start_switch_fiber(fake, next->stack.base,
					       next->stack.size);
	else
		__sanitizer_start_switch_fiber(fake, loop->sched_stack_bottom,
					       loop->sched_stack_size);
}

/* Landed from data's context: from the scheduler, learn its stack. */
static void asan_arrive(struct corio_loop *loop, void *fake, void *data)
{
	if (data)
		__sanitizer_finish_switch_fiber(fake, NULL, NULL);
	else
		__sanitizer_finish_switch_fiber(fake, &loop->sched_stack_bottom,
						&loop->sched_stack_size);
}
#endif

/*
 * The one place a task switches away: to the turn's next task, to the
 * first of a turn it begins itself, or to the scheduler.  Returns once
 * the task is resumed (never if it has returned).  A task that begins a
 * turn it is the first of just goes on.  Inlined into its callers: in
 * trampoline, a call would leave one more entry on the return stack
 * buffer for the task resumed, whose returns would all be mispredicted.
 */
static inline __attribute__((always_inline)) void
switch_out(struct corio_task *self)
{
	struct corio_loop *loop = self->loop;
	struct corio_task *next = loop->turn;
	transfer_t from;

	if (corio_unlikely(loop->debug_slow_ns))
		corio__dump_slow(loop, self, loop->run_started);
	if (next)
		loop->turn = next->next_ready;
	else
		next = corio__loop_turn_quick(loop);
	if (next == self) {
		run_begin(loop, self);
		return;
	}
#if CORIO_ASAN
	asan_leave(loop, self, next);
#endif
	if (next) {
		run_begin(loop, next);
		from = switch_to(next->ctx, self);
	} else {
		loop->current = NULL;
		from = switch_to(loop->sched_ctx, self);
	}
#if CORIO_ASAN
	asan_arrive(loop, self->asan_fake_stack, from.data);
#endif
	landed(loop, from);
}

/* corio__task_park's switch: out of line, the one call of an await. */
void corio__task_switch(struct corio_task *t)
{
	switch_out(t);
}

static _Noreturn void trampoline(transfer_t from)
{
	struct corio_loop *loop = corio__loop;
	struct corio_task *t = loop->current;	/* run_begin's */

#if CORIO_ASAN
	asan_arrive(loop, NULL, from.data);
#endif
	landed(loop, from);
	t->result = t->fn(t->arg);
	t->state = CORIO_T_DONE;
	loop->stats.tasks_live--;
	if (corio_unlikely(t == loop->main))
		loop->turns_slow = true;	/* the scheduler tears down */
	if (t->owner)
		t->owner->done(t);
	if (t->joiner)
		corio__task_wake(t->joiner);
	switch_out(t);
	corio__bug("a returned task was resumed");
}

/*
 * The scheduler's half of a turn: runs loop->turn, whose tasks pass the
 * turn on among themselves; returns when the last of them (or of the
 * quick turns it began) jumps back.
 */
void corio__task_turn(struct corio_loop *loop)
{
	struct corio_task *t = loop->turn;
	transfer_t from;

	loop->turn = t->next_ready;
	run_begin(loop, t);
#if CORIO_ASAN
	__sanitizer_start_switch_fiber(&loop->sched_fake_stack, t->stack.base,
				       t->stack.size);
#endif
	from = switch_to(t->ctx, NULL);
#if CORIO_ASAN
	__sanitizer_finish_switch_fiber(loop->sched_fake_stack, NULL, NULL);
#endif
	loop->current = NULL;
	landed(loop, from);
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
	char *top;

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
	top = corio__stack_top(t);
	t->ctx = make_fcontext(top, (size_t)(top - t->stack.base), trampoline);
	t->loop = loop;
	t->park_hook = NULL;
	t->park_data = NULL;
	t->park_ns = 0;
	t->deadline_ns = 0;
	t->state = CORIO_T_PARKED;	/* so that the wake below is legal */
	t->cancelled = loop->tearing_down;
	t->shield = false;
	t->detached = false;
	t->started = false;
	t->result = 0;
	t->fn = fn;
	t->arg = arg;
	t->joiner = NULL;
	t->owner = NULL;
	t->owner_data = NULL;
	t->oprev = t->onext = NULL;
	t->id = ++loop->next_id;
	t->asan_fake_stack = NULL;
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
