#!/usr/bin/env bats
# sn-train across ssh hosts: two private sshd "hosts" on 127.0.0.1, each with
# its own host key, port and work directory (see ssh_hosts.bash).

load helper
load ssh_hosts

setup_file() {
	export FX=$BATS_FILE_TMPDIR/fx
	mkdir -p "$FX"
	sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 2 --stratify --seed 1 --limit 2000 -o "$FX/shards"
	sn-shard "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
		-k 1 --limit 1000 --stats-from "$FX/shards/shard-000.safetensors" -o "$FX/test"
}

# same_tensors A B: the two weight files hold identical tensors
same_tensors() {
	"$PY" - "$1" "$2" <<'PY'
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

setup() {
	command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || skip "openssh-server is not installed"
	sn_setup_tmp
	ssh_hosts_start 2
	SSH="ssh -F $TMP/hosts/ssh_config"
}

teardown() {
	ssh_hosts_stop
	[ -z "$(ssh_hosts_running)" ] || { echo "sshd still running: $(ssh_hosts_running)"; return 1; }
	sn_teardown_tmp
}

@test "sn-train -S runs the rounds on two ssh hosts and accuracy rises" {
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds 3 --iters 20 \
		--eval "$FX/test/shard-000.safetensors" --ssh "$SSH" -S h1 -S h2 --remote-path "$SN_BIN" \
		--keep-remote --quiet >out.txt
	[ -f run/w-0003.safetensors ]
	awk -F '\t' 'NR > 1 && $6 != 2 { exit 1 }' run/log.tsv
	first=$(awk -F '\t' 'NR == 2 { print $9 }' run/log.tsv)
	lastacc=$(awk -F '\t' 'NR == 4 { print $9 }' run/log.tsv)
	awk -v a="$first" -v b="$lastacc" 'BEGIN { exit !(b > a && b > 0.6) }'
	# each host got the shard of the worker it runs, and both ran workers
	id=$(cat run/run-id)
	cmp "$FX/shards/shard-000.safetensors" "$TMP/hosts/h1/work/.sn-train/$id/shards/shard-000.safetensors"
	cmp "$FX/shards/shard-001.safetensors" "$TMP/hosts/h2/work/.sn-train/$id/shards/shard-001.safetensors"
	[ ! -e "$TMP/hosts/h1/work/.sn-train/$id/shards/shard-001.safetensors" ]
	for h in h1 h2; do
		grep -q "host $h: staged 1 shards" run/events.log
		grep -q "done on $h" run/events.log
		grep -q 'Accepted publickey' "$TMP/hosts/$h/sshd.log"
	done
}

@test "sn-train --compress int8 over ssh: every replica holds the master's weights, and the run equals the local one" {
	args=(--net "$NETS/mlp.yaml" --shards "$FX/shards" --rounds 3 --iters 10 --seed 6 --compress int8 --quiet)
	sn-train "${args[@]}" --out local
	sn-train "${args[@]}" --out run --ssh "$SSH" -S h1,h2 --remote-path "$SN_BIN" --keep-remote
	same_tensors local/w-0003.safetensors run/w-0003.safetensors
	# each host rebuilt the last round's weights from the broadcast delta
	id=$(cat run/run-id)
	for h in h1 h2; do
		cmp run/w-0002.safetensors "$TMP/hosts/$h/work/.sn-train/$id/w-0002.safetensors"
		[ ! -e "$TMP/hosts/$h/work/.sn-train/$id/w-0000.safetensors" ]
	done
	# after the first round a job moves deltas, not weights, and the states
	# stay on the hosts until the last round (a checkpoint) brings them home
	w=$(stat -c %s run/w-0000.safetensors)
	awk -F '\t' -v w="$w" 'NR == 3 && ($10 > 2 * 0.35 * w || $11 > 2 * 0.35 * w) { exit 1 }
		NR == 4 && $11 < 2 * w { exit 1 }' run/log.tsv
}

@test "sn-train reads an sshloginfile and removes the hosts' work directories at the end" {
	printf 'h1\n# a comment\n\n1/%s h2\n' "$SSH" >"login file"
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds 1 --iters 3 \
		--ssh "$SSH" --sshloginfile "login file" --remote-path "$SN_BIN" --quiet
	[ "$status" -eq 0 ]
	grep -q "done on 1/$SSH h2" run/events.log
	[ -z "$(find "$TMP/hosts/h1/work" "$TMP/hosts/h2/work" -mindepth 2)" ]
	grep -q 'removed' run/events.log
}

@test "sn-train moves a dead host's worker to the survivor, and the weights are those of a run without the fault" {
	args=(--net "$NETS/mlp.yaml" --shards "$FX/shards" --rounds 4 --iters 20 --seed 4
		--ssh "$SSH" -S h1,h2 --remote-path "$SN_BIN" --checkpoint-every 2 --quiet)
	sn-train "${args[@]}" --out whole
	sn-train "${args[@]}" --out run &
	pid=$!
	for _ in $(seq 600); do [ -e run/w-0001.safetensors ] && break; sleep 0.05; done
	ssh_host_down h2
	wait "$pid"
	[ -f run/w-0004.safetensors ]
	grep -q 'host h2: unreachable' run/events.log
	[ "$(wc -l <run/log.tsv)" -eq 5 ]
	awk -F '\t' 'NR > 1 && $6 != 2 { exit 1 }' run/log.tsv   # no worker was left out
	# worker 1 went to h1 and rebuilt its state from the master's checkpoint
	grep -q 'worker 1: replayed rounds' run/events.log
	grep -q 'worker 1: done on h1' run/events.log
	grep -q 'host h2: excluded at the end, its .* is left there' run/events.log
	same_tensors whole/w-0004.safetensors run/w-0004.safetensors
}

@test "sn-train --stage copies the shards to the hosts and stops" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --ssh "$SSH" -S h1,h2 --stage
	[ "$status" -eq 0 ]
	id=$(cat run/run-id)
	cmp "$FX/shards/shard-000.safetensors" "$TMP/hosts/h1/work/.sn-train/$id/shards/shard-000.safetensors"
	cmp "$FX/shards/shard-001.safetensors" "$TMP/hosts/h2/work/.sn-train/$id/shards/shard-001.safetensors"
	[ ! -e run/w-0001.safetensors ]
	run sn-train --resume --shards "$FX/shards" --out run --ssh "$SSH" -S h1,h2 \
		--remote-path "$SN_BIN" --rounds 1 --iters 3 --quiet
	[ "$status" -eq 0 ]
	[ -f run/w-0001.safetensors ]
	[ "$(grep -c 'staged 1 shards' run/events.log)" -eq 2 ]   # once per host, not again
}

