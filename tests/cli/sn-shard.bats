#!/usr/bin/env bats
# sn-shard: every input format into K shards, checked with a plain
# json+numpy reader on fixtures this suite writes itself.

load helper

# mkidx BASE N [H W CLASSES SEED GZ]: BASE-images and BASE-labels IDX files
# (".gz" appended to both names when GZ is 1).
mkidx() {
	python3 - "$@" <<'PY'
import gzip, struct, sys
import numpy as np
a = sys.argv[1:] + [None] * 7
base, n = a[0], int(a[1])
h, w, classes, seed = int(a[2] or 4), int(a[3] or 3), int(a[4] or 3), int(a[5] or 7)
rng = np.random.default_rng(seed)
x = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
y = rng.integers(0, classes, n, dtype=np.uint8)
op, sfx = (gzip.open, ".gz") if a[6] == "1" else (open, "")
with op(base + "-images" + sfx, "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, h, w) + x.tobytes())
with op(base + "-labels" + sfx, "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + y.tobytes())
PY
}

# mkcifar FILE N [100] [SEED]: CIFAR-10 (or CIFAR-100) binary records
mkcifar() {
	python3 - "$@" <<'PY'
import sys
import numpy as np
a = sys.argv[1:] + [None] * 3
path, n, c100, seed = a[0], int(a[1]), a[2] == "100", int(a[3] or 3)
rng = np.random.default_rng(seed)
lab = np.stack([rng.integers(0, 20, n), rng.integers(0, 100, n)], 1) if c100 \
    else rng.integers(0, 10, (n, 1))
pix = rng.integers(0, 256, (n, 3072))
open(path, "wb").write(np.concatenate([lab, pix], 1).astype(np.uint8).tobytes())
PY
}

# py 'code' FILES...: python with rd(path) -> (tensors, metadata) and
# f = FILES; numpy only (plus gzip for .gz shards).
py() {
	local code=$1; shift
	python3 - "$@" <<PY
import glob, gzip, json, struct, sys
import numpy as np
DT = {"U8": "u1", "F32": "<f4", "I32": "<i4"}
def rd(p):
    b = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); m = h.pop("__metadata__", {})
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
            dtype=DT[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}, m
def pairs(x, y):
    return sorted(zip([r.tobytes() for r in x.reshape(len(x), -1)], y.tolist()))
def shards(d):
    return [rd(p) for p in sorted(glob.glob(d + "/shard-*"))]
def idx(base):
    op = gzip.open if base.endswith(".gz") else open
    im = op(base, "rb").read(); lb = op(base.replace("images", "labels"), "rb").read()
    n, h, w = struct.unpack(">III", im[4:16])
    return np.frombuffer(im[16:], np.uint8).reshape(n, 1, h, w), np.frombuffer(lb[8:], np.uint8)
f = sys.argv[1:]
$code
PY
}

# The directory holds nothing at all: no shard, no staged or spool file.
assert_empty_dir() {
	[ -z "$(ls -A "$1" 2>/dev/null)" ] || { echo "left behind: $(ls -A "$1")"; return 1; }
	assert_no_stage "$1"
}

# No hidden staging directory of DIR left beside it.
assert_no_stage() {
	local left
	left=$(ls -A "$(dirname "$1")" | grep -F ".$(basename "$1").sn-shard-" || true)
	[ -z "$left" ] || { echo "staging left behind: $left"; return 1; }
}

# snap DIR: its file names and contents, to compare whole sets.
snap() {
	(cd "$1" && for f in $(ls -A | sort); do printf '%s %s\n' "$f" "$(md5sum <"$f")"; done)
}

# strace_inject SPEC CMD...: CMD with a fault injected by strace (LeakSanitizer
# cannot run under ptrace, so leak checks are off for this one process).
strace_inject() {
	local spec=$1; shift
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
		strace -f -qq -o /dev/null -e trace=rename,renameat2 -e inject="$spec" "$@"
}

# The faults to try, one run each: every rename in turn (strace counts each
# syscall on its own), then the first renameat2.
FAULTS="$(for i in $(seq 1 8); do echo rename:when=$i; done) renameat2:when=1"

need_strace() {
	command -v strace >/dev/null && strace -qq -o /dev/null true 2>/dev/null ||
		skip "strace cannot trace here"
}

@test "sn-shard --help prints usage on stdout and exits 0" {
	run sn-shard --help
	[ "$status" -eq 0 ]
	[[ "$output" == Usage:* ]]
	run sn-shard --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-shard (sn) "* ]]
}

@test "sn-shard IDX --labels L -k 4 puts every record in exactly one shard" {
	mkidx a 103
	run sn-shard a-images --labels a-labels -k 4 -o out
	[ "$status" -eq 0 ]
	[[ "${lines[-1]}" == "sn-shard: 103 records, 3 classes, 4 shards, "*" MB" ]]
	[ "$(ls out)" = "$(printf 'shard-%03d.safetensors\n' 0 1 2 3)" ]
	py 'x, y = idx("a-images"); s = shards("out")
assert sorted(len(t["y"]) for t, m in s) == [25, 26, 26, 26]
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)
for i, (t, m) in enumerate(s):
    assert t["x"].dtype == np.uint8 and t["x"].shape[1:] == (1, 4, 3) and t["y"].dtype == np.int32
    assert m["format"] == "sn.data.v1" and m["classes"] == "3" and m["shard"] == "%d/4" % (i + 1)
    assert json.loads(m["source"]) == ["a-images", "a-labels"] and m["seed"] == "1"
    assert len(m["crc32"]) == 8
    v = x / 255.0
    assert abs(json.loads(m["mean"])[0] - v.mean()) < 1e-6
    assert abs(json.loads(m["std"])[0] - v.std()) < 1e-6'
}

