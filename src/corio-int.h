/*
 * corio-int.h - what two or more of corio's source files share.
 *
 * The loop (loop.c) owns the ring, the ready queue and the list of tasks;
 * task.c owns switching between the scheduler and tasks; stack.c the stack
 * pools; io.c turning SQEs into awaits; time.c sleeps and deadlines.
 * Everything here is internal: names are corio__<file>_<verb>.
 */
#ifndef CORIO_INT_H
#define CORIO_INT_H

#include <errno.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <liburing.h>

#include "config.h"
#include "corio.h"
#include "fcontext.h"

/* The struct of type that holds p as its member. */
#define corio__container_of(p, type, member) \
	((type *)((char *)(p) - offsetof(type, member)))

#define corio_likely(x)		__builtin_expect(!!(x), 1)
#define corio_unlikely(x)	__builtin_expect(!!(x), 0)
#define CORIO_COLD		__attribute__((cold, noinline))

#if defined(__SANITIZE_ADDRESS__)
#define CORIO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORIO_ASAN 1
#endif
#endif
#ifndef CORIO_ASAN
#define CORIO_ASAN 0
#endif

/* A broken invariant: aborts with file and line in every build. */
#define corio__bug(msg) corio__bug_at(__FILE__, __LINE__, (msg))
_Noreturn void corio__bug_at(const char *file, int line, const char *msg);

/*
 * user_data of an SQE is either a struct corio_waiter pointer (8-aligned,
 * low bits clear) or an internal tag: a cancel, a LINK_TIMEOUT, a NOP that
 * replaced an SQE that was never awaited.  Internal CQEs wake no task.
 */
struct corio_task;
struct corio_loop;

#define CORIO_UD_INTERNAL	1ull
#define CORIO_UD_HANDLER	2ull	/* with INTERNAL: a corio_handler */
#define CORIO_UD_MASK		7ull

/*
 * A loop-owned op that wakes no task by itself (the eventfd of the
 * blocking pool, a multishot accept): its CQEs are handed to fn, which
 * keeps stats.ops_in_flight right for the ops it arms.
 */
struct corio_handler {
	void (*fn)(struct corio_loop *loop, struct corio_handler *h,
		   const struct io_uring_cqe *cqe);
	/* Re-arms the op; called by the loop before its next enter when
	 * the handler found the SQ ring full (it must not submit from
	 * inside a reap). */
	void (*arm)(struct corio_loop *loop, struct corio_handler *h);
	struct corio_handler *next_arm;
	bool arm_pending;
};

static inline uint64_t corio__handler_ud(struct corio_handler *h)
{
	return (uint64_t)(uintptr_t)h | CORIO_UD_INTERNAL | CORIO_UD_HANDLER;
}

/*
 * One awaited SQE.  Lives on the parked task's stack from the await until
 * its CQE arrives, so an await allocates nothing.
 */
struct corio_waiter {
	struct corio_task *task;
	int32_t res;
	uint32_t cqe_flags;
	int fd;			/* the op's fd, for corio_close's -EBADF; or -1 */
	uint32_t gen;		/* this submission's number: see corio__waiter_ud */
	bool cancel_sent;	/* an ASYNC_CANCEL targets this waiter */
	bool linked;		/* a LINK_TIMEOUT follows the op */
	uint8_t opcode;		/* for corio_dump */
	bool done;		/* the op's CQE arrived */
	/* Read by the kernel when the SQE is submitted, not when it is
	 * prepared: must stay valid until then, which the parked task
	 * guarantees. */
	struct __kernel_timespec ts;
};

/*
 * The user_data of a waiter's SQE: the waiter's address in bits 17-63 and
 * the submission's number (19 bits) in bits 1-19, over the address's
 * three low bits, which are zero; bit 0 (CORIO_UD_INTERNAL) stays clear.
 * An address alone is not enough: a task that awaits in a loop reuses the
 * same waiter address, and the kernel may cancel by a stale user_data
 * (corio(7), "Spurious cancellations": Linux 6.18 leaves the
 * LINK_TIMEOUT of a completed op armed, and when it fires it cancels
 * whatever op then has that op's user_data).  Needs user addresses below
 * 2^47, which stack.c checks for each slab it maps.  Cost: two shifts.
 */
