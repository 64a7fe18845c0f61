# Three entry points: `make run` (the app on its embedded default), `make check` (lint and the fast tests, for
# the developer's loop) and `make test` (the whole suite, CI's command).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run reset-demo check test lint install install-test translations browser servers db-upgrade bench messages mutation

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
install-test: $(VENV)/.installed-test translations browser servers

# Message catalogs are compiled here, not committed: the .po files are the source.
translations: $(VENV)/.installed
	$(VENV)/bin/pybabel -q compile -d wizard/translations

# Browser tests drive Debian's Chromium (no browser download); a CJK font lets screenshots show Chinese.
browser:
	@{ command -v chromium >/dev/null && fc-list :lang=zh-tw | grep -q . ; } || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-wqy-microhei; }

# The production test and the benchmark run Debian's nginx in front of gunicorn (deploy/nginx.conf) and drive
# it with Debian's wrk.
servers:
	@{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } && command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx wrk; }

db-upgrade: install
	$(VENV)/bin/flask --app wizard db upgrade

run: db-upgrade
	$(PY) -m wizard.devserver

# The demo's data only (both databases, the mails written as files and the demo password); the generated keys in
# instance/ stay.
reset-demo:
	rm -f instance/wizard.db instance/wizard.db-wal instance/wizard.db-shm instance/sandbox.db \
		instance/sandbox.db-wal instance/sandbox.db-shm instance/huey.db instance/huey.db-wal \
		instance/huey.db-shm instance/wizard.db.write-lock instance/demo-password
	rm -rf instance/outbox
	@echo "Demo data removed: the next 'make run' creates a new shop, accounts and sandbox channel."

# The linter first: a name that does not exist fails in a second here, not in a test minutes later.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

# pytest-xdist workers: each has its own PostgreSQL database, Redis databases, ports and directories
# (tests/conftest.py). Most tests wait on I/O (HTTP to the sandbox, subprocesses), so more workers than the two
# cores pay off; TEST_WORKERS=0 runs in one process.
TEST_WORKERS  ?= 5
CHECK_WORKERS ?= 4

# The developer's loop: lint, then every test but the browser and system ones (markers in setup.cfg), on SQLite.
check: install-test lint
	env -u WIZARD_TEST_DATABASE_URL $(PY) -m pytest -n $(CHECK_WORKERS) --dist worksteal -m "not browser and not system" -q

# Everything, on SQLite and (with WIZARD_TEST_DATABASE_URL) on PostgreSQL, in random order (pytest-randomly
# prints the seed: PYTEST_ADDOPTS=--randomly-seed=N repeats an order, PYTEST_ADDOPTS="-p no:randomly" fixes it).
test: install-test lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

# Mutation testing (not part of `make test`): mutmut changes wizard/steps and wizard/line one small edit at a
# time and runs the tests that cover it; a mutant no test notices is a test we are missing. Configured in
# setup.cfg [mutmut]; SQLite only, without the browser tests and benchmarks. All of it takes hours on two cores;
# MUTANTS='wizard.line.worker.* wizard.steps.webhook_test.*' (mutmut's name patterns) runs and scores a part.
# Results stay in mutants/ (`rm -rf mutants` starts afresh); `$(VENV)/bin/mutmut results` lists the survivors.
MUTATION_CHILDREN ?= 1
MUTANTS ?=
mutation: install-test
	$(PY) -m pip install -q 'mutmut>=3.8,<4'
	env -u WIZARD_TEST_DATABASE_URL WIZARD_SHARED_DIR="$${WIZARD_SHARED_DIR:-$(CURDIR)/../shared}" \
		$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	@MUTANTS='$(MUTANTS)' $(PY) -c "$$MUTATION_SCORE"

define MUTATION_SCORE
import collections, fnmatch, glob, json, os
from mutmut.stats import status_by_exit_code
patterns = os.environ["MUTANTS"].split()
counts = collections.Counter()
for meta in glob.glob("mutants/**/*.meta", recursive=True):
    for name, code in json.load(open(meta))["exit_code_by_key"].items():
        if code is not None and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
            counts[status_by_exit_code[code]] += 1
total = sum(counts.values())
print(f"mutation score: {counts['killed']} killed / {total} mutants = {counts['killed'] / max(total, 1):.1%}",
      "(" + ", ".join(f"{n} {status}" for status, n in counts.most_common()) + ")")
endef
export MUTATION_SCORE

bench: install-test
	$(PY) tests/bench/webhook.py

# After changing user-facing text: refresh the template and both catalogs, then translate what is new.
messages: $(VENV)/.installed
	$(VENV)/bin/pybabel extract -F babel.cfg -c zh: -k _l -k lazy_gettext -o wizard/translations/messages.pot .
	$(VENV)/bin/pybabel -q update -i wizard/translations/messages.pot -d wizard/translations --no-fuzzy-matching
