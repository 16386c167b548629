/* pool.c: max and average pooling over square windows, and global average
 * pooling.  Output sizes follow PyTorch's floor rule; average pooling
 * divides by the whole window, padding included (count_include_pad=True),
 * and max pooling treats padding as -inf. */
#include "layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
	int64_t C, H, W, k, stride, pad, OH, OW;
} pool_geom;

static pool_geom geom_of(const sn_layer *l)
{
	pool_geom g = {.C = l->in.d[0], .H = l->in.d[1], .W = l->in.d[2]};
	g.k = (l->opt_set & (1u << SN_OPT_KERNEL)) ? (int64_t)l->opt[SN_OPT_KERNEL] : 1;
	g.stride = (l->opt_set & (1u << SN_OPT_STRIDE)) ? (int64_t)l->opt[SN_OPT_STRIDE] : g.k;
	g.pad = (l->opt_set & (1u << SN_OPT_PAD)) ? (int64_t)l->opt[SN_OPT_PAD] : 0;
	g.OH = (g.H + 2 * g.pad - g.k) / g.stride + 1;
	g.OW = (g.W + 2 * g.pad - g.k) / g.stride + 1;
	return g;
}

static int64_t stride2_row(const pool_geom *g);

static int pool_setup(sn_layer *l, int is_max)
{
	int64_t k, s, p;
	int err;
	if (l->in.ndim != 3)
		return sn_fail(SN_ENET, "%s needs [C,H,W] input, got %d dimension(s)",
			       l->kind->name, l->in.ndim);
	if ((err = sn_layer_opt_int(l, SN_OPT_KERNEL, -1, 1, &k)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_STRIDE, k, 1, &s)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_PAD, 0, 0, &p)))
		return err;
	/* PyTorch's rule; it also keeps every window over some real input */
	if (p > k / 2)
		return sn_fail(SN_ENET, "pad %lld larger than half the kernel %lld",
			       (long long)p, (long long)k);
	const pool_geom g = geom_of(l);
	if (k > g.H + 2 * p || k > g.W + 2 * p)
		return sn_fail(SN_ENET, "kernel %lld larger than padded input %lldx%lld",
			       (long long)k, (long long)(g.H + 2 * p), (long long)(g.W + 2 * p));
	l->out = (sn_shape){3, {g.C, g.OH, g.OW}};
	const int64_t outs = g.C * g.OH * g.OW;
	l->nparams = 0;
	l->flops_forward = outs * k * k;
	l->flops_backward = is_max ? outs : outs * k * k;
	l->saved_per_example = is_max ? outs : 0;   /* argmax, as int32 */
	l->saved_fixed = l->scratch_per_example = 0;
	/* the *_plane passes' row */
	l->scratch_fixed = is_max ? 2 * (g.stride == 2 ? stride2_row(&g) : g.W) : g.W;
	return 0;
}

static int maxpool_setup(sn_layer *l) { return pool_setup(l, 1); }
static int avgpool_setup(sn_layer *l) { return pool_setup(l, 0); }

/* The window rows [i0, i1) of output row o, clipped to the input. */
static void window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t n,
		   int64_t *i0, int64_t *i1)
{
	int64_t start = o * stride - pad;
	*i0 = start < 0 ? 0 : start;
	*i1 = start + k > n ? n : start + k;
}

/* The outputs [lo, hi) along a row whose windows lie wholly inside it. */
static void interior_outputs(const pool_geom *g, int64_t *lo, int64_t *hi)
{
	*lo = (g->pad + g->stride - 1) / g->stride;
	*hi = (g->W + g->pad - g->k) / g->stride + 1;
	*hi = *hi > g->OW ? g->OW : *hi;
	*lo = *lo > *hi ? *hi : *lo;
}

/* The first maximum of two candidates in reading order, NaN winning as in
 * PyTorch so that divergence shows.  Selects, not branches: activations
 * are noise to a branch predictor. */
static inline void keep_max(float *best, int32_t *at, float v, int32_t i)
{
	const int take = (v > *best) | ((v != v) & (*best == *best));
	*best = take ? v : *best;
	*at = take ? i : *at;
}

/* Whether a plane is free of NaN and Inf: x*0 is 0 for finite x and NaN
 * otherwise, so the sum stays 0 or turns NaN and never overflows.  Sixteen
 * accumulators, so it vectorises, cloned per vector width. */