#define CORIO_UD_GEN_MASK	0x7ffffu
#define CORIO_UD_ADDR_LIMIT	(1ull << 47)

static inline uint64_t corio__waiter_ud(const struct corio_waiter *w)
{
	return (uint64_t)(uintptr_t)w << 17 | (uint64_t)w->gen << 1;
}

static inline struct corio_waiter *corio__ud_waiter(uint64_t ud)
{
	return (struct corio_waiter *)(uintptr_t)((ud >> 17) & ~7ull);
}

/* A CLOCK_MONOTONIC instant or span in ns, as io_uring's timeouts take it. */
static inline void corio__ts_from_ns(struct __kernel_timespec *ts,
				     uint64_t ns)
{
	ts->tv_sec = (long long)(ns / CORIO_SEC(1));
	ts->tv_nsec = (long long)(ns % CORIO_SEC(1));
}

/*
 * A parked task's cancel hook: called by corio_cancel when the task is
 * parked (not shielded).  It must not suspend.
 */
typedef void (*corio_cancel_hook)(struct corio_task *t);

/*
 * A layer above task.c that holds a task's handle (a group): corio_join
 * refuses such a task, corio_detach hands it to detach(), and the owner
 * hears of the task's end: done() as fn returns (still on the task's
 * stack, before its last switch), forget() as it is freed.
 */
struct corio_task_owner {
	void (*done)(struct corio_task *t);
	void (*detach)(struct corio_task *t);
	void (*forget)(struct corio_task *t);
};

enum corio_task_state {
	CORIO_T_READY,		/* on the ready queue, or never run yet */
	CORIO_T_RUNNING,
	CORIO_T_PARKED,		/* waiting; park_hook says how to cancel */
	CORIO_T_DONE,		/* fn returned; waits for join */
};

struct corio_stack {
	char *base;		/* lowest usable byte; the guard page is below */
	size_t size;		/* usable bytes, multiple of the page size */
	struct corio_stack_pool *pool;
	unsigned int vg_id;	/* valgrind's stack id, 0 without valgrind */
	bool canary;		/* no guard page: check a canary on switch */
	bool heap;		/* the task record is on the heap, not at top */
};

/*
 * The first cache line holds what a switch, a park and a wake touch; the
 * rest is read at spawn, join and the task's end.  corio__task_spawn
 * writes every field but stack (stack.c's) itself: a fresh task costs
 * its stores, not a memset of the record.
 */
struct corio_task {
	fcontext_t ctx;			/* saved context while not running */
	struct corio_loop *loop;
	struct corio_task *next_ready;	/* ready queue or turn link */
	corio_cancel_hook park_hook;	/* set while parked, else NULL */
	void *park_data;		/* the hook's argument */
	uint64_t park_ns;		/* when it parked (the turn's clock) */
	uint64_t deadline_ns;		/* 0: none */
	uint8_t state;			/* enum corio_task_state */
	bool cancelled;			/* corio_cancel was called */
	bool shield;
	bool detached;
	bool started;			/* it has run (corio_dump: "new") */
	int result;
	corio_fn fn;
	void *arg;
	struct corio_task *prev, *next;	/* the loop's list of all tasks */
	struct corio_task *joiner;	/* the task parked in corio_join(this) */
	const struct corio_task_owner *owner;	/* holds the handle, or NULL */
	void *owner_data;		/* the owner's (a group) */
	struct corio_task *oprev, *onext;	/* the owner's list */
	uint64_t id;
	void *asan_fake_stack;
	struct corio_stack stack;	/* the task struct sits at its top,
					   unless stack.heap */
};

/* A pending corio_close(fd): ops on fd cancelled meanwhile get -EBADF. */
struct corio_closing {
	int fd;
	struct corio_closing *next;
};

struct corio_stack_pool;
struct corio_layer_state;

/*
 * A layer above the loop (networking, the blocking pool) that keeps state
 * in a loop embeds a struct corio_layer_state in it and attaches it with
 * corio__loop_attach the first time it needs it; corio__loop_state finds it
 * again (a walk of a list of a few entries).  The loop calls the layer's
 * teardown once main has returned and every task has been cancelled, and
 * its fini once no task and no op is left, just before the loop frees
 * itself; fini frees the state.  Either may be NULL.  The loop knows
 * nothing else of what is above it.
 */
