# Two commands do all set-up on a fresh machine (see README.md):
#   make run    remember and recall through the MCP server on the embedded store in ./embeddix-data
#   make test   lint, type-check, import-direction check, and the full test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The MCP Inspector CLI (npm) drives the server in one end-to-end test (tests/mcp/test_inspector.py), which
# runs `tools/list --strict` and fails on any error or portability warning; without node/npm it skips.
INSPECTOR_DIR := $(VENV)/mcp-inspector
INSPECTOR_BIN := $(INSPECTOR_DIR)/node_modules/.bin/mcp-inspector

.PHONY: run serve test test-fast lint bench install clean

$(STAMP): pyproject.toml setup.py embeddix_core/_hits.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build; an unpinned torch would pull several GB of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) examples/mcp_demo.py --data ./embeddix-data

serve: $(STAMP)
	$(VENV)/bin/embeddix-mcp --data ./embeddix-data

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) tests/check_imports.py
	$(VENV)/bin/lint-imports

$(INSPECTOR_DIR)/.stamp:
	mkdir -p $(INSPECTOR_DIR)
	-command -v npm >/dev/null && npm install --silent --no-audit --no-fund --save-exact --prefix $(INSPECTOR_DIR) \
		@modelcontextprotocol/inspector@2.12.0
	touch $@

test: lint $(INSPECTOR_DIR)/.stamp
	MCP_INSPECTOR_BIN=$$(test -x $(INSPECTOR_BIN) && echo $(abspath $(INSPECTOR_BIN))) \
		$(PY) -m pytest -q -p no:cacheprovider --timeout=600 -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.core_bench

clean:
	rm -rf $(VENV) embeddix-data
