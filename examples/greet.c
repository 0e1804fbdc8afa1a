/*
 * greet - asyncio's hello world, in C:
 *
 *	async def main():
 *	    print('Hello...')
 *	    await asyncio.sleep(1)
 *	    print('...Asyncio World!')
 *
 *	asyncio.run(main())
 */
#include <stdio.h>
#include <string.h>

#include <corio.h>

static int greet(void *arg)
{
	int ret;

	(void)arg;
	printf("Hello...\n");
	fflush(stdout);
	ret = corio_sleep(CORIO_SEC(1));
	if (ret < 0)
		return ret;
	printf("...Asyncio World!\n");
	return 0;
}

int main(void)
{
	int ret = corio_run(greet, NULL);

	if (ret < 0) {
		fprintf(stderr, "greet: %s\n", strerror(-ret));
		return 1;
	}
	return 0;
}
