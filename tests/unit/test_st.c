/* Unit tests for lib/st.c: round trips of every dtype through plain, gzip
 * and stdin files, the atomic-write discipline, and the library-level suite
 * of corrupt inputs through sn_st_read_buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "crc32.h"
#include "st.h"

static char dir[64];

static int make_dir(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/sn-test-st.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *in_dir(const char *name, char *buf)
{
	snprintf(buf, 256, "%s/%s", dir, name);
	return buf;
}

static int files_in_dir(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	unsigned char *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

/* ---------------------------------------------------------------- round trips */

/* One tensor of every dtype, a scalar and an empty one; bytes are a pattern
 * that differs per tensor, so a swapped offset shows. */
static void build_every_dtype(sn_st *st, unsigned char *pool)
{
	sn_st_init(st);
	size_t at = 0;
	for (int i = 0; i < SN_DTYPE_COUNT; i++) {
		int64_t shape[2] = {2, 3};
		size_t n = 6 * sn_dtype_size((sn_dtype)i);
		for (size_t k = 0; k < n; k++)
			pool[at + k] = (unsigned char)(i * 31 + k * 7 + 1);
		if (i == SN_BOOL)
			for (size_t k = 0; k < n; k++)
				pool[at + k] &= 1;
		char name[32];
		snprintf(name, sizeof name, "t.%s", sn_dtype_name((sn_dtype)i));
		assert_int_equal(sn_st_add(st, name, (sn_dtype)i, 2, shape, pool + at, 1), 0);
		at += n;
	}
	float scalar = 3.5f;
	int64_t empty[2] = {0, 4};
	assert_int_equal(sn_st_add(st, "scalar", SN_F32, 0, NULL, &scalar, 1), 0);
	assert_int_equal(sn_st_add(st, "empty", SN_U8, 2, empty, NULL, 0), 0);
	assert_int_equal(sn_st_set_meta(st, "format", "test"), 0);
	assert_int_equal(sn_st_set_meta(st, "note", "line one\nline \"two\" é"), 0);
}

static void assert_same(const sn_st *a, const sn_st *b)
{
	assert_int_equal(a->ntensors, b->ntensors);
	for (int i = 0; i < a->ntensors; i++) {
		const sn_tensor *x = &a->tensors[i], *y = &b->tensors[i];
		assert_string_equal(x->name, y->name);
		assert_int_equal(x->dtype, y->dtype);
		assert_int_equal(x->ndim, y->ndim);
		assert_memory_equal(x->shape, y->shape, (size_t)x->ndim * sizeof *x->shape);
		assert_int_equal(x->nbytes, y->nbytes);
		if (x->nbytes)
			assert_memory_equal(x->data, y->data, x->nbytes);
	}
	for (int i = 0; i < a->nmeta; i++)
		assert_string_equal(sn_st_meta(b, a->meta[i].key), a->meta[i].value);
}

static void every_dtype_round_trips(const char *name, unsigned flags)
{
	unsigned char pool[1024];
	char path[256], crc[9];
	sn_st st, back;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir(name, path)), 0);
	assert_int_equal(sn_st_read(path, &back, flags), 0);
	assert_same(&st, &back);
	snprintf(crc, sizeof crc, "%08x", (unsigned)sn_st_data_crc(&st));
	assert_string_equal(sn_st_meta(&back, "crc32"), crc);
	assert_int_equal(sn_st_data_crc(&back), sn_st_data_crc(&st));
	assert_null(sn_st_meta(&st, "crc32"));	/* the writer does not change st */
	sn_st_free(&back);
	sn_st_free(&st);
	assert_int_equal(files_in_dir(), 1);	/* no temporary file left behind */
	unlink(path);
}

static void plain_file_round_trips_every_dtype(void **state)
{
	(void)state;
	every_dtype_round_trips("a.safetensors", 0);
	every_dtype_round_trips("b.safetensors", SN_ST_NO_MMAP);
}

