/* replay.c: a fuzz target without libFuzzer, for `make check`: feeds every
 * file of tests/fuzz/TARGET/corpus and tests/fuzz/TARGET/regressions (under
 * $SN_ROOT, default ".") to LLVMFuzzerTestOneInput once, and reports each
 * set as a TAP test.  A crash or sanitizer report ends the process, which
 * the runner counts as a failure; the input at fault is the last one named
 * on stderr. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=\"name\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file in dir; the count, or -1 if a file cannot be read. */
static int replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	char **names = NULL;
	int n = 0, bad = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char **nn = realloc(names, (size_t)(n + 1) * sizeof *names);
		if (!nn || !(nn[n] = strdup(e->d_name)))
			abort();
		names = nn;
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, (size_t)n, sizeof *names, cmp);
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		FILE *f = fopen(path, "rb");
		unsigned char *buf = NULL;
		size_t len = 0, cap = 0, got;
		do {
			if (len == cap && !(buf = realloc(buf, cap = cap ? 2 * cap : 4096)))
				abort();
			got = f ? fread(buf + len, 1, cap - len, f) : 0;
			len += got;
		} while (got);
		if (!f || ferror(f)) {
			fprintf(stderr, "# cannot read %s\n", path);
			bad = 1;
		} else {
			fprintf(stderr, "# %s\n", path);
			LLVMFuzzerTestOneInput(buf, len);
		}
		if (f)
			fclose(f);
		free(buf);
		free(names[i]);
	}
	free(names);
	return bad ? -1 : n;
}

int main(void)
{
	const char *root = getenv("SN_ROOT") ? getenv("SN_ROOT") : ".";
	char dir[4096];
	printf("1..2\n");
	snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/corpus", root, FUZZ_TARGET);
	int n = replay_dir(dir);
	printf("%s 1 - fuzz target %s runs its corpus (%d inputs)\n", n > 0 ? "ok" : "not ok",
	       FUZZ_TARGET, n);
	snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/regressions", root, FUZZ_TARGET);
	int m = replay_dir(dir);
	printf("%s 2 - fuzz target %s runs its regressions (%d inputs)\n", m >= 0 ? "ok" : "not ok",
	       FUZZ_TARGET, m);
	return n > 0 && m >= 0 ? 0 : 1;
}
