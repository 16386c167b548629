/* conv_direct.c: k x k convolution (k = 3 or 5, stride 1 or 2) of one
 * example, straight from its (already padded) planes, and the weight
 * gradient of stride-1 layers, with AVX-512.
 *
 * conv.c lowers a convolution to a GEMM: im2col copies every input k*k
 * times, and OpenBLAS copies the columns again into its panels, for a
 * product with few rows (the filters: 24 to 128 in the small ResNet,
 * 32 and 64 in cifar10_quick), where those copies cost as much as the
 * multiplies.  Here a tile of 8 filters x 2 vectors of 16 outputs stays in
 * 16 registers while every channel and tap is added in: one load of 16
 * inputs feeds 8 fused multiply-adds, and nothing is copied.
 *
 * The two vectors of a tile are two 16-column blocks of one output row;
 * where a row fits one block (14x14 planes), the same block of two rows;
 * where a row is 8 or fewer (7x7, 8x8), two rows packed in each vector,
 * four in all.  Stride 2 reads planes split into even and odd columns
 * (conv.c), so every load is still 16 consecutive floats.
 *
 * Every sum runs in a fixed order (an output: its bias or 0, then channel,
 * kernel row, kernel column), so the bits do not depend on the thread
 * count.  They do depend on the CPU: where there is no AVX-512, conv.c
 * takes its GEMM path, whose sums run in OpenBLAS's order (as OpenBLAS's
 * own kernels already differ from CPU to CPU). */
#include "layers.h"

int sn_avx512_kernels = 1;

#define FB 8   /* filters per tile */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* (libgcc fills in the CPU model before main) */
static int have_avx512(void)
{
	return __builtin_cpu_supports("avx512f");
}

/* Mask of the n (<= 16) leading lanes; none for n <= 0. */
static inline __mmask16 lanes(int64_t n)
{
	return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* e's batchnorm and relu on 16 outputs of filter f (layers.h). */
__attribute__((target("avx512f"), always_inline)) static inline __m512
epilogue_of(__m512 v, const sn_epilogue *e, int64_t f)
{
	const __m512 zero = _mm512_setzero_ps();
	if (e->mean) {
		v = _mm512_mul_ps(_mm512_sub_ps(v, _mm512_set1_ps(e->mean[f])),
				  _mm512_set1_ps(e->invstd[f]));
		v = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(e->gamma[f]), v),
				  _mm512_set1_ps(e->beta[f]));
	}
	if (e->relu)
		v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
	return v;
}

/* The kernel for one constant k, inlined into one function per k so that
 * the tap loops unroll. */