static void gzip_file_round_trips_every_dtype(void **state)
{
	(void)state;
	every_dtype_round_trips("a.safetensors.gz", 0);
	/* and it really is gzip */
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("c.safetensors.gz", path)), 0);
	size_t len;
	unsigned char *b = slurp(path, &len);
	assert_true(len > 2 && b[0] == 0x1f && b[1] == 0x8b);
	free(b);
	sn_st_free(&st);
	unlink(path);
}

static void header_is_padded_json_with_metadata_first(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("h.safetensors", path)), 0);
	size_t len;
	unsigned char *b = slurp(path, &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | b[i];
	assert_int_equal((8 + n) % 8, 0);
	assert_memory_equal(b + 8, "{\"__metadata__\":{\"format\":\"test\"", 32);
	assert_true(b[8 + n - 1] == '}' || b[8 + n - 1] == ' ');
	free(b);
	sn_st_free(&st);
	unlink(path);
}

static void a_file_read_and_written_again_is_byte_identical(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char p1[256], p2[256], p3[256];
	sn_st st, back, edited;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("r1.safetensors", p1)), 0);
	sn_st_free(&st);
	assert_int_equal(sn_st_read(p1, &back, 0), 0);
	assert_int_equal(sn_st_write(&back, in_dir("r2.safetensors", p2)), 0);
	size_t l1, l2;
	unsigned char *b1 = slurp(p1, &l1), *b2 = slurp(p2, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(b1, b2, l1);
	/* an edited copy gets the crc32 of its new data, not the old file's */
	float extra[2] = {1, 2};
	int64_t shape[1] = {2};
	assert_int_equal(sn_st_add(&back, "extra", SN_F32, 1, shape, extra, 1), 0);
	assert_int_equal(sn_st_write(&back, in_dir("r3.safetensors", p3)), 0);
	assert_int_equal(sn_st_read(p3, &edited, 0), 0);
	assert_int_equal(edited.ntensors, back.ntensors);
	sn_st_free(&edited);
	sn_st_free(&back);
	free(b1);
	free(b2);
	unlink(p1);
	unlink(p2);
	unlink(p3);
}

static void stdin_is_read_whole(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st, back;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("s.safetensors", path)), 0);
	int saved = dup(0), fd = open(path, O_RDONLY);
	assert_true(saved >= 0 && fd >= 0);
	assert_int_equal(dup2(fd, 0), 0);
	close(fd);
	int err = sn_st_read("-", &back, 0);
	dup2(saved, 0);
	close(saved);
	assert_int_equal(err, 0);
	assert_same(&st, &back);
	sn_st_free(&back);
	sn_st_free(&st);
	unlink(path);
}

static void new_files_get_the_umask_permissions(void **state)
{
	(void)state;
	char path[256];
	sn_st st;
	sn_st_init(&st);
	mode_t old = umask(022);
	int err = sn_st_write(&st, in_dir("p.safetensors", path));
	umask(old);
	assert_int_equal(err, 0);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);
	unlink(path);
}

static void build_api_refuses_bad_tensors(void **state)
{
	(void)state;
	sn_st st;
	float x = 1;
	int64_t shape[1] = {1}, huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
	sn_st_init(&st);
	assert_int_equal(sn_st_add(&st, "a", SN_F32, 1, shape, &x, 0), 0);
	assert_int_equal(sn_st_add(&st, "a", SN_F32, 1, shape, &x, 0), SN_EINVAL);
	assert_int_equal(sn_st_add(&st, "__metadata__", SN_F32, 1, shape, &x, 0), SN_EINVAL);
	assert_int_equal(sn_st_add(&st, "b", SN_F32, 2, huge, &x, 0), SN_EINVAL);
	assert_int_equal(sn_st_add(&st, "c", SN_F32, SN_MAX_DIMS + 1, huge, &x, 0), SN_EINVAL);
	assert_int_equal(sn_st_add(&st, "d", SN_F32, 1, shape, NULL, 0), SN_EINVAL);
	assert_int_equal(sn_st_set_meta(&st, "k", "1"), 0);
	assert_int_equal(sn_st_set_meta(&st, "k", "2"), 0);
	assert_int_equal(st.nmeta, 1);
	assert_string_equal(sn_st_meta(&st, "k"), "2");
	assert_non_null(sn_st_find(&st, "a"));
	assert_null(sn_st_find(&st, "b"));
	sn_st_free(&st);
}

