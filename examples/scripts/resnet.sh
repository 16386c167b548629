#!/bin/bash
# A deeper recipe: the small ResNet of examples/nets/resnet.yaml (three
# residual stages, batchnorm, 1x1 stride-2 shortcuts, global average pooling;
# 78k parameters, 19 MFLOPs forward per image) on Fashion-MNIST with
# sn-train, four workers averaged every round, with augmentation (random
# crop after 2-pixel padding, horizontal mirror), to >= 93% test accuracy.
# Leaves resnet-run/ (shards, weights, log.tsv, events.log, curve.png).
#   SN_RESNET_DIR     where to work (default: ./resnet-run)
#   SN_RESNET_ROUNDS  rounds (default 24), SN_RESNET_ITERS steps per round (100)
#   SN_FMNIST         the Fashion-MNIST directory
# Further arguments go to sn-train (e.g. --seed 2, -q).
#
# The recipe: Adam at lr 0.002 with weight decay 5e-4 on a cosine schedule to
# lr 0 over the 2,400 global steps (the schedule follows the global step count,
# tau per round), plain averaging, crop_pad 2 and mirror in every worker.
# 24 rounds x 100 steps x 4 workers x 64 images = 614,400 images, 10.2 epochs.
# No outer Nesterov step (--outer-lr), unlike demo.sh: sn-average applies it
# to the batchnorm running statistics too, whose extrapolated running_var
# went negative here (sn-eval: non-finite output in layer stem_bn).
# bench/resnet.sh runs this and then PyTorch on the same net, initial weights
# and recipe, for comparison.
# Measured (seed 1) on this machine's 2 cores, quiet: 89.28% test accuracy
# after the 24 rounds, in 500 s of rounds (10.2 epochs; 86.44% after round
# 10 and 87.86% after round 14 in an earlier run, the same bits); short of
# 93%.  PyTorch in the same bench/resnet.sh run, one process over the same
# images, net, initial weights and recipe: 92.06% in 406 s.  With
# SN_RESNET_ROUNDS=48 (20.5 epochs): 91.02% in 1,107 s of rounds.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
dir=${SN_RESNET_DIR:-resnet-run}
rounds=${SN_RESNET_ROUNDS:-24}
iters=${SN_RESNET_ITERS:-100}

start=$(date +%s.%N)
rm -rf -- "$dir"
mkdir -p -- "$dir"
echo "resnet: sharding Fashion-MNIST into 4 stratified shards" >&2
sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k 4 --stratify --seed 1 -o "$dir/shards"
sn-shard "$data/t10k-images-idx3-ubyte.gz" --labels "$data/t10k-labels-idx1-ubyte.gz" \
	-k 1 --stats-from "$dir/shards/shard-000.safetensors" -o "$dir/test"

echo "resnet: sn-train, 4 workers, $rounds rounds of $iters steps" >&2
sn-train --net "$root/examples/nets/resnet.yaml" --shards "$dir/shards" --out "$dir/run" \
	--rounds "$rounds" --iters "$iters" -j 4 --seed 1 \
	--eval "$dir/test/shard-000.safetensors" --eval-every 2 \
	--solver adam --lr 0.002 --weight-decay 0.0005 \
	--set lr_policy=cosine --set max_steps=$((rounds * iters)) \
	--set crop_pad=2 --set mirror=1 "$@"

acc=$(awk -F '\t' 'NR > 1 && $9 != "" { a = $9 } END { print a }' "$dir/run/log.tsv")
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
printf 'resnet: final test accuracy %.2f%% in %s s (log %s)\n' \
	"$(awk -v a="$acc" 'BEGIN { print 100 * a }')" "$elapsed" "$dir/run/log.tsv"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.93) }' || { echo "resnet: below the 93% target" >&2; exit 1; }
