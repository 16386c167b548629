#!/usr/bin/env bats
# sn-train: rounds, the per-round log, bit-for-bit equivalences, resume after
# a kill, workers that fail, the quorum, and paths with spaces.  Data are a
# small Fashion-MNIST subset sharded once for the whole file.

load helper

setup_file() {
	export FX=$BATS_FILE_TMPDIR/fx
	mkdir -p "$FX"
	sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 2 --stratify --seed 1 --limit 2000 -o "$FX/shards2"
	sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 1 --seed 1 --limit 1000 -o "$FX/shards1"
	sn-shard "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
		-k 1 --limit 1000 --stats-from "$FX/shards2/shard-000.safetensors" -o "$FX/test"
	export TEST_DATA=$FX/test/shard-000.safetensors
}

# same_tensors A B: the two weight files hold identical tensors
same_tensors() {
	python3 - "$1" "$2" <<'PY'
import json, struct, sys
def rd(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
a, b = rd(sys.argv[1]), rd(sys.argv[2])
assert a.keys() == b.keys(), (a.keys(), b.keys())
bad = [k for k in a if a[k] != b[k]]
assert not bad, "tensors differ: %s" % bad
PY
}

# a wrapper sn-sgd that dies (SIGKILL) on shard-001 and runs the real one otherwise
fake_failing_worker() {
	mkdir -p fake
	cat >fake/sn-sgd <<EOF2
#!/bin/bash
for a; do [[ \$a == *shard-001* ]] && { echo try >>"$PWD/fake/tries"; kill -9 \$\$; }; done
exec "$(command -v sn-sgd)" "\$@"
EOF2
	chmod +x fake/sn-sgd
}

@test "sn-train runs the rounds, logs each one, and accuracy rises" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 4 --iters 20 \
		--eval "$TEST_DATA" --seed 3
	[ "$status" -eq 0 ]
	[[ "$output" == *"round 4/4"* ]]
	[[ "$output" == *"best accuracy "*" at round "* ]]
	for r in 0000 0001 0002 0003 0004; do [ -f "run/w-$r.safetensors" ]; done
	[ "$(head -n 1 run/log.tsv)" = "$(printf 'round\twall_s\tworker_max_s\tworker_mean_s\toverhead_s\tworkers\ttrain_loss\teval_loss\teval_acc\tbytes_down\tbytes_up')" ]
	[ "$(wc -l <run/log.tsv)" -eq 5 ]
	awk -F '\t' 'NR > 1 && (NF != 11 || $6 != 2 || $9 == "") { exit 1 }' run/log.tsv
	# locally the bytes are the sizes of the files handed over: the weights
	# to each of the two workers (the net in the first round: sn-init makes
	# the same weights from it anywhere) and their weights back
	w=$(stat -c %s run/w-0001.safetensors)
	n=$(stat -c %s run/net.yaml)
	awk -F '\t' -v w="$w" -v n="$n" 'NR == 2 && $10 != 2 * n { exit 1 }
		NR > 2 && ($10 < 2 * w - 512 || $10 > 2 * w + 512) { exit 1 }
		NR > 1 && ($11 < 2 * w - 512 || $11 > 2 * w + 512) { exit 1 }' run/log.tsv
	[[ "$output" == *"bytes down"* ]]
	first=$(awk -F '\t' 'NR == 2 { print $9 }' run/log.tsv)
	lastacc=$(awk -F '\t' 'NR == 5 { print $9 }' run/log.tsv)
	awk -v a="$first" -v b="$lastacc" 'BEGIN { exit !(b > a && b > 0.6) }'
	grep -q 'round 3: done' run/events.log
	[ -f run/state/0.0004.safetensors ] && [ -f run/state/1.0004.safetensors ]
	[ "$(ls run/state | wc -l)" -eq 2 ]   # only the newest state of each worker
	[ "$(cat run/threads)" -ge 1 ]
	if command -v gnuplot >/dev/null; then [ -s run/curve.png ]; fi
}

