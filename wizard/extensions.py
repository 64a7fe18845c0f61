"""Flask extensions, created here without an app and bound in ``create_app`` (flaskr's pattern)."""
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


def tune_sqlite(engine):
    """SQLite in WAL mode lets the receiver write while pages read; busy_timeout waits instead of failing."""
    from sqlalchemy import event

    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


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
