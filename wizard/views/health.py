"""GET/POST /healthz (alive) and GET /readyz (ready: the database and the queue answer, the keys read them).

``/healthz`` touches nothing (no database, no session): load balancers use it to see the process is alive,
and the webhook benchmark uses it as the baseline that measures the server and the framework alone.

``/readyz`` is for whoever decides to send traffic here: 200 ``{"database": "ok", "queue": "ok", "keys": "ok"}``,
or 503 with the part that failed. ``keys`` decrypts the newest stored value of every encrypted column with this
process's ENCRYPTION_KEY: a machine started with another key (or left behind by a key rotation) answers every
webhook 500, so it must not look ready (issue 14, item 21).

Each check runs on its own thread and gets ``READYZ_TIMEOUT`` seconds, so a database or queue host that
swallows packets makes the answer late by that much, never hang. The database is reached through its own
pool-less engine (a fresh connection each time, with a connect timeout), so the answer says whether a new
connection can be made now, not whether an old pooled one still looks alive.
Reasons are short words, never a traceback or a host name; the details go to the log.
"""
import logging
import math
import threading
import time

from flask import Blueprint, current_app
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..extensions import csrf

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.route("/healthz", methods=["GET", "POST"])
@csrf.exempt
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/readyz")
def readyz():
    app = current_app._get_current_object()
    timeout = float(app.config["READYZ_TIMEOUT"])
    queue_check = _queue_check()  # imported here: a first import's time is not the queue's
    checks = {"database": lambda: _database_problem(app, timeout),
              "queue": lambda: _queue_problem(app, queue_check),
              "keys": lambda: _keys_problem(app, timeout)}
    answers = _run_bounded(checks, timeout)
    ready = all(answer in ("ok", "not configured") for answer in answers.values())
    return answers, 200 if ready else 503, {"Cache-Control": "no-store"}


def _run_bounded(checks, timeout):
    """Run each check on its own thread; "ok", its short problem, or "timed out" after ``timeout`` seconds."""
    answers, threads = {}, {}

    def run(name, check):
        try:
            answers[name] = check() or "ok"
        except Exception as exc:  # a readiness probe reports, it never raises
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
            answers[name] = "error"

    for name, check in checks.items():
        threads[name] = threading.Thread(target=run, args=(name, check), name=f"readyz-{name}", daemon=True)
        threads[name].start()
    deadline = time.monotonic() + timeout
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("readiness check %s took longer than %s s", name, timeout)
    return {name: answers.get(name, "timed out") for name in checks}


def _database_problem(app, timeout):
    try:
        with _readiness_engine(app, timeout).connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        # The driver's words may name hosts and users: the log has them, the answer does not.
        log.warning("readiness: the database is unreachable: %s", getattr(exc, "orig", None) or exc)
        return "unreachable"
    return None


def _keys_problem(app, timeout):
    """"cannot decrypt" when this process's keys cannot read what is stored; None when they can (or nothing is)."""
    from .. import crypto
    from ..extensions import db
    try:
        with _readiness_engine(app, timeout).connect() as connection:
            # The newest value of each column: the one most likely to be under a key this process lacks. Large
            # values (quarantined bodies) are left out: a probe runs every few seconds.
            samples = [connection.execute(select(column).where(column.is_not(None), func.length(column) < 4096)
                                          .order_by(pk.desc()).limit(1)).scalar()
                       for table, column in crypto.encrypted_columns(db.metadata)
                       for pk in table.primary_key.columns]
    except SQLAlchemyError:
        return "unknown"  # the database check says why
    with app.app_context():
        for token in filter(None, samples):
            try:
                crypto.decrypt(token)
            except crypto.SecretUnreadable:
                log.error("readiness: ENCRYPTION_KEY cannot decrypt the stored secrets")
                return "cannot decrypt"
    return None


def _readiness_engine(app, timeout):
    engine = app.extensions.get("wizard_readiness_engine")
    if engine is None:
        url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
        options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
        connect_args = dict(options.get("connect_args") or {})
        if url.get_backend_name() == "postgresql":
            # libpq counts whole seconds and treats anything under 2 as 2.
            connect_args.setdefault("connect_timeout", max(2, math.ceil(timeout)))
        elif url.get_backend_name() == "sqlite":
            connect_args.setdefault("timeout", timeout)
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args, hide_parameters=True)
        app.extensions["wizard_readiness_engine"] = engine
    return engine


def _queue_check():
    """``wizard.queue.queue_problem`` (None when the app has no queue module)."""
    try:
        from .. import queue
    except ModuleNotFoundError as exc:
        if exc.name != "wizard.queue":
            raise
        return None
    return getattr(queue, "queue_problem", None)


def _queue_problem(app, check):
    """``check(app)``: None when the queue's store answers, else a short reason (logged, not shown)."""
    if check is None:
        return "not configured"
    with app.app_context():
        problem = check(app)
    if problem:
        log.warning("readiness: the queue is unreachable: %s", problem)
        return "unreachable"  # its words may name a host: they go to the log only
    return None
