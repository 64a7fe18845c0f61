"""Fixtures in flaskr's style: ``app``, ``client``, ``runner``, plus the LINE sandbox and a live server.

Every test that touches the database runs on SQLite, and again on PostgreSQL when
``WIZARD_TEST_DATABASE_URL`` is set (CI sets it).

Why the harness looks like this (a developer waits for it, so every test pays only for what it uses):
- ``app`` has no LINE: its ``LINE_API_HOST`` is a port where nothing listens, so a LINE call the test did not
  ask for fails at once instead of reaching anything. A test that talks to LINE asks for ``sandbox`` (or a
  fixture built on it, such as ``line``); the app then points at that sandbox over real HTTP.
- The schema is built once per session (per pytest-xdist worker and database): SQLite copies a template file
  for each test, PostgreSQL empties the tables the last test wrote to with one TRUNCATE. The tests that run
  migrations themselves leave the schema changed, and the next test builds it again.
- Passwords are hashed with a cheap method (``PASSWORD_HASH_METHOD``, honoured only under TESTING).
- Under pytest-xdist every worker has its own PostgreSQL database (``<name>_<run>_gw0`` …, made here and
  dropped at the end), its own Redis database numbers (``servers.redis_url``), its own temporary directory
  and free ports.
- Markers: ``browser`` (tests/browser) and ``system`` (the slow multi-process tests, SYSTEM_MODULES and
  SYSTEM_TESTS);
  ``make check`` runs everything else. Under ``--dist worksteal`` the system and browser tests start first,
  spread over the workers, so the run never waits at its end for one of them.
- ``environment_kept``: whatever a test puts in ``os.environ`` is gone after it, so the order never matters.
"""
import os
import shutil
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, make_url, text

from tests.line_helpers import line  # noqa: F401  (the fixture: a shop on a sandbox channel)
from tests.servers import WORKER, Served, free_port
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
# Port 9 (discard) on loopback: nothing listens, so a LINE call from a test without the sandbox is refused
# at once.
NO_LINE = "http://127.0.0.1:9"
# Seconds the sandbox waits for the app to answer a webhook (LINE: 2).
SANDBOX_WEBHOOK_TIMEOUT = 10.0
# One round of PBKDF2 instead of scrypt: an account costs microseconds instead of a fifth of a second.
FAST_PASSWORD_HASH = "pbkdf2:sha256:1"
# The modules whose tests are slow, start processes or servers of their own, or need the machine to
# themselves for their timing; `make check` leaves them out (see Makefile).
SYSTEM_MODULES = {"test_faults", "test_production", "test_packaging", "test_runbook", "test_deployment",
                  "test_idle_transactions", "test_migration_under_traffic", "test_migrations"}
# The tests in otherwise quick modules that start servers or processes of their own (gunicorn, queue consumers,
# the dev server, workers killed with -9): system tests too.
SYSTEM_TESTS = {"test_metrics_add_up_every_gunicorn_worker", "test_broken_chunked_bodies_are_400_under_gunicorn",
                "test_the_queue_consumer_runs_as_configured_and_stops_on_sigterm",
                "test_the_dev_server_refuses_to_start_outside_the_embedded_default",
                "test_a_worker_killed_mid_event_loses_nothing_and_doubles_nothing",
                "test_a_worker_killed_after_line_took_the_form_never_sends_it_twice"}
# The tests that take minutes: under pytest-xdist each starts first on a worker of its own.
SLOWEST_MODULES = {"test_faults", "test_runbook", "test_production", "test_migration_under_traffic",
                   "test_batches_faults", "test_send_plan_journey"}
# The modules whose tests build the schema their own way (migrations): after one of them the next test on
# that worker's PostgreSQL database builds the schema again.
SCHEMA_MODULES = {"test_migrations", "test_migration_under_traffic", "test_runbook", "test_production",
                  "test_deployment"}


def pytest_collection_modifyitems(config, items):
    browser_dir = Path(__file__).parent / "browser"
    for item in items:
        if browser_dir in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
        elif _module_name(item) in SYSTEM_MODULES or item.originalname in SYSTEM_TESTS:
            item.add_marker(pytest.mark.system)
    _start_system_tests_first(config, items)


def _slow(item):
    return item.get_closest_marker("system") or item.get_closest_marker("browser")


