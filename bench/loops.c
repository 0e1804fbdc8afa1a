/*
 * loops - calls and posts between the loops of corio_run_loops, each
 * beside its baseline in one run (issue 13).
 *
 *	loops [-c CASE] [-s SIDE] [-r REPS] [-n CALLS] [-m POSTS]
 *	      [-k BATCH] [-v]
 *		(default: every case and side, 5 reps, 20000 calls,
 *		2000000 posts, a yield every 1000 posts)
 *
 * Cases:
 *
 *	call	a corio_call round trip from loop 0 to loop 1 of
 *		corio_run_loops(2, ...) (each loop pinned to its CPU, the
 *		default) with a trivial fn, vs two pthreads pinned the same
 *		way handing a request and its reply over with a mutex and
 *		two condition variables (condvar), and vs the same two
 *		threads playing ping-pong on two blocking eventfds (eventfd:
 *		each blocks in read(2) on its own and writes the other's).
 *		CALLS round trips per timed run.
 *	post	POSTS posts from a task on loop 0 to loop 1, the task
 *		yielding every BATCH posts so that its turn ends and the
 *		wake goes out; each post's fn increments a counter on loop 1.
 *		Timed from the first post until loop 1 has run the last.
 *		Beside it (thread) the same POSTS posts from a plain pthread
 *		that runs no loop (pinned to loop 0's CPU, loop 0 idle
 *		meanwhile), without yields.
 *
 * The three (or two) sides of a case run alternately, REPS times each,
 * untimed warm-up first; every corio side runs in a cluster of its own.
 * One line per case on stdout, the median of the reps and their best
 * (min_, or max_ for a rate) and worst:
 *
 *	loops case=call corio_ns=... condvar_ns=... eventfd_ns=...
 *	      corio/condvar=... corio/eventfd=... min_corio_ns=... ...
 *	loops case=post corio_mps=... thread_mps=... ...
 *
 * (one line each; mps = million posts per second; others = CPUs that
 * other processes took from the two CPUs during the case, from /proc/stat
 * less this process's own time).  -s runs one side alone (corio, condvar,
 * eventfd or thread), e.g. under perf, and prints "-" for the others.  -v
 * prints every rep on stderr, with loop 1's corio_stats for the corio
 * sides (turns and io_uring_enter calls per message).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <corio.h>

#define MAX_REPS	31

static uint64_t opt_calls = 20000;
static uint64_t opt_posts = 2000000;
static uint64_t opt_batch = 1000;
static int opt_verbose;
static const char *opt_side;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "loops: %s: %s\n", what,
		strerror(err < 0 ? -err : err));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct spread {
	double med, min, max;
};

static struct spread spread(double *v, int n)
{
	struct spread s;

	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	s.min = v[0];
	s.max = v[n - 1];
	return s;
}

/*
 * The CPUs of loops 0 and 1, as corio_run_loops pins them: the first two
 * the process may run on, found once at start (-1: none).  The baselines'
 * threads take the same two; the main thread's own affinity is put back
 * after each, since corio_run_loops pins by it.
 */
static int cpu0 = -1, cpu1 = -1;
static cpu_set_t all_cpus;

static void find_cpus(void)
{
	int cpu, seen = -1;

	if (sched_getaffinity(0, sizeof(all_cpus), &all_cpus) < 0)
		fail("sched_getaffinity", errno);
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &all_cpus))
			continue;
		if (++seen == 0)
			cpu0 = cpu;
		else if (seen == 1)
			cpu1 = cpu;
	}
}

static void unpin_self(void)
{
	pthread_setaffinity_np(pthread_self(), sizeof(all_cpus), &all_cpus);
}

