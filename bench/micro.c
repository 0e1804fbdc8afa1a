/*
 * micro - corio's per-operation costs, each beside its baseline, in one run.
 *
 *	micro [-r REPS] [-s SCALE] [-c CASE]	(default: 5, 1.0, every case)
 *
 * Each case times a loop of corio calls and a loop of the baseline that does
 * the same work without corio, REPS times each, alternated, and reports the
 * median of each in ns per operation (SCALE multiplies the loop lengths;
 * -c runs one case, e.g. under perf):
 *
 *	spawn_join  corio_spawn + corio_join of a task that returns at once,
 *	            vs make_fcontext + a jump in + a jump out on a warm stack
 *	spawn1000   1,000 corio_spawns, then the 1,000 corio_joins, per task,
 *	            vs 1,000 make_fcontexts on 1,000 stacks, then a jump into
 *	            each and back (the same pages touched, in the same order)
 *	yield       a round trip of corio_yield between two tasks (each yields
 *	            once), vs two fcontexts run in turn by a minimal scheduler
 *	            (four jumps, as in corio: task, scheduler, task, scheduler)
 *	sleep0      corio_sleep(0) in one task, vs one fcontext round trip
 *	nop64       corio_nop in each of 64 tasks, so that a turn submits 64
 *	            SQEs, vs raw liburing: 64 NOPs per io_uring_submit_and_wait
 *	            on a ring set up as corio's loop sets up its own
 *	await64     corio_sqe + io_uring_prep_nop + corio_await in 64 tasks,
 *	            vs the same raw liburing batches of 64
 *	nop1        corio_nop in one task, vs raw liburing, one NOP per
 *	            io_uring_submit_and_wait
 *
 * One line per case on stdout:
 *
 *	micro case=nop64 corio_ns=81.3 base=uring_nop_batch64 base_ns=67.2 ratio=1.21
 *
 * Every NOP's result is checked; a wrong one ends the run with status 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>

#include <corio.h>
#include "fcontext.h"	/* Boost.Context's two C symbols, from src/ */

#define MAX_REPS	15
#define BATCH		64
#define STACK_SIZE	(64 * 1024)

