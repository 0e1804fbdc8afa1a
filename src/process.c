/*
 * process.c - subprocesses: asyncio.create_subprocess_exec.
 *
 * A corio_process owns the pidfd of one child, from corio_process_spawn
 * until corio_process_free, and nothing else: the pipe ends it makes are
 * the caller's from the start (close-on-exec on this side).  Invariants:
 * - once reaped is set, status holds the child's waitpid(2)-style status
 *   and the child is gone: nothing signals or waits for its pid again, so
 *   a recycled pid is never hit;
 * - pidfd is -1 only when pidfd_open failed with ENOSYS (pidfd_err says
 *   so: valgrind 3.19 does not know it, for one); then kill and free use
 *   the pid, and waits use IORING_OP_WAITID on the pid (safe: the child
 *   is ours and unreaped, so its pid is not recycled) or fail with that
 *   error where the ring lacks the op;
 * - corio_process_free leaves no zombie: it kills and reaps an unreaped
 *   child.
 *
 * Waiting is one await on the ring: IORING_OP_WAITID on the pidfd when the
 * kernel has it (Linux 6.7; probed once per process), else a POLL_ADD on
 * the pidfd, which turns readable when the child exits, and a waitid(2)
 * with WNOHANG.  Both go through corio_sqe/corio_await or corio_poll
 * (io.c), so deadlines and cancellation apply and a cancelled wait leaves
 * the child running.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corio-int.h"

#if CORIO_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#define vg_defined(p, n)	VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define vg_defined(p, n)	((void)(p), (void)(n))
#endif

/* IORING_OP_WAITID (Linux 6.7): not in liburing 2.3. */
#define OP_WAITID	50

#define PROCESS_FLAGS	(CORIO_PROCESS_STDIN | CORIO_PROCESS_STDOUT | \
			 CORIO_PROCESS_STDERR)

extern char **environ;

struct corio_process {
	pid_t pid;
	int pidfd;		/* -1 when pidfd_open failed with ENOSYS */
	int pidfd_err;		/* then -ENOSYS, else 0 */
	int fds[3];		/* the caller's ends of the pipes, or -1 */
	int status;		/* waitpid(2)-style; valid once reaped */
	bool reaped;
};

/*
 * Whether IORING_OP_WAITID is used: probed once per process, cleared for
 * good when a kernel refuses a WAITID on a pidfd with -EINVAL.  Relaxed
 * atomics: any thread's loop may clear it, and a stale read costs one
 * refused SQE.
 */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static atomic_bool use_waitid;

/*
 * io_uring_get_probe sets up a small ring of its own: the loop's ring is
 * loop.c's, and the answer is the same for every ring of the process.
 * CORIO_NO_WAITID=1 forces the poll path (a debugging aid, and how the
 * tests cover it).
 */
static void probe(void)
{
	const char *s = getenv("CORIO_NO_WAITID");
	struct io_uring_probe *pr;

	if (s && *s && strcmp(s, "0") != 0)
		return;
	pr = io_uring_get_probe();
	if (!pr)
		return;
	atomic_store_explicit(&use_waitid,
			      io_uring_opcode_supported(pr, OP_WAITID),
			      memory_order_relaxed);
	io_uring_free_probe(pr);
}

static bool waitid_usable(void)
{
	pthread_once(&probe_once, probe);
	return atomic_load_explicit(&use_waitid, memory_order_relaxed);
}

/* For tests/test-process.c: which path corio_process_wait takes. */
int corio__process_has_waitid(void)
{
	return waitid_usable();
}

/*
 * A pipe for the child's fd target; the caller's end goes to *mine, the
 * child's to *theirs.  Both are close-on-exec (the child's dup2 onto 0/1/2
 * clears it there).  The child's end is moved to 3 or above, so that no
 * dup2 of the spawn lands on a pipe end another dup2 still has to read,
 * which could happen when the caller runs with fd 0, 1 or 2 closed.
 */
static int make_pipe(int target, int *mine, int *theirs)
{
	int fds[2], child, fd;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	child = target == STDIN_FILENO ? 0 : 1;
	if (fds[child] < 3) {
		fd = fcntl(fds[child], F_DUPFD_CLOEXEC, 3);
		if (fd < 0) {
			fd = -errno;
			close(fds[0]);
			close(fds[1]);
			return fd;
		}
		close(fds[child]);
		fds[child] = fd;
	}
	*theirs = fds[child];
	*mine = fds[!child];
	return 0;
}

