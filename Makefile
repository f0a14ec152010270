# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install crossrec, run the end-to-end demo
#   make test   create .venv if missing, install crossrec, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crossrec-installed
# PyTorch goes in first, pinned, so that resolving sentence-transformers keeps it instead of pulling
# a multi-GB CUDA build. Here torch==2.13.0 is a CPU wheel on local disk; elsewhere point pip at a
# CPU wheel index, e.g. make TORCH_PIP_ARGS="--index-url <PyTorch CPU wheel index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_DIR ?= .demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test test-fast lint format mutation proto proto-check clean postgres

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,bench,ray,postgres,privacy]"
	touch $@

# PostgreSQL's server programs, for the shared-store tests (they start a throwaway cluster
# themselves, tests/helpers_postgres.py). Installed from Debian's packages when missing.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "installing Debian's postgresql (server programs for the tests)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	    $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q postgresql >/dev/null; }

demo: $(STAMP)
	$(BIN)/crossrec demo --out $(DEMO_DIR)

# Every tier but gpu: lint, format, types, the unit tests, servers and jobs end to end, Ray, the
# kill -9 cycles. CI runs this.
test: $(STAMP) postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not gpu"

# The inner loop: no slow, integration or Ray tests (pyproject.toml, [tool.pytest.ini_options]).
test-fast: $(STAMP) postgres
	$(BIN)/python -m pytest -m "not slow and not gpu and not integration and not ray"

# Lint, format and type checks alone (also the first steps of `make test`); `make format` fixes.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Mutation testing of the request path and the index reader (settings in setup.cfg; minutes).
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

proto: $(STAMP)
	$(BIN)/python proto/generate.py

proto-check: $(STAMP)
	$(BIN)/python proto/generate.py --check

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache mutants
