# tickwire — the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-deep lint typecheck layers unit tools bench clean install browser jsclients dashboard-screenshot

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# make demo PORT=9000 (or TICKWIRE_PORT=9000 make demo) when 8080 is taken; HOST likewise.
demo: $(STAMP)
	$(VENV)/bin/tickwire serve --demo $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy
	cd bench/peers && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
		--cache-dir ../../.mypy_cache/peers --explicit-package-bases *.py

# The layer order of the packages ([tool.importlinter] in pyproject.toml): imports point down.
layers: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache --no-logo

unit: $(STAMP) browser jsclients tools
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian's Chromium for the dashboard's browser test (quick when it is installed).
browser:
	@bash tests/setup_browser.sh

# socket.io-client 4 and 2 (pinned in tests/js/package-lock.json) for the prophit tests.
jsclients:
	@bash tests/setup_js.sh

# docs/img/dashboard.png: the desktop screenshot the browser test takes (docs/dashboard.md).
dashboard-screenshot: $(STAMP) browser
	@dir=$$(mktemp -d) && TICKWIRE_ARTIFACTS=$$dir $(PY) -m pytest -q -p no:cacheprovider \
	  tests/test_dashboard.py -k chromium && mkdir -p docs/img && \
	  cp $$dir/dashboard-1280-dark.png docs/img/dashboard.png && \
	  echo "docs/img/dashboard.png updated (all screenshots: $$dir)"

# tools the tests need beyond Python packages (tmux for the live ladder test)
tools:
	@bash tests/ensure_tools.sh

test: lint typecheck layers unit

# The long profile of the property tests (the hub state machine: 1,500 examples of 60
# steps per engine, ~10-15 min here); TICKWIRE_SM_EXAMPLES / _STEPS override. No
# per-test timeout: a test of thousands of examples outlasts the 120 s one of make test.
test-deep: $(STAMP)
	TICKWIRE_DEEP=1 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
		--timeout=0 tests/test_hub_state_machine.py tests/test_native_fuzz.py $(PYTEST_ARGS)

# The benchmark scenarios with their peers (docs/benchmarks.md), e.g.
# make bench BENCH_ARGS="fanout --targets tickwire,raw-floor". `tickwire bench` alone is
# the load generator.
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
