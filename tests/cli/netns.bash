# A private cluster for tests and benchmarks: N hosts, each a Linux network
# namespace with its own address and its own sshd, joined by veth pairs to a
# bridge in the root namespace (which gets an address, so a driver running
# here reaches them).  Each link is shaped with tc tbf on both ends; delay
# needs netem, which not every kernel has (netns_has_netem says).
#
# Everything is named from a random id checked against what exists (links,
# namespaces, subnets), so parallel runs never collide, and traffic only ever
# goes to the addresses of the namespaces made here.  netns_hosts_stop tears
# it all down; outside bats an EXIT trap calls it (unless the caller has its
# own EXIT trap, which must), inside bats call it from teardown.  Namespaces left by a run that was killed outright (their
# creator's pid is dead) are swept by the next start.
#
#   netns_hosts_start N RATE [DELAY]   hosts h1..hN; RATE as tc says it
#                                      (10mbit); writes $NETNS_DIR/ssh_config
#   netns_link_down hI / netns_link_up hI
#   netns_host_env hI CODE             run CODE first in hI's ssh sessions
#   netns_host_exec hI CMD...          run CMD in hI's network and mounts
#   netns_host_bytes hI                "DOWN UP": bytes the link carried to
#                                      and from the host (both ends' frames)
#   netns_hosts_stop
#   netns_unavailable                  prints why namespaces cannot be made
#
# Needs root, iproute2 and Debian's openssh-server (/usr/sbin/sshd).  The
# machine's own sshd and ~/.ssh are never touched: host and client keys are
# throwaway, the client uses its own config through `ssh -F`.

NETNS_SSHD=${NETNS_SSHD:-/usr/sbin/sshd}

netns_unavailable() {
	if [ "$(id -u)" -ne 0 ]; then echo "network namespaces need root"; return 0; fi
	command -v ip >/dev/null || { echo "iproute2 (ip) is not installed"; return 0; }
	command -v tc >/dev/null || { echo "iproute2 (tc) is not installed"; return 0; }
	[ -x "$NETNS_SSHD" ] || { echo "openssh-server ($NETNS_SSHD) is not installed"; return 0; }
	local probe=snprobe$$
	if ! ip netns add "$probe" 2>/dev/null; then
		echo "cannot create a network namespace here"
		return 0
	fi
	ip netns del "$probe"
	return 1
}

# The kernel has netem (link delay) or not: tried on a throwaway dummy link.
netns_has_netem() {
	local d=snnd$$$RANDOM ok=1
	d=${d:0:15}
	ip link add "$d" type dummy 2>/dev/null || return 1
	tc qdisc add dev "$d" root netem delay 1ms 2>/dev/null && ok=0
	ip link del "$d" 2>/dev/null
	return $ok
}

# Namespaces named sn-<pid>-<id>-hI whose creator is gone: a run killed with
# no chance to clean up.  Their sshds die with their namespace's processes.
netns_sweep_stale() {
	local ns pid
	for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
		[[ $ns =~ ^sn-([0-9]+)-[0-9a-f]+-h[0-9]+$ ]] || continue
		pid=${BASH_REMATCH[1]}
		kill -0 "$pid" 2>/dev/null && continue
		netns_kill_ns "$ns"
	done
}

