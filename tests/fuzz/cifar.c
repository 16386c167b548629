/* cifar.c: CIFAR-10/100 binary batches; the first byte picks CIFAR-100
 * detection (auto, no, yes) and the coarse labels. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char path[64];
	int fd = fuzz_file(data + 1, size - 1, path);
	if (fd < 0)
		return 0;
	sn_shard_opts o;
	sn_shard_opts_init(&o);
	o.format = SN_INPUT_CIFAR;
	o.cifar100 = data[0] % 3 - 1;
	o.cifar_coarse = data[0] >> 7;
	fuzz_read(&o, path, NULL);
	close(fd);
	return 0;
}