struct corio_layer {
	void (*teardown)(struct corio_loop *loop, struct corio_layer_state *s);
	void (*fini)(struct corio_loop *loop, struct corio_layer_state *s);
};

struct corio_layer_state {
	const struct corio_layer *layer;
	struct corio_layer_state *next;
};

struct corio_loop {
	struct io_uring ring;
	struct corio_task *current;	/* the running task, or NULL */
	fcontext_t sched_ctx;		/* where a task jumps when a turn ends */
	struct corio_task *turn;	/* the turn's tasks not yet run */
	struct corio_task *ready_head, *ready_tail;	/* the next turn's */
	struct corio_task all;		/* list head of every task */
	struct corio_stats stats;
	struct corio_task *main;	/* corio_run's task; freed by corio_run */
	struct corio_cluster *cluster;	/* corio_run_loops's, or NULL */
	struct corio_mbox *mbox;	/* loops.c: messages to this loop */
	unsigned int index;		/* in the cluster */
	bool idle;			/* loops.c: counted as done */
	bool tearing_down;		/* main returned: new tasks start cancelled */
	bool taskrun_flag;		/* the kernel raises IORING_SQ_TASKRUN */
	bool reg_ring;			/* the ring fd is registered */
	bool under_valgrind;		/* cap each wait: see pump() */
	bool turns_slow;		/* main returned: every turn ends in
					   the scheduler (teardown) */
	uint8_t quick_turns;		/* in a row, see corio__loop_turn_quick */
	struct io_uring_probe *probe;	/* the kernel's opcodes, or NULL */
	unsigned int disabled;		/* CORIO_FEAT_*: CORIO_DISABLE */
	struct corio_closing *closing;
	struct corio_stack_pool *pools;	/* one per stack size in use */
	struct corio_layer_state *layers;	/* most recently attached first */
	struct corio_handler *arms;	/* handlers waiting for an SQE */
	size_t stack_size;		/* default for spawns */
	uint64_t next_id;
	uint32_t next_gen;		/* numbers waiters' submissions */
	unsigned int sq_end;		/* sq.sqe_tail may grow to this: the
					   kernel's SQ head, as last read,
					   plus the ring's size */
	uint64_t now_ns;		/* CLOCK_MONOTONIC at the turn's start */
	uint64_t trim_at;		/* next stack trim pass, or 0 */
	uint64_t report_at;		/* next teardown report, or 0 */
	uint64_t debug_slow_ns;		/* CORIO_DEBUG: warn past this, or 0 */
	const void *sched_stack_bottom;	/* for ASan's fiber switches */
	size_t sched_stack_size;
	void *sched_fake_stack;
	uint64_t run_started;		/* CORIO_DEBUG: the running task's */
};

/*
 * Thread-locals use the initial-exec model: one %fs-relative load instead
 * of a __tls_get_addr call in libcorio.so, on every await.  (A libcorio.so
 * loaded with dlopen still fits in glibc's static TLS surplus: corio's
 * thread-locals are under 100 bytes.)
 */
#define CORIO_TLS	__thread __attribute__((tls_model("initial-exec")))

/* The loop of this thread, NULL outside corio_run. */
extern CORIO_TLS struct corio_loop *corio__loop;

static inline struct corio_task *corio__current(void)
{
	struct corio_loop *loop = corio__loop;

	return loop ? loop->current : NULL;
}

/* loop.c */
int corio__loop_flush(struct corio_loop *loop);
void corio__loop_sq_room(struct corio_loop *loop);
int corio__loop_create(struct corio_loop **out);
void corio__loop_destroy(struct corio_loop *loop);
void corio__loop_run(struct corio_loop *loop);
void corio__loop_teardown(struct corio_loop *loop);

/* loops.c: main returned on loop 0; whether the whole cluster is done. */
struct corio_cluster;
struct corio_mbox;
void corio__loops_stop(struct corio_loop *loop);
bool corio__loops_done(struct corio_loop *loop);
bool corio__loops_spin_begin(struct corio_loop *loop);
bool corio__loops_msg_waiting(const struct corio_loop *loop);
void corio__loops_spin_end(struct corio_loop *loop);

