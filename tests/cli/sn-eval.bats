#!/usr/bin/env bats
# sn-eval: loss, accuracy, top-k, per-class accuracy, confusion matrix and
# per-example predictions of a weights file on data files.
load helper

setup_file() {
	export REF=$BATS_TEST_DIRNAME/torch_reference.py
	export D=$BATS_FILE_TMPDIR
	"$PY" "$REF" data "$D/train.safetensors" --fmnist train --limit 2000
	"$PY" "$REF" data "$D/test.safetensors" --fmnist t10k --limit 300 \
		--stats-from "$D/train.safetensors"
	"$PY" "$REF" data "$D/more.safetensors" --fmnist t10k --limit 100 --offset 300 \
		--stats-from "$D/train.safetensors"
	"$PY" "$REF" data "$D/rgb.safetensors" --random 20 --shape 3,32,32
	"$PY" "$REF" data "$D/twelve.safetensors" --random 50 --shape 1,28,28 --classes 12
	sn-init "$NETS/mlp.yaml" -o "$D/init.safetensors" --seed 1
	sn-sgd -w "$D/init.safetensors" -d "$D/train.safetensors" -o "$D/mlp.safetensors" \
		--iters 150
}

check_json() {   # check_json FILE PYTHON-ASSERTIONS (j is the report)
	"$PY" -c "import json; j = json.load(open('$1')); $2"
}

@test "sn-eval --help prints the usage on stdout and exits 0" {
	run sn-eval --help
	[ "$status" -eq 0 ]
	[[ "$output" == Usage:\ sn-eval* ]]
	[[ "$output" == *--predictions* ]]
}

@test "sn-eval --version prints the version" {
	run sn-eval --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-eval (sn) "* ]]
}

@test "sn-eval prints examples, loss, accuracy and top-5 accuracy" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors"
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" =~ ^examples\ +300$ ]]
	[[ "${lines[1]}" =~ ^loss\ +[0-9.]+$ ]]
	[[ "${lines[2]}" =~ ^accuracy\ +[0-9.]+%\ \([0-9]+/300\)$ ]]
	[[ "${lines[3]}" =~ ^top-5\ +[0-9.]+%$ ]]
}

@test "sn-eval --json reports totals, per-class accuracy and a confusion matrix summing to N" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json >r.json
	check_json r.json '
n = j["examples"]; c = j["confusion"]
assert n == 300 and j["top_k"] == 5
assert sum(map(sum, c)) == n and len(c) == 10 and all(len(r) == 10 for r in c)
assert sum(c[i][i] for i in range(10)) == j["correct"]
assert abs(j["accuracy"] - j["correct"] / n) < 1e-9
assert j["correct_top_k"] >= j["correct"]
assert 0 < j["loss"] < 3
pc = j["per_class"]
assert [p["class"] for p in pc] == list(range(10)) and pc[9]["name"] == "Ankle boot"
assert sum(p["examples"] for p in pc) == n
assert all(p["examples"] == sum(c[p["class"]]) for p in pc)
assert j["data"][0].endswith("test.safetensors")'
}

@test "sn-eval of trained weights beats chance by far; of initial weights it does not" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json >trained.json
	sn-eval -w "$D/init.safetensors" -d "$D/test.safetensors" --json >init.json
	check_json trained.json 'assert j["accuracy"] > 0.6, j["accuracy"]'
	check_json init.json 'assert j["accuracy"] < 0.4, j["accuracy"]'
}

@test "sn-eval adds up several data files" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" -d "$D/more.safetensors" \
		--json >both.json
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json >a.json
	sn-eval -w "$D/mlp.safetensors" -d "$D/more.safetensors" --json >b.json
	"$PY" - <<-'EOF'
	import json
	ab, a, b = (json.load(open(f)) for f in ("both.json", "a.json", "b.json"))
	assert ab["examples"] == 400 and ab["correct"] == a["correct"] + b["correct"]
	assert abs(ab["loss"] * 400 - a["loss"] * 300 - b["loss"] * 100) < 1e-3
	assert len(ab["data"]) == 2
	EOF
}

@test "sn-eval writes the same report and predictions bit for bit whatever the --threads" {
	sn-init "$NETS/lenet.yaml" -o lenet.safetensors --seed 2
	for t in 1 2 3; do
		sn-eval -w lenet.safetensors -d "$D/test.safetensors" --batch 101 --threads $t \
			--json -p p$t.txt >r$t.json
	done
	cmp p1.txt p2.txt && cmp p1.txt p3.txt
	cmp r1.json r2.json && cmp r1.json r3.json
}

@test "sn-eval gives the same totals whatever the --batch and --threads" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json >a.json
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json --batch 7 --threads 2 >b.json
	"$PY" - <<-'EOF'
	import json
	a, b = json.load(open("a.json")), json.load(open("b.json"))
	assert a["confusion"] == b["confusion"] and a["correct_top_k"] == b["correct_top_k"]
	assert abs(a["loss"] - b["loss"]) < 1e-5
	EOF
}

