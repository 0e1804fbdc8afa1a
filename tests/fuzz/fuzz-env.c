/*
 * fuzz-env.c - libFuzzer target for src/env.c, the parsers of
 * CORIO_STACK_SIZE and CORIO_DEBUG_SLOW_MS.  `make fuzz` builds it with
 * clang -fsanitize=fuzzer,address,undefined over the library's sources and
 * runs it on tests/fuzz/corpus-env/.
 *
 * The first byte picks what is parsed, the rest is the string (cut at its
 * first NUL, in an allocation of its exact size so that ASan catches a read
 * past it):
 *
 *	0: corio__parse_size with CORIO_STACK_MIN and CORIO_STACK_MAX
 *	1: corio__parse_size with 0 and UINT64_MAX (every overflow path)
 *	2: corio__parse_ms
 *
 * Each answer is held against a model that works in 128-bit arithmetic, so
 * that it cannot overflow where the parser must notice overflow: digits
 * only, at least one; then K or M (size only); then the end; the value in
 * range.  A mismatch prints the input and aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <corio.h>
#include "corio-int.h"

typedef unsigned __int128 u128;

/* -1 for a string the grammar rejects; else 0 and the value in *out. */
static int model(const char *s, int suffixes, u128 *out)
{
	u128 v = 0;
	size_t digits = 0;
	int over = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (v > UINT64_MAX)
			over = 1;	/* stays past 2^64; stop before 2^128 */
		else
			v = v * 10 + (u128)(*s - '0');
	}
	if (!digits || over || v > UINT64_MAX)
		return -1;
	if (suffixes && (*s == 'k' || *s == 'K'))
		v <<= 10, s++;
	else if (suffixes && (*s == 'm' || *s == 'M'))
		v <<= 20, s++;
	if (*s)
		return -1;
	*out = v;
	return 0;
}

static void mismatch(const char *what, const char *s, int got, uint64_t v)
{
	fprintf(stderr, "fuzz-env: %s(\"%s\") returned %d (value %llu), "
		"which the model does not\n", what, s, got,
		(unsigned long long)v);
	abort();
}

static void check_size(const char *s, uint64_t min, uint64_t max)
{
	uint64_t v = 0xdeadbeef;
	int got = corio__parse_size(s, min, max, &v);
	u128 want;
	int ok = model(s, 1, &want) == 0 && want >= min && want <= max;

	if (ok ? got != 0 || v != (uint64_t)want : got != -EINVAL)
		mismatch("corio__parse_size", s, got, v);
	if (!ok && v != 0xdeadbeef)
		mismatch("corio__parse_size (wrote *out)", s, got, v);
}

static void check_ms(const char *s)
{
	uint64_t v = 0xdeadbeef;
	int got = corio__parse_ms(s, &v);
	u128 want;
	int ok = model(s, 0, &want) == 0 && want > 0 &&
		 want * CORIO_MSEC(1) <= UINT64_MAX;

	if (ok ? got != 0 || v != (uint64_t)(want * CORIO_MSEC(1)) :
		 got != -EINVAL)
		mismatch("corio__parse_ms", s, got, v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *s;

	if (size < 1)
		return 0;
	len = strnlen((const char *)data + 1, size - 1);
	s = malloc(len + 1);
	if (!s)
		return 0;
	memcpy(s, data + 1, len);
	s[len] = '\0';
	switch (data[0] % 3) {
	case 0:
		check_size(s, CORIO_STACK_MIN, CORIO_STACK_MAX);
		break;
	case 1:
		check_size(s, 0, UINT64_MAX);
		break;
	default:
		check_ms(s);
		break;
	}
	free(s);
	return 0;
}
