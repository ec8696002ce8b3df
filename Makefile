# Two commands for a new user: `make run` (the platform with demo data) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/14

.PHONY: install install-dev browser pdf-tools run test lint test-sqlite test-postgres bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null) \
			|| if [ "$$CI" = "true" ]; then \
				echo "Could not install chromium and CI=true: the browser tests are required."; exit 1; \
			else \
				echo "Could not install chromium: browser tests will be skipped (and fail under CI=true)."; \
			fi; \
	fi

# Debian's Pango (WeasyPrint renders the invoice PDFs with it), a font, and poppler-utils (pdftotext reads
# the PDFs in the tests). Installed when missing, as `browser` installs chromium.
PDF_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils
pdf-tools:
	@if ! command -v pdftotext >/dev/null || ! ldconfig -p | grep -q libpangoft2-1.0; then \
		echo "Installing Pango and poppler-utils for the invoice PDFs..."; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(PDF_PACKAGES) >/dev/null) \
			|| if [ "$$CI" = "true" ]; then \
				echo "Could not install $(PDF_PACKAGES) and CI=true: the PDF tests are required."; exit 1; \
			else \
				echo "Could not install $(PDF_PACKAGES): invoice PDFs and their tests will fail."; \
			fi; \
	fi

run: install pdf-tools
	@mkdir -p .data/broker .data/broker-processed .data/broker-control
	$(PY) manage.py migrate --noinput -v0
	@$(PY) manage.py seeddemo --port $(PORT)
	$(PY) manage.py runembedded --port $(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test-sqlite: install-dev
	@echo "=== pytest on SQLite (embedded mode) ==="
	env -u DATABASE_URL -u REDIS_URL CELERY_EAGER=1 $(VENV)/bin/pytest -m "not celery_worker and not postgres"

test-postgres: install-dev
	@echo "=== pytest on PostgreSQL + Redis with a real Celery worker ==="
	@if $(PY) -m tests.services_up "$(PG_URL)" "$(REDIS_TEST_URL)"; then \
		DEBUG=1 DATABASE_URL="$(PG_URL)" REDIS_URL="$(REDIS_TEST_URL)" CELERY_EAGER=1 $(VENV)/bin/pytest -m "not browser and not sqlite_only"; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL or Redis is unreachable and CI=true: the PostgreSQL pass is required."; exit 1; \
	else \
		echo "SKIPPED the PostgreSQL + Redis pass: PostgreSQL ($(PG_URL)) or Redis ($(REDIS_TEST_URL)) is unreachable."; \
	fi

test: install-dev browser pdf-tools lint test-sqlite test-postgres

# Each line of both benchmarks says PASS or FAIL against its target; both always run, and the target
# fails when any line failed.
bench: install-dev
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	@status=0; \
	DATABASE_URL="$(PG_URL)" BENCH_REDIS_URL="$(BENCH_REDIS_URL)" $(PY) -m bench.ingest || status=1; \
	DATABASE_URL="$(PG_URL)" REDIS_URL="$(BENCH_REDIS_URL)" $(PY) -m bench.aggregate || status=1; \
	if [ $$status -ne 0 ]; then echo "make bench: some lines FAILED (see above)"; fi; \
	exit $$status

# Crashes and outages under load (bench/chaos.py): its own PostgreSQL and Redis on free ports, never the
# machine's. `make chaos SEED=7 RECORDS=50000` repeats or resizes a run; the seed is printed.
.PHONY: chaos
SEED ?=
RECORDS ?= 200000
chaos: install-dev
	$(PY) -m bench.chaos --records $(RECORDS) --fail-on-exits $(if $(SEED),--seed $(SEED))

clean:
	rm -rf $(VENV) .data staticfiles