SN_VECTOR_CLONES static int plane_is_finite(const float *restrict x, int64_t n)
{
	float acc[16] = {0};
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++)
			acc[j] += x[i + j] * 0.0f;
	float sum = 0;
	for (int j = 0; j < 16; j++)
		sum += acc[j];
	for (; i < n; i++)
		sum += x[i] * 0.0f;
	return sum == 0;
}

/* Four lanes of GCC's vector extension: SSE2 on every x86-64, where the
 * plain loop's selects compiled to branches that noisy activations
 * mispredict. */
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

/* best[iw], at[iw]: the maximum of column iw over `rows` rows from top,
 * the top one among equals; four columns at a time, down all the rows. */
static void column_maxima(const float *restrict top, int32_t top_at, int64_t rows, int64_t W,
			  float *restrict best, int32_t *restrict at)
{
	int64_t iw = 0;
	for (; iw + 4 <= W; iw += 4) {
		f4 b;
		i4 a = {0, 1, 2, 3};
		memcpy(&b, top + iw, sizeof b);
		a += top_at + (int32_t)iw;
		i4 idx = a;
		for (int64_t r = 1; r < rows; r++) {
			f4 v;
			memcpy(&v, top + r * W + iw, sizeof v);
			const i4 take = v > b;
			b = (f4)(((i4)v & take) | ((i4)b & ~take));
			idx += (int32_t)W;
			a = (idx & take) | (a & ~take);
		}
		memcpy(best + iw, &b, sizeof b);
		memcpy(at + iw, &a, sizeof a);
	}
	for (; iw < W; iw++) {
		best[iw] = top[iw];
		at[iw] = top_at + (int32_t)iw;
		for (int64_t r = 1; r < rows; r++)
			if (top[r * W + iw] > best[iw]) {
				best[iw] = top[r * W + iw];
				at[iw] = top_at + (int32_t)(r * W + iw);
			}
	}
}

/* Element c + i*stride of x for lanes i = 0..3. */
static inline f4 gather_f4(const float *x, int64_t c, int64_t stride)
{
	return (f4){x[c], x[c + stride], x[c + 2 * stride], x[c + 3 * stride]};
}

static inline i4 gather_i4(const int32_t *x, int64_t c, int64_t stride)
{
	return (i4){x[c], x[c + stride], x[c + 2 * stride], x[c + 3 * stride]};
}

/* One output row from the column maxima: each output's maximum across its
 * window's columns, the smaller flat index among equals.  Windows wholly
 * inside the row go four outputs at a time; the clipped ones at the edges
 * one by one. */
static void maxima_across(const pool_geom *g, const float *colmax, const int32_t *colmax_at,
			  float *out, int32_t *arg)
{
	int64_t lo, hi;
	interior_outputs(g, &lo, &hi);
	for (int64_t ow = 0; ow < g->OW; ow++) {
		for (; ow == lo && ow + 4 <= hi; lo = ow += 4) {
			const int64_t c = ow * g->stride - g->pad;
			f4 best = gather_f4(colmax, c, g->stride);
			i4 at = gather_i4(colmax_at, c, g->stride);
			for (int64_t j = 1; j < g->k; j++) {
				const f4 v = gather_f4(colmax, c + j, g->stride);
				const i4 i = gather_i4(colmax_at, c + j, g->stride);
				const i4 take = (v > best) | ((v == best) & (i < at));
				best = (f4)(((i4)v & take) | ((i4)best & ~take));
				at = (i & take) | (at & ~take);
			}
			memcpy(out + ow, &best, sizeof best);
			memcpy(arg + ow, &at, sizeof at);
		}
		if (ow >= g->OW)
			break;
		int64_t w0, w1;
		window(ow, g->stride, g->pad, g->k, g->W, &w0, &w1);
		float best = colmax[w0];
		int32_t at = colmax_at[w0];
		for (int64_t iw = w0 + 1; iw < w1; iw++) {
			const float v = colmax[iw];
			const int32_t i = colmax_at[iw];
			const int32_t mask = -(int32_t)((v > best) | ((v == best) & (i < at)));
			at = (i & mask) | (at & ~mask);
			best = v > best ? v : best;
		}
		out[ow] = best;
		arg[ow] = at;
	}
}

