# Private ssh "hosts" for the sn-train-ssh suite: each is its own sshd on
# 127.0.0.1 with its own host key, port, config, log and work directory
# (ForceCommand runs every command from that directory).  The client uses a
# throwaway key and its own config through `ssh -F`; the machine's own sshd
# and ~/.ssh are never touched.

# ssh_hosts_start N: hosts h1..hN under $TMP/hosts; writes $TMP/hosts/ssh_config
ssh_hosts_start() {
	local n=$1 i port base=$TMP/hosts
	mkdir -p "$base"
	[ -d /run/sshd ] || mkdir -p /run/sshd   # sshd's privilege separation dir
	ssh-keygen -q -t ed25519 -N '' -f "$base/client_key" </dev/null
	: >"$base/known_hosts"
	: >"$base/ssh_config"
	for ((i = 1; i <= n; i++)); do
		local h=$base/h$i
		mkdir -p "$h/work"
		ssh-keygen -q -t ed25519 -N '' -f "$h/host_key" </dev/null
		cp "$base/client_key.pub" "$h/authorized_keys"
		port=$(ssh_free_port)
		cat >"$h/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $h/host_key
PidFile $h/sshd.pid
AuthorizedKeysFile $h/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
ForceCommand cd "$h/work" && eval "\$SSH_ORIGINAL_COMMAND"
CFG
		/usr/sbin/sshd -D -e -f "$h/sshd_config" 2>"$h/sshd.log" &
		echo $! >"$h/pid"
		echo "h$i $(cut -d' ' -f1-2 "$h/host_key.pub")" >>"$base/known_hosts"
		cat >>"$base/ssh_config" <<CFG
Host h$i
  HostName 127.0.0.1
  Port $port
  User root
  HostKeyAlias h$i
CFG
	done
	cat >>"$base/ssh_config" <<CFG
Host *
  IdentityFile $base/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $base/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
CFG
	for ((i = 1; i <= n; i++)); do ssh_wait_up "h$i" || return 1; done
}

ssh_free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -ltn "sport = :$p" 2>/dev/null | grep -q ":$p " || { echo "$p"; return; }
	done
}

ssh_wait_up() {
	local i
	for ((i = 0; i < 50; i++)); do
		ssh -F "$TMP/hosts/ssh_config" "$1" true 2>/dev/null && return 0
		sleep 0.1
	done
	echo "ssh host $1 did not come up: $(cat "$TMP/hosts/${1}/sshd.log")" >&2
	return 1
}

# ssh_host_kill hI: stop that host's sshd listener (new connections fail)
ssh_host_kill() {
	local pid
	pid=$(cat "$TMP/hosts/$1/pid")
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# ssh_host_down hI: the host goes away: its listener and every session it
# serves (shared master connections included)
ssh_host_down() {
	local pid
	pid=$(cat "$TMP/hosts/$1/pid")
	pkill -KILL -P "$pid" 2>/dev/null || true
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# kill every sshd this suite started, and their sessions
ssh_hosts_stop() {
	local f pid
	for f in "$TMP"/hosts/h*/pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		pkill -TERM -P "$pid" 2>/dev/null || true
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

# pids of sshds started from this suite's configs
ssh_hosts_running() {
	pgrep -f -- "-f $TMP/hosts/h" || true
}