/*
 * An SQE with room for a second one behind it (an op's LINK_TIMEOUT must
 * follow it in the same submission).  Without SQPOLL the kernel takes
 * SQEs only inside an enter, so the room is known from the head it had
 * when last read (sq_end): the common case reads no shared memory.  A full
 * ring is submitted first (corio__loop_sq_room).
 */
static inline struct io_uring_sqe *corio__loop_sqe(struct corio_loop *loop)
{
	struct io_uring_sq *sq = &loop->ring.sq;

	if (corio_unlikely((int)(loop->sq_end - sq->sqe_tail) < 2))
		corio__loop_sq_room(loop);
	return &sq->sqes[sq->sqe_tail++ & sq->ring_mask];
}
void corio__loop_reap(struct corio_loop *loop);

/* SQEs were queued since the kernel last took the SQ ring's entries. */
static inline bool corio__loop_queued(const struct corio_loop *loop)
{
	return loop->ring.sq.sqe_tail !=
	       IO_URING_READ_ONCE(*loop->ring.sq.khead);
}

/*
 * Completions may wait in the kernel for an enter: with DEFER_TASKRUN it
 * posts them only inside one and raises IORING_SQ_TASKRUN when it has
 * some to post; without TASKRUN_FLAG any op in flight may have them.
 */
static inline bool corio__loop_kernel_cqes(const struct corio_loop *loop)
{
	return loop->stats.ops_in_flight &&
	       (!loop->taskrun_flag ||
		(IO_URING_READ_ONCE(*loop->ring.sq.kflags) &
		 (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)));
}

/*
 * The turn's tasks have all run, and one of them is switching out: may the
 * next turn begin right there, without a jump to the scheduler and back?
 * Only when beginning it is all the scheduler would do: tasks are ready,
 * no SQE waits to be submitted, no handler to be armed, nothing to reap
 * (with TASKRUN_FLAG the kernel raises IORING_SQ_TASKRUN when it has
 * completions to post), no stack trim pending, main still running.  Every
 * CORIO_QUICK_TURNS-th turn in a row still goes through the scheduler,
 * which reads the turn's clock.  Returns the new turn's first task (taken
 * off it), or NULL.
 */
#define CORIO_QUICK_TURNS	64

static inline struct corio_task *corio__loop_turn_quick(struct corio_loop *loop)
{
	struct corio_task *t = loop->ready_head;

	if (!t || loop->arms || loop->turns_slow || loop->trim_at ||
	    corio__loop_queued(loop) || corio__loop_kernel_cqes(loop) ||
	    (loop->stats.ops_in_flight && io_uring_cq_ready(&loop->ring)))
		return NULL;
	if (corio_unlikely(++loop->quick_turns == CORIO_QUICK_TURNS))
		return NULL;
	loop->stats.turns++;
	loop->turn = t->next_ready;
	loop->ready_head = loop->ready_tail = NULL;
	return t;
}
void corio__loop_defer(struct corio_loop *loop, struct corio_handler *h);
void corio__loop_undefer(struct corio_loop *loop, struct corio_handler *h);
/* bufring.c: the loop's shared ring (made on first use), or NULL, *err */
struct corio_bufring *corio__bufring_shared(struct corio_loop *loop,
					    int *err);
size_t corio__receiver_queued(const struct corio_receiver *r);
void corio__bufring_info(const struct corio_bufring *br, bool *inc,
			 bool *bundle, unsigned long *starved);
void corio__loop_attach(struct corio_loop *loop, struct corio_layer_state *s,
			const struct corio_layer *layer);
struct corio_layer_state *corio__loop_state(const struct corio_loop *loop,
					    const struct corio_layer *layer);
/* Whether the kernel has the opcode (probed once, at the loop's start). */
static inline bool corio__loop_has_op(const struct corio_loop *loop, int op)
{
	return loop->probe && io_uring_opcode_supported(loop->probe, op);
}
struct io_uring_sqe *corio__loop_handler_sqe(struct corio_loop *loop,
					     struct corio_handler *h);