/* Stride 2 on AVX-512: each window's candidates for 16 outputs are the
 * even or the odd columns of 32 column maxima, split by one permute, so no
 * lane is gathered one by one (that took a tenth of cifar10_quick's
 * evaluation).  GCC's 16-lane vector extension compiled to scalar compares
 * without AVX-512DQ's mask moves, hence intrinsics. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_STRIDE2 1

static int have_avx512(void)
{
	return __builtin_cpu_supports("avx512f");
}
#else
#define HAVE_STRIDE2 0
#endif

/* Floats of the padded column maxima of a stride-2 row: room for the last
 * block of 16 outputs' loads. */
static int64_t stride2_row(const pool_geom *g)
{
	const int64_t blocks = (g->OW + 15) / 16, need = 32 * blocks + g->k;
	return need > g->W + 2 * g->pad ? need : g->W + 2 * g->pad;
}

#if HAVE_STRIDE2
/* out[ow], arg[ow]: the maximum of the k column maxima cm[2*ow ..] (the
 * padded columns: -inf, index INT32_MAX), the smaller index among equals. */
__attribute__((target("avx512f"))) static void across_stride2(const float *cm, const int32_t *ca,
							      int64_t k, int64_t OW, float *out,
							      int32_t *arg)
{
	const __m512i halves[2] = {
		_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
		_mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)};
	for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
		__m512 best = _mm512_setzero_ps();
		__m512i at = _mm512_setzero_si512();
		for (int64_t j = 0; j < k; j++) {
			const int64_t c = 2 * ow0 + (j & ~INT64_C(1));
			const __m512i half = halves[j & 1];
			const __m512 v = _mm512_permutex2var_ps(_mm512_loadu_ps(cm + c), half,
								_mm512_loadu_ps(cm + c + 16));
			const __m512i i = _mm512_permutex2var_epi32(
				_mm512_loadu_si512(ca + c), half, _mm512_loadu_si512(ca + c + 16));
			if (j == 0) {
				best = v, at = i;
				continue;
			}
			const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
					       (_mm512_cmp_ps_mask(v, best, _CMP_EQ_OQ) &
						_mm512_cmplt_epi32_mask(i, at));
			best = _mm512_mask_mov_ps(best, take, v);
			at = _mm512_mask_mov_epi32(at, take, i);
		}
		const int64_t n = OW - ow0 < 16 ? OW - ow0 : 16;
		const __mmask16 m = (__mmask16)((1u << n) - 1);
		_mm512_mask_storeu_ps(out + ow0, m, best);
		_mm512_mask_storeu_epi32(arg + ow0, m, at);
	}
}

/* column_maxima, 16 columns at a time */
__attribute__((target("avx512f"))) static void column_maxima16(const float *top, int32_t top_at,
							       int64_t rows, int64_t W, float *best,
							       int32_t *at)
{
	const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	for (int64_t iw = 0; iw < W; iw += 16) {
		const __mmask16 m = W - iw >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (W - iw)) - 1);
		__m512 b = _mm512_maskz_loadu_ps(m, top + iw);
		__m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32(top_at + (int32_t)iw));
		__m512i a = idx;
		for (int64_t r = 1; r < rows; r++) {
			const __m512 v = _mm512_maskz_loadu_ps(m, top + r * W + iw);
			idx = _mm512_add_epi32(idx, _mm512_set1_epi32((int32_t)W));
			const __mmask16 take = _mm512_cmp_ps_mask(v, b, _CMP_GT_OQ);
			b = _mm512_mask_mov_ps(b, take, v);
			a = _mm512_mask_mov_epi32(a, take, idx);
		}
		_mm512_mask_storeu_ps(best + iw, m, b);
		_mm512_mask_storeu_epi32(at + iw, m, a);
	}
}

/* A stride-2 plane: the column maxima of each output row's window rows
 * into a row padded with -inf, then across_stride2.
 * Finite planes only (returns 0 otherwise); row: 2 x stride2_row floats. */
