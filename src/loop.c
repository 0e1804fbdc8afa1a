/*
 * loop.c - the event loop: the ring, one turn, corio_run and its teardown.
 *
 * Owns the thread's struct corio_loop.  One turn runs every task that was
 * ready when the turn began, then makes at most one io_uring_enter that
 * submits the SQEs those tasks queued and reaps completions, waiting only
 * when no task is ready.  A CQE's user_data holds the waiter's address (or
 * an internal tag), so a completion costs O(1): no table, no scan.
 *
 * Invariants: only the loop's own thread touches it; a task is on the ready
 * queue at most once; stats.ops_in_flight counts awaited SQEs whose last
 * CQE has not been reaped, and corio_run returns only when it is zero.
 * Calls task.c (running tasks), stack.c (pools, overflow handler), and
 * the layers above only through the hooks they attach (corio__loop_attach).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "corio-int.h"

#if CORIO_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

#define SQ_ENTRIES	1024
#define CQ_ENTRIES	16384

/* How often teardown reports the tasks it still waits for. */
#define TEARDOWN_REPORT_NS	CORIO_SEC(10)

CORIO_TLS struct corio_loop *corio__loop;

/* The default stack size of this thread's next spawns; 0 until computed. */
static CORIO_TLS size_t stack_default;

_Noreturn void corio__bug_at(const char *file, int line, const char *msg)
{
	fprintf(stderr, "corio: bug at %s:%d: %s\n", file, line, msg);
	abort();
}

/* CORIO_STACK_SIZE=bytes, with an optional K or M suffix. */
static size_t stack_size_from_env(void)
{
	const char *s = getenv("CORIO_STACK_SIZE");
	size_t size = CORIO_STACK_DEFAULT;
	uint64_t v;

	if (CORIO_ASAN)
		size *= 4;	/* instrumented frames and redzones */
	if (!s || !*s)
		return size;
	if (corio__parse_size(s, CORIO_STACK_MIN, CORIO_STACK_MAX, &v) < 0) {
		fprintf(stderr, "corio: ignoring CORIO_STACK_SIZE=%s "
			"(want %u to %u bytes)\n", s, CORIO_STACK_MIN,
			CORIO_STACK_MAX);
		return size;
	}
	return corio__stack_round((size_t)v);
}

size_t corio__stack_default(void)
{
	if (!stack_default)
		stack_default = stack_size_from_env();
	return stack_default;
}

ssize_t corio_stack_size(size_t bytes)
{
	struct corio_loop *loop = corio__loop;
	size_t old = loop ? loop->stack_size : corio__stack_default();

	if (!bytes)
		return old;
	if (bytes < CORIO_STACK_MIN || bytes > CORIO_STACK_MAX)
		return -EINVAL;
	if (loop)
		loop->stack_size = corio__stack_round(bytes);
	else
		stack_default = corio__stack_round(bytes);
	return old;
}

/* io_uring_enter without liburing's wrapper, so that errors are -errno. */
static int sys_enter(unsigned int fd, unsigned int to_submit,
		     unsigned int min_complete, unsigned int flags, void *arg,
		     size_t argsz)
{
	long ret = syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
			   flags, arg, argsz);

	return ret < 0 ? -errno : (int)ret;
}

/*
 * Publishes the SQEs queued since the last flush and returns how many the
 * kernel has not consumed yet.  Without SQPOLL the kernel reads the tail
 * inside io_uring_enter, which orders it after the SQE stores.
 */
static unsigned int sq_flush(struct io_uring *ring)
{
	struct io_uring_sq *sq = &ring->sq;
	unsigned int tail = sq->sqe_tail;

	if (sq->sqe_head != tail) {
		sq->sqe_head = tail;
		IO_URING_WRITE_ONCE(*sq->ktail, tail);
	}
	return tail - IO_URING_READ_ONCE(*sq->khead);
}

/*
 * Reaps every CQE in the ring with one head advance.  A waiter's task is
 * woken at its op's last CQE: a CQE flagged MORE (zero-copy send) is
 * followed by a NOTIF one.
 */
