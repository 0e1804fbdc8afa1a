/* configure probe: liburing's header and library (Debian: liburing-dev). */
#include <stddef.h>
#include <liburing.h>

int main(void)
{
	struct io_uring ring;

	return io_uring_queue_init(8, &ring, 0) < 0;
}