def _start_system_tests_first(config, items):
    """Under ``--dist worksteal`` each worker starts with an equal slice of the (shuffled) list and idle workers
    steal from the end of the longest queue. A slow test (system or browser) left near the end of a slice would
    start last and make the whole run wait for it; so the slow tests are dealt out, one at a time, to the start
    of every worker's slice, the slowest modules first. Every worker computes the same order from the same
    seed, as pytest-xdist requires."""
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers < 2 or config.getoption("dist", None) != "worksteal":
        return
    system = [item for item in items if _slow(item)]
    if not system:
        return
    # The slowest first, so that they are the first test of a worker each.
    system.sort(key=lambda item: _module_name(item) not in SLOWEST_MODULES)
    rest = [item for item in items if not _slow(item)]
    slices = [[] for _ in range(workers)]
    for number, item in enumerate(system):
        slices[number % workers].append(item)
    # The rest fill each slice up to the length worksteal's first split gives it.
    remaining = len(items)
    for number, share in enumerate(slices):
        size = remaining // (workers - number)
        remaining -= size
        take = max(0, size - len(share))
        share.extend(rest[:take])
        del rest[:take]
    items[:] = [item for share in slices for item in share] + rest


def _module_name(item):
    return item.module.__name__.rpartition(".")[2]


@pytest.fixture(scope="session")
def postgresql_url(request):
    """This worker's PostgreSQL database: WIZARD_TEST_DATABASE_URL itself in a plain run, a database of its
    own under pytest-xdist (``<name>_<run>_gw0`` …: the run's id keeps two runs beside each other apart),
    created empty now and dropped when the session ends."""
    if not WORKER:
        yield PG_URL
        return
    base = make_url(PG_URL)
    name = f"{base.database}_{request.config.workerinput['testrunuid'][:8]}_{WORKER}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wizard.db'}"
    return request.getfixturevalue("postgresql_url")


def _config(db_url, tmp_path, line_host, app_port):
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": db_url,
        "SECRET_KEY": "test-secret-key",
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "WTF_CSRF_ENABLED": False,
        "LINE_API_HOST": line_host,
        "SANDBOX": False,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{app_port}",
        # As long as the sandbox waits for a webhook's answer: a wizard check that has the sandbox call the app
        # back (the webhook test) must not give up on a busy machine before the sandbox does.
        "LINE_TIMEOUT": SANDBOX_WEBHOOK_TIMEOUT,
        # /readyz's checks answer in milliseconds; with two suites on two cores one took over the default 2 s.
        # The tests of an unready store set their own short bound.
        "READYZ_TIMEOUT": SANDBOX_WEBHOOK_TIMEOUT,
        "PASSWORD_HASH_METHOD": FAST_PASSWORD_HASH,
        # Each test its own queue in a shared PostgreSQL: no task of an earlier test reaches this one's consumer.
        "QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
    }


class Schema:
    """The schema, built once per session and database and handed to each test empty."""

    def __init__(self, directory):
        self.directory = directory
        self.sqlite_template = None
        self.postgresql_built = set()  # the PostgreSQL URLs whose schema is whole (and maybe holds rows)

    def _build(self, url):
        app = create_app({**_config(url, self.directory, NO_LINE, 1), "INSTANCE_PATH": str(self.directory)})
        with app.app_context():
            db.drop_all()
            db.create_all()
            db.session.remove()
            db.engine.dispose()

    def give(self, url):
        """Make the database at ``url`` an empty copy of the schema."""
        if url.startswith("sqlite:///"):
            if self.sqlite_template is None:
                template = self.directory / "template.db"
                self._build(f"sqlite:///{template}")
                self.sqlite_template = template
            target = Path(url[len("sqlite:///"):])
            if not target.exists():
                shutil.copyfile(self.sqlite_template, target)
            return
        if url in self.postgresql_built:
            engine = create_engine(url)
            try:
                with engine.begin() as connection:
                    connection.execute(text("SET LOCAL lock_timeout = '20s'"))
                    used = _used_tables(connection)
                    if used:
                        tables = ", ".join(f'"{name}"' for name in sorted(used))
                        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                return
            except Exception:  # a table a test dropped or changed: build it again below
                self.postgresql_built.discard(url)
            finally:
                engine.dispose()
        self._build(url)
        self.postgresql_built.add(url)

    def changed(self, url):
        """A test built the schema its own way (migrations): the next test builds it again."""
        self.postgresql_built.discard(url)


