#!/usr/bin/env bats
# bench/study (make study): the speedup model's arithmetic on a hand-made
# grid with known answers, rounds to target read from log.tsv, the K = 1
# check, and one tiny study end to end.

load helper

M() { /usr/bin/python3 "$SN_ROOT/bench/study_model.py" "$@"; }

# near A B: A equals B within 1e-9 relative
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= 1e-9 * (m > 1 ? m : 1)) }'; }

# log ROUNDS_ACCS...: a log.tsv with one row per accuracy ("" = not evaluated),
# every worker 0.1 s of compute and 0.3 s of overhead per round
log_tsv() {
	printf 'round\twall_s\tworker_max_s\tworker_mean_s\toverhead_s\tworkers\ttrain_loss\teval_loss\teval_acc\n'
	local r=1 a
	for a; do
		printf '%d\t0.4\t0.1\t0.1\t0.3\t1\t0.5\t%s\t%s\n' "$r" "${a:+0.4}" "$a"
		r=$((r + 1))
	done
}

# run DIR K TAU OUTER ACCS...: a hand-made run as bench/study leaves it
hand_run() {
	local d=runs/$1 k=$2 tau=$3 outer=$4
	shift 4
	mkdir -p "$d"
	printf 'K\ttau\touter\ttarget\tstop\twall_s\tweights_bytes\n%d\t%d\t%s\t0.8\ttarget\t5\t1000\n' \
		"$k" "$tau" "$outer" >"$d/run.tsv"
	log_tsv "$@" >"$d/log.tsv"
}