netns_kill_ns() { # NS: stop every process in it, then delete it (and its veth)
	local p
	for p in $(ip netns pids "$1" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		[ -z "$(ip netns pids "$1" 2>/dev/null)" ] && break
		sleep 0.1
	done
	for p in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
	ip netns del "$1" 2>/dev/null || true
}

# A /24 under 10.0.0.0/8 that no interface or route here uses yet.
netns_free_subnet() {
	local a b used
	used=$(ip -4 route show table all 2>/dev/null; ip -4 addr show 2>/dev/null)
	for _ in $(seq 100); do
		a=$((100 + RANDOM % 150)) b=$((RANDOM % 256))
		grep -q "10\.$a\.$b\." <<<"$used" || { echo "10.$a.$b"; return 0; }
	done
	return 1
}

# tbf for RATE on DEV (in NS when given).  The bucket holds at least a few
# full-size frames and 4 ms of the rate, so a fast link is not held to one
# frame per timer tick.
netns_shape() { # RATE DEV [NS]
	local rate=$1 dev=$2 ns=${3:-} bits burst
	local -a in=()
	[ -z "$ns" ] || in=(ip netns exec "$ns")
	bits=$(netns_rate_bits "$rate") || return 1
	burst=$((bits / 8 / 250))
	[ "$burst" -ge 16384 ] || burst=16384
	"${in[@]}" tc qdisc replace dev "$dev" root handle 1: tbf rate "$rate" burst "$burst" latency 500ms || return 1
	if [ -n "${NETNS_DELAY:-}" ]; then
		"${in[@]}" tc qdisc add dev "$dev" parent 1:1 handle 10: netem delay "$NETNS_DELAY" || return 1
	fi
}

netns_rate_bits() { # 10mbit -> 10000000
	local v u
	[[ ${1,,} =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || { echo "netns: bad rate '$1' (say 10mbit)" >&2; return 1; }
	v=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]}
	case $u in
	bit) echo "$v" ;;
	kbit) echo $((v * 1000)) ;;
	mbit) echo $((v * 1000000)) ;;
	gbit) echo $((v * 1000000000)) ;;
	esac
}

netns_hosts_start() { # N RATE [DELAY]
	local n=$1 rate=$2 i h ns ip
	export NETNS_DELAY=${3:-}
	if [ -n "$NETNS_DELAY" ] && ! netns_has_netem; then
		echo "netns: this kernel has no netem; links get no delay" >&2
		NETNS_DELAY=
	fi
	netns_sweep_stale
	NETNS_DIR=${NETNS_DIR:-${TMP:?}/hosts}
	mkdir -p "$NETNS_DIR"
	# a fresh id: no link or namespace here carries it
	while :; do
		NETNS_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
		ip link show "sn${NETNS_ID}br" >/dev/null 2>&1 && continue
		ip netns list | grep -q -- "-$NETNS_ID-" && continue
		break
	done
	NETNS_NET=$(netns_free_subnet) || { echo "netns: no free 10.x.y.0/24 subnet" >&2; return 1; }
	NETNS_BR=sn${NETNS_ID}br
	NETNS_PREFIX=sn-$$-$NETNS_ID
	export NETNS_DIR NETNS_ID NETNS_NET NETNS_BR NETNS_PREFIX
	echo "$NETNS_BR" >"$NETNS_DIR/bridge"
	# a caller's own EXIT trap must call netns_hosts_stop itself
	[ -n "${BATS_TEST_NAME:-}" ] || [ -n "$(trap -p EXIT)" ] || trap netns_hosts_stop EXIT
	ip link add "$NETNS_BR" type bridge || return 1
	ip addr add "$NETNS_NET.254/24" dev "$NETNS_BR" || return 1
	ip link set "$NETNS_BR" up || return 1

	[ -d /run/sshd ] || mkdir -p /run/sshd # sshd's privilege separation dir
	rm -f "$NETNS_DIR/client_key" "$NETNS_DIR/client_key.pub"
	ssh-keygen -q -t ed25519 -N '' -f "$NETNS_DIR/client_key" </dev/null
	: >"$NETNS_DIR/known_hosts"
	: >"$NETNS_DIR/ssh_config"
	for ((i = 1; i <= n; i++)); do
		h=$NETNS_DIR/h$i ns=$NETNS_PREFIX-h$i ip=$NETNS_NET.$i
		mkdir -p "$h/work"
		echo "$ns" >"$h/netns"
		echo "sn${NETNS_ID}v$i" >"$h/veth"
		ip netns add "$ns" || return 1
		ip link add "sn${NETNS_ID}v$i" type veth peer name "sn${NETNS_ID}p$i" || return 1
		ip link set "sn${NETNS_ID}p$i" netns "$ns" || return 1
		ip -n "$ns" link set "sn${NETNS_ID}p$i" name eth0 || return 1
		ip -n "$ns" addr add "$ip/24" dev eth0 || return 1
		ip -n "$ns" link set lo up || return 1
		ip -n "$ns" link set eth0 up || return 1
		ip link set "sn${NETNS_ID}v$i" master "$NETNS_BR" up || return 1
		netns_shape "$rate" "sn${NETNS_ID}v$i" || return 1
		netns_shape "$rate" eth0 "$ns" || return 1

		rm -f "$h/host_key" "$h/host_key.pub"
		ssh-keygen -q -t ed25519 -N '' -f "$h/host_key" </dev/null
		cp "$NETNS_DIR/client_key.pub" "$h/authorized_keys"
		cat >"$h/sshd_config" <<CFG
Port 22
ListenAddress $ip
HostKey $h/host_key
PidFile $h/sshd.pid
AuthorizedKeysFile $h/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
MaxStartups 100
MaxSessions 100
ForceCommand cd "$h/work" && { [ ! -f "$h/env" ] || . "$h/env"; } && eval "\$SSH_ORIGINAL_COMMAND"
CFG
		ip netns exec "$ns" "$NETNS_SSHD" -D -e -f "$h/sshd_config" 2>"$h/sshd.log" &
		echo $! >"$h/pid"
		echo "h$i $(cut -d' ' -f1-2 "$h/host_key.pub")" >>"$NETNS_DIR/known_hosts"
		cat >>"$NETNS_DIR/ssh_config" <<CFG
Host h$i
  HostName $ip
  HostKeyAlias h$i
CFG
	done
	cat >>"$NETNS_DIR/ssh_config" <<CFG
Host *
  User root
  IdentityFile $NETNS_DIR/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $NETNS_DIR/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
CFG
	for ((i = 1; i <= n; i++)); do netns_wait_up "h$i" || return 1; done
}

