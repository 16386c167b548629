#!/usr/bin/env bats
# sn-average: the mean, the weighted mean and the outer Nesterov step, checked
# against numpy on weight files this suite writes with plain python.

load helper

# mkw FILE SEED [EXAMPLES] [LOSS] [STEPS] [ROUND] [SHAPE_OF_B] [NET]: a weight file
# with two tensors a[3,4], b[SHAPE] of seeded normals, in safetensors with crc32.
mkw() {
	"$PY" - "$@" <<'PY'
import json, struct, sys, zlib
import numpy as np
a = sys.argv[1:] + [None] * 8
path, seed = a[0], int(a[1])
examples, loss, steps, rnd = a[2] or "100", a[3] or "2.5", a[4] or "10", a[5] or "0"
bshape = [int(x) for x in (a[6] or "5").split(",")]
net = a[7] or "name: t\n"
rng = np.random.default_rng(seed)
ts = {"a": rng.standard_normal((3, 4)).astype("<f4"),
      "b": (rng.standard_normal(bshape) * 1e3).astype("<f4")}
hdr, data, off = {}, b"", 0
for k, v in ts.items():
    raw = v.tobytes(); hdr[k] = {"dtype": "F32", "shape": list(v.shape),
                                 "data_offsets": [off, off + len(raw)]}
    data += raw; off += len(raw)
hdr["__metadata__"] = {"format": "sn.weights.v1", "net": net, "examples": examples,
    "loss": loss, "steps": steps, "round": rnd, "seconds": str(seed / 10),
    "crc32": "%08x" % zlib.crc32(data)}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
}

# py 'expr' FILES...: evaluate python with rd(path) -> (tensors dict, metadata)
py() {
	local code=$1; shift
	"$PY" - "$@" <<PY
import json, struct, sys
import numpy as np
def rd(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); m = h.pop("__metadata__", {})
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
            dtype="<f4").reshape(v["shape"]) for k, v in h.items()}, m
f = sys.argv[1:]
$code
PY
}

@test "sn-average IN... -o OUT writes the mean of the inputs" {
	mkw w1 1; mkw w2 2; mkw w3 3
	run sn-average w1 w2 w3 -o out
	[ "$status" -eq 0 ]
	py 'o, m = rd(f[0]); ins = [rd(p)[0] for p in f[1:]]
for k in o:
    ref = (sum(i[k].astype("f8") for i in ins) / 3).astype("f4")
    assert np.array_equal(o[k], ref), k
assert m["format"] == "sn.weights.v1" and m["net"] == "name: t\n"' out w1 w2 w3
}

@test "sn-average --weighted weights inputs by their examples" {
	mkw w1 1 100; mkw w2 2 300; mkw w3 3 50
	run sn-average --weighted w1 w2 w3 -o out
	[ "$status" -eq 0 ]
	py 'o, m = rd(f[0]); ins = [rd(p) for p in f[1:]]
n = [float(i[1]["examples"]) for i in ins]
for k in o:
    ref = sum(i[0][k].astype("f8") * e for i, e in zip(ins, n)) / sum(n)
    assert np.allclose(o[k], ref, rtol=1e-6, atol=1e-6), k
assert m["examples"] == "450"' out w1 w2 w3
}

@test "sn-average writes steps, examples, loss, round and seconds by the documented rules" {
	mkw w1 1 100 1.0 60 3; mkw w2 2 300 2.0 70 3
	run sn-average w1 w2 -o out
	[ "$status" -eq 0 ]
	py 'o, m = rd(f[0])
assert m["examples"] == "400", m
assert abs(float(m["loss"]) - 1.75) < 1e-9, m
assert m["steps"] == "65" and m["round"] == "4", m
assert abs(float(m["seconds"]) - 0.2) < 1e-9, m' out
	mkw base 9 0 3 50 3
	run sn-average --base base w1 w2 -o out2
	[ "$status" -eq 0 ]
	py 'o, m = rd(f[0]); assert m["steps"] == "65" and m["round"] == "4", m' out2
}

