/* layers: forward+backward speed of LeNet's conv layers at batch 64, as a
 * fraction of OpenBLAS sgemm GFLOP/s at n = 1024 measured in the same run,
 * on 1 and 2 threads.  conv1 is a first layer, so its backward computes no
 * input gradient, as in training.
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

static double sgemm_gflops(int n)
{
	float *a = floats((int64_t)n * n), *b = floats((int64_t)n * n), *c = floats((int64_t)n * n);
	double best = 1e30;
	for (int rep = 0; rep < 6; rep++) {
		double t = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
			    0.0f, c, n);
		t = now() - t;
		if (rep > 0 && t < best)
			best = t;
	}
	free(a), free(b), free(c);
	return 2.0 * n * (double)n * n / best * 1e-9;
}

typedef struct {
	double fwd_s, bwd_s, gflops;
} timing;

/* Best of several runs of one forward and one backward. */
static timing time_conv(int C, int HW, int F, int k, int B, int first)
{
	sn_layer l;
	memset(&l, 0, sizeof l);
	l.kind = sn_layer_kind_find("conv");
	l.in = (sn_shape){3, {C, HW, HW}};
	l.opt[SN_OPT_FILTERS] = F;
	l.opt[SN_OPT_KERNEL] = k;
	l.opt_set = 1u << SN_OPT_FILTERS | 1u << SN_OPT_KERNEL;
	if (l.kind->setup(&l)) {
		fprintf(stderr, "bench-layers: %s\n", sn_errdetail());
		exit(1);
	}
	for (int i = 0; i < l.nparams; i++) {
		l.w[i] = floats(l.params[i].numel);
		l.dw[i] = floats(l.params[i].numel);
	}
	const int64_t nin = sn_shape_size(&l.in) * B, nout = sn_shape_size(&l.out) * B;
	float *in = floats(nin), *out = floats(nout), *dout = floats(nout);
	float *din = first ? NULL : floats(nin);
	float *scratch = floats(l.scratch_per_example * B + l.scratch_fixed);
	l.saved = floats(l.saved_per_example * B + l.saved_fixed);
	sn_pass p = {.training = 1, .scratch = scratch};
	timing t = {1e30, 1e30, 0};
	for (int rep = 0; rep < 12; rep++) {
		double t0 = now();
		l.kind->forward(&l, in, out, B, &p);
		double t1 = now();
		l.kind->backward(&l, in, out, dout, din, B, &p);
		double t2 = now();
		if (rep > 1) {
			t.fwd_s = t1 - t0 < t.fwd_s ? t1 - t0 : t.fwd_s;
			t.bwd_s = t2 - t1 < t.bwd_s ? t2 - t1 : t.bwd_s;
		}
	}
	/* what the passes do: forward and dW always, dX unless first */
	double macs = (double)F * C * k * k * (double)l.out.d[1] * l.out.d[2] * B;
	t.gflops = (first ? 4 : 6) * macs / (t.fwd_s + t.bwd_s) * 1e-9;
	for (int i = 0; i < l.nparams; i++)
		free(l.w[i]), free(l.dw[i]);
	free(in), free(out), free(dout), free(din), free(scratch), free(l.saved);
	return t;
}

int main(void)
{
	const int B = 64;
	printf("threads  layer  fwd_ms  bwd_ms  GFLOP/s  sgemm_GFLOP/s  ratio\n");
	for (int threads = 1; threads <= 2; threads++) {
		openblas_set_num_threads(threads);
		double peak = sgemm_gflops(1024);
		timing c1 = time_conv(1, 28, 20, 5, B, 1), c2 = time_conv(20, 12, 50, 5, B, 0);
		double both = (c1.gflops * (c1.fwd_s + c1.bwd_s) + c2.gflops * (c2.fwd_s + c2.bwd_s)) /
			      (c1.fwd_s + c1.bwd_s + c2.fwd_s + c2.bwd_s);
		printf("%7d  conv1  %6.2f  %6.2f  %7.1f  %13.1f  %5.2f\n", threads, c1.fwd_s * 1e3,
		       c1.bwd_s * 1e3, c1.gflops, peak, c1.gflops / peak);
		printf("%7d  conv2  %6.2f  %6.2f  %7.1f  %13.1f  %5.2f\n", threads, c2.fwd_s * 1e3,
		       c2.bwd_s * 1e3, c2.gflops, peak, c2.gflops / peak);
		printf("%7d  both   %6.2f  %6.2f  %7.1f  %13.1f  %5.2f\n", threads,
		       (c1.fwd_s + c2.fwd_s) * 1e3, (c1.bwd_s + c2.bwd_s) * 1e3, both, peak,
		       both / peak);
	}
	return 0;
}