netns_wait_up() {
	for _ in $(seq 50); do
		ssh -F "$NETNS_DIR/ssh_config" -o ConnectTimeout=2 "$1" true 2>/dev/null && return 0
		sleep 0.1
	done
	echo "netns host $1 did not come up: $(cat "$NETNS_DIR/$1/sshd.log")" >&2
	return 1
}

netns_link_down() { ip link set "$(cat "$NETNS_DIR/$1/veth")" down; }
netns_link_up() { ip link set "$(cat "$NETNS_DIR/$1/veth")" up; }

# Bytes the host's link carried: DOWN is what the root end sent towards the
# host, UP what it received from it (Ethernet frames: payload plus TCP/IP and
# ssh framing, ACKs and handshakes).
netns_host_bytes() {
	local v s=/sys/class/net
	v=$(cat "$NETNS_DIR/$1/veth")
	echo "$(cat "$s/$v/statistics/tx_bytes") $(cat "$s/$v/statistics/rx_bytes")"
}

netns_ssh() { ssh -F "$NETNS_DIR/ssh_config" "$@"; }

# netns_host_env hI CODE: shell code every later session on hI runs first
# (a fault to inject: a function that shadows a tool, an exported variable).
netns_host_env() { printf '%s\n' "$2" >"$NETNS_DIR/$1/env"; }

# netns_host_exec hI CMD...: run CMD in hI's namespaces (network and mounts),
# e.g. to mount a small tmpfs that only that host's sessions see.
netns_host_exec() {
	local h=$1
	shift
	nsenter -t "$(cat "$NETNS_DIR/$h/pid")" -m -n -- "$@"
}

# Tear down whatever this run made; safe to call twice or after a failed start.
netns_hosts_stop() {
	local f ns pid
	[ -n "${NETNS_DIR:-}" ] && [ -d "$NETNS_DIR" ] || return 0
	for f in "$NETNS_DIR"/h*/pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rm -f "$f"
	done
	for f in "$NETNS_DIR"/h*/netns; do
		[ -e "$f" ] || continue
		ns=$(cat "$f")
		netns_kill_ns "$ns"   # the sshd's sessions, and the veth pair with it
		rm -f "$f"
	done
	if [ -e "$NETNS_DIR/bridge" ]; then
		ip link del "$(cat "$NETNS_DIR/bridge")" 2>/dev/null || true
		rm -f "$NETNS_DIR/bridge"
	fi
}

# What this run still has: namespaces and sshds (empty when all is gone).
netns_leftovers() {
	[ -n "${NETNS_PREFIX:-}" ] || return 0
	ip netns list | grep -F -- "$NETNS_PREFIX-" || true
	pgrep -f -- "-f $NETNS_DIR/h" || true
	ip link show "$NETNS_BR" 2>/dev/null | head -1 || true
}
