#!/bin/bash
# bench/accuracy.sh: LeNet on the whole of Fashion-MNIST with sn-sgd alone.
# Shards the 60,000 training images into one shard and the 10,000 test images
# normalised with the training statistics (--stats-from), then trains
# examples/nets/lenet.yaml with its own solver: section for up to 10 epochs
# (one state file carries momentum and data order across epochs), evaluating
# on t10k after each.  Prints the accuracy per epoch and the time; the target
# is >= 91.0% within 10 epochs.
#   SN_BENCH_EPOCHS   epochs (default 10)
#   SN_BENCH_THREADS  OpenBLAS threads (default: nproc)
#   SN_BENCH_NET      the net (default examples/nets/lenet.yaml), for tuning
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
fm=/usr/share/datasets/fashion-mnist
epochs=${SN_BENCH_EPOCHS:-10}
threads=${SN_BENCH_THREADS:-$(nproc)}
net=${SN_BENCH_NET:-$root/examples/nets/lenet.yaml}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

acc_of() {   # accuracy (fraction) out of an sn-eval --json report on stdin
	sed -n 's/^ *"accuracy": \([0-9.e+-]*\),*$/\1/p' | head -1
}

SECONDS=0
sn-shard "$fm/train-images-idx3-ubyte.gz" --labels "$fm/train-labels-idx1-ubyte.gz" \
	-k 1 -o "$work/train" --seed 1 2>/dev/null
train=$work/train/shard-000.safetensors
sn-shard "$fm/t10k-images-idx3-ubyte.gz" --labels "$fm/t10k-labels-idx1-ubyte.gz" \
	-k 1 -o "$work/test" --stats-from "$train" 2>/dev/null
test=$work/test/shard-000.safetensors
echo "sharded Fashion-MNIST in ${SECONDS}s; $(basename "$net"), $threads threads"

batch=$(sed -n 's/^ *batch: *\([0-9]*\).*/\1/p' "$net" | head -1)
batch=${batch:-64}
steps=$(( (60000 + batch - 1) / batch ))
sn-init "$net" -o "$work/w.safetensors" --seed 1
printf '%5s %8s %10s %9s %9s\n' epoch steps train_loss test_acc seconds
start=$(date +%s.%N)
best=0
reached=
for e in $(seq 1 "$epochs"); do
	sn-sgd -w "$work/w.safetensors" -d "$train" -o "$work/w.safetensors" \
		--state "$work/state.safetensors" --iters "$steps" --threads "$threads" \
		--json -q >"$work/sgd.json"
	loss=$(sed -n 's/^ *"loss": \([0-9.e+-]*\),*$/\1/p' "$work/sgd.json")
	acc=$(sn-eval -w "$work/w.safetensors" -d "$test" --threads "$threads" --json | acc_of)
	t=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	printf '%5d %8d %10.4f %8.2f%% %9s\n' "$e" $((e * steps)) "$loss" \
		"$(awk -v a="$acc" 'BEGIN { print 100 * a }')" "$t"
	if awk -v a="$acc" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$acc; fi
	if [ -z "$reached" ] && awk -v a="$acc" 'BEGIN { exit !(a >= 0.91) }'; then
		reached="epoch $e after ${t}s"
	fi
done
echo "best test accuracy $(awk -v a="$best" 'BEGIN { printf "%.2f%%", 100 * a }');" \
	"target 91.0%: ${reached:-not reached in $epochs epochs}"
[ -n "$reached" ]
