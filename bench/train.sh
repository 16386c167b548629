#!/bin/bash
# bench/train.sh: training and inference throughput of sn against references
# measured in the same run: OpenBLAS sgemm peak (bench/sgemm.c, n=1024) and
# PyTorch (bench/torch_train.py: same net, batch, threads, data).
#
# For mlp, lenet and cifar10_quick at batch 64 on 1 and 2 threads it prints
# sn-sgd images/s and GFLOP/s (forward+backward FLOPs from the per-layer
# profile) as a fraction of the sgemm peak, PyTorch's images/s and the ratio,
# then sn-eval against PyTorch inference (batch 256).  Where a target is missed
# (sn >= 2x PyTorch on mlp and lenet, >= 1.5x on cifar10_quick, sn-eval >= 3x
# PyTorch inference) the per-layer profile follows.
#   SN_BENCH_SECONDS  seconds per measurement (default 3)
#   SN_BENCH_THREADS  thread counts (default "1 2")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
secs=${SN_BENCH_SECONDS:-3}
threads=${SN_BENCH_THREADS:-1 2}
ref=$root/tests/cli/torch_reference.py

PY=
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import torch, numpy, yaml' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "train.sh: python3 with torch, numpy and yaml is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 "$root/bench/sgemm.c" $(pkg-config --cflags --libs openblas) \
	-o "$work/sgemm"
"$PY" "$ref" data "$work/mlp.data" --fmnist train --limit 10000
cp "$work/mlp.data" "$work/lenet.data"
"$PY" "$ref" data "$work/cifar10_quick.data" --random 10000 --shape 3,32,32

now() { date +%s.%N; }

# Best wall time of three sn-eval runs over the data file given 5 times
# (50,000 examples), so start-up costs little even for the mlp.
eval_seconds() {
	local best=1e9 t0 t1
	for _ in 1 2 3; do
		t0=$(now)
		sn-eval -w "$1" -d "$2" -d "$2" -d "$2" -d "$2" -d "$2" --batch 256 \
			--threads "$3" >/dev/null
		t1=$(now)
		best=$("$PY" -c "print(min($best, $t1 - $t0))")
	done
	echo "$best"
}

printf '%-14s %3s %7s %9s %8s %6s %9s %6s %10s %10s %6s\n' net thr "peak" "sn img/s" \
	"GFLOP/s" "%peak" "pt img/s" "x pt" "eval img/s" "pt inf/s" "x pt"
for t in $threads; do
	peak=$("$work/sgemm" "$t")
	for net in mlp lenet cifar10_quick; do
		w=$work/$net.safetensors
		sn-init "$root/examples/nets/$net.yaml" -o "$w" --seed 1
		sn-sgd -w "$w" -d "$work/$net.data" -o "$work/out.safetensors" --batch 64 \
			--threads "$t" --iters 100000000 --time-limit "$secs" --profile --json -q \
			>"$work/$net-$t.json"
		es=$(eval_seconds "$w" "$work/$net.data" "$t")
		"$PY" "$root/bench/torch_train.py" "$w" "$work/$net.data" --threads "$t" \
			--batch 64 --seconds "$secs" >"$work/$net-$t-torch.json"
		"$PY" - "$net" "$t" "$peak" "$work/$net-$t.json" "$work/$net-$t-torch.json" "$es" <<-'EOF'
		import json, sys
		net, t, peak, sn, pt, es = sys.argv[1:]
		peak, es = float(peak), float(es)
		sn, pt = json.load(open(sn)), json.load(open(pt))
		# FLOPs per step from the profile: each layer's GFLOP/s times its time
		gflop_step = sum(r["gflops"] * (r["forward_ms"] + r["backward_ms"]) / 1e3
		                 for r in sn["profile"])
		ips = sn["images_per_s"]
		gf = gflop_step / 64 * ips
		eips = 50000 / es
		ratio, eratio = ips / pt["train_images_per_s"], eips / pt["infer_images_per_s"]
		print("%-14s %3s %7.1f %9.0f %8.2f %5.1f%% %9.0f %6.2f %10.0f %10.0f %6.2f" % (
		    net, t, peak, ips, gf, 100 * gf / peak, pt["train_images_per_s"], ratio,
		    eips, pt["infer_images_per_s"], eratio))
		target = 1.5 if net == "cifar10_quick" else 2.0
		if ratio < target or eratio < 3.0:
		    open(sys.argv[4] + ".missed", "w").write("x")
		EOF
	done
done

# The per-layer profiles of the runs that missed a target.
for f in "$work"/*.json.missed; do
	[ -e "$f" ] || continue
	j=${f%.missed}
	echo
	echo "profile of $(basename "${j%.json}") (ms per step of 64):"
	"$PY" - "$j" <<-'EOF'
	import json, sys
	print("%-10s %-22s %10s %11s %7s %8s" % ("layer", "kind", "fwd ms", "bwd ms", "share%", "GFLOP/s"))
	for r in json.load(open(sys.argv[1]))["profile"]:
	    print("%-10s %-22s %10.3f %11.3f %7.1f %8.2f" % (r["layer"], r["kind"], r["forward_ms"],
	          r["backward_ms"], r["share"], r["gflops"]))
	EOF
done
