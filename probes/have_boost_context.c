/*
 * configure probe: the two C symbols of libboost_context (Debian:
 * libboost-context-dev), declared as src/fcontext.h declares them.
 */
#include <stddef.h>

typedef void *fcontext_t;
typedef struct {
	fcontext_t fctx;
	void *data;
} transfer_t;

transfer_t jump_fcontext(fcontext_t, void *);
fcontext_t make_fcontext(void *, size_t, void (*)(transfer_t));

static void entry(transfer_t t)
{
	jump_fcontext(t.fctx, t.data);
}

int main(void)
{
	static char stack[16384];
	fcontext_t ctx;

	ctx = make_fcontext(stack + sizeof(stack), sizeof(stack), entry);
	return jump_fcontext(ctx, NULL).data != NULL;
}
