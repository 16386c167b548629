#!/bin/bash
# What sn-train's rounds cost beyond the workers' compute: LeNet, tau=50,
# four local workers on Fashion-MNIST.  Prints the share of each round's wall
# time that is not the slowest worker's compute (target < 5%), and a
# breakdown: process start, reading the shard and weights, averaging.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
rounds=${SN_BENCH_ROUNDS:-4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k 4 --stratify --seed 1 --limit 20000 -o "$tmp/shards" 2>/dev/null
sn-train --net "$root/examples/nets/lenet.yaml" --shards "$tmp/shards" --out "$tmp/run" \
	--rounds "$rounds" --iters 50 -j 4 --keep --quiet >/dev/null

# Rounds after the first (which pays for cold caches).  With more workers
# than cores the workers' compute is shared out: the compute a round cannot
# avoid is sum(worker seconds) / concurrent workers, and the rest is overhead.
conc=$(( $(nproc) < 4 ? $(nproc) : 4 ))
awk -F '\t' -v c="$conc" 'NR > 2 { w += $2; m += $3; s += $4 * $6 / c; n++ }
	END { printf "rounds %d, %d workers, %d at a time: wall %.3f s/round, compute %.3f s (slowest worker %.3f s)\n", n, 4, c, w / n, s / n, m / n
	      printf "not worker compute: %.3f s/round = %.1f%% of the wall time (target < 5%%)\n", (w - s) / n, 100 * (w - s) / w }' "$tmp/run/log.tsv"

# Where the rest goes, from the joblogs and the workers' own `seconds`:
# the job's runtime beyond sn-sgd's compute is process start and file I/O;
# the job phase's span beyond sum(runtime)/concurrent is imbalance; what is
# left of the round is GNU parallel's start and sn-average.
python3 - "$tmp/run" "$conc" <<'PY'
import glob, json, os, struct, sys
run, conc = sys.argv[1], int(sys.argv[2])
def seconds(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    return float(json.loads(b[8:8 + n])["__metadata__"]["seconds"])
rows = [l.split("\t") for l in open(os.path.join(run, "log.tsv"))][2:]
io = imb = rest = 0.0
for row in rows:
    rd = os.path.join(run, "r-%04d" % (int(row[0]) - 1))
    jobs = [l.split("\t") for l in open(os.path.join(rd, "joblog"))][1:]
    start = min(float(j[2]) for j in jobs); end = max(float(j[2]) + float(j[3]) for j in jobs)
    runtime = sum(float(j[3]) for j in jobs)
    compute = sum(seconds(f) for f in glob.glob(os.path.join(rd, "[0-9]*.safetensors")))
    io += (runtime - compute) / conc
    imb += (end - start) - runtime / conc
    rest += float(row[1]) - (end - start)
n = len(rows)
print("per round: worker start + I/O %.3f s, imbalance %.3f s, parallel start + sn-average %.3f s"
      % (io / n, imb / n, rest / n))
PY

# The same parts, each measured alone on the same files.
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f", e - s }'; }
w=$tmp/run/w-0001.safetensors
start=$(t sn-sgd --help)
one=$(t sn-sgd -q -w "$w" -d "$tmp/shards/shard-000.safetensors" -o "$tmp/x.safetensors" --iters 1 --threads 1)
avg=$(t sn-average "$tmp"/run/r-0001/[0-9]*.safetensors -o "$tmp/avg.safetensors")
par=$(t parallel --will-cite -j 2 true ::: 1 2 3 4)
printf 'process start (sn-sgd --help): %s s\n' "$start"
printf 'sn-sgd of 1 step (start, read weights + shard, write weights + state): %s s\n' "$one"
printf 'sn-average of 4 LeNet weight files: %s s\n' "$avg"
printf 'GNU parallel starting 4 empty jobs: %s s\n' "$par"