static void pin_self(int cpu)
{
	cpu_set_t one;

	if (cpu < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
}

/* The trivial fn of every side: one increment of what it is given. */
static int bump(void *arg)
{
	(*(uint64_t *)arg)++;
	return 0;
}

static int get_stats(void *arg)
{
	return corio_stats(arg);
}

/* Loop 1's stats, printed with -v: what a message cost it. */
static void loop1_report(const char *side, uint64_t msgs,
			 const struct corio_stats *before)
{
	struct corio_stats after;
	int ret;

	if (!opt_verbose)
		return;
	ret = corio_call(1, get_stats, &after);
	if (ret < 0)
		fail("corio_call(stats)", ret);
	fprintf(stderr, "loops:   %s loop 1: %.3f turns, %.3f enters, %.3f "
		"cqes per message\n", side,
		(double)(after.turns - before->turns) / (double)msgs,
		(double)(after.enters - before->enters) / (double)msgs,
		(double)(after.cqes - before->cqes) / (double)msgs);
}

/* --- call ---------------------------------------------------------------- */

static double result;

static int call_main(void *arg)
{
	uint64_t i, n = opt_calls, counter = 0, start;
	struct corio_stats st;
	int ret;

	(void)arg;
	if (corio_loop_count() != 2)
		fail("corio_loop_count", EINVAL);
	for (i = 0; i < n / 10; i++) {
		ret = corio_call(1, bump, &counter);
		if (ret < 0)
			fail("corio_call", ret);
	}
	ret = corio_call(1, get_stats, &st);
	if (ret < 0)
		fail("corio_call(stats)", ret);
	counter = 0;
	start = now_ns();
	for (i = 0; i < n; i++) {
		ret = corio_call(1, bump, &counter);
		if (ret < 0)
			fail("corio_call", ret);
	}
	result = (double)(now_ns() - start) / (double)n;
	if (counter != n)
		fail("call count", EPROTO);
	loop1_report("call", n, &st);
	return 0;
}

static double call_corio(void)
{
	int ret = corio_run_loops(2, call_main, NULL);

	if (ret < 0)
		fail("corio_run_loops", ret);
	return result;
}

/* Condvar hand-off: A sets the request and signals, B runs fn, replies. */
struct handoff {
	pthread_mutex_t lock;
	pthread_cond_t req_cond, rep_cond;
	bool req, rep, quit;
	uint64_t counter;
};

static void *condvar_server(void *arg)
{
	struct handoff *h = arg;

	pin_self(cpu1);
	pthread_mutex_lock(&h->lock);
	for (;;) {
		while (!h->req && !h->quit)
			pthread_cond_wait(&h->req_cond, &h->lock);
		if (h->quit)
			break;
		h->req = false;
		bump(&h->counter);
		h->rep = true;
		pthread_cond_signal(&h->rep_cond);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

static void condvar_round(struct handoff *h)
{
	pthread_mutex_lock(&h->lock);
	h->req = true;
	pthread_cond_signal(&h->req_cond);
	while (!h->rep)
		pthread_cond_wait(&h->rep_cond, &h->lock);
	h->rep = false;
	pthread_mutex_unlock(&h->lock);
}

static double call_condvar(void)
{
	struct handoff h;
	pthread_t t;
	uint64_t i, n = opt_calls, start;
	double ns;
	int ret;

	memset(&h, 0, sizeof(h));
	pthread_mutex_init(&h.lock, NULL);
	pthread_cond_init(&h.req_cond, NULL);
	pthread_cond_init(&h.rep_cond, NULL);
	pin_self(cpu0);
	ret = pthread_create(&t, NULL, condvar_server, &h);
	if (ret)
		fail("pthread_create", ret);
	for (i = 0; i < n / 10; i++)
		condvar_round(&h);
	h.counter = 0;	/* B only touches it under the lock, between rounds */
	start = now_ns();
	for (i = 0; i < n; i++)
		condvar_round(&h);
	ns = (double)(now_ns() - start) / (double)n;
	pthread_mutex_lock(&h.lock);
	if (h.counter != n)
		fail("condvar count", EPROTO);
	h.quit = true;
	pthread_cond_signal(&h.req_cond);
	pthread_mutex_unlock(&h.lock);
	pthread_join(t, NULL);
	unpin_self();
	pthread_cond_destroy(&h.rep_cond);
	pthread_cond_destroy(&h.req_cond);
	pthread_mutex_destroy(&h.lock);
	return ns;
}

/* Eventfd ping-pong: each side blocks in read(2) on its own eventfd. */
struct pingpong {
	int to_b, to_a;		/* blocking eventfds */
	uint64_t counter;
};

static void efd_write(int fd, uint64_t v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		fail("eventfd write", errno);
}

static uint64_t efd_read(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		fail("eventfd read", errno);
	return v;
}

static void *eventfd_server(void *arg)
{
	struct pingpong *p = arg;

	pin_self(cpu1);
	/* A value of 2 is the last request: quit after replying. */
	for (;;) {
		uint64_t v = efd_read(p->to_b);

		if (v == 1)
			bump(&p->counter);
		efd_write(p->to_a, 1);
		if (v != 1)
			return NULL;
	}
}

static double call_eventfd(void)
{
	struct pingpong p;
	pthread_t t;
	uint64_t i, n = opt_calls, start, counter;
	double ns;
	int ret;

	memset(&p, 0, sizeof(p));
	p.to_b = eventfd(0, EFD_CLOEXEC);
	p.to_a = eventfd(0, EFD_CLOEXEC);
	if (p.to_b < 0 || p.to_a < 0)
		fail("eventfd", errno);
	pin_self(cpu0);
	ret = pthread_create(&t, NULL, eventfd_server, &p);
	if (ret)
		fail("pthread_create", ret);
	for (i = 0; i < n / 10; i++) {
		efd_write(p.to_b, 1);
		efd_read(p.to_a);
	}
	/* B's count is ours to read between rounds (the eventfds order it). */
	counter = p.counter;
	start = now_ns();
	for (i = 0; i < n; i++) {
		efd_write(p.to_b, 1);
		efd_read(p.to_a);
	}
	ns = (double)(now_ns() - start) / (double)n;
	if (p.counter - counter != n)
		fail("eventfd count", EPROTO);
	efd_write(p.to_b, 2);
	efd_read(p.to_a);
	pthread_join(t, NULL);
	unpin_self();
	close(p.to_b);
	close(p.to_a);
	return ns;
}

/* --- post ---------------------------------------------------------------- */

/*
 * Loop 1's side: the counter, the time the last post ran and an event that
 * says so, all touched on loop 1 only.
 */
static uint64_t post_count, post_goal, post_end;
static corio_event *post_done;

static int post_fn(void *arg)
{
	(void)arg;
	if (++post_count == post_goal) {
		post_end = now_ns();
		corio_event_set(post_done);
	}
	return 0;
}

static int post_setup(void *arg)
{
	uint64_t goal = *(uint64_t *)arg;
	int ret = 0;

	if (!post_done)
		ret = corio_event_new(&post_done);
	if (ret < 0)
		return ret;
	corio_event_clear(post_done);
	post_count = 0;
	post_goal = goal;
	post_end = 0;
	return 0;
}

static int post_wait(void *arg)
{
	(void)arg;
	return corio_event_wait(post_done);
}

static int post_teardown(void *arg)
{
	(void)arg;
	corio_event_free(post_done);
	post_done = NULL;
	return 0;
}

static void post_sync(corio_fn fn, uint64_t goal)
{
	int ret = corio_call(1, fn, &goal);

	if (ret < 0)
		fail("corio_call(post)", ret);
}

/* Posts n from this task, yielding every opt_batch. */
static void post_from_loop(uint64_t n)
{
	uint64_t i;
	int ret;

	for (i = 0; i < n; i++) {
		ret = corio_post(1, post_fn, NULL);
		if (ret < 0)
			fail("corio_post", ret);
		if ((i + 1) % opt_batch == 0)
			corio_yield();
	}
}

static int post_main(void *arg)
{
	uint64_t n = opt_posts, start;
	struct corio_stats st;
	int ret;

	(void)arg;
	post_sync(post_setup, n / 10);
	post_from_loop(n / 10);
	post_sync(post_wait, 0);
	post_sync(post_setup, n);
	ret = corio_call(1, get_stats, &st);
	if (ret < 0)
		fail("corio_call(stats)", ret);
	start = now_ns();
	post_from_loop(n);
	if (opt_verbose)
		fprintf(stderr, "loops:   post: loop 0 posted at %.2f M/s\n",
			(double)n * 1e3 / (double)(now_ns() - start));
	post_sync(post_wait, 0);
	result = (double)n * 1e3 / (double)(post_end - start);
	loop1_report("post", n, &st);
	post_sync(post_teardown, 0);
	return 0;
}

static double post_corio(void)
{
	int ret = corio_run_loops(2, post_main, NULL);

	if (ret < 0)
		fail("corio_run_loops", ret);
	return result;
}

static void *post_thread_fn(void *arg)
{
	uint64_t i, n = *(uint64_t *)arg;
	int ret;

	pin_self(cpu0);
	for (i = 0; i < n; i++) {
		ret = corio_post(1, post_fn, NULL);
		if (ret < 0)
			fail("corio_post from a thread", ret);
	}
	return NULL;
}

static uint64_t thread_start;

static void post_from_thread(uint64_t n)
{
	pthread_t t;
	int ret;

	thread_start = now_ns();
	ret = pthread_create(&t, NULL, post_thread_fn, &n);
	if (ret)
		fail("pthread_create", ret);
	post_sync(post_wait, 0);
	/* It has pushed its last post: this join does not wait long. */
	pthread_join(t, NULL);
}

static int thread_main(void *arg)
{
	uint64_t n = opt_posts;
	struct corio_stats st;
	int ret;

	(void)arg;
	post_sync(post_setup, n / 10);
	post_from_thread(n / 10);
	post_sync(post_setup, n);
	ret = corio_call(1, get_stats, &st);
	if (ret < 0)
		fail("corio_call(stats)", ret);
	post_from_thread(n);
	result = (double)n * 1e3 / (double)(post_end - thread_start);
	loop1_report("thread", n, &st);
	post_sync(post_teardown, 0);
	return 0;
}

static double post_thread(void)
{
	int ret = corio_run_loops(2, thread_main, NULL);

	if (ret < 0)
		fail("corio_run_loops", ret);
	return result;
}

/* --- the driver ---------------------------------------------------------- */

/*
 * Busy time of CPUs cpu0 and cpu1 (/proc/stat) and this process's own CPU
 * time (/proc/self/stat, every thread), in clock ticks: their difference
 * over a case is what other tenants took from the two CPUs meanwhile.
 */
static void ticks(double *busy, double *self)
{
	char line[512], name[16];
	unsigned long long u, n, sy, id, io, irq, sirq, st;
	unsigned long ut, stime;
	FILE *f = fopen("/proc/stat", "r");
	int cpu;

	*busy = *self = 0;
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "%15s %llu %llu %llu %llu %llu %llu "
				   "%llu %llu", name, &u, &n, &sy, &id, &io,
				   &irq, &sirq, &st) != 9 ||
			    sscanf(name, "cpu%d", &cpu) != 1)
				continue;
			if (cpu == cpu0 || cpu == cpu1)
				*busy += (double)(u + n + sy + irq + sirq + st);
		}
		fclose(f);
	}
	f = fopen("/proc/self/stat", "r");
	if (f) {
		/* After the ")" of comm: state is field 3, utime 14. */
		if (fgets(line, sizeof(line), f)) {
			char *p = strrchr(line, ')');

			if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u "
					"%*u %*u %*u %*u %lu %lu", &ut,
					&stime) == 2)
				*self = (double)ut + (double)stime;
		}
		fclose(f);
	}
}