size_t corio__stack_default(void);
void corio__loop_set_stack_default(size_t size);

/* task.c */
/* t goes to the back of the ready queue: it runs next turn. */
static inline void corio__task_wake(struct corio_task *t)
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
void corio__task_switch(struct corio_task *t);

/*
 * Parks t, the running task, until something wakes it (or hook, from
 * corio_cancel, does).  Inline, so that an await makes one call on its
 * way to the switch.
 */
static inline void corio__task_park(struct corio_task *t,
				    corio_cancel_hook hook, void *data)
{
	t->state = CORIO_T_PARKED;
	t->park_hook = hook;
	t->park_data = data;
	t->park_ns = t->loop->now_ns;
	corio__task_switch(t);
	t->park_hook = NULL;
	t->park_data = NULL;
}
void corio__task_turn(struct corio_loop *loop);
void corio__task_free(struct corio_task *t);
struct corio_task *corio__task_spawn(corio_fn fn, void *arg,
				     const struct corio_spawn_attr *attr,
				     bool heap);
void corio__task_join_cancel(struct corio_task *self);
const char *corio__task_name(const struct corio_task *t, char *buf,
			     size_t len);

/* True when an await of t must fail at once with -ECANCELED. */
static inline bool corio__task_stopped(const struct corio_task *t)
{
	return t->cancelled && !t->shield;
}

/*
 * sync.c: a FIFO queue of tasks waiting for something that another task
 * (not an op) will give them.  A struct corio_wait lives on its task's
 * stack; corio__wait_on parks until corio__wake, a cancellation
 * (-ECANCELED) or the task's deadline (-ETIMEDOUT, through a timer whose
 * CQE it waits for before returning).
 */
struct corio_wait;

struct corio_waitq {
	struct corio_wait *head, *tail;
};

struct corio_wait {
	struct corio_task *task;
	struct corio_wait *prev, *next;
	struct corio_waitq *q;		/* NULL once out of the queue */
	int res;
	void *item;			/* what a waker hands over */
	struct corio_handler timer;	/* the deadline's TIMEOUT */
	struct __kernel_timespec ts;
	bool timer_armed;		/* its CQE has not arrived */
	bool timer_waited;		/* the task parks until it does */
};

int corio__wait_on(struct corio_waitq *q, struct corio_wait *w);
void corio__wake(struct corio_wait *w, int res);

/* sync.c */
void corio__wake_all(struct corio_waitq *q, int res);
void corio__sync_cancel(struct corio_task *t);

/* group.c: the park hook of corio_group_wait (corio_dump names it) */
void corio__group_wait_cancel(struct corio_task *self);

/* dump.c */
void corio__dump_slow(struct corio_loop *loop, struct corio_task *t,
		      uint64_t started_ns);
uint64_t corio__dump_slow_ns(void);

/*
 * Kernel features a user may turn off with CORIO_DISABLE=name,... (to
 * compare, or to test a fallback): each is otherwise probed once per loop.
 */
#define CORIO_FEAT_BUFRING	(1u << 0)	/* "bufring": PBUF_RING */
#define CORIO_FEAT_BUF_INC	(1u << 1)	/* "buf_inc": IOU_PBUF_RING_INC */
#define CORIO_FEAT_BUNDLE	(1u << 2)	/* "bundle": recv bundles */
#define CORIO_FEAT_SEND_ZC	(1u << 3)	/* "send_zc": IORING_OP_SEND_ZC */
#define CORIO_FEAT_SPLICE	(1u << 4)	/* "splice": IORING_OP_SPLICE */
#define CORIO_FEAT_MSG_RING	(1u << 5)	/* "msg_ring": IORING_OP_MSG_RING */
#define CORIO_FEAT_KTLS		(1u << 6)	/* "ktls": the kernel's TLS */

/* env.c: the CORIO_FEAT_* bits that CORIO_DISABLE names. */
unsigned int corio__env_disabled(void);

/* env.c: 0, or -EINVAL for anything but digits (and K or M) in range. */
int corio__parse_size(const char *s, uint64_t min, uint64_t max,
		      uint64_t *out);
int corio__parse_ms(const char *s, uint64_t *out_ns);