@test "sn-shard reads gzip'd IDX and keeps u8 pixels as u8" {
	mkidx g 50 5 5 4 9 1
	run sn-shard g-images.gz --labels g-labels.gz -k 2 -o out
	[ "$status" -eq 0 ]
	py 'x, y = idx("g-images.gz"); s = shards("out")
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)
assert all(t["x"].dtype == np.uint8 for t, m in s)'
}

@test "sn-shard with the same inputs and seed writes byte-identical shards" {
	mkidx a 60
	sn-shard a-images --labels a-labels -k 3 -o one 2>/dev/null
	sn-shard a-images --labels a-labels -k 3 -o two 2>/dev/null
	sn-shard a-images --labels a-labels -k 3 --seed 2 -o three 2>/dev/null
	for i in 000 001 002; do cmp "one/shard-$i.safetensors" "two/shard-$i.safetensors"; done
	! cmp -s one/shard-000.safetensors three/shard-000.safetensors || false
}

@test "sn-shard --contiguous keeps the input order in chunks" {
	mkidx a 10
	run sn-shard a-images --labels a-labels -k 3 --contiguous -o out
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images"); s = shards("out")
assert [len(t["y"]) for t, m in s] == [4, 3, 3]
assert np.array_equal(np.concatenate([t["x"] for t, m in s]), x)
assert np.array_equal(np.concatenate([t["y"] for t, m in s]), y)'
}

@test "sn-shard --round-robin deals record i to shard i mod K" {
	mkidx a 11
	run sn-shard a-images --labels a-labels -k 3 --round-robin -o out
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images"); s = shards("out")
for k, (t, m) in enumerate(s):
    assert np.array_equal(t["x"], x[k::3]) and np.array_equal(t["y"], y[k::3])'
}

@test "sn-shard --stratify keeps every class's count per shard within one" {
	mkidx a 301 2 2 7
	run sn-shard a-images --labels a-labels -k 4 --stratify -o out
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images"); s = shards("out")
counts = np.array([np.bincount(t["y"], minlength=7) for t, m in s])
assert (counts.max(0) - counts.min(0) <= 1).all(), counts
assert (counts.sum(0) == np.bincount(y, minlength=7)).all()
assert max(len(t["y"]) for t, m in s) - min(len(t["y"]) for t, m in s) <= 1
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)
assert all(m["split"] == "stratify" for t, m in s)
assert any((np.diff(t["y"]) < 0).any() for t, m in s), "shards are shuffled, not class-sorted"'
}

@test "sn-shard --val FRACTION writes DIR/val.safetensors beside the shards" {
	mkidx a 100
	run sn-shard a-images --labels a-labels -k 2 --val 0.2 --json -o out
	[ "$status" -eq 0 ]
	[ -f out/val.safetensors ]
	py 'x, y = idx("a-images"); s = shards("out"); v, vm = rd("out/val.safetensors")
assert len(v["y"]) == 20 and [len(t["y"]) for t, m in s] == [40, 40] and vm["shard"] == "val"
allx = np.concatenate([t["x"] for t, m in s] + [v["x"]]); ally = np.concatenate([t["y"] for t, m in s] + [v["y"]])
assert pairs(allx, ally) == pairs(x, y)' 
	echo "$output" | grep -q '"val_records":20'
}

