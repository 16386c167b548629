/* crc32.c: zlib's CRC-32 (IEEE 802.3, bit-reflected), folded with
 * carry-less multiplication where the CPU has it (Gopal et al., "Fast CRC
 * Computation for Generic Polynomials Using PCLMULQDQ Instruction", Intel
 * 2009): four 128-bit lanes fold 64 bytes per step, then fold into one,
 * then a Barrett reduction gives the 32-bit remainder.  zlib's crc32 ran at
 * 1.4 GB/s here and was a quarter of sn-average's time; every weight and
 * state file is checked and written through it.  Elsewhere, and for the
 * tail, zlib computes it. */
#include "crc32.h"

#include <limits.h>
#include <zlib.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* x^(4*128+32), x^(4*128-32) mod P, reflected: fold by four lanes */
#define K1 0x0154442bd4ull
#define K2 0x01c6e41596ull
/* x^(128+32), x^(128-32) mod P: fold by one lane */
#define K3 0x01751997d0ull
#define K4 0x00ccaa009eull
/* x^64 mod P: 64 bits to 32 */
#define K5 0x0163cd6124ull
/* P (with x^32) and floor(x^64 / P), reflected, for Barrett */
#define POLY 0x01db710641ull
#define MU 0x01f7011641ull

static inline __attribute__((target("pclmul,sse4.1"))) __m128i fold16(__m128i x, __m128i k, __m128i next)
{
	const __m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
	const __m128i hi = _mm_clmulepi64_si128(x, k, 0x11);
	return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

/* The raw (inverted) register after n bytes, n a multiple of 16, >= 64. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t fold(uint32_t reg, const unsigned char *p, size_t n)
{
	__m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
	__m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
	__m128i x4 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
	x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)reg));
	p += 64;
	n -= 64;
	__m128i k = _mm_set_epi64x((long long)K2, (long long)K1);
	for (; n >= 64; p += 64, n -= 64) {
		x1 = fold16(x1, k, _mm_loadu_si128((const __m128i *)(const void *)p));
		x2 = fold16(x2, k, _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
		x3 = fold16(x3, k, _mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
		x4 = fold16(x4, k, _mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
	}
	k = _mm_set_epi64x((long long)K4, (long long)K3);
	x1 = fold16(x1, k, x2);
	x1 = fold16(x1, k, x3);
	x1 = fold16(x1, k, x4);
	for (; n >= 16; p += 16, n -= 16)
		x1 = fold16(x1, k, _mm_loadu_si128((const __m128i *)(const void *)p));

	/* 128 bits to 64: the low half times K4, into the high half */
	const __m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0);
	x2 = _mm_clmulepi64_si128(x1, k, 0x10);
	x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
	/* 64 bits to 32: the low 32 bits times K5 */
	k = _mm_set_epi64x(0, (long long)K5);
	x2 = _mm_srli_si128(x1, 4);
	x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	/* Barrett: q = (low 32 * mu) low 32; r = x ^ q * P */
	k = _mm_set_epi64x((long long)MU, (long long)POLY);
	x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x10);
	x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, mask32), k, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	return (uint32_t)_mm_extract_epi32(x1, 1);
}

static int have_clmul(void)
{
	return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}
#endif

uint32_t sn_crc32(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
#if defined(__x86_64__) && defined(__GNUC__)
	if (len >= 64 && have_clmul()) {
		const size_t n = len & ~(size_t)15;
		crc = ~fold(~crc, p, n);
		p += n;
		len -= n;
	}
#endif
	while (len) {
		const uInt n = len > UINT_MAX / 2 ? UINT_MAX / 2 : (uInt)len;
		crc = (uint32_t)crc32(crc, p, n);
		p += n;
		len -= n;
	}
	return crc;
}
