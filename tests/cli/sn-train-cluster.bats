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
}

setup() {
	local why
	if why=$(netns_unavailable); then skip "$why"; fi
	sn_setup_tmp
	netns_hosts_start 3 100mbit
	SSH="ssh -F $NETNS_DIR/ssh_config"
}

teardown() {
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

@test "a three-host run completes over the shaped links" {
	train 2
	[ -f run/w-0002.safetensors ]
	awk -F '\t' 'NR > 1 && $6 != 3 { exit 1 }' run/log.tsv
	for h in h1 h2 h3; do grep -q "done on $h" run/events.log; done
}

@test "a host whose link is cut mid-run is found out in bounded time and its worker moves" {
	train 4 --keep-remote >/dev/null
	mv run ref
	train 4 &
	pid=$!
	for _ in $(seq 1200); do [ -e run/w-0001.safetensors ] && break; sleep 0.05; done
	[ -e run/w-0001.safetensors ]
	netns_link_down h2
	t_cut=$(date +%s)
	# a silent host must not hang the run: ssh's keepalive gives up on it
	for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; false; fi
	wait "$pid"
	elapsed=$(($(date +%s) - t_cut))
	echo "finished ${elapsed}s after the cut"
	[ "$elapsed" -le 45 ]
	grep -q 'host h2: .*timed out' run/events.log
	[ "$(wc -l <run/log.tsv)" -eq 5 ]
	awk -F '\t' 'NR > 1 && $6 != 3 { exit 1 }' run/log.tsv   # no shard was left out
	sn-info --diff -q ref/w-0004.safetensors run/w-0004.safetensors   # the same tensors, bit for bit
}
