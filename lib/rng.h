/* rng.h: a small explicit-state random generator (xoshiro256**).
 *
 * No global state: every user (init, shuffle, dropout) owns an sn_rng, and
 * solver state files store it as 4 hex words so training resumes bit for bit. */
#ifndef SN_RNG_H
#define SN_RNG_H

#include <stdint.h>

#include "error.h"

typedef struct {
	uint64_t s[4];
} sn_rng;

void sn_rng_seed(sn_rng *r, uint64_t seed);
uint64_t sn_rng_next(sn_rng *r);
/* uniform in [0, 1) with 24 bits of precision as float, 53 as double */
float sn_rng_uniform(sn_rng *r);
double sn_rng_uniform_double(sn_rng *r);
/* uniform integer in [0, n), unbiased */
uint64_t sn_rng_below(sn_rng *r, uint64_t n);
/* standard normal (Box-Muller, no cached second value so state is plain) */
double sn_rng_normal(sn_rng *r);
/* Fisher-Yates shuffle of an index array */
void sn_rng_shuffle(sn_rng *r, int64_t *idx, int64_t n);
/* "0123abcd...:...:...:..." (4 x 16 hex digits, ':'-separated), 68 bytes */
void sn_rng_format(const sn_rng *r, char out[72]);
int sn_rng_parse(sn_rng *r, const char *s) __attribute__((warn_unused_result));

#endif
