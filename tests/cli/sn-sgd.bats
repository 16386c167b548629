#!/usr/bin/env bats
# sn-sgd: minibatch SGD on one shard, resumable through a state file.
load helper

setup_file() {
	export REF=$BATS_TEST_DIRNAME/torch_reference.py
	export D=$BATS_FILE_TMPDIR
	"$PY" "$REF" data "$D/train.safetensors" --fmnist train --limit 2000
	"$PY" "$REF" data "$D/rgb.safetensors" --random 50 --shape 3,32,32
	"$PY" "$REF" data "$D/twelve.safetensors" --random 50 --shape 1,28,28 --classes 12
	sn-init "$NETS/mlp.yaml" -o "$D/mlp.safetensors" --seed 1
	sn-init "$NETS/lenet.yaml" -o "$D/lenet.safetensors" --seed 1
}

meta() { "$PY" "$REF" meta "$1" "$2"; }
same() { "$PY" "$REF" same "$1" "$2"; }
json_field() { "$PY" -c "import json,sys; print(json.load(open('$1'))['$2'])"; }

@test "sn-sgd --help prints the usage on stdout and exits 0" {
	run sn-sgd --help
	[ "$status" -eq 0 ]
	[[ "$output" == Usage:\ sn-sgd* ]]
	[[ "$output" == *--time-limit* ]]
}

@test "sn-sgd --version prints the version" {
	run sn-sgd --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-sgd (sn) "* ]]
}

@test "sn-sgd writes weights with steps, examples, loss, seconds and round" {
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 5 --batch 32
	[ "$(meta out.safetensors format)" = sn.weights.v1 ]
	[ "$(meta out.safetensors steps)" = 5 ]
	[ "$(meta out.safetensors examples)" = 160 ]
	[ "$(meta out.safetensors round)" = 0 ]
	[ "$(meta out.safetensors net)" = "$(meta "$D/lenet.safetensors" net)" ]
	"$PY" -c "import math,sys; l=float(sys.argv[1]); assert 0 < l < 5 and math.isfinite(l)" \
		"$(meta out.safetensors loss)"
	meta out.safetensors seconds | grep -Eq '^[0-9]+\.[0-9]+$'
	! same "$D/lenet.safetensors" out.safetensors || false
}

@test "sn-sgd continues the step count of its input weights" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors --iters 3
	sn-sgd -w a.safetensors -d "$D/train.safetensors" -o b.safetensors --iters 4
	[ "$(meta b.safetensors steps)" = 7 ]
}

@test "sn-sgd lowers the training loss over a few hundred steps on Fashion-MNIST" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors \
		--iters 20 --state s.safetensors
	sn-sgd -w a.safetensors -d "$D/train.safetensors" -o b.safetensors \
		--iters 200 --state s.safetensors
	sn-sgd -w b.safetensors -d "$D/train.safetensors" -o c.safetensors \
		--iters 60 --state s.safetensors
	first=$(meta a.safetensors loss) last=$(meta c.safetensors loss)
	echo "loss $first -> $last"
	"$PY" -c "import sys; a,b=map(float,sys.argv[1:]); assert b < 0.6*a" "$first" "$last"
}

@test "three runs of 10 steps with a state file equal one run of 30, bit for bit" {
	w=$D/lenet.safetensors
	for r in 0 1 2; do
		sn-sgd -w "$w" -d "$D/train.safetensors" -o "r$r.safetensors" --iters 10 \
			--batch 48 --state state.safetensors --seed 7
		w=r$r.safetensors
	done
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o long.safetensors \
		--iters 30 --batch 48 --state long-state.safetensors --seed 7
	same r2.safetensors long.safetensors
	sn-info --diff r2.safetensors long.safetensors --tol 0 -q
	same state.safetensors long-state.safetensors
	[ "$(meta state.safetensors format)" = sn.state.v1 ]
	[ "$(meta state.safetensors solver)" = "$(meta long-state.safetensors solver)" ]
	[ "$(meta state.safetensors step)" = 30 ]
	# 30 batches of 48 = 1440 of 2000 examples: still in epoch 0
	[ "$(meta state.safetensors epoch)" = 0 ]
	[ "$(meta state.safetensors cursor)" = 1440 ]
}

