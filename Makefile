# sn: SparkNet-style distributed training as small Unix tools.
# make [all] | check | sanitize | bench | demo | study | deps | install | uninstall | clean

VERSION   := 0.1.0
PREFIX    ?= /usr/local
DESTDIR   ?=
BUILD     ?= build
BINDIR    ?= bin
CC        ?= cc
PKGS      := openblas yaml-0.1 zlib jansson
OPT       ?= -O2

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# -std=c11, not gnu11: GCC then never contracts a*b+c into an FMA (ISO C
# modes imply -ffp-contract=off), which sn-delta's decoding needs to give
# the same bits on every machine.
SN_CFLAGS  = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror \
             -DSN_VERSION='"$(VERSION)"' -Ilib -Isrc $(PKG_CFLAGS) $(CFLAGS) $(SAN)
SN_LDLIBS  = $(PKG_LIBS) -lm -lpthread $(LDLIBS)

LIB_SRC  := $(sort $(wildcard lib/*.c lib/layers/*.c lib/readers/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CMD_SRC  := $(sort $(wildcard src/sn-*.c))
CMDS     := $(CMD_SRC:src/%.c=%)
CMD_BINS := $(CMDS:%=$(BINDIR)/%)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS:= $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
SCRIPTS  := $(wildcard bin/sn-train)
# Fuzz targets: tests/fuzz/TARGET.c (idx_gz is idx.c on a gzip'd corpus).
FUZZ_TARGETS := st net idx idx_gz cifar csv delta
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build/fuzz
FUZZ_REPLAY  := $(FUZZ_TARGETS:%=$(BUILD)/tests/test_fuzz_%)
fuzz_src      = tests/fuzz/$(if $(filter idx_gz,$1),idx,$1).c
MAN1     := $(wildcard man/man1/*.1)
MAN5     := $(wildcard man/man5/*.5)

# Debian packages the build, the tests, the demo and the benchmarks need.
DEB_PKGS := build-essential pkg-config libopenblas-dev zlib1g-dev libyaml-dev \
            libjansson-dev libcmocka-dev parallel bats openssh-server iproute2 \
            dataset-fashion-mnist python3-numpy python3-yaml python3-torch gnuplot-nox \
            shellcheck man-db procps psmisc strace
# and what `make fuzz` needs besides (libFuzzer comes with clang's runtime).
FUZZ_DEB_PKGS := clang libclang-rt-14-dev

.PHONY: all check sanitize bench demo study deps install uninstall clean unit-tests
.DELETE_ON_ERROR:

all: $(CMD_BINS)

$(BUILD)/%.o: %.c $(wildcard lib/*.h lib/readers/*.h src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(SN_CFLAGS) -c -o $@ $<

$(BUILD)/libsn.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BINDIR)/sn-%: $(BUILD)/src/sn-%.o $(BUILD)/src/cli.o $(BUILD)/libsn.a
	@mkdir -p $(BINDIR)
	$(CC) $(SN_CFLAGS) -o $@ $^ $(SN_LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsn.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(SN_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libsn.a $(SN_LDLIBS) -lcmocka

# Each fuzz target twice: over replay.c for make check (any compiler; it runs
# the committed corpus and regressions once), and over libFuzzer for make fuzz.
define fuzz_rules
$(BUILD)/tests/test_fuzz_$1: tests/fuzz/replay.c $(call fuzz_src,$1) tests/fuzz/fuzz.h $(BUILD)/libsn.a
	@mkdir -p $$(dir $$@)
	$$(CC) $$(SN_CFLAGS) -Itests/fuzz -DFUZZ_TARGET='"$1"' -o $$@ tests/fuzz/replay.c \
	  $(call fuzz_src,$1) $(BUILD)/libsn.a $$(SN_LDLIBS)
$(BUILD)/fuzz_$1: $(call fuzz_src,$1) tests/fuzz/fuzz.h $(BUILD)/libsn.a
	$$(CC) $$(SN_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $$@ $(call fuzz_src,$1) \
	  $(BUILD)/libsn.a $$(SN_LDLIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rules,$t)))

unit-tests: $(UNIT_BINS) $(FUZZ_REPLAY)

fuzz-targets: $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "make deps: installing$$missing" >&2; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	else \
	  echo "make deps: missing packages; run as root:" >&2; \
	  echo "  apt-get install -y$$missing" >&2; exit 1; \
	fi

check: deps
	@$(MAKE) --no-print-directory all unit-tests
	@SN_BIN=$(abspath $(BINDIR)) SN_UNIT=$(abspath $(BUILD)/tests) tests/run

# The same tests on an ASan+UBSan build, in its own build and bin directories.
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/san BINDIR=build/san/bin OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  all unit-tests
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  SN_SANITIZE=1 SN_BIN=$(abspath build/san/bin) SN_UNIT=$(abspath build/san/tests) tests/run

fuzz-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(FUZZ_DEB_PKGS)"

# libFuzzer with ASan+UBSan, FUZZ_SECONDS per target.  New inputs go to
# build/fuzz/corpus/TARGET (the committed seeds stay small); a crash is saved
# in tests/fuzz/TARGET/regressions/, which make check replays from then on.
fuzz: fuzz-deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  fuzz-targets
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t tests/fuzz/$$t/regressions; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s" >&2; \
	  SN_ROOT=$(CURDIR) $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=tests/fuzz/$$t/regressions/ \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/$$t/corpus 2>$(FUZZ_BUILD)/$$t.log \
	    || { failed="$$failed $$t"; tail -n 40 $(FUZZ_BUILD)/$$t.log >&2; }; \
	  grep -E '^stat::number_of_executed_units|^stat::new_units_added' $(FUZZ_BUILD)/$$t.log >&2; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in$$failed (saved in tests/fuzz/*/regressions)" >&2; exit 1; fi

bench: deps all
	@bench/run

demo: deps all
	@examples/scripts/demo.sh

# The SparkNet study's quick preset (K x tau, rounds to target, the speedup
# model, plots, report) into study/; bench/study --full runs the whole grid.
study: deps all
	@bench/study

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(CMD_BINS) $(SCRIPTS) $(DESTDIR)$(PREFIX)/bin/
	$(if $(MAN1),install -m 644 $(MAN1) $(DESTDIR)$(PREFIX)/share/man/man1/)
	$(if $(MAN5),install -m 644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(CMDS) $(notdir $(SCRIPTS)))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/man/man1/,$(notdir $(MAN1)))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/man/man5/,$(notdir $(MAN5)))

clean:
	rm -rf $(BUILD) $(CMD_BINS)