@test "sn-train --target-acc stops after the first evaluation that reaches it" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 12 --iters 20 \
		--eval "$TEST_DATA" --seed 3 --target-acc 0.5 --quiet
	[ "$status" -eq 0 ]
	n=$(($(wc -l <run/log.tsv) - 1))
	[ "$n" -lt 12 ]
	# the last row is the first to reach the target, and the weights stop there
	awk -F '\t' -v n="$n" 'NR > 1 && NR < n + 1 && $9 >= 0.5 { exit 1 } NR == n + 1 && $9 < 0.5 { exit 1 }' run/log.tsv
	[ -f "run/w-$(printf %04d "$n").safetensors" ] && [ ! -e "run/w-$(printf %04d $((n + 1))).safetensors" ]
	[[ "$output" == *"target accuracy 0.5 reached at round $n;"* ]]
	grep -q "target: eval accuracy .* >= 0.5 after round $n, stopping" run/events.log
	# the next round's workers, started while this one was averaged, were
	# stopped at its gate: they ran nothing, and none is left running
	[ ! -e "run/r-$(printf %04d "$n")/0.json" ] && [ ! -e "run/r-$(printf %04d "$n")/1.json" ]
	for p in /proc/[0-9]*; do [ "$(readlink "$p/cwd" 2>/dev/null)" != "$PWD/run" ]; done
	# resuming a run that reached its target trains no further
	run sn-train --resume --shards "$FX/shards2" --out run --rounds 12 --iters 20 \
		--eval "$TEST_DATA" --target-acc 0.5 --quiet
	[ "$status" -eq 0 ]
	[ ! -e "run/w-$(printf %04d $((n + 1))).safetensors" ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run2 --rounds 2 --iters 5 \
		--eval "$TEST_DATA" --target-acc 0.999 --quiet
	[ "$status" -eq 0 ]
	[[ "$output" == *"target accuracy 0.999 not reached;"* ]]
	[ -f run2/w-0002.safetensors ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run3 --target-acc 0.5
	[ "$status" -eq 2 ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run3 --eval "$TEST_DATA" --target-acc 1.5
	[ "$status" -eq 2 ]
	[ ! -e run3 ]
}

@test "sn-train with one worker for R rounds of tau equals R*tau steps of one sn-sgd, bit for bit" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds 3 --iters 7 --seed 5 --quiet
	[ "$status" -eq 0 ]
	sn-sgd -q -w run/w-0000.safetensors -d "$FX/shards1/shard-000.safetensors" -o one.safetensors \
		--state st.safetensors --iters 21 --seed 5 --threads "$(nproc)"
	same_tensors run/w-0003.safetensors one.safetensors
}

@test "sn-train --resume after a SIGKILL mid-round gives the same weights as an uninterrupted run" {
	args=(--net "$NETS/mlp.yaml" --shards "$FX/shards2" --rounds 4 --iters 15 --seed 7 --quiet)
	sn-train "${args[@]}" --out whole
	setsid sn-train "${args[@]}" --out cut &
	pid=$!
	for _ in $(seq 600); do [ -e cut/w-0002.safetensors ] && [ -d cut/r-0002 ] && break; sleep 0.05; done
	kill -9 -- -"$pid"
	wait "$pid" || true
	[ ! -e cut/w-0004.safetensors ]
	run sn-train "${args[@]}" --out cut --resume
	[ "$status" -eq 0 ]
	grep -q 'resume: ' cut/events.log
	same_tensors whole/w-0004.safetensors cut/w-0004.safetensors
	[ "$(wc -l <cut/log.tsv)" -eq 5 ]
}

@test "sn-train --compress int8 sends deltas both ways; kill -9 then --resume gives the uninterrupted run's weights" {
	args=(--net "$NETS/mlp.yaml" --shards "$FX/shards2" --rounds 4 --iters 15 --seed 7 --compress int8 --quiet)
	run sn-train "${args[@]}" --out whole --json
	[ "$status" -eq 0 ]
	# the summary is one JSON object with the byte totals of log.tsv
	printf '%s\n' "$output" | "$PY" -c 'import json, sys
j = json.load(sys.stdin)
assert j["rounds"] == 4 and j["compress"] == "int8", j
rows = [l.rstrip("\n").split("\t") for l in open("whole/log.tsv")][1:]
assert j["bytes_down"] == sum(int(r[9]) for r in rows) and j["bytes_up"] == sum(int(r[10]) for r in rows), j
w = j["weights_bytes"]
# after the first round both ways carry int8 deltas: about 0.27 of the weights per worker
for r in rows[1:]:
    assert int(r[9]) < 2 * 0.35 * w and int(r[10]) < 2 * 0.35 * w, (r, w)'
	[ -f whole/d-0004.safetensors ] && [ -f whole/feedback.safetensors ]
	# w-<r+1> is w-<r> plus the broadcast delta, as every replica computes it
	sn-delta apply whole/w-0002.safetensors whole/d-0003.safetensors -o again.safetensors
	cmp <(sn-info --json again.safetensors | grep -v '"file"') <(sn-info --json whole/w-0003.safetensors | grep -v '"file"')
	setsid sn-train "${args[@]}" --out cut &
	pid=$!
	for _ in $(seq 600); do [ -e cut/w-0002.safetensors ] && [ -d cut/r-0002 ] && break; sleep 0.05; done
	kill -9 -- -"$pid"
	wait "$pid" || true
	[ ! -e cut/w-0004.safetensors ]
	run sn-train "${args[@]}" --out cut --resume
	[ "$status" -eq 0 ]
	same_tensors whole/w-0004.safetensors cut/w-0004.safetensors
}

@test "sn-train checks the options it passes to sn-sgd before it creates anything" {
	for bad in "--batch 0" "--lr 0" "--lr 1e400" "--momentum 1" "--solver foo" "--set foo=1"; do
		# shellcheck disable=SC2086
		run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds 1 --iters 2 $bad --quiet
		[ "$status" -eq 2 ] || { echo "$bad: status $status: $output"; return 1; }
		[[ "$output" == "sn-sgd: "* ]] || { echo "$bad: $output"; return 1; }
		[ ! -e run ] || { echo "$bad: run/ was created"; return 1; }
	done
	# integers are decimal, leading zeros or not
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds 02 --iters 3 --seed 08 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0002.safetensors ] && [ ! -e run/w-0003.safetensors ]
	# the corrected rerun of a refused one is not refused
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run2 --rounds 1 --iters 2 --lr 0 --quiet
	[ "$status" -eq 2 ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run2 --rounds 1 --iters 2 --lr 0.01 --quiet
	[ "$status" -eq 0 ]
}

@test "sn-train refuses shards of different sn-shard runs and paths with a newline" {
	mkdir mixed
	cp "$FX/shards2/shard-000.safetensors" mixed/shard-000.safetensors
	cp "$FX/shards1/shard-000.safetensors" mixed/shard-001.safetensors
	run sn-train --net "$NETS/mlp.yaml" --shards mixed --out run --rounds 1 --iters 2 --quiet
	[ "$status" -eq 1 ]
	[[ "$output" == *"shard-001.safetensors: shard 1/1, but mixed holds 2 shards"* ]]
	[ ! -e run ]
	mkdir "new
line"
	cp "$FX/shards1/shard-000.safetensors" "new
line/"
	run sn-train --net "$NETS/mlp.yaml" --shards "new
line" --out run --rounds 1 --iters 2 --quiet
	[ "$status" -eq 2 ]
	[[ "$output" == *"newline"* ]]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out "run
x" --rounds 1 --iters 2 --quiet
	[ "$status" -eq 2 ]
	[ ! -e "run
x" ]
}

@test "sn-train finds the sn tools beside itself before PATH" {
	mkdir tree
	cp "$SN_ROOT/bin/sn-train" tree/
	for t in sn-sgd sn-average sn-init sn-eval sn-delta; do ln -s "$SN_BIN/$t" tree/; done
	mkdir decoy
	printf '#!/bin/sh\necho decoy >&2; exit 1\n' >decoy/sn-sgd
	chmod +x decoy/sn-sgd
	run env -u SN_EXEC_PATH PATH="$PWD/decoy:/usr/bin:/bin" tree/sn-train --net "$NETS/mlp.yaml" \
		--shards "$FX/shards1" --out run --rounds 1 --iters 2 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0001.safetensors ]
}

@test "sn-train holds a lock on the run directory: a live run is refused, a killed run's workers are waited for" {
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 1 --iters 2 --quiet
	# a killed run's orphan worker still holds the lock (inherited fd)
	flock run/.lock sleep 8 &
	holder=$!
	for _ in $(seq 100); do flock -n run/.lock true || break; sleep 0.05; done
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 2 --iters 2 --quiet
	[ "$status" -eq 1 ]
	[[ "$output" == *"in use by the workers of a killed run"* ]]
	SECONDS=0
	run sn-train --resume --shards "$FX/shards2" --out run --rounds 2 --iters 2
	[ "$status" -eq 0 ]
	[[ "$output" == *"waiting for the workers of a killed run"* ]]
	[ "$SECONDS" -ge 1 ]
	wait "$holder"
	# a live sn-train is refused, not waited for
	sn-train --resume --shards "$FX/shards2" --out run --rounds 40 --iters 20 --quiet &
	live=$!
	for _ in $(seq 600); do [ -e run/w-0003.safetensors ] && break; sleep 0.1; done
	[ -e run/w-0003.safetensors ]
	run sn-train --resume --shards "$FX/shards2" --out run --rounds 40 --iters 20 --quiet
	kill "$live"
	wait "$live" || true
	# its workers finish their jobs and let go of the lock before teardown
	flock -w 120 run/.lock true
	[ "$status" -eq 1 ]
	[[ "$output" == *"in use by sn-train (pid $live)"* ]]
}

@test "sn-train: many short rounds with the next round's workers waiting side by side all complete" {
	# both workers of a round wait at its gate at once; each takes its own
	# byte from it (bash reads a pipe a byte at a time)
	run timeout 120 sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 25 --iters 1 \
		-j 2 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0025.safetensors ]
	[ "$(awk -F '\t' 'NR > 1 && $6 == 2' run/log.tsv | wc -l)" -eq 25 ]
	# waiting workers that look for their driver every millisecond: bash's
	# read -t then often times out with the byte read, which must not be lost
	run timeout 120 env SN_WAIT_POLL=0.001 sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" \
		--out run2 --rounds 25 --iters 3 -j 2 --quiet
	[ "$status" -eq 0 ]
	[ -f run2/w-0025.safetensors ]
}