__attribute__((target("avx512f"), always_inline)) static inline void
direct_k(const float *in, int64_t C, int64_t H, int64_t W, const float *w, int64_t F,
	 const int k, const int s, const int packed, const float *bias, const sn_epilogue *e,
	 float *out)
{
	const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1, blocks = (OW + 15) / 16;
	const int64_t plane = OH * OW, fstride = C * k * k;
	const int64_t rw = s == 1 ? W : (W + 1) / 2;   /* floats per stored row */
	const int rowpair = !packed && blocks == 1;
	const int64_t next_row = s * rw;                /* the input row of output row + 1 */
	for (int64_t f0 = 0; f0 < F; f0 += FB)
		for (int64_t oh = 0; oh < OH; oh += packed ? 4 : rowpair ? 2 : 1)
			for (int64_t b = 0; b < blocks; b += packed || rowpair ? 1 : 2) {
				const int64_t ow0 = b * 16;
				/* the second vector: 16 columns on, or one row down, or
				 * (packed) two rows down */
				const int64_t in1 = packed ? 2 * next_row : rowpair ? next_row : 16;
				const int64_t out1 = packed ? 2 * OW : rowpair ? OW : 16;
				/* packed: output rows oh, oh + 1 in lanes [0, OW), [OW, 2 OW) */
				const __mmask16 lo0 = oh < OH ? lanes(OW) : 0;
				const __mmask16 hi0 = oh + 1 < OH ? lanes(2 * OW) & ~lanes(OW) : 0;
				const __mmask16 lo1 = oh + 2 < OH ? lanes(OW) : 0;
				const __mmask16 hi1 = oh + 3 < OH ? lanes(2 * OW) & ~lanes(OW) : 0;
				const __mmask16 m0 = packed ? lo0 | hi0 : lanes(OW - ow0);
				const __mmask16 m1 = packed ? lo1 | hi1
						     : rowpair ? (oh + 1 < OH ? m0 : 0)
							       : lanes(OW - ow0 - 16);
#define INIT(f)                                                                        \
	__m512 a##f = _mm512_set1_ps(bias ? bias[f0 + f] : 0.0f), b##f = a##f;
				INIT(0) INIT(1) INIT(2) INIT(3) INIT(4) INIT(5) INIT(6) INIT(7)
				for (int64_t c = 0; c < C; c++)
#pragma GCC unroll 5
					for (int ki = 0; ki < k; ki++) {
						const float *wr = w + (f0 * C + c) * k * k + ki * k;
#pragma GCC unroll 5
						for (int kj = 0; kj < k; kj++) {
							/* column s*ow + kj: phase kj % s, kj / s on */
							const float *row =
								in + ((c * s + kj % s) * H + s * oh + ki) * rw +
								ow0 + kj / s;
							__m512 x0, x1;
							if (packed) {   /* lane OW + j: the next row's j */
								x0 = _mm512_mask_loadu_ps(
									_mm512_maskz_loadu_ps(lo0, row), hi0,
									row + next_row - OW);
								x1 = _mm512_mask_loadu_ps(
									_mm512_maskz_loadu_ps(lo1, row + in1),
									hi1, row + in1 + next_row - OW);
							} else {
								x0 = _mm512_maskz_loadu_ps(m0, row);
								x1 = _mm512_maskz_loadu_ps(m1, row + in1);
							}
							__m512 v;
#define TAP(f)                                                                         \
	v = _mm512_set1_ps(wr[f * fstride + kj]);                                      \
	a##f = _mm512_fmadd_ps(v, x0, a##f);                                           \
	b##f = _mm512_fmadd_ps(v, x1, b##f);
							TAP(0) TAP(1) TAP(2) TAP(3) TAP(4) TAP(5) TAP(6) TAP(7)
						}
					}
				float *o = out + f0 * plane + oh * OW + ow0;
#define EPILOGUE(f)                                                                    \
	a##f = epilogue_of(a##f, e, f0 + f);                                           \
	b##f = epilogue_of(b##f, e, f0 + f);
				if (e) {
					EPILOGUE(0) EPILOGUE(1) EPILOGUE(2) EPILOGUE(3)
					EPILOGUE(4) EPILOGUE(5) EPILOGUE(6) EPILOGUE(7)
				}
#define STORE(f)                                                                       \
	_mm512_mask_storeu_ps(o + f * plane, m0, a##f);                                \
	_mm512_mask_storeu_ps(o + f * plane + out1, m1, b##f);
				STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
			}
#undef INIT
#undef TAP
#undef EPILOGUE
#undef STORE
}

/* The weight gradient over n examples, each x's C x H x W planes unpadded
 * (the padding is masked off as it is read) and its dy's F planes:
 * dwt[((c*k + ki)*k + kj)*F + f] += the sum of dy[f][oh][ow] * x[c][oh +
 * ki - pad][ow + kj - pad].  A tile keeps fb filters x k kernel columns of
 * one channel and kernel row in registers, 16 outputs wide, over every
 * plane of the n examples: k loads of inputs and fb of dy feed fb*k fused
 * multiply-adds; then each sum is added across its lanes.  (A tile per
 * example, its lanes kept in memory between examples, ran 15% slower on
 * 14x14 planes.) */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_k(const sn_conv_dw_args *a, const int k, const int fb)
{
	const int64_t C = a->C, H = a->H, W = a->W, F = a->F, pad = a->pad;
	const int64_t OH = H + 2 * pad - k + 1, OW = W + 2 * pad - k + 1, plane = OH * OW;
	for (int64_t f0 = 0; f0 < F; f0 += fb)
		for (int64_t c = 0; c < C; c++)
			for (int ki = 0; ki < k; ki++) {
				__m512 s[8][5];
#pragma GCC unroll 5
				for (int kj = 0; kj < k; kj++)
#pragma GCC unroll 8
					for (int f = 0; f < fb; f++)
						s[f][kj] = _mm512_setzero_ps();
				/* the output rows whose input row is inside */
				const int64_t oh0 = pad - ki > 0 ? pad - ki : 0;
				const int64_t oh1 = H + pad - ki < OH ? H + pad - ki : OH;
				for (int64_t b = 0; b < a->n; b++) {
					const float *xc = a->x + b * a->xstride + c * H * W + (ki - pad) * W;
					const float *dyb = a->dy + b * a->dystride + f0 * plane;
					for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
						const __mmask16 md = lanes(OW - ow0);
						__mmask16 mx[5];
#pragma GCC unroll 5
						for (int kj = 0; kj < k; kj++)
							mx[kj] = md & lanes(W + pad - kj - ow0) &
								 (__mmask16)~lanes(pad - kj - ow0);
						for (int64_t oh = oh0; oh < oh1; oh++) {
							const float *xr = xc + oh * W + ow0 - pad;
							const float *d = dyb + oh * OW + ow0;
							__m512 v[5];
#pragma GCC unroll 5
							for (int kj = 0; kj < k; kj++)
								v[kj] = _mm512_maskz_loadu_ps(mx[kj], xr + kj);
#pragma GCC unroll 8
							for (int f = 0; f < fb; f++) {
								const __m512 g = _mm512_maskz_loadu_ps(
									md, d + f * plane);
#pragma GCC unroll 5
								for (int kj = 0; kj < k; kj++)
									s[f][kj] = _mm512_fmadd_ps(g, v[kj],
												   s[f][kj]);
							}
						}
					}
				}
				float *dw = a->dwt + (c * k + ki) * k * F + f0;
#pragma GCC unroll 5
				for (int kj = 0; kj < k; kj++)
#pragma GCC unroll 8
					for (int f = 0; f < fb; f++)
						dw[kj * F + f] += _mm512_reduce_add_ps(s[f][kj]);
			}
}

__attribute__((target("avx512f"))) static void dw3(const sn_conv_dw_args *a)
{
	dw_k(a, 3, 8);
}

__attribute__((target("avx512f"))) static void dw5(const sn_conv_dw_args *a)
{
	dw_k(a, 5, 4);
}

#define DIRECT(name, k, s, packed)                                                     \
	__attribute__((target("avx512f"))) static void name(                           \
		const float *in, int64_t C, int64_t H, int64_t W, const float *w, int64_t F, \
		const float *bias, const sn_epilogue *e, float *out)                   \
	{                                                                              \
		direct_k(in, C, H, W, w, F, k, s, packed, bias, e, out);               \
	}
DIRECT(direct3, 3, 1, 0)
DIRECT(direct5, 5, 1, 0)
DIRECT(direct3s2, 3, 2, 0)
DIRECT(direct5s2, 5, 2, 0)
DIRECT(direct3p, 3, 1, 1)
DIRECT(direct5p, 5, 1, 1)
DIRECT(direct3s2p, 3, 2, 1)
DIRECT(direct5s2p, 5, 2, 1)
#undef DIRECT

typedef void direct_fn(const float *, int64_t, int64_t, int64_t, const float *, int64_t,
		       const float *, const sn_epilogue *, float *);
#else
static int have_avx512(void)
{
	return 0;
}
#endif

void sn_conv_direct_dw(const sn_conv_dw_args *a)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	if (a->k == 3)
		dw3(a);
	else
		dw5(a);
#else
	(void)a;
#endif
}

