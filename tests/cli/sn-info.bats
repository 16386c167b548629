#!/usr/bin/env bats
# sn-info: describe, verify and compare safetensors files, ours and foreign.
load helper

setup_file() {
	export FIX=$BATS_FILE_TMPDIR/fixtures
	mkdir -p "$FIX"
	"$PY" "$BATS_TEST_DIRNAME/st_fixtures.py" "$FIX"
}

need_sn_init() {
	command -v sn-init >/dev/null || skip "sn-init not built yet"
}

@test "sn-info --help prints the usage and exits 0" {
	run sn-info --help
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "Usage: sn-info "* ]]
	[[ "$output" == *"--verify"* && "$output" == *"--diff"* && "$output" == *"--json"* ]]
}

@test "sn-info --version names the package" {
	run sn-info --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-info (sn) "* ]]
}

@test "usage errors exit 2: no file, an unknown option, --diff with one file, a bad --tol" {
	run sn-info
	[ "$status" -eq 2 ]
	run sn-info --bogus "$FIX/good.safetensors"
	[ "$status" -eq 2 ]
	run sn-info --diff "$FIX/good.safetensors"
	[ "$status" -eq 2 ]
	run sn-info --diff --tol abc "$FIX/good.safetensors" "$FIX/good.safetensors"
	[ "$status" -eq 2 ]
	run sn-info --diff --tol -1 "$FIX/good.safetensors" "$FIX/good.safetensors"
	[ "$status" -eq 2 ]
}

@test "a file written by numpy and json alone is reported with numpy's statistics" {
	run sn-info --json "$FIX/foreign.safetensors"
	[ "$status" -eq 0 ]
	echo "$output" >report.json
	"$PY" - "$FIX/foreign.stats" <<'EOF'
import json, sys
doc = json.load(open("report.json"))
assert len(doc) == 1 and doc[0]["format"] == "safetensors (foreign)", doc
got = {t["name"]: t for t in doc[0]["tensors"]}
assert list(got) == ["w", "counts", "pixels", "scale", "half", "none"], list(got)
for line in open(sys.argv[1]):
    name, *vals = line.split()
    mn, mx, mean, std, l2, n = map(float, vals)
    t = got[name]
    assert t["elements"] == int(n), (name, t)
    for key, want in zip(("min", "max", "mean", "std", "l2"), (mn, mx, mean, std, l2)):
        assert abs(t[key] - want) <= 1e-9 * max(1, abs(want)), (name, key, t[key], want)
assert got["scale"]["shape"] == [] and got["none"]["shape"] == [0, 3]
assert got["half"]["dtype"] == "F16" and got["pixels"]["bytes"] == 4
EOF
}

@test "the text report lists each tensor with dtype, shape and statistics" {
	run sn-info "$FIX/foreign.safetensors"
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "$FIX/foreign.safetensors: safetensors (foreign), 6 tensors, 86 data bytes"* ]]
	[[ "$output" == *$'\n'"pixels "*" U8 "*"[2,2] "*" 255 "* ]]
	[[ "$output" == *$'\n'"scale "*" F64 "*"[] "* ]]
}

@test "sn-info reads standard input and gzip files" {
	run sn-info --json - <"$FIX/good.safetensors"
	[ "$status" -eq 0 ]
	[[ "$output" == *'"file": "-"'* && "$output" == *'"crc32"'* ]]
	gzip -c "$FIX/good.safetensors" >good.safetensors.gz
	run sn-info good.safetensors.gz
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "good.safetensors.gz: test, 6 tensors, 86 data bytes"* ]]
	run sn-info --verify - <"$FIX/good.safetensors"
	[ "$output" = "-: OK" ]
	head -c 100 good.safetensors.gz >cut.safetensors.gz
	run sn-info cut.safetensors.gz
	[ "$status" -eq 1 ]
	assert_one_line_error cut.safetensors.gz
	[[ "$output" == *"truncated"* ]]
}

