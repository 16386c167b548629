# Shared setup for the bats suites: put the binaries under test first on PATH
# and give each test its own scratch directory.
SN_ROOT=${SN_ROOT:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
SN_BIN=${SN_BIN:-$SN_ROOT/bin}
# /usr/bin first after ours: the tests need Debian's python3 (numpy, torch),
# not a pyenv or virtualenv python3 that may shadow it.
export PATH="$SN_BIN:$SN_ROOT/bin:/usr/bin:$PATH"
# sn-train runs the tools beside itself first; under test, the ones in $SN_BIN
export SN_EXEC_PATH=$SN_BIN
# PY: the first python3 with numpy, for fixtures and readers that know nothing
# of sn.  Probed once per suite (setup_file's export reaches its tests).
if [ -z "${PY:-}" ]; then
	for p in /usr/bin/python3 python3; do
		if "$p" -c 'import numpy' 2>/dev/null; then export PY=$p; break; fi
	done
fi
NETS=$SN_ROOT/examples/nets
FMNIST=/usr/share/datasets/fashion-mnist

sn_setup_tmp() {
	TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/sn-test.XXXXXX")
	cd "$TMP" || return 1
}

sn_teardown_tmp() {
	cd / && rm -rf "$TMP"
}

setup() { sn_setup_tmp; }
teardown() { sn_teardown_tmp; }

# Assert that the last `run` printed exactly one line to stderr/stdout
# mentioning $1, of the form "prog: $1: ...".
assert_one_line_error() {
	local file=$1
	[ "${#lines[@]}" -eq 1 ] || { echo "expected one line, got: $output"; return 1; }
	[[ "${lines[0]}" == *": $file: "* ]] || { echo "no '$file' in: $output"; return 1; }
}
