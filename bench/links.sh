#!/bin/bash
# Round time over real links: N hosts, each a network namespace with its own
# sshd (tests/cli/netns.bash), every link shaped with tc tbf to each RATE in
# turn, and sn-train run at each --compress level, so a reader sees where
# compression starts to pay.  Prints a table; --tsv keeps the figures.
#
#   bench/links.sh [--rates "1mbit 10mbit 100mbit"] [--compress "none int8 int4"]
#                  [--net NET.yaml] [--hosts N] [--rounds R] [--iters TAU]
#                  [--limit EXAMPLES] [--tsv FILE]
#
# Columns: round_s is the mean wall time of the steady rounds, all but the
# first (which sends the weights whole) and the last (which brings the
# workers' states home); comm_s is round_s less the slowest worker's compute
# (what the round spent on the wire and on its own bookkeeping); down_MB and
# up_MB are sn-train's own byte counts per steady round (log.tsv bytes_down
# and bytes_up); wire/count is what the links carried over all the rounds
# (both directions, all hosts, frames included; staging excluded) against
# what sn-train counted.  Needs root (namespaces); says so and exits 0 if not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:/usr/bin:$PATH"
data=${SN_FMNIST:-/usr/share/datasets/fashion-mnist}
rates="1mbit 10mbit 100mbit" levels="none int8 int4" net=$root/examples/nets/lenet.yaml
nhosts=3 rounds=4 iters=20 limit=1500 tsv=''
while [ $# -gt 0 ]; do
	case $1 in
	--rates) rates=$2; shift ;;
	--compress) levels=$2; shift ;;
	--net) net=$(readlink -f -- "$2"); shift ;;
	--hosts) nhosts=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--iters) iters=$2; shift ;;
	--limit) limit=$2; shift ;;
	--tsv) tsv=$2; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "links.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done
[ "$rounds" -ge 3 ] || { echo "links.sh: --rounds must be at least 3" >&2; exit 2; }

# shellcheck source=/dev/null
. "$root/tests/cli/netns.bash"
if why=$(netns_unavailable); then
	echo "links: skipped ($why)"
	exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sn-bench-links.XXXXXX")
trap 'netns_hosts_stop; rm -rf "$TMP"' EXIT
sn-shard "$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" \
	-k "$nhosts" --stratify --seed 1 --limit "$limit" -o "$TMP/shards" 2>/dev/null
logins=$(seq -s, -f 'h%g' 1 "$nhosts")

# the links' byte counters, all hosts, both directions
wire_bytes() {
	local h t=0 d u
	for ((h = 1; h <= nhosts; h++)); do
		read -r d u < <(netns_host_bytes "h$h")
		t=$((t + d + u))
	done
	echo "$t"
}

out=$TMP/links.tsv
printf 'rate\tcompress\trounds\tround_s\tcomm_s\tdown_MB\tup_MB\twire_per_count\n' >"$out"
for rate in $rates; do
	netns_hosts_stop
	NETNS_DIR=$TMP/hosts-$rate
	netns_hosts_start "$nhosts" "$rate"
	for c in $levels; do
		run=$TMP/run-$rate-$c
		copt=()
		[ "$c" = none ] || copt=(--compress "$c")
		common=(--shards "$TMP/shards" --out "$run" --ssh "ssh -F $NETNS_DIR/ssh_config" -S "$logins"
			--remote-path "$root/bin" --threads 1 --iters "$iters" --quiet "${copt[@]}")
		# staging apart, so the counters see the rounds alone
		sn-train --net "$net" "${common[@]}" --stage
		w0=$(wire_bytes)
		sn-train --resume "${common[@]}" --rounds "$rounds" --keep-remote >/dev/null
		w1=$(wire_bytes)
		awk -F '\t' -v rate="$rate" -v c="$c" -v wire=$((w1 - w0)) -v R="$rounds" '
			NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
			{ all += $col["bytes_down"] + $col["bytes_up"] }
			NR > 2 && NR <= R { n++; w += $col["wall_s"]; m += $col["worker_max_s"]
				d += $col["bytes_down"]; u += $col["bytes_up"] }
			END { printf "%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\n", rate, c, n, w / n, (w - m) / n,
				d / n / 1e6, u / n / 1e6, wire / all }' "$run/log.tsv" >>"$out"
		rm -rf "$run"
	done
done
netns_hosts_stop

[ -z "$tsv" ] || cp -- "$out" "$tsv"
echo "$(basename -- "$net" .yaml), $nhosts hosts, $rounds rounds of $iters steps; steady rounds 2..$((rounds - 1)) ($(uptime | sed 's/.*load/load/'))"
awk -F '\t' 'NR == 1 { printf "%-8s %-8s %9s %9s %9s %9s %10s %9s\n", "rate", "compress", "round_s", "comm_s", "down_MB", "up_MB", "wire/count", "vs none"; next }
	{ if ($2 == "none") base[$1] = $4
	  printf "%-8s %-8s %9.2f %9.2f %9.3f %9.3f %10.3f %9s\n", $1, $2, $4, $5, $6, $7, $8,
		($1 in base) ? sprintf("%.2fx", base[$1] / $4) : "-" }' "$out"
