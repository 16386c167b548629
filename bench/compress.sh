#!/bin/bash
# What --compress costs and saves: the demo recipe (LeNet, Fashion-MNIST,
# four stratified shards, four workers, Adam + outer Nesterov, the demo's
# rounds) at each --compress level.  Prints bytes per worker per round as a
# share of the weight file (both ways; SparkNet: 2x), the final test
# accuracy, its difference from none, and the wall time.
# Targets: int8 within 0.2 points of none and <= 0.6x; int4 within 0.5
# points and <= 0.32x.
#   SN_DEMO_ROUNDS, SN_DEMO_ITERS as in the demo (16, 100)
#   SN_BENCH_SCHEMES (default "none bf16 int8 int4")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH" SN_EXEC_PATH="$root/bin"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
rounds=${SN_DEMO_ROUNDS:-16}
iters=${SN_DEMO_ITERS:-100}
schemes=${SN_BENCH_SCHEMES:-none bf16 int8 int4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k 4 --stratify --seed 1 -o "$tmp/shards" 2>/dev/null
sn-shard "$data/t10k-images-idx3-ubyte.gz" --labels "$data/t10k-labels-idx1-ubyte.gz" \
	-k 1 --stats-from "$tmp/shards/shard-000.safetensors" -o "$tmp/test" 2>/dev/null
drop=$((rounds * iters * 3 / 4))
printf '%-6s %12s %12s %10s %10s %9s\n' scheme bytes/w-round x_weights accuracy vs_none wall_s
base=''
for s in $schemes; do
	j=$(sn-train --net "$root/examples/nets/lenet.yaml" --shards "$tmp/shards" --out "$tmp/run-$s" \
		--rounds "$rounds" --iters "$iters" -j 4 --seed 1 --compress "$s" \
		--eval "$tmp/test/shard-000.safetensors" --eval-every 4 \
		--solver adam --lr 0.001 --outer-lr 0.7 --outer-momentum 0.9 \
		--set lr_policy=multistep --set multistep="$drop" --set gamma=0.3 --json --quiet)
	read -r down up wb acc secs < <(printf '%s\n' "$j" | python3 -c 'import json, sys
j = json.load(sys.stdin)
print(j["bytes_down"], j["bytes_up"], j["weights_bytes"], j["final_accuracy"], j["seconds"])')
	[ -n "$base" ] || base=$acc
	awk -v s="$s" -v d="$down" -v u="$up" -v w="$wb" -v r="$rounds" -v a="$acc" -v b="$base" -v t="$secs" 'BEGIN {
		per = (d + u) / (4 * r)
		printf "%-6s %12d %12.3f %9.2f%% %+9.2f %9.1f\n", s, per, per / w, 100 * a, 100 * (a - b), t }'
done
echo "weight file: $(stat -c %s "$tmp/run-none/w-0000.safetensors" 2>/dev/null || echo ?) bytes; load: $(cut -d' ' -f1-3 /proc/loadavg)"
