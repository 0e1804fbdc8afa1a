/*
 * net.c - listen, dial, accept with back-off, signals as awaits.
 *
 * Numeric addresses are parsed in the calling task at once; names go
 * through getaddrinfo on the blocking pool (blocking.c), so the loop never
 * blocks on DNS.  Connecting is corio_connect, so a dial honours the
 * task's deadline and cancellation.  bind and listen are plain syscalls:
 * they never block.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "corio-int.h"

#define BACKOFF_MIN_NS	CORIO_MSEC(1)
#define BACKOFF_MAX_NS	CORIO_SEC(1)

/* getaddrinfo's errors as errno values; corio_dial(3) lists them. */
static int gai_errno(int err)
{
	switch (err) {
	case 0:
		return 0;
	case EAI_NONAME:
#ifdef EAI_NODATA
	case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
	case EAI_ADDRFAMILY:
#endif
		return -ENXIO;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	default:
		return -EINVAL;
	}
}

/* A lookup on the blocking pool: all on the heap, see resolve(). */
struct resolve {
	char *host;
	char port[8];
	int passive;
	struct addrinfo *res;
};

static int resolve_fn(void *arg)
{
	struct resolve *r = arg;
	struct addrinfo hints;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = r->passive ? AI_PASSIVE : AI_ADDRCONFIG;
	return gai_errno(getaddrinfo(r->host, r->port, &hints, &r->res));
}

static void resolve_free(void *arg)
{
	struct resolve *r = arg;

	if (r->res)
		freeaddrinfo(r->res);
	free(r->host);
	free(r);
}

/*
 * Resolves host:port: numeric hosts at once in the caller, names on the
 * blocking pool (which needs a task).  A lookup can hang for the
 * resolver's timeouts, so it does not hold the task: a cancellation or a
 * deadline returns at once, and the lookup is freed when it ends.
 */
static int resolve(const char *host, int port, int passive,
		   struct addrinfo **res)
{
	struct resolve *r;
	struct addrinfo hints;
	char sport[8];
	bool kept;
	int ret;

	if (port < 0 || port > 65535)
		return -EINVAL;
	snprintf(sport, sizeof(sport), "%d", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV |
			 (passive ? AI_PASSIVE : 0);
	ret = getaddrinfo(host, sport, &hints, res);
	if (ret != EAI_NONAME)
		return gai_errno(ret);
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->host = strdup(host);
	if (!r->host) {
		free(r);
		return -ENOMEM;
	}
	memcpy(r->port, sport, sizeof(sport));
	r->passive = passive;
	ret = corio__run_blocking_owned(resolve_fn, r, resolve_free, &kept);
	if (kept)
		return ret;
	if (ret == 0) {
		*res = r->res;
		r->res = NULL;
	}
	resolve_free(r);
	return ret;
}

static int listen_on(const struct sockaddr *sa, socklen_t len, int backlog,
		     int flags)
{
	int fd, one = 1, v6only = !!(flags & CORIO_V6ONLY);
	int ret;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sa->sa_family != AF_UNIX &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto err;
	if ((flags & CORIO_REUSEPORT) &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto err;
	if (sa->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
		       sizeof(v6only)) < 0)
		goto err;
	if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0)
		goto err;
	return fd;
err:
	ret = -errno;
	close(fd);
	return ret;
}

int corio_listen(const char *host, int port, int backlog, int flags)
{
	struct addrinfo *res, *ai;
	int ret;

	if (flags & ~(CORIO_REUSEPORT | CORIO_V6ONLY))
		return -EINVAL;
	if (!host) {
		/* Every address: IPv6 and IPv4 on one socket where possible. */
		struct sockaddr_in6 in6 = { .sin6_family = AF_INET6,
					    .sin6_port = htons(port) };
		struct sockaddr_in in = { .sin_family = AF_INET,
					  .sin_port = htons(port) };

		if (port < 0 || port > 65535)
			return -EINVAL;
		ret = listen_on((struct sockaddr *)&in6, sizeof(in6), backlog,
				flags);
		if (ret == -EAFNOSUPPORT)
			ret = listen_on((struct sockaddr *)&in, sizeof(in),
					backlog, flags);
		return ret;
	}
	ret = resolve(host, port, 1, &res);
	if (ret < 0)
		return ret;
	ret = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		ret = listen_on(ai->ai_addr, ai->ai_addrlen, backlog, flags);
		if (ret >= 0)
			break;
	}
	freeaddrinfo(res);
	return ret;
}

