#!/bin/bash
# bench/resnet.sh: the deeper recipe (examples/scripts/resnet.sh: the small
# ResNet on Fashion-MNIST, sn-train with 4 workers, augmentation) and, in the
# same run, PyTorch on the same net, initial weights, data, augmentation and
# solver as one process over the same number of images (bench/resnet_torch.py)
# in the workers' global batch (4 x 16 = 64), so that it takes the same
# rounds x iters global steps on the same cosine schedule.
# Prints the test accuracy and wall time of each and their ratio, with the
# load average, since the figures mean little on a busy machine.
#   SN_RESNET_ROUNDS, SN_RESNET_ITERS, SN_RESNET_BATCH  as for the recipe
#                                     (235, 100, 16)
#   SN_BENCH_RESNET_KEEP=DIR          keep the run (shards, weights, logs)
#                                     in DIR
#   SN_BENCH_TORCH_THREADS            PyTorch threads (default: nproc)
#   SN_BENCH_RESNET=0                 skip this part (it takes the longest)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:/usr/bin:$PATH"
if [ "${SN_BENCH_RESNET:-1}" = 0 ]; then
	echo "skipped (SN_BENCH_RESNET=0)"
	exit 0
fi
rounds=${SN_RESNET_ROUNDS:-235}
iters=${SN_RESNET_ITERS:-100}
batch=${SN_RESNET_BATCH:-16}
threads=${SN_BENCH_TORCH_THREADS:-$(nproc)}
work=$(mktemp -d)
keep=${SN_BENCH_RESNET_KEEP:-}
trap '[ -z "$keep" ] || { rm -rf -- "$keep" && cp -a -- "$work" "$keep"; }; rm -rf -- "$work"' EXIT

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
SN_RESNET_DIR=$work/run SN_RESNET_ROUNDS=$rounds SN_RESNET_ITERS=$iters SN_RESNET_BATCH=$batch \
	"$root/examples/scripts/resnet.sh" -q >"$work/sn.out" 2>&1
sn_status=$?
cat "$work/sn.out"
log=$work/run/run/log.tsv
[ -s "$log" ] || { echo "resnet: sn-train left no log"; exit 1; }
sn_acc=$(awk -F '\t' 'NR > 1 && $9 != "" { a = $9 } END { print a }' "$log")
sn_s=$(awk -F '\t' 'NR > 1 { s += $2 } END { printf "%.1f", s }' "$log")
echo "load after sn: $(cut -d' ' -f1-3 /proc/loadavg)"

python=/usr/bin/python3
"$python" -c 'import torch, numpy, yaml' 2>/dev/null || python=python3
"$python" -c 'import torch, numpy, yaml' 2>/dev/null || { echo "resnet: no python3 with torch, numpy and yaml"; exit 1; }
"$python" "$root/bench/resnet_torch.py" "$work/run/run/w-0000.safetensors" \
	"$work/run/test/shard-000.safetensors" "$work"/run/shards/shard-*.safetensors \
	--examples $((rounds * iters * 4 * batch)) --batch $((4 * batch)) --solver adam --lr 0.002 --weight-decay 0.0005 \
	--crop-pad 2 --threads "$threads" >"$work/torch.json" || exit 1
field() { sed -n "s/.*\"$1\": \([0-9.e+-]*\).*/\1/p" "$work/torch.json"; }
t_acc=$(field accuracy)
t_s=$(field seconds)
echo "load after torch: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %9s %10s\n' "" test_acc seconds
printf '%-34s %8.2f%% %10s\n' "sn-train, 4 workers (rounds' wall)" \
	"$(awk -v a="$sn_acc" 'BEGIN { print 100 * a }')" "$sn_s"
printf '%-34s %8.2f%% %10.1f\n' "PyTorch $threads threads, one process" \
	"$(awk -v a="$t_acc" 'BEGIN { print 100 * a }')" "$t_s"
awk -v a="$sn_s" -v b="$t_s" 'BEGIN { printf "time ratio PyTorch / sn: %.2fx\n", b / a }'
exit $sn_status