struct side {
	const char *name;
	double (*run)(void);
};

/* v with `decimals` decimals, "-" for a side not run; one of 4 buffers. */
static const char *fmt(double v, int decimals)
{
	static char buf[4][32];
	static int next;
	char *b = buf[next++ % 4];

	if (v == 0)
		return "-";
	snprintf(b, sizeof(buf[0]), "%.*f", decimals, v);
	return b;
}

static void run_case(const char *name, const struct side *sides, int nsides,
		     int reps, bool rate, const char *unit)
{
	double v[3][MAX_REPS];
	struct spread s[3];
	int r, i, dec = rate ? 2 : 0;
	double busy0, self0, busy1, self1, secs, others;
	uint64_t t0 = now_ns(), t1;

	ticks(&busy0, &self0);
	for (r = 0; r < reps; r++) {
		for (i = 0; i < nsides; i++) {
			/* Rotate who goes first, so no side always follows
			 * the same one. */
			int k = (i + r) % nsides;

			if (opt_side && strcmp(opt_side, sides[k].name)) {
				v[k][r] = 0;
				continue;
			}
			v[k][r] = sides[k].run();
			if (opt_verbose)
				fprintf(stderr, "loops: %s rep %d %s %.2f %s\n",
					name, r + 1, sides[k].name, v[k][r],
					unit);
		}
	}
	ticks(&busy1, &self1);
	t1 = now_ns();
	for (i = 0; i < nsides; i++)
		s[i] = spread(v[i], reps);
	printf("loops case=%s", name);
	for (i = 0; i < nsides; i++)
		printf(" %s_%s=%s", sides[i].name, unit,
		       fmt(s[i].med, dec));
	for (i = 1; i < nsides; i++)
		printf(" %s/%s=%s", sides[0].name, sides[i].name,
		       s[0].med && s[i].med ?
		       fmt(s[0].med / s[i].med, 3) : "-");
	for (i = 0; i < nsides; i++) {
		printf(" %s_%s_%s=%s", rate ? "max" : "min", sides[i].name,
		       unit, fmt(rate ? s[i].max : s[i].min, dec));
		printf(" %s_%s_%s=%s", rate ? "min" : "max", sides[i].name,
		       unit, fmt(rate ? s[i].min : s[i].max, dec));
	}
	secs = (double)(t1 - t0) / 1e9;
	others = (busy1 - busy0 - (self1 - self0)) /
		 (double)sysconf(_SC_CLK_TCK) / secs;
	printf(" reps=%d secs=%.1f others=%.2f\n", reps, secs, others);
	fflush(stdout);
}

