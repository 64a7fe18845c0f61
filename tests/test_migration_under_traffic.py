"""A deploy's migration never freezes webhook intake (issue 14, item 18).

ALTER TABLE needs an exclusive lock. If it waits behind a long transaction (a report, a backup, a forgotten
session), every webhook INSERT queues behind the waiting ALTER, and LINE gives up on each after 2 s. The
migrations therefore wait for a lock only briefly (``MIGRATION_LOCK_TIMEOUT``) and try again
(``MIGRATION_ATTEMPTS``).

The test runs what an operator runs, ``flask --app wizard db upgrade``, with a migration that alters
``webhook_events`` (added beside the shipped ones in a copy of wizard/migrations, so the shipped chain stays
as it is), while signed webhooks arrive over HTTP and another session holds a transaction open on
``webhook_events`` for seconds: every webhook is answered 200 within 2 s, every event is stored, and the
upgrade completes once the long transaction ends.
"""
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tests.processes import consumer_env
from tests.webhooks import ROOT, encode, make_channel, signed_headers, text_event
from wizard.extensions import db
from wizard.models import WebhookEvent

LINE_LIMIT = 2.0  # seconds LINE waits for our answer
HELD_AFTER_FIRST_TRY = 4.0  # the long transaction lasts this much longer than the migration's first try
SENDERS = 3

ALTERING_MIGRATION = '''"""A note on each stored event (only in this test)."""
import sqlalchemy as sa
from alembic import op

revision = "i14c_traffic_test"
down_revision = {down!r}


def upgrade():
    op.add_column("webhook_events", sa.Column("traffic_note", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("webhook_events", "traffic_note")
'''


def _migrations_with_an_alter(directory: Path):
    """wizard/migrations copied, plus one migration after its head(s) that alters ``webhook_events``."""
    shutil.copytree(ROOT / "wizard" / "migrations", directory, ignore=shutil.ignore_patterns("__pycache__"))
    heads = ScriptDirectory(str(directory)).get_heads()
    down = heads[0] if len(heads) == 1 else tuple(heads)
    (directory / "versions" / "i14c_traffic_test.py").write_text(ALTERING_MIGRATION.format(down=down))
    return heads


class Senders:
    """Threads that deliver signed webhooks, one after another, and record each answer and its time."""

    def __init__(self, url, channel):
        self.url, self.channel = url, channel
        self.results, self.sent_events = [], 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(SENDERS)]

    def _run(self, n):
        session = requests.Session()
        count = 0
        while not self._stop.is_set():
            count += 1
            user = f"U{n:02d}" + "0" * 29 + "1"
            body = encode({"destination": self.channel["bot_user_id"],
                           "events": [text_event(user, f"第 {count} 則")]})
            started = time.monotonic()
            try:
                status = session.post(self.url, data=body, headers=signed_headers(self.channel["secret"], body),
                                      timeout=30).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self._lock:
                self.results.append((status, time.monotonic() - started))
                self.sent_events += 1
            time.sleep(0.05)

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self._stop.set()
        for thread in self.threads:
            thread.join()


def _alter_tried(engine, upgrade_log: Path):
    """The migration has asked for its lock: its ALTER waits now, or it already gave up once and said so."""
    if "lock was not free" in upgrade_log.read_text():
        return True
    with engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE 'ALTER TABLE webhook_events%'")).scalar())


def test_a_migration_that_alters_webhook_events_under_traffic_keeps_every_webhook_within_two_seconds(
        app, db_url, make_shop, live_app, tmp_path):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: a migration there is a short stop (README, Deploying)")
    slug, _ = make_shop()
    channel = make_channel(app, slug)
    migrations = tmp_path / "migrations"
    heads = _migrations_with_an_alter(migrations)
    engine = create_engine(db_url)
    with engine.begin() as connection:  # the tests' schema is the shipped migrations' head
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        for head in heads:
            connection.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": head})

    senders = Senders(live_app.url + channel["path"], channel)
    blocker = engine.connect()
    upgrade_log = tmp_path / "upgrade.log"
    upgrade = None
    try:
        senders.start()
        time.sleep(1)
        # A long transaction that has read webhook_events (a report, a backup, a session left open).
        blocker.execute(text("SELECT count(*) FROM webhook_events"))
        with open(upgrade_log, "w") as log:
            upgrade = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wizard", "db", "upgrade", "-d", str(migrations)],
                cwd=ROOT, env=consumer_env(app), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while not _alter_tried(engine, upgrade_log):
            assert upgrade.poll() is None, f"the upgrade ended early:\n{upgrade_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the upgrade never reached its ALTER TABLE"
            time.sleep(0.05)
        time.sleep(HELD_AFTER_FIRST_TRY)
        blocker.rollback()  # the long transaction ends
        assert upgrade.wait(timeout=120) == 0, upgrade_log.read_text()[-3000:]
        time.sleep(1)
    finally:
        senders.stop()
        blocker.close()
        if upgrade is not None and upgrade.poll() is None:
            upgrade.kill()
            upgrade.wait()

    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("webhook_events")}
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    statuses = [status for status, _ in senders.results]
    slow = sorted(seconds for _, seconds in senders.results if seconds >= LINE_LIMIT)
    longest = max(seconds for _, seconds in senders.results)
    assert len(statuses) >= 50 and set(statuses) == {200}, f"answers: {sorted(set(map(str, statuses)))}"
    assert not slow, (f"{len(slow)} of {len(statuses)} webhooks took {LINE_LIMIT} s or more "
                      f"(longest {longest:.1f} s) while the migration ran")
    with app.app_context():
        stored = db.session.scalar(db.select(db.func.count(WebhookEvent.id)))
        db.session.remove()
    assert stored == senders.sent_events
    assert "traffic_note" in columns and version == ["i14c_traffic_test"], upgrade_log.read_text()[-3000:]
    assert "lock was not free" in upgrade_log.read_text()  # it did meet the long transaction, and retried


def test_a_migration_that_cannot_get_its_lock_gives_up_changing_nothing_and_names_the_holder(
        app, db_url, tmp_path):
    if not db_url.startswith("postgresql"):
        pytest.skip("lock_timeout is PostgreSQL's")
    migrations = tmp_path / "migrations"
    heads = _migrations_with_an_alter(migrations)
    engine = create_engine(db_url, connect_args={"application_name": "nightly-report"})
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        for head in heads:
            connection.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": head})
    blocker = engine.connect()
    try:
        blocker.execute(text("SELECT count(*) FROM webhook_events"))  # held for the whole upgrade
        upgrade = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wizard", "db", "upgrade", "-d", str(migrations)],
            cwd=ROOT, env=consumer_env(app, MIGRATION_ATTEMPTS=2), capture_output=True, text=True, timeout=120)
    finally:
        blocker.rollback()
        blocker.close()
    output = upgrade.stdout + upgrade.stderr
    assert upgrade.returncode != 0, output
    assert "could not take its table locks in 2 attempts" in output and "Nothing was changed" in output
    assert "nightly-report" in output and "idle in transaction" in output  # who holds it
    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("webhook_events")}
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert "traffic_note" not in columns and version == heads