void corio__diagnose_setup(int err, const char *proc);	/* diagnose.c */
/* time.c */
uint64_t corio__time_now(void);
uint64_t corio__time_coarse(void);

/*
 * Before an await: -EPERM outside a task, -ECANCELED in a cancelled one,
 * -ETIMEDOUT past its deadline; 0 when it may go ahead.
 */
static inline int corio__op_check(struct corio_task *t, bool cancellable)
{
	if (corio_unlikely(!t))
		return -EPERM;
	if (!cancellable)
		return 0;
	if (corio_unlikely(corio__task_stopped(t)))
		return -ECANCELED;
	if (t->deadline_ns && corio__time_now() >= t->deadline_ns)
		return -ETIMEDOUT;
	return 0;
}

/* stack.c */
struct corio_task *corio__stack_get(struct corio_loop *loop, size_t size);
struct corio_task *corio__stack_get_heap(struct corio_loop *loop,
					 size_t size);
/* The room at a stack's top for its task's record, a cache line multiple. */
#define CORIO_TASK_ROOM	((sizeof(struct corio_task) + 63) & ~(size_t)63)

/* Where t's frames begin: the record's place at the top of the stack. */
static inline char *corio__stack_top(const struct corio_task *t)
{
	return t->stack.base + t->stack.size - CORIO_TASK_ROOM;
}
void corio__stack_release(struct corio_task *t);
void corio__stack_put(struct corio_task *t);
size_t corio__stack_mapped(const struct corio_loop *loop);
void corio__stack_trim(struct corio_loop *loop);
void corio__stack_pools_free(struct corio_loop *loop);
void corio__stack_check(const struct corio_task *t);
int corio__stack_overflow_init(void);
void corio__stack_overflow_fini(void);
size_t corio__stack_round(size_t size);

/* io.c */
#define CORIO_OP_DEADLINE	1u	/* link a LINK_TIMEOUT at the deadline */
#define CORIO_OP_NOCANCEL	2u	/* corio_cancel does not stop it */
int corio__op_submit(struct corio_task *t, struct corio_waiter *w,
		     struct io_uring_sqe *sqe, unsigned int flags);
void corio__op_cancel(struct corio_task *t);
bool corio__op_spurious(struct corio_task *t, const struct corio_waiter *w,
			int res);
int corio__op_res_closed(struct corio_loop *loop, struct corio_waiter *w);

/* blocking.c */
/*
 * corio_run_blocking for an arg on the heap: a cancellation or a deadline
 * ends the wait at once (-ECANCELED, -ETIMEDOUT), and then *kept is true:
 * the job keeps arg and hands it to release() once fn has returned.
 * Otherwise arg is still the caller's.
 */
int corio__run_blocking_owned(corio_fn fn, void *arg,
			      void (*release)(void *arg), bool *kept);

/* process.c: whether waits use IORING_OP_WAITID (for the tests) */
int corio__process_has_waitid(void);


/* tls.c: a TLS stream's transport (stream.c calls it) */
struct corio_tls;
ssize_t corio__tls_read(struct corio_tls *t, void *buf, size_t len);
ssize_t corio__tls_write(struct corio_tls *t, const void *p, size_t len);
int corio__tls_close(struct corio_tls *t);
int corio__tls_flush(struct corio_tls *t);
void corio__tls_stop(struct corio_tls *t);
void corio__tls_free(struct corio_tls *t);
bool corio__tls_receiver(const struct corio_tls *t);
bool corio__stream_tls_receiver(const struct corio_stream *s);
const char *corio__tls_errstr(const struct corio_tls *t);
void corio__stream_set_tls(struct corio_stream *s, struct corio_tls *t);

/* A TLS stream's ciphertext each way: p[pos, len) of cap bytes; p NULL
 * once the kernel encrypts and decrypts. */
struct corio_tls_buf {
	char *p;
	size_t pos, len, cap;
};
/* Room for need more bytes at the end; fixed while a send reads it. */
int corio__tls_buf_room(struct corio_tls_buf *b, size_t need, bool fixed,
			char **old);
/* Which directions the kernel took over (CORIO_KTLS_*), and if not both, why. */
#define CORIO_KTLS_RX	1
#define CORIO_KTLS_TX	2
int corio__tls_ktls(const struct corio_tls *t, const char **why);
int corio__stream_ktls(const struct corio_stream *s, const char **why);