void corio__loop_reap(struct corio_loop *loop)
{
	struct io_uring_cq *cq = &loop->ring.cq;
	unsigned int head = *cq->khead;
	/* Pairs with the kernel's release of the tail: the CQEs before it
	 * are fully written. */
	unsigned int tail = io_uring_smp_load_acquire(cq->ktail);
	unsigned int n = tail - head, woken = 0;

	for (; head != tail; head++) {
		const struct io_uring_cqe *cqe = &cq->cqes[head & cq->ring_mask];
		struct corio_waiter *w;

		if (cqe->user_data & CORIO_UD_INTERNAL) {
			if (corio_unlikely(cqe->user_data & CORIO_UD_HANDLER)) {
				struct corio_handler *h = (void *)(uintptr_t)
					(cqe->user_data & ~CORIO_UD_MASK);

				h->fn(loop, h, cqe);
			}
			continue;
		}
		w = corio__ud_waiter(cqe->user_data);
		/* The waiters sit on as many stacks as CQEs: fetch ahead. */
		if (corio_likely(head + 2 != tail)) {
			uint64_t ud = cq->cqes[(head + 2) & cq->ring_mask]
					  .user_data;

			if (!(ud & CORIO_UD_INTERNAL))
				__builtin_prefetch(corio__ud_waiter(ud), 1);
		}
		if (corio_unlikely(cqe->flags & (IORING_CQE_F_MORE |
						 IORING_CQE_F_NOTIF))) {
			if (cqe->flags & IORING_CQE_F_MORE) {
				w->res = cqe->res;
				w->cqe_flags = cqe->flags;
				continue;
			}
		} else {
			w->res = cqe->res;
			w->cqe_flags = cqe->flags;
		}
		if (corio_unlikely(loop->closing && w->res < 0))
			w->res = corio__op_res_closed(loop, w);
		w->done = true;
		woken++;
		corio__task_wake(w->task);
	}
	/* The kernel may reuse the slots once it sees the new head. */
	io_uring_smp_store_release(cq->khead, head);
	loop->stats.ops_in_flight -= woken;
	loop->stats.cqes += n;
}

static CORIO_COLD void enter_failed(int ret)
{
	if (ret == -EBADR) {
		fprintf(stderr, "corio: the kernel dropped a completion "
			"(io_uring_enter: EBADR); aborting\n");
		abort();
	}
	fprintf(stderr, "corio: io_uring_enter: %s\n", strerror(-ret));
	abort();
}

/*
 * One io_uring_enter: submits what is queued and reaps, waiting for one
 * CQE when wait is set (until ts when it is non-NULL).  Returns 0, or
 * -ETIME when ts ran out.  -EINTR is retried; -EBUSY and -EAGAIN (the CQ
 * side is backed up, or the kernel is short of memory) mean: reap, then
 * retry, waiting for a completion if reaping found none.
 */
static int enter(struct corio_loop *loop, bool wait,
		 struct __kernel_timespec *ts)
{
	struct io_uring *ring = &loop->ring;
	unsigned int flags = IORING_ENTER_GETEVENTS;
	struct io_uring_getevents_arg arg = { 0 };
	void *argp = NULL;
	size_t argsz = 0;
	int ret;

	if (loop->reg_ring)
		flags |= IORING_ENTER_REGISTERED_RING;
	if (ts) {
		arg.ts = (uint64_t)(uintptr_t)ts;
		argp = &arg;
		argsz = sizeof(arg);
		flags |= IORING_ENTER_EXT_ARG;
	}
	for (;;) {
		unsigned int to_submit = sq_flush(ring);
		uint64_t cqes = loop->stats.cqes;

		loop->stats.enters++;
		ret = sys_enter(ring->enter_ring_fd, to_submit, wait ? 1 : 0,
				flags, argp, argsz);
		if (corio_likely(ret >= 0))
			break;
		if (ret == -ETIME)
			break;
		if (ret == -EINTR)
			continue;
		if (ret != -EBUSY && ret != -EAGAIN)
			enter_failed(ret);
		corio__loop_reap(loop);
		if (loop->stats.cqes == cqes)
			wait = true;
	}
	if (*ring->sq.kflags & IORING_SQ_CQ_OVERFLOW)
		loop->stats.cq_overflows++;
	corio__loop_reap(loop);
	return ret == -ETIME ? -ETIME : 0;
}

