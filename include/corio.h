/*
 * corio.h - asyncio for C on io_uring: the one public header.
 *
 * A program is a set of tasks: stackful coroutines that park on io_uring
 * operations.  Start with corio(7); every function has its own page in
 * section 3.  Errors are negative errno values; the only functions that set
 * errno are the ones that return a pointer (NULL and errno).
 */
#ifndef CORIO_H
#define CORIO_H

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CORIO_API __attribute__((visibility("default")))
#else
#define CORIO_API
#endif

#define CORIO_VERSION_MAJOR 0
#define CORIO_VERSION_MINOR 1
#define CORIO_VERSION_PATCH 0

struct io_uring_sqe;
struct iovec;
struct msghdr;
struct statx;

/*
 * The loop: asyncio.run.  corio_run(3), corio_stats(3).
 */
typedef struct corio_task corio_task;
typedef int (*corio_fn)(void *arg);

CORIO_API int corio_run(corio_fn main, void *arg);

/*
 * A loop per core: loop i on thread i, calls and posts between loops.
 * corio_run_loops(3), corio_call(3), corio_post(3).
 */
CORIO_API int corio_run_loops(unsigned int n, corio_fn main, void *arg);
CORIO_API unsigned int corio_loop_index(void);
CORIO_API unsigned int corio_loop_count(void);
CORIO_API int corio_call(unsigned int loop, corio_fn fn, void *arg);
CORIO_API int corio_post(unsigned int loop, corio_fn fn, void *arg);

struct corio_stats {
	uint64_t tasks_live;	/* tasks spawned that have not returned */
	uint64_t ops_in_flight;	/* awaited SQEs whose CQE has not arrived */
	uint64_t turns;		/* turns of the loop */
	uint64_t enters;	/* io_uring_enter calls */
	uint64_t cqes;		/* CQEs reaped */
	uint64_t cq_overflows;	/* times the CQ ring was found overflowed */
};
CORIO_API int corio_stats(struct corio_stats *out);

/*
 * Tasks: create_task, await task, cancel.  corio_spawn(3), corio_join(3),
 * corio_cancel(3), corio_yield(3), corio_shield(3), corio_self(3).
 */
CORIO_API corio_task *corio_spawn(corio_fn fn, void *arg);
CORIO_API int corio_join(corio_task *t);
CORIO_API void corio_detach(corio_task *t);
CORIO_API int corio_cancel(corio_task *t);
CORIO_API int corio_yield(void);
CORIO_API int corio_shield(int on);
CORIO_API corio_task *corio_self(void);

/*
 * Stacks.  corio_spawn_ex(3), corio_stack_size(3).  The default stack is
 * CORIO_STACK_DEFAULT bytes plus a guard page; both calls round up to whole
 * pages and accept CORIO_STACK_MIN up to CORIO_STACK_MAX.
 */
#define CORIO_STACK_DEFAULT	(64u * 1024u)
#define CORIO_STACK_MIN		(16u * 1024u)
#define CORIO_STACK_MAX		(256u * 1024u * 1024u)

struct corio_spawn_attr {
	size_t stack_size;	/* 0: the loop's default */
};
CORIO_API corio_task *corio_spawn_ex(corio_fn fn, void *arg,
				     const struct corio_spawn_attr *attr);
CORIO_API ssize_t corio_stack_size(size_t bytes);

/*
 * Time: CLOCK_MONOTONIC nanoseconds.  corio_now(3), corio_sleep(3),
 * corio_deadline(3), corio_timeout(3).
 */
#define CORIO_NSEC(n) ((uint64_t)(n))
#define CORIO_USEC(n) ((uint64_t)(n) * 1000ull)
#define CORIO_MSEC(n) ((uint64_t)(n) * 1000000ull)
#define CORIO_SEC(n)  ((uint64_t)(n) * 1000000000ull)

CORIO_API uint64_t corio_now(void);
CORIO_API int corio_sleep(uint64_t ns);
CORIO_API uint64_t corio_deadline(uint64_t abs_ns);
CORIO_API uint64_t corio_timeout(uint64_t rel_ns);

