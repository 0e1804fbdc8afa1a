/*
 * sleep-corio - the sleep benchmark: N tasks each corio_sleep 100 to 199 ms,
 * and main joins them all.
 *
 *	sleep-corio [-n N]		(default 100000)
 *
 * Task i sleeps 100 + (i * 7919 % 100) ms, the formula of sleep-uring and
 * sleep-asyncio.py.  Each task has the default stack.  Prints one line:
 *
 *	sleep impl=corio n=100000 wall_s=0.412 rss_kib=412345 enters=109
 *
 * wall_s runs from the first spawn to the last join; rss_kib is VmHWM;
 * enters is corio_stats' count of io_uring_enter calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <corio.h>

struct run {
	uint64_t n;
	corio_task **tasks;
};

static long vmhwm_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int sleeper(void *arg)
{
	uint64_t i = (uint64_t)(uintptr_t)arg;

	return corio_sleep(CORIO_MSEC(100 + i * 7919 % 100));
}

static int run(void *arg)
{
	struct run *r = arg;
	struct corio_stats st;
	uint64_t i, start, wall, failed = 0;

	start = corio_now();
	for (i = 0; i < r->n; i++) {
		r->tasks[i] = corio_spawn(sleeper, (void *)(uintptr_t)i);
		if (!r->tasks[i]) {
			perror("sleep-corio: corio_spawn");
			r->n = i;	/* join what was spawned */
			failed++;
			break;
		}
	}
	for (i = 0; i < r->n; i++)
		if (corio_join(r->tasks[i]) != 0)
			failed++;
	wall = corio_now() - start;
	corio_stats(&st);
	if (failed) {
		fprintf(stderr, "sleep-corio: %llu sleeps failed\n",
			(unsigned long long)failed);
		return 1;
	}
	printf("sleep impl=corio n=%llu wall_s=%.3f rss_kib=%ld enters=%llu\n",
	       (unsigned long long)r->n, (double)wall / 1e9, vmhwm_kib(),
	       (unsigned long long)st.enters);
	return 0;
}

int main(int argc, char **argv)
{
	struct run r = { .n = 100000 };
	int c, ret;

	while ((c = getopt(argc, argv, "n:")) != -1) {
		if (c != 'n')
			goto usage;
		r.n = strtoull(optarg, NULL, 10);
	}
	if (!r.n || optind != argc)
		goto usage;
	r.tasks = malloc(r.n * sizeof(*r.tasks));
	if (!r.tasks)
		return 1;
	ret = corio_run(run, &r);
	free(r.tasks);
	if (ret < 0) {
		fprintf(stderr, "sleep-corio: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
usage:
	fprintf(stderr, "usage: %s [-n N]\n", argv[0]);
	return 2;
}