@test "with --crop-pad and --mirror, three runs of 5 steps with a state file equal one run of 15, bit for bit" {
	w=$D/lenet.safetensors
	for r in 0 1 2; do
		sn-sgd -w "$w" -d "$D/train.safetensors" -o "r$r.safetensors" --iters 5 \
			--batch 32 --state state.safetensors --seed 7 --crop-pad 2 --mirror
		w=r$r.safetensors
	done
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o long.safetensors \
		--iters 15 --batch 32 --state long-state.safetensors --seed 7 --crop-pad 2 --mirror
	same r2.safetensors long.safetensors
	same state.safetensors long-state.safetensors
	# the same run through the solver keys, and without augmentation another result
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o keys.safetensors \
		--iters 15 --batch 32 --seed 7 --set crop_pad=2 --set mirror=1
	same keys.safetensors long.safetensors
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o plain.safetensors \
		--iters 15 --batch 32 --seed 7
	! same plain.safetensors long.safetensors
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o mirror.safetensors \
		--iters 15 --batch 32 --seed 7 --mirror
	! same mirror.safetensors long.safetensors
	! same mirror.safetensors plain.safetensors
}

@test "augmentation needs image examples no smaller than the padding, and sane values" {
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o w.safetensors \
		--iters 1 --crop-pad 29
	[ "$status" -eq 1 ]
	[[ "$output" == *"crop_pad 29 is larger than the 28x28 examples"* ]]
	"$PY" "$REF" data table.safetensors --random 20 --shape 784
	printf 'input: [784]\nlayers:\n  - {type: dense, units: 10}\n  - softmax_cross_entropy\n' >flat.yaml
	sn-init flat.yaml -o flat.safetensors
	run sn-sgd -w flat.safetensors -d table.safetensors -o w.safetensors --iters 1 --mirror
	[ "$status" -eq 1 ]
	[[ "$output" == *"crop_pad and mirror need [C,H,W] examples"* ]]
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o w.safetensors \
		--iters 1 --crop-pad -1
	[ "$status" -eq 2 ]
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o w.safetensors \
		--iters 1 --set mirror=2
	[ "$status" -eq 2 ]
	[[ "$output" == *"mirror must be 0 or 1"* ]]
	[ ! -e w.safetensors ]
}

@test "sn-sgd without a state file starts the data order afresh each run" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors --iters 2
	sn-sgd -w a.safetensors -d "$D/train.safetensors" -o b.safetensors --iters 2
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o c.safetensors --iters 2 \
		--state s.safetensors
	sn-sgd -w c.safetensors -d "$D/train.safetensors" -o d.safetensors --iters 2 \
		--state s.safetensors
	same a.safetensors c.safetensors
	! same b.safetensors d.safetensors || false
}

@test "sn-sgd --seed changes the data order; the same seed gives the same weights" {
	for s in 1 1 2; do
		sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o "s$s-$RANDOM.safetensors" \
			--iters 3 --seed $s
	done
	a=(s1-*.safetensors)
	same "${a[0]}" "${a[1]}"
	! same "${a[0]}" s2-*.safetensors || false
}

@test "sn-sgd --time-limit 1 stops a million-step run after about a second" {
	SECONDS=0
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 1000000 --time-limit 1 --json >summary.json
	[ "$SECONDS" -lt 6 ]
	steps=$(json_field summary.json steps)
	[ "$steps" -ge 1 ] && [ "$steps" -lt 1000000 ]
	[ "$(meta out.safetensors steps)" = "$steps" ]
}

@test "sn-sgd --json reports steps, examples, loss, seconds and images per second" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 4 --batch 16 --json >summary.json
	"$PY" - <<-'EOF'
	import json
	j = json.load(open("summary.json"))
	assert j["steps"] == 4 and j["examples"] == 64, j
	assert j["loss"] > 0 and j["seconds"] > 0 and j["images_per_s"] > 0, j
	assert "profile" not in j
	EOF
}