@test "sn-eval in passes cut to fit the cache predicts what small batches predict" {
	# lenet: 91 examples fill the 4 MiB, so --batch 1000 runs passes of 91
	sn-init "$NETS/lenet.yaml" -o lenet.safetensors --seed 3
	sn-eval -w lenet.safetensors -d "$D/test.safetensors" --batch 1000 --json -p big.txt >big.json
	sn-eval -w lenet.safetensors -d "$D/test.safetensors" --batch 13 --json -p small.txt >small.json
	# the same classes; probabilities may differ in the last digit, as the
	# GEMMs' rounding depends on how many examples they take at once
	cmp <(cut -f1-3 big.txt) <(cut -f1-3 small.txt)
	"$PY" - <<-'EOF'
	import json
	a, b = json.load(open("big.json")), json.load(open("small.json"))
	assert a["examples"] == b["examples"] > 91 and a["confusion"] == b["confusion"]
	assert abs(a["loss"] - b["loss"]) < 1e-5
	EOF
}

@test "sn-eval --top-k 1 equals top-1 accuracy and --top-k 10 is always right" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json --top-k 1 >one.json
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --json --top-k 10 >all.json
	check_json one.json 'assert j["correct_top_k"] == j["correct"] and j["top_k"] == 1'
	check_json all.json 'assert j["top_k_accuracy"] == 1.0 and j["top_k"] == 10'
}

@test "sn-eval --per-class lists each class with its name" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --per-class
	[ "$status" -eq 0 ]
	[[ "$output" == *class*name*examples*correct*accuracy* ]]
	[[ "$output" == *"9  Ankle boot  "* ]]
	[ "$(grep -cE '^ +[0-9]+  [A-Z]' <<<"$output")" -eq 10 ]
}

@test "sn-eval --confusion prints a 10x10 matrix" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --confusion
	[ "$status" -eq 0 ]
	[ "$(grep -cE '^ +[0-9]+( +[0-9]+){10}$' <<<"$output")" -eq 10 ]
	[[ "$output" == *"label\pred "* ]]
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --confusion --tsv >r.tsv
	"$PY" - <<-'EOF'
	blocks = open("r.tsv").read().strip().split("\n\n")
	head, rows = blocks[1].split("\n")[0], blocks[1].split("\n")[1:]
	assert head.split("\t")[1:] == [str(i) for i in range(10)], head
	assert len(rows) == 10
	assert sum(int(v) for r in rows for v in r.split("\t")[1:]) == 300
	EOF
}

@test "sn-eval --tsv prints a header and one row" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --tsv
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "$(printf 'examples\tloss\taccuracy\ttop_k\ttop_k_accuracy')" ]
	[[ "${lines[1]}" == 300$'\t'* ]]
	[ "${#lines[@]}" -eq 2 ]
}

@test "sn-eval --predictions writes one line per example after a header" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" -d "$D/more.safetensors" \
		--predictions p.tsv --json >r.json
	[ "$(wc -l <p.tsv)" -eq 401 ]
	[ "$(head -1 p.tsv)" = "$(printf 'index\tlabel\tpredicted\tprobability')" ]
	"$PY" - <<-'EOF'
	import json
	j = json.load(open("r.json"))
	rows = [l.split("\t") for l in open("p.tsv").read().split("\n")[1:-1]]
	assert [int(r[0]) for r in rows] == list(range(400))
	assert sum(r[1] == r[2] for r in rows) == j["correct"]
	assert all(0.1 <= float(r[3]) <= 1 for r in rows)
	EOF
	[ -z "$(ls -A | grep -v -e '^p.tsv$' -e '^r.json$')" ]
}

@test "sn-eval --predictions - writes predictions on stdout and the report on stderr" {
	sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --predictions - \
		>p.tsv 2>report.txt
	[ "$(wc -l <p.tsv)" -eq 301 ]
	grep -q '^accuracy' report.txt
}

@test "sn-eval names a missing data file and exits 1" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" -d missing.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error missing.safetensors
}

@test "sn-eval names a corrupt weights file and exits 1" {
	head -c 300 "$D/mlp.safetensors" >w.safetensors
	run sn-eval -w w.safetensors -d "$D/test.safetensors"
	[ "$status" -eq 1 ]
	assert_one_line_error w.safetensors
}

@test "sn-eval refuses data of another shape, naming both shapes" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/rgb.safetensors"
	[ "$status" -eq 1 ]
	assert_one_line_error "$D/rgb.safetensors"
	[[ "$output" == *"[3,32,32]"*"[1,28,28]"* ]]
}

@test "sn-eval refuses labels beyond the net's classes" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/twelve.safetensors"
	[ "$status" -eq 1 ]
	assert_one_line_error "$D/twelve.safetensors"
}

