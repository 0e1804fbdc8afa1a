/*
 * test-dump.c - corio_dump (every task: id, state, what it waits on and
 * for how long, its function) and CORIO_DEBUG's warning about a task that
 * runs too long without awaiting.
 */
#include <signal.h>
#include <sys/socket.h>

#include "helpers.h"

/* One line of a dump: the one that contains needle, copied to line. */
static int dump_line(const char *dump, const char *needle, char *line,
		     size_t len)
{
	const char *p = strstr(dump, needle), *start, *end;

	if (!p)
		return 0;
	for (start = p; start > dump && start[-1] != '\n'; start--)
		;
	end = strchr(p, '\n');
	if (!end)
		end = p + strlen(p);
	assert_true((size_t)(end - start) < len);
	memcpy(line, start, (size_t)(end - start));
	line[end - start] = '\0';
	return 1;
}

/* The fields of a task's line: "ID STATE WAITED WAITS-ON... TASK". */
struct row {
	unsigned long long id;
	char state[16];
	char waited[16];
	char line[256];
};

/* The row of the task whose function is fn ("(0x...)": no symbol). */
static void row_of(const char *dump, const void *fn, struct row *r)
{
	char needle[64];

	snprintf(needle, sizeof(needle), "(%p)", fn);
	if (!dump_line(dump, needle, r->line, sizeof(r->line))) {
		print_message("no %s in:\n%s", needle, dump);
		fail();
	}
	assert_int_equal(sscanf(r->line, "%llu %15s %15s", &r->id, r->state,
				r->waited), 3);
}

static double waited_ms(const struct row *r)
{
	double ms = -1;
	char unit[8] = "";

	assert_int_equal(sscanf(r->waited, "%lf%7s", &ms, unit), 2);
	assert_string_equal(unit, "ms");
	return ms;
}

/* A dump, as a string (free it). */
static char *dump_string(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(corio_dump(f), 0);
	assert_int_equal(fclose(f), 0);
	assert_non_null(buf);
	return buf;
}

static void test_dump_errors(void **state)
{
	(void)state;
	/* errors: corio_dump.3 EINVAL */
	assert_int_equal(corio_dump(NULL), -EINVAL);
	/* errors: corio_dump.3 EPERM */
	assert_int_equal(corio_dump(stderr), -EPERM);	/* no loop */
}

struct parked {
	int fd;
	int parked;
	int stop;
	corio_mutex *mu;
	corio_task *target;
};

static int sleeper(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	return corio_sleep(CORIO_SEC(3600));
}

/* Cancelled while shielded: stays parked, until it gets the mutex. */
static int shielded_locker(void *arg)
{
	struct parked *p = arg;
	int ret;

	corio_shield(1);
	p->parked = 1;
	ret = corio_mutex_lock(p->mu);
	corio_shield(0);
	if (ret == 0)
		corio_mutex_unlock(p->mu);
	return ret;
}

static int receiver(void *arg)
{
	struct parked *p = arg;
	char buf[8];

	p->parked = 1;
	return (int)corio_recv(p->fd, buf, sizeof(buf), 0);
}

static int joiner(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	return corio_join(p->target);
}

static int join_target(void *arg)
{
	(void)arg;
	return corio_sleep(CORIO_SEC(3600));
}

static int locker(void *arg)
{
	struct parked *p = arg;
	int ret;

	p->parked = 1;
	ret = corio_mutex_lock(p->mu);
	if (ret == 0)
		corio_mutex_unlock(p->mu);
	return ret;
}

static int spinner(void *arg)
{
	struct parked *p = arg;

	p->parked = 1;
	while (!p->stop)
		if (corio_yield() < 0)
			return -1;
	return 0;
}

static int quick(void *arg)
{
	(void)arg;
	return 5;
}

static int never_run(void *arg)
{
	(void)arg;
	return 6;
}

