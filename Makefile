# The commands people run often. `make run` and `make test` work from a fresh clone.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

NODE_POOL  := examples/node-pool
NODE_STAMP := $(NODE_POOL)/node_modules/.installed

.PHONY: help setup run test lint format protos bench clean system-deps containers-check node-pool

help:
	@echo "make run      set up .venv and run a short local training"
	@echo "make test     set up .venv (and system packages, as root) and run the tests"
	@echo "make lint     ruff check and ruff format --check (CI runs it)"
	@echo "make protos   regenerate ba3c/v1/*_pb2*.py from protos/"
	@echo "make bench    run the benchmarks in bench/"
	@echo "make node-pool  install examples/node-pool's npm packages (part of make test)"
	@echo "make containers-check  build every containers/*.def under bubblewrap (root, minutes)"

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python >= 3.11) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[cpu,dev]"
	@touch $(STAMP)

setup: $(STAMP)

# System packages some tests need (Slurm, munge, Prometheus); only as root on Debian.
system-deps:
	@bash tests/system-deps.sh

run: setup
	$(PY) -m ba3c.cli train --minutes 3 --record_node --run-dir runs/make-run-$$(date +%Y%m%d-%H%M%S)

# The Node.js simulator pool's packages (examples/node-pool), exactly as package-lock.json
# pins them, from the npm registry; again only when the lock file changes.
$(NODE_STAMP): $(NODE_POOL)/package-lock.json | system-deps
	@command -v npm >/dev/null || { echo "need node and npm (Node.js >= 18) on PATH for $(NODE_POOL)"; exit 1; }
	npm ci --prefix $(NODE_POOL) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

node-pool: $(NODE_STAMP)

test: setup system-deps node-pool
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .

protos: setup
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/ba3c/v1/*.proto

bench: setup
	$(PY) -m bench.run_all

# Each container recipe's %post and %test in a Debian root filesystem under bubblewrap
# (Apptainer cannot be installed here). Not part of `make test`: minutes and downloads.
containers-check:
	@command -v bwrap >/dev/null && command -v debootstrap >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		bubblewrap debootstrap >/dev/null; }
	python3 containers/check.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(NODE_POOL)/node_modules