/*
 * Submits the queued SQEs without waiting, from inside a task whose SQE
 * ring is full.  Completions reaped meanwhile wake tasks for the next turn.
 */
CORIO_COLD int corio__loop_flush(struct corio_loop *loop)
{
	return enter(loop, false, NULL);
}


/* corio__loop_sqe found less than two SQEs free as of the head it knew. */
CORIO_COLD void corio__loop_sq_room(struct corio_loop *loop)
{
	struct io_uring_sq *sq = &loop->ring.sq;

	for (;;) {
		loop->sq_end = IO_URING_READ_ONCE(*sq->khead) +
			       sq->ring_entries;
		if ((int)(loop->sq_end - sq->sqe_tail) >= 2)
			return;
		corio__loop_flush(loop);
	}
}

/*
 * An SQE for a handler's op, without submitting: handlers run inside a
 * reap, where a submit would reap again.  NULL when the ring is full: the
 * handler's arm() is then called before the next enter.
 */
struct io_uring_sqe *corio__loop_handler_sqe(struct corio_loop *loop,
					     struct corio_handler *h)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

	if (!sqe)
		corio__loop_defer(loop, h);
	return sqe;
}

/* h's arm() runs before the next enter (a buffer ring's batch, say). */
void corio__loop_defer(struct corio_loop *loop, struct corio_handler *h)
{
	if (!h->arm_pending) {
		h->arm_pending = true;
		h->next_arm = loop->arms;
		loop->arms = h;
	}
}

/* h is going away: it must not be armed after all. */
CORIO_COLD void corio__loop_undefer(struct corio_loop *loop,
				    struct corio_handler *h)
{
	struct corio_handler **pp;

	if (!h->arm_pending)
		return;
	for (pp = &loop->arms; *pp != h; pp = &(*pp)->next_arm)
		;
	*pp = h->next_arm;
	h->arm_pending = false;
}

static CORIO_COLD void run_arms(struct corio_loop *loop)
{
	struct corio_handler *h = loop->arms;

	loop->arms = NULL;
	while (h) {
		struct corio_handler *next = h->next_arm;

		h->arm_pending = false;
		h->arm(loop, h);
		h = next;
	}
}

static CORIO_COLD void report_tasks(struct corio_loop *loop, const char *why)
{
	struct corio_task *t;
	char name[128];

	for (t = loop->all.next; t != &loop->all; t = t->next) {
		if (t->state == CORIO_T_DONE)
			continue;
		fprintf(stderr, "corio: %s: %s still running%s%s\n", why,
			corio__task_name(t, name, sizeof(name)),
			t->cancelled ? ", cancelled" : "",
			t->state == CORIO_T_PARKED ? ", parked" : "");
	}
}

/*
 * Nothing is ready, nothing is in flight, nothing is queued, yet tasks
 * live: each waits on another (a join cycle).  No event can ever wake
 * them, so say so rather than hang.
 */
static CORIO_COLD _Noreturn void deadlock(struct corio_loop *loop)
{
	fprintf(stderr, "corio: deadlock: every task waits on another task "
		"and no operation is in flight\n");
	report_tasks(loop, "deadlock");
	abort();
}

/*
 * An idle wait with an end: the next teardown report (every 10 s while
 * main has returned and tasks or ops remain), the next stack trim (an
 * idle daemon still gives back the stacks of a past burst), or valgrind's
 * tick.  valgrind holds its big lock across io_uring_enter, so another
 * thread (a worker that a layer above runs for this loop) could never run
 * while the loop sleeps in the kernel: under it, the loop gives the lock
 * away and wakes every 10 ms.
 */