@test "sn-sgd --profile --json adds a per-layer table" {
	sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 3 --profile --json >summary.json
	"$PY" - <<-'EOF'
	import json
	p = json.load(open("summary.json"))["profile"]
	assert [r["kind"] for r in p][:2] == ["conv", "maxpool"], p
	assert abs(sum(r["share"] for r in p) - 100) < 0.5, p
	conv = p[0]
	assert conv["forward_ms"] > 0 and conv["backward_ms"] > 0 and conv["gflops"] > 0, conv
	EOF
}

@test "sn-sgd --profile prints the per-layer table on stderr" {
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 2 --profile
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == layer*kind*forward\ ms*backward\ ms*share*GFLOP/s ]]
	[[ "$output" == *conv1*conv* ]]
}

@test "sn-sgd shows progress and a summary on a terminal, and is silent otherwise" {
	command -v script >/dev/null || skip "script(1) is not installed"
	args="-w $D/mlp.safetensors -d $D/train.safetensors -o out.safetensors --iters 5"
	script -qec "sn-sgd $args" /dev/null >tty.txt
	grep -q 'step 5/5  loss' tty.txt
	grep -q '5 steps, 320 examples, loss .* images/s -> out.safetensors' tty.txt
	script -qec "sn-sgd $args -q" /dev/null >quiet.txt
	[ ! -s quiet.txt ]
	sn-sgd $args 2>err.txt >out.txt
	[ ! -s err.txt ] && [ ! -s out.txt ]
}

@test "sn-sgd -o - writes the weights to stdout" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o - --iters 2 >out.safetensors
	[ "$(meta out.safetensors steps)" = 2 ]
}

@test "sn-sgd gives the same weights and state bit for bit whatever the --threads" {
	sn-init "$NETS/cifar10_quick.yaml" -o cifar.safetensors --seed 2
	sn-init "$NETS/resnet.yaml" -o resnet.safetensors --seed 3
	sn-init "$NETS/inception.yaml" -o inception.safetensors --seed 4
	for t in 1 2 3; do
		sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o lenet-$t.safetensors \
			--state lenet-s$t.safetensors --iters 4 --batch 37 --threads $t
		sn-sgd -w cifar.safetensors -d "$D/rgb.safetensors" -o cifar-$t.safetensors \
			--state cifar-s$t.safetensors --iters 3 --batch 19 --threads $t
		for net in resnet inception; do
			sn-sgd -w $net.safetensors -d "$D/train.safetensors" -o $net-$t.safetensors \
				--iters 2 --batch 13 --threads $t
		done
	done
	for net in resnet inception; do
		same $net-1.safetensors $net-2.safetensors
		same $net-1.safetensors $net-3.safetensors
	done
	[ "$(meta lenet-2.safetensors steps)" = 4 ]
	for t in 2 3; do
		same lenet-1.safetensors lenet-$t.safetensors
		same lenet-s1.safetensors lenet-s$t.safetensors
		same cifar-1.safetensors cifar-$t.safetensors
		same cifar-s1.safetensors cifar-s$t.safetensors
	done
	! same lenet-1.safetensors "$D/lenet.safetensors" || false
}

@test "sn-sgd runs on the threads it is given: OpenBLAS's own are ended at start" {
	# the threaded OpenBLAS starts a thread per core in its constructor;
	# left alone they spin for a while in every process
	sn-sgd -q -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 100000 --time-limit 3 --threads 1 &
	pid=$!
	sleep 0.5
	threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
	kill "$pid"
	wait "$pid" || true
	[ "$threads" -eq 1 ]
}

@test "sn-sgd --solver adam keeps two moments per weight in its state" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 2 --solver adam --lr 0.001 --state s.safetensors
	[ "$(meta s.safetensors solver)" = adam ]
	"$PY" - <<-EOF
	import sys; sys.path.insert(0, "$BATS_TEST_DIRNAME")
	import torch_reference as r
	t, m = r.read_st("s.safetensors")
	w = r.read_st("out.safetensors")[0]
	for k in w:
	    assert t[k + ".m1"].shape == w[k].shape and t[k + ".m2"].shape == w[k].shape, k
	assert len(t) == 2 * len(w)
	EOF
}

