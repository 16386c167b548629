# Shared setup for the bats suites: put the binaries under test first on PATH
# and give each test its own scratch directory.
SN_ROOT=${SN_ROOT:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
SN_BIN=${SN_BIN:-$SN_ROOT/bin}
# /usr/bin first after ours: the tests need Debian's python3 (numpy, torch),
# not a pyenv or virtualenv python3 that may shadow it.
export PATH="$SN_BIN:$SN_ROOT/bin:/usr/bin:$PATH"
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