# weights FILE SEED ROUND: a tiny safetensors weight file (float32 [2])
weights() {
	/usr/bin/python3 - "$@" <<'PY'
import json, struct, sys
path, seed, rnd = sys.argv[1], float(sys.argv[2]), sys.argv[3]
data = struct.pack("<2f", seed, 2 * seed)
h = json.dumps({"__metadata__": {"format": "sn.weights.v1", "round": rnd},
                "fc.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
}

hand_grid() {
	hand_run k1-t10-none 1 10 none 0.5 0.6 0.7 0.8 0.85 0.9
	hand_run k1-t20-none 1 20 none 0.6 0.8 0.9
	hand_run k2-t10-none 2 10 none 0.6 0.8
	hand_run k2-t10-nesterov 2 10 nesterov 0.7 0.75 0.82
	# step 20 and 40 of both K = 1 runs: same tensors, other metadata
	weights runs/k1-t10-none/w-0002.safetensors 1 2
	weights runs/k1-t20-none/w-0001.safetensors 1 1
	weights runs/k1-t10-none/w-0004.safetensors 3 4
	weights runs/k1-t20-none/w-0002.safetensors 3 2
	printf 'preset=test\nnet=hand\ntarget=0.8\nC_s=0.01\nsame_K=2\nsame_tau=10\nsame_R=2\n' >study.conf
}

@test "study model: speedup, naive speedup and the crossover, by hand" {
	# N1 C / ((tau C + S) M) = 1000 * 0.01 / ((50 * 0.01 + S) * 10)
	run M speedup 1000 0.01 50 10 0
	[ "$status" -eq 0 ] && near "$output" 2
	run M speedup 1000 0.01 50 10 0.5
	near "$output" 1
	# C / (C / K + S)
	run M naive 0.01 4 0
	near "$output" 4
	run M naive 0.01 4 0.0025
	near "$output" 2
	# N1 (C/K + S) = (tau C + S) M: S = (0.3 - 0.2) / 37
	run M crossover 40 0.01 2 10 3
	near "$output" 0.0027027
	run M crossover 40 0.01 2 10 2
	near "$output" 0
	run M crossover 10 0.01 2 10 10
	[ "$output" = never ]
	run M speedup 1 2
	[ "$status" -eq 2 ]
}

@test "study model: rounds to target is the first evaluated round that reaches it" {
	log_tsv 0.5 "" 0.79 0.8 0.7 0.85 >log.tsv
	run M rounds log.tsv 0.8
	[ "$status" -eq 0 ] && [ "$output" = 4 ]
	run M rounds log.tsv 0.6
	[ "$output" = 3 ]
	run M rounds log.tsv 0.9
	[ "$status" -eq 0 ] && [ -z "$output" ]
	run M rounds missing.tsv 0.8
	[ "$status" -eq 1 ]
}

@test "study model: study.tsv from a hand-made grid" {
	hand_grid
	M table runs >study.tsv
	[ "$(head -n 1 study.tsv | cut -f1-10)" = "$(printf 'K\ttau\touter\ttarget\trounds\tsteps_per_worker\tfinal_acc\tC_s\twall_s\tbytes')" ]
	[ "$(wc -l <study.tsv)" -eq 5 ]
	row() { awk -F '\t' -v k="$1" -v t="$2" -v o="$3" '$1 == k && $2 == t && $3 == o' study.tsv; }
	# rounds, steps per worker, final accuracy, C (0.1 s per 10 steps), bytes
	# (the weight file once down and once up per worker and round)
	[ "$(row 1 10 none | cut -f5-7,10,11)" = "$(printf '4\t40\t0.9\t12000\t6')" ]
	[ "$(row 1 20 none | cut -f5,6)" = "$(printf '2\t40')" ]
	[ "$(row 2 10 none | cut -f5,6,10)" = "$(printf '2\t20\t8000')" ]
	[ "$(row 2 10 nesterov | cut -f5,6)" = "$(printf '3\t30')" ]
	near "$(row 1 10 none | cut -f8)" 0.01
	near "$(row 1 20 none | cut -f8)" 0.005
}

@test "study model: the K = 1 check compares accuracy and tensors at common steps" {
	hand_grid
	run M k1 runs
	[ "$status" -eq 0 ]
	# steps 20, 40, 60 in common; both weight pairs identical
	[ "${lines[1]}" = "$(printf '10\t20\t3\t0\t2\t0\t40\t40')" ]
	# a harness whose K = 1 trajectory depended on tau would show here
	log_tsv 0.5 0.61 0.7 0.8 0.85 0.9 >runs/k1-t10-none/log.tsv
	weights runs/k1-t20-none/w-0002.safetensors 4 2
	run M k1 runs
	[ "${lines[1]}" = "$(printf '10\t20\t3\t0.01\t1\t1\t40\t40')" ]
}

@test "study model: speedup.tsv and the report from a hand-made grid" {
	hand_grid
	M table runs >study.tsv
	M analyse .
	[ -s speedup.tsv ] && [ -s report.md ]
	sp() { awk -F '\t' -v k="$1" -v t="$2" -v o="$3" -v s="$4" '$1 == k && $2 == t && $3 == o && $4 == s { print $'"$5"' }' speedup.tsv; }
	# N1 = 40 (K = 1, tau = 10), C = 0.01; K = 2, tau 10, M = 2
	near "$(sp 2 10 none S0 7)" 2
	near "$(sp 2 10 none S0 8)" 2
	# local S: the median overhead, 0.3 s
	near "$(sp 2 10 none local 5)" 0.3
	near "$(sp 2 10 none local 7)" 0.5
	# 1 Mbit/s: 4000 bytes a round = 0.032 s
	near "$(sp 2 10 none 1Mbit-none 5)" 0.032
	[ "$(sp 2 10 none 1Mbit-none 6)" = computed ]
	near "$(sp 2 10 none 1Mbit-none 7)" 1.51515
	near "$(sp 2 10 none 1Mbit-none 8)" 0.27027
	near "$(sp 2 10 nesterov S0 7)" 1.33333
	# every reached run times every S: 4 runs x 5 S values (no int8 bytes)
	[ "$(wc -l <speedup.tsv)" -eq 21 ]
	grep -q 'N1 = \*\*40\*\* steps' report.md
	grep -q 'largest accuracy difference at a common step is 0 (identical trajectories)' report.md
	grep -q 'K2 tau10 2/3' report.md
	grep -q 'K = 2: SparkNet (tau 10, none) beats naive synchronous SGD at any bandwidth' report.md
	# the pair with the same examples: K = 2 tau 10 after 2 rounds = 40 steps of one worker
	grep -q 'After 2 rounds (K x tau x rounds = 40 steps.* the average has 80.00%, one worker 80.00%: level by 0.00 points, within 0.5 points' report.md
}

@test "bench/study: a tiny grid end to end writes the tables, the plots and the report" {
	run "$SN_ROOT/bench/study" --out st --K 1,2 --tau 5,10 --target 0.6 --max-steps 40 --same 2,10,2 \
		--train-limit 1000 --test-n 300 --c-iters 20 --no-links -q
	[ "$status" -eq 0 ]
	for f in study.tsv speedup.tsv report.md study.conf k1.tsv; do [ -s "st/$f" ]; done
	if command -v gnuplot >/dev/null; then
		for f in speedup_map speedup_vs_s speedup_vs_rate; do [ -s "st/$f.png" ]; done
	fi
	# K = 1, 2 x tau 5, 10, K = 2 with both outer steps
	[ "$(wc -l <st/study.tsv)" -eq 7 ]
	# one worker's trajectory does not depend on tau: same weights, same accuracy
	awk -F '\t' 'NR == 2 && $1 == 5 && $2 == 10 && $4 == 0 && $5 >= 1 && $6 == 0 { ok = 1 } END { exit !ok }' st/k1.tsv
	grep -q '^C_s=0\.[0-9]' st/study.conf
	# no run weights left behind but the initial ones
	[ -z "$(find st/runs -name 'w-*' ! -name w-0000.safetensors)" ]
}

@test "bench/study: usage errors exit 2" {
	run "$SN_ROOT/bench/study" --K 1,x
	[ "$status" -eq 2 ] && [[ "$output" == *"--K: invalid list"* ]]
	run "$SN_ROOT/bench/study" --target 1.5
	[ "$status" -eq 2 ]
	run "$SN_ROOT/bench/study" --outer none,adam
	[ "$status" -eq 2 ]
	run "$SN_ROOT/bench/study" --bogus
	[ "$status" -eq 2 ]
	run "$SN_ROOT/bench/study" --help
	[ "$status" -eq 0 ] && [[ "$output" == *"--full"* ]]
}

@test "bench/study and bench/study_links are shellcheck-clean" {
	command -v shellcheck >/dev/null || skip "shellcheck is not installed"
	run shellcheck "$SN_ROOT/bench/study" "$SN_ROOT/bench/study_links"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
}

@test "study model: measured link times replace the computed ones, int8 bytes add their own S" {
	hand_grid
	M table runs >study.tsv
	printf 'kind\tK\trate_mbit\tcompress\tvalue\nbytes\t2\t\tint8\t1000\nround\t2\t10\tnone\t0.05\n' >links.tsv
	M analyse .
	sp() { awk -F '\t' -v s="$1" '$1 == 2 && $2 == 10 && $3 == "none" && $4 == s { print $5, $6 }' speedup.tsv; }
	[ "$(sp 10Mbit-none)" = "0.05 measured" ]
	# still computed where nothing was measured: 4000 bytes at 100 Mbit/s
	[ "$(sp 100Mbit-none)" = "0.00032 computed" ]
	# int8: 1000 bytes a round at 1 Mbit/s
	[ "$(sp 1Mbit-int8)" = "0.008 computed" ]
}
