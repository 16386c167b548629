#!/usr/bin/env bats
# sn-init: net YAML -> seeded initial weights (sn.weights.v1).
load helper

# A reader that knows nothing of sn: json + numpy (and zlib for the crc).
# Prints "name shape" per tensor; checks the layout, metadata and crc32.
read_weights() {
	"$PY" - "$@" <<'EOF'
import json, sys, zlib
import numpy as np
path, yaml_path = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
raw = open(path, "rb").read()
n = int.from_bytes(raw[:8], "little")
assert (8 + n) % 8 == 0, "data section not 8-aligned"
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
meta = header.pop("__metadata__")
assert meta["format"] == "sn.weights.v1", meta
assert meta["steps"] == "0" and meta["round"] == "0" and meta["examples"] == "0", meta
if yaml_path:
    assert meta["net"] == open(yaml_path).read(), "net metadata is not the YAML text"
assert int(meta["crc32"], 16) == zlib.crc32(data), "crc32 mismatch"
end = 0
for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    a, b = t["data_offsets"]
    assert t["dtype"] == "F32" and a == end, (name, t)
    x = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
    assert np.isfinite(x).all()
    print(name, list(x.shape), f"{x.std():.6f}")
    end = b
assert end == len(data), "data section has trailing bytes"
EOF
}

