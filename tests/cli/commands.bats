#!/usr/bin/env bats
# What every sn command shares: --help, --version, a man page that renders
# cleanly, usage errors that exit 2, and make install/uninstall.
load helper

COMMANDS=(sn-shard sn-init sn-sgd sn-average sn-delta sn-eval sn-info sn-train)

@test "every command prints --help on stdout and exits 0" {
	for c in "${COMMANDS[@]}"; do
		run "$c" --help
		[ "$status" -eq 0 ] || { echo "$c --help: $status"; return 1; }
		[[ "$output" == *"Usage"* || "$output" == *"usage"* ]] || { echo "$c: $output"; return 1; }
	done
}

@test "every command prints its version with --version" {
	for c in "${COMMANDS[@]}"; do
		run "$c" --version
		[ "$status" -eq 0 ]
		[[ "${lines[0]}" =~ ^$c\ \(sn\)\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "$c: $output"; return 1; }
	done
}

@test "every command rejects an unknown option with exit 2" {
	for c in "${COMMANDS[@]}"; do
		run "$c" --no-such-option
		[ "$status" -eq 2 ] || { echo "$c: status $status: $output"; return 1; }
	done
}

@test "every command and the formats have a man page that renders without warnings" {
	for c in "${COMMANDS[@]}"; do
		page=$SN_ROOT/man/man1/$c.1
		[ -f "$page" ] || { echo "no $page"; return 1; }
		run bash -c "MANWIDTH=80 man --warnings -E UTF-8 -l '$page' 2>&1 >/dev/null"
		[ -z "$output" ] || { echo "$c.1: $output"; return 1; }
	done
	run bash -c "MANWIDTH=80 man --warnings -E UTF-8 -l '$SN_ROOT/man/man5/sn-formats.5' 2>&1 >/dev/null"
	[ -z "$output" ]
}

@test "make install and uninstall honour PREFIX and DESTDIR" {
	[ -z "${SN_SANITIZE:-}" ] || skip "installs the normal build"
	make -s -C "$SN_ROOT" install DESTDIR="$TMP/root" PREFIX=/opt/sn >/dev/null
	for c in "${COMMANDS[@]}"; do
		[ -x "$TMP/root/opt/sn/bin/$c" ] || { echo "no $c"; return 1; }
		[ -f "$TMP/root/opt/sn/share/man/man1/$c.1" ]
	done
	[ -f "$TMP/root/opt/sn/share/man/man5/sn-formats.5" ]
	"$TMP/root/opt/sn/bin/sn-info" --version
	make -s -C "$SN_ROOT" uninstall DESTDIR="$TMP/root" PREFIX=/opt/sn >/dev/null
	[ -z "$(find "$TMP/root" -type f)" ]
}

@test "every C command fails with exit 1 when its standard output is full, even for --help" {
	for c in sn-shard sn-init sn-sgd sn-average sn-eval sn-info; do
		run bash -c "$c --help >/dev/full"
		[ "$status" -eq 1 ] || { echo "$c: status $status: $output"; return 1; }
		[ "$output" = "$c: standard output: No space left on device" ] || { echo "$c: $output"; return 1; }
		run bash -c "$c --version >/dev/full"
		[ "$status" -eq 1 ] || { echo "$c --version: status $status"; return 1; }
	done
}