/* One connected socket to sa, or -errno; the fd is closed on failure. */
static int dial_one(const struct sockaddr *sa, socklen_t len)
{
	int fd, ret;

	fd = corio_socket(sa->sa_family, SOCK_STREAM, 0, 0);
	if (fd < 0)
		return fd;
	ret = corio_connect(fd, sa, len);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	if (sa->sa_family != AF_UNIX) {
		int one = 1;

		/* Request-response traffic: no Nagle delay. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
}

int corio_dial(const char *host, int port)
{
	struct addrinfo *res, *ai;
	int ret;

	if (!host)
		return -EINVAL;
	if (!corio__current())
		return -EPERM;
	ret = resolve(host, port, 0, &res);
	if (ret < 0)
		return ret;
	ret = -ENXIO;
	for (ai = res; ai; ai = ai->ai_next) {
		ret = dial_one(ai->ai_addr, ai->ai_addrlen);
		/* Try the next address unless the task must stop. */
		if (ret >= 0 || ret == -ECANCELED || ret == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	return ret;
}

/* A sockaddr_un for path; a leading '@' names an abstract socket. */
static int unix_addr(const char *path, struct sockaddr_un *sun,
		     socklen_t *len)
{
	size_t n;

	if (!path)
		return -EINVAL;
	n = strlen(path);
	if (n == 0 || n >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, n);
	if (path[0] == '@')
		sun->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
			   (path[0] == '@' ? 0 : 1));
	return 0;
}

int corio_listen_unix(const char *path, int backlog, int flags)
{
	struct sockaddr_un sun;
	socklen_t len;
	int ret;

	if (flags & ~CORIO_UNLINK)
		return -EINVAL;
	ret = unix_addr(path, &sun, &len);
	if (ret < 0)
		return ret;
	if ((flags & CORIO_UNLINK) && path[0] != '@') {
		struct stat st;

		/* A stale socket only: never a file that merely has the name. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
	}
	return listen_on((struct sockaddr *)&sun, len, backlog, 0);
}

int corio_dial_unix(const char *path)
{
	struct sockaddr_un sun;
	socklen_t len;
	int ret;

	if (!corio__current())
		return -EPERM;
	ret = unix_addr(path, &sun, &len);
	if (ret < 0)
		return ret;
	return dial_one((struct sockaddr *)&sun, len);
}

/* Out of fds or memory: worth retrying after a pause. */
static bool accept_transient(int err)
{
	return err == -EMFILE || err == -ENFILE || err == -ENOBUFS ||
	       err == -ENOMEM;
}

/*
 * One back-off of accept_retry: a poll of the listening socket for
 * POLLOUT, which a listening socket never reports, cut at the back-off's
 * end by a deadline.  Unlike a sleep, it is an op on fd, so a corio_close
 * of fd ends it with -EBADF, and the next try cannot accept on whatever
 * the fd number has become meanwhile.  0 when the back-off is over.
 */
static int backoff(int fd, uint64_t ns)
{
	uint64_t old = corio_timeout(ns);
	int ret = corio_poll(fd, POLLOUT);

	corio_deadline(old);
	if (ret == -ETIMEDOUT && (!old || corio_now() < old))
		return 0;	/* ours, not the task's deadline */
	return ret < 0 ? ret : 0;
}

/*
 * Out of fds or memory: the connection stays in the backlog while the
 * server backs off (1 ms doubling to 1 s) and keeps serving the ones it
 * has; it neither dies nor spins.
 */
int corio_accept_retry(int fd, struct sockaddr *addr, socklen_t *addrlen,
		       int flags)
{
	uint64_t delay = BACKOFF_MIN_NS;
	socklen_t len = addrlen ? *addrlen : 0;

	/* Outside a task -EPERM is corio's answer, not a firewall's. */
	if (!corio__current())
		return -EPERM;
	for (;;) {
		int ret;

		if (addrlen)
			*addrlen = len;
		ret = corio_accept(fd, addr, addrlen, flags);
		if (accept_transient(ret)) {
			ret = backoff(fd, delay);
			if (ret < 0)
				return ret;
			if (delay < BACKOFF_MAX_NS)
				delay *= 2;
			continue;
		}
		switch (ret) {
		case -ECONNABORTED:
		case -EPROTO:
		case -EPERM:
			/* The peer gave up before we took it: next one. */
			continue;
		default:
			return ret;
		}
	}
}

int corio_signal_wait(const sigset_t *set)
{
	struct signalfd_siginfo si;
	int fd, ret;

	if (!set)
		return -EINVAL;
	if (!corio__current())
		return -EPERM;
	/*
	 * Blocked for good in this thread: a signal that arrives between two
	 * waits stays pending instead of taking its default action.
	 */
	ret = -pthread_sigmask(SIG_BLOCK, set, NULL);
	if (ret < 0)
		return ret;
	fd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	ret = (int)corio_read(fd, &si, sizeof(si), 0);
	close(fd);
	if (ret < 0)
		return ret;
	if (ret != (int)sizeof(si))
		return -EIO;
	return (int)si.ssi_signo;
}

/*
 * Acceptors: one multishot IORING_OP_ACCEPT per listener, whose CQEs go to
 * a handler (acceptor_cqe) that hands each new fd straight to the first
 * waiting task, or queues it.  Out of fds or memory, the multishot ends:
 * the accepting tasks then wait until a back-off deadline (1 ms doubling
 * to 1 s, reset by the next connection) before they arm it again, so the
 * server neither dies nor spins.  A queue of ACCEPT_QUEUE_MAX fds nobody
 * takes stops the multishot until it drains, so memory stays bounded.
 */
#define ACCEPT_QUEUE_MAX	4096
#define ACCEPT_LOOK_AGAIN	(-EAGAIN)	/* wake reason: re-check */

struct corio_acceptor {
	int fd;
	struct corio_loop *loop;
	struct corio_acceptor *next;	/* the loop's list */
	struct corio_handler h;
	bool armed;		/* a multishot is in flight */
	bool paused;		/* we cancelled it: the queue is full */
	bool stopping;		/* corio_acceptor_free cancelled it */
	bool plain;		/* no multishot here: corio_accept_retry */
	bool accepted;		/* one fd came: multishot works */
	int err;		/* what ended the multishot, not yet seen */
	uint64_t retry_ns;	/* back-off: no arming before this */
	uint64_t backoff_ns;
	int *fds;		/* accepted, not taken: a ring */
	size_t head, len, cap;
	struct corio_waitq waiters;
	struct corio_task *freer;	/* parked in free until !armed */
};

static bool fds_push(struct corio_acceptor *a, int fd)
{
	if (a->len == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64, i;
		int *fds = malloc(cap * sizeof(*fds));

		if (!fds)
			return false;
		for (i = 0; i < a->len; i++)
			fds[i] = a->fds[(a->head + i) % a->cap];
		free(a->fds);
		a->fds = fds;
		a->cap = cap;
		a->head = 0;
	}
	a->fds[(a->head + a->len++) % a->cap] = fd;
	return true;
}

static int fds_pop(struct corio_acceptor *a)
{
	int fd = a->fds[a->head];

	a->head = (a->head + 1) % a->cap;
	a->len--;
	return fd;
}

/* Stops the multishot; its last CQE (-ECANCELED) ends it. */
static void acceptor_cancel(struct corio_acceptor *a)
{
	struct io_uring_sqe *sqe = corio__loop_handler_sqe(a->loop, &a->h);

	if (!sqe)
		return;	/* arm() runs before the next enter and retries */
	io_uring_prep_cancel64(sqe, corio__handler_ud(&a->h), 0);
	sqe->user_data = CORIO_UD_INTERNAL;
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* The handler's deferred arm(): only ever a pending cancel. */
static void acceptor_rearm(struct corio_loop *loop, struct corio_handler *h)
{
	struct corio_acceptor *a = (struct corio_acceptor *)
		((char *)h - offsetof(struct corio_acceptor, h));

	(void)loop;
	if (a->armed && (a->paused || a->stopping))
		acceptor_cancel(a);
}

static void acceptor_cqe(struct corio_loop *loop, struct corio_handler *h,
			 const struct io_uring_cqe *cqe)
{
	struct corio_acceptor *a = (struct corio_acceptor *)
		((char *)h - offsetof(struct corio_acceptor, h));
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		a->armed = false;
		loop->stats.ops_in_flight--;
	}
	if (res >= 0) {
		a->accepted = true;
		a->backoff_ns = 0;
		if (a->waiters.head) {
			corio__wake(a->waiters.head, res);
		} else if (a->stopping || !fds_push(a, res)) {
			close(res);	/* shed it: nobody will take it */
		} else if (a->len >= ACCEPT_QUEUE_MAX && a->armed &&
			   !a->paused) {
			a->paused = true;
			acceptor_cancel(a);
		}
	} else if (!a->armed) {
		if (res == -ECANCELED && (a->paused || a->stopping))
			res = 0;	/* our own cancel */
		else if (res == -ECANCELED)
			res = -EBADF;	/* corio_close(fd) cancelled it */
		else if (res == -EINVAL && !a->accepted)
			a->plain = true, res = 0;	/* no multishot */
		a->paused = false;
		a->err = res;
		while (a->waiters.head)
			corio__wake(a->waiters.head, ACCEPT_LOOK_AGAIN);
	}
	if (a->freer && !a->armed) {
		corio__task_wake(a->freer);
		a->freer = NULL;
	}
}

static void acceptor_arm(struct corio_acceptor *a)
{
	struct io_uring_sqe *sqe = corio__loop_sqe(a->loop);

	io_uring_prep_multishot_accept(sqe, a->fd, NULL, NULL, SOCK_CLOEXEC);
	sqe->user_data = corio__handler_ud(&a->h);
	a->armed = true;
	a->loop->stats.ops_in_flight++;
}

/*
 * What the network layer keeps in a loop: its acceptors, so that the
 * loop's teardown can stop their multishots and its end can disown them.
 */
struct net_state {
	struct corio_layer_state ls;	/* first: the state is its ls */
	struct corio_acceptor *acceptors;
};

static void net_teardown(struct corio_loop *loop, struct corio_layer_state *s);
static void net_fini(struct corio_loop *loop, struct corio_layer_state *s);

static const struct corio_layer net_layer = {
	.teardown = net_teardown,
	.fini = net_fini,
};

/* loop's acceptor list; made when make is set, else NULL if none. */
static struct corio_acceptor **loop_acceptors(struct corio_loop *loop,
					      bool make)
{
	struct net_state *ns = (struct net_state *)corio__loop_state(loop,
								     &net_layer);

	if (!ns && make) {
		ns = calloc(1, sizeof(*ns));
		if (!ns)
			return NULL;
		corio__loop_attach(loop, &ns->ls, &net_layer);
	}
	return ns ? &ns->acceptors : NULL;
}

int corio_acceptor_new(int fd, corio_acceptor **out)
{
	struct corio_loop *loop = corio__loop;
	struct corio_acceptor *a, **head;

	if (fd < 0 || !out)
		return -EINVAL;
	if (!loop)
		return -EPERM;
	head = loop_acceptors(loop, true);
	a = head ? calloc(1, sizeof(*a)) : NULL;
	if (!a)
		return -ENOMEM;
	a->fd = fd;
	a->loop = loop;
	a->h.fn = acceptor_cqe;
	a->h.arm = acceptor_rearm;
	a->next = *head;
	*head = a;
	*out = a;
	return 0;
}

int corio_acceptor_accept(corio_acceptor *a)
{
	struct corio_task *t = corio__current();
	struct corio_wait w;
	int ret;

	if (!a)
		return -EINVAL;
	if (!t || t->loop != a->loop)
		return -EPERM;
	for (;;) {
		uint64_t now;

		if (a->plain)
			return corio_accept_retry(a->fd, NULL, NULL, 0);
		if (a->len)
			return fds_pop(a);
		if (a->err) {
			ret = a->err;
			a->err = 0;
			if (!accept_transient(ret))
				return ret;
			/* Out of fds or memory: back off before re-arming. */
			a->backoff_ns = a->backoff_ns ?
				(a->backoff_ns < BACKOFF_MAX_NS ?
				 a->backoff_ns * 2 : BACKOFF_MAX_NS) :
				BACKOFF_MIN_NS;
			a->retry_ns = corio__time_now() + a->backoff_ns;
		}
		now = a->retry_ns ? corio__time_now() : 0;
		if (now && now < a->retry_ns) {
			ret = corio_sleep(a->retry_ns - now);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = corio__op_check(t, true);
		if (ret < 0)
			return ret;
		if (!a->armed)
			acceptor_arm(a);
		ret = corio__wait_on(&a->waiters, &w);
		if (ret != ACCEPT_LOOK_AGAIN)
			return ret;	/* an fd, -ECANCELED or -ETIMEDOUT */
	}
}

/*
 * corio_acceptor_accept and the peer's address.  A multishot accept is one
 * SQE for every connection, with nowhere to write each one's address, so
 * the address comes from getpeername(2) on the new socket: one plain
 * syscall, which never blocks.  A peer that reset the connection before we
 * asked leaves no address (-ENOTCONN): that connection is closed and the
 * next one taken, as corio_accept_retry does with -ECONNABORTED.
 */
int corio_acceptor_accept_addr(corio_acceptor *a, struct sockaddr *addr,
			       socklen_t *addrlen)
{
	/* Checked before any wait, so that no connection is lost to it. */
	if (!a || (addr && (!addrlen || (int)*addrlen < 0)))
		return -EINVAL;
	for (;;) {
		int fd = corio_acceptor_accept(a);
		socklen_t len;
		int ret;

		if (fd < 0 || !addr)
			return fd;
		len = *addrlen;
		if (getpeername(fd, addr, &len) == 0) {
			*addrlen = len;	/* the full size, as accept(2) */
			return fd;
		}
		ret = -errno;
		close(fd);
		if (ret != -ENOTCONN)
			return ret;
	}
}

/* main returned: stop the multishots nobody freed, so the loop can end. */
static void net_teardown(struct corio_loop *loop, struct corio_layer_state *s)
{
	struct corio_acceptor *a;

	(void)loop;
	for (a = ((struct net_state *)s)->acceptors; a; a = a->next) {
		if (a->armed && !a->stopping) {
			a->stopping = true;
			acceptor_cancel(a);
		}
	}
}

/* corio_run frees the loop: acceptors left over no longer belong to it. */
static void net_fini(struct corio_loop *loop, struct corio_layer_state *s)
{
	struct net_state *ns = (struct net_state *)s;
	struct corio_acceptor *a;

	(void)loop;
	for (a = ns->acceptors; a; a = a->next)
		a->loop = NULL;
	free(ns);
}

int corio_acceptor_free(corio_acceptor *a)
{
	struct corio_task *t = corio__current();
	struct corio_acceptor **pp;

	if (!a)
		return 0;
	if (a->waiters.head || a->freer)
		return -EBUSY;
	if (a->armed) {
		if (!t || t->loop != a->loop)
			return -EPERM;
		if (!a->stopping) {
			a->stopping = true;
			acceptor_cancel(a);
		}
		/* Not cancellable: the multishot's last CQE points at a. */
		a->freer = t;
		while (a->armed)
			corio__task_park(t, NULL, NULL);
	}
	while (a->len)
		close(fds_pop(a));
	if (a->loop) {
		for (pp = loop_acceptors(a->loop, false); *pp != a;
		     pp = &(*pp)->next)
			;
		*pp = a->next;
	}
	free(a->fds);
	free(a);
	return 0;
}
