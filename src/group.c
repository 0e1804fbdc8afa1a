/*
 * group.c - task groups: asyncio's TaskGroup, gather and wait.
 *
 * A group owns its members' handles through task.c's owner hooks
 * (struct corio_task_owner): told when a member returns, is detached or is
 * freed, so that task.c knows nothing of groups.  Waits park on the wait
 * queues of sync.c.
 */
#include "corio-int.h"

/*
 * A member's handle belongs to the group: corio_join refuses
 * it.  A member's record is on the heap (corio__stack_get_heap), so that
 * its stack goes back to the pool the moment it returns while the record,
 * its handle, stays: a long-lived group of churning members holds a few
 * hundred bytes per member that nobody has taken yet, not a stack.  When a
 * member returns (group_done, from its last moments on its own stack) it moves to the done list, or straight to a task in
 * corio_group_wait_any; a detached member leaves no record at all.  The
 * first negative result cancels the others.
 */

struct corio_group {
	struct corio_task *live, *done;	/* lists through onext/oprev */
	struct corio_task *done_tail;
	size_t nr_live;
	size_t nr_kept;			/* live and not detached */
	int first_error;
	bool failed;
	bool cancelled;			/* corio_group_cancel was called */
	struct corio_task *waiter;	/* in corio_group_wait */
	bool waiter_parked;		/* waiter waits for the last member */
	struct corio_waitq all;		/* the waiter, until its deadline */
	struct corio_waitq any;		/* parked in corio_group_wait_any */
};

static const struct corio_task_owner group_owner;

static void disown(struct corio_task *t)
{
	t->owner = NULL;
	t->owner_data = NULL;
}

static void glist_remove(struct corio_task **head, struct corio_task *t)
{
	if (t->oprev)
		t->oprev->onext = t->onext;
	else
		*head = t->onext;
	if (t->onext)
		t->onext->oprev = t->oprev;
}

