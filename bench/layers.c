/* layers: forward+backward speed of LeNet's and cifar10_quick's conv layers
 * at batch 64, as a fraction of OpenBLAS sgemm GFLOP/s at n = 1024 measured
 * in the same run, on 1 and 2 threads (sn's own pool for the layers, OpenBLAS
 * threads for the reference).  Each net's conv1 is a first layer, so its
 * backward computes no input gradient, as in training.
 *   make build/libsn.a && cc -O2 -Ilib bench/layers.c build/libsn.a \
 *     $(pkg-config --cflags --libs openblas) -lm -o build/bench-layers
 *   build/bench-layers */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *floats(int64_t n)
{
	float *p = calloc((size_t)n, sizeof *p);
	if (!p) {
		fprintf(stderr, "bench-layers: out of memory\n");
		exit(1);
	}
	for (int64_t i = 0; i < n; i++)
		p[i] = (float)(i % 23) * 0.01f - 0.1f;
	return p;
}

/* GFLOP/s of one n x n x n sgemm, after a warm-up call. */
static double sgemm_gflops(int n)
{
	float *a = floats((int64_t)n * n), *b = floats((int64_t)n * n), *c = floats((int64_t)n * n);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
	double t = now();
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
	t = now() - t;
	free(a), free(b), free(c);
	return 2.0 * n * (double)n * n / t * 1e-9;
}

typedef struct {
	sn_layer l;
	float *in, *out, *dout, *din, *scratch;
	int64_t stride;
	sn_parallel *pool;
	int B, first;
	double fwd_s, bwd_s;   /* best seen */
} conv_case;

static void conv_open(conv_case *c, int C, int HW, int F, int k, int pad, int B, int first,
		      sn_parallel *pool)
{
	memset(c, 0, sizeof *c);
	c->l.kind = sn_layer_kind_find("conv");
	c->l.in = (sn_shape){3, {C, HW, HW}};
	c->l.opt[SN_OPT_FILTERS] = F;
	c->l.opt[SN_OPT_KERNEL] = k;
	c->l.opt[SN_OPT_PAD] = pad;
	c->l.opt_set = 1u << SN_OPT_FILTERS | 1u << SN_OPT_KERNEL | 1u << SN_OPT_PAD;
	if (c->l.kind->setup(&c->l)) {
		fprintf(stderr, "bench-layers: %s\n", sn_errdetail());
		exit(1);
	}
	for (int i = 0; i < c->l.nparams; i++) {
		c->l.w[i] = floats(c->l.params[i].numel);
		c->l.dw[i] = floats(c->l.params[i].numel);
	}
	const int64_t nin = sn_shape_size(&c->l.in) * B, nout = sn_shape_size(&c->l.out) * B;
	c->in = floats(nin);
	c->out = floats(nout);
	c->dout = floats(nout);
	c->din = first ? NULL : floats(nin);
	c->stride = (c->l.scratch_per_example * B + c->l.scratch_fixed + 15) / 16 * 16;
	c->scratch = floats(c->stride * sn_parallel_threads(pool));
	c->pool = pool;
	c->l.saved = floats(c->l.saved_per_example * B + c->l.saved_fixed);
	c->B = B;
	c->first = first;
	c->fwd_s = c->bwd_s = 1e30;
}

static void conv_time(conv_case *c)
{
	sn_pass p = {.training = 1, .scratch = c->scratch, .scratch_stride = c->stride,
		     .pool = c->pool};
	double t0 = now();
	c->l.kind->forward(&c->l, c->in, c->out, c->B, &p);
	double t1 = now();
	c->l.kind->backward(&c->l, c->in, c->out, c->dout, c->din, c->B, &p);
	double t2 = now();
	c->fwd_s = t1 - t0 < c->fwd_s ? t1 - t0 : c->fwd_s;
	c->bwd_s = t2 - t1 < c->bwd_s ? t2 - t1 : c->bwd_s;
}

/* What the passes compute: forward and dW always, dX unless first. */
static double conv_gflop(const conv_case *c)
{
	const sn_layer *l = &c->l;
	double macs = (double)l->params[0].numel * (double)l->out.d[1] * l->out.d[2] * c->B;
	return (c->first ? 4 : 6) * macs * 1e-9;
}

static void conv_close(conv_case *c)
{
	for (int i = 0; i < c->l.nparams; i++)
		free(c->l.w[i]), free(c->l.dw[i]);
	free(c->in), free(c->out), free(c->dout), free(c->din), free(c->scratch);
	free(c->l.saved);
}

static void report(int threads, const char *name, double fwd_s, double bwd_s, double gflop,
		   double peak)
{
	double rate = gflop / (fwd_s + bwd_s);
	printf("%7d  %-11s  %6.2f  %6.2f  %7.1f  %13.1f  %5.2f\n", threads, name, fwd_s * 1e3,
	       bwd_s * 1e3, rate, peak, rate / peak);
}

/* Rounds interleave the reference and the layers, and each keeps its best,
 * so a busy machine slows both alike rather than skewing the ratio. */
int main(void)
{
	const int B = 64, rounds = 15;
	printf("threads  layer        fwd_ms  bwd_ms  GFLOP/s  sgemm_GFLOP/s  ratio\n");
	for (int threads = 1; threads <= 2; threads++) {
		sn_parallel *pool;
		if (sn_parallel_create(&pool, threads)) {
			fprintf(stderr, "bench-layers: %s\n", sn_errdetail());
			return 1;
		}
		/* LeNet's two, then cifar10_quick's three (5x5, pad 2) */
		static const struct {
			const char *name;
			int C, HW, F, pad, first;
		} shapes[] = {
			{"lenet.conv1", 1, 28, 20, 0, 1}, {"lenet.conv2", 20, 12, 50, 0, 0},
			{"cifar.conv1", 3, 32, 32, 2, 1}, {"cifar.conv2", 32, 16, 32, 2, 0},
			{"cifar.conv3", 32, 8, 64, 2, 0},
		};
		enum { N = sizeof shapes / sizeof shapes[0] };
		conv_case c[N];
		for (int i = 0; i < N; i++)
			conv_open(&c[i], shapes[i].C, shapes[i].HW, shapes[i].F, 5, shapes[i].pad, B,
				  shapes[i].first, pool);
		double peak = 0;
		for (int r = 0; r < rounds; r++) {
			openblas_set_num_threads(threads);
			double g = sgemm_gflops(1024);
			openblas_set_num_threads(1);
			peak = g > peak ? g : peak;
			for (int i = 0; i < N; i++)
				conv_time(&c[i]);
		}
		for (int i = 0; i < N; i++) {
			report(threads, shapes[i].name, c[i].fwd_s, c[i].bwd_s, conv_gflop(&c[i]), peak);
			conv_close(&c[i]);
		}
		sn_parallel_free(pool);
	}
	return 0;
}