@test "sn-average outer Nesterov over two rounds matches numpy, with its state file" {
	mkw prev 10 0 0 0 0
	mkw w1 1; mkw w2 2
	run sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	[ "$status" -eq 0 ]
	[ -f st ]
	mkw w3 3 100 2 10 1; mkw w4 4 100 2 10 1
	run sn-average --base next --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w3 w4 -o next2
	[ "$status" -eq 0 ]
	py 'P, _ = rd("prev"); W = [rd(p)[0] for p in ("w1", "w2", "w3", "w4")]
N1, m1 = rd("next"); N2, m2 = rd("next2"); S, sm = rd("st")
assert sm["format"] == "sn.outer.v1" and sm["round"] == "2", sm
assert m1["round"] == "1" and m2["round"] == "2"
for k in P:
    mean = (W[0][k].astype("f8") + W[1][k]) / 2
    d = P[k].astype("f8") - mean; mom = d
    w = P[k] - 0.7 * (d + 0.9 * mom)
    assert np.allclose(N1[k], w, rtol=1e-5, atol=1e-4), k
    mean = (W[2][k].astype("f8") + W[3][k]) / 2
    d = N1[k].astype("f8") - mean; mom = 0.9 * mom.astype("f4") + d
    w = N1[k] - 0.7 * (d + 0.9 * mom)
    assert np.allclose(N2[k], w, rtol=1e-5, atol=1e-3), k
    assert np.allclose(S[k], mom, rtol=1e-5, atol=1e-3), k'
}

@test "sn-average --outer-lr 1 --outer-momentum 0 is the plain mean, bit for bit" {
	mkw prev 10 0 0 0 0; mkw w1 1; mkw w2 2; mkw w3 3
	run sn-average --base prev --outer-lr 1 --outer-momentum 0 --outer-state st w1 w2 w3 -o outer
	[ "$status" -eq 0 ]
	run sn-average --base prev w1 w2 w3 -o plain
	[ "$status" -eq 0 ]
	cmp outer plain
}

@test "sn-average refuses an outer state from another round" {
	mkw prev 10 0 0 0 5; mkw w1 1; mkw w2 2
	run sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	[ "$status" -eq 0 ]
	run sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o again
	[ "$status" -eq 1 ]
	assert_one_line_error st
	[[ "$output" == *"round 6"*"round 5"* ]]
	[ ! -e again ]
}

@test "sn-average gives the same bytes whatever the order of its inputs" {
	for i in 1 2 3 4 5 6 7; do mkw "w$i" "$i" $((i * 37)); done
	run sn-average w1 w2 w3 w4 w5 w6 w7 -o a
	[ "$status" -eq 0 ]
	run sn-average w5 w3 w7 w1 w6 w2 w4 -o b
	[ "$status" -eq 0 ]
	run sn-average --weighted w7 w6 w5 w4 w3 w2 w1 -o c
	[ "$status" -eq 0 ]
	run sn-average --weighted w2 w4 w6 w1 w3 w5 w7 -o d
	[ "$status" -eq 0 ]
	cmp a b
	cmp c d
}

@test "sn-average - reads the input names from stdin, spaces and dashes included" {
	mkw "w one" 1; mkw ./-w2 2
	printf 'w one\n-w2\n' >list
	run sn-average - -o "out put" <list
	[ "$status" -eq 0 ]
	run sn-average -o direct -- "w one" -w2
	[ "$status" -eq 0 ]
	cmp "out put" direct
}

@test "sn-average fails with exit 4 and no output when fewer inputs than --min-inputs are usable" {
	mkw w1 1; mkw w2 2; echo garbage >w3
	run sn-average --min-inputs 3 w1 w2 w3 -o out
	[ "$status" -eq 4 ]
	[[ "$output" == *"w3: excluded"* ]]
	[[ "$output" == *"2 usable inputs, fewer than the 3 required"* ]]
	[ ! -e out ]
}

@test "sn-average excludes a corrupt input with a warning naming it" {
	mkw w1 1; mkw w2 2; mkw w3 3
	cp w3 bad
	printf '\x01' | dd of=bad bs=1 seek=$(( $(stat -c %s bad) - 3 )) conv=notrunc 2>/dev/null
	run sn-average w1 bad w2 -o out
	[ "$status" -eq 0 ]
	[[ "$output" == *"sn-average: bad: excluded: "*crc32* ]]
	run sn-average w1 w2 -o ref
	cmp out ref
}

@test "sn-average excludes an input holding NaN or Inf with a warning naming it" {
	mkw w1 1; mkw w2 2
	"$PY" -c '
import json, struct, zlib, numpy as np
d = np.array([np.nan, 1, 2, 3] * 3, "<f4").tobytes() + np.ones(5, "<f4").tobytes()
h = {"a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
     "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]},
     "__metadata__": {"net": "name: t\n", "crc32": "%08x" % zlib.crc32(d)}}
h = json.dumps(h).encode(); h += b" " * (-len(h) % 8)
open("nan", "wb").write(struct.pack("<Q", len(h)) + h + d)'
	run sn-average nan w1 w2 -o out
	[ "$status" -eq 0 ]
	[[ "$output" == *"sn-average: nan: excluded: "*non-finite* ]]
	run sn-average w1 w2 -o ref
	cmp out ref
}

