"""Flask extensions, created here without an app and bound in ``create_app`` (flaskr's pattern)."""
import sqlite3
import time

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate(render_as_batch=True, compare_type=True)
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
# Limits stand on the endpoints listed in security.THROTTLED_ENDPOINTS; storage and on/off come from
# RATELIMIT_* config. Sign-in has its own growing delays (throttle.py).
limiter = Limiter(key_func=get_remote_address)


# SQLite's wait for its write lock: how long at most (the busy timeout), and how long between two looks at
# first and at most (``take_write_lock``). The receiver looks more often (line/group_commit.py).
BUSY_TIMEOUT = 5.0
LOOK_AGAIN = (0.0005, 0.002)
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def tune_sqlite(engine):
    """SQLite in WAL mode lets the receiver write while pages read; a writer waits for the write lock instead
    of failing (``take_write_lock``, up to the busy timeout)."""
    from sqlalchemy import event

    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _write_lock_first(conn, _cursor, statement, _parameters, _context, _executemany):
        """A transaction's first write takes the write lock by ``take_write_lock`` before it runs."""
        raw = conn.connection.driver_connection
        if raw.in_transaction or raw.isolation_level is None or statement.lstrip()[:6].upper() not in _WRITES:
            return
        take_write_lock(raw, BUSY_TIMEOUT, LOOK_AGAIN)


def take_write_lock(raw, timeout, look_again):
    """Open a transaction on the sqlite3 connection ``raw`` with SQLite's write lock (``BEGIN IMMEDIATE``),
    looking again after ``look_again[0]`` s, doubling up to ``look_again[1]``, while another connection holds
    it; after ``timeout`` s, SQLite's "database is locked" as ever.

    Why not SQLite's own wait (the busy timeout): it sleeps 1, 2, 5, 10 … and then 100 ms between looks, and
    the queue's consumer and the receiver each commit many small transactions: a writer that found the lock
    taken looked again 230, 330, 430 ms later, found it taken again by the next small transaction, and waited
    on (the webhooks' p99 in the send-plan bench was these steps, and the consumer sent a plan's chunks half
    as fast). Looking every millisecond or two, a writer waits about as long as the writer before it holds
    the lock. The connection's own busy timeout is off only for these looks."""
    deadline = time.monotonic() + timeout
    pause = look_again[0]
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, look_again[1])
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


def release_sqlite_write_lock():
    """Commit what this session has written, on SQLite, before the caller waits on something slow (LINE).

    Why: SQLite has one write lock per file, taken by a session's first write and held until its commit. A
    request that has written and then waits up to LINE_TIMEOUT for LINE holds it all that time, and every
    other shop's webhook waits behind it until the busy timeout ends in "database is locked". The paths that
    call LINE commit their work afterwards anyway, and none undoes earlier writes when LINE fails, so
    committing them first changes nothing but who waits. A session that has only read holds no lock (WAL)
    and is left alone; PostgreSQL locks rows, not the database, and is left alone too."""
    from flask import current_app, has_app_context

    if not has_app_context() or "sqlalchemy" not in current_app.extensions:
        return  # no app of ours (a script, the sandbox's own app): no session of ours to hold a lock
    session = db.session()
    if not session.in_transaction() or session.get_bind().dialect.name != "sqlite":
        return
    raw = session.connection().connection.dbapi_connection
    if getattr(raw, "in_transaction", False):  # sqlite3 opens a transaction only for a write
        session.commit()