@test "sn-sgd --lr, --momentum and --weight-decay change the result" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors --iters 2
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o b.safetensors --iters 2 --lr 0.1
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o c.safetensors --iters 2 \
		--momentum 0.5
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o d.safetensors --iters 2 \
		--weight-decay 0.1
	! same a.safetensors b.safetensors || false
	! same a.safetensors c.safetensors || false
	! same a.safetensors d.safetensors || false
}

@test "sn-sgd --set sets any solver key, and refuses unknown keys and values" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors --iters 2
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o b.safetensors --iters 2 \
		--set lr_policy=exp --set gamma=0.5
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o c.safetensors --iters 2 \
		--set lr_policy=exp --set gamma=1
	! same a.safetensors b.safetensors || false
	same a.safetensors c.safetensors
	for bad in lr_polic=exp lr_policy=bogus gamma=x =1 nokey; do
		run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o e.safetensors --set "$bad"
		[ "$status" -eq 2 ]
		[ ! -e e.safetensors ]
	done
}

@test "sn-sgd refuses a state file written for another solver" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors \
		--iters 1 --solver adam --lr 0.001 --state s.safetensors
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o b.safetensors \
		--iters 1 --solver sgd --state s.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error s.safetensors
	[[ "$output" == *adam* ]]
	[ ! -e b.safetensors ]
}

@test "sn-sgd refuses a state file for another net" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors \
		--iters 1 --state s.safetensors
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o b.safetensors \
		--iters 1 --state s.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error s.safetensors
	[ ! -e b.safetensors ]
}

@test "sn-sgd refuses a corrupt state file" {
	sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o a.safetensors \
		--iters 1 --state s.safetensors
	size=$(stat -c %s s.safetensors)
	printf '\x01' | dd of=s.safetensors bs=1 seek=$((size - 3)) conv=notrunc status=none
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o b.safetensors \
		--iters 1 --state s.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error s.safetensors
	head -c 100 "$D/train.safetensors" >cut.safetensors
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o b.safetensors \
		--iters 1 --state cut.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error cut.safetensors
	[ ! -e b.safetensors ]
}

@test "sn-sgd names a missing shard and exits 1" {
	run sn-sgd -w "$D/mlp.safetensors" -d missing.safetensors -o out.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error missing.safetensors
	[ ! -e out.safetensors ]
}

@test "sn-sgd names a corrupt weights file and exits 1" {
	head -c 200 "$D/mlp.safetensors" >w.safetensors
	run sn-sgd -w w.safetensors -d "$D/train.safetensors" -o out.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error w.safetensors
	run sn-sgd -w "$D/train.safetensors" -d "$D/train.safetensors" -o out.safetensors
	[ "$status" -eq 1 ]
	[ ! -e out.safetensors ]
}

@test "sn-sgd refuses a shard whose example shape differs from the net input, naming both" {
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/rgb.safetensors" -o out.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error "$D/rgb.safetensors"
	[[ "$output" == *"example shape [3,32,32] does not match net input [1,28,28]" ]]
	[ ! -e out.safetensors ]
}

@test "sn-sgd refuses labels beyond the net's classes" {
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/twelve.safetensors" -o out.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error "$D/twelve.safetensors"
	[[ "$output" == *label* ]]
	[ ! -e out.safetensors ]
}

@test "sn-sgd --lr 1e9 diverges: exit 3, no weights, no state, step and layer named" {
	run sn-sgd -w "$D/lenet.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 50 --lr 1e9 --state s.safetensors
	[ "$status" -eq 3 ]
	assert_one_line_error "$D/lenet.safetensors"
	[[ "$output" =~ step\ [0-9]+:\ non-finite ]]
	[[ "$output" == *layer* ]]
	[ ! -e out.safetensors ]
	[ ! -e s.safetensors ]
	[ -z "$(ls -A)" ]
}