@test "sn-average refuses inputs whose nets differ, naming both files and the tensor" {
	mkw w1 1; mkw w2 2 100 2 10 0 6
	run sn-average w1 w2 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error w2
	[[ "$output" == *"differs from w1"*'"b"'*"[6]"*"[5]"* ]]
	[ ! -e out ]
	mkw w3 3 100 2 10 0 5 "name: other\n"
	run sn-average w1 w3 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error w3
	[[ "$output" == *"differs from w1"*YAML* ]]
}

@test "sn-average refuses tensors that are not F32" {
	mkw w1 1
	"$PY" -c '
import json, struct, zlib
d = bytes(17)
h = {"a": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12]},
     "b": {"dtype": "U8", "shape": [5], "data_offsets": [12, 17]},
     "__metadata__": {"net": "name: t\n", "crc32": "%08x" % zlib.crc32(d)}}
h = json.dumps(h).encode(); h += b" " * (-len(h) % 8)
open("u8", "wb").write(struct.pack("<Q", len(h)) + h + d)'
	run sn-average w1 u8 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error u8
	[[ "$output" == *'"a" is U8, expected F32'* ]]
}

@test "sn-average --json reports inputs used and excluded, examples and loss" {
	mkw w1 1 10 1.0; mkw w2 2 30 3.0; : >empty
	run sn-average --json w1 w2 empty -o out
	[ "$status" -eq 0 ]
	echo "$output" | grep -v '^sn-average: ' | "$PY" -c '
import json, sys; j = json.load(sys.stdin)
assert j["used"] == 2 and j["excluded"] == 1 and j["examples"] == 40, j
assert abs(j["loss"] - 2.5) < 1e-9, j'
}

@test "sn-average reports a missing base as a one-line error" {
	mkw w1 1
	run sn-average --base nope --outer-lr 0.7 w1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error nope
	[ ! -e out ]
}

@test "sn-average rejects bad usage with exit 2" {
	mkw w1 1
	run sn-average w1
	[ "$status" -eq 2 ]
	run sn-average -o out
	[ "$status" -eq 2 ]
	run sn-average --outer-lr 0.7 w1 -o out
	[ "$status" -eq 2 ]
	run sn-average --min-inputs 0 w1 -o out
	[ "$status" -eq 2 ]
	run sn-average --outer-momentum x --base w1 w1 -o out
	[ "$status" -eq 2 ]
	[ ! -e out ]
}

@test "sn-average --help and --version print on stdout and exit 0" {
	run sn-average --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"Usage: sn-average"* ]]
	run sn-average --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-average (sn) "* ]]
}

@test "sn-average(1) renders cleanly" {
	run man -l --warnings=w "$SN_ROOT/man/man1/sn-average.1"
	[ "$status" -eq 0 ]
	[[ "$output" == *"EXIT STATUS"* ]]
	run bash -c "MANWIDTH=80 man --warnings -l '$SN_ROOT/man/man1/sn-average.1' 2>&1 >/dev/null"
	[ -z "$output" ]
}

# ---- a failed command leaves everything as it was ----------------------------

# unchanged FILE...: each FILE still equals FILE.before, and no temporary is left
unchanged() {
	for f in "$@"; do cmp "$f" "$f.before" || { echo "$f changed"; return 1; }; done
	[ -z "$(find . -name '*.tmp*')" ] || { find . -name '*.tmp*'; return 1; }
}

@test "sn-average with OUT in a missing directory leaves the outer state as it was, and a retry works" {
	mkw prev 10 0 0 0 0; mkw w1 1; mkw w2 2
	run sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	[ "$status" -eq 0 ]
	mkw w3 3 100 2 10 1; mkw w4 4 100 2 10 1
	cp st st.before
	run sn-average --base next --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w3 w4 \
		-o /nonexistent-dir/next2
	[ "$status" -eq 1 ]
	assert_one_line_error /nonexistent-dir/next2
	unchanged st
	run sn-average --base next --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w3 w4 -o next2
	[ "$status" -eq 0 ]
	py 'S, sm = rd("st"); assert sm["round"] == "2", sm' 
}

