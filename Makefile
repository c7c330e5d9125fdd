# One command each: `make devnet` (install, then run a local network), `make test`
# (install, then run the suite). Both create .venv on first use; Python 3.11+ is required.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install devnet test benchmarks clean program

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	@# From Debian: clang-14 (builds the pool program for the Solana VM), iperf3 (the
	@# reference for throughput benchmarks) and iproute2 (netns, tc). Without root they are
	@# skipped, and the tests that need them skip with the reason.
	@# prometheus brings promtool, which checks deploy/prometheus.yml (no recommends: no daemons);
	@# chromium and chromium-driver run the dashboard's browser test headless.
	@if ! command -v iperf3 >/dev/null || ! command -v tc >/dev/null \
	    || ! command -v clang-14 >/dev/null || ! command -v promtool >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 iproute2 clang-14 >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus chromium chromium-driver >/dev/null; \
	  else echo "note: iperf3/iproute2/clang-14/promtool/chromium missing and not root: their tests will skip"; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# @solana/web3.js for tests/integration/test_web3js.py (a client we did not write), pinned by
# tests/js/package-lock.json; after the venv, so a missing npm only costs that one test.
JS_DEPS := tests/js/node_modules/.package-lock.json

$(JS_DEPS): tests/js/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "note: npm missing: tests/integration/test_web3js.py will skip"; fi

install: $(BIN)/.installed $(JS_DEPS)

# `make devnet BASE_PORT=28900` moves every port (chain at BASE_PORT, then validators and
# providers; see `validator devnet --help`); LOG_LEVEL=debug for more.
BASE_PORT ?= 18900
LOG_LEVEL ?= info
devnet: install
	$(BIN)/validator devnet --validators 4 --providers 6 --epoch-seconds 20 --reset \
	  --base-port $(BASE_PORT) --log-level $(LOG_LEVEL)

test: install
	$(BIN)/pytest -q

# The pool program for the Solana VM (SBPFv0): clang-14 and programs/sbpf_link.py. The
# result is committed; tests/unit/test_pool_build.py checks it is rebuilt byte for byte.
program: install
	$(BIN)/python -m programs.build programs/pool/pool.c programs/pool/pool.so

clean:
	rm -rf $(VENV) devnet-data *.egg-info tests/js/node_modules