@test "sn-shard --stratify --val keeps the validation split stratified too" {
	mkidx a 200 2 2 4
	run sn-shard a-images --labels a-labels -k 2 --stratify --val 0.25 -o out
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images"); v, vm = rd("out/val.safetensors")
n = np.bincount(y, minlength=4); got = np.bincount(v["y"], minlength=4)
assert (abs(got - n * 0.25) <= 0.5).all(), (got, n)'
}

@test "sn-shard --limit N uses only the first N records" {
	mkidx a 50
	run sn-shard a-images --labels a-labels -k 2 --limit 21 --contiguous -o out
	[ "$status" -eq 0 ]
	[[ "${lines[-1]}" == "sn-shard: 21 records,"* ]]
	py 'x, y = idx("a-images"); s = shards("out")
assert np.array_equal(np.concatenate([t["x"] for t, m in s]), x[:21])
v = x[:21] / 255.0; assert abs(json.loads(s[0][1]["mean"])[0] - v.mean()) < 1e-6'
}

@test "sn-shard --no-normalize stores mean 0 and std 1 per channel" {
	mkcifar c.bin 20
	run sn-shard c.bin -k 2 --no-normalize -o out
	[ "$status" -eq 0 ]
	py 's = shards("out")
assert json.loads(s[0][1]["mean"]) == [0, 0, 0] and json.loads(s[0][1]["std"]) == [1, 1, 1]'
}

@test "sn-shard --stats-from FILE normalises test data with the training statistics" {
	mkidx train 40 4 3 3 1
	mkidx test 20 4 3 3 2
	sn-shard train-images --labels train-labels -k 2 -o tr 2>/dev/null
	run sn-shard test-images --labels test-labels -k 1 --stats-from tr/shard-000.safetensors -o te
	[ "$status" -eq 0 ]
	py 'a = rd("tr/shard-000.safetensors")[1]; b = rd("te/shard-000.safetensors")[1]
assert a["mean"] == b["mean"] and a["std"] == b["std"]'
}

@test "sn-shard --compress writes .safetensors.gz shards" {
	mkidx a 30
	run sn-shard a-images --labels a-labels -k 2 --compress --prefix part -o out
	[ "$status" -eq 0 ]
	[ -f out/part-000.safetensors.gz ] && [ -f out/part-001.safetensors.gz ]
	py 'x, y = idx("a-images"); s = [rd(p) for p in sorted(glob.glob("out/part-*.gz"))]
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)'
}

@test "sn-shard - reads IDX images from stdin" {
	mkidx a 30 4 3 3 7 1
	run sh -c 'cat a-images.gz | sn-shard - --labels a-labels.gz -k 2 -o out'
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images.gz"); s = shards("out")
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)
assert json.loads(s[0][1]["source"]) == ["stdin", "a-labels.gz"]'
}

@test "sn-shard reads CIFAR-10 batches, one file or many" {
	mkcifar b1.bin 30 10 1
	mkcifar b2.bin 25 10 2
	run sn-shard b1.bin b2.bin -k 5 -o out
	[ "$status" -eq 0 ]
	py 'r = np.concatenate([np.fromfile(p, np.uint8).reshape(-1, 3073) for p in ["b1.bin", "b2.bin"]])
s = shards("out")
assert all(t["x"].shape[1:] == (3, 32, 32) for t, m in s) and s[0][1]["classes"] == "10"
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(r[:, 1:], r[:, 0])
v = r[:, 1:].reshape(-1, 3, 1024) / 255.0
assert np.allclose(json.loads(s[0][1]["mean"]), v.mean((0, 2)), atol=1e-7)
assert np.allclose(json.loads(s[0][1]["std"]), v.std((0, 2)), atol=1e-7)'
}

@test "sn-shard detects CIFAR-100 from the file size; --label coarse picks the coarse label" {
	mkcifar c100.bin 40 100
	run sn-shard c100.bin -k 2 -o fine
	[ "$status" -eq 0 ]
	run sn-shard c100.bin -k 2 --label coarse -o coarse
	[ "$status" -eq 0 ]
	run sh -c 'gzip -c c100.bin | sn-shard - --format cifar --cifar100 -k 2 -o piped'
	[ "$status" -eq 0 ]
	py 'r = np.fromfile("c100.bin", np.uint8).reshape(-1, 3074)
for d, col, c in (("fine", 1, "100"), ("coarse", 0, "20"), ("piped", 1, "100")):
    s = shards(d); assert s[0][1]["classes"] == c
    assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(r[:, 2:], r[:, col])'
}