/* ---------------------------------------------------------------- atomic writes */

static void atomic_abort_leaves_nothing(void **state)
{
	(void)state;
	char path[256];
	sn_atomic a;
	assert_int_equal(sn_atomic_open(&a, in_dir("t.tsv", path)), 0);
	assert_int_equal(sn_write_all(a.fd, "x\n", 2), 0);
	sn_atomic_abort(&a);
	assert_int_equal(files_in_dir(), 0);

	assert_int_equal(sn_atomic_open(&a, path), 0);
	assert_int_equal(sn_write_all(a.fd, "y\n", 2), 0);
	assert_int_equal(sn_atomic_commit(&a), 0);
	size_t len;
	unsigned char *b = slurp(path, &len);
	assert_int_equal(len, 2);
	assert_memory_equal(b, "y\n", 2);
	free(b);
	assert_int_equal(files_in_dir(), 1);
	unlink(path);
}

static void write_into_a_missing_directory_fails_cleanly(void **state)
{
	(void)state;
	char path[256];
	sn_st st;
	sn_st_init(&st);
	assert_int_equal(sn_st_write(&st, in_dir("nodir/w.safetensors", path)), SN_EIO);
	assert_int_equal(files_in_dir(), 0);
}

static void failed_write_keeps_the_old_file(void **state)
{
	(void)state;
	char path[256];
	sn_st st;
	unsigned char bad[4] = {0xff, 0xfe, 0, 0};	/* not UTF-8: JSON cannot hold it */
	sn_st_init(&st);
	assert_int_equal(sn_st_write(&st, in_dir("keep.safetensors", path)), 0);
	size_t len0, len1;
	free(slurp(path, &len0));
	assert_int_equal(sn_st_set_meta(&st, "bad", (const char *)bad), 0);
	assert_int_equal(sn_st_write(&st, path), SN_EINVAL);
	free(slurp(path, &len1));
	assert_int_equal(len0, len1);
	assert_int_equal(files_in_dir(), 1);
	sn_st_free(&st);
	unlink(path);
}

/* A set whose last output cannot be created changes none of its files. */
static void a_set_is_written_whole_or_not_at_all(void **state)
{
	(void)state;
	char a[256], b[256];
	sn_st one, two;
	sn_st_init(&one);
	sn_st_init(&two);
	assert_int_equal(sn_st_set_meta(&one, "which", "one"), 0);
	assert_int_equal(sn_st_set_meta(&two, "which", "two"), 0);
	const sn_st *files[] = {&one, &two};
	const char *paths[] = {in_dir("state.safetensors", a), in_dir("w.safetensors", b)};
	int failed = -1;
	assert_int_equal(sn_st_write_all(files, paths, 2, &failed), 0);
	assert_int_equal(files_in_dir(), 2);
	size_t len0, len1;
	free(slurp(a, &len0));

	/* the second output in a missing directory: the first keeps its bytes */
	assert_int_equal(sn_st_set_meta(&one, "which", "one, longer now"), 0);
	char nodir[256];
	const char *bad[] = {a, in_dir("nodir/w.safetensors", nodir)};
	assert_int_equal(sn_st_write_all(files, bad, 2, &failed), SN_EIO);
	assert_int_equal(failed, 1);
	free(slurp(a, &len1));
	assert_int_equal(len0, len1);
	assert_int_equal(files_in_dir(), 2);

	/* both replaced together */
	assert_int_equal(sn_st_write_all(files, paths, 2, &failed), 0);
	free(slurp(a, &len1));
	assert_int_not_equal(len0, len1);
	assert_int_equal(files_in_dir(), 2);
	sn_st_free(&one);
	sn_st_free(&two);
	unlink(a);
	unlink(b);
}