static CORIO_COLD void idle_wait(struct corio_loop *loop)
{
	uint64_t now = corio__time_coarse(), until;
	struct __kernel_timespec ts;

	if (loop->tearing_down) {
		if (!loop->report_at)
			loop->report_at = now + TEARDOWN_REPORT_NS;
		until = loop->report_at;
	} else {
		until = loop->trim_at ? loop->trim_at : UINT64_MAX;
	}
	if (loop->under_valgrind) {
		sched_yield();
		if (until > now + CORIO_MSEC(10))
			until = now + CORIO_MSEC(10);
	}
	if (until <= now) {
		enter(loop, false, NULL);	/* due now: no wait */
	} else {
		corio__ts_from_ns(&ts, until - now);
		enter(loop, true, &ts);
	}
	if (loop->tearing_down && corio__time_coarse() >= loop->report_at) {
		report_tasks(loop, "teardown");
		loop->report_at = corio__time_coarse() + TEARDOWN_REPORT_NS;
	}
}

/* How long an idle loop of a cluster polls before it sleeps. */
#define SPIN_NS		CORIO_USEC(50)

/*
 * An idle loop of corio_run_loops that had messages lately polls its
 * mailbox and its ring a while before it sleeps: a thread woken from
 * sleep costs 20-50 us on a VM, a call round trip without one under a
 * microsecond.  True when something came (then it is reaped, or the
 * mailbox's drain is due).
 */
static CORIO_COLD bool spin(struct corio_loop *loop)
{
	struct io_uring *ring = &loop->ring;
	bool found = false;
	uint64_t end;

	if (loop->under_valgrind || !corio__loops_spin_begin(loop))
		return false;
	end = corio__time_now() + SPIN_NS;
	do {
		if (corio__loops_msg_waiting(loop) || io_uring_cq_ready(ring) ||
		    (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN)) {
			found = true;
			break;
		}
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} while (corio__time_now() < end);
	corio__loops_spin_end(loop);
	if (found)
		enter(loop, false, NULL);	/* what came, reaped */
	return found || loop->arms || loop->ready_head;
}

/* Nothing left to run or to wait for. */
static bool quiescent(const struct corio_loop *loop)
{
	return !loop->stats.tasks_live && !loop->stats.ops_in_flight &&
	       !loop->ready_head;
}

/*
 * An idle loop of corio_run_loops: another loop or thread may still send
 * work (loops.c), so it never reports a deadlock.  What is queued goes
 * out first, without waiting; so does a loop that a stop just made
 * quiescent (in run_arms), which the turn loop must count as done before
 * it may wait.  Then it spins, or waits.
 */
static CORIO_COLD void cluster_idle(struct corio_loop *loop)
{
	if (corio__loop_queued(loop) ||
	    (loop->tearing_down && !loop->idle && quiescent(loop))) {
		enter(loop, false, NULL);
		return;
	}
	if (!spin(loop))
		idle_wait(loop);
}

/* Submits and reaps once: the second half of a turn. */
static void pump(struct corio_loop *loop)
{
	bool idle, queued;

	if (corio_unlikely(loop->arms))
		run_arms(loop);
	/* A handler still unarmed (ring full) must not be slept through. */
	idle = !loop->ready_head && !loop->arms;
	if (corio_unlikely(idle && loop->cluster)) {
		cluster_idle(loop);
		return;
	}
	queued = corio__loop_queued(loop);
	if (!queued && !loop->stats.ops_in_flight) {
		if (idle)
			deadlock(loop);
		return;
	}
	/* Tasks that keep yielding skip the syscall until the kernel has
	 * completions to post. */
	if (!queued && !idle && !corio__loop_kernel_cqes(loop)) {
		corio__loop_reap(loop);
		return;
	}
	if (corio_unlikely(idle && (loop->tearing_down || loop->trim_at ||
				    loop->under_valgrind))) {
		idle_wait(loop);
		return;
	}
	enter(loop, idle, NULL);
}