@test "sn-shard reads CSV with a header and string labels, mapped in sorted order" {
	printf 'a,b,species,c\n1,2,setosa,3\n4,5.5,virginica,6\n7,8,setosa,9\n1e1,11,versicolor,12\n' >iris.csv
	run sn-shard iris.csv -k 2 --label-col species --contiguous -o out
	[ "$status" -eq 0 ]
	py 's = shards("out"); m = s[0][1]
assert json.loads(m["class_names"]) == ["setosa", "versicolor", "virginica"] and m["classes"] == "3"
x = np.concatenate([t["x"] for t, m in s]); y = np.concatenate([t["y"] for t, m in s])
assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3], [4, 5.5, 6], [7, 8, 9], [10, 11, 12]]
assert y.tolist() == [0, 2, 0, 1]
assert np.allclose(json.loads(m["mean"]), x.mean(0)) and np.allclose(json.loads(m["std"]), x.std(0))'
}

@test "sn-shard reads TSV without a header, integer labels in the last column" {
	printf '0.5\t1\t2\n1.5\t2\t0\n2.5\t3\t1\n3.5\t4\t2\n' >t.tsv
	run sn-shard t.tsv -k 2 --contiguous -o out
	[ "$status" -eq 0 ]
	py 's = shards("out"); x = np.concatenate([t["x"] for t, m in s]); y = np.concatenate([t["y"] for t, m in s])
assert x.tolist() == [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]] and y.tolist() == [2, 0, 1, 2]
assert s[0][1]["classes"] == "3" and "class_names" not in s[0][1]'
}

@test "sn-shard --label-col INDEX and --no-header read a CSV from stdin" {
	run sh -c 'printf "1,9,2\n0,8,3\n1,7,4\n" | sn-shard - --no-header --label-col 0 -k 1 -o out'
	[ "$status" -eq 0 ]
	py 't, m = rd("out/shard-000.safetensors")
assert sorted(zip(t["x"].tolist(), t["y"].tolist())) == [([7, 4], 1), ([8, 3], 0), ([9, 2], 1)]'
}

@test "sn-shard re-shards sn data files and keeps their normalisation" {
	mkidx a 90
	sn-shard a-images --labels a-labels -k 3 -o first 2>/dev/null
	run sn-shard first/shard-000.safetensors first/shard-001.safetensors first/shard-002.safetensors -k 2 -o second
	[ "$status" -eq 0 ]
	py 'x, y = idx("a-images"); s = shards("second"); a = rd("first/shard-000.safetensors")[1]
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(x, y)
assert s[0][1]["mean"] == a["mean"] and s[0][1]["std"] == a["std"]'
}

@test "sn-shard - reads an sn data file from stdin" {
	mkidx a 12
	sn-shard a-images --labels a-labels -k 1 -o first 2>/dev/null
	run sh -c 'sn-shard - -k 3 --round-robin -o second <first/shard-000.safetensors'
	[ "$status" -eq 0 ]
	py 's = shards("second"); t, m = rd("first/shard-000.safetensors")
for k, (u, n) in enumerate(s):
    assert np.array_equal(u["x"], t["x"][k::3]) and np.array_equal(u["y"], t["y"][k::3])
    assert n["mean"] == m["mean"]'
}

@test "sn-shard re-sharding keeps the class names" {
	printf 'x,y,kind\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,ant\n' >pets.csv
	sn-shard pets.csv -k 2 -o first 2>/dev/null
	run sn-shard first/shard-000.safetensors first/shard-001.safetensors -k 1 -o second
	[ "$status" -eq 0 ]
	py 't, m = rd("second/shard-000.safetensors")
assert json.loads(m["class_names"]) == ["ant", "cat", "dog"] and sorted(t["y"].tolist()) == [0, 1, 1, 2]'
}

@test "sn-shard --delimiter and --header read a semicolon file with a numeric header" {
	printf '1;2;3\n4;5;1\n6;7;0\n' >semi.txt
	run sn-shard semi.txt --format csv --delimiter ';' --header -k 1 --contiguous -o out
	[ "$status" -eq 0 ]
	py 't, m = rd("out/shard-000.safetensors")
assert t["x"].tolist() == [[4, 5], [6, 7]] and t["y"].tolist() == [1, 0]'
}

