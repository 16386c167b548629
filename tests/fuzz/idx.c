/* idx.c: IDX images with their labels, plain or gzip'd (the idx_gz target
 * is this one with a gzip'd corpus).  An input is the label file's length
 * (2 bytes, little-endian), the label file, then the image file. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t nl = (size_t)data[0] | (size_t)data[1] << 8;
	if (nl > size - 2)
		nl = size - 2;
	char img[64], lab[64];
	int fl = fuzz_file(data + 2, nl, lab), fi = fuzz_file(data + 2 + nl, size - 2 - nl, img);
	if (fl >= 0 && fi >= 0) {
		sn_shard_opts o;
		sn_shard_opts_init(&o);
		o.format = SN_INPUT_IDX;
		fuzz_read(&o, img, lab);
	}
	if (fl >= 0)
		close(fl);
	if (fi >= 0)
		close(fi);
	return 0;
}