/* What a SIGTERM handler calls: every temporary in flight is removed. */
static void the_signal_hook_removes_temporaries_in_flight(void **state)
{
	(void)state;
	char p1[256], p2[256];
	sn_atomic a, b;
	assert_int_equal(sn_atomic_open(&a, in_dir("x.tsv", p1)), 0);
	assert_int_equal(sn_atomic_open(&b, in_dir("y.tsv", p2)), 0);
	assert_int_equal(files_in_dir(), 2);
	assert_int_equal(sn_atomic_on_signal(SIGTERM), 0);
	assert_int_equal(files_in_dir(), 0);
	sn_atomic_abort(&a);
	sn_atomic_abort(&b);
	/* released slots hold no names: nothing later is removed by mistake */
	assert_int_equal(sn_atomic_open(&a, p1), 0);
	assert_int_equal(sn_atomic_commit(&a), 0);
	assert_int_equal(sn_atomic_on_signal(SIGTERM), 0);
	assert_int_equal(files_in_dir(), 1);
	unlink(p1);
}

/* ---------------------------------------------------------------- corrupt input */

/* A file from a header JSON and a data section, as a foreign writer would
 * make it (no padding, no crc unless the JSON has one). */
static unsigned char *raw_file(const char *json, const void *data, size_t dlen, size_t *len)
{
	size_t n = strlen(json);
	unsigned char *b = malloc(8 + n + dlen + 1);
	assert_non_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(b + 8, json, n);
	if (dlen)
		memcpy(b + 8 + n, data, dlen);
	*len = 8 + n + dlen;
	return b;
}

static void expect(const char *json, const void *data, size_t dlen, int code, const char *words)
{
	size_t len;
	unsigned char *b = raw_file(json, data, dlen, &len);
	sn_st st;
	int err = sn_st_read_buffer(b, len, &st, 0);
	free(b);
	if (err != code)
		fail_msg("%s: got %d (%s), want %d", json, err, sn_errdetail(), code);
	if (err)
		assert_int_equal(st.ntensors, 0);	/* left empty */
	else
		sn_st_free(&st);
	if (words && !strstr(sn_errdetail(), words))
		fail_msg("%s: detail \"%s\" lacks \"%s\"", json, sn_errdetail(), words);
}

static const char data16[16] = "0123456789abcdef";

static void a_foreign_file_without_crc_is_read(void **state)
{
	(void)state;
	expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[2,4],\"data_offsets\":[8,16]}}",
	       data16, 16, 0, NULL);
	/* declared out of order, read in data order */
	size_t len;
	unsigned char *b = raw_file("{\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]},"
				    "\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
				    "\"__metadata__\":{\"k\":\"v\"}}",
				    data16, 16, &len);
	sn_st st;
	assert_int_equal(sn_st_read_buffer(b, len, &st, 0), 0);
	assert_string_equal(st.tensors[0].name, "a");
	assert_memory_equal(st.tensors[1].data, "89abcdef", 8);
	assert_string_equal(sn_st_meta(&st, "k"), "v");
	sn_st_free(&st);
	free(b);
	expect("{}", NULL, 0, 0, NULL);
	expect("{\"__metadata__\":{}}  ", NULL, 0, 0, NULL);
}

static void a_truncation_anywhere_is_reported_as_truncated(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("t.safetensors", path)), 0);
	sn_st_free(&st);
	size_t len;
	unsigned char *b = slurp(path, &len);
	unlink(path);
	for (size_t cut = 0; cut < len; cut++) {
		int err = sn_st_read_buffer(b, cut, &st, 0);
		if (err != SN_ETRUNC)
			fail_msg("cut at %zu of %zu: got %d (%s)", cut, len, err, sn_errdetail());
	}
	assert_int_equal(sn_st_read_buffer(b, len, &st, 0), 0);
	sn_st_free(&st);
	free(b);
}

