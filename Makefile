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
	@# prometheus brings promtool, which checks deploy/prometheus.yml (no recommends: no daemons).
	@if ! command -v iperf3 >/dev/null || ! command -v tc >/dev/null \
	    || ! command -v clang-14 >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 iproute2 clang-14 >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus >/dev/null; \
	  else echo "note: iperf3/iproute2/clang-14/promtool missing and not root: their tests will skip"; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

devnet: install
	$(BIN)/validator devnet --validators 4 --providers 6 --epoch-seconds 20 --reset

test: install
	$(BIN)/pytest -q

# The pool program for the Solana VM (SBPFv0): clang-14 and programs/sbpf_link.py. The
# result is committed; tests/unit/test_pool_build.py checks it is rebuilt byte for byte.
program: install
	$(BIN)/python -m programs.build programs/pool/pool.c programs/pool/pool.so

clean:
	rm -rf $(VENV) devnet-data *.egg-info