/*
 * ktls.c: handing a TLS stream's keys to the kernel's "tls" ULP.  tls.c
 * embeds a struct corio_ktls in each TLS stream and calls these in
 * order: track (before the handshake), scan and call_end (during it),
 * ready, attach, watch (while tls.c drains early records), set, end.
 */
struct ssl_st;

/* One direction's ciphertext, cut into TLS records by their headers. */
struct corio_ktls_scan {
	uint64_t nr;		/* records whose 5-byte header was seen */
	uint64_t since_ccs;	/* of those, after the last ChangeCipherSpec */
	uint32_t left;		/* the current record's body bytes to come */
	unsigned char hdr[5], hlen;
	unsigned char head[8], headlen;	/* the current body's first bytes */
};
void corio__ktls_scan(struct corio_ktls_scan *s, const void *p, size_t n);

/*
 * What the records the kernel decrypted mean (their type comes in a
 * cmsg): a pure state machine, fed each recvmsg's bytes in order.
 */
struct corio_ktls_rx {
	int version;		/* TLS1_2_VERSION or TLS1_3_VERSION */
	int warnings;		/* TLS 1.2 warning alerts in a row */
	bool closed;		/* close_notify came: reads are EOF */
	unsigned char alert[2], alen;	/* an alert being read */
	unsigned char hs[4], hslen;	/* a handshake message's header */
	uint32_t hsleft;	/* that message's body bytes still to skip */
	char why[128];		/* the text of the last error */
};
#define CORIO_KTLS_DATA	1	/* application data: the bytes are the caller's */
#define CORIO_KTLS_SKIP	2	/* a control record handled: read on */
int corio__ktls_record(struct corio_ktls_rx *rx, int type,
		       const unsigned char *p, size_t n);

struct corio_ktls {
	bool track;		/* counting records: kTLS may follow */
	bool tx_logged;		/* our TLS 1.3 write secret came this call */
	bool tx_marked;		/* tx_mark is set */
	bool tx_ok;		/* ready: the kernel may take TX too */
	bool spoiled;		/* a drained record changed more than data */
	int dirs;		/* CORIO_KTLS_*: what the kernel does */
	uint64_t tx_mark;	/* out.nr when our write key changed */
	struct corio_ktls_scan out;	/* what left OpenSSL */
	/* TLS 1.3 application traffic secrets: [0] ours, [1] the peer's */
	unsigned char secret[2][64];
	unsigned char secret_len[2];
	struct corio_ktls_rx rx;
	char why[128];		/* why the kernel does not take both */
};
bool corio__ktls_track(struct corio_ktls *k, struct ssl_st *ssl, int fd);
void corio__ktls_call_end(struct corio_ktls *k);
bool corio__ktls_ready(struct corio_ktls *k, struct ssl_st *ssl);
int corio__ktls_attach(struct corio_ktls *k, int fd);
void corio__ktls_watch(struct corio_ktls *k, struct ssl_st *ssl, bool on);
void corio__ktls_set(struct corio_ktls *k, struct ssl_st *ssl, int fd,
		     uint64_t rx_early);
void corio__ktls_end(struct corio_ktls *k, struct ssl_st *ssl);
ssize_t corio__ktls_recv(struct corio_ktls *k, int fd, void *buf, size_t len,
			 char *err, size_t errlen);
int corio__ktls_close(int fd);
void corio__ktls_forget(void);	/* the cached ENOENT (for the tests) */

#if CORIO_HAVE_KTLS
#include <linux/tls.h>

/* What setsockopt(SOL_TLS, TLS_TX or TLS_RX) takes. */
union corio_ktls_info {
	struct tls_crypto_info info;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};
int corio__ktls_crypto_info(const struct corio_ktls *k, struct ssl_st *ssl,
			    bool tx, uint64_t rx_early,
			    union corio_ktls_info *out);
#endif

/* stream.c: the delimiter search, pure, fuzzed by tests/fuzz/ */
size_t corio__stream_scan(const void *buf, size_t len, const void *delim,
			  size_t delim_len, size_t from);

#endif