static void header_lengths_past_the_end_or_absurd_are_refused(void **state)
{
	(void)state;
	unsigned char b[16] = {0};
	sn_st st;
	b[0] = 9;	/* 9 bytes of header in a 16-byte file */
	assert_int_equal(sn_st_read_buffer(b, sizeof b, &st, 0), SN_ETRUNC);
	memset(b, 0, 8);
	b[7] = 0x80;	/* 2^63 */
	assert_int_equal(sn_st_read_buffer(b, sizeof b, &st, 0), SN_EFORMAT);
	memset(b, 0xff, 8);	/* 2^64 - 1: no wrap-around */
	assert_int_equal(sn_st_read_buffer(b, sizeof b, &st, 0), SN_EFORMAT);
	memset(b, 0, 8);
	b[3] = 0x10;	/* 256 MiB: over SN_ST_MAX_HEADER */
	assert_int_equal(sn_st_read_buffer(b, sizeof b, &st, 0), SN_EFORMAT);
	assert_int_equal(sn_st_read_buffer(b, 0, &st, 0), SN_ETRUNC);
	assert_non_null(strstr(sn_errdetail(), "empty"));
}

static void malformed_json_is_refused(void **state)
{
	(void)state;
	expect("{\"a\":", NULL, 0, SN_EFORMAT, "JSON");
	expect("[1,2]", NULL, 0, SN_EFORMAT, "not an object");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
	       data16, 2, SN_EFORMAT, "duplicate");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", data16, 1,
	       SN_EFORMAT, "exactly");
	expect("{\"a\":[1]}", NULL, 0, SN_EFORMAT, "not an object");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} \x01", data16, 1,
	       SN_EFORMAT, "JSON");
}

static void bad_tensor_entries_are_refused(void **state)
{
	(void)state;
	expect("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", data16, 4,
	       SN_EFORMAT, "F33");
	expect("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", data16, 4, SN_EFORMAT,
	       "dtype");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
	       NULL, 0, SN_EFORMAT, "overflow");
	expect("{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,0]}}",
	       NULL, 0, SN_EFORMAT, "overflow");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", NULL, 0,
	       SN_EFORMAT, "non-negative");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", NULL, 0,
	       SN_EFORMAT, "non-negative");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
	       data16, 1, SN_EFORMAT, "dimensions");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", data16, 1,
	       SN_EFORMAT, "data_offsets");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", data16, 1,
	       SN_EFORMAT, "end before");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", data16, 1,
	       SN_EFORMAT, "non-negative");
	/* the offset length must match dtype and shape */
	expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", data16, 4,
	       SN_EFORMAT, "need 8");
}

static void offsets_must_tile_the_data_section(void **state)
{
	(void)state;
	/* out of range: the data section is shorter than the tensors */
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1000],\"data_offsets\":[0,1000]}}", data16, 16,
	       SN_ETRUNC, "1000");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
	       data16, 12, SN_EFORMAT, "overlap");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
	       data16, 12, SN_EFORMAT, "gap");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", data16, 8,
	       SN_EFORMAT, "gap");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", data16, 8,
	       SN_EFORMAT, "after the last tensor");
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
	       data16, 8, SN_EFORMAT, "overlap");
	/* empty tensors sit anywhere between the others */
	expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
	       data16, 8, 0, NULL);
}

static void metadata_must_map_strings_to_strings(void **state)
{
	(void)state;
	expect("{\"__metadata__\":{\"round\":3}}", NULL, 0, SN_EFORMAT, "round");
	expect("{\"__metadata__\":[\"a\"]}", NULL, 0, SN_EFORMAT, "__metadata__");
	expect("{\"__metadata__\":{\"crc32\":\"ABCDEF01\"}}", NULL, 0, SN_EFORMAT, "hex");
	expect("{\"__metadata__\":{\"crc32\":\"123\"}}", NULL, 0, SN_EFORMAT, "hex");
}

static void a_flipped_data_byte_fails_the_crc(void **state)
{
	(void)state;
	char json[256];
	snprintf(json, sizeof json,
		 "{\"__metadata__\":{\"crc32\":\"%08lx\"},"
		 "\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
		 crc32(0, (const Bytef *)data16, 16));
	expect(json, data16, 16, 0, NULL);
	char flipped[16];
	memcpy(flipped, data16, 16);
	flipped[5] ^= 1;
	expect(json, flipped, 16, SN_ECRC, "crc32");
	size_t len;
	unsigned char *b = raw_file(json, flipped, 16, &len);
	sn_st st;
	assert_int_equal(sn_st_read_buffer(b, len, &st, SN_ST_SKIP_CRC), 0);
	sn_st_free(&st);
	free(b);
}