int corio_group_new(corio_group **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

corio_task *corio_group_spawn(corio_group *g, corio_fn fn, void *arg)
{
	struct corio_task *t;

	if (!g) {
		errno = EINVAL;
		return NULL;
	}
	t = corio__task_spawn(fn, arg, NULL, true);
	if (!t)
		return NULL;
	t->owner = &group_owner;
	t->owner_data = g;
	t->oprev = NULL;
	t->onext = g->live;
	if (g->live)
		g->live->oprev = t;
	g->live = t;
	g->nr_live++;
	g->nr_kept++;
	if (g->failed)
		corio_cancel(t);	/* the group is already unwinding */
	return t;
}

/* A member returned: on its own stack, just before its last switch. */
static void group_done(struct corio_task *t)
{
	struct corio_group *g = t->owner_data;

	glist_remove(&g->live, t);
	g->nr_live--;
	/* As in asyncio's TaskGroup, a member's cancellation is no failure. */
	if (t->result < 0 && t->result != -ECANCELED && !g->failed) {
		g->failed = true;
		g->first_error = t->result;
		corio_group_cancel(g);
	}
	if (t->detached) {
		disown(t);	/* freed as it switches out */
	} else if (g->any.head) {
		g->nr_kept--;
		/* Straight to the first waiter: nobody can take it first. */
		disown(t);
		g->any.head->item = t;
		corio__wake(g->any.head, 0);
	} else {
		g->nr_kept--;
		t->onext = NULL;
		t->oprev = g->done_tail;
		if (g->done_tail)
			g->done_tail->onext = t;
		else
			g->done = t;
		g->done_tail = t;
	}
	/* Only detached members left: wait_any has nothing to wait for. */
	if (!g->nr_kept && !g->done)
		corio__wake_all(&g->any, -ENOENT);
	if (g->waiter && !g->nr_live) {
		if (g->all.head)
			corio__wake(g->all.head, 0);
		else if (g->waiter_parked)
			corio__task_wake(g->waiter);
		g->waiter = NULL;
		g->waiter_parked = false;
	}
}

/* t is being freed (by corio_join, or at corio_run's end). */
static void group_forget(struct corio_task *t)
{
	struct corio_group *g = t->owner_data;

	if (t->state == CORIO_T_DONE) {
		glist_remove(&g->done, t);
		if (g->done_tail == t)
			g->done_tail = t->oprev;
	} else {
		glist_remove(&g->live, t);
		g->nr_live--;
		if (!t->detached)
			g->nr_kept--;
	}
	disown(t);
}

/*
 * corio_detach of a member: one that returned is freed now; one still
 * running stays in the group (cancelled and waited for with it) and is
 * freed when it returns, leaving no record for corio_group_wait_any.
 */
static void group_detach(struct corio_task *t)
{
	struct corio_group *g = t->owner_data;

	if (t->state == CORIO_T_DONE) {
		corio__task_free(t);
		return;
	}
	t->detached = true;
	g->nr_kept--;
	/* Nothing is left for the tasks in wait_any to get. */
	if (!g->nr_kept && !g->done)
		corio__wake_all(&g->any, -ENOENT);
}

static const struct corio_task_owner group_owner = {
	.done = group_done,
	.detach = group_detach,
	.forget = group_forget,
};

int corio_group_cancel(corio_group *g)
{
	struct corio_task *t;

	if (!g)
		return -EINVAL;
	g->cancelled = true;
	for (t = g->live; t; t = t->onext)
		corio_cancel(t);
	return 0;
}

/* Frees the done members. */
static void group_reap(corio_group *g)
{
	while (g->done) {
		struct corio_task *t = g->done;

		g->done = t->onext;
		disown(t);
		corio__task_free(t);
	}
	g->done_tail = NULL;
}

/* The task waiting for the group was cancelled: so is the group. */
void corio__group_wait_cancel(struct corio_task *self)
{
	corio_group_cancel(self->park_data);
}

int corio_group_wait(corio_group *g)
{
	struct corio_task *self = corio__current();
	bool timed_out = false;
	int ret;

	if (!g)
		return -EINVAL;
	if (!self)
		return -EPERM;
	if (g->waiter)
		return -EBUSY;
	if (g->nr_live && self->deadline_ns) {
		/* As asyncio's timeout around a TaskGroup: a deadline (or a
		 * cancellation) ends the wait as such, then the members are
		 * cancelled and waited for. */
		struct corio_wait w = { 0 };

		g->waiter = self;
		ret = corio__wait_on(&g->all, &w);
		if (ret < 0) {
			corio_group_cancel(g);
			timed_out = ret == -ETIMEDOUT;
		}
	}
	if (g->nr_live) {
		if (corio__task_stopped(self))
			corio_group_cancel(g);
		g->waiter = self;
		g->waiter_parked = true;
		corio__task_park(self, corio__group_wait_cancel, g);
	}
	group_reap(g);
	if (g->first_error)
		return g->first_error;
	if (timed_out)
		return -ETIMEDOUT;
	return g->cancelled ? -ECANCELED : 0;
}

int corio_group_wait_any(corio_group *g, corio_task **done, int *result)
{
	struct corio_task *t;
	struct corio_wait w;
	int ret;

	if (!g || !done)
		return -EINVAL;
	if (!corio__current())
		return -EPERM;
	if (g->done) {
		t = g->done;
		g->done = t->onext;
		if (g->done)
			g->done->oprev = NULL;
		else
			g->done_tail = NULL;
		disown(t);	/* the caller's to join now */
	} else {
		if (!g->nr_kept)
			return -ENOENT;
		ret = corio__wait_on(&g->any, &w);
		if (ret < 0)
			return ret;
		t = w.item;	/* handed over by group_done */
	}
	*done = t;
	if (result)
		*result = t->result;
	return 0;
}

int corio_group_free(corio_group *g)
{
	int ret;

	if (!g)
		return 0;
	if (g->waiter || g->any.head)
		return -EBUSY;
	if (g->nr_live) {
		if (!corio__current())
			return -EPERM;
		corio_group_cancel(g);
		ret = corio_group_wait(g);
		(void)ret;
	}
	group_reap(g);
	free(g);
	return 0;
}