int sn_conv_direct_takes(int64_t F, int64_t k, int64_t OH, int64_t OW)
{
	if (!sn_avx512_kernels || !have_avx512() || F % FB != 0 || (k != 3 && k != 5))
		return 0;
	/* rows of 8 or fewer, packed two to a vector and four to a tile: at
	 * least 7/8 of the lanes in use (8x8 planes; 7x7 ones, 77%, ran no
	 * faster than the GEMM) */
	if (OW <= 8)
		return 8 * OH * OW >= 7 * 32 * ((OH + 3) / 4);
	/* otherwise at least 3/4 of the lanes: 12-16 columns (a block on each
	 * of two rows), 24-32, 56-64, ... */
	const int64_t per_pair = OW <= 16 ? 16 : 32;
	const int64_t pairs = (OW + per_pair - 1) / per_pair;
	return 4 * OW >= 3 * per_pair * pairs;
}

void sn_conv_direct(const float *in, int64_t C, int64_t H, int64_t W, int64_t stride,
		    const float *w, int64_t F, int64_t k, const float *bias,
		    const sn_epilogue *epilogue, float *out)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	static direct_fn *const fns[2][2][2] = {   /* [packed][stride 2][k 5] */
		{{direct3, direct5}, {direct3s2, direct5s2}},
		{{direct3p, direct5p}, {direct3s2p, direct5s2p}}};
	const int64_t OW = (W - k) / stride + 1;
	fns[OW <= 8][stride == 2][k == 5](in, C, H, W, w, F, bias, epilogue, out);
#else
	(void)in, (void)C, (void)H, (void)W, (void)stride, (void)w, (void)F, (void)k, (void)bias;
	(void)epilogue, (void)out;
#endif
}