struct bench {
	const char *name;
	const char *base;
	uint64_t n;			/* operations per timed loop */
	double (*corio)(uint64_t n);	/* each returns ns per operation */
	double (*baseline)(uint64_t n);
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "micro: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * corio cases.  Each runs in a loop of its own (corio_run), does a tenth of
 * its work untimed first so that stacks and caches are warm, and leaves ns
 * per operation in result.
 */
static uint64_t arg_n;
static double result;

static int nothing(void *arg)
{
	(void)arg;
	return 0;
}

static int spawn_join_main(void *arg)
{
	uint64_t i, n = arg_n, start = 0;
	int round;

	(void)arg;
	for (round = 0; round < 2; round++) {
		uint64_t m = round ? n : n / 10;

		start = corio_now();
		for (i = 0; i < m; i++) {
			corio_task *t = corio_spawn(nothing, NULL);

			if (!t)
				fail("corio_spawn", errno);
			corio_join(t);
		}
	}
	result = (double)(corio_now() - start) / (double)n;
	return 0;
}

#define FANOUT	1000

static int spawn1000_main(void *arg)
{
	static corio_task *t[FANOUT];
	uint64_t i, rounds = arg_n / FANOUT, start = 0;
	int round, k;

	(void)arg;
	for (round = 0; round < 2; round++) {
		uint64_t m = round ? rounds : rounds / 10 + 1;

		start = corio_now();
		for (i = 0; i < m; i++) {
			for (k = 0; k < FANOUT; k++) {
				t[k] = corio_spawn(nothing, NULL);
				if (!t[k])
					fail("corio_spawn", errno);
			}
			for (k = 0; k < FANOUT; k++)
				corio_join(t[k]);
		}
	}
	result = (double)(corio_now() - start) / (double)(rounds * FANOUT);
	return 0;
}

static int yielder(void *arg)
{
	uint64_t i, n = *(uint64_t *)arg;

	for (i = 0; i < n; i++)
		corio_yield();
	return 0;
}

static int yield_main(void *arg)
{
	uint64_t warm = arg_n / 10, start;
	corio_task *a, *b;

	(void)arg;
	a = corio_spawn(yielder, &warm);
	b = corio_spawn(yielder, &warm);
	corio_join(a);
	corio_join(b);
	start = corio_now();
	a = corio_spawn(yielder, &arg_n);
	b = corio_spawn(yielder, &arg_n);
	if (!a || !b)
		fail("corio_spawn", errno);
	corio_join(a);
	corio_join(b);
	result = (double)(corio_now() - start) / (double)arg_n;
	return 0;
}

static int sleep0_main(void *arg)
{
	uint64_t i, n = arg_n, start;

	(void)arg;
	for (i = 0; i < n / 10; i++)
		corio_sleep(0);
	start = corio_now();
	for (i = 0; i < n; i++)
		corio_sleep(0);
	result = (double)(corio_now() - start) / (double)n;
	return 0;
}

static int nop_worker(void *arg)
{
	uint64_t i, n = *(uint64_t *)arg;

	for (i = 0; i < n; i++) {
		int ret = corio_nop();

		if (ret)
			fail("corio_nop", ret);
	}
	return 0;
}

static int await_worker(void *arg)
{
	uint64_t i, n = *(uint64_t *)arg;

	for (i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = corio_sqe();
		int ret;

		io_uring_prep_nop(sqe);
		ret = corio_await(sqe);
		if (ret)
			fail("corio_await", ret);
	}
	return 0;
}

/* tasks workers each do n / tasks ops of fn; result: ns per op. */
static double run_workers(corio_fn fn, int tasks, uint64_t n)
{
	corio_task *t[BATCH];
	uint64_t each = n / (uint64_t)tasks, warm = each / 10, start;
	int i, round;

	for (round = 0; round < 2; round++) {
		uint64_t *m = round ? &each : &warm;

		start = corio_now();
		for (i = 0; i < tasks; i++) {
			t[i] = corio_spawn(fn, m);
			if (!t[i])
				fail("corio_spawn", errno);
		}
		for (i = 0; i < tasks; i++)
			corio_join(t[i]);
		if (round)
			return (double)(corio_now() - start) /
			       (double)(each * (uint64_t)tasks);
	}
	return 0;
}

static int nop64_main(void *arg)
{
	(void)arg;
	result = run_workers(nop_worker, BATCH, arg_n);
	return 0;
}

static int await64_main(void *arg)
{
	(void)arg;
	result = run_workers(await_worker, BATCH, arg_n);
	return 0;
}

static int nop1_main(void *arg)
{
	(void)arg;
	result = run_workers(nop_worker, 1, arg_n);
	return 0;
}

static double in_corio(corio_fn fn, uint64_t n)
{
	int ret;

	arg_n = n;
	ret = corio_run(fn, NULL);
	if (ret)
		fail("corio_run", ret);
	return result;
}

static double corio_spawn_join(uint64_t n)
{
	return in_corio(spawn_join_main, n);
}

static double corio_spawn1000(uint64_t n)
{
	return in_corio(spawn1000_main, n);
}

static double corio_yield2(uint64_t n)
{
	return in_corio(yield_main, n);
}

static double corio_sleep0(uint64_t n)
{
	return in_corio(sleep0_main, n);
}

static double corio_nop64(uint64_t n)
{
	return in_corio(nop64_main, n);
}

static double corio_await64(uint64_t n)
{
	return in_corio(await64_main, n);
}

static double corio_nop1(uint64_t n)
{
	return in_corio(nop1_main, n);
}

/*
 * Baselines: raw fcontext switches on stacks of the default size, and raw
 * liburing NOPs.
 */
static char *stacks[2];

static void *stack_top(int i)
{
	if (!stacks[i]) {
		stacks[i] = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (stacks[i] == MAP_FAILED)
			fail("mmap", errno);
	}
	return stacks[i] + STACK_SIZE;
}

/* Runs once and jumps back for good, as a task that returns at once. */
static void once_fn(transfer_t from)
{
	jump_fcontext(from.fctx, NULL);
}

/* Jumps back to whoever resumed it, forever, as a task that yields. */
static void pingpong_fn(transfer_t from)
{
	for (;;)
		from = jump_fcontext(from.fctx, NULL);
}

static double fctx_make_jump(uint64_t n)
{
	void *top = stack_top(0);
	uint64_t i, start = 0;
	int round;

	for (round = 0; round < 2; round++) {
		uint64_t m = round ? n : n / 10;

		start = now_ns();
		for (i = 0; i < m; i++) {
			fcontext_t ctx = make_fcontext(top, STACK_SIZE, once_fn);

			jump_fcontext(ctx, NULL);
		}
	}
	return (double)(now_ns() - start) / (double)n;
}

static double fctx_make_jump_1000(uint64_t n)
{
	static char *region;
	static fcontext_t ctx[FANOUT];
	uint64_t i, rounds = n / FANOUT, start = 0;
	int round, k;

	if (!region) {
		region = mmap(NULL, (size_t)FANOUT * STACK_SIZE,
			      PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (region == MAP_FAILED)
			fail("mmap", errno);
	}
	for (round = 0; round < 2; round++) {
		uint64_t m = round ? rounds : rounds / 10 + 1;

		start = now_ns();
		for (i = 0; i < m; i++) {
			for (k = 0; k < FANOUT; k++)
				ctx[k] = make_fcontext(region + (size_t)(k + 1) *
						       STACK_SIZE, STACK_SIZE,
						       once_fn);
			for (k = 0; k < FANOUT; k++)
				jump_fcontext(ctx[k], NULL);
		}
	}
	return (double)(now_ns() - start) / (double)(rounds * FANOUT);
}

static double fctx_two(uint64_t n)
{
	fcontext_t ctx[2];
	uint64_t i, start;
	int k;

	for (k = 0; k < 2; k++)
		ctx[k] = make_fcontext(stack_top(k), STACK_SIZE, pingpong_fn);
	for (i = 0; i < n / 10; i++)
		for (k = 0; k < 2; k++)
			ctx[k] = jump_fcontext(ctx[k], NULL).fctx;
	start = now_ns();
	for (i = 0; i < n; i++)
		for (k = 0; k < 2; k++)
			ctx[k] = jump_fcontext(ctx[k], NULL).fctx;
	return (double)(now_ns() - start) / (double)n;
}

static double fctx_one(uint64_t n)
{
	fcontext_t ctx = make_fcontext(stack_top(0), STACK_SIZE, pingpong_fn);
	uint64_t i, start;

	for (i = 0; i < n / 10; i++)
		ctx = jump_fcontext(ctx, NULL).fctx;
	start = now_ns();
	for (i = 0; i < n; i++)
		ctx = jump_fcontext(ctx, NULL).fctx;
	return (double)(now_ns() - start) / (double)n;
}

/* n NOPs, batch at a time per io_uring_submit_and_wait. */
static double uring_nops(uint64_t n, unsigned int batch)
{
	struct io_uring ring;
	struct io_uring_params p;
	uint64_t done, start = 0;
	int ret, round;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	ret = io_uring_queue_init_params(1024, &ring, &p);
	if (ret < 0)
		fail("io_uring_queue_init", ret);
	io_uring_register_ring_fd(&ring);
	for (round = 0; round < 2; round++) {
		uint64_t m = round ? n : n / 10;

		start = now_ns();
		for (done = 0; done < m;) {
			struct io_uring_cqe *cqe;
			unsigned int i, head, got = 0;

			for (i = 0; i < batch; i++) {
				struct io_uring_sqe *sqe =
					io_uring_get_sqe(&ring);

				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data64(sqe, i);
			}
			ret = io_uring_submit_and_wait(&ring, batch);
			if (ret < 0)
				fail("io_uring_submit_and_wait", ret);
			io_uring_for_each_cqe(&ring, head, cqe) {
				if (cqe->res)
					fail("NOP", cqe->res);
				got++;
			}
			io_uring_cq_advance(&ring, got);
			done += got;
		}
	}
	io_uring_queue_exit(&ring);
	return (double)(now_ns() - start) / (double)n;
}

static double uring_nop64(uint64_t n)
{
	return uring_nops(n, BATCH);
}

static double uring_nop1(uint64_t n)
{
	return uring_nops(n, 1);
}

static const struct bench benches[] = {
	{ "spawn_join", "fcontext_make_jump", 1000000, corio_spawn_join,
	  fctx_make_jump },
	{ "spawn1000", "fcontext_make_jump_1000", 1000000, corio_spawn1000,
	  fctx_make_jump_1000 },
	{ "yield", "fcontext_two_tasks", 2000000, corio_yield2, fctx_two },
	{ "sleep0", "fcontext_round_trip", 2000000, corio_sleep0, fctx_one },
	{ "nop64", "uring_nop_batch64", 2000000, corio_nop64, uring_nop64 },
	{ "await64", "uring_nop_batch64", 2000000, corio_await64,
	  uring_nop64 },
	{ "nop1", "uring_nop_batch1", 300000, corio_nop1, uring_nop1 },
};

int main(int argc, char **argv)
{
	double scale = 1, c_ns[MAX_REPS], b_ns[MAX_REPS];
	const char *only = NULL;
	int reps = 5, opt, r;
	size_t i;

	while ((opt = getopt(argc, argv, "r:s:c:")) != -1) {
		switch (opt) {
		case 'c':
			only = optarg;
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		case 's':
			scale = atof(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (reps < 1 || reps > MAX_REPS || scale <= 0 || optind != argc)
		goto usage;
	for (i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
		const struct bench *b = &benches[i];
		uint64_t n = (uint64_t)((double)b->n * scale);
		double c, base;

		if (only && strcmp(only, b->name))
			continue;
		n = (n + BATCH - 1) / BATCH * BATCH;
		for (r = 0; r < reps; r++) {
			c_ns[r] = b->corio(n);
			b_ns[r] = b->baseline(n);
		}
		c = median(c_ns, reps);
		base = median(b_ns, reps);
		printf("micro case=%s corio_ns=%.1f base=%s base_ns=%.1f "
		       "ratio=%.2f\n", b->name, c, b->base, base, c / base);
		fflush(stdout);
	}
	return 0;
usage:
	fprintf(stderr, "usage: %s [-r REPS (1 to %d)] [-s SCALE] [-c CASE]\n",
		argv[0], MAX_REPS);
	return 2;
}
