/* Unit tests for lib/data.c, lib/shard.c and lib/readers/: sn.data.v1
 * validation, normalised batches against a naive reference, and the shard
 * writer on small real files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dirent.h>
#include <ftw.h>
#include <unistd.h>
#include <cmocka.h>

#include "data.h"
#include "shard.h"
#include "error.h"
#include "st.h"

typedef struct {
	char dir[64];
	char path[128];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/sn-test-data.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/d.safetensors", f->dir);
	*state = f;
	return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	fixture *f = *state;
	int rc = nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return rc;
}

/* A data file at path: x of dtype dt and shape [n, dims...], y I32 labels
 * (i % classes unless bad_label), then the given metadata pairs. */
static void write_data(const char *path, sn_dtype dt, int ndim, const int64_t *shape,
		       const void *x, int classes, int bad_label, const char *const *meta)
{
	sn_st st;
	sn_st_init(&st);
	int32_t *y = calloc((size_t)shape[0], sizeof *y);
	assert_non_null(y);
	for (int64_t i = 0; i < shape[0]; i++)
		y[i] = (int32_t)(i % classes);
	if (bad_label)
		y[shape[0] - 1] = classes;
	assert_int_equal(sn_st_add(&st, "x", dt, ndim, shape, x, 1), 0);
	assert_int_equal(sn_st_add(&st, "y", SN_I32, 1, shape, y, 1), 0);
	for (int i = 0; meta[i]; i += 2)
		assert_int_equal(sn_st_set_meta(&st, meta[i], meta[i + 1]), 0);
	assert_int_equal(sn_st_write(&st, path), 0);
	sn_st_free(&st);
	free(y);
}

/* 30 values a channel: one SIMD block of 16 and a tail */
static uint8_t pixels[5 * 2 * 6 * 5];

static void write_images(const char *path, const char *const *meta, int bad_label)
{
	const int64_t shape[4] = { 5, 2, 6, 5 };
	for (size_t i = 0; i < sizeof pixels; i++)
		pixels[i] = (uint8_t)(i * 37 % 256);
	write_data(path, SN_U8, 4, shape, pixels, 3, bad_label, meta);
}

static void batch_normalises_u8_images_per_channel(void **state)
{
	fixture *f = *state;
	const char *meta[] = { "format", "sn.data.v1", "classes", "3", "mean", "[0.25,0.5]",
			       "std", "[0.5,2]", NULL };
	write_images(f->path, meta, 0);
	sn_data d;
	assert_int_equal(sn_data_open(f->path, &d), 0);
	assert_int_equal(d.n, 5);
	assert_int_equal(d.classes, 3);
	assert_int_equal(d.shape.ndim, 3);
	assert_int_equal(d.shape.d[0], 2);
	assert_int_equal(d.nstats, 2);
	const int64_t idx[3] = { 4, 0, 2 };
	float x[3 * 60];
	int32_t y[3];
	sn_data_batch(&d, idx, 3, x, y);
	const double mean[2] = { 0.25, 0.5 }, sd[2] = { 0.5, 2 };
	for (int b = 0; b < 3; b++) {
		assert_int_equal(y[b], idx[b] % 3);
		for (int c = 0; c < 2; c++)
			for (int j = 0; j < 30; j++) {
				double v = pixels[idx[b] * 60 + c * 30 + j] / 255.0;
				assert_float_equal(x[b * 60 + c * 30 + j], (v - mean[c]) / sd[c], 1e-5);
			}
	}
	sn_data_close(&d);
}

static void batch_normalises_f32_tables_per_feature_or_once(void **state)
{
	fixture *f = *state;
	const int64_t shape[2] = { 4, 3 };
	float v[12];
	for (int i = 0; i < 12; i++)
		v[i] = (float)i - 5.5f;
	const char *per[] = { "format", "sn.data.v1", "classes", "2", "mean", "[1,2,3]",
			      "std", "[1,2,4]", NULL };
	const char *one[] = { "format", "sn.data.v1", "classes", "2", "mean", "[-1]",
			      "std", "[0.5]", NULL };
	const int64_t idx[2] = { 3, 1 };
	float x[6];
	int32_t y[2];
	sn_data d;
	write_data(f->path, SN_F32, 2, shape, v, 2, 0, per);
	assert_int_equal(sn_data_open(f->path, &d), 0);
	assert_int_equal(d.nstats, 3);
	sn_data_batch(&d, idx, 2, x, y);
	for (int b = 0; b < 2; b++)
		for (int j = 0; j < 3; j++)
			assert_float_equal(x[b * 3 + j], (v[idx[b] * 3 + j] - (j + 1)) / (1 << j), 1e-6);
	assert_int_equal(y[0], 1);
	sn_data_close(&d);
	write_data(f->path, SN_F32, 2, shape, v, 2, 0, one);
	assert_int_equal(sn_data_open(f->path, &d), 0);
	assert_int_equal(d.nstats, 1);
	sn_data_batch(&d, idx, 2, x, y);
	for (int j = 0; j < 6; j++)
		assert_float_equal(x[j], (v[idx[j / 3] * 3 + j % 3] + 1) / 0.5, 1e-6);
	sn_data_close(&d);
}