/*
 * The child starts with every signal at its default disposition (SIGPIPE
 * included, which corio_run ignores in the parent) and an empty mask, so
 * it behaves as if started from a shell.
 *
 * The default set is all ones rather than sigfillset's: glibc (2.36 here)
 * and musl set their internal signals (glibc's 32 and 33) to SIG_IGN in
 * every posix_spawn child unless the default set names them, and an
 * ignored signal stays ignored across exec; sigfillset and sigaddset
 * refuse to name them.  Every libc on Linux keeps sigset_t as a bit mask,
 * and both reset each signal whose bit is set.  test_child_signals_at_
 * default sees SigIgn 0x180000000 in the child without this.
 */
static int spawn_attr(posix_spawnattr_t *attr)
{
	sigset_t all, none;
	int err;

	memset(&all, 0xff, sizeof(all));
	sigemptyset(&none);
	err = posix_spawnattr_init(attr);
	if (err)
		return -err;
	err = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF |
					     POSIX_SPAWN_SETSIGMASK);
	if (!err)
		err = posix_spawnattr_setsigdefault(attr, &all);
	if (!err)
		err = posix_spawnattr_setsigmask(attr, &none);
	if (err) {
		posix_spawnattr_destroy(attr);
		return -err;
	}
	return 0;
}

