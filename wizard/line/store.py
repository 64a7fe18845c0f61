"""The webhook tables' shared helpers: race-safe writes (insert-or-ignore, counters) and the traffic numbers.

SQLite and PostgreSQL both speak ``INSERT … ON CONFLICT``; SQLAlchemy exposes it per dialect, so this module
picks the dialect's ``insert`` once and the receiver, the worker and events.py never see the difference.
A conflicting row is skipped (or counted) by the database itself, so a concurrent duplicate cannot surface as
an IntegrityError and become a 500.
"""
import fcntl
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import Contact, Message, WebhookDelivery, WebhookEvent, WebhookRejection, utcnow

log = logging.getLogger(__name__)
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def dialect_insert(model):
    name = db.session.get_bind().dialect.name
    try:
        return _INSERTS[name](model)
    except KeyError:  # pragma: no cover - only the two supported databases are configured
        raise RuntimeError(f"unsupported database dialect {name!r}") from None


_statements = {}


def _insert_ignoring_statement(dialect, model, conflict_columns, returning):
    key = (dialect, model, tuple(conflict_columns), returning)
    stmt = _statements.get(key)
    if stmt is None:
        table = model.__table__
        stmt = _INSERTS[dialect](table).on_conflict_do_nothing(index_elements=conflict_columns)
        if returning is not None:
            stmt = stmt.returning(table.c[returning])
        stmt = _statements.setdefault(key, stmt)
    return stmt


def insert_ignoring(model, rows, conflict_columns, returning=None):
    """INSERT ``rows``, silently skipping any that collide on ``conflict_columns``.

    With ``returning`` (a column name), returns that column's value for each row actually inserted. The
    statement is built once per process and runs on the session's connection without ORM bookkeeping: the
    receiver runs this on every delivery, where building it anew cost more than the SQL.
    """
    if not rows:
        return []
    connection = db.session.connection()
    stmt = _insert_ignoring_statement(connection.dialect.name, model, conflict_columns, returning)
    result = connection.execute(stmt, rows[0] if len(rows) == 1 else rows)
    return list(result.scalars()) if returning is not None else []


class GroupCommit:
    """Deliveries arriving together share one transaction: group commit, as databases do for their logs.

    Each request thread queues its item; if no thread of this process is writing, it takes everything
    queued and hands it to ``commit_batch`` (one transaction), else it waits for the writer that takes its
    item along. Nobody waits on a timer: a lone item is written at once, and under load each commit (its
    round trips, its fsync, SQLite's single write lock) is shared by every item that arrived while the last
    one ran. ``commit_batch`` must set ``done`` (and ``error`` if it failed) on every item; each request
    answers only after its own item is done.

    On SQLite two more things keep the writers moving (see ``SqlitePacing``).
    """

    def __init__(self, commit_batch, database_url=None):
        self._commit_batch = commit_batch
        self._cond = threading.Condition()
        self._queue = []
        self._writing = False
        self._pacing = SqlitePacing.for_url(database_url) if database_url is not None else None

    def submit(self, item):
        with self._cond:
            self._queue.append(item)
            while self._writing and not item.done:
                self._cond.wait()
            if item.done:
                return
            self._writing = True
            batch, self._queue = self._queue, []
        try:
            if self._pacing is None:
                self._commit_batch(batch)
            else:
                with self._pacing.turn():
                    self._commit_batch(batch)
        finally:
            with self._cond:
                for waiting in batch:
                    if not waiting.done:  # only an unexpected BaseException gets here
                        waiting.error, waiting.done = RuntimeError("not written"), True
                self._writing = False
                self._cond.notify_all()


