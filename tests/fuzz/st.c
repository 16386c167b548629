/* st.c: the safetensors reader, and the sn.data.v1 checks over it (the
 * crc32 is skipped, or nearly every mutation would stop there). */
#include "fuzz.h"

#include "data.h"
#include "st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sn_st st;
	if (!sn_st_read_buffer(data, size, &st, 0))
		sn_st_free(&st);
	sn_data d;
	if (sn_data_open_buffer(data, size, SN_ST_SKIP_CRC, &d))
		return 0;
	int64_t e = 1;
	for (int i = 0; i < d.shape.ndim; i++)
		e *= d.shape.d[i];
	float *x = e <= 1 << 20 ? malloc((size_t)e * 2 * sizeof *x) : NULL;
	int64_t idx[2] = { 0, d.n - 1 };
	int32_t y[2];
	if (x)
		sn_data_batch(&d, idx, 2, x, y);
	free(x);
	sn_data_close(&d);
	return 0;
}
