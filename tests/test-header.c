/*
 * test-header.c - corio.h stands alone.
 *
 * corio.h is the first include and the only one this file's tests use:
 * it must bring every type it names (size_t, uint64_t, ssize_t, mode_t,
 * socklen_t, struct sockaddr) and declare every function, so that the
 * code below compiles with -Werror.  The headers after it are cmocka's,
 * which needs stdarg, stddef and setjmp before it.  (The Makefile's
 * check-header also compiles corio.h alone, as C11 and as C++.)
 */
#include <corio.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

/* Every public function, by its declared type. */
static void test_header_declares_the_api(void **state)
{
	int (*run)(corio_fn, void *) = corio_run;
	int (*stats)(struct corio_stats *) = corio_stats;
	corio_task *(*spawn)(corio_fn, void *) = corio_spawn;
	corio_task *(*spawn_ex)(corio_fn, void *,
				const struct corio_spawn_attr *) =
		corio_spawn_ex;
	int (*join)(corio_task *) = corio_join;
	void (*detach)(corio_task *) = corio_detach;
	int (*cancel)(corio_task *) = corio_cancel;
	int (*yield)(void) = corio_yield;
	int (*shield)(int) = corio_shield;
	corio_task *(*self)(void) = corio_self;
	ssize_t (*stack_size)(size_t) = corio_stack_size;
	uint64_t (*now)(void) = corio_now;
	int (*sleep_)(uint64_t) = corio_sleep;
	uint64_t (*deadline)(uint64_t) = corio_deadline;
	uint64_t (*timeout)(uint64_t) = corio_timeout;
	struct io_uring_sqe *(*sqe)(void) = corio_sqe;
	int (*await_)(struct io_uring_sqe *) = corio_await;
	ssize_t (*read_)(int, void *, size_t, uint64_t) = corio_read;
	ssize_t (*write_)(int, const void *, size_t, uint64_t) = corio_write;
	ssize_t (*readv_)(int, const struct iovec *, int, uint64_t) =
		corio_readv;
	ssize_t (*writev_)(int, const struct iovec *, int, uint64_t) =
		corio_writev;
	ssize_t (*recv_)(int, void *, size_t, int) = corio_recv;
	ssize_t (*send_)(int, const void *, size_t, int) = corio_send;
	ssize_t (*recvmsg_)(int, struct msghdr *, int) = corio_recvmsg;
	ssize_t (*sendmsg_)(int, const struct msghdr *, int) = corio_sendmsg;
	int (*accept_)(int, struct sockaddr *, socklen_t *, int) =
		corio_accept;
	int (*connect_)(int, const struct sockaddr *, socklen_t) =
		corio_connect;
	int (*close_)(int) = corio_close;
	int (*openat_)(int, const char *, int, mode_t) = corio_openat;
	int (*fsync_)(int, unsigned int) = corio_fsync;
	int (*statx_)(int, const char *, int, unsigned int, struct statx *) =
		corio_statx;
	int (*shutdown_)(int, int) = corio_shutdown;
	int (*poll_)(int, unsigned int) = corio_poll;
	ssize_t (*splice_)(int, int64_t, int, int64_t, unsigned int,
			   unsigned int) = corio_splice;
	int (*socket_)(int, int, int, unsigned int) = corio_socket;
	int (*nop)(void) = corio_nop;

	(void)state;
	/* Function pointers are not object pointers: compare each. */
	assert_true(run != NULL);
	assert_true(stats != NULL);
	assert_true(spawn != NULL);
	assert_true(spawn_ex != NULL);
	assert_true(join != NULL);
	assert_true(detach != NULL);
	assert_true(cancel != NULL);
	assert_true(yield != NULL);
	assert_true(shield != NULL);
	assert_true(self != NULL);
	assert_true(stack_size != NULL);
	assert_true(now != NULL);
	assert_true(sleep_ != NULL);
	assert_true(deadline != NULL);
	assert_true(timeout != NULL);
	assert_true(sqe != NULL);
	assert_true(await_ != NULL);
	assert_true(read_ != NULL);
	assert_true(write_ != NULL);
	assert_true(readv_ != NULL);
	assert_true(writev_ != NULL);
	assert_true(recv_ != NULL);
	assert_true(send_ != NULL);
	assert_true(recvmsg_ != NULL);
	assert_true(sendmsg_ != NULL);
	assert_true(accept_ != NULL);
	assert_true(connect_ != NULL);
	assert_true(close_ != NULL);
	assert_true(openat_ != NULL);
	assert_true(fsync_ != NULL);
	assert_true(statx_ != NULL);
	assert_true(shutdown_ != NULL);
	assert_true(poll_ != NULL);
	assert_true(splice_ != NULL);
	assert_true(socket_ != NULL);
	assert_true(nop != NULL);
}

static void test_header_constants(void **state)
{
	struct corio_stats st = { 0 };
	struct corio_spawn_attr attr = { 0 };

	(void)state;
	assert_int_equal(CORIO_NSEC(7), 7);
	assert_int_equal(CORIO_USEC(1), 1000);
	assert_int_equal(CORIO_MSEC(1), 1000000);
	assert_int_equal(CORIO_SEC(1), 1000000000);
	assert_int_equal(CORIO_SEC(5000), 5000000000000ull); /* 64 bits */
	assert_int_equal(CORIO_STACK_DEFAULT, 64 * 1024);
	assert_int_equal(CORIO_STACK_MIN, 16 * 1024);
	assert_int_equal(CORIO_STACK_MAX, 256 * 1024 * 1024);
	assert_int_equal(CORIO_VERSION_MAJOR, 0);
	assert_true(CORIO_VERSION_MINOR >= 0 && CORIO_VERSION_PATCH >= 0);
	assert_int_equal(sizeof(st.tasks_live) + sizeof(st.ops_in_flight) +
			 sizeof(st.turns) + sizeof(st.enters) +
			 sizeof(st.cqes) + sizeof(st.cq_overflows),
			 6 * sizeof(uint64_t));
	assert_int_equal(attr.stack_size, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_declares_the_api),
		cmocka_unit_test(test_header_constants),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
