/* delta.c: the sn.delta.v1 reader: a delta checked on its own (as sn-info
 * does) and decoded against a fixed base, the one the corpus deltas were
 * made against, so that mutations get past the base_crc32 check.  The
 * delta's own crc32 is skipped, or nearly every mutation would stop there. */
#include "fuzz.h"

#include "delta.h"
#include "st.h"

/* The base of the corpus deltas: "a" [3,4] = i/4 - 1 and "b" [5] = 10i - 20
 * (exact in float32; the seeds were made with sn-delta diff from a file of
 * these values to one a little off, in each scheme). */
static void make_base(sn_st *base, float *a, float *b)
{
	int64_t sa[2] = {3, 4}, sb[1] = {5};
	for (int i = 0; i < 12; i++)
		a[i] = (float)i / 4 - 1;
	for (int i = 0; i < 5; i++)
		b[i] = 10.0f * (float)i - 20;
	sn_st_init(base);
	if (sn_st_set_meta(base, "format", "sn.weights.v1") ||
	    sn_st_add(base, "a", SN_F32, 2, sa, a, 0) || sn_st_add(base, "b", SN_F32, 1, sb, b, 0))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sn_st delta, base, w;
	float a[12], b[5];
	if (sn_st_read_buffer(data, size, &delta, SN_ST_SKIP_CRC))
		return 0;
	sn_delta_entry *es;
	int n;
	if (!sn_delta_inspect(&delta, &es, &n))
		sn_delta_entries_free(es, n);
	make_base(&base, a, b);
	if (!sn_delta_decode(&base, &delta, &w))
		sn_st_free(&w);
	sn_st_free(&base);
	sn_st_free(&delta);
	return 0;
}