@test "sn-shard takes several IDX files, each with its own --labels" {
	mkidx a 20 4 3 3 1
	mkidx b 15 4 3 3 2
	run sn-shard a-images b-images --labels a-labels --labels b-labels -k 5 -o out
	[ "$status" -eq 0 ]
	py 'xa, ya = idx("a-images"); xb, yb = idx("b-images"); s = shards("out")
assert pairs(np.concatenate([t["x"] for t, m in s]), np.concatenate([t["y"] for t, m in s])) == pairs(np.concatenate([xa, xb]), np.concatenate([ya, yb]))'
	run sn-shard a-images b-images --labels a-labels -k 5 -o out2
	[ "$status" -eq 2 ]
	assert_one_line_error b-images
}

@test "sn-shard -o DIR creates the output directory" {
	mkidx a 10
	run sn-shard a-images --labels a-labels -k 1 -o deep/er/dir
	[ "$status" -eq 0 ]
	[ -f deep/er/dir/shard-000.safetensors ]
}

@test "sn-shard shows progress only when stderr is a terminal" {
	mkidx a 40
	sn-shard a-images --labels a-labels -k 2 -o plain 2>err
	[ "$(wc -l <err)" -eq 1 ]
	command -v script >/dev/null || skip "script (util-linux) not installed"
	script -qec "sn-shard a-images --labels a-labels -k 2 -o tty" /dev/null >tty.txt
	grep -q "writing 2/2" tty.txt
	grep -q "40 records, 3 classes, 2 shards" tty.txt
}

@test "sn-shard --json prints the summary on stdout" {
	mkidx a 10
	sn-shard a-images --labels a-labels -k 2 --json -o out 2>/dev/null >summary.json
	py 'j = json.load(open("summary.json"))
assert j["records"] == 10 and j["shards"] == 2 and j["classes"] == 3 and len(j["files"]) == 2
assert j["bytes"] == sum(len(open(p, "rb").read()) for p in j["files"]) and len(j["mean"]) == 1'
}

# ---- bad input: exit 1, one line naming the file, nothing left behind ----

@test "sn-shard refuses an IDX file with the wrong magic" {
	mkidx a 10
	printf '\x00\x00\x08\x02' | dd of=a-images conv=notrunc 2>/dev/null
	run sn-shard a-images --labels a-labels -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error a-images
	[[ "$output" == *magic* ]]
	assert_empty_dir out
}

@test "sn-shard refuses an IDX file with trailing data" {
	mkidx a 10
	printf 'junk' >>a-images
	run sn-shard a-images --labels a-labels -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error a-images
	[[ "$output" == *trailing* ]]
	assert_empty_dir out
}

@test "sn-shard refuses an IDX header whose rows x cols overflows, saying so" {
	"$PY" -c 'import struct, sys
open("ov-images", "wb").write(struct.pack(">IIII", 0x803, 2, 4294836226, 2147549185) + bytes(64))
open("ov-labels", "wb").write(struct.pack(">II", 0x801, 2) + bytes(2))'
	run sn-shard ov-images --labels ov-labels -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error ov-images
	[[ "$output" == *"IDX header: images of 4294836226 x 2147549185 pixels"* ]]
	gzip -k ov-images
	run sn-shard ov-images.gz --labels ov-labels -k 1 -o out
	[ "$status" -eq 1 ]
	[[ "$output" == *"IDX header: images of 4294836226 x 2147549185 pixels"* ]]
	assert_empty_dir out
}

@test "sn-shard refuses a gzip stream cut early, missing its trailer, or with trailing garbage" {
	mkidx a 20 4 3 3 7 1
	size=$(stat -c %s a-images.gz)
	head -c 20 a-images.gz >early.gz
	run sn-shard early.gz --labels a-labels.gz -k 1 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: early.gz: truncated gzip stream" ]
	head -c $((size - 8)) a-images.gz >notrailer.gz
	run sn-shard notrailer.gz --labels a-labels.gz -k 1 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: notrailer.gz: truncated gzip stream" ]
	{ cat a-images.gz; printf 'garbage'; } >garbage.gz
	run sn-shard garbage.gz --labels a-labels.gz -k 1 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: garbage.gz: trailing garbage after the gzip stream" ]
	{ cat a-labels.gz; printf '\0\0'; } >lab.gz
	run sn-shard a-images.gz --labels lab.gz -k 1 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: lab.gz: trailing garbage after the gzip stream" ]
	assert_empty_dir out
	{ cat a-images.gz a-images.gz; } >twice.gz    # two members are one stream
	run sn-shard twice.gz --labels a-labels.gz -k 1 -o out
	[ "$status" -eq 1 ]
	[[ "$output" == *"trailing data after 20 images"* ]]
}

