/*
 * pagefault - the page-fault floor of the sleep benchmark: what it costs to
 * touch N fresh pages of one anonymous mapping.
 *
 *	pagefault [-n N] [-s STRIDE]	(default 100000 pages, 4096 bytes apart)
 *
 * Each of N tasks costs at least one fresh page: corio puts the task
 * struct at the top of the task's stack, and the first switch touches it.
 * This program maps N * STRIDE bytes (MAP_NORESERVE, as corio's stack slabs
 * are) and writes one byte to the top page of each STRIDE, timing the
 * loop.  bench/run.sh passes a stride of one default stack plus its guard
 * page, the layout of corio's slabs, so that page tables are as sparse as
 * theirs.  Prints one line:
 *
 *	pagefault n=100000 stride=69632 secs=0.061 ns_per_page=610.2 rss_kib=401234
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

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

int main(int argc, char **argv)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), stride = page, n = 100000;
	size_t i, top;
	volatile char *p;
	uint64_t start, t;
	int c;

	while ((c = getopt(argc, argv, "n:s:")) != -1) {
		switch (c) {
		case 'n':
			n = strtoull(optarg, NULL, 10);
			break;
		case 's':
			stride = strtoull(optarg, NULL, 10);
			break;
		default:
			goto usage;
		}
	}
	if (!n || stride < page || stride % page || optind != argc)
		goto usage;
	p = mmap(NULL, n * stride, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		perror("pagefault: mmap");
		return 1;
	}
	top = stride - page;
	start = now_ns();
	for (i = 0; i < n; i++)
		p[i * stride + top] = 1;
	t = now_ns() - start;
	printf("pagefault n=%zu stride=%zu secs=%.3f ns_per_page=%.1f "
	       "rss_kib=%ld\n", n, stride, (double)t / 1e9,
	       (double)t / (double)n, vmhwm_kib());
	return 0;
usage:
	fprintf(stderr, "usage: %s [-n N] [-s STRIDE]  (STRIDE: a multiple "
		"of the page size)\n", argv[0]);
	return 2;
}
