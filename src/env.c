/*
 * env.c - parsing the environment variables corio reads: CORIO_STACK_SIZE
 * (bytes, with an optional K or M suffix) and CORIO_DEBUG_SLOW_MS
 * (milliseconds).
 *
 * The parsers are pure functions of a string, so that tests/fuzz/fuzz-env.c
 * can hold them against a model.  They accept plain decimal digits only:
 * strtoull would also take leading blanks, a sign (and wrap "-1" to a huge
 * value) and would let a suffix's shift overflow into a small number that
 * passes the range check.
 */
#include <string.h>

#include "corio-int.h"

/* The decimal digits that begin s; rest gets what follows them.  -EINVAL
 * for no digit or a value past 64 bits. */
static int parse_u64(const char *s, uint64_t *out, const char **rest)
{
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned int d = (unsigned int)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;	/* overflows 64 bits */
		v = v * 10 + d;
	}
	*out = v;
	*rest = s;
	return 0;
}

int corio__parse_size(const char *s, uint64_t min, uint64_t max,
		      uint64_t *out)
{
	const char *end;
	unsigned int shift = 0;
	uint64_t v;

	if (!s || parse_u64(s, &v, &end) < 0)
		return -EINVAL;
	if (*end == 'k' || *end == 'K')
		shift = 10, end++;
	else if (*end == 'm' || *end == 'M')
		shift = 20, end++;
	if (*end || v > max >> shift)
		return -EINVAL;
	v <<= shift;
	if (v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

int corio__parse_ms(const char *s, uint64_t *out_ns)
{
	const char *end;
	uint64_t v;

	if (!s || parse_u64(s, &v, &end) < 0 || *end || v == 0 ||
	    v > UINT64_MAX / CORIO_MSEC(1))
		return -EINVAL;
	*out_ns = CORIO_MSEC(v);
	return 0;
}

/* CORIO_DISABLE: comma-separated feature names; unknown ones are warned of. */
unsigned int corio__env_disabled(void)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} feats[] = {
		{ "bufring", CORIO_FEAT_BUFRING },
		{ "buf_inc", CORIO_FEAT_BUF_INC },
		{ "bundle", CORIO_FEAT_BUNDLE },
		{ "send_zc", CORIO_FEAT_SEND_ZC },
		{ "splice", CORIO_FEAT_SPLICE },
		{ "msg_ring", CORIO_FEAT_MSG_RING },
		{ "ktls", CORIO_FEAT_KTLS },
	};
	const char *s = getenv("CORIO_DISABLE"), *end;
	unsigned int mask = 0;
	size_t i, n;

	for (; s && *s; s = *end ? end + 1 : end) {
		end = strchr(s, ',');
		if (!end)
			end = s + strlen(s);
		n = (size_t)(end - s);
		for (i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
			if (strlen(feats[i].name) == n &&
			    !strncmp(feats[i].name, s, n))
				break;
		if (i < sizeof(feats) / sizeof(feats[0]))
			mask |= feats[i].bit;
		else if (n)
			fprintf(stderr, "corio: ignoring \"%.*s\" in "
				"CORIO_DISABLE (known: bufring, buf_inc, bundle, "
				"send_zc, splice, msg_ring, ktls)\n", (int)n, s);
	}
	return mask;
}