/*
 * Any io_uring operation: get an SQE, prep it with liburing, await it.
 * corio_sqe(3), corio_await(3).
 */
CORIO_API struct io_uring_sqe *corio_sqe(void);
CORIO_API int corio_await(struct io_uring_sqe *sqe);

/*
 * Operations, one per liburing prep helper: corio_X(args) preps
 * io_uring_prep_X(sqe, args) and awaits it.  corio_read(3) and its links.
 */
CORIO_API ssize_t corio_read(int fd, void *buf, size_t len, uint64_t off);
CORIO_API ssize_t corio_write(int fd, const void *buf, size_t len,
			      uint64_t off);
CORIO_API ssize_t corio_readv(int fd, const struct iovec *iov, int iovcnt,
			      uint64_t off);
CORIO_API ssize_t corio_writev(int fd, const struct iovec *iov, int iovcnt,
			       uint64_t off);
CORIO_API ssize_t corio_recv(int fd, void *buf, size_t len, int flags);
CORIO_API ssize_t corio_send(int fd, const void *buf, size_t len, int flags);
CORIO_API ssize_t corio_recvmsg(int fd, struct msghdr *msg, int flags);
CORIO_API ssize_t corio_sendmsg(int fd, const struct msghdr *msg, int flags);
CORIO_API int corio_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
			   int flags);
CORIO_API int corio_connect(int fd, const struct sockaddr *addr,
			    socklen_t addrlen);
CORIO_API int corio_close(int fd);
CORIO_API int corio_openat(int dfd, const char *path, int flags, mode_t mode);
CORIO_API int corio_fsync(int fd, unsigned int fsync_flags);
CORIO_API int corio_statx(int dfd, const char *path, int flags,
			  unsigned int mask, struct statx *statxbuf);
CORIO_API int corio_shutdown(int fd, int how);
CORIO_API int corio_poll(int fd, unsigned int poll_mask);
CORIO_API ssize_t corio_splice(int fd_in, int64_t off_in, int fd_out,
			       int64_t off_out, unsigned int nbytes,
			       unsigned int splice_flags);
CORIO_API int corio_socket(int domain, int type, int protocol,
			   unsigned int flags);
CORIO_API int corio_nop(void);

/*
 * The io_uring data path: provided buffer rings, multishot receives into
 * them, zero-copy sends and file-to-socket sends.  corio_bufring(3),
 * corio_receiver(3), corio_send_zc(3), corio_sendfile(3).
 */
typedef struct corio_bufring corio_bufring;
typedef struct corio_receiver corio_receiver;

#define CORIO_BUFRING_MAX	32768u

CORIO_API int corio_bufring_new(unsigned int nbufs, size_t bufsize,
				corio_bufring **out);
CORIO_API int corio_bufring_free(corio_bufring *br);
CORIO_API int corio_receiver_new(int fd, corio_bufring *br,
				 corio_receiver **out);
CORIO_API ssize_t corio_receiver_next(corio_receiver *r, const void **data);
CORIO_API int corio_receiver_release(corio_receiver *r);
CORIO_API int corio_receiver_free(corio_receiver *r);
CORIO_API ssize_t corio_send_zc(int fd, const void *buf, size_t len,
				int flags);
CORIO_API ssize_t corio_sendfile(int out_fd, int in_fd, uint64_t *off,
				 size_t len);

/*
 * Networking: listening and connected sockets in one call each.
 * corio_listen(3), corio_dial(3), corio_accept_retry(3), corio_acceptor(3).
 */
#define CORIO_REUSEPORT	0x1	/* SO_REUSEPORT: several listeners, one port */
#define CORIO_V6ONLY	0x2	/* an IPv6 listener takes no IPv4 */
#define CORIO_UNLINK	0x4	/* unix: remove a stale socket file first */

CORIO_API int corio_listen(const char *host, int port, int backlog,
			   int flags);