void corio__loop_attach(struct corio_loop *loop, struct corio_layer_state *s,
			const struct corio_layer *layer)
{
	s->layer = layer;
	s->next = loop->layers;
	loop->layers = s;
}

struct corio_layer_state *corio__loop_state(const struct corio_loop *loop,
					    const struct corio_layer *layer)
{
	struct corio_layer_state *s;

	for (s = loop->layers; s; s = s->next)
		if (s->layer == layer)
			return s;
	return NULL;
}

/*
 * main returned (or, for the other loops of corio_run_loops, loop 0 said
 * so): cancel every live task (later spawns start cancelled), then let the
 * layers stop what no task waits on but would keep the loop alive.
 */
CORIO_COLD void corio__loop_teardown(struct corio_loop *loop)
{
	struct corio_layer_state *s;
	struct corio_task *t;

	loop->tearing_down = true;
	loop->turns_slow = true;
	for (t = loop->all.next; t != &loop->all; t = t->next)
		if (t->state != CORIO_T_DONE)
			corio_cancel(t);
	for (s = loop->layers; s; s = s->next)
		if (s->layer->teardown)
			s->layer->teardown(loop, s);
}

void corio__loop_run(struct corio_loop *loop)
{
	for (;;) {
		struct corio_task *t = loop->ready_head;

		loop->stats.turns++;
		/* Once per turn: what corio_dump measures waits against (a
		 * coarse clock: 5 ns here, against 23 for the fine one). */
		loop->now_ns = corio__time_coarse();
		if (corio_unlikely(loop->trim_at && loop->now_ns >= loop->trim_at))
			corio__stack_trim(loop);
		/* Tasks woken or spawned from here on run next turn. */
		loop->ready_head = loop->ready_tail = NULL;
		loop->quick_turns = 0;
		if (t) {
			loop->turn = t;
			corio__task_turn(loop);
		}
		if (corio_unlikely(loop->main &&
				   loop->main->state == CORIO_T_DONE &&
				   !loop->tearing_down)) {
			corio__loop_teardown(loop);
			if (loop->cluster)
				corio__loops_stop(loop);
		}
		if (corio_unlikely(loop->tearing_down) && quiescent(loop)) {
			if (!loop->cluster)
				return;
			/* Every loop of the cluster must be done too. */
			if (corio__loops_done(loop)) {
				if (corio__loop_queued(loop))
					enter(loop, false, NULL);
				return;
			}
		}
		pump(loop);
	}
}

/* The SQ array maps slots to SQEs one to one; set it so once. */
static void sq_array_identity(struct io_uring *ring)
{
	unsigned int i;

	for (i = 0; i < ring->sq.ring_entries; i++)
		ring->sq.array[i] = i;
}

static CORIO_COLD int ring_missing(struct io_uring *ring, const char *what)
{
	fprintf(stderr, "corio: io_uring lacks %s (Linux 6.1 or later is "
		"needed)\n", what);
	if (ring)
		io_uring_queue_exit(ring);
	return -ENOSYS;
}

static CORIO_COLD int ring_setup(struct corio_loop *loop)
{
	struct io_uring *ring = &loop->ring;
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = CQ_ENTRIES;
	ret = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
	if (ret == -EINVAL) {
		/* COOP_TASKRUN and TASKRUN_FLAG are optional. */
		p.flags &= ~(IORING_SETUP_COOP_TASKRUN |
			     IORING_SETUP_TASKRUN_FLAG);
		ret = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
		if (ret == -EINVAL)
			return ring_missing(NULL, "IORING_SETUP_DEFER_TASKRUN");
	}
	if (ret < 0) {
		corio__diagnose_setup(ret, "/proc");
		return ret;
	}
	if (!(p.features & IORING_FEAT_NODROP))
		return ring_missing(ring, "IORING_FEAT_NODROP");
	if (!(p.features & IORING_FEAT_CQE_SKIP))
		return ring_missing(ring, "IORING_FEAT_CQE_SKIP");
	if (!(p.features & IORING_FEAT_EXT_ARG))
		return ring_missing(ring, "IORING_FEAT_EXT_ARG");
	loop->taskrun_flag = p.flags & IORING_SETUP_TASKRUN_FLAG;
	sq_array_identity(ring);
	/* A fork child must not share the rings' pages with the parent. */
	io_uring_ring_dontfork(ring);
	/* Saves the fd lookup on every enter. */
	loop->reg_ring = io_uring_register_ring_fd(ring) == 1;
	loop->probe = io_uring_get_probe_ring(ring);
	return 0;
}

