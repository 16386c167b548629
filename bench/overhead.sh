#!/bin/bash
# What sn-train's rounds cost beyond the workers' compute: LeNet, tau=50,
# four local workers (two at a time on two cores) on Fashion-MNIST.
# sn-train's wall time (setup, every round, evaluation off) against the same
# sn-sgd work run directly: the same jobs from the same round weights, two at
# a time through xargs, each worker chaining its own state.  Target < 5%.
# The two alternate, try by try, since this machine's speed drifts by more
# than the difference: the figure is the median of the tries' overheads,
# and the best sn-train against the best direct run is printed beside it.
#   SN_BENCH_ROUNDS rounds (default 6), SN_BENCH_REPEAT tries (default 9)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH" SN_EXEC_PATH="$root/bin"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
rounds=${SN_BENCH_ROUNDS:-6}
repeat=${SN_BENCH_REPEAT:-9}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k 4 --stratify --seed 1 --limit 20000 -o "$tmp/shards" 2>/dev/null
conc=$(($(nproc) < 4 ? $(nproc) : 4))
threads=$(($(nproc) / conc))
best_train='' best_direct='' overheads=()
for ((t = 0; t < repeat; t++)); do
	rm -rf "$tmp/run" "$tmp/direct"
	train=$(sn-train --net "$root/examples/nets/lenet.yaml" --shards "$tmp/shards" --out "$tmp/run" \
		--rounds "$rounds" --iters 50 -j 4 --threads "$threads" --json --quiet |
		sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p')
	mkdir -p "$tmp/direct"
	s=$EPOCHREALTIME
	for ((r = 0; r < rounds; r++)); do
		w=$tmp/run/w-$(printf %04d "$r").safetensors
		for k in 0 1 2 3; do
			printf '%s\0' -q -w "$w" -d "$tmp/shards/shard-00$k.safetensors" -o "$tmp/direct/$k.safetensors" \
				--state "$tmp/direct/state-$k.safetensors" --seed $((1 + k)) --threads "$threads" --iters 50
		done | xargs -0 -n 15 -P "$conc" sn-sgd
	done
	direct=$(awk -v s="$s" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.3f", e - s }')
	[ -z "$best_train" ] || awk -v a="$train" -v b="$best_train" 'BEGIN { exit !(a < b) }' && best_train=$train
	[ -z "$best_direct" ] || awk -v a="$direct" -v b="$best_direct" 'BEGIN { exit !(a < b) }' && best_direct=$direct
	printf 'try %d: sn-train %.3f s, the same sn-sgd jobs run directly %.3f s\n' $((t + 1)) "$train" "$direct"
	overheads+=("$(awk -v t="$train" -v d="$direct" 'BEGIN { printf "%.6f %.6f", t - d, 100 * (t - d) / t }')")
done
med=$(printf '%s\n' "${overheads[@]}" | sort -g -k2 | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }')
awk -v t="$best_train" -v d="$best_direct" -v r="$rounds" -v c="$conc" -v n="$repeat" -v m="$med" 'BEGIN {
	split(m, mm, " ")
	printf "LeNet, tau=50, 4 workers, %d at a time, %d rounds, %d tries: best sn-train %.3f s, best direct %.3f s (%.1f%%)\n", c, r, n, t, d, 100 * (t - d) / t
	printf "sn-train overhead (median of the tries): %.3f s/round = %.1f%% of its wall time (target < 5%%: %s)\n", mm[1] / r, mm[2], mm[2] < 5 ? "met" : "MISSED" }'
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