@test "sn-eval with an unwritable --predictions exits 1 and leaves nothing" {
	touch file
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --predictions file/p.tsv
	[ "$status" -eq 1 ]
	assert_one_line_error file/p.tsv
	[ "$(ls -A)" = file ]
}

@test "sn-eval rejects bad usage with exit 2" {
	w=(-w "$D/mlp.safetensors" -d "$D/test.safetensors")
	for bad in "--batch 0" "--top-k 0" "--top-k x" "--threads 0" "--tsv --json" \
		"--json --predictions -" "--bogus" "extra"; do
		# shellcheck disable=SC2086
		run sn-eval "${w[@]}" $bad
		echo "$bad -> $status: $output"
		[ "$status" -eq 2 ]
	done
	run sn-eval -w "$D/mlp.safetensors"
	[ "$status" -eq 2 ]
	run sn-eval -d "$D/test.safetensors"
	[ "$status" -eq 2 ]
}

@test "sn-eval refuses --predictions naming its weights or a data file, exit 2" {
	cp "$D/mlp.safetensors" w.safetensors
	cp "$D/test.safetensors" t.safetensors
	cp w.safetensors w.before; cp t.safetensors t.before
	for args in "--predictions w.safetensors" "--predictions ./t.safetensors"; do
		run sn-eval -w w.safetensors -d "$D/more.safetensors" -d t.safetensors $args
		[ "$status" -eq 2 ] || { echo "$args: status $status: $output"; return 1; }
		[[ "$output" == "sn-eval: "*"same file"* ]] || { echo "$args: $output"; return 1; }
		cmp w.safetensors w.before && cmp t.safetensors t.before
	done
}

@test "sn-eval on a full standard output exits 1 and says so, in every report format" {
	for fmt in "" --json --tsv "--per-class --confusion"; do
		run bash -c "sn-eval -w '$D/mlp.safetensors' -d '$D/test.safetensors' $fmt >/dev/full"
		[ "$status" -eq 1 ] || { echo "$fmt: status $status: $output"; return 1; }
		[ "$output" = "sn-eval: standard output: No space left on device" ] ||
			{ echo "$fmt: $output"; return 1; }
	done
	run bash -c "sn-eval -w '$D/mlp.safetensors' -d '$D/test.safetensors' --predictions - >/dev/full"
	[ "$status" -eq 1 ]
	[[ "$output" == *"No space left on device"* ]]
}

@test "SIGTERM while sn-eval writes --predictions leaves no temporary file" {
	echo old >p.tsv
	run strace -f -o /dev/null -e inject=fsync:signal=SIGTERM sn-eval -w "$D/mlp.safetensors" \
		-d "$D/test.safetensors" --predictions p.tsv
	[ "$status" -eq 143 ]
	[ "$(cat p.tsv)" = old ]
	[ -z "$(find . -name '*.tmp*')" ]
}

# poison FILE VALUE: set the 10th float of the first tensor to VALUE, crc32 fixed
poison() {
	"$PY" - "$@" <<'PY'
import json, struct, sys, zlib
path, value = sys.argv[1], float(sys.argv[2])
b = bytearray(open(path, "rb").read()); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); m = h.pop("__metadata__")
first = min(h.values(), key=lambda t: t["data_offsets"][0])
at = 8 + n + first["data_offsets"][0] + 4 * 9
b[at:at + 4] = struct.pack("<f", value)
m["crc32"] = "%08x" % zlib.crc32(bytes(b[8 + n:]))
h["__metadata__"] = m
t = json.dumps(h).encode(); t += b" " * (-len(t) % 8)
open(path, "wb").write(struct.pack("<Q", len(t)) + t + bytes(b[8 + n:]))
PY
}

@test "sn-eval and sn-sgd refuse weights holding NaN or Inf, naming the weights file, exit 1" {
	for v in nan inf -inf; do
		cp "$D/mlp.safetensors" bad.safetensors
		poison bad.safetensors "$v"
		run sn-eval -w bad.safetensors -d "$D/test.safetensors"
		[ "$status" -eq 1 ] || { echo "$v: status $status: $output"; return 1; }
		assert_one_line_error bad.safetensors
		[[ "$output" == *"non-finite"* ]]
		run sn-sgd -w bad.safetensors -d "$D/train.safetensors" -o out.safetensors --iters 1
		[ "$status" -eq 1 ] || { echo "$v: status $status: $output"; return 1; }
		assert_one_line_error bad.safetensors
		[ ! -e out.safetensors ]
	done
}

@test "sn-eval --top-k beyond the net's classes is a usage error, not a silent top-10" {
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --top-k 11
	[ "$status" -eq 2 ]
	[[ "${lines[0]}" == "sn-eval: --top-k 11: the net has only 10 classes" ]]
	run sn-eval -w "$D/mlp.safetensors" -d "$D/test.safetensors" --top-k 10 --json
	[ "$status" -eq 0 ]
}
