/* csv.c: CSV/TSV tables; the first byte picks the header mode, the
 * delimiter (from the text, ',', '\t' or ';') and --label-col. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char path[64];
	int fd = fuzz_file(data + 1, size - 1, path);
	if (fd < 0)
		return 0;
	static const char delims[] = { 0, ',', '\t', ';' };
	static const char *const cols[] = { NULL, "0", "label", "1" };
	sn_shard_opts o;
	sn_shard_opts_init(&o);
	o.format = SN_INPUT_CSV;
	o.header = data[0] % 3 - 1;
	o.delimiter = delims[data[0] >> 2 & 3];
	o.label_col = cols[data[0] >> 4 & 3];
	o.classes = data[0] >> 6 == 3 ? 3 : 0;
	fuzz_read(&o, path, NULL);
	close(fd);
	return 0;
}