@test "sn-train: when the driver dies while the next round's workers wait at its gate, they end" {
	# an sn-average that takes its time, so the next round's workers wait
	mkdir slow
	for t in sn-sgd sn-init sn-eval sn-delta; do ln -s "$SN_BIN/$t" slow/; done
	printf '#!/bin/sh
sleep 4
exec "%s/sn-average" "$@"
' "$SN_BIN" >slow/sn-average
	chmod +x slow/sn-average
	SN_EXEC_PATH=$PWD/slow sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 3 \
		--iters 2 -j 2 --quiet &
	pid=$!
	for _ in $(seq 200); do [ -p run/r-0001/.gate ] && [ -s run/r-0000/1.json ] && break; sleep 0.05; done
	sleep 1
	kill -9 "$pid"
	wait "$pid" || true
	# the workers see that the driver is gone within a second or two, and
	# run nothing; the lock they hold is then free for --resume
	flock -w 10 run/.lock true
	[ ! -e run/r-0001/0.json ] && [ ! -e run/r-0001/1.json ]
	run sn-train --resume --shards "$FX/shards2" --out run --rounds 3 --iters 2 -j 2 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0003.safetensors ]
}

@test "SIGTERM to sn-train ends its running workers too, and frees the run for --resume" {
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 2 --iters 400000 \
		-j 2 --quiet &
	pid=$!
	for _ in $(seq 600); do [ "$(pgrep -fc -- "--iters 400000")" -ge 2 ] && break; sleep 0.05; done
	[ "$(pgrep -fc -- "--iters 400000")" -ge 2 ]
	kill -TERM "$pid"
	st=0
	wait "$pid" || st=$?
	[ "$st" -eq 1 ]
	grep -q 'fatal: interrupted' run/events.log
	# GNU parallel has sent its jobs TERM (then KILL) before sn-train exits
	for _ in $(seq 40); do pgrep -f -- "--iters 400000" >/dev/null || break; sleep 0.05; done
	! pgrep -f -- "--iters 400000"
	flock -n run/.lock true
	ls run/r-0000 | { ! grep -q '\.tmp'; }
	run sn-train --resume --shards "$FX/shards2" --out run --rounds 2 --iters 5 -j 2 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0002.safetensors ]
}

