#!/usr/bin/env bats
# sn-delta: deltas that apply back to the weights (exactly for none, within
# the documented bounds for bf16, int8 and int4), error feedback committed
# with the delta, damaged deltas refused, and a round by hand with the tools.
# Real LeNet weights come from a few sn-sgd steps on a Fashion-MNIST subset.

load helper

setup_file() {
	export FX=$BATS_FILE_TMPDIR/fx
	mkdir -p "$FX"
	sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 2 --seed 1 --limit 600 -o "$FX/shards" >/dev/null 2>&1
	sn-init "$NETS/lenet.yaml" -o "$FX/w0" --seed 1
	sn-sgd -q -w "$FX/w0" -d "$FX/shards/shard-000.safetensors" -o "$FX/w1" --iters 5 --seed 1
	sn-sgd -q -w "$FX/w0" -d "$FX/shards/shard-001.safetensors" -o "$FX/w1b" --iters 5 --seed 2
}

# mkw FILE KIND: a small weight file of edge values, tensor "a" [2,5] and
# "b" [3]; KIND base or new.  Values are given as float32 bit patterns.
mkw() {
	"$PY" - "$@" <<'PY'
import json, struct, sys, zlib
import numpy as np
path, kind = sys.argv[1], sys.argv[2]
f = lambda xs: np.array(xs, dtype="<f4")
tiny, big = np.float32(1e-45), np.finfo("f4").max
if kind == "base":
    ts = {"a": f([0.0, -0.0, 1.0, tiny, -1e-40, 3e38, -3e38, 5.5, 1e-3, -7.0]).reshape(2, 5),
          "b": f([0.25, -0.5, 100.0])}
else:
    ts = {"a": f([-0.0, 0.0, np.nextafter(np.float32(1), np.float32(2)), -tiny, 1e-40, 2.9e38,
                  -2.5e38, 5.5, 2e-3, -6.0]).reshape(2, 5),
          "b": f([0.5, -0.25, 100.001])}
hdr, data, off = {}, b"", 0
for k, v in ts.items():
    raw = v.tobytes(); hdr[k] = {"dtype": "F32", "shape": list(v.shape),
                                 "data_offsets": [off, off + len(raw)]}
    data += raw; off += len(raw)
hdr["__metadata__"] = {"format": "sn.weights.v1", "net": "name: t\n", "round": "3",
    "steps": "40", "examples": "640", "loss": "0.5", "seconds": "1.5",
    "crc32": "%08x" % zlib.crc32(data)}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
}

# py 'code' FILES...: python with rd(path) -> (tensors as raw numpy arrays
# of their own dtype, metadata) and wr(path, tensors, metadata).
py() {
	local code=$1; shift
	"$PY" - "$@" <<PY
import json, struct, sys, zlib
import numpy as np
DT = {"F32": "<f4", "U32": "<u4", "BF16": "<u2", "I8": "i1", "U8": "u1"}
def rd(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); m = h.pop("__metadata__", {})
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
            dtype=DT[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}, m
def wr(p, ts, m, crc=True):
    inv = {np.dtype(v): k for k, v in DT.items()}
    hdr, data, off = {}, b"", 0
    for k, v in ts.items():
        raw = v.tobytes()
        hdr[k] = {"dtype": inv[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        data += raw; off += len(raw)
    m = dict(m); m.pop("crc32", None)
    if crc: m["crc32"] = "%08x" % zlib.crc32(data)
    hdr["__metadata__"] = m
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    open(p, "wb").write(struct.pack("<Q", len(h)) + h + data)
f = sys.argv[1:]
$code
PY
}

# same_tensors A B: identical tensor bytes and names
same_tensors() {
	py 'a, _ = rd(f[0]); b, _ = rd(f[1])
assert list(a) == list(b), (list(a), list(b))
for k in a: assert a[k].tobytes() == b[k].tobytes(), k' "$1" "$2"
}

@test "sn-delta --help, --version and a usage error" {
	run sn-delta --help
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "Usage: sn-delta diff BASE NEW -o DELTA"* ]]
	run sn-delta --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-delta (sn) "* ]]
	run sn-delta frobnicate a b -o c
	[ "$status" -eq 2 ]
}