# The tables whose sequence has handed out a number since the last RESTART IDENTITY (the rows may be gone).
_USED_SEQUENCES = text("""
    SELECT DISTINCT owner.relname FROM pg_sequences AS used
    JOIN pg_class AS sequence ON sequence.relname = used.sequencename AND sequence.relkind = 'S'
    JOIN pg_depend AS link ON link.objid = sequence.oid AND link.deptype IN ('a', 'i')
    JOIN pg_class AS owner ON owner.oid = link.refobjid
    WHERE used.schemaname = current_schema() AND used.last_value IS NOT NULL""")


def _used_tables(connection):
    """The tables a test wrote to: those holding a row, and those whose ids moved on. A TRUNCATE of every table
    took 0.3-0.8 s per test on a busy machine, finding these 25 ms; only these are emptied (and every table that
    refers to them)."""
    names = [table.name for table in db.metadata.sorted_tables]
    with_rows = " UNION ALL ".join(f"(SELECT '{name}' FROM \"{name}\" LIMIT 1)" for name in names)
    used = {row[0] for row in connection.execute(text(with_rows))}
    return used | {row[0] for row in connection.execute(_USED_SEQUENCES)}


@pytest.fixture(scope="session")
def schema(tmp_path_factory):
    return Schema(tmp_path_factory.mktemp("schema"))


@pytest.fixture
def sandbox(tmp_path):
    """A LINE sandbox on its own port and its own SQLite file, reached by the app over real HTTP.

    Asking for it (directly or through ``line``) is what connects the test's ``app`` to LINE. The file is the
    app's default ``SANDBOX_DATABASE_URL`` (instance/sandbox.db), so ``flask sandbox …`` commands run through
    ``runner`` act on the same channels. ``sandbox.control`` is its ``Sandbox`` object (create channels, make
    users follow, read what was sent, inject failures)."""
    from wizard.sandbox import create_sandbox_app
    (tmp_path / "instance").mkdir(exist_ok=True)
    # LINE gives up on a webhook after 2 s; on a machine busy with a parallel run our receiver sometimes took
    # longer, and a test then failed at a follow that never reached the app. A test about the limit itself sets
    # ``sandbox.control.webhook_timeout``.
    sandbox_app = create_sandbox_app(f"sqlite:///{tmp_path / 'instance' / 'sandbox.db'}",
                                     webhook_timeout=SANDBOX_WEBHOOK_TIMEOUT)
    served = Served(sandbox_app)
    sandbox_app.url = served.url
    yield sandbox_app
    served.stop()
    sandbox_app.control.close()


@pytest.fixture
def sandbox_control(sandbox):
    """The sandbox's ``Sandbox`` object: LINE as a test drives it (channels, friends, what was sent)."""
    return sandbox.control


@pytest.fixture
def app_port():
    return free_port()


@pytest.fixture
def app(request, db_url, schema, tmp_path, app_port):
    """The app on an empty database. Without the ``sandbox`` fixture in the test it has no LINE."""
    line_host = request.getfixturevalue("sandbox").url if "sandbox" in request.fixturenames else NO_LINE
    schema.give(db_url)
    app = create_app(_config(db_url, tmp_path, line_host, app_port))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if _module_name(request) in SCHEMA_MODULES:
        schema.changed(db_url)


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
def staff(client, make_user, login):
    """A staff member signed in as staff@example.com (pages in English); returns the e-mail."""
    email = make_user("staff@example.com", staff=True)
    login(email)
    client.get("/?lang=en")
    return email


@pytest.fixture
def staff_zh(client, staff):
    """``staff``, reading the pages in Chinese (the default language); returns the e-mail."""
    client.get("/?lang=zh_Hant_TW")
    return staff


@pytest.fixture(autouse=True)
def environment_kept():
    """Whatever a test or the code it runs puts in ``os.environ`` (PROMETHEUS_MULTIPROC_DIR, say) ends with it:
    no test sees another's leftovers, in any order."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture
def sink():
    """A plain HTTP server that records what reaches it (tests/sink.py): a webhook URL that is not the app."""
    from tests.sink import Sink
    receiver = Sink()
    yield receiver
    receiver.stop()
