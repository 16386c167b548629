/* net.c: the net YAML parser, with shape inference and allocation. */
#include "fuzz.h"

#include "net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sn_net net;
	if (!sn_net_parse((const char *)data, size, "fuzz.yaml", &net))
		sn_net_free(&net);
	return 0;
}