/* A NaN or Inf anywhere in x, inside the blocks of 64 or in the tail, is
 * found and placed; a std too small to divide by is refused. */
static void open_refuses_nonfinite_x_and_tiny_std(void **state)
{
	fixture *f = *state;
	enum { N = 7, D = 30 };    /* 210 values: three blocks of 64 and a tail */
	const int64_t shape[2] = { N, D };
	static float v[N * D];
	const char *meta[] = { "format", "sn.data.v1", "classes", "2", "mean", "[0]",
			       "std", "[1]", NULL };
	const int at[] = { 0, 63, 64, 100, 191, 192, 209 };
	const float bad[] = { NAN, INFINITY, -INFINITY };
	char want[64];
	sn_data d;
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		for (int j = 0; j < N * D; j++)
			v[j] = j % 2 ? 3.4e38f : -1e-45f;    /* the largest and a denormal pass */
		v[at[i]] = bad[i % 3];
		write_data(f->path, SN_F32, 2, shape, v, 2, 0, meta);
		assert_int_equal(sn_data_open(f->path, &d), SN_EFORMAT);
		snprintf(want, sizeof want, "x holds %s at record %d, value %d",
			 i % 3 == 0 ? "NaN" : i % 3 == 1 ? "Inf" : "-Inf", at[i] / D, at[i] % D);
		assert_string_equal(sn_errdetail(), want);
	}
	v[209] = 0;
	write_data(f->path, SN_F32, 2, shape, v, 2, 0, meta);
	assert_int_equal(sn_data_open(f->path, &d), 0);
	sn_data_close(&d);
	const char *stds[] = { "[1e-40]", "[0]", "[-2]", "[1e-300]" };
	for (int i = 0; i < 4; i++) {
		const char *m[] = { "format", "sn.data.v1", "classes", "2", "mean", "[0]",
				    "std", stds[i], NULL };
		write_data(f->path, SN_F32, 2, shape, v, 2, 0, m);
		assert_int_equal(sn_data_open(f->path, &d), SN_EFORMAT);
		assert_non_null(strstr(sn_errdetail(), "\"std\"[0]"));
	}
}

static void batch_normalises_wide_f32_tables(void **state)
{
	fixture *f = *state;
	enum { N = 3, D = 37 };
	const int64_t shape[2] = { N, D };
	float v[N * D], x[2 * D];
	for (int i = 0; i < N * D; i++)
		v[i] = (float)(i % 11) * 0.25f - 1;
	const char *one[] = { "format", "sn.data.v1", "classes", "2", "mean", "[0.5]",
			      "std", "[4]", NULL };
	const int64_t idx[2] = { 2, 0 };
	int32_t y[2];
	sn_data d;
	write_data(f->path, SN_F32, 2, shape, v, 2, 0, one);
	assert_int_equal(sn_data_open(f->path, &d), 0);
	sn_data_batch(&d, idx, 2, x, y);
	for (int b = 0; b < 2; b++)
		for (int j = 0; j < D; j++)
			assert_float_equal(x[b * D + j], (v[idx[b] * D + j] - 0.5) / 4, 1e-6);
	sn_data_close(&d);
}

