#!/usr/bin/env bats
# sn-train on a cluster with real links: three hosts, each a network
# namespace with its own address and sshd, joined to a bridge by shaped veth
# pairs (see netns.bash).  Links are cut with `ip link set ... down`.

load helper
load netns

setup_file() {
	export FX=$BATS_FILE_TMPDIR/fx
	mkdir -p "$FX"
	sn-shard "$FMNIST/train-images-idx3-ubyte.gz" --labels "$FMNIST/train-labels-idx1-ubyte.gz" \
		-k 3 --stratify --seed 1 --limit 1500 -o "$FX/shards" 2>/dev/null
	# the undisturbed run, locally: any run over the hosts must end the same
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out "$FX/ref" --rounds 5 --iters 10 \
		--threads 1 -j 3 --quiet >/dev/null
}

setup() {
	local why
	if why=$(netns_unavailable); then skip "$why"; fi
	sn_setup_tmp
	netns_hosts_start 3 100mbit
	SSH="ssh -F $NETNS_DIR/ssh_config"
}

teardown() {
	umount "$TMP/small" 2>/dev/null || true
	netns_hosts_stop
	local left
	left=$(netns_leftovers)
	[ -z "$left" ] || { echo "left behind: $left"; return 1; }
	sn_teardown_tmp
}

# train R [OPTION]...: the suite's small run on h1..h3 into ./run
train() {
	local r=$1
	shift
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds "$r" --iters 10 \
		--threads 1 --ssh "$SSH" -S h1,h2,h3 --remote-path "$SN_BIN" --quiet "$@"
}

@test "the links carry what they are shaped to: 3 MB at 10 Mbit/s take about 2.4 s" {
	netns_hosts_stop
	netns_hosts_start 1 10mbit
	head -c 3000000 /dev/urandom >blob
	read -r down0 _ < <(netns_host_bytes h1)
	t0=$(date +%s.%N)
	netns_ssh h1 'cat >/dev/null' <blob
	t1=$(date +%s.%N)
	read -r down1 _ < <(netns_host_bytes h1)
	# the wire carried the blob plus ssh and TCP framing
	awk -v d=$((down1 - down0)) 'BEGIN { exit !(d >= 3000000 && d < 3000000 * 1.08) }'
	# never faster than the rate; slower only by the handshake and load
	awk -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
		'BEGIN { printf "%.2f s\n", t; exit !(t >= 2.4 * 0.95 && t < 2.4 * 2) }'
}

@test "a run with --compress int8 completes, and the bytes it counts are what the links carried" {
	train 1 --compress int8 --stage
	read -r d0 u0 < <(all_link_bytes)
	train 3 --compress int8 --resume --keep-remote
	read -r d1 u1 < <(all_link_bytes)
	awk -F '\t' 'NR > 1 && $6 != 3 { exit 1 }' run/log.tsv
	for h in h1 h2 h3; do grep -q "done on $h" run/events.log; done
	read -r down up < <(awk -F '\t' 'NR > 1 { d += $10; u += $11 } END { print d, u }' run/log.tsv)
	echo "down: counted $down, carried $((d1 - d0)); up: counted $up, carried $((u1 - u0))"
	# the links carried the payload plus TCP/IP and ssh framing, ACKs and the
	# reconnection of the --resume: a few percent
	awk -v c="$down" -v w=$((d1 - d0)) 'BEGIN { exit !(c > 0 && w >= c && w <= c * 1.08) }'
	awk -v c="$up" -v w=$((u1 - u0)) 'BEGIN { exit !(c > 0 && w >= c && w <= c * 1.08) }'
}

# "DOWN UP": bytes all the hosts' links carried so far
all_link_bytes() {
	local h d u td=0 tu=0
	for h in h1 h2 h3; do
		read -r d u < <(netns_host_bytes "$h")
		td=$((td + d)) tu=$((tu + u))
	done
	echo "$td $tu"
}

same_as_ref() { # ROUNDS: the run's weights after ROUNDS are the undisturbed run's
	sn-info --diff -q "$FX/ref/w-000$1.safetensors" "run/w-000$1.safetensors"
}