@test "sn-train's wall_s covers the whole run, evaluation included" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 3 --iters 3 \
		--eval "$TEST_DATA" --json --quiet
	[ "$status" -eq 0 ]
	total=$(printf '%s\n' "$output" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["seconds"])')
	sum=$(awk -F '\t' 'NR > 1 { s += $2 } END { print s }' run/log.tsv)
	# the rounds' wall times add up to the run's, less only the summary
	awk -v t="$total" -v s="$sum" 'BEGIN { exit !(s <= t + 0.01 && s >= t - 0.5) }'
}

@test "sn-train goes on with the survivors when a worker dies" {
	fake_failing_worker
	# --min-workers 1 accepts a shard left out of every round; without it the
	# run ends with exit 4
	SN_EXEC_PATH=$PWD/fake:$SN_BIN run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run \
		--rounds 2 --iters 5 --min-workers 1 --quiet
	[ "$status" -eq 0 ]
	awk -F '\t' 'NR > 1 && $6 != 1 { exit 1 }' run/log.tsv
	grep -q 'worker 1 failed twice, left out' run/events.log
	[ -f run/w-0002.safetensors ]
	[ "$(wc -l <fake/tries)" -eq 4 ]   # two tries in each of the two rounds
}

@test "sn-train warns while a shard is left out and exits 4 when it missed more than half the rounds" {
	fake_failing_worker
	SN_EXEC_PATH=$PWD/fake:$SN_BIN run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run \
		--rounds 2 --iters 5
	[ "$status" -eq 4 ]
	[ "$(grep -c '^round [12]/2 .*WARNING: left out: shard 1 ([12] of [12] rounds)' <<<"$output")" -eq 2 ]
	[[ "$output" == *"shards 1 missed more than half of the 2 rounds"* ]]
	[ -f run/w-0002.safetensors ]   # the rounds were all run
}