@test "sn-average commits the weights and the outer state together: any failed step changes neither" {
	mkw prev 10 0 0 0 0; mkw w1 1; mkw w2 2
	sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	mkw w3 3 100 2 10 1; mkw w4 4 100 2 10 1
	cp w1 next2	# an older file under the output's name
	cp st st.before; cp next2 next2.before
	for fault in rename,renameat,renameat2:error=EIO:when=1 \
		rename,renameat,renameat2:error=EIO:when=2 fsync:error=ENOSPC:when=1 \
		fsync:error=ENOSPC:when=2 write:error=ENOSPC:when=1+ write:error=ENOSPC:when=3+; do
		run strace -f -o /dev/null -e inject="$fault" sn-average --base next --outer-lr 0.7 \
			--outer-momentum 0.9 --outer-state st w3 w4 -o next2
		[ "$status" -eq 1 ] || { echo "$fault: status $status: $output"; return 1; }
		unchanged st next2 || { echo "after $fault"; return 1; }
	done
	for fault in fsync:signal=SIGTERM:when=1 fsync:signal=SIGINT:when=2 write:signal=SIGTERM:when=2; do
		run strace -f -o /dev/null -e inject="$fault" sn-average --base next --outer-lr 0.7 \
			--outer-momentum 0.9 --outer-state st w3 w4 -o next2
		[ "$status" -gt 128 ] || { echo "$fault: status $status: $output"; return 1; }
		unchanged st next2 || { echo "after $fault"; return 1; }
	done
	run sn-average --base next --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w3 w4 -o next2
	[ "$status" -eq 0 ]
}

@test "sn-average refuses an output that is an input or the other output, exit 2" {
	mkw prev 10 0 0 0 0; mkw w1 1; mkw w2 2
	sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	for f in prev w1 w2 st next; do cp "$f" "$f.before"; done
	printf 'w1\nw2\n' >list
	for args in "--base prev --outer-lr 0.7 --outer-state st w1 w2 -o st" \
		"--base prev --outer-lr 0.7 --outer-state ./next w1 w2 -o next" \
		"--base prev --outer-lr 0.7 --outer-state w1 w1 w2 -o next" \
		"--base prev --outer-lr 0.7 --outer-state prev w1 w2 -o next" \
		"w1 w2 -o w2" "w1 w2 -o ./w1" "--base prev w1 w2 -o prev" "- -o w2"; do
		run sn-average $args <list
		[ "$status" -eq 2 ] || { echo "$args: status $status: $output"; return 1; }
		[[ "$output" == "sn-average: "*"same file"* ]] || { echo "$args: $output"; return 1; }
		unchanged prev w1 w2 st next
	done
}

@test "sn-average --json on a full standard output exits 1 and says so" {
	mkw w1 1; mkw w2 2
	run bash -c 'sn-average --json w1 w2 -o out >/dev/full'
	[ "$status" -eq 1 ]
	[ "$output" = "sn-average: standard output: No space left on device" ]
}

@test "sn-average --base BASE DELTA... equals sn-delta apply then sn-average, bit for bit" {
	mkw w0 1 100 2.5 10 4; mkw w1 2 300 1.5 60 4; mkw w2 3 50 2.0 70 4; mkw w3 4 80 1.0 65 4
	for s in none bf16 int8 int4; do
		for k in 1 2 3; do
			sn-delta diff w0 w$k -o d$k -c $s
			sn-delta apply w0 d$k -o a$k
		done
		for opts in "" "--weighted" "--outer-lr 0.7 --outer-momentum 0.9"; do
			rm -f os-d os-a
			st_d=() st_a=()
			[ -n "$opts" ] && [ "$opts" != "--weighted" ] && st_d=(--outer-state os-d) st_a=(--outer-state os-a)
			sn-average --base w0 $opts "${st_d[@]}" d1 d2 d3 -o by-delta
			sn-average --base w0 $opts "${st_a[@]}" a1 a2 a3 -o by-weights
			cmp by-delta by-weights || { echo "$s $opts"; return 1; }
			[ -z "${st_d[*]}" ] || cmp os-d os-a
			# deltas and weight files mixed
			sn-average --base w0 $opts d1 a2 d3 -o mixed
			cmp mixed by-weights || { echo "mixed $s $opts"; return 1; }
		done
	done
}