@test "a host whose link is cut mid-run is found out in bounded time, its worker moves, and it comes back" {
	train 5 --ssh-timeout 4 &
	pid=$!
	for _ in $(seq 1200); do [ -e run/w-0001.safetensors ] && break; sleep 0.05; done
	[ -e run/w-0001.safetensors ]
	netns_link_down h2
	t_cut=$(date +%s)
	# a silent host must not hang the run: ssh's keepalive gives up on it
	for _ in $(seq 600); do grep -q 'host h2: no answer' run/events.log && break; sleep 0.1; done
	echo "found out $(($(date +%s) - t_cut))s after the cut"
	grep -q 'host h2: no answer (ssh timed out)' run/events.log
	[ $(($(date +%s) - t_cut)) -le 20 ]
	netns_link_up h2
	for _ in $(seq 900); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; false; fi
	wait "$pid"
	[ "$(wc -l <run/log.tsv)" -eq 6 ]
	awk -F '\t' 'NR > 1 && $6 != 3 { exit 1 }' run/log.tsv   # no shard was left out
	same_as_ref 5
	# probed at the start of a round, the host answered and ran workers again
	grep -q 'host h2: answers again' run/events.log
	sed -n '/host h2: answers again/,$p' run/events.log | grep -q 'done on h2'
}

@test "a worker that fails on a host for another reason than ssh runs on another host, and that host is left out" {
	netns_host_env h2 'sn-sgd() { echo "sn-sgd: broken on this host" >&2; return 1; }'
	train 3
	awk -F '\t' 'NR > 1 && $6 != 3 { exit 1 }' run/log.tsv
	grep -q 'worker 1: failed on h2 (status 1: sn-sgd: broken on this host)' run/events.log
	grep -q "host h[13]: sending it worker 1's shard" run/events.log
	grep -q 'host h2: workers failed on it 2 times and ran elsewhere, left out' run/events.log
	[ "$(grep -c 'failed on h2' run/events.log)" -eq 2 ]   # not tried once it is left out
	same_as_ref 3
}

@test "a shard that fails on every host is warned about in every progress line, and the run exits 4" {
	for h in h1 h2 h3; do
		netns_host_env "$h" 'sn-sgd() { case "$*" in *shard-002*) echo "sn-sgd: cannot read it" >&2; return 1 ;; esac; command sn-sgd "$@"; }'
	done
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds 2 --iters 3 \
		--threads 1 --ssh "$SSH" -S h1,h2,h3 --remote-path "$SN_BIN"
	[ "$status" -eq 4 ]
	[ "$(grep -c '^round .*WARNING: left out: shard 2' <<<"$output")" -eq 2 ]
	[[ "$output" == *"shards 2 missed more than half of the 2 rounds"* ]]
	# no host is blamed for a shard that fails everywhere
	! grep -q 'left out for the rest' run/events.log
	# --min-workers 2 says a missing shard is acceptable
	rm -rf run
	run sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out run --rounds 2 --iters 3 \
		--threads 1 --ssh "$SSH" -S h1,h2,h3 --remote-path "$SN_BIN" --min-workers 2 --quiet
	[ "$status" -eq 0 ]
}

@test "a full disk on a host stops the run with exit 1, and --resume finishes it once space is freed" {
	work=$NETNS_DIR/h2/work
	netns_host_exec h2 mount -t tmpfs -o size=12m tmpfs "$work"
	train 4 &
	pid=$!
	for _ in $(seq 1200); do [ -e run/w-0001.safetensors ] && break; sleep 0.05; done
	netns_host_exec h2 sh -c "head -c 100M /dev/zero >'$work/fill'" 2>/dev/null || true
	st=0
	wait "$pid" || st=$?
	cat run/events.log
	[ "$st" -eq 1 ]
	grep -q 'fatal: round [0-9]: no space left to write on h2: .*free some and run again with --resume' run/events.log
	netns_host_exec h2 rm "$work/fill"
	run train 4 --resume
	echo "$output"
	[ "$status" -eq 0 ]
	same_as_ref 4
}

@test "a full disk in the run directory stops the run with exit 1, and --resume finishes it" {
	mkdir small
	mount -t tmpfs -o size=40m tmpfs small
	sn-train --net "$NETS/mlp.yaml" --shards "$FX/shards" --out small/run --rounds 4 --iters 10 \
		--threads 1 --ssh "$SSH" -S h1,h2,h3 --remote-path "$SN_BIN" --quiet 2>err &
	pid=$!
	for _ in $(seq 1200); do [ -e small/run/w-0001.safetensors ] && break; sleep 0.05; done
	head -c 100M /dev/zero >small/fill 2>/dev/null || true
	st=0
	wait "$pid" || st=$?
	cat err
	[ "$st" -eq 1 ]
	grep -q 'no space left' err
	rm small/fill
	sn-train --resume --shards "$FX/shards" --out small/run --rounds 4 --iters 10 \
		--threads 1 --ssh "$SSH" -S h1,h2,h3 --remote-path "$SN_BIN" --quiet
	sn-info --diff -q "$FX/ref/w-0004.safetensors" small/run/w-0004.safetensors
}
