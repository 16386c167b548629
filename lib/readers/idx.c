/* idx.c: IDX images (magic 0x803, u8, [N,rows,cols]) with their IDX label
 * file (0x801), plain or gzip, as LeCun's MNIST and Fashion-MNIST ship. */
#include "reader.h"

#include <stdlib.h>

#define MAX_PIXELS (1 << 24)

static uint32_t be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int idx_open_labels(sn_source *s)
{
	s->errpath = s->labpath;
	unsigned char h[8];
	size_t got;
	int rc = sn_in_open(&s->lab, s->labpath);
	if (!rc)
		rc = sn_in_read(&s->lab, h, 8, &got);
	if (rc)
		return rc;
	if (got < 8)
		return sn_fail(SN_ETRUNC, "truncated IDX header");
	if (be32(h) != 0x801)
		return sn_fail(SN_EFORMAT, "IDX magic 0x%08x, expected 0x00000801 (labels)", be32(h));
	if (be32(h + 4) != (uint64_t)s->n)
		return sn_fail(SN_EMISMATCH, "%u labels for %lld images", be32(h + 4), (long long)s->n);
	s->labels = malloc((size_t)s->n);
	if (!s->labels)
		return sn_fail(SN_ENOMEM, "out of memory");
	if ((rc = sn_in_read(&s->lab, s->labels, (size_t)s->n, &got)))
		return rc;
	if (got < (size_t)s->n)
		return sn_fail(SN_ETRUNC, "truncated: %zu of %lld labels", got, (long long)s->n);
	if ((rc = sn_in_read(&s->lab, h, 1, &got)))
		return rc;
	if (got)
		return sn_fail(SN_EFORMAT, "trailing data after %lld labels", (long long)s->n);
	for (int64_t i = 0; i < s->n; i++) {
		if ((rc = sn_reader_check_class(s->o, i, s->labels[i], 0)))
			return rc;
		if (s->labels[i] >= s->classes)
			s->classes = s->labels[i] + 1;
	}
	s->errpath = s->path;
	return 0;
}

static int idx_open(sn_source *s)
{
	unsigned char h[16];
	size_t got;
	int rc = sn_in_read(&s->in, h, 16, &got);
	if (rc)
		return rc;
	if (got < 16)
		return sn_fail(SN_ETRUNC, "truncated IDX header");
	if (be32(h) == 0x801)
		return sn_fail(SN_EINVAL, "an IDX label file: give it with --labels");
	if (be32(h) != 0x803)
		return sn_fail(SN_EFORMAT, "IDX magic 0x%08x, expected 0x00000803 (images)", be32(h));
	s->n = be32(h + 4);
	int64_t rows = be32(h + 8), cols = be32(h + 12);
	if (s->n == 0 || rows == 0 || cols == 0)
		return sn_fail(SN_EFORMAT, "IDX dimensions %lld x %lld x %lld: nothing to read",
			       (long long)s->n, (long long)rows, (long long)cols);
	/* each side first, so that the product cannot overflow */
	if (rows > MAX_PIXELS || cols > MAX_PIXELS || rows * cols > MAX_PIXELS)
		return sn_fail(SN_EFORMAT, "IDX header: images of %lld x %lld pixels (at most %d "
			       "in all)", (long long)rows, (long long)cols, MAX_PIXELS);
	s->dt = SN_U8;
	s->shape = (sn_shape){ 3, { 1, rows, cols } };
	s->recbytes = (size_t)(rows * cols);
	int64_t size = sn_in_plain_size(&s->in, s->path), want = 16 + s->n * rows * cols;
	if (size >= 0 && size < want)
		return sn_fail(SN_ETRUNC, "truncated: %lld bytes, expected %lld for %lld images",
			       (long long)size, (long long)want, (long long)s->n);
	if (size > want)
		return sn_fail(SN_EFORMAT, "%lld bytes of trailing data", (long long)(size - want));
	if (!s->labpath)
		return sn_fail(SN_EINVAL, "IDX images need their labels (--labels FILE)");
	return idx_open_labels(s);
}

static int idx_next(sn_source *s, void *x, int32_t *y)
{
	size_t got;
	int rc;
	if (s->done == s->n) {
		unsigned char c;
		if ((rc = sn_in_read(&s->in, &c, 1, &got)))
			return rc;
		if (got)
			return sn_fail(SN_EFORMAT, "trailing data after %lld images", (long long)s->n);
		return 0;
	}
	if ((rc = sn_in_read(&s->in, x, s->recbytes, &got)))
		return rc;
	if (got < s->recbytes)
		return sn_fail(SN_ETRUNC, "truncated: %lld of %lld images", (long long)s->done,
			       (long long)s->n);
	*y = s->labels[s->done++];
	return 1;
}

const sn_reader sn_reader_idx = {
	.name = "idx", .format = SN_INPUT_IDX, .open = idx_open, .next = idx_next,
};
