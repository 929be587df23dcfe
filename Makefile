# One command each for the common jobs; the first run creates .venv and installs raftkv with its dev tools.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: cluster test lint chaos bench clean

$(BIN)/.installed: pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./harness
	touch $@

cluster: $(BIN)/.installed  ## a local 3-node cluster on ports 8080-8082 (Ctrl-C stops it)
	$(BIN)/raftkv cluster --nodes 3 --base-port 8080 --data-dir .raftkv

test: $(BIN)/.installed  ## the whole test suite
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check raftkv harness tests tools
	$(BIN)/ruff format --check raftkv harness tests tools
	$(BIN)/mypy

chaos: $(BIN)/.installed  ## a chaos run against 5 real nodes
	$(BIN)/python tools/chaos --nodes 5 --time 120

bench: $(BIN)/.installed  ## raftkv beside etcd (when etcd is on PATH): table on stdout, report in bench-out/
	$(BIN)/python tools/bench --report bench-out --json bench-out/rows.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .raftkv
