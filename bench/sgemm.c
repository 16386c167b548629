/* sgemm: the OpenBLAS single-precision GEMM peak that the training
 * benchmarks divide by.  Prints one number, GFLOP/s of cblas_sgemm at
 * n = 1024 (best of several runs), for the thread count given.
 *   cc -O2 bench/sgemm.c $(pkg-config --cflags --libs openblas) -o build/sgemm
 *   build/sgemm [THREADS] [N] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 1;
	int n = argc > 2 ? atoi(argv[2]) : 1024;
	if (threads < 1 || n < 16) {
		fprintf(stderr, "usage: sgemm [THREADS >= 1] [N >= 16]\n");
		return 2;
	}
	openblas_set_num_threads(threads);
	size_t nn = (size_t)n * (size_t)n;
	float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
	if (!a || !b || !c) {
		fprintf(stderr, "sgemm: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < nn; i++) {
		a[i] = (float)(i % 17) * 0.01f;
		b[i] = (float)(i % 13) * 0.02f;
	}
	double best = 1e30;
	for (int rep = 0; rep < 7; rep++) {
		double t = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
			    b, n, 0.0f, c, n);
		t = now() - t;
		if (rep > 0 && t < best)   /* the first run warms caches and threads */
			best = t;
	}
	printf("%.2f\n", 2.0 * n * (double)n * n / best * 1e-9);
	free(a);
	free(b);
	free(c);
	return 0;
}
