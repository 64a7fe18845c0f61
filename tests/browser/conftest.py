"""Browser fixtures: Debian's headless Chromium driven by Playwright, against the app served on its
``PUBLIC_BASE_URL`` (``live_app``) with the LINE sandbox behind it.

One Chromium is started for the whole run (starting it costs about a second); every test gets a fresh
context, so cookies, language and viewport never leak between tests. Playwright's own browsers are never
downloaded: the Debian package at /usr/bin/chromium is used, and without it these tests are skipped.
"""
import logging
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WIZARD_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: CI runs as root. The network flags stop Chromium's own calls home, which this machine's closed
# network refuses (and which would only slow the start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
# Every page here answers in well under a second on a calm machine; 25 s still tolerates a machine busy with
# a parallel run (a 5 s limit failed under load), and a missing element fails within that.
TIMEOUT_MS = 25000


# Browser tests run on SQLite only, unless WIZARD_BROWSER_POSTGRESQL=1 (with WIZARD_TEST_DATABASE_URL) asks for
# PostgreSQL too. They test what a person sees and does; every query behind these pages already runs on
# PostgreSQL in tests/test_wizard.py and tests/test_status_api.py, and a second pass of this Chromium suite
# would double its run time (about 40 s) without covering another line of SQL.
PG_URL = os.environ.get("WIZARD_TEST_DATABASE_URL")
BROWSER_BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL and os.environ.get("WIZARD_BROWSER_POSTGRESQL") == "1"
                                 else [])


@pytest.fixture(params=BROWSER_BACKENDS)
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'wizard.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "postgresql_url")


@pytest.fixture(autouse=True)
def quiet_request_log():
    """Every page load fetches a few assets: keep werkzeug's access log out of failure reports."""
    log = logging.getLogger("werkzeug")
    level = log.level
    log.setLevel(logging.WARNING)
    yield
    log.setLevel(level)


@pytest.fixture(scope="session")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def app(app):
    """The shared app, with CSRF protection on as in production: the browser submits the real forms, so a
    form that forgot its token fails here."""
    app.config["WTF_CSRF_ENABLED"] = True
    return app


@pytest.fixture
def worker(app):
    """The event worker as the embedded default runs it: a thread that processes stored webhook events (a
    follow becomes a contact with its LINE profile name)."""
    from wizard import queue
    queue.start_in_process(app)
    yield
    queue.stop_in_process(app)


@pytest.fixture
def context(browser, live_app):
    ctx = browser.new_context(base_url=live_app.url, viewport={"width": 1280, "height": 800},
                              locale="zh-TW", timezone_id="Asia/Taipei")
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def owner(make_shop):
    """A new shop owner's shop: (slug, e-mail); the password is 'correct horse'."""
    return make_shop("sunny-bakery", "晴天烘焙坊")


@pytest.fixture
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
