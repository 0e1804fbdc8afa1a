/*
 * stack.c - task stacks: pools carved from slabs, guard pages, overflow.
 *
 * Each loop keeps one pool per stack size in use.  A pool carves stacks
 * from large MAP_NORESERVE slabs (one mapping holds many stacks, so a
 * million stacks stay far below vm.max_map_count) and reuses freed stacks
 * last in, first out, while they are warm.  Layout of one stack:
 *
 *	[guard page][usable stack ........ struct corio_task]
 *	            ^base                  ^top: the task struct lives here
 *
 * (A group member's record is on the heap instead, so that its stack can
 * be reused as soon as it returns; its room at the top stays unused.)
 *
 * The guard page is installed with MADV_GUARD_INSTALL (Linux 6.13+), which
 * does not split the mapping; where process_madvise takes PIDFD_SELF
 * (Linux 6.14+), the guards of GUARD_BATCH stacks ahead are installed in
 * one call instead of one call per spawn.  Without
 * MADV_GUARD_INSTALL, mprotect guards are used for the
 * first MPROTECT_GUARDS_MAX stacks (each one splits the mapping in two
 * more); beyond that a stack gets a canary at its base instead, checked
 * each time its task switches out: an overflow is then detected late, after
 * it may have written below the stack, which corio(7) documents.
 *
 * Memory stays bounded: free stacks that stay unused for a whole
 * TRIM_PERIOD (beyond KEEP_WARM per pool) are given back to the kernel with
 * MADV_DONTNEED, so RSS falls one to two periods after a burst.  The delay
 * is jemalloc's decay idea: a daemon whose load comes in waves reuses its
 * stacks instead of faulting them in again, and a burst's end costs no
 * zapping on the spot.  The low-water mark of each free list says which
 * stacks went unused: the bottom of a LIFO is never popped above it.
 * Stacks are released sorted and coalesced: stacks freed together are
 * usually neighbours, and one madvise over a run of them costs about what
 * one costs for a single stack (guard pages in a run survive
 * MADV_DONTNEED).  While a trim is due, the loop's idle waits end at the
 * trim time (loop->trim_at), so an idle daemon releases too.
 *
 * A SIGSEGV handler on an alternate signal stack recognises a fault in the
 * running task's guard page and reports the overflow before aborting; it
 * is installed once, by the first corio_run, and hands every other fault
 * to the handler it replaced.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "corio-int.h"

#if CORIO_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif
#if CORIO_ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL	102
#endif

#define SLAB_MIN_STACKS		16
#define SLAB_MAX_BYTES		(256ul << 20)
#define KEEP_WARM		256
#define TRIM_PERIOD		CORIO_SEC(1)
#define TRIM_MAX		16384	/* stacks released per trim pass */
#define TRIM_AGAIN		CORIO_MSEC(10)	/* after a capped pass */
#define GUARD_BATCH		256
#define PIDFD_SELF_THREAD	(-10000)
#define MPROTECT_GUARDS_MAX	16384
#define CANARY			0xc0210c0210c0210cull
#define ALTSTACK_SIZE		(64 * 1024)

struct slab {
	struct slab *next;
	char *addr;
	size_t len;
};

struct corio_stack_pool {
	struct corio_stack_pool *next;
	size_t size;		/* usable bytes of each stack */
	size_t stride;		/* size plus the guard page */
	uintptr_t *free;	/* LIFO of free stacks: base | canary bit */
	size_t nr_free, cap_free;
	size_t nr_released;	/* free[0..nr_released) were given back */
	size_t low;		/* least nr_free since the last trim pass */
	uintptr_t *scratch;	/* TRIM_MAX entries, for sorting */
	struct iovec *iov;	/* GUARD_BATCH entries */
	char *carve, *carve_end;	/* unused part of the newest slab */
	char *guarded_end;	/* stacks below this have their guard */
	size_t slab_stacks;	/* stacks in the next slab */
	struct slab *slabs;
	bool vg;		/* under valgrind: stacks are registered */
};