@test "sn-train --resume ends the jobs a killed attempt left on a host and removes their directories" {
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --ssh "$SSH" -S h1,h2 --stage
	[ "$status" -eq 0 ]
	wd=$TMP/hosts/h1/work/.sn-train/$(cat run/run-id)
	mkdir -p "$wd/j-1-0"
	setsid sleep 300 &
	orphan=$!
	echo "$orphan" >"$wd/j-1-0/pid"
	run sn-train --resume --shards "$FX/shards" --out run --ssh "$SSH" -S h1,h2 \
		--remote-path "$SN_BIN" --rounds 1 --iters 3 --keep-remote --quiet
	[ "$status" -eq 0 ]
	[ ! -e "$wd/j-1-0" ]
	for _ in $(seq 50); do kill -0 "$orphan" 2>/dev/null || break; sleep 0.1; done
	run kill -0 "$orphan"
	[ "$status" -ne 0 ]
	[ "$(cat run/attempt)" -eq 2 ]
}

@test "sn-train exits 1 when no host can be reached" {
	ssh_host_kill h1
	ssh_host_kill h2
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds 1 --iters 3 \
		--ssh "$SSH" -S h1 -S h2 --remote-path "$SN_BIN" --quiet
	[ "$status" -eq 1 ]
	[[ "$output" == *"no host could be reached"* ]]
}