static void open_refuses_malformed_data_files(void **state)
{
	fixture *f = *state;
	static const struct {
		const char *meta[9];
		int bad_label, err;
		const char *what;
	} cases[] = {
		{ { "format", "sn.weights.v1", "classes", "3", "mean", "[0,0]", "std", "[1,1]" }, 0, SN_EFORMAT, "format" },
		{ { "format", "sn.data.v1", "classes", "3x", "mean", "[0,0]", "std", "[1,1]" }, 0, SN_EFORMAT, "classes" },
		{ { "format", "sn.data.v1", "classes", "0", "mean", "[0,0]", "std", "[1,1]" }, 0, SN_EFORMAT, "classes" },
		{ { "format", "sn.data.v1", "mean", "[0,0]", "std", "[1,1]" }, 0, SN_EFORMAT, "classes" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0,0]", "std", "[1,1]" }, 1, SN_EFORMAT, "label" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0]", "std", "[1]" }, 0, SN_EFORMAT, "mean" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0,0]", "std", "[1,0]" }, 0, SN_EFORMAT, "std" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "0,0", "std", "[1,1]" }, 0, SN_EFORMAT, "mean" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0,\"a\"]", "std", "[1,1]" }, 0, SN_EFORMAT, "mean" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0,0]", "std", "[1,1,1]" }, 0, SN_EFORMAT, "std" },
		{ { "format", "sn.data.v1", "classes", "3", "mean", "[0,0]" }, 0, SN_EFORMAT, "std" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		sn_data d;
		write_images(f->path, cases[i].meta, cases[i].bad_label);
		assert_int_equal(sn_data_open(f->path, &d), cases[i].err);
		if (!strstr(sn_errdetail(), cases[i].what))
			fail_msg("case %zu: \"%s\" does not mention %s", i, sn_errdetail(), cases[i].what);
		assert_null(d.mean);
		assert_int_equal(d.st.ntensors, 0);
	}
}

static void open_refuses_wrong_tensors(void **state)
{
	fixture *f = *state;
	const char *meta[] = { "format", "sn.data.v1", "classes", "2", "mean", "[0]", "std", "[1]", NULL };
	const int64_t shape[3] = { 2, 2, 2 };
	int32_t v[8] = { 0 };
	sn_data d;
	write_data(f->path, SN_I32, 2, shape, v, 2, 0, meta);
	assert_int_equal(sn_data_open(f->path, &d), SN_EUNSUPPORTED);
	write_data(f->path, SN_F32, 3, shape, v, 2, 0, meta);
	assert_int_equal(sn_data_open(f->path, &d), SN_EFORMAT);
	assert_int_not_equal(sn_data_open("/nonexistent/d.safetensors", &d), 0);
}

/* An IDX pair of n 2x2 images whose pixel 0 is the record number. */
static void write_idx(const char *dir, int n, int classes)
{
	char p[160];
	snprintf(p, sizeof p, "%s/im", dir);
	FILE *im = fopen(p, "wb");
	snprintf(p, sizeof p, "%s/lb", dir);
	FILE *lb = fopen(p, "wb");
	assert_non_null(im);
	assert_non_null(lb);
	const unsigned char hi[16] = { 0, 0, 8, 3, 0, 0, 0, (unsigned char)n, 0, 0, 0, 2, 0, 0, 0, 2 };
	const unsigned char hl[8] = { 0, 0, 8, 1, 0, 0, 0, (unsigned char)n };
	fwrite(hi, 1, 16, im);
	fwrite(hl, 1, 8, lb);
	for (int i = 0; i < n; i++) {
		unsigned char px[4] = { (unsigned char)i, 10, 20, 30 }, y = (unsigned char)(i * 7 % classes);
		fwrite(px, 1, 4, im);
		fwrite(&y, 1, 1, lb);
	}
	fclose(im);
	fclose(lb);
}

static void shard_opts(sn_shard_opts *o, const fixture *f, const char **in, const char **lb,
		       char *out)
{
	static char im[160], lab[160];
	snprintf(im, sizeof im, "%s/im", f->dir);
	snprintf(lab, sizeof lab, "%s/lb", f->dir);
	snprintf(out, 160, "%s/out", f->dir);
	in[0] = im;
	lb[0] = lab;
	sn_shard_opts_init(o);
	o->inputs = in;
	o->ninputs = 1;
	o->labels = lb;
	o->nlabels = 1;
	o->outdir = out;
}

static void shard_stratifies_and_every_record_lands_once(void **state)
{
	fixture *f = *state;
	write_idx(f->dir, 100, 4);
	const char *in[1], *lb[1];
	char out[160];
	sn_shard_opts o;
	sn_shard_result r;
	shard_opts(&o, f, in, lb, out);
	o.k = 3;
	o.split = SN_SPLIT_STRATIFY;
	assert_int_equal(sn_shard_write(&o, &r), 0);
	assert_int_equal(r.records, 100);
	assert_int_equal(r.classes, 4);
	assert_int_equal(r.nfiles, 3);
	int seen[100] = { 0 }, count[3][4] = { { 0 } };
	for (int k = 0; k < 3; k++) {
		sn_data d;
		assert_int_equal(sn_data_open(r.files[k], &d), 0);
		assert_int_equal(d.x->dtype, SN_U8);
		for (int64_t i = 0; i < d.n; i++) {
			int rec = ((const uint8_t *)d.x->data)[i * 4];
			int y = ((const int32_t *)d.y->data)[i];
			assert_int_equal(y, rec * 7 % 4);
			seen[rec]++;
			count[k][y]++;
		}
		sn_data_close(&d);
	}
	for (int i = 0; i < 100; i++)
		assert_int_equal(seen[i], 1);
	for (int c = 0; c < 4; c++)
		for (int k = 1; k < 3; k++)
			assert_true(abs(count[k][c] - count[0][c]) <= 1);
	sn_shard_result_free(&r);
}