@test "sn-shard refuses image and label counts that differ" {
	mkidx a 10
	mkidx b 11
	run sn-shard a-images --labels b-labels -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error b-labels
	assert_empty_dir out
}

@test "sn-shard refuses a truncated IDX file, plain or gzip'd" {
	mkidx a 10
	head -c 100 a-images >t-images
	run sn-shard t-images --labels a-labels -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error t-images
	[[ "$output" == *truncated* ]]
	assert_empty_dir out
	mkidx g 40 4 3 3 7 1
	gzip -dc g-images.gz | head -c 300 | gzip >h-images.gz
	run sn-shard h-images.gz --labels g-labels.gz -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error h-images.gz
	assert_empty_dir out
	head -c 200 g-images.gz >cut-images.gz
	run sn-shard cut-images.gz --labels g-labels.gz -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error cut-images.gz
	assert_empty_dir out
}

@test "sn-shard refuses a truncated CIFAR file" {
	mkcifar c.bin 5
	head -c 10000 c.bin >t.bin
	run sn-shard t.bin -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error t.bin
	assert_empty_dir out
	run sh -c 'cat t.bin | sn-shard - --format cifar -k 2 -o out'
	[ "$status" -eq 1 ]
	assert_one_line_error -
	assert_empty_dir out
}

@test "sn-shard refuses a label outside the class range" {
	mkidx a 50 2 2 5
	run sn-shard a-images --labels a-labels --classes 3 -k 2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error a-labels
	assert_empty_dir out
	printf '1,0\n2,1\n3,7\n' >l.csv
	run sn-shard l.csv --classes 3 -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error l.csv
	[[ "$output" == *"line 3"* ]]
	assert_empty_dir out
}

@test "sn-shard refuses a ragged CSV, naming the line" {
	printf 'a,b,c,d,label\n1,2,3,4,0\n1,2,3,4,1\n1,2,3,4,0\n1,2,3,4,1\n1,2,3,4,0\n1,2,3,0\n' >data.csv
	run sn-shard data.csv -k 2 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: data.csv: line 7: expected 5 fields, got 4" ]
	assert_empty_dir out
}

@test "sn-shard refuses a non-numeric CSV cell, naming the line and field" {
	printf '1,2,0\n3,x,1\n' >bad.csv
	run sn-shard bad.csv -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error bad.csv
	[[ "$output" == *"line 2: field 2"* ]]
	assert_empty_dir out
}

@test "sn-shard refuses empty input" {
	: >empty.csv
	run sn-shard empty.csv -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error empty.csv
	printf 'a,b,label\n' >header-only.csv
	run sn-shard header-only.csv -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error header-only.csv
	run sh -c 'sn-shard - --format cifar -k 1 -o out </dev/null'
	[ "$status" -eq 1 ]
	assert_empty_dir out
}

@test "sn-shard refuses an output directory it cannot write" {
	mkidx a 10
	: >file
	run sn-shard a-images --labels a-labels -k 2 -o file/sub
	[ "$status" -eq 1 ]
	assert_one_line_error file/sub
}

@test "sn-shard refuses more shards than records" {
	mkidx a 3
	run sn-shard a-images --labels a-labels -k 4 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error a-images
	assert_empty_dir out
}

@test "sn-shard leaves no earlier shard behind when a later input fails" {
	mkidx a 20
	printf '1,2,0\n' >ok.csv
	printf '1,2,0\n1,2\n' >bad.csv
	run sn-shard ok.csv bad.csv -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error bad.csv
	assert_empty_dir out
	mkdir keep && : >keep/other
	run sn-shard a-images --labels a-labels --stats-from nonexistent -k 2 -o keep
	[ "$status" -eq 1 ]
	assert_one_line_error nonexistent
	[ "$(ls -A keep)" = other ]
}

