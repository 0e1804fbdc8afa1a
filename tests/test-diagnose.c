/*
 * test-diagnose.c - the line corio_run prints when io_uring_setup fails
 * (src/diagnose.c), and the seccomp profile shipped for containers
 * (share/seccomp-io_uring.json).
 *
 * The first tests install a real seccomp filter in a fork child, as a
 * container runtime does, and read what the child printed on stderr.  The
 * others point corio__diagnose_setup at a fake proc root, a directory of
 * the files it reads (the sysctl, self/status, the kernel release), so
 * every cause is tested on any machine without touching the real sysctl.
 * The profile test parses the JSON and checks its io_uring rule.
 */
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "faults.h"

#define CHILD_SKIP	77

#define PROFILE		"share/seccomp-io_uring.json"

static const char *const io_uring_calls[] = {
	"io_uring_setup", "io_uring_enter", "io_uring_register",
};

static int set_flag(void *arg)
{
	*(int *)arg = 1;
	return 0;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* "corio: io_uring_setup: <strerror(err)>", the start of every line. */
static void prefix_of(int err, char *buf, size_t len)
{
	snprintf(buf, len, "corio: io_uring_setup: %s", strerror(err));
}

/* Asserts out is exactly one line that starts with err's prefix. */
static void assert_one_line(const char *out, int err)
{
	char want[256];
	size_t len = strlen(out);

	prefix_of(err, want, sizeof(want));
	print_message("said: %s", out);
	assert_int_equal(count_lines(out), 1);
	assert_true(len > 1 && out[len - 1] == '\n');
	assert_int_equal(strncmp(out, want, strlen(want)), 0);
}

/* The real sysctl's value; 0 where it does not exist (before 6.6). */
static long real_io_uring_disabled(void)
{
	char buf[32] = { 0 };
	int fd = open("/proc/sys/kernel/io_uring_disabled",
		      O_RDONLY | O_CLOEXEC);
	long v = 0;

	if (fd < 0)
		return 0;
	if (read(fd, buf, sizeof(buf) - 1) > 0)
		v = strtol(buf, NULL, 10);
	close(fd);
	return v;
}

/* The child's loop ran main: corio_run did not fail. */
#define CHILD_RAN	5

/*
 * In a fork child made by prepare(err) to refuse io_uring_setup with err
 * (prepare < 0: it cannot, and the test skips): corio_run returns -err
 * without running main, and its one line of stderr lands in out.  If
 * may_run, a loop that runs anyway is a skip (the kernel did not refuse).
 */
static void setup_in_child(int (*prepare)(int err), int err, bool may_run,
			   char *out, size_t size)
{
	size_t len = 0;
	ssize_t n;
	int pfd[2], status;
	pid_t pid;

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int flag = 0, ret;

		if (dup2(pfd[1], STDERR_FILENO) < 0)
			_exit(2);
		if (prepare(err) < 0)
			_exit(CHILD_SKIP);
		ret = corio_run(set_flag, &flag);
		if (ret == 0 && flag)
			_exit(CHILD_RAN);
		_exit(ret == -err && !flag ? 0 : 3);
	}
	close(pfd[1]);
	while (len < size - 1 &&
	       (n = read(pfd[0], out + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(pfd[0]);
	out[len] = 0;
	status = child_wait(pid);
	if (status == CHILD_SKIP || (may_run && status == CHILD_RAN))
		skip();
	if (status != 0)
		print_message("child stderr: %s", out);
	assert_int_equal(status, 0);
}

/* A seccomp filter as docker's (EPERM) and podman's (ENOSYS) profiles. */
static int refuse_io_uring(int err)
{
	return refuse_syscall(__NR_io_uring_setup, err);
}

static void setup_under_seccomp(int err, char *out, size_t size)
{
	if (UNDER_VALGRIND())
		skip();		/* valgrind does not know seccomp */
	setup_in_child(refuse_io_uring, err, false, out, size);
}

static void assert_names_seccomp(const char *out)
{
	assert_non_null(strstr(out, "refused by a seccomp filter"));
	assert_non_null(strstr(out, "docker, podman, containerd"));
	assert_non_null(strstr(out, "io_uring_setup, io_uring_enter and "
			       "io_uring_register"));
	assert_non_null(strstr(out, "share/corio/seccomp-io_uring.json"));
	assert_non_null(strstr(out, "corio(7)"));
}

/* Docker's default profile refuses io_uring_setup with EPERM. */
static void test_seccomp_eperm_names_seccomp(void **state)
{
	char out[4096];

	(void)state;
	/* The sysctl comes first when it refuses too: the fake-root tests
	 * cover that order. */
	if (real_io_uring_disabled() != 0)
		skip();
	setup_under_seccomp(EPERM, out, sizeof(out));
	assert_one_line(out, EPERM);
	assert_names_seccomp(out);
}

/* Podman's (containers/common's) refuses it with ENOSYS. */
static void test_seccomp_enosys_names_seccomp(void **state)
{
	char out[4096];

	(void)state;
	setup_under_seccomp(ENOSYS, out, sizeof(out));
	assert_one_line(out, ENOSYS);
	assert_names_seccomp(out);
}

#define MEMLOCK_SMALL	(64 * 1024)	/* less than one ring */

/*
 * No CAP_IPC_LOCK (as in a container, or for any user but root) and a
 * small RLIMIT_MEMLOCK: a kernel that charges the rings to it refuses
 * the ring with ENOMEM.
 */
static int no_memlock(int err)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[2];
	struct rlimit rl = { MEMLOCK_SMALL, MEMLOCK_SMALL };

	(void)err;
	if (syscall(SYS_capget, &hdr, data) < 0)
		return -1;
	data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &=
		~CAP_TO_MASK(CAP_IPC_LOCK);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -1;
	return setrlimit(RLIMIT_MEMLOCK, &rl);
}

/* Kernels that do not charge the rings to RLIMIT_MEMLOCK skip this. */
static void test_memlock_is_named(void **state)
{
	char out[4096], want[128];

	(void)state;
	setup_in_child(no_memlock, ENOMEM, true, out, sizeof(out));
	assert_one_line(out, ENOMEM);
	snprintf(want, sizeof(want), " (without CAP_IPC_LOCK, io_uring's "
		 "rings count against RLIMIT_MEMLOCK, %d KiB here: ",
		 MEMLOCK_SMALL / 1024);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "--ulimit memlock=-1:-1"));
}

