#!/bin/bash
# SparkNet over ssh: the same run as demo.sh, with the workers on the hosts
# of an sshloginfile (GNU parallel syntax, one per line: [N/][ssh cmd ]host).
# Every host needs ssh, tar, flock and the sn tools (installed, or give their
# directory as SN_REMOTE_PATH); nothing else, not even rsync.  Rounds send
# int8 deltas with error feedback (about 0.27 of the weights each way, every
# host holding the master's weights bit for bit); the workers' solver states
# stay on the hosts and come home every 5 rounds (SN_CLUSTER_COMPRESS and
# SN_CLUSTER_CHECKPOINT override).  A host that dies hands its workers to the
# others, which rebuild their states from the last checkpoint, bit for bit.
#   usage: cluster.sh HOSTSFILE [sn-train options...]
# e.g.     printf '2/node1\n2/node2\n' >hosts; cluster.sh hosts --min-workers 3
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 HOSTSFILE [sn-train options...]" >&2; exit 2; }
hosts=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
dir=${SN_CLUSTER_DIR:-cluster-run}
k=$(grep -cv '^[[:space:]]*\(#\|$\)' "$hosts")
k=$((k * 2))   # two shards per host line: a dead host's shards go elsewhere

mkdir -p -- "$dir"
[ -d "$dir/shards" ] || sn-shard "$data/train-images-idx3-ubyte.gz" \
	--labels "$data/train-labels-idx1-ubyte.gz" -k "$k" --stratify --seed 1 -o "$dir/shards"
[ -d "$dir/test" ] || sn-shard "$data/t10k-images-idx3-ubyte.gz" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" -k 1 \
	--stats-from "$dir/shards/shard-000.safetensors" -o "$dir/test"

resume=()
[ ! -e "$dir/run/w-0000.safetensors" ] || resume=(--resume)
exec sn-train --net "$root/examples/nets/lenet.yaml" --shards "$dir/shards" --out "$dir/run" \
	--sshloginfile "$hosts" ${SN_REMOTE_PATH:+--remote-path "$SN_REMOTE_PATH"} \
	--rounds 20 --iters 50 --time-limit 120 --eval "$dir/test/shard-000.safetensors" \
	--outer-lr 0.7 --outer-momentum 0.9 --compress "${SN_CLUSTER_COMPRESS:-int8}" \
	--checkpoint-every "${SN_CLUSTER_CHECKPOINT:-5}" "${resume[@]}" "$@"
