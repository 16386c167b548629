/* Unit tests for lib/gz.c, the strict gzip reader, on its own and behind
 * sn_st_read: whole streams and concatenated members read back; a stream
 * cut anywhere (inside its trailer too) is truncated; bytes after the last
 * member are refused; plain bytes pass through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "gz.h"
#include "st.h"

static char dir[64], path[128];

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/sn-test-gz.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof path, "%s/f.gz", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return rmdir(dir);
}

/* data[0..n) as one gzip member into *out (malloc'd); returns its length. */
static size_t gzip_member(const unsigned char *data, size_t n, unsigned char **out)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t cap = deflateBound(&z, (uLong)n);
	*out = malloc(cap);
	assert_non_null(*out);
	z.next_in = (unsigned char *)data;
	z.avail_in = (uInt)n;
	z.next_out = *out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	size_t len = cap - z.avail_out;
	deflateEnd(&z);
	return len;
}

static void put(const void *a, size_t na, const void *b, size_t nb)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(a, 1, na, f), na);
	if (nb)
		assert_int_equal(fwrite(b, 1, nb, f), nb);
	assert_int_equal(fclose(f), 0);
}

/* Read the file to its end in small steps: the bytes, or the error. */
static ssize_t read_all(unsigned char *buf, size_t cap)
{
	sn_gz *g;
	int rc = sn_gz_open(open(path, O_RDONLY), &g);
	if (rc)
		return rc;
	size_t len = 0;
	ssize_t r;
	while ((r = sn_gz_read(g, buf + len, cap - len < 7 ? cap - len : 7)) > 0)
		len += (size_t)r;
	sn_gz_close(g);
	return r < 0 ? r : (ssize_t)len;
}

static unsigned char data[5000];

static void fill_data(void)
{
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (unsigned char)(i * 7 / 13);
}

static void whole_streams_and_concatenated_members_read_back(void **state)
{
	(void)state;
	fill_data();
	unsigned char *a, *b, back[2 * sizeof data];
	size_t na = gzip_member(data, sizeof data, &a), nb = gzip_member(data, 100, &b);
	put(a, na, NULL, 0);
	assert_int_equal(read_all(back, sizeof back), sizeof data);
	assert_memory_equal(back, data, sizeof data);
	put(a, na, b, nb);
	assert_int_equal(read_all(back, sizeof back), sizeof data + 100);
	assert_memory_equal(back + sizeof data, data, 100);
	put(data, 3, NULL, 0);    /* plain bytes pass through */
	assert_int_equal(read_all(back, sizeof back), 3);
	put("", 0, NULL, 0);
	assert_int_equal(read_all(back, sizeof back), 0);
	free(a);
	free(b);
}

static void a_stream_cut_anywhere_is_truncated(void **state)
{
	(void)state;
	fill_data();
	unsigned char *a, back[sizeof data + 64];
	size_t na = gzip_member(data, sizeof data, &a);
	size_t cuts[] = { 2, 5, 10, 20, na / 2, na - 8, na - 4, na - 1 };
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		put(a, cuts[i], NULL, 0);
		assert_int_equal(read_all(back, sizeof back), SN_ETRUNC);
		assert_non_null(strstr(sn_errdetail(), "truncated gzip stream"));
	}
	free(a);
}

static void bytes_after_the_last_member_are_refused(void **state)
{
	(void)state;
	fill_data();
	unsigned char *a, back[sizeof data + 64];
	size_t na = gzip_member(data, sizeof data, &a);
	const char *tails[] = { "x", "garbage", "\0\0\0\0", "\x1f" };
	size_t lens[] = { 1, 7, 4, 1 };
	for (size_t i = 0; i < 4; i++) {
		put(a, na, tails[i], lens[i]);
		ssize_t r = read_all(back, sizeof back);
		assert_true(r == SN_EFORMAT || r == SN_ETRUNC);
	}
	put(a, na, "garbage", 7);
	assert_int_equal(read_all(back, sizeof back), SN_EFORMAT);
	assert_non_null(strstr(sn_errdetail(), "trailing garbage"));
	a[na - 5] ^= 1;    /* the stored length */
	put(a, na, NULL, 0);
	assert_int_equal(read_all(back, sizeof back), SN_EFORMAT);
	free(a);
}

/* The same through sn_st_read, which reads FILE.safetensors.gz. */
static void sn_st_read_refuses_cut_and_padded_gzip_files(void **state)
{
	(void)state;
	sn_st st;
	sn_st_init(&st);
	float v[3] = { 1, 2, 3 };
	int64_t shape = 3;
	char gzpath[160];
	snprintf(gzpath, sizeof gzpath, "%s/t.safetensors.gz", dir);
	assert_int_equal(sn_st_add(&st, "v", SN_F32, 1, &shape, v, 1), 0);
	assert_int_equal(sn_st_write(&st, gzpath), 0);
	sn_st_free(&st);
	FILE *f = fopen(gzpath, "rb");
	unsigned char buf[4096];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	assert_int_equal(sn_st_read(gzpath, &st, 0), 0);
	sn_st_free(&st);
	const struct { size_t len; const char *tail; int rc; } cases[] = {
		{ n - 8, "", SN_ETRUNC },        /* no trailer */
		{ n - 3, "", SN_ETRUNC },        /* half a trailer */
		{ 12, "", SN_ETRUNC },           /* cut in the deflate data */
		{ n, "trailing", SN_EFORMAT },   /* garbage after it */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		f = fopen(gzpath, "wb");
		fwrite(buf, 1, cases[i].len, f);
		fputs(cases[i].tail, f);
		fclose(f);
		assert_int_equal(sn_st_read(gzpath, &st, 0), cases[i].rc);
	}
	unlink(gzpath);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_streams_and_concatenated_members_read_back),
		cmocka_unit_test(a_stream_cut_anywhere_is_truncated),
		cmocka_unit_test(bytes_after_the_last_member_are_refused),
		cmocka_unit_test(sn_st_read_refuses_cut_and_padded_gzip_files),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