class SqlitePacing:
    """Keeps SQLite's writers from stalling one another; one per process and database file.

    - SQLite has one writer per file and makes the others poll with sleeps (1, 2, 5, 10 … ms) when two
      processes (gunicorn workers) collide. Taking turns on a file lock first makes the loser wait in the
      kernel and wake the moment the winner is done, while its own queue grows into a larger batch.
    - In WAL mode the connection whose commit finds the log over 1000 pages copies it into the database
      and syncs it (about 100 ms here), and every delivery queued behind that commit waits. The
      receiver's connections therefore leave that to a background thread that checkpoints every second
      (PASSIVE: it never blocks readers or writers). Other connections keep SQLite's automatic checkpoint,
      so the log stays bounded even if this thread is gone.
    """

    _by_path = {}

    @classmethod
    def for_url(cls, url):
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        key = (os.getpid(), url.database)
        pacing = cls._by_path.get(key)
        if pacing is None:
            pacing = cls._by_path.setdefault(key, cls(url.database))
        return pacing

    def __init__(self, path, interval=1.0, idle_after=30.0):
        self.path = path
        self._interval, self._idle_after = interval, idle_after
        self._last_turn = time.monotonic()
        self._thread = None
        self._thread_lock = threading.Lock()

    @contextmanager
    def turn(self):
        self._last_turn = time.monotonic()
        self._ensure_checkpointer()
        with open(self.path + ".write-lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
            connection = db.session.connection()
            if not connection.info.get("wizard_manual_checkpoint"):
                connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                connection.info["wizard_manual_checkpoint"] = True
            yield

    def _ensure_checkpointer(self):
        if self._thread is not None and self._thread.is_alive():
            return
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._checkpoint_while_busy, daemon=True,
                                                name="wizard-sqlite-checkpoint")
                self._thread.start()

    def _checkpoint_while_busy(self):
        """Checkpoint every ``interval`` seconds; stop after ``idle_after`` seconds without deliveries."""
        connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
        try:
            while True:
                time.sleep(self._interval)
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or briefly unavailable: the next round tries again
                    log.debug("checkpoint of %s skipped: %s", self.path, exc)
                if time.monotonic() - self._last_turn > self._idle_after:
                    return
        finally:
            connection.close()


def count_rejection(channel_id: int, reason: str) -> None:
    """Add one to the (channel, reason) counter in its own short transaction; never stores the body."""
    now = utcnow()
    stmt = dialect_insert(WebhookRejection).values(
        channel_id=channel_id, reason=reason, count=1, first_at=now, last_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id", "reason"],
        set_={"count": WebhookRejection.count + 1, "last_at": now},
    )
    db.session.execute(stmt)
    db.session.commit()


def event_time(timestamp_ms: int) -> datetime:
    """LINE's millisecond epoch timestamp as the naive UTC datetime every table stores."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def _iso(value):
    return value.isoformat() + "Z" if value else None


def traffic_stats(shop) -> dict:
    """Webhook and contact numbers over every channel the shop has had (history survives a reconnect)."""
    ids = [channel.id for channel in shop.channels]

    def count(model, *where):
        return db.session.scalar(db.select(func.count()).select_from(model).where(
            model.channel_id.in_(ids), *where)) or 0

    by_status = dict(db.session.execute(
        db.select(WebhookEvent.status, func.count()).where(WebhookEvent.channel_id.in_(ids))
        .group_by(WebhookEvent.status)).all())
    by_type = dict(db.session.execute(
        db.select(WebhookEvent.type, func.count()).where(WebhookEvent.channel_id.in_(ids))
        .group_by(WebhookEvent.type)).all())
    rejections = {}
    for row in db.session.scalars(db.select(WebhookRejection).where(WebhookRejection.channel_id.in_(ids))):
        entry = rejections.setdefault(row.reason, {"count": 0, "first_at": row.first_at, "last_at": row.last_at})
        entry["count"] += row.count
        entry["first_at"] = min(entry["first_at"], row.first_at)
        entry["last_at"] = max(entry["last_at"], row.last_at)
    current = shop.channel
    return {
        "shop": shop.slug,
        "channel_id": current.channel_id if current else None,
        "deliveries": count(WebhookDelivery),
        "events": sum(by_status.values()),
        "processed": by_status.get("processed", 0),
        # "processing" is pending work too: claimed by a worker that has not finished (or died).
        "pending": by_status.get("pending", 0) + by_status.get("processing", 0),
        "failed": by_status.get("failed", 0),
        "rejected": sum(entry["count"] for entry in rejections.values()),
        "rejections": {reason: {"count": entry["count"], "first_at": _iso(entry["first_at"]),
                                "last_at": _iso(entry["last_at"])}
                       for reason, entry in sorted(rejections.items())},
        "contacts": count(Contact),
        "blocked": count(Contact, Contact.blocked_at.is_not(None)),
        "forms_sent": count(Contact, Contact.form_sent_at.is_not(None)),
        "forms_filled": count(Contact, Contact.form_filled_at.is_not(None)),
        "messages": count(Message),
        "messages_in": count(Message, Message.direction == "in"),
        "messages_out": count(Message, Message.direction == "out"),
        "event_types": dict(sorted(by_type.items())),
        "last_delivery_at": _iso(max((c.last_delivery_at for c in shop.channels if c.last_delivery_at),
                                     default=None)),
        "last_verified_at": _iso(max((c.last_verified_at for c in shop.channels if c.last_verified_at),
                                     default=None)),
    }
