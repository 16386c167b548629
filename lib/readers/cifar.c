/* cifar.c: CIFAR-10 (3073-byte records: label, 3x32x32 u8) and CIFAR-100
 * (3074: coarse label, fine label, pixels) binary batches. */
#include "reader.h"

#include <stdlib.h>
#include <string.h>

static int cifar_open(sn_source *s)
{
	int64_t size = sn_in_plain_size(&s->in, s->path);
	s->reclen = s->o->cifar100 == 1 ? 3074 : 3073;
	if (size == 0)
		return sn_fail(SN_EFORMAT, "empty input");
	if (size > 0 && s->o->cifar100 < 0 && size % 3073 && size % 3074 == 0)
		s->reclen = 3074;
	if (size > 0 && size % s->reclen)
		return sn_fail(SN_ETRUNC, "truncated: %lld bytes is not a whole number of %d-byte "
			       "CIFAR-%d records", (long long)size, s->reclen,
			       s->reclen == 3073 ? 10 : 100);
	s->n = size > 0 ? size / s->reclen : -1;
	s->labskip = s->reclen == 3074 && !s->o->cifar_coarse;
	s->classes = s->reclen == 3073 ? 10 : s->o->cifar_coarse ? 20 : 100;
	s->dt = SN_U8;
	s->shape = (sn_shape){ 3, { 3, 32, 32 } };
	s->recbytes = 3072;
	s->rec = malloc((size_t)s->reclen);
	return s->rec ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static int cifar_next(sn_source *s, void *x, int32_t *y)
{
	size_t got;
	int rc = sn_in_read(&s->in, s->rec, (size_t)s->reclen, &got);
	if (rc)
		return rc;
	if (got == 0)
		return s->done ? 0 : sn_fail(SN_EFORMAT, "empty input");
	if (got < (size_t)s->reclen)
		return sn_fail(SN_ETRUNC, "truncated: record %lld has %zu of %d bytes",
			       (long long)s->done, got, s->reclen);
	if (s->reclen == 3074 && (s->rec[0] >= 20 || s->rec[1] >= 100))
		return sn_fail(SN_EFORMAT, "record %lld: labels %d/%d outside [0,20)/[0,100)",
			       (long long)s->done, s->rec[0], s->rec[1]);
	if ((rc = sn_reader_check_class(s->o, s->done, s->rec[s->labskip], s->classes)))
		return rc;
	*y = s->rec[s->labskip];
	memcpy(x, s->rec + s->reclen - 3072, 3072);
	s->done++;
	return 1;
}

const sn_reader sn_reader_cifar = {
	.name = "cifar", .format = SN_INPUT_CIFAR, .open = cifar_open, .next = cifar_next,
};