@test "sn-train exits 4 when fewer than --min-workers workers come back" {
	fake_failing_worker
	SN_EXEC_PATH=$PWD/fake:$SN_BIN run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run \
		--rounds 2 --iters 5 --min-workers 2 --quiet
	[ "$status" -eq 4 ]
	[[ "$output" == *"round 0: 1 of 2 workers came back, fewer than --min-workers 2"* ]]
	[ ! -e run/w-0001.safetensors ]
}

@test "sn-train --outer-lr 1 --outer-momentum 0 is plain averaging; 0.7/0.9 keeps an outer state" {
	args=(--net "$NETS/mlp.yaml" --shards "$FX/shards2" --rounds 2 --iters 5 --seed 2 --quiet)
	sn-train "${args[@]}" --out plain
	sn-train "${args[@]}" --out outer1 --outer-lr 1 --outer-momentum 0
	same_tensors plain/w-0002.safetensors outer1/w-0002.safetensors
	run sn-train "${args[@]}" --out diloco --outer-lr 0.7 --outer-momentum 0.9 --weighted
	[ "$status" -eq 0 ]
	[ -f diloco/outer.safetensors ]
	run same_tensors plain/w-0002.safetensors diloco/w-0002.safetensors
	[ "$status" -ne 0 ]
}

@test "sn-train --time-limit bounds each worker's round" {
	SECONDS=0
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 2 \
		--iters 1000000 --time-limit 0.5 --quiet
	[ "$status" -eq 0 ]
	[ "$SECONDS" -lt 60 ]
	awk -F '\t' 'NR > 1 && ($3 < 0.3 || $3 > 5) { exit 1 }' run/log.tsv
}

@test "sn-train exits 3 when every worker diverges" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards2" --out run --rounds 2 --iters 20 \
		--lr 1e30 --quiet
	[ "$status" -eq 3 ]
	[[ "$output" == *"round 0: every worker diverged"* ]]
	[ ! -e run/w-0001.safetensors ]
}

@test "sn-train works with spaces and dashes in paths" {
	mkdir "my shards"
	cp "$FX/shards1/shard-000.safetensors" "my shards/"
	cp -- "$NETS/mlp.yaml" "-net one.yaml"
	run sn-train --net "./-net one.yaml" --shards "my shards" --out "run dir" --rounds 1 --iters 3 \
		--eval "$TEST_DATA" --quiet
	[ "$status" -eq 0 ]
	[ -f "run dir/w-0001.safetensors" ]
	[[ "$output" == *"run dir/w-0001.safetensors"* ]]
}

@test "sn-train refuses to start over an existing run without --resume" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds 1 --iters 2 --quiet
	[ "$status" -eq 0 ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds 1 --iters 2 --quiet
	[ "$status" -eq 1 ]
	[[ "$output" == *"use --resume"* ]]
}

@test "sn-train rejects bad usage with exit 2" {
	run sn-train --shards "$FX/shards1" --out run
	[ "$status" -eq 2 ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --rounds x
	[ "$status" -eq 2 ]
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards1" --out run --bogus
	[ "$status" -eq 2 ]
	[[ "$output" == *"Try 'sn-train --help'"* ]]
	run sn-train --net "$NETS/mlp.yaml" --shards nowhere --out run
	[ "$status" -eq 1 ]
	[ ! -e run ]
}

@test "sn-train --help and --version print on stdout and exit 0" {
	run sn-train --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"Usage: sn-train"* ]]
	run sn-train --version
	[ "$status" -eq 0 ]
	[ "$output" = "sn-train (sn) 0.1.0" ]
}

@test "sn-train is shellcheck-clean" {
	command -v shellcheck >/dev/null || skip "shellcheck is not installed"
	run shellcheck "$SN_ROOT/bin/sn-train"
	[ "$status" -eq 0 ]
}

@test "sn-train(1) renders cleanly" {
	run bash -c "MANWIDTH=80 man --warnings -l '$SN_ROOT/man/man1/sn-train.1' 2>&1 >/dev/null"
	[ -z "$output" ]
	run man -l "$SN_ROOT/man/man1/sn-train.1"
	[[ "$output" == *"EXIT STATUS"* ]]
}
