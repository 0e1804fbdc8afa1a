/*
 * diagnose.c - why io_uring_setup failed: one line on stderr with its
 * likely cause.
 *
 * Cold code, run once when corio_run cannot make its ring.  The causes,
 * checked in this order: the sysctl kernel.io_uring_disabled (Linux 6.6 and
 * later; it refuses with -EPERM), a seccomp filter (the default profiles of
 * docker, podman and containerd and systemd's SystemCallFilter= refuse
 * io_uring, with -EPERM or -ENOSYS), a kernel older than corio's minimum,
 * RLIMIT_MEMLOCK (-ENOMEM: without CAP_IPC_LOCK, the kernel charges the
 * rings to it; kernels before 5.12 did, and recent ones do again, seen on
 * 6.18; a closed ring's share comes back only when the kernel frees it),
 * and for -ENOSYS a kernel without io_uring.  Only the first cause that
 * applies is named; with none, the line is the bare error.
 *
 * Everything is read from files under a proc root, "/proc" for loop.c and
 * a directory of fake files for tests/test-diagnose.c, so each cause is
 * tested without changing the machine.  corio(7), under Containers,
 * explains each message.  Calls nothing else of corio.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "corio-int.h"

/* corio's minimum kernel (DESIGN.md): 6.1, Debian 12's. */
#define KERNEL_MIN_MAJOR	6
#define KERNEL_MIN_MINOR	1

#define CAP_IPC_LOCK_BIT	14
#define CAP_SYS_ADMIN_BIT	21

/*
 * proc/name into buf, NUL-terminated; its length, or -1 if unreadable.
 */
static CORIO_COLD int proc_read(const char *proc, const char *name,
				char *buf, size_t len)
{
	char path[4096];
	ssize_t n;
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", proc, name) >=
	    (int)sizeof(path))
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	do
		n = read(fd, buf, len - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return (int)n;
}

/*
 * The number after "key:" at the start of a line of a /proc status file,
 * in base; def if there is no such line.
 */
static CORIO_COLD unsigned long long status_field(const char *status,
						  const char *key, int base,
						  unsigned long long def)
{
	size_t klen = strlen(key);
	const char *p;

	for (p = status; *p; p++) {
		if (!strncmp(p, key, klen) && p[klen] == ':')
			return strtoull(p + klen + 1, NULL, base);
		p = strchr(p, '\n');
		if (!p)
			break;
	}
	return def;
}

