"""Fixtures in flaskr's style: ``app``, ``client``, ``runner``, plus the LINE sandbox and a live server.

Every test that touches the database runs on SQLite, and again on PostgreSQL when
``WIZARD_TEST_DATABASE_URL`` is set (CI sets it). The app always talks to a real sandbox over HTTP.
"""
import os
import uuid

import pytest
from cryptography.fernet import Fernet

from tests.line_helpers import line  # noqa: F401  (the fixture: a shop on a sandbox channel)
from tests.servers import Served, free_port
from wizard import create_app
from wizard.extensions import db

PG_URL = os.environ.get("WIZARD_TEST_DATABASE_URL")
# The suite states its own configuration: no WIZARD_* setting of the caller's (WIZARD_WORKER_IN_PROCESS=1,
# WIZARD_CHECK_MAX_AGE=0 …) may change a test or a process a test starts (CLI, gunicorn, benchmark), so each
# is removed for the whole session. Kept: the variables that tell the harness itself where things are.
HARNESS_VARIABLES = {"WIZARD_TEST_DATABASE_URL", "WIZARD_SHARED_DIR", "WIZARD_CHROMIUM",
                     "WIZARD_BROWSER_POSTGRESQL"}
for _name in [name for name in os.environ if name.startswith("WIZARD_") and name not in HARNESS_VARIABLES]:
    del os.environ[_name]
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wizard.db'}"
    return PG_URL


@pytest.fixture
def sandbox(tmp_path):
    """A LINE sandbox on its own port and its own SQLite file, reached by the app over real HTTP.

    The file is the app's default ``SANDBOX_DATABASE_URL`` (instance/sandbox.db), so ``flask sandbox …``
    commands run through ``runner`` act on the same channels. ``sandbox.control`` is its ``Sandbox`` object
    (create channels, make users follow, read what was sent, inject failures)."""
    from wizard.sandbox import create_sandbox_app
    (tmp_path / "instance").mkdir(exist_ok=True)
    sandbox_app = create_sandbox_app(f"sqlite:///{tmp_path / 'instance' / 'sandbox.db'}")
    served = Served(sandbox_app)
    sandbox_app.url = served.url
    yield sandbox_app
    served.stop()
    sandbox_app.control.close()


@pytest.fixture
def app_port():
    return free_port()


@pytest.fixture
def app(db_url, sandbox, tmp_path, app_port):
    app = create_app({
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": db_url,
        "SECRET_KEY": "test-secret-key",
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "WTF_CSRF_ENABLED": False,
        "LINE_API_HOST": sandbox.url,
        "SANDBOX": False,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{app_port}",
        "LINE_TIMEOUT": 3.0,
        # Each test its own queue in a shared PostgreSQL: no task of an earlier test reaches this one's consumer.
        "QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
    })
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_app(app, app_port):
    """The app served on ``PUBLIC_BASE_URL`` so the sandbox can deliver webhooks to it."""
    served = Served(app, port=app_port)
    yield served
    served.stop()


@pytest.fixture
def make_user(app):
    from wizard.accounts import create_user

    def make(email=None, password="correct horse", staff=False):
        with app.app_context():
            user = create_user(email or f"{uuid.uuid4().hex[:8]}@example.com", password, staff)
            db.session.commit()
            return user.email
    return make


@pytest.fixture
def make_shop(app, make_user):
    """An owner account and its shop; returns (slug, owner e-mail).

    The owner's password is 'correct horse'."""
    from wizard.accounts import create_shop

    def make(slug="sunny-bakery", name="晴天烘焙坊"):
        email = make_user(f"owner-{slug}@example.com")
        with app.app_context():
            create_shop(slug, name, email)
            db.session.commit()
        return slug, email
    return make


@pytest.fixture
def login(client):
    def do(email, password="correct horse"):
        response = client.post("/login", data={"email": email, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return response
    return do


@pytest.fixture
def owner(client, make_shop, login):
    """A shop owner signed in (pages in English, so tests can name what they look for); returns the slug.
    The browser tests have their own ``owner``: they sign in through the page."""
    slug, email = make_shop()
    login(email)
    client.get("/?lang=en")
    return slug


@pytest.fixture
def sink():
    """A plain HTTP server that records what reaches it (tests/sink.py): a webhook URL that is not the app."""
    from tests.sink import Sink
    receiver = Sink()
    yield receiver
    receiver.stop()