@test "sn-average refuses a delta without --base or made against other weights, writing nothing" {
	mkw w0 1; mkw w1 2; mkw other 5
	sn-delta diff w0 w1 -o d -c int8
	run sn-average d -o out
	[ "$status" -eq 1 ]
	assert_one_line_error d
	[[ "$output" == *"needs --base"* ]]
	run sn-average --base other d w1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error d
	[[ "$output" == *"made against other weights"* ]]
	[ ! -e out ]
}

@test "sn-average excludes a damaged delta with a warning, like a damaged weight file" {
	mkw w0 1; mkw w1 2; mkw w2 3
	sn-delta diff w0 w1 -o d1 -c int4; sn-delta diff w0 w2 -o d2 -c int4
	head -c 300 d2 >d2-cut
	run sn-average --base w0 d1 d2-cut -o out --json
	[ "$status" -eq 0 ]
	[[ "$output" == *"d2-cut: excluded: "*"truncated"* && "$output" == *'"used":1'* ]]
}

@test "sn-average excludes an input whose counters are not non-negative integers, naming it" {
	mkw w1 1 100; mkw w2 2 300
	mkw abc 3 100 2.5 abc; mkw neg 4 -100; mkw r 5 100 2.5 10 1.5; mkw big 6 100 2.5 10 9223372036854775808
	run sn-average --json w1 abc neg r big w2 -o out
	[ "$status" -eq 0 ]
	[[ "$output" == *"sn-average: abc: excluded: "*steps* ]]
	[[ "$output" == *"sn-average: neg: excluded: "*examples* ]]
	[[ "$output" == *"sn-average: r: excluded: "*round* ]]
	[[ "$output" == *"sn-average: big: excluded: "*round* ]]
	echo "$output" | grep -v '^sn-average: ' | "$PY" -c '
import json, sys; j = json.load(sys.stdin)
assert j["used"] == 2 and j["excluded"] == 4 and j["examples"] == 400, j'
	run sn-average abc neg -o out2
	[ "$status" -eq 4 ]
	[ ! -e out2 ]
}

@test "sn-average refuses counters whose sum or next round would overflow, naming the file" {
	mkw w1 1 9223372036854775000; mkw w2 2 1000
	run sn-average w1 w2 -o out
	[ "$status" -eq 1 ]
	[[ "$output" == *": w"[12]": "*examples* ]]
	[ ! -e out ]
	mkw r1 1 100 2.5 10 9223372036854775807
	run sn-average r1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error r1
	[[ "$output" == *round* ]]
	mkw w1 1; mkw base 9 0 3 abc 3
	run sn-average --base base w1 -o out
	[ "$status" -eq 1 ]
	assert_one_line_error base
	[[ "$output" == *steps* ]]
	[ ! -e out ]
}

@test "sn-average's outer step moves only parameters: batchnorm running statistics take the plain mean" {
	# prev has running_var 1; the workers 0.1 and 0.2: an outer step of 0.7/0.9
	# on them would extrapolate below zero
	for f in prev:1.0:0 w1:0.1:1 w2:0.2:2; do
		"$PY" - "${f%%:*}" "$(echo "$f" | cut -d: -f2)" "${f##*:}" <<'PY'
import json, struct, sys, zlib
import numpy as np
path, var, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ts = {"conv.weight": np.random.default_rng(seed).standard_normal(6).astype("<f4"),
      "bn.running_mean": np.full(3, var, "<f4"), "bn.running_var": np.full(3, var, "<f4")}
hdr, data = {}, b""
for k, v in ts.items():
    hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(data), len(data) + v.nbytes]}
    data += v.tobytes()
hdr["__metadata__"] = {"format": "sn.weights.v1", "net": "name: t\n", "examples": "10",
    "steps": "1", "round": "0", "crc32": "%08x" % zlib.crc32(data)}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
	done
	run sn-average --base prev --outer-lr 0.7 --outer-momentum 0.9 --outer-state st w1 w2 -o next
	[ "$status" -eq 0 ]
	py 'o = rd(f[0])[0]; p, a, b = (rd(x)[0] for x in f[1:4]); m = rd(f[4])[0]
for k in ("bn.running_mean", "bn.running_var"):
    assert np.array_equal(o[k], ((a[k].astype("f8") + b[k]) / 2).astype("f4")), k
    assert not m[k].any(), k
mean = (a["conv.weight"].astype("f8") + b["conv.weight"]) / 2
assert not np.allclose(o["conv.weight"], mean.astype("f4")), "the parameters took no outer step"' next prev w1 w2 st
}
