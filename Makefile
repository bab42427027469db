# erx-connector: every set-up step lives here. `make demo` and `make test` create
# .venv from the pinned requirements when it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Local ports (override on the command line: make sandbox SANDBOX_PORT=9765 PORT=8001).
# `make sandbox` listens on SANDBOX_PORT and posts its webhooks to the service on PORT;
# `make run` listens on PORT; `make run` and `make worker` call the platform at
# ERX_BASE_URL, which follows SANDBOX_PORT unless ERX_BASE_URL is set.
SANDBOX_PORT ?= 8765
PORT         ?= 8000
ERX_BASE_URL ?= http://127.0.0.1:$(SANDBOX_PORT)

.PHONY: demo test test-fast browser lint migrate seed run worker sandbox bench clean manifests

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## demo: migrate + seed the database, start sandbox, service and worker, send one prescription, print its timeline
demo: $(STAMP)
	$(BIN)/python -m scripts.demo

## test: the whole suite (unit, integration, chaos, storm, browser); PostgreSQL when DATABASE_URL is set.
## The deployment tests (tests/deploy) boot the rendered manifests: `make manifests` runs them.
test: $(STAMP) browser
	$(BIN)/python -m pytest --ignore=tests/deploy

## test-fast: everything but the slow chaos and storm tests
test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/deploy

## browser: Debian's chromium for the page tests, from the package registry (never a browser download)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "make: installing Debian's chromium for the browser tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@# axe-core for the accessibility checks, pinned by tests/browser/package-lock.json (no CDN)
	@test -f tests/browser/node_modules/axe-core/axe.min.js || { \
	  command -v npm >/dev/null 2>&1 || { \
	    echo "make: installing Debian's npm for axe-core"; \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; }; \
	  npm ci --prefix tests/browser --no-audit --no-fund --silent; }

## lint: ruff check (rules and the 120-column line length) and ruff format --check, as CI runs them
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

seed: migrate
	$(BIN)/flask --app app seed

run: $(STAMP)
	BIND=127.0.0.1:$(PORT) ERX_BASE_URL=$(ERX_BASE_URL) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

worker: $(STAMP)
	ERX_BASE_URL=$(ERX_BASE_URL) $(BIN)/flask --app app worker

sandbox: $(STAMP)
	$(BIN)/python -m sandbox --host 127.0.0.1 --port $(SANDBOX_PORT) --webhook-url http://127.0.0.1:$(PORT)/webhooks/platform --webhook-secret whsec_sandbox_test_secret --auto

bench: $(STAMP)
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.send_latency
	bash bench/webhooks/run.sh
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.reads

## manifests: render the k8s overlays, validate them offline, scan them and the Dockerfile, test the alert rules
manifests:
	bash .ci/manifests

clean:
	rm -rf $(VENV) instance .pytest_cache