@test "sn-delta rejects bad usage with exit 2" {
	mkw base base; mkw new new
	for args in "diff base new" "diff base -o d" "diff base new -o d --compress int3" \
		"diff base new -o d --feedback r" "diff base new -o d -c bf16 --block 8" \
		"diff base new -o - -c int8 --feedback r" "apply base d -o w -c int8" \
		"diff base new -o d -c int8 --block 0" "diff - - -o d" "diff base new -o - --json"; do
		run sn-delta $args
		[ "$status" -eq 2 ] || { echo "$args: $status $output"; return 1; }
	done
	[ ! -e d ] && [ ! -e r ] && [ ! -e w ]
	# an output that is an input, or both outputs the same file
	for args in "diff base new -o new" "diff base new -o base" "diff base new -o d -c int8 --feedback base" \
		"diff base new -o d -c int8 --feedback d" "apply base new -o base"; do
		run sn-delta $args
		[ "$status" -eq 2 ] || { echo "$args: $status $output"; return 1; }
	done
	[ ! -e d ]
}

@test "none is lossless: apply gives NEW bit for bit, -0.0, denormals and huge values included" {
	mkw base base; mkw new new
	run sn-delta diff base new -o d --compress none
	[ "$status" -eq 0 ]
	run sn-delta apply base d -o back
	[ "$status" -eq 0 ]
	same_tensors back new
	py 't, m = rd(f[0])
assert m["format"] == "sn.delta.v1" and m["scheme"] == "none" and m["block"] == "0", m
assert t["a"].dtype == np.dtype("<u4") and t["a"].shape == (2, 5), t["a"]
_, w = rd(f[1]); assert (w["round"], w["steps"], w["examples"], w["loss"], w["seconds"]) == ("3", "40", "640", "0.5", "1.5"), w
assert w["net"] == "name: t\n" and w["format"] == "sn.weights.v1"' d back
	# on real weights the file itself comes back: cmp
	sn-delta diff "$FX/w0" "$FX/w1" -o d2
	sn-delta apply "$FX/w0" d2 -o w1-again
	cmp w1-again "$FX/w1"
}