static int maxpool_plane_stride2(const pool_geom *g, const float *src, float *out, int32_t *arg,
				 float *row)
{
	if (!plane_is_finite(src, g->H * g->W))
		return 0;
	const int64_t L = stride2_row(g);
	float *cm = row;
	int32_t *ca = (int32_t *)(row + L);
	for (int64_t i = 0; i < L; i++)
		cm[i] = -INFINITY, ca[i] = INT32_MAX;
	for (int64_t oh = 0; oh < g->OH; oh++) {
		int64_t h0, h1;
		window(oh, g->stride, g->pad, g->k, g->H, &h0, &h1);
		column_maxima16(src + h0 * g->W, (int32_t)(h0 * g->W), h1 - h0, g->W, cm + g->pad,
				ca + g->pad);
		across_stride2(cm, ca, g->k, g->OW, out + oh * g->OW, arg + oh * g->OW);
	}
	return 1;
}
#endif

/* 2x2 windows, stride 2, no padding (most nets), four outputs at a time:
 * shuffles split both rows into even and odd columns, and a tree of three
 * compares as lane masks picks each winner.  Ties go left, then up, as in
 * reading order.  A plane with NaN or Inf is left to maxpool_plane
 * (returns 0). */
static int maxpool_plane_2x2(const pool_geom *g, const float *src, float *out, int32_t *arg)
{
	if (!plane_is_finite(src, g->H * g->W))
		return 0;
	const i4 evens = {0, 2, 4, 6}, odds = {1, 3, 5, 7};
	for (int64_t oh = 0; oh < g->OH; oh++, out += g->OW, arg += g->OW) {
		const float *r0 = src + 2 * oh * g->W, *r1 = r0 + g->W;
		const int32_t i0 = (int32_t)(2 * oh * g->W), i1 = i0 + (int32_t)g->W;
		int64_t ow = 0;
		for (; ow + 4 <= g->OW; ow += 4) {
			f4 t0, t1, b0, b1;
			memcpy(&t0, r0 + 2 * ow, sizeof t0);
			memcpy(&t1, r0 + 2 * ow + 4, sizeof t1);
			memcpy(&b0, r1 + 2 * ow, sizeof b0);
			memcpy(&b1, r1 + 2 * ow + 4, sizeof b1);
#if defined(__clang__)     /* the same lanes: evens 0,2,4,6 and odds 1,3,5,7 */
			const f4 tl = __builtin_shufflevector(t0, t1, 0, 2, 4, 6),
				 tr = __builtin_shufflevector(t0, t1, 1, 3, 5, 7);
			const f4 bl = __builtin_shufflevector(b0, b1, 0, 2, 4, 6),
				 br = __builtin_shufflevector(b0, b1, 1, 3, 5, 7);
			(void)odds;
#else
			const f4 tl = __builtin_shuffle(t0, t1, evens), tr = __builtin_shuffle(t0, t1, odds);
			const f4 bl = __builtin_shuffle(b0, b1, evens), br = __builtin_shuffle(b0, b1, odds);
#endif
			const i4 col = evens + (int32_t)(2 * ow);
			const i4 top_right = tr > tl, bottom_right = br > bl;   /* -1 or 0 */
			const f4 top = (f4)(((i4)tr & top_right) | ((i4)tl & ~top_right));
			const f4 bottom = (f4)(((i4)br & bottom_right) | ((i4)bl & ~bottom_right));
			const i4 at_top = i0 + col - top_right, at_bottom = i1 + col - bottom_right;
			const i4 down = bottom > top;
			const f4 best = (f4)(((i4)bottom & down) | ((i4)top & ~down));
			const i4 at = (at_bottom & down) | (at_top & ~down);
			memcpy(out + ow, &best, sizeof best);
			memcpy(arg + ow, &at, sizeof at);
		}
		for (; ow < g->OW; ow++) {
			const int32_t c = (int32_t)(2 * ow);
			const int32_t at_top = i0 + c + (r0[c + 1] > r0[c]);
			const int32_t at_bottom = i1 + c + (r1[c + 1] > r1[c]);
			const int32_t at = src[at_bottom] > src[at_top] ? at_bottom : at_top;
			out[ow] = src[at];
			arg[ow] = at;
		}
	}
	return 1;
}

/* Any window, in two passes: the maximum down each window's rows, all
 * columns at once (vectorised), then across each window's columns, a chain
 * of k compares per output rather than k*k.  Ties go to the first in
 * reading order: down a column the top one wins, and across, among equal
 * values the smaller flat index, which is the upper row or else the left
 * column.  Comparisons ignore NaN, so a plane with NaN or Inf is left to
 * maxpool_plane (returns 0).  colmax: W floats, then W int32s. */