@test "sn-sgd with an unwritable output exits 1 and leaves nothing behind" {
	touch file
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o file/out.safetensors \
		--iters 1
	[ "$status" -eq 1 ]
	assert_one_line_error file/out.safetensors
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
		--iters 1 --state file/state.safetensors
	[ "$status" -eq 1 ]
	[ "$(ls -A)" = file ]
}

@test "sn-sgd rejects bad option values with exit 2" {
	w=(-w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors)
	for bad in "--iters 0" "--iters x" "--batch 0" "--threads 0" "--lr abc" \
		"--time-limit -1" "--solver nosuch" "--lr -1" "--seed -3" "--bogus" "extra"; do
		# shellcheck disable=SC2086
		run sn-sgd "${w[@]}" $bad
		echo "$bad -> $status: $output"
		[ "$status" -eq 2 ]
	done
	run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors"
	[ "$status" -eq 2 ]
	run sn-sgd "${w[@]/out.safetensors/-}" --json
	[ "$status" -eq 2 ]
	[ ! -e out.safetensors ]
}

# ---- a failed command leaves everything as it was ----------------------------

# train OUT STATE [ARGS...]: one short run of the MLP on the training shard
train() {
	local out=$1 st=$2; shift 2
	sn-sgd -q -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o "$out" --state "$st" \
		--iters 2 "$@"
}

# unchanged FILE...: each FILE still equals FILE.before, and no temporary is left
unchanged() {
	for f in "$@"; do cmp "$f" "$f.before" || { echo "$f changed"; return 1; }; done
	[ -z "$(find . -name '*.tmp*')" ] || { find . -name '*.tmp*'; return 1; }
}

@test "sn-sgd that cannot create its state leaves the existing weights as they were" {
	train out.safetensors s.safetensors
	cp out.safetensors out.safetensors.before
	run train out.safetensors /nonexistent-dir/state.safetensors
	[ "$status" -eq 1 ]
	[[ "$output" == *"/nonexistent-dir/state.safetensors: "* ]]
	unchanged out.safetensors
	cp s.safetensors s.safetensors.before
	run train /nonexistent-dir/out.safetensors s.safetensors
	[ "$status" -eq 1 ]
	unchanged s.safetensors
}

@test "sn-sgd commits weights and state together: a failed write, fsync or rename changes neither" {
	train out.safetensors s.safetensors
	cp out.safetensors out.safetensors.before
	cp s.safetensors s.safetensors.before
	for fault in rename,renameat,renameat2:error=EIO:when=1 \
		rename,renameat,renameat2:error=EIO:when=2 fsync:error=ENOSPC:when=1 \
		fsync:error=ENOSPC:when=2 write:error=ENOSPC:when=1+ write:error=ENOSPC:when=4+ \
		write:error=ENOSPC:when=9+ write:error=ENOSPC:when=13+; do
		run strace -f -o /dev/null -e inject="$fault" \
			sn-sgd -q -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
			--state s.safetensors --iters 2
		[ "$status" -eq 1 ] || { echo "$fault: status $status: $output"; return 1; }
		unchanged out.safetensors s.safetensors || { echo "after $fault"; return 1; }
	done
}

@test "SIGTERM or SIGINT while sn-sgd writes leaves no temporary file and the old outputs" {
	train out.safetensors s.safetensors
	cp out.safetensors out.safetensors.before
	cp s.safetensors s.safetensors.before
	for fault in fsync:signal=SIGTERM:when=1 fsync:signal=SIGINT:when=2 \
		write:signal=SIGTERM:when=3 write:signal=SIGINT:when=10; do
		run strace -f -o /dev/null -e inject="$fault" \
			sn-sgd -q -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
			--state s.safetensors --iters 2
		[ "$status" -gt 128 ] || { echo "$fault: status $status: $output"; return 1; }
		unchanged out.safetensors s.safetensors || { echo "after $fault"; return 1; }
	done
}