/* Is gid this process's effective group or one of its supplementary? */
static CORIO_COLD bool in_group(gid_t gid)
{
	gid_t groups[256];
	int i, nr;

	if (getegid() == gid)
		return true;
	nr = getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (i = 0; i < nr; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/*
 * With kernel.io_uring_disabled=1, may this process use io_uring anyway?
 * The kernel lets through CAP_SYS_ADMIN in the initial user namespace
 * (the identity uid_map) and the members of kernel.io_uring_group.
 */
static CORIO_COLD bool sysctl_exempt(const char *proc, const char *status)
{
	unsigned long long caps = status_field(status, "CapEff", 16, 0);
	char buf[256];
	unsigned long a, b, c;
	long gid;

	if (((caps >> CAP_SYS_ADMIN_BIT) & 1) &&
	    proc_read(proc, "self/uid_map", buf, sizeof(buf)) > 0 &&
	    sscanf(buf, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 &&
	    c == 4294967295ul)
		return true;
	if (proc_read(proc, "sys/kernel/io_uring_group", buf,
		      sizeof(buf)) <= 0)
		return false;
	gid = strtol(buf, NULL, 10);
	return gid >= 0 && in_group((gid_t)gid);
}

/*
 * RLIMIT_MEMLOCK's soft limit in bytes, from proc's self/limits; 0 if it
 * is unlimited or unknown.
 */
static CORIO_COLD unsigned long long memlock_limit(const char *proc)
{
	static const char key[] = "Max locked memory";
	char buf[4096], *p;

	if (proc_read(proc, "self/limits", buf, sizeof(buf)) <= 0)
		return 0;
	p = strstr(buf, key);
	if (!p)
		return 0;
	p += sizeof(key) - 1;
	p += strspn(p, " \t");
	return *p >= '0' && *p <= '9' ? strtoull(p, NULL, 10) : 0;
}

/* The kernel's release, from proc (or uname), cut at the first space. */
static CORIO_COLD void kernel_release(const char *proc, char *buf,
				      size_t len)
{
	struct utsname u;

	if (proc_read(proc, "sys/kernel/osrelease", buf, len) <= 0) {
		if (uname(&u) < 0)
			u.release[0] = 0;
		snprintf(buf, len, "%s", u.release);
	}
	buf[strcspn(buf, " \t\n")] = 0;
}

/* Does release name a kernel older than corio's minimum? */
static CORIO_COLD bool kernel_old(const char *release)
{
	unsigned int major, minor;

	if (sscanf(release, "%u.%u", &major, &minor) != 2)
		return false;
	return major < KERNEL_MIN_MAJOR ||
	       (major == KERNEL_MIN_MAJOR && minor < KERNEL_MIN_MINOR);
}

CORIO_COLD void corio__diagnose_setup(int err, const char *proc)
{
	char status[8192], release[128], buf[64], cause[512];
	bool refused = err == -EPERM || err == -ENOSYS;
	unsigned long long caps, memlock;
	long disabled = 0;

	cause[0] = 0;
	if (proc_read(proc, "self/status", status, sizeof(status)) < 0)
		status[0] = 0;
	if (proc_read(proc, "sys/kernel/io_uring_disabled", buf,
		      sizeof(buf)) > 0)
		disabled = strtol(buf, NULL, 10);
	kernel_release(proc, release, sizeof(release));
	/* Unknown capabilities are taken for all of them. */
	caps = status_field(status, "CapEff", 16, ~0ull);
	memlock = err == -ENOMEM ? memlock_limit(proc) : 0;

	if (err == -EPERM && disabled == 1 && !sysctl_exempt(proc, status))
		snprintf(cause, sizeof(cause), " (kernel.io_uring_disabled=1: "
			 "io_uring is only for CAP_SYS_ADMIN and the group in "
			 "kernel.io_uring_group; run in that group, or set "
			 "kernel.io_uring_disabled=0)");
	else if (err == -EPERM && disabled > 1)
		snprintf(cause, sizeof(cause), " (kernel.io_uring_disabled="
			 "%ld: io_uring is off for every process; "
			 "sysctl kernel.io_uring_disabled=0 turns it on)",
			 disabled);
	else if (refused && (status_field(status, "Seccomp", 10, 0) == 2 ||
			     status_field(status, "Seccomp_filters", 10, 0)))
		snprintf(cause, sizeof(cause), " (refused by a seccomp "
			 "filter: probably the default profile of the "
			 "container runtime (docker, podman, containerd) or "
			 "systemd's SystemCallFilter=; allow io_uring_setup, "
			 "io_uring_enter and io_uring_register, e.g. with "
			 "share/corio/seccomp-io_uring.json: see corio(7))");
	else if (kernel_old(release))
		snprintf(cause, sizeof(cause), " (kernel %s is older than "
			 "%d.%d, the oldest corio supports)", release,
			 KERNEL_MIN_MAJOR, KERNEL_MIN_MINOR);
	else if (memlock && !((caps >> CAP_IPC_LOCK_BIT) & 1))
		snprintf(cause, sizeof(cause), " (without CAP_IPC_LOCK, "
			 "io_uring's rings count against RLIMIT_MEMLOCK, %llu "
			 "KiB here: raise it (ulimit -l; --ulimit "
			 "memlock=-1:-1 for docker and podman; LimitMEMLOCK= "
			 "for systemd))", memlock / 1024);
	else if (err == -ENOSYS)
		snprintf(cause, sizeof(cause), " (this kernel offers no "
			 "io_uring: built without CONFIG_IO_URING, or a "
			 "sandbox such as gVisor)");
	fprintf(stderr, "corio: io_uring_setup: %s%s\n", strerror(-err),
		cause);
}