static int maxpool_plane_rows(const pool_geom *g, const float *src, float *out, int32_t *arg,
			      float *colmax)
{
	if (!plane_is_finite(src, g->H * g->W))
		return 0;
	int32_t *colmax_at = (int32_t *)(colmax + g->W);
	for (int64_t oh = 0; oh < g->OH; oh++) {
		int64_t h0, h1;
		window(oh, g->stride, g->pad, g->k, g->H, &h0, &h1);
		column_maxima(src + h0 * g->W, (int32_t)(h0 * g->W), h1 - h0, g->W, colmax,
			      colmax_at);
		maxima_across(g, colmax, colmax_at, out + oh * g->OW, arg + oh * g->OW);
	}
	return 1;
}

static void maxpool_plane(const pool_geom *g, const float *src, float *out, int32_t *arg)
{
	for (int64_t oh = 0; oh < g->OH; oh++) {
		int64_t h0, h1;
		window(oh, g->stride, g->pad, g->k, g->H, &h0, &h1);
		for (int64_t ow = 0; ow < g->OW; ow++) {
			int64_t w0, w1;
			window(ow, g->stride, g->pad, g->k, g->W, &w0, &w1);
			float best = -INFINITY;
			int32_t at = (int32_t)(h0 * g->W + w0);
			for (int64_t ih = h0; ih < h1; ih++)
				for (int64_t iw = w0; iw < w1; iw++)
					keep_max(&best, &at, src[ih * g->W + iw], (int32_t)(ih * g->W + iw));
			out[oh * g->OW + ow] = best;
			arg[oh * g->OW + ow] = at;
		}
	}
}

/* Every pass here works plane by plane (one channel of one example), so
 * the passes run in units of PLANES planes, whatever the thread count. */
#define PLANES 16

/* One plane: src and dst are in/out (forward) or dout/din (backward);
 * arg the plane's argmax, row the thread's scratch. */
typedef void plane_fn(const pool_geom *g, const float *src, float *dst, int32_t *arg,
		      float *row);

typedef struct {
	const pool_geom *g;
	plane_fn *fn;
	const float *src;
	float *dst;
	int32_t *arg;
	int64_t planes, src_plane, dst_plane, arg_plane;
	const sn_pass *p;
} planes_job;

static void planes_unit(void *ctx, int64_t unit, int thread)
{
	const planes_job *j = ctx;
	const int64_t end = (unit + 1) * PLANES < j->planes ? (unit + 1) * PLANES : j->planes;
	for (int64_t bc = unit * PLANES; bc < end; bc++)
		j->fn(j->g, j->src + bc * j->src_plane, j->dst + bc * j->dst_plane,
		      j->arg ? j->arg + bc * j->arg_plane : NULL, sn_pass_scratch(j->p, thread));
}

static void for_planes(const pool_geom *g, plane_fn *fn, const float *src, int64_t src_plane,
		       float *dst, int64_t dst_plane, int32_t *arg, int64_t planes,
		       const sn_pass *p)
{
	planes_job j = {g, fn, src, dst, arg, planes, src_plane, dst_plane,
			g->OH * g->OW, p};
	sn_parallel_for(p->pool, (planes + PLANES - 1) / PLANES, planes_unit, &j);
}

static void maxpool_plane_fast(const pool_geom *g, const float *src, float *out, int32_t *arg,
			       float *row)
{
	const int two_by_two = g->k == 2 && g->stride == 2 && g->pad == 0;
	int done;
	if (two_by_two)
		done = maxpool_plane_2x2(g, src, out, arg);
#if HAVE_STRIDE2
	else if (g->stride == 2 && sn_avx512_kernels && have_avx512())
		done = maxpool_plane_stride2(g, src, out, arg, row);
#endif
	else
		done = maxpool_plane_rows(g, src, out, arg, row);
	if (!done)
		maxpool_plane(g, src, out, arg);
}

static void maxpool_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const pool_geom g = geom_of(l);
	/* l->saved comes from malloc, so it may hold int32 argmax values */
	for_planes(&g, maxpool_plane_fast, in, g.H * g.W, out, g.OH * g.OW,
		   (int32_t *)l->saved, B * g.C, p);
}

static void maxpool_plane_backward(const pool_geom *g, const float *dout, float *din,
				   int32_t *arg, float *row)
{
	(void)row;
	memset(din, 0, (size_t)(g->H * g->W) * sizeof *din);
	for (int64_t s = 0; s < g->OH * g->OW; s++)
		din[arg[s]] += dout[s];
}