@test "a signal during the final renames still leaves weights and state that belong together" {
	train out.safetensors s.safetensors --seed 3
	run strace -f -o /dev/null -e inject=rename,renameat,renameat2:signal=SIGTERM:when=1 \
		sn-sgd -q -w out.safetensors -d "$D/train.safetensors" -o out2.safetensors \
		--state s.safetensors --iters 3
	[ "$status" -eq 143 ]
	[ -z "$(find . -name '*.tmp*')" ]
	# both committed: the weights' steps are the state's step
	[ "$(meta out2.safetensors steps)" = 5 ]
	[ "$(meta s.safetensors step)" = 5 ]
}

@test "sn-sgd refuses an output that is an input or the other output, exit 2, touching nothing" {
	train out.safetensors s.safetensors
	cp "$D/train.safetensors" data.safetensors
	for f in out.safetensors s.safetensors data.safetensors; do cp "$f" "$f.before"; done
	ln -s out.safetensors link.safetensors
	ln s.safetensors hard.safetensors
	for args in "-w out.safetensors -d data.safetensors -o out.safetensors" \
		"-w out.safetensors -d data.safetensors -o data.safetensors" \
		"-w out.safetensors -d data.safetensors -o x.safetensors --state data.safetensors" \
		"-w out.safetensors -d data.safetensors -o s.safetensors --state s.safetensors" \
		"-w out.safetensors -d data.safetensors -o ./s.safetensors --state s.safetensors" \
		"-w out.safetensors -d data.safetensors -o new.safetensors --state ./new.safetensors" \
		"-w out.safetensors -d data.safetensors -o link.safetensors" \
		"-w out.safetensors -d data.safetensors -o hard.safetensors --state s.safetensors" \
		"-w out.safetensors -d data.safetensors -o x.safetensors --state out.safetensors" \
		"-w out.safetensors -d data.safetensors -o - --state -"; do
		run sn-sgd -q $args --iters 1
		[ "$status" -eq 2 ] || { echo "$args: status $status: $output"; return 1; }
		[[ "$output" == "sn-sgd: "*@(same file|standard output)* ]] || { echo "$args: $output"; return 1; }
		unchanged out.safetensors s.safetensors data.safetensors
		[ ! -e new.safetensors ] && [ ! -e x.safetensors ]
	done
}

@test "sn-sgd --json on a full standard output exits 1 and says so" {
	run bash -c 'sn-sgd -q -w "$D/mlp.safetensors" -d "$D/train.safetensors" \
		-o out.safetensors --iters 1 --json >/dev/full'
	[ "$status" -eq 1 ]
	[ "$output" = "sn-sgd: standard output: No space left on device" ]
}

# setmeta FILE KEY VALUE: rewrite one metadata entry (the crc32 covers the data only)
setmeta() {
	"$PY" - "$@" <<'PY'
import json, struct, sys
path, key, value = sys.argv[1:]
b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h["__metadata__"][key] = value
t = json.dumps(h).encode(); t += b" " * (-len(t) % 8)
open(path, "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PY
}

@test "sn-sgd refuses step counters that would overflow, naming the file, and writes nothing" {
	cp "$D/mlp.safetensors" w.safetensors
	setmeta w.safetensors steps 9223372036854775805
	run sn-sgd -w w.safetensors -d "$D/train.safetensors" -o out.safetensors --iters 5
	[ "$status" -eq 1 ]
	assert_one_line_error w.safetensors
	[[ "$output" == *steps* ]]
	[ ! -e out.safetensors ]
	train a.safetensors s.safetensors
	for kv in step=9223372036854775807 epoch=9223372036854775807 step=-1 epoch=1e3 step=; do
		cp s.safetensors t.safetensors
		setmeta t.safetensors "${kv%%=*}" "${kv#*=}"
		# the cursor at the last example: the first batch starts the next epoch
		setmeta t.safetensors cursor 1999
		run sn-sgd -w "$D/mlp.safetensors" -d "$D/train.safetensors" -o out.safetensors \
			--state t.safetensors --iters 2
		[ "$status" -eq 1 ] || { echo "$kv: status $status: $output"; return 1; }
		assert_one_line_error t.safetensors
		[[ "$output" == *"${kv%%=*}"* ]] || { echo "$kv: $output"; return 1; }
		[ ! -e out.safetensors ]
	done
}