@test "--verify prints FILE: OK for a good file and the crc32 error for a flipped data byte" {
	run sn-info --verify "$FIX/good.safetensors" "$FIX/foreign.safetensors"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "$FIX/good.safetensors: OK" ]
	[ "${lines[1]}" = "$FIX/foreign.safetensors: OK" ]
	cp "$FIX/good.safetensors" flipped.safetensors
	"$PY" -c 'b = bytearray(open("flipped.safetensors", "rb").read()); b[-10] ^= 1; open("flipped.safetensors", "wb").write(b)'
	run sn-info --verify flipped.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error flipped.safetensors
	[[ "$output" == *"crc32 mismatch"* ]]
	run sn-info -q --verify flipped.safetensors
	[ "$status" -eq 1 ]
	[ -z "$output" ]
}

@test "corrupt files each fail with exit 1 and one line naming the file" {
	for f in "$FIX"/bad-*.safetensors; do
		run sn-info "$f"
		[ "$status" -eq 1 ] || { echo "$f: status $status: $output"; false; }
		assert_one_line_error "$f"
		run sn-info --verify "$f"
		[ "$status" -eq 1 ] || { echo "$f: --verify status $status"; false; }
		assert_one_line_error "$f"
	done
}

@test "error details say what is wrong: truncated, header length, JSON, dtype, offsets, crc32" {
	check() {
		run sn-info "$FIX/bad-$1.safetensors"
		[[ "$output" == *"$2"* ]] || { echo "bad-$1: '$output' lacks '$2'"; return 1; }
	}
	check trunc-in-length "truncated"
	check trunc-in-header "truncated in the header"
	check trunc-in-data "truncated in the data"
	check header-past-eof "truncated"
	check header-2p63 "header length 9223372036854775808"
	check bad-json "header JSON"
	check duplicate-key "duplicate"
	check unknown-dtype 'unknown dtype "F33"'
	check shape-overflow "overflows"
	check offsets-out-of-range "need 64"
	check offsets-overlap "overlap"
	check offsets-gap "gap"
	check offsets-wrong-length "need 8"
	check crc-mismatch "crc32 mismatch"
	check metadata-not-string '"round" is not a string'
	check not-an-object "not an object"
}

@test "an empty file, a directory and a missing file are clear errors" {
	: >empty.safetensors
	mkdir adir
	run sn-info empty.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error empty.safetensors
	[[ "$output" == *"empty file"* ]]
	run sn-info adir
	[ "$status" -eq 1 ]
	assert_one_line_error adir
	[[ "$output" == *"directory"* ]]
	run sn-info missing.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error missing.safetensors
	[[ "$output" == *"No such file"* ]]
}

@test "with several files, a bad one fails the run after the rest are reported" {
	run sn-info --verify "$FIX/good.safetensors" missing.safetensors "$FIX/foreign.safetensors"
	[ "$status" -eq 1 ]
	[ "${lines[0]}" = "$FIX/good.safetensors: OK" ]
	[[ "${lines[1]}" == "sn-info: missing.safetensors: "* ]]
	[ "${lines[2]}" = "$FIX/foreign.safetensors: OK" ]
}

@test "--json emits one document that python's json.tool accepts, exact integers included" {
	run sn-info --json "$FIX/good.safetensors" "$FIX/foreign.safetensors"
	[ "$status" -eq 0 ]
	echo "$output" | "$PY" -m json.tool >/dev/null
	echo "$output" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==2; assert d[0]["data_bytes"]==86 and isinstance(d[0]["data_bytes"], int); assert d[0]["metadata"]["format"]=="test"'
	run sn-info --json --verify "$FIX/good.safetensors" "$FIX/bad-offsets-gap.safetensors"
	[ "$status" -eq 1 ]
	printf '%s\n' "${lines[@]}" | grep -v '^sn-info: ' | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert d[0]["ok"] is True and d[1]["ok"] is False and "gap" in d[1]["error"], d'
}

