# Keyhouse: make run · make test · make lint · make bench
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DATA := data
export DO_NOT_TRACK := 1

.PHONY: install run test lint bench clean browser sandbox clients prometheus nginx

$(BIN)/keyhouse: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/keyhouse

# Engines run in bubblewrap's sandbox (README: Security); Debian's package, installed when missing.
sandbox:
	@command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap)

install: $(BIN)/keyhouse sandbox

run: install
	@mkdir -p -m 0700 $(DATA)
	@if [ ! -f $(DATA)/keyhouse.db ]; then \
		$(BIN)/keyhouse bootstrap --org-name "Demo organization" --email admin@example.com \
			--name "Demo admin" --service "Demo service" --json | $(BIN)/python -m keyhouse.demo http://$(HOST):$(PORT); \
	else \
		echo "Using the existing demo database $(DATA)/keyhouse.db (its credentials were printed on first run;"; \
		echo "delete $(DATA)/ to start over)."; \
	fi
	$(BIN)/keyhouse serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# The console's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# The official Node.js client, for tests/test_clients.py: from the npm registry, as locked.
NODE_CLIENT := tests/clients/node/node_modules/.package-lock.json
$(NODE_CLIENT): tests/clients/node/package-lock.json
	npm ci --prefix tests/clients/node --no-audit --no-fund --silent
clients: $(NODE_CLIENT)

# tests/e2e/test_prometheus.py runs a real Prometheus: Debian's package (not as a system service).
prometheus:
	@command -v prometheus >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)

# tests/e2e/test_deployment.py puts Debian's nginx in front of two replicas (not as a service).
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || (apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx)

# A worker that crashes ends the run (xdist would start another that, with --dist loadfile,
# can wait for work forever); a test that hangs fails alone after five minutes (pyproject.toml).
test: install lint browser clients prometheus nginx
	$(BIN)/pytest -n auto --dist loadfile --max-worker-restart=0

bench: install nginx
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/query_api.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/deployment.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