@test "a python reader following sn-formats(5) decodes every scheme to sn-delta apply's bits" {
	for s in none bf16 int8 int4; do
		sn-delta diff "$FX/w0" "$FX/w1" -o d-$s -c $s
		sn-delta apply "$FX/w0" d-$s -o w-$s
	done
	# a block that does not divide the tensors and an odd element count
	sn-delta diff "$FX/w0" "$FX/w1" -o d-int4b -c int4 --block 7
	sn-delta apply "$FX/w0" d-int4b -o w-int4b
	py 'base, _ = rd(f[0])
for dp, wp in zip(f[1::2], f[2::2]):
    d, m = rd(dp); w, _ = rd(wp); s = m["scheme"]; blk = int(m["block"])
    assert len(d) == len(base) * (2 if s.startswith("int") else 1), (dp, list(d))
    for k, b in base.items():
        c = d[k]
        if s == "none":
            got = (b.view("<u4") ^ c).view("<f4")
        elif s == "bf16":
            got = b + (c.astype("<u4") << 16).view("<f4")
        else:
            if s == "int8":
                q = c.reshape(-1).astype("f4")
            else:
                lo = (c & 15).astype("i1"); hi = (c >> 4).astype("i1")
                q = np.stack([np.where(lo > 7, lo - 16, lo), np.where(hi > 7, hi - 16, hi)], 1).reshape(-1)[:b.size].astype("f4")
            sc = d[k + ".scale"]
            assert sc.shape == (-(-b.size // blk),), (k, sc.shape)
            got = b + (q * np.repeat(sc, blk)[:b.size]).reshape(b.shape).astype("f4")
        assert got.astype("f4").tobytes() == w[k].tobytes(), (dp, k)' \
		"$FX/w0" d-none w-none d-bf16 w-bf16 d-int8 w-int8 d-int4 w-int4 d-int4b w-int4b
}

@test "each scheme stays within its bound: |error| <= scale/2 (int8, int4), bf16 rounding" {
	sn-delta diff "$FX/w0" "$FX/w1" -o d-bf16 -c bf16
	sn-delta apply "$FX/w0" d-bf16 -o w-bf16
	for s in int8 int4; do
		sn-delta diff "$FX/w0" "$FX/w1" -o d-$s -c $s --block 32
		sn-delta apply "$FX/w0" d-$s -o w-$s
	done
	py 'base, _ = rd(f[0]); new, _ = rd(f[1])
for s in ("bf16", "int8", "int4"):
    d, m = rd("d-" + s); w, _ = rd("w-" + s)
    for k, b in base.items():
        t = new[k].astype("f8") - b.astype("f8")
        err = np.abs(w[k].astype("f8") - new[k].astype("f8")).reshape(-1)
        ulp = np.spacing(np.abs(new[k]).astype("f4")).astype("f8").reshape(-1)
        if s == "bf16":
            bound = np.abs(t).reshape(-1) * 2.0 ** -8 + ulp
        else:
            sc = np.repeat(d[k + ".scale"].astype("f8"), 32)[:b.size]
            bound = sc / 2 * (1 + 2.0 ** -16) + ulp
        assert (err <= bound).all(), (s, k, float((err - bound).max()))' "$FX/w0" "$FX/w1"
}

@test "--json reports bytes, scheme, tensors and the max abs error" {
	run sn-delta diff "$FX/w0" "$FX/w1" -o d -c int8 --json
	[ "$status" -eq 0 ]
	echo "$output" >j
	size=$(stat -c %s d)
	"$PY" - "$size" <<'PY'
import json, sys
j = json.load(open("j"))
assert j["bytes"] == int(sys.argv[1]) and j["scheme"] == "int8" and j["block"] == 64, j
assert j["tensors"] == 8 and j["values"] == 431080, j
assert 0 < j["max_abs_error"] < 1e-2 and j["residual_max_abs"] == 0, j
PY
	run sn-delta apply "$FX/w0" d -o w --json
	[ "$status" -eq 0 ]
	[[ "$output" == *'"command":"apply"'* && "$output" == *'"scheme":"int8"'* && "$output" == *'"bytes":'* ]]
}

@test "error feedback: the residual holds what the delta dropped, and the next delta sends it" {
	sn-delta diff "$FX/w0" "$FX/w1" -o d1 -c int4 --feedback r
	[ -f r ]
	sn-delta apply "$FX/w0" d1 -o a1
	py 'new, _ = rd(f[0]); got, _ = rd(f[1]); r, m = rd(f[2])
assert m["format"] == "sn.residual.v1" and m["scheme"] == "int4", m
for k in new:
    want = (new[k].astype("f8") - got[k].astype("f8")).astype("f4")
    assert np.array_equal(r[k], want), k' "$FX/w1" a1 r
	# a round with no training from the weights the receiver holds: the
	# delta is the residual, and the two deltas together come closer to w1
	sn-delta diff a1 a1 -o d2 -c int4 --feedback r
	sn-delta apply a1 d2 -o a2
	py 'new, _ = rd(f[0]); a1, _ = rd(f[1]); a2, _ = rd(f[2])
e1 = sum(((a1[k].astype("f8") - new[k]) ** 2).sum() for k in new)
e2 = sum(((a2[k].astype("f8") - new[k]) ** 2).sum() for k in new)
assert e2 < e1 / 10, (e1, e2)' "$FX/w1" a1 a2
}

@test "with --feedback, a failed diff changes neither the delta nor the residual" {
	sn-delta diff "$FX/w0" "$FX/w1" -o d -c int8 --feedback r
	cp d d.before; cp r r.before
	# NEW with a NaN: exit 3
	py 't, m = rd(f[0]); a = {k: v.copy() for k, v in t.items()}; a["fc1.bias"][3] = np.nan; wr("nan", a, m)' "$FX/w1"
	run sn-delta diff "$FX/w0" nan -o d -c int8 --feedback r
	[ "$status" -eq 3 ]
	assert_one_line_error nan
	# a delta that cannot be written: exit 1
	run sn-delta diff "$FX/w0" "$FX/w1" -o no/such/dir/d -c int8 --feedback r
	[ "$status" -eq 1 ]
	# a damaged residual: exit 1
	printf 'junk' >bad-r
	run sn-delta diff "$FX/w0" "$FX/w1" -o d -c int8 --feedback bad-r
	[ "$status" -eq 1 ]
	assert_one_line_error bad-r
	cmp d d.before && cmp r r.before
	[ -z "$(ls -A | grep -v -e '^d$' -e '^r$' -e before -e '^nan$' -e '^bad-r$')" ]
}

@test "a residual for other weights is refused" {
	mkw base base; mkw new new
	sn-delta diff "$FX/w0" "$FX/w1" -o d -c int8 --feedback r
	run sn-delta diff base new -o d2 -c int8 --feedback r
	[ "$status" -eq 1 ]
	assert_one_line_error r
	[ ! -e d2 ]
}

@test "a difference beyond float32 is refused for the lossy schemes, kept by none" {
	"$PY" - <<'PY'
import json, struct, zlib
import numpy as np
for p, v in (("hb", 3e38), ("hn", -3e38)):
    a = np.array([v, 1.0], "<f4"); raw = a.tobytes()
    h = {"__metadata__": {"format": "sn.weights.v1", "crc32": "%08x" % zlib.crc32(raw)},
         "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    h = json.dumps(h).encode(); h += b" " * (-len(h) % 8)
    open(p, "wb").write(struct.pack("<Q", len(h)) + h + raw)
PY
	for s in bf16 int8 int4; do
		run sn-delta diff hb hn -o d -c $s
		[ "$status" -eq 1 ] || { echo "$s: $status $output"; return 1; }
		[[ "$output" == *"does not fit float32"* ]]
		[ ! -e d ]
	done
	sn-delta diff hb hn -o d
	sn-delta apply hb d -o back
	same_tensors back hn
}

@test "damaged or mismatched deltas are refused with one line, exit 1, nothing written" {
	sn-delta diff "$FX/w0" "$FX/w1" -o good -c int4 --block 16
	size=$(stat -c %s good)
	head -c $((size - 100)) good >truncated
	cp good badcrc; printf '\x55' | dd of=badcrc bs=1 seek=$((size - 10)) conv=notrunc 2>/dev/null
	py 'd, m = rd(f[0])
def variant(name, change=None, meta=None):
    t = {k: v.copy() for k, v in d.items()}; mm = dict(m)
    if change: change(t)
    if meta: mm.update(meta)
    wr(name, t, mm)
def s(t, k, v): t[k] = v
variant("scale-len", lambda t: s(t, "fc2.bias.scale", t["fc2.bias.scale"][:-1] if len(t["fc2.bias.scale"]) > 1 else np.zeros(2, "<f4")))
variant("scale-inf", lambda t: t["conv1.weight.scale"].__setitem__(0, np.inf))
variant("scale-neg", lambda t: t["conv1.weight.scale"].__setitem__(1, -1.0))
variant("dtype", lambda t: s(t, "fc2.weight", t["fc2.weight"].view("i1")))
variant("shape", lambda t: s(t, "fc2.bias", np.zeros(9, "u1")))
variant("missing", lambda t: t.pop("fc2.bias"))
variant("extra", lambda t: s(t, "zzz", np.zeros(1, "u1")))
variant("reserved", lambda t: t["conv1.weight"].__setitem__(0, 0x88))
variant("scheme", meta={"scheme": "int3"})
variant("block", meta={"block": "0"})
variant("format", meta={"format": "sn.weights.v1"})
variant("otherbase", meta={"base_crc32": "00000000"})' good
	for f in truncated badcrc scale-len scale-inf scale-neg dtype shape missing extra reserved \
		scheme block format otherbase; do
		run sn-delta apply "$FX/w0" "$f" -o out
		[ "$status" -eq 1 ] || { echo "$f: status $status: $output"; return 1; }
		assert_one_line_error "$f" || { echo "$f"; return 1; }
		[ ! -e out ] || { echo "$f: out written"; return 1; }
	done
	run sn-delta apply "$FX/w0" otherbase -o out
	[[ "$output" == "sn-delta: otherbase: made against other weights"* ]]
	run sn-delta apply "$FX/w0" truncated -o out
	[[ "$output" == *truncated* ]]
	run sn-delta apply "$FX/w1" good -o out
	[[ "$output" == "sn-delta: good: made against other weights"* ]]
	# a cut gzip stream; the unused high nibble of an odd-length int4 entry
	sn-delta diff "$FX/w0" "$FX/w1" -o good.gz -c int8
	head -c 20000 good.gz >cut.gz
	mkw base base; mkw new new
	sn-delta diff base new -o odd -c int4
	py 't, m = rd(f[0]); t = {k: v.copy() for k, v in t.items()}
assert t["b"].shape == (2,); t["b"][1] |= 0x10; wr("pad", t, m)' odd
	for f in cut.gz pad; do
		b=$FX/w0; [ "$f" = pad ] && b=base
		run sn-delta apply "$b" "$f" -o out
		[ "$status" -eq 1 ] || { echo "$f: status $status: $output"; return 1; }
		assert_one_line_error "$f"
		[ ! -e out ]
	done
	[[ "$output" == *"unused last nibble"* ]]
	[ "$(ls | grep -c tmp)" -eq 0 ]
}

@test "- reads a delta from stdin and writes weights to stdout; .gz on either side" {
	sn-delta diff "$FX/w0" "$FX/w1" -o d.gz -c bf16
	gzip -t d.gz
	sn-delta diff "$FX/w0" "$FX/w1" -o - -c bf16 | sn-delta apply "$FX/w0" - -o - >w-pipe
	sn-delta apply "$FX/w0" d.gz -o w-gz
	cmp w-pipe w-gz
	sn-delta diff "$FX/w0" "$FX/w1" -o dn.gz
	sn-delta apply "$FX/w0" dn.gz -o back.gz
	gzip -dc back.gz | cmp - "$FX/w1"
}

@test "a round by hand: sn-sgd, sn-delta diff, sn-average --base, sn-delta apply (sn-delta(1) EXAMPLES)" {
	cp "$FX/w0" w-0
	for k in 0 1; do
		sn-sgd -q -w w-0 -d "$FX/shards/shard-00$k.safetensors" -o new-$k --state state-$k \
			--iters 3 --seed $k
		sn-delta diff w-0 new-$k -o up-$k --compress int8 --feedback resid-$k
	done
	sn-average --base w-0 up-0 up-1 -o w-1
	sn-delta diff w-0 w-1 -o down.gz
	sn-delta apply w-0 down.gz -o w-1-worker
	cmp w-1 w-1-worker
	sn-delta apply w-0 up-0 -o a; sn-delta apply w-0 up-1 -o b
	sn-average a b -o w-1-by-weights
	cmp w-1 w-1-by-weights
	sn-info --verify w-1 up-0 resid-0 down.gz
	# round 2 from the averaged weights, with the residuals of round 1
	for k in 0 1; do
		sn-sgd -q -w w-1 -d "$FX/shards/shard-00$k.safetensors" -o new-$k --state state-$k \
			--iters 3 --seed $k
		sn-delta diff w-1 new-$k -o up-$k --compress int8 --feedback resid-$k
	done
	sn-average --base w-1 up-0 up-1 -o w-2
	py '_, m = rd(f[0]); assert m["round"] == "2", m' w-2
}

@test "sn-delta(1) renders cleanly" {
	run bash -c "MANWIDTH=80 man --warnings -E UTF-8 -l '$SN_ROOT/man/man1/sn-delta.1' 2>&1 >/dev/null"
	[ -z "$output" ]
}

@test "sn-info shows a delta's scheme, block, base and decoded differences, and --verify checks it" {
	sn-delta diff "$FX/w0" "$FX/w1" -o d -c int4 --block 16 --feedback r
	run sn-info d
	[ "$status" -eq 0 ]
	[[ "$output" == *"delta: scheme int4, block 16, made against weights with crc32 "* ]]
	run sn-info --json d
	[ "$status" -eq 0 ]
	echo "$output" >j
	py 'j = json.load(open("j"))[0]["delta"]; base, _ = rd(f[0]); new, _ = rd(f[1])
assert j["scheme"] == "int4" and j["block"] == "16", j
rows = {r["name"]: r for r in j["differences"]}
assert list(rows) == list(base), list(rows)
for k in base:
    t = new[k].astype("f8") - base[k].astype("f8"); r = rows[k]
    assert r["values"] in (t.size, t.size + 1), (k, r)
    assert abs(r["l2"] - np.sqrt((t ** 2).sum())) <= 0.2 * np.sqrt((t ** 2).sum()), (k, r)
    assert 0 < r["changed"] <= t.size' "$FX/w0" "$FX/w1"
	run sn-info --verify d r
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "d: OK" ] && [ "${lines[1]}" = "r: OK" ]
	# damaged, yet with a good crc32: only a delta-aware check finds these
	py 't, m = rd(f[0]); t = {k: v.copy() for k, v in t.items()}
t["fc1.weight.scale"][5] = np.nan; wr("nan-scale", t, m)
t, m = rd(f[0]); t = {k: v.copy() for k, v in t.items()}
t["fc1.bias"][0] = 0x80; wr("reserved", t, m)
t, m = rd(f[1]); t = {k: v.copy() for k, v in t.items()}
t["fc2.bias"][0] = np.inf; wr("bad-r", t, m)' d r
	for f in nan-scale reserved bad-r; do
		run sn-info --verify "$f"
		[ "$status" -eq 1 ] || { echo "$f: $output"; return 1; }
		assert_one_line_error "$f"
	done
}