static void files_that_are_not_there_or_not_files(void **state)
{
	(void)state;
	char path[256];
	sn_st st;
	assert_int_equal(sn_st_read(in_dir("missing.safetensors", path), &st, 0), SN_EIO);
	assert_non_null(strstr(sn_errdetail(), "No such file"));
	assert_int_equal(sn_st_read(dir, &st, 0), SN_EIO);
	assert_non_null(strstr(sn_errdetail(), "directory"));
	int fd = open(in_dir("empty.safetensors", path), O_CREAT | O_WRONLY, 0644);
	close(fd);
	assert_int_equal(sn_st_read(path, &st, 0), SN_ETRUNC);
	assert_non_null(strstr(sn_errdetail(), "empty"));
	unlink(path);
}

static void a_truncated_gzip_stream_is_truncated(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("g.safetensors.gz", path)), 0);
	sn_st_free(&st);
	size_t len;
	unsigned char *b = slurp(path, &len);
	FILE *f = fopen(path, "wb");
	assert_int_equal(fwrite(b, 1, len / 2, f), len / 2);
	fclose(f);
	assert_int_equal(sn_st_read(path, &st, 0), SN_ETRUNC);
	/* not gzip at all: zlib passes plain bytes through, so a plain file
	 * named .gz still reads, and garbage is refused as malformed */
	f = fopen(path, "wb");
	assert_int_equal(fwrite("garbage!garbage!", 1, 16, f), 16);
	fclose(f);
	assert_int_not_equal(sn_st_read(path, &st, 0), 0);
	free(b);
	unlink(path);
}

/* Random byte edits of a valid file: each read either succeeds with every
 * tensor inside the buffer or fails with an SN_E* code, never crashes (the
 * sanitized build catches what a plain one would not). */
static void random_corruptions_never_crash(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("f.safetensors", path)), 0);
	sn_st_free(&st);
	size_t len;
	unsigned char *good = slurp(path, &len), *b = malloc(len);
	unlink(path);
	uint32_t x = 2024;
	int accepted = 0;
	for (int round = 0; round < 10000; round++) {
		memcpy(b, good, len);
		int edits = 1 + round % 4;
		for (int e = 0; e < edits; e++) {
			x = x * 1664525u + 1013904223u;
			size_t at = (x >> 8) % len;
			x = x * 1664525u + 1013904223u;
			b[at] = (round & 1) ? (unsigned char)(x >> 24) : b[at] ^ (unsigned char)(1u << (x >> 29));
		}
		int err = sn_st_read_buffer(b, len - (round % 7 == 0), &st, round % 3 ? 0 : SN_ST_SKIP_CRC);
		assert_true(err <= 0 && err > -SN_ERROR_COUNT);
		if (err)
			continue;
		accepted++;
		const unsigned char *base = st.base;
		for (int i = 0; i < st.ntensors; i++) {
			const unsigned char *d = st.tensors[i].data;
			assert_true(d >= base && d + st.tensors[i].nbytes <= base + st.base_len);
		}
		sn_st_free(&st);
	}
	/* edits that only touch padding or skip the crc do get through */
	assert_true(accepted > 0);
	free(b);
	free(good);
}

static void a_gzip_stream_with_trailing_data_is_refused(void **state)
{
	(void)state;
	unsigned char pool[1024];
	char path[256];
	sn_st st;
	build_every_dtype(&st, pool);
	assert_int_equal(sn_st_write(&st, in_dir("x.safetensors", path)), 0);
	sn_st_free(&st);
	size_t len;
	unsigned char *b = slurp(path, &len);
	unlink(path);
	gzFile g = gzopen(in_dir("x.safetensors.gz", path), "wb");
	assert_non_null(g);
	assert_int_equal(gzwrite(g, b, (unsigned)len), (int)len);
	assert_int_equal(gzwrite(g, "extra", 5), 5);
	assert_int_equal(gzclose(g), Z_OK);
	assert_int_equal(sn_st_read(path, &st, 0), SN_EFORMAT);
	assert_non_null(strstr(sn_errdetail(), "after the last tensor"));
	free(b);
	unlink(path);
}