/* Reaps a child that the caller will never see (blocks until it is gone). */
static void reap_pid(pid_t pid)
{
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

static void close_fds(int *fds, int nr)
{
	int i;

	for (i = 0; i < nr; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

int corio_process_spawn(const char *path, char *const argv[],
			char *const envp[], int flags, corio_process **out)
{
	int child_fds[3] = { -1, -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	corio_process *p;
	pid_t pid;
	int i, ret;

	if (out)
		*out = NULL;
	if (!path || !argv || !out || (flags & ~PROCESS_FLAGS))
		return -EINVAL;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->pidfd = -1;
	p->pidfd_err = 0;
	p->status = 0;
	p->reaped = false;
	for (i = 0; i < 3; i++)
		p->fds[i] = -1;

	ret = -posix_spawn_file_actions_init(&fa);
	if (ret < 0)
		goto err_free;
	for (i = 0; i < 3 && ret == 0; i++) {
		if (!(flags & (CORIO_PROCESS_STDIN << i)))
			continue;
		ret = make_pipe(i, &p->fds[i], &child_fds[i]);
		if (ret == 0)
			ret = -posix_spawn_file_actions_adddup2(&fa,
								child_fds[i],
								i);
	}
	if (ret == 0)
		ret = spawn_attr(&attr);
	if (ret == 0) {
		/* With no '/' in path, posix_spawnp searches the PATH. */
		ret = -posix_spawnp(&pid, path, &fa, &attr, argv,
				    envp ? envp : environ);
		posix_spawnattr_destroy(&attr);
	}
	/* The child has its copies by now, or there is no child. */
	close_fds(child_fds, 3);
	posix_spawn_file_actions_destroy(&fa);
	if (ret < 0)
		goto err_close_pipes;
	p->pid = pid;

	/*
	 * Nothing else waits for our children (unless the program reaps
	 * every child with wait(2) or ignores SIGCHLD: corio_process(3)),
	 * so pid still names this child here.  pidfds are always
	 * close-on-exec.
	 */
	p->pidfd = pidfd_open(pid, 0);
	if (p->pidfd < 0) {
		ret = -errno;
		if (ret == -ESRCH) {
			/* Reaped behind our back: the pid is not ours now. */
			ret = -ECHILD;
			goto err_close_pipes;
		}
		if (ret != -ENOSYS)
			goto err_kill;
		p->pidfd_err = ret;
	}
	*out = p;
	return 0;

err_kill:
	/* ENOMEM and the like: no wait could ever reap it, so do it now. */
	kill(pid, SIGKILL);
	reap_pid(pid);
err_close_pipes:
	close_fds(p->fds, 3);
err_free:
	free(p);
	return ret;
}

pid_t corio_process_pid(const corio_process *p)
{
	return p ? p->pid : -EINVAL;
}

int corio_process_stdin(const corio_process *p)
{
	return p ? p->fds[STDIN_FILENO] : -EINVAL;
}

int corio_process_stdout(const corio_process *p)
{
	return p ? p->fds[STDOUT_FILENO] : -EINVAL;
}

int corio_process_stderr(const corio_process *p)
{
	return p ? p->fds[STDERR_FILENO] : -EINVAL;
}

/*
 * Records what waitid reported as a waitpid(2) status.  With WEXITED
 * alone the kernel reports only these three codes.
 */
static int reaped(corio_process *p, const siginfo_t *si)
{
	switch (si->si_code) {
	case CLD_EXITED:
		p->status = (si->si_status & 0xff) << 8;
		break;
	case CLD_KILLED:
		p->status = si->si_status & 0x7f;
		break;
	case CLD_DUMPED:
		p->status = (si->si_status & 0x7f) | 0x80;
		break;
	default:
		corio__bug("waitid(WEXITED) reported neither an exit nor a "
			   "signal");
	}
	p->reaped = true;
	return p->status;
}

/*
 * Another task waiting for the same child may have reaped it first: the
 * kernel then answers -ECHILD, and the status is already recorded.
 */
static int wait_error(const corio_process *p, int err)
{
	return err == -ECHILD && p->reaped ? p->status : err;
}

/*
 * The fallback, and the path of kernels before 6.7: the pidfd polls
 * readable once the child is a zombie, so the waitid never blocks the
 * loop.  It finds nothing only when someone else reaped the child
 * (-ECHILD), or never; the loop is a guard, not a retry policy.
 */
static int wait_poll(corio_process *p)
{
	siginfo_t si;
	int ret;

	for (;;) {
		ret = corio_poll(p->pidfd, POLLIN);
		if (ret < 0)
			return wait_error(p, ret);
		memset(&si, 0, sizeof(si));
		if (waitid(P_PIDFD, (id_t)p->pidfd, &si,
			   WEXITED | WNOHANG) < 0) {
			if (errno == EINTR)
				continue;
			return wait_error(p, -errno);
		}
		if (p->reaped)
			return p->status;
		if (si.si_pid)
			return reaped(p, &si);
	}
}

/*
 * One IORING_OP_WAITID, filled as newer liburing's io_uring_prep_waitid
 * does: fd = the id, len = the idtype, file_index = the options, addr2 =
 * the siginfo, waitid_flags (rw_flags) = 0.  The kernel writes si when the
 * child exits; corio_await returns only after the CQE, so si may live on
 * this stack.
 */
static int wait_ring(corio_process *p)
{
	struct io_uring_sqe *sqe;
	siginfo_t si;
	int ret;

	memset(&si, 0, sizeof(si));
	sqe = corio_sqe();
	if (p->pidfd >= 0)
		io_uring_prep_rw(OP_WAITID, sqe, p->pidfd, NULL, P_PIDFD, 0);
	else
		io_uring_prep_rw(OP_WAITID, sqe, p->pid, NULL, P_PID, 0);
	sqe->file_index = WEXITED;
	sqe->addr2 = (uint64_t)(uintptr_t)&si;
	ret = corio_await(sqe);
	if (ret == -EINVAL && !p->reaped && p->pidfd >= 0) {
		/*
		 * A kernel with IORING_OP_WAITID that refuses P_PIDFD: none
		 * is known (both arrived with it in 6.7), but the poll path
		 * always works.
		 */
		atomic_store_explicit(&use_waitid, false,
				      memory_order_relaxed);
		return wait_poll(p);
	}
	if (ret < 0)
		return wait_error(p, ret);
	vg_defined(&si, sizeof(si));
	if (p->reaped)
		return p->status;
	return reaped(p, &si);
}

int corio_process_wait(corio_process *p)
{
	if (!p)
		return -EINVAL;
	if (p->reaped)
		return p->status;
	if (waitid_usable())
		return wait_ring(p);
	if (p->pidfd < 0)
		return p->pidfd_err;
	return wait_poll(p);
}

int corio_process_kill(corio_process *p, int sig)
{
	int ret;

	if (!p)
		return -EINVAL;
	if (p->reaped)
		return -ESRCH;
	if (p->pidfd >= 0)
		ret = pidfd_send_signal(p->pidfd, sig, NULL, 0);
	else
		ret = kill(p->pid, sig);
	return ret < 0 ? -errno : 0;
}

/*
 * Blocks the thread while the kernel kills the child: SIGKILL cannot be
 * caught, so this is short unless the child sits in an uninterruptible
 * sleep.  An -ECHILD (someone else reaped it) ends the wait too.
 */
int corio_process_free(corio_process *p)
{
	siginfo_t si;

	if (!p)
		return 0;
	if (!p->reaped && p->pidfd >= 0) {
		pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
		while (waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED) < 0 &&
		       errno == EINTR)
			;
	} else if (!p->reaped) {
		kill(p->pid, SIGKILL);
		reap_pid(p->pid);
	}
	if (p->pidfd >= 0)
		close(p->pidfd);
	free(p);
	return 0;
}