/*
 * A fake proc root: each field is the content of one file, NULL for a
 * file that does not exist.
 */
struct fake_proc {
	const char *disabled;	/* sys/kernel/io_uring_disabled */
	const char *group;	/* sys/kernel/io_uring_group */
	const char *osrelease;	/* sys/kernel/osrelease */
	const char *status;	/* self/status */
	const char *uid_map;	/* self/uid_map */
	const char *limits;	/* self/limits */
};

static const char *const fake_files[] = {
	"sys/kernel/io_uring_disabled", "sys/kernel/io_uring_group",
	"sys/kernel/osrelease", "self/status", "self/uid_map", "self/limits",
};

static const char *const fake_dirs[] = { "sys/kernel", "sys", "self" };

/* self/status of a process under no seccomp filter, and under one. */
#define STATUS_FREE	"Name:\tt\nCapEff:\t0000000000000000\n" \
			"Seccomp:\t0\nSeccomp_filters:\t0\n"
#define STATUS_FILTERED	"Name:\tt\nCapEff:\t00000000a80425fb\n" \
			"Seccomp:\t2\nSeccomp_filters:\t1\n"
/* Full capabilities, CAP_SYS_ADMIN (bit 21) among them. */
#define STATUS_ADMIN	"Name:\tt\nCapEff:\t000001ffffffffff\n" \
			"Seccomp:\t0\nSeccomp_filters:\t0\n"
#define UID_MAP_INIT	"         0          0 4294967295\n"
#define UID_MAP_USERNS	"         0     100000      65536\n"
#define RELEASE_NEW	"6.12.38+deb13-amd64\n"

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* Makes fp under a new temporary directory and returns its path in dir. */
static void fake_make(const struct fake_proc *fp, char *dir, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	const char *text[] = {
		fp->disabled, fp->group, fp->osrelease, fp->status,
		fp->uid_map, fp->limits,
	};
	char path[1024];
	size_t i;

	snprintf(dir, len, "%s/corio-diagnose.XXXXXX", tmp && *tmp ? tmp :
		 "/tmp");
	assert_non_null(mkdtemp(dir));
	for (i = ARRAY_SIZE(fake_dirs); i-- > 0;) {
		snprintf(path, sizeof(path), "%s/%s", dir, fake_dirs[i]);
		assert_int_equal(mkdir(path, 0700), 0);
	}
	for (i = 0; i < ARRAY_SIZE(fake_files); i++)
		if (text[i])
			write_file(dir, fake_files[i], text[i]);
}