static void maxpool_backward(sn_layer *l, const float *in, const float *out,
			     const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	if (!din)
		return;
	const pool_geom g = geom_of(l);
	for_planes(&g, maxpool_plane_backward, dout, g.OH * g.OW, din, g.H * g.W,
		   (int32_t *)l->saved, B * g.C, p);
}

void sn_maxpool_forward_naive(const sn_layer *l, const float *in, float *out, int32_t *arg,
			      int B)
{
	const pool_geom g = geom_of(l);
	const int64_t plane = g.H * g.W, S = g.OH * g.OW;
	for (int64_t bc = 0; bc < B * g.C; bc++)
		maxpool_plane(&g, in + bc * plane, out + bc * S, arg + bc * S);
}

/* Average pooling output by output, window by window, for the tests. */
void sn_avgpool_forward_naive(const sn_layer *l, const float *in, float *out, int B)
{
	const pool_geom g = geom_of(l);
	const int64_t plane = g.H * g.W;
	for (int64_t bc = 0; bc < B * g.C; bc++)
		for (int64_t oh = 0; oh < g.OH; oh++)
			for (int64_t ow = 0; ow < g.OW; ow++) {
				int64_t h0, h1, w0, w1;
				window(oh, g.stride, g.pad, g.k, g.H, &h0, &h1);
				window(ow, g.stride, g.pad, g.k, g.W, &w0, &w1);
				double sum = 0;
				for (int64_t ih = h0; ih < h1; ih++)
					for (int64_t iw = w0; iw < w1; iw++)
						sum += in[bc * plane + ih * g.W + iw];
				out[(bc * g.OH + oh) * g.OW + ow] = (float)(sum / (double)(g.k * g.k));
			}
}

/* acc[0..n) += x[0..n); blocks of 8 over restrict pointers vectorise. */
static void add_floats(float *restrict acc, const float *restrict x, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[i + j] += x[i + j];
	for (; i < n; i++)
		acc[i] += x[i];
}

/* In two passes, as maxpool_plane_rows: sums down each window's rows for
 * all columns at once, then across each window's columns, four outputs at
 * a time where the windows lie inside the row.  colsum: W floats. */
static void avgpool_plane(const pool_geom *g, const float *src, float *out, float *colsum)
{
	const float scale = 1.0f / (float)(g->k * g->k);
	int64_t lo, hi;
	interior_outputs(g, &lo, &hi);
	for (int64_t oh = 0; oh < g->OH; oh++, out += g->OW) {
		int64_t h0, h1;
		window(oh, g->stride, g->pad, g->k, g->H, &h0, &h1);
		memcpy(colsum, src + h0 * g->W, (size_t)g->W * sizeof *colsum);
		for (int64_t ih = h0 + 1; ih < h1; ih++)
			add_floats(colsum, src + ih * g->W, g->W);
		for (int64_t ow = 0; ow < g->OW; ow++) {
			for (int64_t at = lo; ow == at && ow + 4 <= hi; at = ow += 4) {
				const int64_t c = ow * g->stride - g->pad;
				f4 sum = gather_f4(colsum, c, g->stride);
				for (int64_t j = 1; j < g->k; j++)
					sum += gather_f4(colsum, c + j, g->stride);
				sum *= scale;
				memcpy(out + ow, &sum, sizeof sum);
			}
			if (ow >= g->OW)
				break;
			int64_t w0, w1;
			window(ow, g->stride, g->pad, g->k, g->W, &w0, &w1);
			float sum = colsum[w0];
			for (int64_t iw = w0 + 1; iw < w1; iw++)
				sum += colsum[iw];
			out[ow] = sum * scale;
		}
	}
}

/* The adjoint of avgpool_plane: each output row's gradients spread across
 * their windows' columns, then that row added down the windows' rows.
 * spread: W floats. */