@test "--diff of a file with itself is identical and exits 0" {
	run sn-info --diff "$FIX/good.safetensors" "$FIX/good.safetensors"
	[ "$status" -eq 0 ]
	[[ "${lines[-1]}" == "identical (tolerance 0)" ]]
	run sn-info -q --diff "$FIX/good.safetensors" "$FIX/foreign.safetensors"
	[ "$status" -eq 0 ]   # same tensors; metadata differences do not count
	[ -z "$output" ]
}

@test "--diff reports the max abs and relative L2 difference, missing tensors and shape changes" {
	"$PY" - <<'EOF'
import json, numpy as np
def write(path, ts):
    h, d = {}, b""
    for name, a in ts.items():
        h[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(d), len(d) + a.nbytes]}
        d += a.astype("<f4").tobytes()
    hb = json.dumps(h).encode()
    open(path, "wb").write(len(hb).to_bytes(8, "little") + hb + d)
a = np.array([3, 4, 0, 0], dtype="f4")
write("a.safetensors", {"x": a, "y": np.ones(2, "f4"), "z": np.ones(4, "f4")})
write("b.safetensors", {"x": a + np.array([0, 0, 0.5, 0], "f4"), "y": np.ones(3, "f4"), "extra": a})
write("c.safetensors", {"x": a + np.array([0, 0, 0.5, 0], "f4"), "y": np.ones(2, "f4"), "z": np.ones(4, "f4")})
EOF
	run sn-info --diff a.safetensors b.safetensors
	[ "$status" -eq 1 ]
	[[ "$output" == *$'\n'"x "*"differs "*"0.5 "*"0.1"* ]]   # 0.5 / ||(3,4)|| = 0.1
	[[ "$output" == *$'\n'"y "*"mismatch "*"F32[2] vs F32[3]"* ]]
	[[ "$output" == *$'\n'"z "*"only in A"* ]]
	[[ "$output" == *$'\n'"extra "*"only in B"* ]]
	run sn-info --diff --json a.safetensors b.safetensors
	[ "$status" -eq 1 ]
	echo "$output" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); x=d["tensors"][0]; assert not d["identical"] and d["differences"]==4 and x["name"]=="x" and x["max_abs"]==0.5 and abs(x["rel_l2"]-0.1)<1e-12, d'
}

@test "--diff --tol accepts differences up to the tolerance" {
	"$PY" - <<'EOF'
import json, numpy as np
for path, v in (("a.safetensors", 1.0), ("b.safetensors", 1.001)):
    d = np.full(3, v, "<f4").tobytes()
    hb = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}).encode()
    open(path, "wb").write(len(hb).to_bytes(8, "little") + hb + d)
EOF
	run sn-info --diff a.safetensors b.safetensors
	[ "$status" -eq 1 ]
	run sn-info --diff --tol 0.01 a.safetensors b.safetensors
	[ "$status" -eq 0 ]
	[[ "$output" == *"within tol"* ]]
	run sn-info --diff --tol 0.0001 a.safetensors b.safetensors
	[ "$status" -eq 1 ]
	run sn-info --diff a.safetensors missing.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error missing.safetensors
}

@test "a weight file shows its net: layers, output shapes, 431,080 parameters for LeNet, FLOPs" {
	need_sn_init
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	run sn-info w.safetensors
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "w.safetensors: sn.weights.v1, 8 tensors,"* ]]
	[[ "$output" == *$'\n'"  conv1 "*" conv "*"[20,24,24] "*" 520 "* ]]
	[[ "$output" == *$'\n'"  fc1 "*" dense "*"[500] "*" 400,500 "* ]]
	[[ "$output" == *"parameters: 431,080"* ]]
	[[ "$output" == *"FLOPs per example: forward "* ]]
	[[ "$output" == *"  net "*"("*" lines)"* ]]     # the YAML, abbreviated
	run sn-info -v w.safetensors
	[[ "$output" == *"      name: lenet"* ]]       # and in full
	run sn-info --json w.safetensors
	echo "$output" | "$PY" -c 'import json,sys; n=json.load(sys.stdin)[0]["net"]; assert n["parameters"]==431080 and n["layers"][0]["output"]==[20,24,24], n'
	run sn-info --verify w.safetensors
	[ "$output" = "w.safetensors: OK" ]
}