static void a_gzip_stream_declaring_more_than_memory_is_refused_early(void **state)
{
	(void)state;
	char path[256];
	size_t len;
	unsigned char *b = raw_file("{\"x\":{\"dtype\":\"U8\",\"shape\":[1125899906842624],"
				    "\"data_offsets\":[0,1125899906842624]}}", data16, 16, &len);
	gzFile g = gzopen(in_dir("bomb.safetensors.gz", path), "wb");
	assert_non_null(g);
	assert_int_equal(gzwrite(g, b, (unsigned)len), (int)len);
	assert_int_equal(gzclose(g), Z_OK);
	sn_st st;
	assert_int_equal(sn_st_read(path, &st, 0), SN_ENOMEM);
	assert_non_null(strstr(sn_errdetail(), "memory"));
	free(b);
	unlink(path);
}

/* The folded CRC-32 against zlib's, byte for byte: every length up to 600
 * at every alignment (the 64- and 16-byte fold boundaries and the tail),
 * long buffers, and chained calls. */
static void sn_crc32_equals_zlib_for_any_length_alignment_and_start(void **state)
{
	(void)state;
	enum { N = 1 << 20 };
	unsigned char *b = malloc(N + 64);
	assert_non_null(b);
	uint32_t x = 12345;
	for (size_t i = 0; i < N + 64; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (unsigned char)(x >> 16);
	}
	for (size_t off = 0; off < 17; off++)
		for (size_t len = 0; len <= 600; len++)
			assert_int_equal(sn_crc32(0, b + off, len), (uint32_t)crc32(0, b + off, (uInt)len));
	for (size_t len = N - 100; len <= N; len += 7)
		assert_int_equal(sn_crc32(0, b + 3, len), (uint32_t)crc32(0, b + 3, (uInt)len));
	uint32_t c = sn_crc32(0, b, 1000);
	c = sn_crc32(c, b + 1000, 333);
	assert_int_equal(c, (uint32_t)crc32(0, b, 1333));
	assert_int_equal(sn_crc32(0xdeadbeef, b, 4096), (uint32_t)crc32(0xdeadbeef, b, 4096));
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plain_file_round_trips_every_dtype),
		cmocka_unit_test(gzip_file_round_trips_every_dtype),
		cmocka_unit_test(header_is_padded_json_with_metadata_first),
		cmocka_unit_test(a_file_read_and_written_again_is_byte_identical),
		cmocka_unit_test(stdin_is_read_whole),
		cmocka_unit_test(new_files_get_the_umask_permissions),
		cmocka_unit_test(build_api_refuses_bad_tensors),
		cmocka_unit_test(atomic_abort_leaves_nothing),
		cmocka_unit_test(write_into_a_missing_directory_fails_cleanly),
		cmocka_unit_test(failed_write_keeps_the_old_file),
		cmocka_unit_test(a_set_is_written_whole_or_not_at_all),
		cmocka_unit_test(the_signal_hook_removes_temporaries_in_flight),
		cmocka_unit_test(a_foreign_file_without_crc_is_read),
		cmocka_unit_test(a_truncation_anywhere_is_reported_as_truncated),
		cmocka_unit_test(header_lengths_past_the_end_or_absurd_are_refused),
		cmocka_unit_test(malformed_json_is_refused),
		cmocka_unit_test(bad_tensor_entries_are_refused),
		cmocka_unit_test(offsets_must_tile_the_data_section),
		cmocka_unit_test(metadata_must_map_strings_to_strings),
		cmocka_unit_test(a_flipped_data_byte_fails_the_crc),
		cmocka_unit_test(files_that_are_not_there_or_not_files),
		cmocka_unit_test(a_truncated_gzip_stream_is_truncated),
		cmocka_unit_test(a_gzip_stream_with_trailing_data_is_refused),
		cmocka_unit_test(a_gzip_stream_declaring_more_than_memory_is_refused_early),
		cmocka_unit_test(random_corruptions_never_crash),
		cmocka_unit_test(sn_crc32_equals_zlib_for_any_length_alignment_and_start),
	};
	return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
