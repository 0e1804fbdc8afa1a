/*
 * fcontext.h - the two C symbols of Boost.Context that corio switches with.
 *
 * libboost_context exports make_fcontext and jump_fcontext as plain C
 * symbols (assembly, no C++ runtime needed); Debian ships no C header for
 * them, so they are declared here and nowhere else.
 */
#ifndef CORIO_FCONTEXT_H
#define CORIO_FCONTEXT_H

#include <stddef.h>

typedef void *fcontext_t;

typedef struct {
	fcontext_t fctx;	/* the context that jumped here */
	void *data;		/* the pointer it passed */
} transfer_t;

/* Saves the caller's registers on its stack and resumes to. */
transfer_t jump_fcontext(fcontext_t const to, void *vp);

/* Prepares a context that enters fn on the stack whose top is sp. */
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

#endif
