"""Runs stored webhook events through events.py, outside any request; safe to restart and to run twice.

An event is *claimed* before it is run: its row becomes ``processing`` with a lease (``claimed_by``, a random
id for this attempt, and ``claimed_until``), committed before any work starts. The result and the event's
new status are committed together, and only while the lease is still ours. So:

- a worker that dies mid-event leaves a lease that runs out (``WORKER_LEASE_SECONDS``, default 120, longer
  than the LINE calls of one event can take); any worker started later claims the event again. Everything
  still ``pending`` is simply there for the next worker: nothing lives only in memory;
- two workers (two gunicorn processes, or ``line worker`` beside an in-process thread) never run one event at
  once: on PostgreSQL the claim reads candidates with ``FOR UPDATE SKIP LOCKED``, so each takes a different
  row without waiting; on SQLite, whose writers are serialised anyway, the claim is a conditional UPDATE
  that only one of them can win;
- a failing event is retried after 5 s, 30 s, 2 min, 10 min, then left ``failed`` with its error; it is
  skipped while it waits, so it never holds up the events behind it.

Events are claimed oldest LINE timestamp first. ``process_pending`` is the whole worker for tests and the
CLI; ``start_in_process`` runs it in a daemon thread that the receiver wakes after each stored delivery.
"""
import logging
import threading
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from ..extensions import db
from ..models import WebhookEvent, utcnow
from . import events

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (5, 30, 120, 600)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1

_loops = []  # running in-process loops; wake() nudges all of them
_loops_lock = threading.Lock()


def _claimable(now):
    e = WebhookEvent
    return or_(
        and_(e.status == "pending", or_(e.next_attempt_at.is_(None), e.next_attempt_at <= now)),
        and_(e.status == "processing", e.claimed_until < now),
    )


def claim_next():
    """Claim the oldest runnable event; returns (event id, claim id) or None when nothing is runnable."""
    lease = timedelta(seconds=float(current_app.config["WORKER_LEASE_SECONDS"]))
    e = WebhookEvent
    now = utcnow()
    candidates = select(e.id).where(_claimable(now)).order_by(e.timestamp, e.id)
    if db.session.get_bind().dialect.name == "postgresql":
        candidates = candidates.limit(1).with_for_update(skip_locked=True)
    else:
        candidates = candidates.limit(8)
    for event_id in db.session.scalars(candidates).all():
        claim = uuid.uuid4().hex
        result = db.session.execute(
            update(e).where(e.id == event_id, _claimable(now)).values(
                status="processing", claimed_by=claim, claimed_until=now + lease, attempts=e.attempts + 1,
            ).execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            db.session.commit()
            return event_id, claim
    db.session.commit()
    return None


def _finish(event_id, claim, **values):
    """Set the event's outcome in the current transaction if the lease is still ours; commit either way."""
    e = WebhookEvent
    result = db.session.execute(
        update(e).where(e.id == event_id, e.claimed_by == claim).values(
            claimed_by=None, claimed_until=None, **values,
        ).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        # Our lease ran out and another worker took the event: its run counts, ours is discarded.
        db.session.rollback()
        log.warning("event %s: lease lost before it finished; left to the worker that holds it", event_id)
        return False
    db.session.commit()
    return True


def run_claimed(event_id, claim):
    """Run one claimed event and record the outcome (processed, retry later, or failed)."""
    event = db.session.get(WebhookEvent, event_id)
    try:
        note = events.handle(event)
    except Exception as exc:  # any handler failure is recorded on the event, never lost in a log only
        db.session.rollback()
        log.warning("event %s (%s) failed: %s", event_id, event.type, exc, exc_info=not _is_problem(exc))
        event = db.session.get(WebhookEvent, event_id)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if event.attempts >= MAX_ATTEMPTS:
            _finish(event_id, claim, status="failed", error=error, next_attempt_at=None)
        else:
            delay = BACKOFF_SECONDS[min(event.attempts, MAX_ATTEMPTS - 1) - 1]
            _finish(event_id, claim, status="pending", error=error,
                    next_attempt_at=utcnow() + timedelta(seconds=delay))
        return False
    return _finish(event_id, claim, status="processed", processed_at=utcnow(), error=note,
                   next_attempt_at=None)


def _is_problem(exc):
    from .problems import LineProblem
    return isinstance(exc, LineProblem)


def process_pending(app=None, limit=None, stop=None) -> int:
    """Run runnable events (oldest first) until none is left, ``limit`` were run or ``stop`` (an Event) is
    set; returns how many ran. Works in its own application context, so its session never mixes with the
    caller's.
    """
    app = app or current_app._get_current_object()
    count = 0
    with app.app_context():
        while (limit is None or count < limit) and not (stop and stop.is_set()):
            claimed = claim_next()
            if claimed is None:
                break
            run_claimed(*claimed)
            count += 1
    return count


class Loop:
    """Process at start, then whenever woken or every ``interval`` seconds, until stopped."""

    def __init__(self, app, interval=None):
        self.app = app
        self.interval = float(interval or app.config["WORKER_POLL_SECONDS"])
        self.woken = threading.Event()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                process_pending(self.app, stop=self.stopped)
            except Exception:  # the database may be briefly unreachable; the next pass tries again
                log.exception("event worker pass failed")
            self.woken.wait(self.interval)
            self.woken.clear()

    def stop(self):
        self.stopped.set()
        self.woken.set()


def wake():
    """Tell in-process workers that new events are stored (cheap; no-op when none runs)."""
    for loop in _loops:
        loop.woken.set()


def start_in_process(app):
    """Run the worker in a daemon thread of this process (the embedded default); returns its Loop.

    Started once per app. Under gunicorn do not combine it with ``--preload``: threads do not survive the
    fork. Several processes each running one is fine (claims are exclusive).
    """
    existing = app.extensions.get("wizard_worker")
    if existing is not None:
        return existing
    loop = Loop(app)
    app.extensions["wizard_worker"] = loop
    with _loops_lock:
        _loops.append(loop)
    threading.Thread(target=loop.run, name="wizard-event-worker", daemon=True).start()
    return loop


def stop_in_process(app):
    loop = app.extensions.pop("wizard_worker", None)
    if loop is not None:
        loop.stop()
        with _loops_lock:
            if loop in _loops:
                _loops.remove(loop)