/*
 * A fork child inherits the thread's loop pointer but not the rings'
 * pages: it must see no loop (its calls fail with -EPERM), and it must
 * not keep the parent's ring alive.
 */
static void atfork_child(void)
{
	struct corio_loop *loop = corio__loop;

	if (loop) {
		corio__loop = NULL;
		close(loop->ring.ring_fd);
	}
}

static void atfork_register(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

/* As Python does: a write to a closed pipe returns -EPIPE, not death. */
static void sigpipe_ignore(void)
{
	struct sigaction sa;

	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
	    !(sa.sa_flags & SA_SIGINFO)) {
		sa.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &sa, NULL);
	}
}

/* A loop for this thread, not yet running anything; -errno. */
int corio__loop_create(struct corio_loop **out)
{
	static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
	struct corio_loop *loop;
	int ret;

	loop = calloc(1, sizeof(*loop));
	if (!loop)
		return -ENOMEM;
	loop->all.next = loop->all.prev = &loop->all;
	loop->stack_size = corio__stack_default();
	loop->debug_slow_ns = corio__dump_slow_ns();
	loop->disabled = corio__env_disabled();
#if CORIO_HAVE_VALGRIND
	loop->under_valgrind = RUNNING_ON_VALGRIND != 0;
#endif
	ret = ring_setup(loop);
	if (ret < 0) {
		free(loop);
		return ret;
	}
	pthread_once(&atfork_once, atfork_register);
	sigpipe_ignore();
	corio__stack_overflow_init();
	*out = loop;
	return 0;
}

/* Frees the loop: it has no task and no op left. */
void corio__loop_destroy(struct corio_loop *loop)
{
	while (loop->all.next != &loop->all)
		corio__task_free(loop->all.next);
	while (loop->layers) {
		struct corio_layer_state *s = loop->layers;

		loop->layers = s->next;	/* before fini frees s */
		if (s->layer->fini)
			s->layer->fini(loop, s);
	}
	corio__stack_pools_free(loop);
	if (loop->probe)
		io_uring_free_probe(loop->probe);
	io_uring_queue_exit(&loop->ring);
	free(loop);
	corio__stack_overflow_fini();
}

/* One loop of its own, which no other thread can post to (loops.c). */
int corio_run(corio_fn fn, void *arg)
{
	struct corio_loop *loop;
	int ret;

	if (!fn)
		return -EINVAL;
	if (corio__loop)
		return -EBUSY;
	ret = corio__loop_create(&loop);
	if (ret < 0)
		return ret;
	corio__loop = loop;
	loop->main = corio_spawn(fn, arg);
	if (!loop->main) {
		ret = -errno;
		goto out;
	}
	corio__loop_run(loop);
	ret = loop->main->result;
out:
	corio__loop = NULL;
	corio__loop_destroy(loop);
	return ret;
}

int corio_stats(struct corio_stats *out)
{
	struct corio_loop *loop = corio__loop;

	if (!out)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	*out = loop->stats;
	return 0;
}

const char *corio__task_name(const struct corio_task *t, char *buf,
			     size_t len)
{
	Dl_info info;

	/* A static function has no dynamic symbol: its address then. */
	if (dladdr((void *)(uintptr_t)t->fn, &info) && info.dli_sname)
		snprintf(buf, len, "task %llu (%s)",
			 (unsigned long long)t->id, info.dli_sname);
	else
		snprintf(buf, len, "task %llu (%p)",
			 (unsigned long long)t->id, (void *)(uintptr_t)t->fn);
	return buf;
}
