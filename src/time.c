/*
 * time.c - the clock, sleeps and deadlines.
 *
 * A sleep is exactly one IORING_OP_TIMEOUT: the kernel keeps the timers,
 * so the loop has no timer heap and never scans.  A deadline is a field of
 * the task; io.c links an IORING_OP_LINK_TIMEOUT at it to each op, and a
 * sleep that would outlast it is cut at it.
 */
#include <time.h>

#include "corio-int.h"

uint64_t corio__time_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * CORIO_SEC(1) + (uint64_t)ts.tv_nsec;
}

/* Jiffy resolution, for measuring waits in corio_dump. */
uint64_t corio__time_coarse(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * CORIO_SEC(1) + (uint64_t)ts.tv_nsec;
}

uint64_t corio_now(void)
{
	return corio__time_now();
}

/*
 * An absolute timeout, so that a spurious cancel (corio__op_spurious) is
 * resubmitted for what is left of the sleep, not all of it again.
 */
int corio_sleep(uint64_t ns)
{
	struct corio_task *t = corio__current();
	struct corio_waiter w;
	struct io_uring_sqe *sqe;
	bool capped = false;
	uint64_t end;
	int ret;

	if (ns == 0)
		return corio_yield();
	ret = corio__op_check(t, true);
	if (ret < 0)
		return ret;
	end = corio__time_now() + ns;
	if (end < ns)
		end = UINT64_MAX;	/* saturate instead of wrapping */
	/* The deadline may have passed since corio__op_check read the clock:
	 * then the timeout fires at once. */
	if (t->deadline_ns && end >= t->deadline_ns) {
		capped = true;
		end = t->deadline_ns;
	}
	do {
		corio__ts_from_ns(&w.ts, end);
		sqe = corio__loop_sqe(t->loop);
		io_uring_prep_timeout(sqe, &w.ts, 0, IORING_TIMEOUT_ABS);
		ret = corio__op_submit(t, &w, sqe, 0);
	} while (corio_unlikely(ret == -ECANCELED || ret == -EINTR) &&
		 corio__op_spurious(t, &w, ret));
	if (ret == -ETIME)
		return capped ? -ETIMEDOUT : 0;
	if (ret == -ECANCELED || ret == -EINTR)
		return -ECANCELED;
	return ret;
}

uint64_t corio_deadline(uint64_t abs_ns)
{
	struct corio_task *t = corio__current();
	uint64_t old;

	if (!t)
		return 0;
	old = t->deadline_ns;
	t->deadline_ns = abs_ns;
	return old;
}

uint64_t corio_timeout(uint64_t rel_ns)
{
	struct corio_task *t = corio__current();
	uint64_t old, dl;

	if (!t)
		return 0;
	old = t->deadline_ns;
	dl = corio__time_now() + rel_ns;
	if (dl < rel_ns)
		dl = UINT64_MAX;	/* saturate instead of wrapping */
	if (!old || dl < old)
		t->deadline_ns = dl;
	return old;
}
