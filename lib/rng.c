#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void sn_rng_seed(sn_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t sn_rng_next(sn_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

float sn_rng_uniform(sn_rng *r)
{
	return (float)(sn_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

double sn_rng_uniform_double(sn_rng *r)
{
	return (double)(sn_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t sn_rng_below(sn_rng *r, uint64_t n)
{
	if (n <= 1)
		return 0;
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = sn_rng_next(r);
	while (x >= limit);
	return x % n;
}

double sn_rng_normal(sn_rng *r)
{
	double u1 = 1.0 - sn_rng_uniform_double(r); /* (0, 1] so log is finite */
	double u2 = sn_rng_uniform_double(r);
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void sn_rng_shuffle(sn_rng *r, int64_t *idx, int64_t n)
{
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = (int64_t)sn_rng_below(r, (uint64_t)i + 1);
		int64_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
}

void sn_rng_format(const sn_rng *r, char out[72])
{
	snprintf(out, 72, "%016llx:%016llx:%016llx:%016llx",
		 (unsigned long long)r->s[0], (unsigned long long)r->s[1],
		 (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
}

int sn_rng_parse(sn_rng *r, const char *s)
{
	unsigned long long w[4];
	int n = 0;
	if (strlen(s) != 67 ||
	    sscanf(s, "%16llx:%16llx:%16llx:%16llx%n", &w[0], &w[1], &w[2], &w[3], &n) != 4 ||
	    n != 67)
		return sn_fail(SN_EFORMAT, "bad rng state \"%.80s\"", s);
	if ((w[0] | w[1] | w[2] | w[3]) == 0)
		return sn_fail(SN_EFORMAT, "rng state is all zero"); /* the all-zero state is a fixed point */
	for (int i = 0; i < 4; i++)
		r->s[i] = w[i];
	return 0;
}
