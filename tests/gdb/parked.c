/*
 * tests/gdb/parked.c - tasks parked in known places, for tests/check-gdb.sh.
 *
 * main's task spawns four tasks and yields, so each runs until it parks:
 * parked_in_recv in corio_recv on a socketpair, parked_in_sleep in a long
 * corio_sleep, parked_in_event in corio_event_wait and parked_in_join in
 * corio_join of the sleeper.  Then main calls corio_gdb_checkpoint(), where
 * the script's gdb stops to run "corio tasks" and "corio bt N" (and gcore),
 * and finally cancels the tasks and joins them, so that the program also
 * runs to completion on its own.  Exit status 0, 77 when io_uring is
 * unavailable, 1 on an unexpected result.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <corio.h>

static int sv[2] = { -1, -1 };
static corio_event *ev;
static corio_task *sleeper;

/* Out of line, so that gdb can stop here: every task is parked. */
__attribute__((noinline)) void corio_gdb_checkpoint(void);
__attribute__((noinline)) void corio_gdb_checkpoint(void)
{
	__asm__ volatile("" ::: "memory");
}

static __attribute__((noinline)) int parked_in_recv(void *arg)
{
	char buf[16];

	(void)arg;
	return (int)corio_recv(sv[0], buf, sizeof(buf), 0);
}

static __attribute__((noinline)) int parked_in_sleep(void *arg)
{
	(void)arg;
	return corio_sleep(CORIO_SEC(3600));
}

static __attribute__((noinline)) int parked_in_event(void *arg)
{
	(void)arg;
	return corio_event_wait(ev);
}

static __attribute__((noinline)) int parked_in_join(void *arg)
{
	(void)arg;
	return corio_join(sleeper);
}

static int main_task(void *arg)
{
	corio_task *t[3];
	int ret, fail = 0;
	size_t i;

	(void)arg;
	ret = corio_event_new(&ev);
	if (ret < 0)
		return ret;
	t[0] = corio_spawn(parked_in_recv, NULL);
	sleeper = corio_spawn(parked_in_sleep, NULL);
	t[1] = corio_spawn(parked_in_event, NULL);
	t[2] = corio_spawn(parked_in_join, NULL);
	if (!t[0] || !sleeper || !t[1] || !t[2])
		return -ENOMEM;
	/* Two turns: the spawned tasks run and park (and submit). */
	corio_yield();
	corio_yield();
	corio_gdb_checkpoint();
	for (i = 0; i < 3; i++)
		corio_cancel(t[i]);
	for (i = 0; i < 3; i++) {
		ret = corio_join(t[i]);
		if (ret != -ECANCELED) {
			fprintf(stderr, "parked: task %zu returned %d\n", i,
				ret);
			fail = 1;
		}
	}
	corio_event_free(ev);
	return fail ? -EPROTO : 0;
}

int main(void)
{
	int ret;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("parked: socketpair");
		return 1;
	}
	ret = corio_run(main_task, NULL);
	close(sv[0]);
	close(sv[1]);
	if (ret == -ENOSYS || ret == -EPERM)
		return 77;
	if (ret < 0) {
		fprintf(stderr, "parked: %s\n", strerror(-ret));
		return 1;
	}
	return 0;
}
