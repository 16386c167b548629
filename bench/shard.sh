#!/bin/bash
# sn-shard throughput and memory.
#  1. Fashion-MNIST train (60,000 images, gzip'd IDX) into 8 shards, against
#     zcat of the same two files in the same run: best of 3 each, and the
#     ratio (target: under 3x zcat).
#  2. Peak RSS (GNU time) sharding a ~200 MB CSV generated in a temporary
#     directory (SN_BENCH_CSV_MB to change the size, 0 to skip), against the
#     size of the data and of one shard.
set -euo pipefail
FM=${FMNIST:-/usr/share/datasets/fashion-mnist}
csv_mb=${SN_BENCH_CSV_MB:-200}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sn-bench-shard.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
command -v sn-shard >/dev/null || { echo "shard: sn-shard not on PATH" >&2; exit 1; }

# best_of3 CMD...: the fastest of three runs, in seconds
best_of3() {
	local best=0 t0 t1 dt
	for _ in 1 2 3; do
		t0=$(date +%s%N)
		"$@" >/dev/null 2>&1
		t1=$(date +%s%N)
		dt=$((t1 - t0))
		if [ "$best" -eq 0 ] || [ "$dt" -lt "$best" ]; then best=$dt; fi
	done
	awk -v ns="$best" 'BEGIN { printf "%.3f", ns / 1e9 }'
}

images=$FM/train-images-idx3-ubyte.gz
labels=$FM/train-labels-idx1-ubyte.gz
if [ -f "$images" ] && [ -f "$labels" ]; then
	zcat_s=$(best_of3 zcat "$images" "$labels")
	shard_s=$(best_of3 sn-shard "$images" --labels "$labels" -k 8 -o "$tmp/fm")
	awk -v z="$zcat_s" -v s="$shard_s" 'BEGIN {
		printf "fashion-mnist train -> 8 shards: sn-shard %.3f s, zcat %.3f s, ratio %.2fx (target < 3x)\n",
			s, z, s / z }'
else
	echo "fashion-mnist not installed ($FM): throughput skipped"
fi

if [ "$csv_mb" -gt 0 ]; then
	rows=$((csv_mb * 1000000 / 400))
	python3 - "$tmp/big.csv" "$rows" <<'PY'
import sys
import numpy as np
path, rows = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(1)
with open(path, "w") as f:
    f.write(",".join("f%d" % i for i in range(50)) + ",label\n")
    for start in range(0, rows, 20000):
        n = min(20000, rows - start)
        x = rng.normal(0, 1, (n, 50))
        y = rng.integers(0, 10, n)
        lines = [",".join("%.4f" % v for v in r) + ",%d" % c for r, c in zip(x.tolist(), y.tolist())]
        f.write("\n".join(lines) + "\n")
PY
	size=$(stat -c %s "$tmp/big.csv")
	/usr/bin/time -v sn-shard "$tmp/big.csv" -k 8 -o "$tmp/csv" 2>"$tmp/time.txt" >/dev/null
	rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tmp/time.txt")
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$tmp/time.txt")
	shard=$(stat -c %s "$tmp/csv/shard-000.safetensors")
	awk -v c="$size" -v r="$rss_kb" -v s="$shard" -v n="$rows" -v w="$wall" 'BEGIN {
		printf "csv %.0f MB (%d rows x 50 features) -> 8 shards in %s: peak RSS %.1f MB, one shard %.1f MB, f32 data %.1f MB\n",
			c / 1e6, n, w, r / 1000, s / 1e6, n * 50 * 4 / 1e6 }'
fi
