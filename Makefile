# Switchyard: `make run` opens a live console on embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

.PHONY: run test lint bench bench-peers browser-deps redis-deps clean

# pip is the last thing venv creates, so a set-up that was interrupted is done again.
$(BIN)/pip:
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py db upgrade
	SWITCHYARD_LOG_FORMAT=$${SWITCHYARD_LOG_FORMAT:-text} $(BIN)/python run.py serve --demo  # plain logs on a terminal

# Browser tests need Debian's chromium and chromedriver (dash[testing] pins selenium <= 4.2,
# which cannot download a driver itself).
browser-deps:
	@if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# The layering (import-linter contracts in pyproject.toml), the types and the style.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: $(TEST_STAMP) browser-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/run_all.py

# Switchyard next to Celery, RQ and taskiq; the peers live in a venv of their own.
$(PEERS_VENV)/bin/pip:
	$(PYTHON) -m venv --clear $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip

$(PEERS_STAMP): benchmarks/peers/requirements.txt | $(PEERS_VENV)/bin/pip
	$(PEERS_VENV)/bin/pip install --quiet -r benchmarks/peers/requirements.txt
	touch $@

# The benchmark starts a private redis-server (Debian's) on a port of its own.
redis-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi

bench-peers: $(TEST_STAMP) $(PEERS_STAMP) redis-deps
	$(BIN)/python benchmarks/bench_peers.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) data .pytest_cache .mypy_cache .ruff_cache
