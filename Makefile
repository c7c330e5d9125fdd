# One command each: `make devnet` (install, then run a local network), `make test`
# (install, then run the suite). Both create .venv on first use; Python 3.11+ is required.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install devnet test benchmarks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
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