CORIO_API int corio_dial(const char *host, int port);
CORIO_API int corio_listen_unix(const char *path, int backlog, int flags);
CORIO_API int corio_dial_unix(const char *path);
CORIO_API int corio_accept_retry(int fd, struct sockaddr *addr,
				 socklen_t *addrlen, int flags);

/* One multishot accept per listener, shared by the tasks that accept. */
typedef struct corio_acceptor corio_acceptor;

CORIO_API int corio_acceptor_new(int fd, corio_acceptor **out);
CORIO_API int corio_acceptor_accept(corio_acceptor *a);
CORIO_API int corio_acceptor_accept_addr(corio_acceptor *a,
					 struct sockaddr *addr,
					 socklen_t *addrlen);
CORIO_API int corio_acceptor_free(corio_acceptor *a);

/*
 * Blocking calls off the loop: asyncio.to_thread.  corio_run_blocking(3).
 */
CORIO_API int corio_run_blocking(corio_fn fn, void *arg);

/*
 * Signals as awaits.  corio_signal_wait(3).  sigset_t is POSIX, not ISO C:
 * it is declared whenever <signal.h> (included above) declares sigset_t.
 * That is always in the GNU modes (-std=gnu11) and in C++; in a strict ISO
 * mode (-std=c11) it takes a feature test macro before the first #include:
 * _POSIX_C_SOURCE (e.g. 200809L), _XOPEN_SOURCE, _GNU_SOURCE or
 * _DEFAULT_SOURCE.  glibc defines _POSIX_C_SOURCE or _POSIX_SOURCE for
 * every one of them, musl tests _GNU_SOURCE and _BSD_SOURCE as well.
 */
#if defined(_POSIX_SOURCE) || defined(_POSIX_C_SOURCE) || \
	defined(_XOPEN_SOURCE) || defined(_GNU_SOURCE) || \
	defined(_DEFAULT_SOURCE) || defined(_BSD_SOURCE)
CORIO_API int corio_signal_wait(const sigset_t *set);
#endif

/*
 * Synchronisation between the tasks of one loop: FIFO-fair, never
 * spinning, no syscall.  Every wait is a cancellation point and honours the
 * task's deadline.  corio_event(3), corio_mutex(3), corio_sem(3),
 * corio_cond(3), corio_queue(3).
 */
typedef struct corio_event corio_event;
typedef struct corio_mutex corio_mutex;
typedef struct corio_sem corio_sem;
typedef struct corio_cond corio_cond;
typedef struct corio_queue corio_queue;

CORIO_API int corio_event_new(corio_event **out);
CORIO_API int corio_event_free(corio_event *ev);
CORIO_API int corio_event_set(corio_event *ev);
CORIO_API int corio_event_clear(corio_event *ev);
CORIO_API int corio_event_is_set(const corio_event *ev);
CORIO_API int corio_event_wait(corio_event *ev);

CORIO_API int corio_mutex_new(corio_mutex **out);
CORIO_API int corio_mutex_free(corio_mutex *mu);
CORIO_API int corio_mutex_lock(corio_mutex *mu);
CORIO_API int corio_mutex_trylock(corio_mutex *mu);
CORIO_API int corio_mutex_unlock(corio_mutex *mu);

CORIO_API int corio_sem_new(unsigned int value, corio_sem **out);
CORIO_API int corio_sem_free(corio_sem *sem);
CORIO_API int corio_sem_acquire(corio_sem *sem);
CORIO_API int corio_sem_tryacquire(corio_sem *sem);
CORIO_API int corio_sem_release(corio_sem *sem);

CORIO_API int corio_cond_new(corio_cond **out);
CORIO_API int corio_cond_free(corio_cond *cond);
CORIO_API int corio_cond_wait(corio_cond *cond, corio_mutex *mu);
CORIO_API int corio_cond_signal(corio_cond *cond);
CORIO_API int corio_cond_broadcast(corio_cond *cond);

CORIO_API int corio_queue_new(size_t capacity, corio_queue **out);
CORIO_API int corio_queue_free(corio_queue *q);
CORIO_API int corio_queue_put(corio_queue *q, void *item);
CORIO_API int corio_queue_tryput(corio_queue *q, void *item);
CORIO_API int corio_queue_get(corio_queue *q, void **item);
CORIO_API int corio_queue_tryget(corio_queue *q, void **item);
CORIO_API int corio_queue_close(corio_queue *q);
CORIO_API size_t corio_queue_len(const corio_queue *q);

