# Two entry points: `make run` (the app on its embedded default) and `make test` (the whole suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-test translations browser db-upgrade bench messages

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed translations
install-test: $(VENV)/.installed-test translations browser

# Message catalogs are compiled here, not committed: the .po files are the source.
translations: $(VENV)/.installed
	$(VENV)/bin/pybabel -q compile -d wizard/translations

# Browser tests drive Debian's Chromium (no browser download); a CJK font lets screenshots show Chinese.
browser:
	@{ command -v chromium >/dev/null && fc-list :lang=zh-tw | grep -q . ; } || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-wqy-microhei; }

db-upgrade: install
	$(VENV)/bin/flask --app wizard db upgrade

run: db-upgrade
	$(PY) -m wizard.devserver

test: install-test
	$(PY) -m pytest

bench: install-test
	$(PY) tests/bench/webhook.py

# After changing user-facing text: refresh the template and both catalogs, then translate what is new.
messages: $(VENV)/.installed
	$(VENV)/bin/pybabel extract -F babel.cfg -c zh: -k _l -k lazy_gettext -o wizard/translations/messages.pot .
	$(VENV)/bin/pybabel -q update -i wizard/translations/messages.pot -d wizard/translations --no-fuzzy-matching
