#!/bin/bash
# bench/train.sh: training and evaluation throughput of sn on 1 and 2
# threads against PyTorch (bench/torch_train.py: same net, data and batch)
# on 1 and 2 threads, measured side by side in one run.
#
# For mlp, lenet, cifar10_quick and resnet (when examples/nets/resnet.yaml
# exists) it prints two tables.  Training (batch 64): sn-sgd images/s on 1
# and 2 threads (the whole process) and their ratio, PyTorch's training loop
# on 1 and 2 threads, and sn on 2 threads over PyTorch at its best thread
# count.  Evaluation: sn-eval images/s the same way against PyTorch
# inference, both in batches of 1000.  Each row ends with the load average
# when sn-eval was measured (in its best round).  The targets (issue 10):
# training >= 2x PyTorch on mlp and lenet, >= 1.5x on cifar10_quick and
# resnet; evaluation >= 3x; sn's 2 threads >= 1.7x its 1.  Where one is
# missed, the per-layer profile of sn-sgd on 2 threads follows.  Every
# figure is the best of SN_BENCH_ROUNDS rounds, sn and PyTorch taking turns,
# so that a slow spell of this VM (10-30% from minute to minute, at times
# 2x) costs neither side its figure.
#   SN_BENCH_SECONDS  seconds per measurement (default 3)
#   SN_BENCH_ROUNDS   rounds (default 2)
#   SN_BENCH_NETS     nets (default "mlp lenet cifar10_quick resnet")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
secs=${SN_BENCH_SECONDS:-3}
rounds=${SN_BENCH_ROUNDS:-2}
read -ra nets <<<"${SN_BENCH_NETS:-mlp lenet cifar10_quick resnet}"
ref=$root/tests/cli/torch_reference.py

PY=
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import torch, numpy, yaml' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "train.sh: python3 with torch, numpy and yaml is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" "$ref" data "$work/gray.data" --fmnist train --limit 10000
"$PY" "$ref" data "$work/rgb.data" --random 10000 --shape 3,32,32

now() { date +%s.%N; }
load() { cut -d' ' -f1 /proc/loadavg; }

# Best wall time of three sn-eval runs over the data file given $4 times
# (the mlp's 50,000 examples, so start-up costs little; the conv nets'
# 10,000 take long enough).
eval_seconds() {
	local best=1e9 t0 t1 files=()
	for _ in $(seq "$4"); do files+=(-d "$2"); done
	for _ in 1 2 3; do
		t0=$(now)
		sn-eval -w "$1" "${files[@]}" --batch 1000 --threads "$3" >/dev/null
		t1=$(now)
		best=$("$PY" -c "print(min($best, $t1 - $t0))")
	done
	echo "$best"
}

for net in "${nets[@]}"; do
	yaml=$root/examples/nets/$net.yaml
	[ -e "$yaml" ] || { echo "($net: $yaml not found, skipped)"; continue; }
	data=$work/gray.data
	grep -Eq '^input: *\[ *3' "$yaml" && data=$work/rgb.data
	w=$work/$net.safetensors
	sn-init "$yaml" -o "$w" --seed 1
	for r in $(seq "$rounds"); do
		for t in 1 2; do
			sn-sgd -w "$w" -d "$data" -o "$work/out.safetensors" --batch 64 --threads "$t" \
				--iters 100000000 --time-limit "$secs" --profile --json -q \
				>"$work/$net-$t.json.$r"
			reps=1
			[ "$net" != mlp ] || reps=5
			echo "{\"eval_images_per_s\": $("$PY" -c "print($reps * 10000 / $(eval_seconds "$w" "$data" "$t" "$reps"))"), \"load\": $(load)}" \
				>"$work/$net-$t-eval.json.$r"
			"$PY" "$root/bench/torch_train.py" "$w" "$data" --threads "$t" --batch 64 \
				--infer-batch 1000 --seconds "$secs" >"$work/$net-$t-torch.json.$r"
		done
	done
done

"$PY" - "$work" "${nets[@]}" <<'EOF'
import json, os, sys
work, nets = sys.argv[1], sys.argv[2:]
nets = [n for n in nets if os.path.exists("%s/%s-1.json.1" % (work, n))]
def rounds(name):
    r, out = 1, []
    while os.path.exists(os.path.join(work, "%s.%d" % (name, r))):
        out.append(json.load(open(os.path.join(work, "%s.%d" % (name, r)))))
        r += 1
    return out
def get(name, key=None):
    """the round with the highest figure under key (the first without one)"""
    got = rounds(name)
    return max(got, key=lambda j: j[key]) if key else got[0]
def targets(net):
    return (1.5 if net in ("cifar10_quick", "resnet") else 2.0), 3.0
missed = []
for title, sn_key, pt_key, file in (("training, batch 64", "images_per_s", "train_images_per_s", "%s-%d.json"),
                                    ("evaluation, batches of 1000", "eval_images_per_s", "infer_images_per_s", "%s-%d-eval.json")):
    print("\n%s (images/s, best of %d rounds)" % (title, len(rounds((file % (nets[0], 1)))))) if nets else None
    print("%-14s %9s %9s %7s %9s %9s %9s %9s %6s %s" % ("net", "sn 1t", "sn 2t", "2t/1t", "pt 1t",
          "pt 2t", "pt best", "sn/pt", "target", "load"))
    for net in nets:
        sn = [get(file % (net, t), sn_key)[sn_key] for t in (1, 2)]
        pt = [get("%s-%d-torch.json" % (net, t), pt_key)[pt_key] for t in (1, 2)]
        loads = [get("%s-%d-eval.json" % (net, t), "eval_images_per_s")["load"] for t in (1, 2)]
        target = targets(net)[0 if sn_key == "images_per_s" else 1]
        ratio, scaling = sn[1] / max(pt), sn[1] / sn[0]
        ok = ratio >= target and scaling >= 1.7
        if not ok:
            missed.append(net)
        print("%-14s %9.0f %9.0f %7.2f %9.0f %9.0f %9.0f %9.2f %5.1fx %s%s" % (
            net, sn[0], sn[1], scaling, pt[0], pt[1], max(pt), ratio, target,
            "/".join("%.1f" % l for l in loads), "" if ok else "  MISSED"))
for net in sorted(set(missed), key=nets.index):
    print("\nprofile of sn-sgd on %s, 2 threads (ms per step of 64):" % net)
    print("%-22s %-22s %10s %11s %7s %8s" % ("layer", "kind", "fwd ms", "bwd ms", "share%", "GFLOP/s"))
    for r in get("%s-2.json" % net, "images_per_s")["profile"]:
        print("%-22s %-22s %10.3f %11.3f %7.1f %8.2f" % (r["layer"], r["kind"], r["forward_ms"],
              r["backward_ms"], r["share"], r["gflops"]))
EOF