static void fake_remove(const char *dir)
{
	char path[1024];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(fake_files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, fake_files[i]);
		unlink(path);
	}
	for (i = 0; i < ARRAY_SIZE(fake_dirs); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, fake_dirs[i]);
		rmdir(path);
	}
	assert_int_equal(rmdir(dir), 0);
}

/* What corio__diagnose_setup(-err, proc) prints on stderr, into out. */
static void diagnose_said(int err, const char *proc, char *out, size_t size)
{
	size_t len = 0;
	ssize_t n;
	int pfd[2], saved;

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(pfd[1], STDERR_FILENO) >= 0);
	corio__diagnose_setup(-err, proc);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	close(pfd[1]);
	/* One line fits in the pipe: the read comes after the write. */
	while (len < size - 1 &&
	       (n = read(pfd[0], out + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(pfd[0]);
	out[len] = 0;
}

/* The line for err with the files of fp, checked to be one line. */
static void diagnose_fake(const struct fake_proc *fp, int err, char *out,
			  size_t size)
{
	char dir[512];

	fake_make(fp, dir, sizeof(dir));
	diagnose_said(err, dir, out, size);
	fake_remove(dir);
	assert_one_line(out, err);
}

/* kernel.io_uring_disabled=2 (Linux 6.6+): off for everyone. */
static void test_sysctl_2_is_named(void **state)
{
	const struct fake_proc fp = {
		.disabled = "2\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = STATUS_FILTERED, .uid_map = UID_MAP_INIT,
	};
	char out[1024];

	(void)state;
	/* It wins over a seccomp filter, which may not be the one refusing. */
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_non_null(strstr(out, " (kernel.io_uring_disabled=2: io_uring "
			       "is off for every process; sysctl "
			       "kernel.io_uring_disabled=0 turns it on)\n"));
	assert_null(strstr(out, "seccomp filter"));
}

/* =1: only CAP_SYS_ADMIN and the group kernel.io_uring_group. */
static void test_sysctl_1_is_named(void **state)
{
	const struct fake_proc fp = {
		.disabled = "1\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = STATUS_FREE, .uid_map = UID_MAP_INIT,
	};
	char out[1024];

	(void)state;
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_non_null(strstr(out, " (kernel.io_uring_disabled=1: "));
	assert_non_null(strstr(out, "kernel.io_uring_group"));
}

/*
 * =1 lets through CAP_SYS_ADMIN in the initial user namespace: such a
 * process refused is refused by something else (here, seccomp).
 */
static void test_sysctl_1_spares_admin(void **state)
{
	struct fake_proc fp = {
		.disabled = "1\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = STATUS_ADMIN, .uid_map = UID_MAP_INIT,
	};
	char out[1024];

	(void)state;
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_null(strstr(out, "kernel.io_uring_disabled"));
	fp.status = "CapEff:\t000001ffffffffff\nSeccomp:\t2\n";
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_null(strstr(out, "kernel.io_uring_disabled"));
	assert_names_seccomp(out);
	/* In a user namespace the capability does not count. */
	fp.uid_map = UID_MAP_USERNS;
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_non_null(strstr(out, "kernel.io_uring_disabled=1"));
}

/* =1 lets through the members of kernel.io_uring_group too. */
static void test_sysctl_1_spares_group(void **state)
{
	char group[32], out[1024];
	struct fake_proc fp = {
		.disabled = "1\n", .group = group, .osrelease = RELEASE_NEW,
		.status = STATUS_FILTERED, .uid_map = UID_MAP_USERNS,
	};

	(void)state;
	snprintf(group, sizeof(group), "%u\n", (unsigned int)getegid());
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_null(strstr(out, "kernel.io_uring_disabled"));
	assert_names_seccomp(out);
}

/* The sysctl refuses with EPERM only: other errors are not its doing. */
static void test_sysctl_only_for_eperm(void **state)
{
	const struct fake_proc fp = {
		.disabled = "2\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = STATUS_FREE, .uid_map = UID_MAP_INIT,
	};
	char out[1024], want[256];

	(void)state;
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	prefix_of(ENOMEM, want, sizeof(want));
	strcat(want, "\n");
	assert_string_equal(out, want);
}

/* Before 6.6 there is no sysctl; 0 means on. */
static void test_sysctl_absent_or_0_is_ignored(void **state)
{
	struct fake_proc fp = {
		.disabled = NULL, .group = NULL, .osrelease = RELEASE_NEW,
		.status = STATUS_FREE, .uid_map = UID_MAP_INIT,
	};
	char out[1024], want[256];

	(void)state;
	prefix_of(EPERM, want, sizeof(want));
	strcat(want, "\n");
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_string_equal(out, want);
	fp.disabled = "0\n";
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_string_equal(out, want);
}

/* Seccomp: 2 or Seccomp_filters: N > 0, with EPERM or ENOSYS. */
static void test_seccomp_from_status(void **state)
{
	struct fake_proc fp = {
		.disabled = "0\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = "Seccomp:\t2\n", .uid_map = UID_MAP_INIT,
	};
	char out[1024];

	(void)state;
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_names_seccomp(out);
	fp.status = "Name:\tt\nSeccomp:\t0\nSeccomp_filters:\t3\n";
	diagnose_fake(&fp, ENOSYS, out, sizeof(out));
	assert_names_seccomp(out);
	/* A filter does not explain an ENOMEM. */
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_null(strstr(out, "seccomp"));
}

/* A kernel older than 6.1, whatever the error. */
static void test_old_kernel_is_named(void **state)
{
	static const char *const old[] = {
		"5.15.0-91-generic\n", "6.0.12\n", "4.19.0-27-amd64 #1\n",
	};
	struct fake_proc fp = {
		.disabled = NULL, .group = NULL, .status = STATUS_FREE,
		.uid_map = UID_MAP_INIT,
	};
	char out[1024];
	size_t i;

	(void)state;
	fp.osrelease = old[0];
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_non_null(strstr(out, " (kernel 5.15.0-91-generic is older "
			       "than 6.1, the oldest corio supports)\n"));
	for (i = 1; i < ARRAY_SIZE(old); i++) {
		fp.osrelease = old[i];
		diagnose_fake(&fp, ENOSYS, out, sizeof(out));
		assert_non_null(strstr(out, "is older than 6.1"));
	}
	fp.osrelease = "6.1.0-18-amd64\n";
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_null(strstr(out, "older"));
}

#define LIMITS(memlock)	"Limit                     Soft Limit           Hard " \
			"Limit           Units     \n" \
			"Max open files            1024                 " \
			"524288               files     \n" \
			"Max locked memory         " memlock "              " \
			"8388608              bytes     \n"

/* ENOMEM, RLIMIT_MEMLOCK finite, no CAP_IPC_LOCK: the limit is named. */
static void test_memlock_from_limits(void **state)
{
	struct fake_proc fp = {
		.disabled = "0\n", .group = "-1\n", .osrelease = RELEASE_NEW,
		.status = STATUS_FREE, .uid_map = UID_MAP_INIT,
		.limits = LIMITS("8388608"),
	};
	char out[1024], plain[256];

	(void)state;
	prefix_of(ENOMEM, plain, sizeof(plain));
	strcat(plain, "\n");
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_non_null(strstr(out, "RLIMIT_MEMLOCK, 8192 KiB here: "));
	/* Other errors are not the limit's doing. */
	diagnose_fake(&fp, EPERM, out, sizeof(out));
	assert_null(strstr(out, "RLIMIT_MEMLOCK"));
	/* CAP_IPC_LOCK (bit 14) lifts the limit; so does "unlimited". */
	fp.status = "CapEff:\t0000000000004000\n";
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_string_equal(out, plain);
	fp.status = STATUS_FREE;
	fp.limits = LIMITS("unlimited");
	diagnose_fake(&fp, ENOMEM, out, sizeof(out));
	assert_string_equal(out, plain);
}

/* ENOSYS from a recent kernel with no filter: no io_uring built in. */
static void test_enosys_without_filter(void **state)
{
	const struct fake_proc fp = {
		.disabled = NULL, .group = NULL, .osrelease = RELEASE_NEW,
		.status = STATUS_FREE, .uid_map = UID_MAP_INIT,
	};
	char out[1024];

	(void)state;
	diagnose_fake(&fp, ENOSYS, out, sizeof(out));
	assert_non_null(strstr(out, "CONFIG_IO_URING"));
}

/* Nothing readable (no /proc mounted): still the one plain line. */
static void test_no_proc_still_one_line(void **state)
{
	char out[1024];

	(void)state;
	diagnose_said(EPERM, "/nonexistent/corio-test-proc", out, sizeof(out));
	assert_one_line(out, EPERM);
	diagnose_said(ENOMEM, "/proc", out, sizeof(out));
	assert_one_line(out, ENOMEM);
}

/*
 * Just enough JSON to check the profile: a tree of values, strings kept
 * as their raw text (the profile's names need no escapes).
 */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jtype type;
	const char *str;	/* J_STR: between the quotes */
	size_t len;
	const char *key;	/* a member of an object: its name */
	size_t keylen;
	struct jv *kids;	/* J_ARR, J_OBJ */
	struct jv *next;
};

struct jparse {
	const char *p, *end;
	int depth;
};

static void jfree(struct jv *v)
{
	while (v) {
		struct jv *next = v->next;

		jfree(v->kids);
		free(v);
		v = next;
	}
}

static void jspace(struct jparse *jp)
{
	while (jp->p < jp->end && strchr(" \t\r\n", *jp->p))
		jp->p++;
}

/* A string at jp->p (the opening quote): its text, or -1. */
static int jstring(struct jparse *jp, const char **s, size_t *len)
{
	const char *start = ++jp->p;

	while (jp->p < jp->end && *jp->p != '"') {
		if ((unsigned char)*jp->p < 0x20)
			return -1;
		if (*jp->p == '\\' && ++jp->p == jp->end)
			return -1;
		jp->p++;
	}
	if (jp->p == jp->end)
		return -1;
	*s = start;
	*len = (size_t)(jp->p++ - start);
	return 0;
}

static struct jv *jvalue(struct jparse *jp);

/* The members of an array or an object, after its opening bracket. */
static int jitems(struct jparse *jp, struct jv *v, char close)
{
	struct jv **tail = &v->kids;
	const char *key = NULL;
	size_t keylen = 0;

	jspace(jp);
	if (jp->p < jp->end && *jp->p == close) {
		jp->p++;
		return 0;
	}
	for (;;) {
		struct jv *kid;

		if (close == '}') {
			jspace(jp);
			if (jp->p == jp->end || *jp->p != '"' ||
			    jstring(jp, &key, &keylen) < 0)
				return -1;
			jspace(jp);
			if (jp->p == jp->end || *jp->p++ != ':')
				return -1;
		}
		kid = jvalue(jp);
		if (!kid)
			return -1;
		kid->key = key;
		kid->keylen = keylen;
		*tail = kid;
		tail = &kid->next;
		jspace(jp);
		if (jp->p == jp->end)
			return -1;
		if (*jp->p == close) {
			jp->p++;
			return 0;
		}
		if (*jp->p++ != ',')
			return -1;
	}
}

static struct jv *jvalue(struct jparse *jp)
{
	static const char *const words[] = { "null", "true", "false" };
	struct jv *v;
	size_t i;

	jspace(jp);
	if (jp->p == jp->end || ++jp->depth > 64)
		return NULL;
	v = calloc(1, sizeof(*v));
	assert_non_null(v);
	if (*jp->p == '{' || *jp->p == '[') {
		char close = *jp->p == '{' ? '}' : ']';

		v->type = close == '}' ? J_OBJ : J_ARR;
		jp->p++;
		if (jitems(jp, v, close) < 0)
			goto fail;
	} else if (*jp->p == '"') {
		v->type = J_STR;
		if (jstring(jp, &v->str, &v->len) < 0)
			goto fail;
	} else if (*jp->p == '-' || (*jp->p >= '0' && *jp->p <= '9')) {
		v->type = J_NUM;
		while (jp->p < jp->end && strchr("+-.0123456789eE", *jp->p))
			jp->p++;
	} else {
		for (i = 0; i < ARRAY_SIZE(words); i++) {
			size_t n = strlen(words[i]);

			if ((size_t)(jp->end - jp->p) >= n &&
			    !memcmp(jp->p, words[i], n)) {
				v->type = i ? J_BOOL : J_NULL;
				jp->p += n;
				break;
			}
		}
		if (i == ARRAY_SIZE(words))
			goto fail;
	}
	jp->depth--;
	return v;
fail:
	jfree(v);
	return NULL;
}

/* The whole text as one JSON value, or NULL if it is not valid JSON. */
static struct jv *jparse(const char *text, size_t len)
{
	struct jparse jp = { text, text + len, 0 };
	struct jv *v = jvalue(&jp);

	jspace(&jp);
	if (v && jp.p != jp.end) {
		jfree(v);
		return NULL;
	}
	return v;
}

static bool jis(const struct jv *v, const char *s)
{
	return v && v->type == J_STR && v->len == strlen(s) &&
	       !memcmp(v->str, s, v->len);
}

static const struct jv *jget(const struct jv *obj, const char *key)
{
	const struct jv *v;

	if (!obj || obj->type != J_OBJ)
		return NULL;
	for (v = obj->kids; v; v = v->next)
		if (v->keylen == strlen(key) && !memcmp(v->key, key, v->keylen))
			return v;
	return NULL;
}

static bool jnames(const struct jv *rule, const char *name)
{
	const struct jv *n = jget(rule, "names");

	for (n = n && n->type == J_ARR ? n->kids : NULL; n; n = n->next)
		if (jis(n, name))
			return true;
	return false;
}

static size_t jcount(const struct jv *v)
{
	size_t nr = 0;

	for (v = v ? v->kids : NULL; v; v = v->next)
		nr++;
	return nr;
}

/* No condition: absent, null or empty. */
static bool jempty(const struct jv *v)
{
	return !v || v->type == J_NULL ||
	       ((v->type == J_ARR || v->type == J_OBJ) && !v->kids);
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long size;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size > 0);
	rewind(f);
	buf = malloc((size_t)size + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
	buf[size] = 0;
	fclose(f);
	*len = (size_t)size;
	return buf;
}

/*
 * The profile is JSON in the format of docker and podman, refuses what it
 * does not name, keeps the base profile's allow list, and allows the
 * three io_uring calls in one rule of its own, with no condition, which
 * no other rule names.
 */
static void test_profile_allows_io_uring(void **state)
{
	static const char *const base[] = {
		"read", "write", "mmap", "futex", "exit_group", "clone3",
	};
	const struct jv *top, *rule, *ours = NULL;
	size_t len, i, found;
	struct jv *json;
	char *text;

	(void)state;
	text = read_all(PROFILE, &len);
	/* The checker is not vacuous: a cut file is not JSON. */
	assert_null(jparse(text, len - 3));
	json = jparse(text, len);
	assert_non_null(json);
	top = json;
	assert_true(jis(jget(top, "defaultAction"), "SCMP_ACT_ERRNO"));
	assert_non_null(jget(top, "archMap"));
	rule = jget(top, "syscalls");
	assert_true(rule && rule->type == J_ARR);
	for (i = 0; i < ARRAY_SIZE(base); i++) {
		const struct jv *r;

		for (r = rule->kids; r; r = r->next)
			if (jis(jget(r, "action"), "SCMP_ACT_ALLOW") &&
			    jnames(r, base[i]) && jempty(jget(r, "args")))
				break;
		assert_non_null(r);
	}
	for (rule = rule->kids; rule; rule = rule->next) {
		assert_int_equal(rule->type, J_OBJ);
		for (i = found = 0; i < ARRAY_SIZE(io_uring_calls); i++)
			found += jnames(rule, io_uring_calls[i]);
		if (!found)
			continue;
		assert_null(ours);	/* one rule only */
		ours = rule;
	}
	assert_non_null(ours);
	assert_true(jis(jget(ours, "action"), "SCMP_ACT_ALLOW"));
	assert_int_equal(jcount(jget(ours, "names")),
			 ARRAY_SIZE(io_uring_calls));
	for (i = 0; i < ARRAY_SIZE(io_uring_calls); i++)
		assert_true(jnames(ours, io_uring_calls[i]));
	assert_true(jempty(jget(ours, "args")));
	assert_true(jempty(jget(ours, "includes")));
	assert_true(jempty(jget(ours, "excludes")));
	jfree(json);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		CORIO_TEST(test_seccomp_eperm_names_seccomp),
		CORIO_TEST(test_seccomp_enosys_names_seccomp),
		CORIO_TEST(test_memlock_is_named),
		CORIO_TEST(test_sysctl_2_is_named),
		CORIO_TEST(test_sysctl_1_is_named),
		CORIO_TEST(test_sysctl_1_spares_admin),
		CORIO_TEST(test_sysctl_1_spares_group),
		CORIO_TEST(test_sysctl_only_for_eperm),
		CORIO_TEST(test_sysctl_absent_or_0_is_ignored),
		CORIO_TEST(test_seccomp_from_status),
		CORIO_TEST(test_old_kernel_is_named),
		CORIO_TEST(test_memlock_from_limits),
		CORIO_TEST(test_enosys_without_filter),
		CORIO_TEST(test_no_proc_still_one_line),
		CORIO_TEST(test_profile_allows_io_uring),
	};

	return RUN_GROUP(tests);
}
