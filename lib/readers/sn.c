/* sn.c: sn data files (sn.data.v1) as input, to re-shard them.  A file is
 * mapped; stdin is read whole. */
#include "reader.h"

#include <string.h>

static int data_open(sn_source *s)
{
	int rc;
	if (strcmp(s->path, "-")) {
		rc = sn_data_open(s->path, &s->d);
	} else {
		memset(&s->d, 0, sizeof s->d);
		while (!(rc = sn_in_fill(&s->in, s->in.len - s->in.pos + SN_IN_CHUNK)) && !s->in.eof)
			;
		if (!rc)
			rc = sn_data_open_buffer(s->in.buf + s->in.pos, s->in.len - s->in.pos, 0, &s->d);
		sn_in_close(&s->in);    /* the data file holds its own copy */
	}
	if (rc)
		return rc;
	s->data_open = 1;
	s->dt = s->d.x->dtype;
	s->shape = s->d.shape;
	s->recbytes = (size_t)sn_shape_size(&s->shape) * sn_dtype_size(s->dt);
	s->n = s->d.n;
	s->classes = s->d.classes;
	if (s->o->classes && s->o->classes < s->classes)
		return sn_data_check_labels(&s->d, s->o->classes);
	return 0;
}

static int data_next(sn_source *s, void *x, int32_t *y)
{
	if (s->done == s->n)
		return 0;
	memcpy(x, (const char *)s->d.x->data + s->done * (int64_t)s->recbytes, s->recbytes);
	*y = sn_data_label(&s->d, s->done);
	s->done++;
	return 1;
}

const sn_reader sn_reader_sn = {
	.name = "data", .format = SN_INPUT_DATA, .opens_path = 1,
	.open = data_open, .next = data_next,
};