static int dump_main(void *arg)
{
	struct parked ps = { 0 }, pc = { 0 }, pr = { 0 }, pj = { 0 },
		      pm = { 0 }, pp = { 0 };
	corio_task *ts, *tc, *tr, *tj, *tt, *tm, *tp, *tq, *tn, *tf;
	struct row r, target;
	char want[64], *dump;
	corio_mutex *mu, *mu2;
	int sv[2], lines = 0;
	const char *c;

	(void)arg;
	assert_int_equal(corio_dump(NULL), -EINVAL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	assert_int_equal(corio_mutex_new(&mu), 0);
	assert_int_equal(corio_mutex_lock(mu), 0);
	assert_int_equal(corio_mutex_new(&mu2), 0);
	assert_int_equal(corio_mutex_lock(mu2), 0);
	pc.mu = mu2;
	ts = corio_spawn(sleeper, &ps);
	tc = corio_spawn(shielded_locker, &pc);
	pr.fd = sv[0];
	tr = corio_spawn(receiver, &pr);
	tt = corio_spawn(join_target, NULL);
	pj.target = tt;
	tj = corio_spawn(joiner, &pj);
	pm.mu = mu;
	tm = corio_spawn(locker, &pm);
	tp = corio_spawn(spinner, &pp);
	tq = corio_spawn(quick, NULL);
	assert_non_null(ts);
	assert_non_null(tc);
	assert_non_null(tr);
	assert_non_null(tt);
	assert_non_null(tj);
	assert_non_null(tm);
	assert_non_null(tp);
	assert_non_null(tq);
	yield_until(&pm.parked);
	assert_int_equal(corio_cancel(tc), 0);	/* shielded: stays parked */
	assert_int_equal(corio_sleep(CORIO_MSEC(30)), 0);
	/*
	 * Spawned now, not run yet: one whose function libc exports (so it
	 * has a name; fflush(NULL) is harmless), one that is static.
	 */
	tf = corio_spawn((corio_fn)fflush, NULL);
	tn = corio_spawn(never_run, NULL);
	assert_non_null(tf);
	assert_non_null(tn);

	dump = dump_string();
	print_message("%s", dump);
	for (c = dump; *c; c++)
		lines += *c == '\n';
	/* A header, then one line per task: main and 10 others. */
	assert_int_equal(lines, 1 + 11);
	assert_int_equal(strncmp(dump, "ID ", 3), 0);
	assert_non_null(strstr(dump, "STATE"));
	assert_non_null(strstr(dump, "WAITED"));
	assert_non_null(strstr(dump, "WAITS ON"));
	assert_non_null(strstr(dump, "TASK\n"));

	row_of(dump, (const void *)(uintptr_t)dump_main, &r);
	assert_int_equal(r.id, 1);
	assert_string_equal(r.state, "running");
	assert_string_equal(r.waited, "-");
	assert_non_null(strstr(r.line, " main"));

	row_of(dump, (const void *)(uintptr_t)sleeper, &r);
	assert_int_equal(r.id, 2);
	assert_string_equal(r.state, "parked");
	/* Waits are measured on CLOCK_MONOTONIC_COARSE: a tick (up to
	 * 10 ms) of resolution. */
	assert_true(waited_ms(&r) >= 30.0 - 10.0);
	assert_true(waited_ms(&r) < 30.0 + test_slack_ns(CORIO_SEC(5)) / 1e6);
	assert_non_null(strstr(r.line, " sleep "));
	assert_null(strstr(r.line, "cancelled"));

	row_of(dump, (const void *)(uintptr_t)shielded_locker, &r);
	assert_string_equal(r.state, "parked");
	assert_non_null(strstr(r.line, " sync wait "));
	assert_non_null(strstr(r.line, " cancelled"));

	row_of(dump, (const void *)(uintptr_t)receiver, &r);
	assert_string_equal(r.state, "parked");
	assert_true(waited_ms(&r) >= 30.0 - 10.0);
	snprintf(want, sizeof(want), " recv fd %d ", sv[0]);
	assert_non_null(strstr(r.line, want));

	row_of(dump, (const void *)(uintptr_t)join_target, &target);
	assert_string_equal(target.state, "parked");
	row_of(dump, (const void *)(uintptr_t)joiner, &r);
	assert_string_equal(r.state, "parked");
	snprintf(want, sizeof(want), " join task %llu ", target.id);
	assert_non_null(strstr(r.line, want));

	row_of(dump, (const void *)(uintptr_t)locker, &r);
	assert_string_equal(r.state, "parked");
	assert_true(waited_ms(&r) >= 30.0 - 10.0);
	assert_non_null(strstr(r.line, " sync wait "));

	row_of(dump, (const void *)(uintptr_t)spinner, &r);
	assert_string_equal(r.state, "ready");
	assert_string_equal(r.waited, "-");

	row_of(dump, (const void *)(uintptr_t)quick, &r);	/* not joined */
	assert_string_equal(r.state, "done");
	assert_string_equal(r.waited, "-");

	row_of(dump, (const void *)(uintptr_t)never_run, &r);
	assert_string_equal(r.state, "new");
	assert_int_equal(r.id, 11);

	assert_true(dump_line(dump, "(fflush)", r.line, sizeof(r.line)));
	assert_int_equal(sscanf(r.line, "%llu %15s", &r.id, r.state), 2);
	assert_int_equal(r.id, 10);
	assert_string_equal(r.state, "new");
	free(dump);

	/* Everyone goes. */
	pp.stop = 1;
	assert_int_equal(corio_cancel(ts), 0);
	assert_int_equal(corio_join(ts), -ECANCELED);
	assert_int_equal(corio_mutex_unlock(mu2), 0);
	assert_int_equal(corio_join(tc), 0);	/* shielded: got it */
	assert_int_equal(corio_cancel(tr), 0);
	assert_int_equal(corio_join(tr), -ECANCELED);
	assert_int_equal(corio_cancel(tj), 0);	/* and so its target */
	assert_int_equal(corio_join(tj), -ECANCELED);
	assert_int_equal(corio_mutex_unlock(mu), 0);
	assert_int_equal(corio_join(tm), 0);
	assert_int_equal(corio_join(tp), 0);
	assert_int_equal(corio_join(tq), 5);
	assert_int_equal(corio_join(tf), 0);
	assert_int_equal(corio_join(tn), 6);
	assert_int_equal(corio_mutex_free(mu), 0);
	assert_int_equal(corio_mutex_free(mu2), 0);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_dump_lists_every_task(void **state)
{
	(void)state;
	RUN(dump_main, NULL);
}

struct gw {
	corio_group *g;
	int parked;
	int ret;
};

static int gmember(void *arg)
{
	(void)arg;
	return corio_sleep(CORIO_SEC(3600));
}

static int group_waiter(void *arg)
{
	struct gw *w = arg;

	w->parked = 1;
	w->ret = corio_group_wait(w->g);
	return 0;
}

/*
 * A task in corio_group_wait is cancellable (its cancel cancels the group)
 * and the dump should say what it waits on, not "uncancellable wait".
 */
static struct row group_row;

static int dump_group_main(void *arg)
{
	struct gw w = { .ret = 1 };
	corio_task *t;
	char *dump;

	(void)arg;
	assert_int_equal(corio_group_new(&w.g), 0);
	assert_non_null(corio_group_spawn(w.g, gmember, NULL));
	t = corio_spawn(group_waiter, &w);
	assert_non_null(t);
	yield_until(&w.parked);
	dump = dump_string();
	row_of(dump, (const void *)(uintptr_t)group_waiter, &group_row);
	free(dump);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(w.ret, -ECANCELED);
	assert_int_equal(corio_group_free(w.g), 0);
	assert_loop_clean();
	return 0;
}

static void test_dump_group_wait(void **state)
{
	(void)state;
	RUN(dump_group_main, NULL);
	assert_string_equal(group_row.state, "parked");
	if (strstr(group_row.line, "uncancellable"))
		print_message("corio_group_wait shows as: %s\n",
			      group_row.line);
	assert_null(strstr(group_row.line, "uncancellable"));
}

/*
 * CORIO_DEBUG: a task that runs past CORIO_DEBUG_SLOW_MS without awaiting
 * gets one line on stderr naming it.  In a fork child, with stderr on a
 * pipe and the variables set before corio_run reads them.
 */
struct busy {
	uint64_t ms;		/* runs this long */
	uint64_t yield_ms;	/* yielding this often, if not 0 */
};

static int busy(void *arg)
{
	const struct busy *b = arg;
	uint64_t start = mono_ns(), last = start;

	while (mono_ns() - start < CORIO_MSEC(b->ms)) {
		if (b->yield_ms && mono_ns() - last >= CORIO_MSEC(b->yield_ms)) {
			if (corio_yield() < 0)
				return -1;
			last = mono_ns();
		}
	}
	return 0;
}

static int busy_main(void *arg)
{
	corio_task *t = corio_spawn(busy, arg);

	if (!t)
		return -errno;
	return corio_join(t);
}

/* Sets or removes an environment variable. */
static void env_set(const char *name, const char *value)
{
	if (value)
		assert_int_equal(setenv(name, value, 1), 0);
	else
		assert_int_equal(unsetenv(name), 0);
}

/*
 * Runs a busy task with the given environment and returns what corio_run
 * wrote on stderr (a pipe), in out.  In a fork child, so that neither the
 * environment nor stderr of the test changes; under valgrind, which cannot
 * run a loop in a fork child, in this process.
 */
static void debug_child(const char *debug, const char *slow_ms,
			const struct busy *b, char *out, size_t len)
{
	size_t n = 0;
	ssize_t r;
	int pfd[2], saved, ret;
	pid_t pid;

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	if (UNDER_VALGRIND()) {
		saved = dup(STDERR_FILENO);
		assert_true(saved >= 0);
		env_set("CORIO_DEBUG", debug);
		env_set("CORIO_DEBUG_SLOW_MS", slow_ms);
		assert_int_equal(dup2(pfd[1], STDERR_FILENO), STDERR_FILENO);
		ret = corio_run(busy_main, (void *)b);
		fflush(stderr);
		dup2(saved, STDERR_FILENO);
		close(saved);
		env_set("CORIO_DEBUG", NULL);
		env_set("CORIO_DEBUG_SLOW_MS", NULL);
		assert_int_equal(ret, 0);
		pid = 0;
	} else {
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			CHILD_CHECK(dup2(pfd[1], STDERR_FILENO) ==
				    STDERR_FILENO);
			if (debug)
				setenv("CORIO_DEBUG", debug, 1);
			else
				unsetenv("CORIO_DEBUG");
			if (slow_ms)
				setenv("CORIO_DEBUG_SLOW_MS", slow_ms, 1);
			else
				unsetenv("CORIO_DEBUG_SLOW_MS");
			CHILD_CHECK(corio_run(busy_main, (void *)b) == 0);
			_exit(0);
		}
	}
	close(pfd[1]);
	while (n < len - 1 && (r = read(pfd[0], out + n, len - 1 - n)) > 0)
		n += (size_t)r;
	close(pfd[0]);
	out[n] = '\0';
	if (pid > 0)
		assert_int_equal(child_wait(pid), 0);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/*
 * debug_child that expects no report.  Time runs on while the host stops
 * the process (a shared VM's other tenants): one stop as long as the bar
 * is a report, however often the task awaits.  So up to three tries; a
 * detector that reports what it should not fails all three.
 */
static void debug_child_quiet(const char *debug, const char *slow_ms,
			      const struct busy *b, char *out, size_t len)
{
	int i;

	for (i = 0; i < 3; i++) {
		debug_child(debug, slow_ms, b, out, len);
		if (!*out)
			return;
		print_message("a report where none was due (again): %s", out);
	}
}

static void test_debug_slow_task(void **state)
{
	struct busy b = { .ms = 100 };
	char out[1024], want[64], line[256];
	double ms = 0;
	const char *p;

	(void)state;
	debug_child("1", "50", &b, out, sizeof(out));
	print_message("CORIO_DEBUG=1 CORIO_DEBUG_SLOW_MS=50: %s", out);
	/* busy only, not main; an ASan build's main may be slow too. */
	if (!CORIO_ASAN)
		assert_int_equal(count_lines(out), 1);
	snprintf(want, sizeof(want), "corio: task 2 (%p) ran ",
		 (void *)(uintptr_t)busy);
	assert_true(dump_line(out, want, line, sizeof(line)));
	assert_non_null(strstr(line, " ms without awaiting"));
	p = line + strlen(want);
	assert_int_equal(sscanf(p, "%lf", &ms), 1);
	assert_true(ms >= 100.0);

	/* Off: not set, empty, or "0". */
	debug_child(NULL, "50", &b, out, sizeof(out));
	assert_string_equal(out, "");
	debug_child("", "50", &b, out, sizeof(out));
	assert_string_equal(out, "");
	debug_child("0", "50", &b, out, sizeof(out));
	assert_string_equal(out, "");

	/* A task that awaits often is not stalling, however long it runs. */
	b.yield_ms = 5;
	debug_child_quiet("1", "50", &b, out, sizeof(out));
	assert_string_equal(out, "");

	/* The bar defaults to 100 ms (also for an unusable value). */
	b = (struct busy){ .ms = 60 };
	debug_child_quiet("1", NULL, &b, out, sizeof(out));
	assert_string_equal(out, "");
	debug_child("1", "junk", &b, out, sizeof(out));
	assert_string_equal(out, "corio: ignoring CORIO_DEBUG_SLOW_MS=junk "
			    "(want a positive number of milliseconds)\n");
	debug_child("1", "-5", &b, out, sizeof(out));
	assert_non_null(strstr(out, "ignoring CORIO_DEBUG_SLOW_MS=-5"));
	assert_null(strstr(out, "without awaiting"));
	b.ms = 150;
	debug_child("yes", NULL, &b, out, sizeof(out));
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, " without awaiting"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_dump_errors),
		CORIO_TEST(test_dump_lists_every_task),
		CORIO_TEST(test_dump_group_wait),
		CORIO_TEST(test_debug_slow_task),
	};

	return RUN_GROUP(tests);
}