enum guard_kind { GUARD_UNPROBED, GUARD_BATCHED, GUARD_MADVISE,
		  GUARD_MPROTECT };

static size_t page_size;
static enum guard_kind guard_kind;
static unsigned long mprotect_guards;	/* guarded by guard_lock */
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static bool under_valgrind(void)
{
#if CORIO_HAVE_VALGRIND
	return RUNNING_ON_VALGRIND != 0;
#else
	return false;
#endif
}

static void probe(void)
{
	char *p;

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	guard_kind = GUARD_MPROTECT;
	p = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return;
	if (madvise(p, page_size, MADV_GUARD_INSTALL) == 0) {
		struct iovec iov = { p + page_size, page_size };

		guard_kind = GUARD_MADVISE;
		/* valgrind 3.19 does not know process_madvise and says so. */
		if (!under_valgrind() &&
		    syscall(SYS_process_madvise, PIDFD_SELF_THREAD, &iov, 1,
			    MADV_GUARD_INSTALL, 0) == (long)page_size)
			guard_kind = GUARD_BATCHED;
	}
	munmap(p, 2 * page_size);
}

size_t corio__stack_round(size_t size)
{
	pthread_once(&probe_once, probe);
	return (size + page_size - 1) & ~(page_size - 1);
}

static struct corio_task *task_at_top(char *base, size_t size)
{
	return (struct corio_task *)(base + size - CORIO_TASK_ROOM);
}

/*
 * Installs the guards of the slab's next stacks, from the guard page at
 * from, up to GUARD_BATCH of them, in one process_madvise.  A failure leaves
 * guarded_end where it was: guard() then does one stack alone.
 */
static void guard_ahead(struct corio_stack_pool *pool, char *from)
{
	size_t n = (size_t)(pool->carve_end - from) / pool->stride, i;
	char *at = from;
	long done;

	if (!pool->iov) {
		pool->iov = malloc(GUARD_BATCH * sizeof(*pool->iov));
		if (!pool->iov)
			return;
	}
	if (n > GUARD_BATCH)
		n = GUARD_BATCH;
	for (i = 0; i < n; i++, at += pool->stride) {
		pool->iov[i].iov_base = at;
		pool->iov[i].iov_len = page_size;
	}
	done = syscall(SYS_process_madvise, PIDFD_SELF_THREAD, pool->iov, n,
		       MADV_GUARD_INSTALL, 0);
	if (done > 0)
		pool->guarded_end = from + (size_t)done / page_size *
					   pool->stride;
}

/* Guards the page below base; false means: use a canary instead. */
static bool guard(struct corio_stack_pool *pool, char *base)
{
	bool ok = false;

	if (guard_kind == GUARD_BATCHED) {
		if (base >= pool->guarded_end)
			guard_ahead(pool, base - page_size);
		if (base < pool->guarded_end)
			return true;
	}
	if (guard_kind != GUARD_MPROTECT)
		return madvise(base - page_size, page_size,
			       MADV_GUARD_INSTALL) == 0;
	pthread_mutex_lock(&guard_lock);
	if (mprotect_guards < MPROTECT_GUARDS_MAX &&
	    mprotect(base - page_size, page_size, PROT_NONE) == 0) {
		mprotect_guards++;
		ok = true;
	}
	pthread_mutex_unlock(&guard_lock);
	return ok;
}