static const struct side call_sides[] = {
	{ "corio", call_corio },
	{ "condvar", call_condvar },
	{ "eventfd", call_eventfd },
};

static const struct side post_sides[] = {
	{ "corio", post_corio },
	{ "thread", post_thread },
};

static uint64_t number(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || !v) {
		fprintf(stderr, "loops: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *only = NULL;
	int reps = 5, opt;

	while ((opt = getopt(argc, argv, "c:s:r:n:m:k:v")) != -1) {
		switch (opt) {
		case 'c':
			only = optarg;
			break;
		case 's':
			opt_side = optarg;
			break;
		case 'r':
			reps = (int)number(optarg, "reps");
			if (reps > MAX_REPS)
				reps = MAX_REPS;
			break;
		case 'n':
			opt_calls = number(optarg, "calls");
			break;
		case 'm':
			opt_posts = number(optarg, "posts");
			break;
		case 'k':
			opt_batch = number(optarg, "batch");
			break;
		case 'v':
			opt_verbose = 1;
			break;
		default:
			fprintf(stderr, "usage: %s [-c call|post] [-s SIDE] "
				"[-r REPS] [-n CALLS] [-m POSTS] [-k BATCH] "
				"[-v]\n", argv[0]);
			return 2;
		}
	}
	find_cpus();
	if (cpu1 < 0)
		fprintf(stderr, "loops: fewer than 2 CPUs: the loops share "
			"one, and so do the baselines' threads\n");
	if (only && strcmp(only, "call") && strcmp(only, "post")) {
		fprintf(stderr, "loops: no case %s (call, post)\n", only);
		return 2;
	}
	if (!only || !strcmp(only, "call"))
		run_case("call", call_sides, 3, reps, false, "ns");
	if (!only || !strcmp(only, "post"))
		run_case("post", post_sides, 2, reps, true, "mps");
	return 0;
}
