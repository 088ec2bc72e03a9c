# pbxscreen: `make demo` runs the product, `make test` runs the tests. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install compilemessages messages chromium demo test soak lint format migrations-check check

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "pbxscreen needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements.lock --editable ".[dev]"
	touch $(STAMP)

install: $(STAMP) compilemessages

# The translations (locale/*/LC_MESSAGES/*.po) compiled to .mo, which are not committed. Django's
# compilemessages needs GNU gettext's msgfmt: installed from Debian's packages when missing.
# docs/languages.md.
compilemessages: $(STAMP)
	@command -v msgfmt >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gettext)
	@$(BIN)/python manage.py compilemessages --ignore .venv --ignore var --verbosity 0

# Re-extract every marked string into the German, French and Spanish catalogs (after adding or
# changing text); then translate the new or fuzzy entries and run the i18n tests.
MESSAGES_IGNORE := -i .venv -i var -i tests -i staticfiles -i build -i docs -i deploy -i "screening/devtools"
messages: $(STAMP)
	@command -v xgettext >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gettext)
	$(BIN)/python manage.py makemessages -l de -l fr -l es --add-location file $(MESSAGES_IGNORE)
	$(BIN)/python manage.py makemessages -d djangojs -l de -l fr -l es --add-location file $(MESSAGES_IGNORE)

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
chromium:
	@test -x $(CHROMIUM) || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

demo: install
	$(BIN)/python manage.py demo

# The scale-out setup in CI: this machine's PostgreSQL and Redis database 11 (flushed first; the
# bench uses 15, the soak 13). Each pytest process creates its own test database.
PG_URL ?= postgres://postgres@127.0.0.1:5432/pbxscreen
CI_REDIS_URL ?= redis://127.0.0.1:6379/11
SCALEOUT_ENV := DATABASE_URL=$(PG_URL) REDIS_URL=$(CI_REDIS_URL)

# 1. the whole suite on the embedded setup (SQLite, in-memory layer);
# 2. every test but the browser ones on PostgreSQL + Redis, with the multi-process/fault tests;
# 3. a short soak with faults on the scale-out setup.
test: install chromium
	$(BIN)/python -m pytest -m "not scaleout"
	$(BIN)/python -c "import redis; redis.Redis.from_url('$(CI_REDIS_URL)').flushdb()"
	$(SCALEOUT_ENV) $(BIN)/python -m pytest -m "not browser"
	$(SCALEOUT_ENV) $(BIN)/python manage.py soak --minutes 0.5 --operators 10 --call-rate 2 --faults on

soak: install
	$(SCALEOUT_ENV) $(BIN)/python manage.py soak --minutes 5 --operators 50 --call-rate 5 --faults on

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrations-check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

check: lint migrations-check test