static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* Hidden staging directories sn-shard left in dir. */
static int stages(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += strstr(e->d_name, ".sn-shard-") != NULL;
	closedir(d);
	return n;
}

static void shard_failure_leaves_nothing(void **state)
{
	fixture *f = *state;
	write_idx(f->dir, 5, 2);
	const char *in[1], *lb[1];
	char out[160];
	sn_shard_opts o;
	sn_shard_result r;
	shard_opts(&o, f, in, lb, out);
	o.k = 6;
	assert_int_equal(sn_shard_write(&o, &r), SN_EMISMATCH);
	assert_string_equal(r.errfile, in[0]);
	assert_int_equal(entries(out), -1);     /* not even created */
	assert_int_equal(stages(f->dir), 0);
	o.k = 2;
	o.val = 0.5;
	o.classes = 1;
	assert_int_equal(sn_shard_write(&o, &r), SN_EFORMAT);
	assert_string_equal(r.errfile, lb[0]);
	assert_int_equal(entries(out), -1);
	assert_int_equal(stages(f->dir), 0);
	o.classes = 0;
	o.nlabels = 0;
	assert_int_equal(sn_shard_write(&o, &r), SN_EINVAL);
	o.nlabels = 1;
	o.k = 0;
	assert_int_equal(sn_shard_write(&o, &r), SN_EINVAL);
}

static void shard_reads_quoted_crlf_csv_with_string_labels(void **state)
{
	fixture *f = *state;
	char csv[160], out[160];
	snprintf(csv, sizeof csv, "%s/t.csv", f->dir);
	snprintf(out, sizeof out, "%s/out", f->dir);
	FILE *fp = fopen(csv, "wb");
	assert_non_null(fp);
	fputs("x1,\"x 2\",kind\r\n1.5,\"2\",\"b, c\"\r\n\r\n3,4,a\r\n5,6,\"b, c\"", fp);
	fclose(fp);
	const char *in[1] = { csv };
	sn_shard_opts o;
	sn_shard_result r;
	sn_shard_opts_init(&o);
	o.inputs = in;
	o.ninputs = 1;
	o.outdir = out;
	o.split = SN_SPLIT_CONTIGUOUS;
	assert_int_equal(sn_shard_write(&o, &r), 0);
	assert_int_equal(r.records, 3);
	assert_int_equal(r.classes, 2);
	sn_data d;
	assert_int_equal(sn_data_open(r.files[0], &d), 0);
	assert_string_equal(sn_st_meta(&d.st, "class_names"), "[\"a\",\"b, c\"]");
	const float *x = d.x->data;
	const int32_t *y = d.y->data;
	assert_int_equal(d.shape.d[0], 2);
	assert_float_equal(x[0], 1.5, 0);
	assert_float_equal(x[5], 6, 0);
	assert_int_equal(y[0], 1);
	assert_int_equal(y[1], 0);
	assert_int_equal(y[2], 1);
	assert_float_equal(d.mean[0], (1.5 + 3 + 5) / 3, 1e-6);
	sn_data_close(&d);
	sn_shard_result_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(batch_normalises_u8_images_per_channel, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_normalises_f32_tables_per_feature_or_once, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_normalises_wide_f32_tables, setup, teardown),
		cmocka_unit_test_setup_teardown(open_refuses_malformed_data_files, setup, teardown),
		cmocka_unit_test_setup_teardown(open_refuses_wrong_tensors, setup, teardown),
		cmocka_unit_test_setup_teardown(open_refuses_nonfinite_x_and_tiny_std, setup, teardown),
		cmocka_unit_test_setup_teardown(shard_stratifies_and_every_record_lands_once, setup, teardown),
		cmocka_unit_test_setup_teardown(shard_failure_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(shard_reads_quoted_crlf_csv_with_string_labels, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
