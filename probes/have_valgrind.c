/*
 * configure probe (optional): valgrind's client requests, used to register
 * task stacks (Debian: valgrind).
 */
#include <valgrind/valgrind.h>
#include <valgrind/memcheck.h>

int main(void)
{
	static char stack[4096];
	unsigned int id;

	id = VALGRIND_STACK_REGISTER(stack, stack + sizeof(stack));
	VALGRIND_STACK_DEREGISTER(id);
	return RUNNING_ON_VALGRIND;
}