static void avgpool_plane_backward(const pool_geom *g, const float *dout, float *din,
				   float *spread)
{
	const float scale = 1.0f / (float)(g->k * g->k);
	for (int64_t oh = 0; oh < g->OH; oh++, dout += g->OW) {
		memset(spread, 0, (size_t)g->W * sizeof *spread);
		for (int64_t ow = 0; ow < g->OW; ow++) {
			int64_t w0, w1;
			window(ow, g->stride, g->pad, g->k, g->W, &w0, &w1);
			const float d = dout[ow] * scale;
			for (int64_t iw = w0; iw < w1; iw++)
				spread[iw] += d;
		}
		int64_t h0, h1;
		window(oh, g->stride, g->pad, g->k, g->H, &h0, &h1);
		for (int64_t ih = h0; ih < h1; ih++)
			add_floats(din + ih * g->W, spread, g->W);
	}
}

static void avgpool_plane_unit(const pool_geom *g, const float *src, float *out,
			       int32_t *arg, float *row)
{
	(void)arg;
	avgpool_plane(g, src, out, row);
}

static void avgpool_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const pool_geom g = geom_of(l);
	for_planes(&g, avgpool_plane_unit, in, g.H * g.W, out, g.OH * g.OW, NULL, B * g.C, p);
}

static void avgpool_plane_backward_unit(const pool_geom *g, const float *dout, float *din,
					int32_t *arg, float *row)
{
	(void)arg;
	memset(din, 0, (size_t)(g->H * g->W) * sizeof *din);
	avgpool_plane_backward(g, dout, din, row);
}

static void avgpool_backward(sn_layer *l, const float *in, const float *out,
			     const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	if (!din)
		return;
	const pool_geom g = geom_of(l);
	for_planes(&g, avgpool_plane_backward_unit, dout, g.OH * g.OW, din, g.H * g.W, NULL,
		   B * g.C, p);
}

static int global_avgpool_setup(sn_layer *l)
{
	if (l->in.ndim != 3)
		return sn_fail(SN_ENET, "global_avgpool needs [C,H,W] input, got %d dimension(s)",
			       l->in.ndim);
	l->out = (sn_shape){1, {l->in.d[0], 0, 0}};
	l->nparams = 0;
	l->flops_forward = l->flops_backward = sn_shape_size(&l->in);
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

/* Global pooling is a pool_geom of the whole plane to one output. */
static pool_geom global_geom(const sn_layer *l)
{
	return (pool_geom){.C = l->in.d[0], .H = l->in.d[1], .W = l->in.d[2],
			   .k = l->in.d[1], .stride = 1, .OH = 1, .OW = 1};
}

static void global_avgpool_plane(const pool_geom *g, const float *src, float *out,
				 int32_t *arg, float *row)
{
	(void)arg, (void)row;
	double sum = 0;
	for (int64_t i = 0; i < g->H * g->W; i++)
		sum += src[i];
	out[0] = (float)(sum / (double)(g->H * g->W));
}

static void global_avgpool_forward(sn_layer *l, const float *in, float *out, int B,
				   sn_pass *p)
{
	const pool_geom g = global_geom(l);
	for_planes(&g, global_avgpool_plane, in, g.H * g.W, out, 1, NULL, B * g.C, p);
}

static void global_avgpool_plane_backward(const pool_geom *g, const float *dout, float *din,
					  int32_t *arg, float *row)
{
	(void)arg, (void)row;
	const float d = dout[0] / (float)(g->H * g->W);
	for (int64_t i = 0; i < g->H * g->W; i++)
		din[i] = d;
}

static void global_avgpool_backward(sn_layer *l, const float *in, const float *out,
				    const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	if (!din)
		return;
	const pool_geom g = global_geom(l);
	for_planes(&g, global_avgpool_plane_backward, dout, 1, din, g.H * g.W, NULL, B * g.C, p);
}

const sn_layer_kind sn_kind_maxpool = {
	.name = "maxpool",
	.options = 1u << SN_OPT_KERNEL | 1u << SN_OPT_STRIDE | 1u << SN_OPT_PAD,
	.setup = maxpool_setup,
	.forward = maxpool_forward,
	.backward = maxpool_backward,
};

const sn_layer_kind sn_kind_avgpool = {
	.name = "avgpool",
	.options = 1u << SN_OPT_KERNEL | 1u << SN_OPT_STRIDE | 1u << SN_OPT_PAD,
	.setup = avgpool_setup,
	.forward = avgpool_forward,
	.backward = avgpool_backward,
};

const sn_layer_kind sn_kind_global_avgpool = {
	.name = "global_avgpool",
	.setup = global_avgpool_setup,
	.forward = global_avgpool_forward,
	.backward = global_avgpool_backward,
};
