/*
 * sleep-uring - the sleep benchmark's baseline in bare liburing: N
 * IORING_OP_TIMEOUTs of 100 to 199 ms, waited for until all have fired.
 *
 *	sleep-uring [-n N]		(default 100000)
 *
 * Timeout i lasts 100 + (i * 7919 % 100) ms, the formula of sleep-corio and
 * sleep-asyncio.py.  The ring is set up as corio's loop sets up its own
 * (SQ 1024, CQ 16384, the same flags, the ring fd registered); the SQ ring
 * goes out each time it fills, reaping what has completed meanwhile, and the
 * rest is waited for with io_uring_submit_and_wait.  Every CQE must be
 * -ETIME (the timeout expired).  Prints one line:
 *
 *	sleep impl=uring n=100000 wall_s=0.352 rss_kib=4012
 *
 * wall_s runs from the first SQE to the last CQE; rss_kib is VmHWM.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>

static struct io_uring ring;
static uint64_t done, failed;

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

static void reap(void)
{
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;

	io_uring_for_each_cqe(&ring, head, cqe) {
		if (cqe->res != -ETIME)
			failed++;
		n++;
	}
	io_uring_cq_advance(&ring, n);
	done += n;
}

int main(int argc, char **argv)
{
	/* The kernel reads a timeout's timespec when the SQE is submitted:
	 * 100 distinct durations, kept for the whole run. */
	static struct __kernel_timespec ts[100];
	struct io_uring_params p;
	uint64_t n = 100000, i, start, wall;
	int c, ret;

	while ((c = getopt(argc, argv, "n:")) != -1) {
		if (c != 'n')
			goto usage;
		n = strtoull(optarg, NULL, 10);
	}
	if (!n || optind != argc)
		goto usage;
	for (i = 0; i < 100; i++)
		ts[i].tv_nsec = (long long)(100 + i) * 1000000;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	ret = io_uring_queue_init_params(1024, &ring, &p);
	if (ret < 0) {
		fprintf(stderr, "sleep-uring: io_uring_queue_init: %s\n",
			strerror(-ret));
		return 1;
	}
	io_uring_register_ring_fd(&ring);

	start = now_ns();
	for (i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		if (!sqe) {
			ret = io_uring_submit_and_get_events(&ring);
			if (ret < 0 && ret != -EINTR && ret != -EBUSY)
				goto enter_failed;
			reap();
			sqe = io_uring_get_sqe(&ring);
			if (!sqe)
				continue;	/* not consumed: try again */
		}
		io_uring_prep_timeout(sqe, &ts[i * 7919 % 100], 0, 0);
		io_uring_sqe_set_data64(sqe, i);
	}
	while (done < n) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EBUSY)
			goto enter_failed;
		reap();
	}
	wall = now_ns() - start;
	if (failed) {
		fprintf(stderr, "sleep-uring: %llu timeouts did not end with "
			"-ETIME\n", (unsigned long long)failed);
		return 1;
	}
	printf("sleep impl=uring n=%llu wall_s=%.3f rss_kib=%ld\n",
	       (unsigned long long)n, (double)wall / 1e9, vmhwm_kib());
	io_uring_queue_exit(&ring);
	return 0;
enter_failed:
	fprintf(stderr, "sleep-uring: io_uring_enter: %s\n", strerror(-ret));
	return 1;
usage:
	fprintf(stderr, "usage: %s [-n N]\n", argv[0]);
	return 2;
}