static CORIO_COLD int slab_new(struct corio_stack_pool *pool)
{
	struct slab *slab = malloc(sizeof(*slab));
	size_t len;

	if (!slab)
		return -ENOMEM;
	len = pool->slab_stacks * pool->stride;
	slab->addr = mmap(NULL, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (slab->addr == MAP_FAILED) {
		free(slab);
		return -ENOMEM;
	}
	/* A waiter's user_data keeps 47 bits of its address (corio-int.h). */
	if (corio_unlikely((uintptr_t)slab->addr + len > CORIO_UD_ADDR_LIMIT))
		corio__bug("a stack slab mapped above 2^47");
	slab->len = len;
	slab->next = pool->slabs;
	pool->slabs = slab;
	pool->carve = pool->guarded_end = slab->addr;
	pool->carve_end = slab->addr + len;
	/* Slabs grow geometrically: few mappings, little waste. */
	if (pool->slab_stacks * 2 * pool->stride <= SLAB_MAX_BYTES)
		pool->slab_stacks *= 2;
	return 0;
}

/* The pool of stacks of size, made on first use. */
static CORIO_COLD struct corio_stack_pool *pool_find_slow(
	struct corio_loop *loop, size_t size)
{
	struct corio_stack_pool *pool;

	for (pool = loop->pools; pool; pool = pool->next)
		if (pool->size == size)
			return pool;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	pool->size = size;
	pool->stride = size + page_size;
	pool->slab_stacks = SLAB_MIN_STACKS;
	pool->vg = under_valgrind();
	pool->next = loop->pools;
	loop->pools = pool;
	return pool;
}

/* The pool of stacks of size: nearly always the first, the default's. */
static inline struct corio_stack_pool *pool_find(struct corio_loop *loop,
						 size_t size)
{
	struct corio_stack_pool *pool = loop->pools;

	return pool && pool->size == size ? pool : pool_find_slow(loop, size);
}

static CORIO_COLD char *stack_carve(struct corio_stack_pool *pool,
				    bool *canary)
{
	char *base;

	if (pool->carve == pool->carve_end && slab_new(pool) < 0)
		return NULL;
	base = pool->carve + page_size;
	pool->carve += pool->stride;
	*canary = !guard(pool, base);
	return base;
}

/* A free or new stack of pool, ASan-clean; NULL when there is none. */
static char *stack_take(struct corio_stack_pool *pool, bool *canary)
{
	char *base;

	*canary = false;
	if (pool->nr_free) {
		uintptr_t e = pool->free[--pool->nr_free];

		base = (char *)(e & ~(uintptr_t)1);
		*canary = e & 1;
		if (pool->nr_free < pool->low) {
			pool->low = pool->nr_free;
			if (pool->nr_released > pool->nr_free)
				pool->nr_released = pool->nr_free;
		}
	} else {
		base = stack_carve(pool, canary);
		if (!base)
			return NULL;
	}
#if CORIO_ASAN
	/* A task's frames end with a jump, never a return: their redzones
	 * stay poisoned, in a reused stack or a slab mapped where an old
	 * one was. */
	ASAN_UNPOISON_MEMORY_REGION(base, pool->size);
#endif
	return base;
}

static void stack_attach(struct corio_task *t, struct corio_stack_pool *pool,
			 char *base, bool canary)
{
	t->stack.base = base;
	t->stack.size = pool->size;
	t->stack.pool = pool;
	t->stack.canary = canary;
	if (canary)
		*(uint64_t *)base = CANARY;
#if CORIO_HAVE_VALGRIND
	/* A client request costs a dozen instructions even natively. */
	if (pool->vg)
		t->stack.vg_id = VALGRIND_STACK_REGISTER(base,
							 base + pool->size);
#endif
}

struct corio_task *corio__stack_get(struct corio_loop *loop, size_t size)
{
	struct corio_stack_pool *pool = pool_find(loop, size);
	struct corio_task *t;
	bool canary;
	char *base;

	if (!pool || !(base = stack_take(pool, &canary))) {
		errno = ENOMEM;
		return NULL;
	}
	/* The record's other fields are corio__task_spawn's to write. */
	t = task_at_top(base, size);
	t->stack.heap = false;
	t->stack.vg_id = 0;
	stack_attach(t, pool, base, canary);
	return t;
}

/*
 * A task whose record is on the heap, for a group member: its stack goes
 * back to the pool as soon as it returns (corio__stack_release), while the
 * record, which is the member's handle, waits for the group.  The room at
 * the stack's top stays unused, so both kinds of stack are alike.
 */
struct corio_task *corio__stack_get_heap(struct corio_loop *loop,
					 size_t size)
{
	struct corio_stack_pool *pool = pool_find(loop, size);
	struct corio_task *t = calloc(1, sizeof(*t));
	bool canary;
	char *base;

	if (!t || !pool || !(base = stack_take(pool, &canary))) {
		free(t);
		errno = ENOMEM;
		return NULL;
	}
	stack_attach(t, pool, base, canary);
	t->stack.heap = true;
	return t;
}

static int cmp_entry(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Gives back the pages of free[nr_released..nr_released + n): stacks at the
 * bottom of the LIFO, unused since the last trim pass.  One madvise per run
 * of neighbours.
 */
static CORIO_COLD void release(struct corio_stack_pool *pool, size_t n)
{
	uintptr_t *e = pool->scratch;
	size_t i;

	if (!e) {
		e = pool->scratch = malloc(TRIM_MAX * sizeof(*e));
		if (!e)
			return;
	}
	for (i = 0; i < n; i++)
		e[i] = pool->free[pool->nr_released + i] & ~(uintptr_t)1;
	pool->nr_released += n;
	qsort(e, n, sizeof(*e), cmp_entry);
	for (i = 0; i < n;) {
		size_t j = i + 1;

		while (j < n && e[j] == e[j - 1] + pool->stride)
			j++;
		madvise((char *)e[i], (j - i - 1) * pool->stride + pool->size,
			MADV_DONTNEED);
		i = j;
	}
}

/* Free stacks still holding pages beyond the warm ones. */
static size_t surplus(const struct corio_stack_pool *pool)
{
	size_t held = pool->nr_free - pool->nr_released;

	return held > KEEP_WARM ? held - KEEP_WARM : 0;
}

/*
 * A trim pass, when loop->trim_at has come: in each pool, releases the
 * stacks below the low-water mark (unused for a whole period), keeping
 * KEEP_WARM, at most TRIM_MAX per pass so that one pass stays short.
 * Schedules the next pass while any pool still holds a surplus.
 */
void corio__stack_trim(struct corio_loop *loop)
{
	struct corio_stack_pool *pool;
	uint64_t next = 0;

	for (pool = loop->pools; pool; pool = pool->next) {
		size_t n = pool->low > pool->nr_released + KEEP_WARM ?
			   pool->low - pool->nr_released - KEEP_WARM : 0;

		if (n > TRIM_MAX)
			n = TRIM_MAX;
		if (n)
			release(pool, n);
		pool->low = pool->nr_free;
		if (surplus(pool)) {
			uint64_t at = loop->now_ns +
				      (n == TRIM_MAX ? TRIM_AGAIN : TRIM_PERIOD);

			if (!next || at < next)
				next = at;
		}
	}
	loop->trim_at = next;
}

/* Gives t's stack back to its pool; t's record stays if on the heap. */
void corio__stack_release(struct corio_task *t)
{
	struct corio_stack_pool *pool = t->stack.pool;
	struct corio_loop *loop = t->loop;
	char *base = t->stack.base;
	bool canary = t->stack.canary;

	if (!base)
		return;
	t->stack.base = NULL;
#if CORIO_HAVE_VALGRIND
	if (pool->vg)
		VALGRIND_STACK_DEREGISTER(t->stack.vg_id);
#endif
	if (pool->nr_free == pool->cap_free) {
		size_t cap = pool->cap_free ? pool->cap_free * 2 : 64;
		uintptr_t *free_ = realloc(pool->free, cap * sizeof(*free_));

		if (!free_)
			return;	/* the stack stays mapped, unused, until exit */
		pool->free = free_;
		pool->cap_free = cap;
	}
	pool->free[pool->nr_free++] = (uintptr_t)base | canary;
	if (corio_unlikely(!loop->trim_at) && surplus(pool)) {
		/* The period starts now: what is free now and stays unused
		 * until the pass goes. */
		pool->low = pool->nr_free;
		loop->trim_at = loop->now_ns + TRIM_PERIOD;
	}
}

void corio__stack_put(struct corio_task *t)
{
	bool heap = t->stack.heap;

	corio__stack_release(t);
	if (heap)
		free(t);
}

/* Stacks mapped by this loop's pools: in use, free, or given back. */
size_t corio__stack_mapped(const struct corio_loop *loop)
{
	const struct corio_stack_pool *pool;
	const struct slab *slab;
	size_t n = 0;

	for (pool = loop->pools; pool; pool = pool->next) {
		for (slab = pool->slabs; slab; slab = slab->next)
			n += slab->len / pool->stride;
		n -= (size_t)(pool->carve_end - pool->carve) / pool->stride;
	}
	return n;
}

void corio__stack_pools_free(struct corio_loop *loop)
{
	struct corio_stack_pool *pool, *next_pool;
	struct slab *slab, *next_slab;

	for (pool = loop->pools; pool; pool = next_pool) {
		next_pool = pool->next;
		for (slab = pool->slabs; slab; slab = next_slab) {
			next_slab = slab->next;
			munmap(slab->addr, slab->len);
			free(slab);
		}
		free(pool->free);
		free(pool->scratch);
		free(pool->iov);
		free(pool);
	}
	loop->pools = NULL;
}

static CORIO_COLD _Noreturn void overflowed(const struct corio_task *t)
{
	char name[128], line[256];
	int n;

	n = snprintf(line, sizeof(line),
		     "corio: %s overflowed its %zu KiB stack\n",
		     corio__task_name(t, name, sizeof(name)),
		     t->stack.size / 1024);
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		abort();
	abort();
}

void corio__stack_check(const struct corio_task *t)
{
	if (*(const uint64_t *)t->stack.base != CANARY)
		overflowed(t);
}

static struct sigaction old_segv;

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	struct corio_task *t = corio__current();
	char *addr = si->si_addr;

	if (t && addr < t->stack.base && addr >= t->stack.base - page_size)
		overflowed(t);
	/* Not ours: to whoever handled SIGSEGV before corio. */
	if (old_segv.sa_flags & SA_SIGINFO) {
		old_segv.sa_sigaction(sig, si, uc);
	} else if (old_segv.sa_handler != SIG_DFL &&
		   old_segv.sa_handler != SIG_IGN) {
		old_segv.sa_handler(sig);
	} else {
		/* The default action, when the instruction faults again. */
		sigaction(sig, &old_segv, NULL);
	}
}

/* The thread's alternate signal stack if corio made it, to free at exit. */
static CORIO_TLS void *altstack;

int corio__stack_overflow_init(void)
{
	struct sigaction sa;
	stack_t ss;

	pthread_once(&probe_once, probe);
	if (CORIO_ASAN)
		return 0;	/* ASan reports stack overflows itself */
	if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
		ss.ss_sp = malloc(ALTSTACK_SIZE);
		ss.ss_size = ALTSTACK_SIZE;
		ss.ss_flags = 0;
		if (ss.ss_sp && sigaltstack(&ss, NULL) == 0)
			altstack = ss.ss_sp;
		else
			free(ss.ss_sp);
	}
	pthread_mutex_lock(&guard_lock);
	/* Again if someone replaced it since (a fork child may have). */
	if (sigaction(SIGSEGV, NULL, &sa) == 0 &&
	    sa.sa_sigaction != segv_handler) {
		old_segv = sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = segv_handler;
		sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGSEGV, &sa, NULL);
	}
	pthread_mutex_unlock(&guard_lock);
	return 0;
}

void corio__stack_overflow_fini(void)
{
	stack_t ss = { .ss_flags = SS_DISABLE };

	if (!altstack)
		return;
	sigaltstack(&ss, NULL);
	free(altstack);
	altstack = NULL;
}