/*
 * Task groups: asyncio.TaskGroup, gather and wait(FIRST_COMPLETED).
 * corio_group(3).
 */
typedef struct corio_group corio_group;

CORIO_API int corio_group_new(corio_group **out);
CORIO_API corio_task *corio_group_spawn(corio_group *g, corio_fn fn,
					void *arg);
CORIO_API int corio_group_wait(corio_group *g);
CORIO_API int corio_group_wait_any(corio_group *g, corio_task **done,
				   int *result);
CORIO_API int corio_group_cancel(corio_group *g);
CORIO_API int corio_group_free(corio_group *g);

/*
 * Buffered streams over an fd: asyncio's StreamReader and StreamWriter.
 * corio_stream(3).
 */
typedef struct corio_stream corio_stream;

#define CORIO_STREAM_BUF_DEFAULT	(64u * 1024u)
/* Or'd into buf_size: read through a receiver on the loop's shared ring. */
#define CORIO_STREAM_BUFRING		((size_t)1 << (sizeof(size_t) * 8 - 1))

CORIO_API int corio_stream_new(int fd, size_t buf_size, corio_stream **out);
CORIO_API int corio_stream_fd(const corio_stream *s);
CORIO_API ssize_t corio_stream_read(corio_stream *s, void *buf, size_t len);
CORIO_API ssize_t corio_stream_readexactly(corio_stream *s, void *buf,
					   size_t len);
CORIO_API ssize_t corio_stream_readline(corio_stream *s, void *buf,
					size_t max);
CORIO_API ssize_t corio_stream_readuntil(corio_stream *s, const void *delim,
					 size_t delim_len, void *buf,
					 size_t max);
CORIO_API ssize_t corio_stream_write(corio_stream *s, const void *buf,
				     size_t len);
CORIO_API size_t corio_stream_buffered(const corio_stream *s);
CORIO_API const void *corio_stream_peek(const corio_stream *s, size_t *len);
CORIO_API int corio_stream_flush(corio_stream *s);
CORIO_API int corio_stream_close(corio_stream *s);
CORIO_API void corio_stream_free(corio_stream *s);

/*
 * TLS streams over OpenSSL: ctx is an SSL_CTX the caller configured
 * (certificates, verification, ALPN).  corio_tls(3).
 */
struct ssl_ctx_st;

CORIO_API int corio_tls_accept(int fd, struct ssl_ctx_st *ctx,
			       corio_stream **out);
CORIO_API int corio_tls_connect(int fd, struct ssl_ctx_st *ctx,
				const char *servername, corio_stream **out);
CORIO_API int corio_tls_error(const corio_stream *s, char *buf, size_t len);

/*
 * Subprocesses: asyncio.create_subprocess_exec.  corio_process(3).
 */
typedef struct corio_process corio_process;

#define CORIO_PROCESS_STDIN	0x1	/* a pipe to the child's stdin */
#define CORIO_PROCESS_STDOUT	0x2	/* a pipe from its stdout */
#define CORIO_PROCESS_STDERR	0x4	/* a pipe from its stderr */

CORIO_API int corio_process_spawn(const char *path, char *const argv[],
				  char *const envp[], int flags,
				  corio_process **out);
CORIO_API pid_t corio_process_pid(const corio_process *p);
CORIO_API int corio_process_stdin(const corio_process *p);
CORIO_API int corio_process_stdout(const corio_process *p);
CORIO_API int corio_process_stderr(const corio_process *p);
CORIO_API int corio_process_wait(corio_process *p);
CORIO_API int corio_process_kill(corio_process *p, int sig);
CORIO_API int corio_process_free(corio_process *p);

/*
 * Introspection: python -m asyncio ps.  corio_dump(3).
 */
CORIO_API int corio_dump(FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* CORIO_H */