@test "sn-init writes LeNet's 431,080 parameters in a file numpy reads with json alone" {
	run sn-init "$NETS/lenet.yaml" -o w.safetensors
	[ "$status" -eq 0 ]
	[ -z "$output" ]          # the summary goes to a terminal only
	run read_weights w.safetensors "$NETS/lenet.yaml"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	[[ "${lines[0]}" == "conv1.weight [20, 1, 5, 5] "* ]]
	[[ "${lines[1]}" == "conv1.bias [20] 0.000000" ]]
	[[ "${lines[4]}" == "fc1.weight [500, 800] "* ]]
	[[ "${lines[7]}" == "fc2.bias [10] 0.000000" ]]
	[ "${#lines[@]}" -eq 8 ]
	total=$("$PY" -c 'import json,sys,math
raw=open("w.safetensors","rb").read(); h=json.loads(raw[8:8+int.from_bytes(raw[:8],"little")])
print(sum(math.prod(t["shape"]) for k,t in h.items() if k!="__metadata__"))')
	[ "$total" -eq 431080 ]
}

@test "He initialisation scales each weight by its fan-in" {
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	run read_weights w.safetensors
	# fc1: fan_in 800 -> std sqrt(2/800) = 0.05
	std=$(printf '%s\n' "${lines[@]}" | awk '$1 == "fc1.weight" {print $NF}')
	awk -v s="$std" 'BEGIN { exit !(s > 0.0495 && s < 0.0505) }'
}

@test "sn-info reads what sn-init writes" {
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	run sn-info --verify w.safetensors
	[ "$status" -eq 0 ]
	[ "$output" = "w.safetensors: OK" ]
	run sn-info w.safetensors
	[ "$status" -eq 0 ]
	[[ "$output" == *"w.safetensors: sn.weights.v1, 8 tensors"* ]]
	[[ "$output" == *"parameters: 431,080"* ]]
}

@test "on a terminal sn-init prints one summary line, and -q silences it" {
	command -v script >/dev/null || skip "script(1) is not installed"
	run script -qec "sn-init '$NETS/lenet.yaml' -o w.safetensors" /dev/null
	[ "$status" -eq 0 ]
	[ "${output%$'\r'}" = "lenet: 431,080 parameters -> w.safetensors" ]
	run script -qec "sn-init -q '$NETS/lenet.yaml' -o w.safetensors" /dev/null
	[ "$status" -eq 0 ]
	[ -z "$output" ]
}

@test "the same seed gives the same bytes, another seed other weights" {
	sn-init "$NETS/lenet.yaml" -o a.safetensors --seed 42
	sn-init "$NETS/lenet.yaml" -o b.safetensors --seed 42
	sn-init "$NETS/lenet.yaml" -o c.safetensors --seed 43
	sn-init "$NETS/lenet.yaml" -o d.safetensors
	sn-init "$NETS/lenet.yaml" -o e.safetensors --seed 1
	cmp a.safetensors b.safetensors
	! cmp -s a.safetensors c.safetensors || false
	cmp d.safetensors e.safetensors      # the default seed is 1
}

@test "--init xavier and --init gaussian:STD draw other weights" {
	sn-init "$NETS/mlp.yaml" -o he.safetensors
	sn-init "$NETS/mlp.yaml" -o xa.safetensors --init xavier
	sn-init "$NETS/mlp.yaml" -o ga.safetensors -i gaussian:0.01
	! cmp -s he.safetensors xa.safetensors || false
	! cmp -s xa.safetensors ga.safetensors || false
	run read_weights xa.safetensors "$NETS/mlp.yaml"
	[ "$status" -eq 0 ]
	# xavier on 784 -> 256: a = sqrt(6/1040), std a/sqrt(3) = 0.0439
	std=$(printf '%s\n' "${lines[@]}" | awk '$1 == "fc1.weight" {print $NF}')
	awk -v s="$std" 'BEGIN { exit !(s > 0.0435 && s < 0.0443) }'
	run read_weights ga.safetensors
	std=$(printf '%s\n' "${lines[@]}" | awk '$1 == "fc1.weight" {print $NF}')
	awk -v s="$std" 'BEGIN { exit !(s > 0.0099 && s < 0.0101) }'
}

@test "every example net initialises" {
	for net in "$NETS"/*.yaml; do
		sn-init "$net" -o w.safetensors
		read_weights w.safetensors "$net" >/dev/null
	done
	sn-init "$NETS/cifar10_quick.yaml" -o w.safetensors
	run read_weights w.safetensors
	[[ "${lines[6]}" == "fc1.weight [64, 1024] "* ]]
}

@test "-o - writes the weights to stdout and NET - reads stdin" {
	sn-init "$NETS/lenet.yaml" -o file.safetensors
	sn-init "$NETS/lenet.yaml" -o - > out.safetensors
	cmp file.safetensors out.safetensors
	sn-init - -o piped.safetensors < "$NETS/lenet.yaml"
	cmp file.safetensors piped.safetensors
}

@test "an output name ending in .gz is gzip-compressed" {
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	sn-init "$NETS/lenet.yaml" -o w.safetensors.gz
	[ "$(head -c 2 w.safetensors.gz | od -An -tx1 | tr -d ' ')" = 1f8b ]
	gzip -dc w.safetensors.gz | cmp - w.safetensors
}

@test "an unknown layer kind is one line with file:line:column, exit 1, no output" {
	printf 'name: bad\ninput: [1, 8, 8]\nlayers:\n  - {type: convv, filters: 2}\n  - softmax_cross_entropy\n' > bad.yaml
	run sn-init bad.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[ "$output" = 'sn-init: bad.yaml:4:12: unknown layer kind "convv"' ]
	[ ! -e w.safetensors ]
}

@test "bad definitions each exit 1 naming the file, line and column" {
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, filters: 2, kernel: -3}\n  - softmax_cross_entropy\n' > neg.yaml
	printf 'input: [4]\nlayer:\n  - softmax_cross_entropy\n' > key.yaml
	printf 'input: [4]\nlayers:\n  - {type: dense, units: 1O}\n  - softmax_cross_entropy\n' > num.yaml
	printf 'input: [4]\nlayers:\n  - softmax_cross_entropy\n  - {type: dense, units: 2}\n' > loss.yaml
	printf 'input: [1, 4, 4]\nlayers:\n  - {type: maxpool, kernel: 5}\n  - softmax_cross_entropy\n' > big.yaml
	printf 'input: [4\nlayers: []\n' > syntax.yaml
	for f in neg:3:5 key:2:1 num:3:26 loss:3:5 big:3:5 syntax:; do
		run sn-init "${f%%:*}.yaml" -o w.safetensors
		[ "$status" -eq 1 ] || { echo "$f: status $status"; false; }
		[ "${#lines[@]}" -eq 1 ] || { echo "$output"; false; }
		[[ "$output" == "sn-init: ${f%%:*}.yaml:${f#*:}"* ]] || { echo "$output"; false; }
	done
	[ ! -e w.safetensors ]
}

@test "a graph net's inputs must name earlier layers, joins must fit, each error with its line" {
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, name: a, filters: 2, kernel: 3, pad: 1}\n  - {type: add, inputs: [a, b]}\n  - {type: conv, name: b, filters: 2, kernel: 3, pad: 1}\n  - {type: dense, units: 3}\n  - softmax_cross_entropy\n' > later.yaml
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, name: a, filters: 2, kernel: 3}\n  - {type: add, inputs: [a, input]}\n  - {type: dense, units: 3}\n  - softmax_cross_entropy\n' > shape.yaml
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, name: a, filters: 2, kernel: 3}\n  - {type: concat, inputs: [a, input]}\n  - {type: dense, units: 3}\n  - softmax_cross_entropy\n' > concat.yaml
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, name: a, filters: 2, kernel: 3, inputs: [nope]}\n  - {type: dense, units: 3}\n  - softmax_cross_entropy\n' > unknown.yaml
	run sn-init later.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	[ "$output" = 'sn-init: later.yaml:4:29: inputs: "b" is a later layer (line 5); inputs name earlier layers only, so a net has no cycles' ]
	run sn-init shape.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	[ "$output" = 'sn-init: shape.yaml:4:5: add: input 2 is [1,8,8] but input 1 is [2,6,6]; add needs inputs of one shape (inputs: a, input)' ]
	run sn-init concat.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	[[ "$output" == 'sn-init: concat.yaml:4:5: concat: input 2 is [1,8,8] but input 1 is [2,6,6]; concat needs one height and width'* ]]
	run sn-init unknown.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	[ "$output" = 'sn-init: unknown.yaml:3:59: inputs: no layer is named "nope"' ]
	[ ! -e w.safetensors ]
}

@test "a layer whose output nobody reads is a warning with its line; the weights are still written" {
	printf 'input: [1, 8, 8]\nlayers:\n  - {type: conv, name: a, filters: 2, kernel: 3}\n  - {type: conv, name: side, filters: 2, kernel: 3}\n  - {type: dense, units: 3, inputs: a}\n  - softmax_cross_entropy\n' > unused.yaml
	run sn-init unused.yaml -o w.safetensors
	[ "$status" -eq 0 ]
	[ "$output" = 'sn-init: warning: unused.yaml:4:5: the output of layer side is not used by any layer' ]
	read_weights w.safetensors unused.yaml >/dev/null
	sn-init "$NETS/resnet.yaml" -o r.safetensors 2>err
	[ ! -s err ]
}

@test "a net that does not exist is a runtime error naming it" {
	run sn-init missing.yaml -o w.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error missing.yaml
}

@test "an unwritable output exits 1 and leaves no file" {
	touch notadir
	run sn-init "$NETS/lenet.yaml" -o notadir/w.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error notadir/w.safetensors
	run sn-init "$NETS/lenet.yaml" -o nodir/w.safetensors
	[ "$status" -eq 1 ]
	assert_one_line_error nodir/w.safetensors
	[ "$(ls -A)" = notadir ]
}

@test "a read-only output directory exits 1 and is left empty" {
	[ "$(id -u)" -ne 0 ] || skip "root writes into read-only directories"
	mkdir ro && chmod 555 ro
	run sn-init "$NETS/lenet.yaml" -o ro/w.safetensors
	chmod 755 ro
	[ "$status" -eq 1 ]
	assert_one_line_error ro/w.safetensors
	[ -z "$(ls -A ro)" ]
}

@test "an existing output is replaced whole, never half-written" {
	sn-init "$NETS/mlp.yaml" -o w.safetensors
	sn-init "$NETS/lenet.yaml" -o w.safetensors
	read_weights w.safetensors "$NETS/lenet.yaml" >/dev/null
	[ "$(ls -A)" = w.safetensors ]
}

@test "bad option values are usage errors (exit 2)" {
	run sn-init "$NETS/lenet.yaml"
	[ "$status" -eq 2 ]
	[[ "${lines[0]}" == "sn-init: missing -o OUT" ]]
	run sn-init -o w.safetensors
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" -o w.safetensors --seed 1x
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" -o w.safetensors --seed -1
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" -o w.safetensors --init orthogonal
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" -o w.safetensors --init gaussian:0
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" -o w.safetensors --init gaussian:
	[ "$status" -eq 2 ]
	run sn-init "$NETS/lenet.yaml" "$NETS/mlp.yaml" -o w.safetensors
	[ "$status" -eq 2 ]
	run sn-init --frobnicate
	[ "$status" -eq 2 ]
	[ ! -e w.safetensors ]
}

@test "--help prints usage on stdout and --version the version" {
	run sn-init --help
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == "Usage: sn-init NET.yaml -o OUT"* ]]
	[[ "$output" == *"--init METHOD"* ]]
	run sn-init --version
	[ "$status" -eq 0 ]
	[[ "$output" == "sn-init (sn) "* ]]
}

@test "the man page renders cleanly" {
	run bash -c "MANWIDTH=80 man --warnings -l '$SN_ROOT/man/man1/sn-init.1' 2>&1 >/dev/null"
	[ -z "$output" ]
	MANWIDTH=80 man -l "$SN_ROOT/man/man1/sn-init.1" | grep -q "EXIT STATUS"
}

@test "SIGTERM or SIGINT while sn-init writes leaves no temporary file and the old output" {
	sn-init "$NETS/mlp.yaml" -o w.safetensors --seed 1
	cp w.safetensors w.before
	for fault in fsync:signal=SIGTERM write:signal=SIGINT:when=2 write:signal=SIGTERM:when=1; do
		run strace -f -o /dev/null -e inject="$fault" sn-init "$NETS/mlp.yaml" -o w.safetensors --seed 2
		[ "$status" -gt 128 ] || { echo "$fault: status $status: $output"; return 1; }
		cmp w.safetensors w.before
		[ -z "$(find . -name '*.tmp*')" ] || { echo "$fault: $(ls)"; return 1; }
	done
}

@test "a failed fsync or rename leaves the old output and no temporary file" {
	sn-init "$NETS/mlp.yaml" -o w.safetensors --seed 1
	cp w.safetensors w.before
	for fault in fsync:error=EIO rename,renameat,renameat2:error=EIO write:error=ENOSPC:when=2+; do
		run strace -f -o /dev/null -e inject="$fault" sn-init "$NETS/mlp.yaml" -o w.safetensors --seed 2
		[ "$status" -eq 1 ] || { echo "$fault: status $status: $output"; return 1; }
		cmp w.safetensors w.before
		[ -z "$(find . -name '*.tmp*')" ]
	done
}

@test "sn-init refuses to write over its own net definition, exit 2" {
	cp "$NETS/mlp.yaml" net.yaml
	run sn-init net.yaml -o ./net.yaml
	[ "$status" -eq 2 ]
	[[ "$output" == "sn-init: "*"same file"* ]]
	cmp net.yaml "$NETS/mlp.yaml"
}