@test "sn-shard stops on SIGTERM with exit 1 and leaves nothing behind" {
	mkfifo pipe
	sn-shard - --format csv -k 1 -o out <pipe >/dev/null 2>err &
	pid=$!
	exec 5>pipe
	printf '1,2,0\n' >&5
	for _ in $(seq 100); do ls -d .out.sn-shard-* >/dev/null 2>&1 && break; sleep 0.05; done
	sleep 0.1
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	exec 5>&-
	[ "$rc" -eq 1 ]
	[ "$(cat err)" = "sn-shard: out: interrupted" ]
	assert_empty_dir out
}

@test "sn-shard replaces the set in DIR as a whole, keeping DIR's other files" {
	mkidx a 20
	mkidx b 30 4 3 3 9
	sn-shard a-images --labels a-labels -k 3 --val 0.2 -o out 2>/dev/null
	: >out/notes.txt
	sn-shard b-images --labels b-labels -k 2 -o out 2>/dev/null
	[ "$(ls -A out | tr '\n' ' ')" = "notes.txt shard-000.safetensors shard-001.safetensors " ]
	sn-shard b-images --labels b-labels -k 2 -o ref 2>/dev/null
	cmp out/shard-001.safetensors ref/shard-001.safetensors
	assert_no_stage out
	ln -s out link
	sn-shard a-images --labels a-labels -k 1 -o link/ 2>/dev/null
	[ -L link ] && [ -f out/shard-000.safetensors ] && [ ! -e out/shard-001.safetensors ]
}

@test "sn-shard refuses to replace a directory holding a directory, or the current one" {
	mkidx a 20
	mkdir -p out/sub
	run sn-shard a-images --labels a-labels -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error out
	[ "$(ls -A out)" = sub ]
	mkdir here && cd here
	run sn-shard ../a-images --labels ../a-labels -k 1 -o .
	[ "$status" -eq 2 ]
	[ -z "$(ls -A .)" ]
}

@test "sn-shard: a rename failing at any point while re-sharding leaves the older set whole" {
	need_strace
	mkidx a 20
	mkidx b 30 4 3 3 9
	sn-shard a-images --labels a-labels -k 3 --val 0.2 -o orig 2>/dev/null
	: >orig/notes.txt
	old=$(snap orig)
	failed=0
	for f in $FAULTS; do
		rm -rf out && cp -a orig out
		run strace_inject "${f%%:*}:error=EIO:${f#*:}" sn-shard b-images --labels b-labels -k 2 -o out
		[ "$status" -eq 0 ] && continue
		echo "$f: $output"
		[ "$status" -eq 1 ]
		assert_one_line_error out
		[ "$(snap out)" = "$old" ]
		assert_no_stage out
		failed=$((failed + 1))
	done
	[ "$failed" -ge 3 ]      # both shards' writes and the exchange
}

@test "sn-shard killed at any rename leaves the old set or the new one, and the next run cleans up" {
	need_strace
	mkidx a 20
	mkidx b 30 4 3 3 9
	sn-shard a-images --labels a-labels -k 3 --val 0.2 -o orig 2>/dev/null
	sn-shard b-images --labels b-labels -k 2 -o new 2>/dev/null
	: >orig/notes.txt
	: >new/notes.txt
	old=$(snap orig) new=$(snap new)
	killed=0
	for f in $FAULTS; do
		rm -rf out && cp -a orig out
		run strace_inject "${f%%:*}:signal=SIGKILL:${f#*:}" sn-shard b-images --labels b-labels -k 2 -o out
		[ "$status" -eq 0 ] && continue
		echo "$f: status $status"
		[ "$status" -eq 137 ]
		killed=$((killed + 1))
		now=$(snap out)
		[ "$now" = "$old" ] || [ "$now" = "$new" ]
		run sn-shard b-images --labels b-labels -k 2 -o out
		[ "$status" -eq 0 ]
		[ "$(snap out)" = "$new" ]
		assert_no_stage out
	done
	[ "$killed" -ge 3 ]
}

# poison FILE 'python on t (tensors) and m (metadata)': edit an sn data file
# in place, with a valid crc32, as a careless foreign writer would.
poison() {
	"$PY" - "$1" "$2" <<'PY'
import json, struct, sys, zlib
import numpy as np
DT = {"U8": "u1", "F32": "<f4", "I32": "<i4"}
path, code = sys.argv[1:3]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); m = h.pop("__metadata__")
t = {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
     dtype=DT[v["dtype"]]).reshape(v["shape"]).copy() for k, v in h.items()}
