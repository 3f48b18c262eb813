# corral — the two commands of the quick start, and the pieces behind them.
#   make serve   install missing packages, build, serve examples/models on 127.0.0.1:8766 (gRPC on 8767)
#   make test    install missing packages, build (plain, ASan+UBSan, libFuzzer), run every test
#   make fuzz    run every libFuzzer target of tests/fuzz for FUZZ_TIME seconds each (default 300)

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 300
JOBS       ?= $(shell nproc)
# Debian's interpreter: it has python3-pytest and python3-numpy.
PYTHON     ?= /usr/bin/python3
HOST       ?= 127.0.0.1
PORT       ?= 8766
BLACKBOX_JOBS ?= 2
GRPC_PORT  ?= 8767
# Every answer the black-box tests get, recorded for tests/openapi (docs/openapi.yaml's check).
RECORD_DIR ?= $(CURDIR)/$(BUILD)/openapi-record

.PHONY: all deps build asan fuzz-build fuzz serve test test-unit test-sdk test-blackbox clean

all: build

deps:
	@./scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCORRAL_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

# The fuzz targets need clang's libFuzzer; deps.sh installs it.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCORRAL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

# Each target for FUZZ_TIME seconds over its committed corpus; new inputs
# collect in $(FUZZ_BUILD)/fuzz-new/TARGET, a crash's input in $(FUZZ_BUILD).
fuzz: fuzz-build
	@for t in $(FUZZ_BUILD)/fuzz_*; do [ -x "$$t" ] || continue; n=$$(basename $$t); \
	  echo "fuzz: $$n for $(FUZZ_TIME) s"; \
	  tests/fuzz/run.sh $$t tests/fuzz/corpus/$$n $(FUZZ_TIME) > $(FUZZ_BUILD)/$$n.log 2>&1; rc=$$?; \
	  tail -n 12 $(FUZZ_BUILD)/$$n.log; [ $$rc -eq 0 ] || exit 1; done

serve: build
	./$(BUILD)/corral serve --models examples/models --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

# Unit tests run in both builds; the black-box suite runs against the
# sanitizer build of the daemon, so a memory error anywhere on a real
# request path fails the run. Leak checking is left to the unit tests: a
# daemon stopped by a signal legitimately exits with live allocations.
# The black-box files run BLACKBOX_JOBS at a time (pytest-xdist, one file per
# worker: a file's tests keep their order and their module fixtures); most of
# their time is spent waiting on daemons and workers, not computing.
# Every answer they get is recorded (RECORD_DIR) and then checked against
# docs/openapi.yaml by tests/openapi: an answer the document does not
# describe, or an operation no test reached, fails the run.
test: build asan fuzz-build
	ctest --test-dir $(BUILD) --output-on-failure
	ctest --test-dir $(ASAN_BUILD) --output-on-failure
	ctest --test-dir $(FUZZ_BUILD) --output-on-failure
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/sdk
	rm -rf $(RECORD_DIR)
	CORRAL_BIN=$(CURDIR)/$(ASAN_BUILD)/corral ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CORRAL_RECORD_DIR=$(RECORD_DIR) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider -n $(BLACKBOX_JOBS) --dist loadfile tests/blackbox
	CORRAL_RECORD_DIR=$(RECORD_DIR) $(PYTHON) -m pytest -q -p no:cacheprovider tests/openapi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

# make bench   install the peers, build, measure corral against them (~5 min), write
#              docs/benchmarks.md and its plots. Never part of `make test`.
#              BENCH_QUICK=1 for 1 s points (development); knobs in bench/README.md.
.PHONY: bench
bench: build
	@./bench/deps.sh
	$(PYTHON) bench/bench.py
