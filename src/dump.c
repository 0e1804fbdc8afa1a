/*
 * dump.c - introspection: corio_dump (python -m asyncio ps) and the
 * CORIO_DEBUG stall warning.
 *
 * Cold code only.  A parked task's wait is measured against the clock the
 * loop reads once per turn, so the hot path pays nothing for corio_dump;
 * the stall warning reads the clock around each run, only when
 * CORIO_DEBUG=1.
 */
#include <string.h>

#include "corio-int.h"

#define DEBUG_SLOW_MS_DEFAULT	100

/* CORIO_DEBUG=1 turns the warning on; CORIO_DEBUG_SLOW_MS sets its bar. */
uint64_t corio__dump_slow_ns(void)
{
	const char *on = getenv("CORIO_DEBUG");
	const char *ms = getenv("CORIO_DEBUG_SLOW_MS");
	uint64_t ns = CORIO_MSEC(DEBUG_SLOW_MS_DEFAULT);

	if (!on || !*on || !strcmp(on, "0"))
		return 0;
	if (ms && *ms && corio__parse_ms(ms, &ns) < 0) {
		fprintf(stderr, "corio: ignoring CORIO_DEBUG_SLOW_MS=%s (want "
			"a positive number of milliseconds)\n", ms);
		ns = CORIO_MSEC(DEBUG_SLOW_MS_DEFAULT);
	}
	return ns;
}

void corio__dump_slow(struct corio_loop *loop, struct corio_task *t,
		      uint64_t started_ns)
{
	uint64_t ran = corio__time_now() - started_ns;
	char name[128];

	if (ran < loop->debug_slow_ns)
		return;
	fprintf(stderr, "corio: %s ran %.1f ms without awaiting: it stalls "
		"the loop\n", corio__task_name(t, name, sizeof(name)),
		(double)ran / 1e6);
}

static const char *op_name(unsigned int opcode)
{
	static const char *const names[] = {
		[IORING_OP_NOP] = "nop",
		[IORING_OP_READV] = "readv",
		[IORING_OP_WRITEV] = "writev",
		[IORING_OP_FSYNC] = "fsync",
		[IORING_OP_POLL_ADD] = "poll",
		[IORING_OP_SENDMSG] = "sendmsg",
		[IORING_OP_RECVMSG] = "recvmsg",
		[IORING_OP_TIMEOUT] = "sleep",
		[IORING_OP_ACCEPT] = "accept",
		[IORING_OP_CONNECT] = "connect",
		[IORING_OP_OPENAT] = "openat",
		[IORING_OP_CLOSE] = "close",
		[IORING_OP_STATX] = "statx",
		[IORING_OP_READ] = "read",
		[IORING_OP_WRITE] = "write",
		[IORING_OP_SEND] = "send",
		[IORING_OP_RECV] = "recv",
		[IORING_OP_SPLICE] = "splice",
		[IORING_OP_SHUTDOWN] = "shutdown",
		[IORING_OP_SOCKET] = "socket",
	};

	if (opcode < sizeof(names) / sizeof(names[0]) && names[opcode])
		return names[opcode];
	return "op";
}

static const char *state_name(const struct corio_task *t)
{
	switch (t->state) {
	case CORIO_T_READY:
		return t->started ? "ready" : "new";
	case CORIO_T_RUNNING:
		return "running";
	case CORIO_T_PARKED:
		return "parked";
	default:
		return "done";
	}
}

/* What a parked task waits on, from its park hook. */
static void waits_on(const struct corio_task *t, char *buf, size_t len)
{
	if (t->park_hook == corio__op_cancel) {
		const struct corio_waiter *w = t->park_data;

		if (w->fd >= 0)
			snprintf(buf, len, "%s fd %d", op_name(w->opcode),
				 w->fd);
		else
			snprintf(buf, len, "%s", op_name(w->opcode));
	} else if (t->park_hook == corio__task_join_cancel) {
		snprintf(buf, len, "join task %llu", (unsigned long long)
			 ((const struct corio_task *)t->park_data)->id);
	} else if (t->park_hook == corio__sync_cancel) {
		snprintf(buf, len, "sync wait");
	} else if (t->park_hook == corio__group_wait_cancel) {
		snprintf(buf, len, "group wait");
	} else {
		snprintf(buf, len, "uncancellable wait");
	}
}

int corio_dump(FILE *out)
{
	struct corio_loop *loop = corio__loop;
	struct corio_task *t;
	uint64_t now = corio__time_coarse();	/* what park_ns is read on */
	char name[128], what[64];

	if (!out)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	fprintf(out, "%-6s %-8s %-10s %-28s %s\n", "ID", "STATE", "WAITED",
		"WAITS ON", "TASK");
	for (t = loop->all.next; t != &loop->all; t = t->next) {
		char waited[16] = "-";

		what[0] = '\0';
		if (t->state == CORIO_T_PARKED) {
			waits_on(t, what, sizeof(what));
			snprintf(waited, sizeof(waited), "%.1fms",
				 (double)(now - t->park_ns) / 1e6);
		}
		corio__task_name(t, name, sizeof(name));
		fprintf(out, "%-6llu %-8s %-10s %-28s %s%s%s\n",
			(unsigned long long)t->id, state_name(t), waited,
			what[0] ? what : "-", strchr(name, '(') ?
			strchr(name, '(') : name,
			t->cancelled ? " cancelled" : "",
			t == loop->main ? " main" : "");
	}
	return 0;
}