@test "files sn-info reads are what numpy reads: our header is padded JSON with a zlib crc32" {
	need_sn_init
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	"$PY" - <<'EOF'
import json, zlib
raw = open("w.safetensors", "rb").read()
n = int.from_bytes(raw[:8], "little")
assert (8 + n) % 8 == 0
h = json.loads(raw[8:8 + n])
assert list(h)[0] == "__metadata__"
assert h["__metadata__"]["crc32"] == "%08x" % zlib.crc32(raw[8 + n:])
EOF
}

@test "a weight file whose tensors do not match its net fails --verify" {
	need_sn_init
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	"$PY" - <<'EOF'
import json, zlib
raw = open("w.safetensors", "rb").read()
n = int.from_bytes(raw[:8], "little")
h = json.loads(raw[8:8 + n])
h["__metadata__"]["net"] = h["__metadata__"]["net"].replace("units: 500", "units: 400")
hb = json.dumps(h).encode()
open("odd.safetensors", "wb").write(len(hb).to_bytes(8, "little") + hb + raw[8 + n:])
EOF
	run sn-info --verify odd.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error odd.safetensors
}

@test "a data file shows its records, class histogram and normalisation" {
	command -v sn-shard >/dev/null || skip "sn-shard not built yet"
	sn-shard "$FMNIST/t10k-images-idx3-ubyte.gz" -l "$FMNIST/t10k-labels-idx1-ubyte.gz" \
		-k 1 --limit 300 -o shards 2>/dev/null
	f=$(ls shards/*.safetensors*)
	run sn-info "$f"
	[ "$status" -eq 0 ]
	[[ "$output" == *"data: 300 records, 10 classes"* ]]
	hist=$(printf '%s\n' "${lines[@]}" | sed -n 's/^  class histogram: //p')
	total=0
	for kv in $hist; do total=$((total + ${kv#*:})); done
	[ "$total" -eq 300 ]
	[[ "$output" == *"normalisation: v/255, then (v - mean[c]) / std[c]"* ]]
	run sn-info --verify "$f"
	[ "$status" -eq 0 ]
}

@test "--verify checks a data file's labels against its classes" {
	"$PY" - <<'EOF2'
import json, zlib, numpy as np
def write(path, y):
    x = np.arange(12, dtype="<f4").reshape(4, 3)
    y = np.array(y, dtype="<i4")
    data = x.tobytes() + y.tobytes()
    meta = {"format": "sn.data.v1", "classes": "3", "mean": "[0]", "std": "[1]",
            "crc32": "%08x" % zlib.crc32(data)}
    h = {"__metadata__": meta,
         "x": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]},
         "y": {"dtype": "I32", "shape": [4], "data_offsets": [48, 64]}}
    hb = json.dumps(h).encode()
    open(path, "wb").write(len(hb).to_bytes(8, "little") + hb + data)
write("ok.safetensors", [0, 1, 2, 2])
write("bad.safetensors", [0, 1, 7, 2])
EOF2
	run sn-info ok.safetensors
	[ "$status" -eq 0 ]
	[[ "$output" == *"data: 4 records, 3 classes"* ]]
	[[ "$output" == *"class histogram: 0:1 1:1 2:2"* ]]
	[[ "$output" == *"normalisation: v, then"* ]]
	run sn-info --verify ok.safetensors
	[ "$output" = "ok.safetensors: OK" ]
	run sn-info bad.safetensors
	[ "$status" -eq 0 ]
	[[ "$output" == *"out-of-range:1"* ]]
	run sn-info --verify bad.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error bad.safetensors
}

@test "a weight file whose net YAML does not parse is reported, then fails with the YAML position" {
	need_sn_init
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	"$PY" - <<'EOF2'
import json
raw = open("w.safetensors", "rb").read()
n = int.from_bytes(raw[:8], "little")
h = json.loads(raw[8:8 + n])
h["__metadata__"]["net"] = "name: x\ninput: [1]\nlayers: [bogus]\n"
hb = json.dumps(h).encode()
open("badnet.safetensors", "wb").write(len(hb).to_bytes(8, "little") + hb + raw[8 + n:])
EOF2
	run sn-info badnet.safetensors
	[ "$status" -eq 1 ]
	[[ "${lines[0]}" == "badnet.safetensors: sn.weights.v1, 8 tensors,"* ]]
	[[ "${lines[-1]}" == 'sn-info: badnet.safetensors: net:3:10: unknown layer kind "bogus"' ]]
	run sn-info --json badnet.safetensors
	[ "$status" -eq 1 ]
	echo "$output" | grep -v '^sn-info: ' | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==1 and "bogus" in d[0]["error"], d'
}

@test "every report on a full standard output exits 1 and says so" {
	sn-init "$NETS/mlp.yaml" -o w.safetensors --seed 1
	sn-init "$NETS/mlp.yaml" -o v.safetensors --seed 2
	for args in "w.safetensors" "--json w.safetensors" "--verify w.safetensors" \
		"--diff w.safetensors v.safetensors" "--diff --json w.safetensors w.safetensors"; do
		run bash -c "sn-info $args >/dev/full"
		[ "$status" -eq 1 ] || { echo "$args: status $status: $output"; return 1; }
		[[ "$output" == *"sn-info: standard output: No space left on device" ]] ||
			{ echo "$args: $output"; return 1; }
	done
}

@test "the net summary shows the inputs of each layer that does not read the one before" {
	sn-init "$NETS/resnet.yaml" -o r.safetensors
	run sn-info r.safetensors
	[ "$status" -eq 0 ]
	[[ "$output" == *"b1_add "*"add "*"<- b1_bn2, stem_relu"* ]]
	[[ "$output" == *"b2_short "*"conv "*"<- b1_out"* ]]
	# a chain's layers show no inputs
	run grep -c -- '<-' <<<"$output"
	[ "$output" -eq 5 ]
	sn-info --json r.safetensors >j.json
	"$PY" -c 'import json,sys; n=json.load(open("j.json"))[0]["net"]["layers"]; d={l["name"]: l.get("inputs") for l in n}; assert d["b2_add"] == ["b2_bn2", "b2_short_bn"] and d["b1_conv1"] is None, d'
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

@test "--verify checks the counters of weights, solver state and outer state files" {
	sn-init "$NETS/mlp.yaml" -o w.safetensors
	"$PY" "$BATS_TEST_DIRNAME/torch_reference.py" data d.safetensors --random 40 --shape 1,28,28
	sn-sgd -w w.safetensors -d d.safetensors -o w1.safetensors --state s.safetensors --iters 1
	sn-average --base w.safetensors --outer-lr 0.5 --outer-state o.safetensors w1.safetensors \
		-o w2.safetensors
	run sn-info --verify w1.safetensors s.safetensors o.safetensors
	[ "$status" -eq 0 ]
	for case in w1:steps:abc w1:examples:-100 w1:round:9223372036854775808 s:epoch:-1 \
		s:step:1.5 s:cursor: s:seed:x o:round:abc o:round:; do
		IFS=: read -r f key value <<<"$case"
		cp "$f.safetensors" bad.safetensors
		setmeta bad.safetensors "$key" "$value"
		run sn-info --verify bad.safetensors
		[ "$status" -eq 1 ] || { echo "$case: status $status: $output"; return 1; }
		assert_one_line_error bad.safetensors
		[[ "$output" == *"$key"* ]] || { echo "$case: $output"; return 1; }
	done
}
