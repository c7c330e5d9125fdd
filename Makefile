# One command each: `make devnet` (install, then run a local network), `make test`
# (install, then run the suite). Both create .venv on first use; Python 3.11+ is required.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install devnet test benchmarks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	@# iperf3 (the reference for throughput benchmarks) and iproute2 (netns, tc) from Debian;
	@# without root they are skipped, and the tests that need them skip with the reason.
	@if ! command -v iperf3 >/dev/null || ! command -v tc >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 iproute2 >/dev/null; \
	  else echo "note: iperf3/iproute2 missing and not root: testbed tests will skip"; fi; \
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

clean:
	rm -rf $(VENV) devnet-data *.egg-info