exec(code)
data, off = b"", 0
for k in h:
    raw = t[k].tobytes(); h[k]["data_offsets"] = [off, off + len(raw)]; data += raw; off += len(raw)
m["crc32"] = "%08x" % zlib.crc32(data)
hb = json.dumps(dict({"__metadata__": m}, **h)).encode()
hb += b" " * (-(8 + len(hb)) % 8)
open(path, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
PY
}

@test "a data file with NaN or Inf in x, or a std too small to divide by, is bad input to every tool" {
	for i in $(seq 0 39); do echo "$i,$((i % 3)),$((i % 2))"; done >t.csv
	sn-shard t.csv -k 1 -o d 2>/dev/null
	printf 'name: t\ninput: [2]\nlayers:\n  - {type: dense, units: 2}\n  - softmax_cross_entropy\n' >t.yaml
	sn-init t.yaml -o w.safetensors
	cp d/shard-000.safetensors nan.safetensors
	poison nan.safetensors 't["x"][17, 1] = np.nan'
	run sn-sgd -w w.safetensors -d nan.safetensors -o out.safetensors --iters 2
	[ "$status" -eq 1 ]
	[ "$output" = "sn-sgd: nan.safetensors: x holds NaN at record 17, value 1" ]
	run sn-eval -w w.safetensors -d nan.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error nan.safetensors
	run sn-shard nan.safetensors -k 1 -o out
	[ "$status" -eq 1 ]
	[ "$output" = "sn-shard: nan.safetensors: x holds NaN at record 17, value 1" ]
	cp d/shard-000.safetensors inf.safetensors
	poison inf.safetensors 't["x"][39, 0] = -np.inf'
	run sn-sgd -w w.safetensors -d inf.safetensors -o out.safetensors --iters 2
	[ "$status" -eq 1 ]
	[ "$output" = "sn-sgd: inf.safetensors: x holds -Inf at record 39, value 0" ]
	for std in '[1e-40,1]' '[0,1]' '[-1,1]'; do
		cp d/shard-000.safetensors std.safetensors
		poison std.safetensors "m['std'] = '$std'"
		run sn-sgd -w w.safetensors -d std.safetensors -o out.safetensors --iters 2
		[ "$status" -eq 1 ]
		assert_one_line_error std.safetensors
		[[ "$output" == *'"std"[0]'* ]]
		run sn-eval -w w.safetensors -d std.safetensors
		[ "$status" -eq 1 ]
	done
	[ ! -e out.safetensors ]
}

@test "sn-shard refuses a corrupt sn data file" {
	mkidx a 10
	sn-shard a-images --labels a-labels -k 1 -o d 2>/dev/null
	python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[-1] ^= 1; open(sys.argv[1], "wb").write(b)' d/shard-000.safetensors
	run sn-shard d/shard-000.safetensors -k 1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error d/shard-000.safetensors
	assert_empty_dir out
}

@test "sn-shard usage errors exit 2" {
	mkidx a 10
	run sn-shard a-images --labels a-labels -o out
	[ "$status" -eq 2 ]
	run sn-shard a-images --labels a-labels -k 0 -o out
	[ "$status" -eq 2 ]
	run sn-shard a-images --labels a-labels -k 2
	[ "$status" -eq 2 ]
	run sn-shard a-images --labels a-labels -k 2 --contiguous --round-robin -o out
	[ "$status" -eq 2 ]
	run sn-shard a-images --labels a-labels -k 2 --val 1.5 -o out
	[ "$status" -eq 2 ]
	run sn-shard a-images -k 2 -o out
	[ "$status" -eq 2 ]
	assert_one_line_error a-images
	run sn-shard a-images --labels a-labels -k 2 --bogus -o out
	[ "$status" -eq 2 ]
}

@test "sn-shard splits Fashion-MNIST into 4 stratified shards of 1,500 per class" {
	[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || skip "dataset-fashion-mnist not installed"
	run sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 4 --stratify -o out
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-shard: 60000 records, 10 classes, 4 shards, "* ]]
	py 's = shards("out"); assert len(s) == 4
for t, m in s:
    assert (np.bincount(t["y"], minlength=10) == 1500).all() and t["x"].shape == (15000, 1, 28, 28)
    assert abs(json.loads(m["mean"])[0] - 0.286) < 0.001 and abs(json.loads(m["std"])[0] - 0.353) < 0.001'
}
