"""Runs stored webhook events through the handlers registered in events.py, outside any request; safe to kill,
restart and run many times.

The events table is the inbox: the queue (wizard/queue.py) only says "look now", so a lost queue message costs
a delay, never an event. What makes each effect happen once is the *claim* in the database (wizard/claims.py,
the same helper the outbox and media content use):

- an event is claimed before it is run: its row becomes ``processing`` with a lease (``claimed_by``, a random
  id for this attempt, and ``claimed_until``), committed before any work starts;
- the handler's writes and the event's new status are committed in ONE transaction, and only while the lease
  is still ours. A worker killed mid-event therefore leaves nothing half done: its lease runs out
  (``WORKER_LEASE_SECONDS``) and the event runs again from the start, once;
- one LINE user's events run one at a time, oldest LINE timestamp first, however many workers there are: only
  the *head* of a user's queue is claimable (no earlier event of that user still waiting, none of theirs
  running). So a follow, a block and a re-follow of one user are never processed at once;
- handlers write only to our database (contacts, messages, the outbox row of a form); every call to LINE
  happens afterwards, in the jobs they leave in ``effects``. A database failure makes the event wait 5 s,
  30 s, 2 min, 10 min (config.py ``BACKOFF["events"]``), then ``failed``; an event we cannot act on (a signed
  but odd payload) is ``unprocessable`` at once, with its reason, so it never holds up that user's later
  events.

On PostgreSQL the claim reads its candidate with ``FOR UPDATE SKIP LOCKED``, so workers never wait on each
other; on SQLite (one writer at a time anyway) the claim is a conditional UPDATE only one of them can win.
``process_pending`` runs everything in this process (tests, ``worker --once``); the queue's jobs
(wizard/jobs.py) call ``drain``.
"""
import logging
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from .. import claims, observability, queue
from ..extensions import db
from ..models import Channel, Shop, WebhookDelivery, WebhookEvent, utcnow
from ..statuses import EventStatus
from . import events

log = logging.getLogger(__name__)

BACKOFF = claims.backoff("events")
BACKOFF_SECONDS = BACKOFF.delays
MAX_ATTEMPTS = BACKOFF.attempts
WAITING = (EventStatus.PENDING, EventStatus.PROCESSING)
CLAIM_BATCH = 16


def _runnable(e, now):
    return or_(
        and_(e.status == EventStatus.PENDING, or_(e.next_attempt_at.is_(None), e.next_attempt_at <= now)),
        and_(e.status == EventStatus.PROCESSING, e.claimed_until < now),
    )


def _head_of_its_user(e, now):
    """Nothing of the same user (in the same channel) is running, or waiting with an earlier place in line."""
    other = aliased(WebhookEvent)
    return ~exists().where(
        other.channel_id == e.channel_id,
        other.source_user_id == e.source_user_id,  # NULL (no user) matches nothing: such events run freely
        other.id != e.id,
        or_(
            and_(other.status == EventStatus.PROCESSING, other.claimed_until >= now),
            and_(other.status.in_(WAITING),
                 or_(other.timestamp < e.timestamp, and_(other.timestamp == e.timestamp, other.id < e.id))),
        ),
    )


def _due_pending(e, now):
    return and_(e.status == EventStatus.PENDING, or_(e.next_attempt_at.is_(None), e.next_attempt_at <= now))


def _lease_ran_out(e, now):
    return and_(e.status == EventStatus.PROCESSING, e.claimed_until < now)


def claim_batch(size=CLAIM_BATCH):
    """Claim up to ``size`` runnable events, each the head of its user's line (so at most one per user);
    returns (claim id, [event ids] oldest first), the list empty when nothing is runnable.

    One statement claims them all: on a busy inbox the claim is the costly part (it looks past the heads of
    every user), so it is paid once per batch. The candidates are read through the pending index in LINE's
    order (no sort), a run-out lease first; the UPDATE checks each again, so a candidate another worker took
    in between is simply not ours.
    """
    lease = timedelta(seconds=float(current_app.config["WORKER_LEASE_SECONDS"]))
    e = WebhookEvent
    now = utcnow()
    postgres = db.session.get_bind().dialect.name == "postgresql"
    ids = []
    try:
        for runnable in (_lease_ran_out(e, now), _due_pending(e, now)):
            query = (select(e.id).where(runnable, _head_of_its_user(e, now))
                     .order_by(e.timestamp, e.id).limit(size - len(ids)))
            if postgres:
                query = query.with_for_update(skip_locked=True, of=e)
            ids += db.session.scalars(query).all()
            if len(ids) >= size:
                break
        if not ids:
            db.session.commit()
            return None, []
        claim, _count = claims.claim(e, and_(e.id.in_(ids), _runnable(e, now), _head_of_its_user(e, now)),
                                     lease, status=EventStatus.PROCESSING)
        taken = db.session.scalars(select(e.id).where(e.claimed_by == claim)
                                   .order_by(e.timestamp, e.id)).all()
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        raise
    return claim, list(taken)


def claim_next():
    """Claim the oldest runnable event that heads its user's line; (event id, claim id) or None."""
    claim, ids = claim_batch(1)
    return (ids[0], claim) if ids else None


def _finish(event_id, claim, **values):
    return claims.finish(WebhookEvent, event_id, claim, **values)


def run_claimed(event_id, claim, after_commit=None):
    """Run one claimed event and record the outcome together with its effects.

    ``after_commit(effects)`` receives what the handler left for later (jobs to queue: a message to send, a
    profile to fetch) once, and only once, the effects are committed. It all runs under the request id of
    the event's delivery and its shop's slug (observability.traced): its log lines and the tasks it queues
    carry them, so one webhook can be followed from nginx to the form sent.
    """
    event = db.session.get(WebhookEvent, event_id)
    with observability.traced(_trace(event)):
        finished = _run(event, event_id, claim, after_commit)
        if finished:
            log.info("event %s (%s) done", event_id, event.type)
        return finished


def _trace(event):
    """The request id of the event's delivery and its shop's slug (one indexed read)."""
    request_id = select(WebhookDelivery.request_id).where(WebhookDelivery.id == event.delivery_id)
    row = db.session.execute(select(Shop.slug, request_id.scalar_subquery()).join(Channel, Channel.shop_id == Shop.id)
                             .where(Channel.id == event.channel_id)).first()
    return {"request_id": row[1], "shop": row[0]} if row is not None else None


def _run(event, event_id, claim, after_commit):
    effects = events.Effects()
    try:
        note = events.handle(event, effects)
    except events.Unprocessable as exc:
        db.session.rollback()
        log.info("event %s (%s) is unprocessable: %s", event_id, event.type, exc)
        return _finish(event_id, claim, status=EventStatus.UNPROCESSABLE, error=str(exc)[:2000],
                       next_attempt_at=None)
    except SQLAlchemyError as exc:
        db.session.rollback()
        _retry_later(event_id, claim, f"{type(exc).__name__}: {exc}")
        return False
    except Exception as exc:  # a payload our handler could not read: record it, never let it block the user
        db.session.rollback()
        log.warning("event %s (%s) could not be handled", event_id, event.type, exc_info=True)
        return _finish(event_id, claim, status=EventStatus.UNPROCESSABLE,
                       error=f"{type(exc).__name__}: {exc}"[:2000], next_attempt_at=None)
    try:
        finished = _finish(event_id, claim, status=EventStatus.PROCESSED, processed_at=utcnow(), error=note,
                           next_attempt_at=None)
    except SQLAlchemyError as exc:
        db.session.rollback()
        _retry_later(event_id, claim, f"{type(exc).__name__}: {exc}")
        return False
    if finished and after_commit is not None:
        after_commit(effects)
    return finished


def _retry_later(event_id, claim, error):
    """The database failed under the handler: wait and run the event again (a bounded number of times)."""
    log.warning("event %s: database failure, will retry (%s)", event_id, error.split("\n")[0][:200])
    try:
        event = db.session.get(WebhookEvent, event_id)
        if BACKOFF.exhausted(event.attempts):
            _finish(event_id, claim, status=EventStatus.FAILED, error=error[:2000], next_attempt_at=None)
        else:
            delay = BACKOFF.delay(event.attempts)
            _finish(event_id, claim, status=EventStatus.PENDING, error=error[:2000],
                    next_attempt_at=utcnow() + timedelta(seconds=delay))
    except SQLAlchemyError:
        db.session.rollback()  # still down: the lease runs out and the sweeper finds the event again


def drain(after_commit, stop_after=None, limit=None, keep_going=None) -> int:
    """Claim and run events until none is runnable, ``limit`` ran, ``stop_after`` seconds passed, or
    ``keep_going()`` (asked before each claim) says no."""
    deadline = None if stop_after is None else time.monotonic() + stop_after
    count = 0
    while ((limit is None or count < limit) and (deadline is None or time.monotonic() < deadline)
           and (keep_going is None or keep_going())):
        claim, ids = claim_batch(CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - count))
        if not ids:
            break
        for event_id in ids:
            run_claimed(event_id, claim, after_commit=after_commit)
            count += 1
    return count


_catch_ups = []


def also_pending(func):
    """Register what ``process_pending`` runs after the events' own jobs: work of another kind that is due
    now (the outgoing core registers its due messages, so a reply typed by staff goes too)."""
    if func not in _catch_ups:
        _catch_ups.append(func)
    return func


def process_pending(app=None, limit=None) -> int:
    """Run runnable events (oldest first) and then what they left (one attempt of each job that runs here,
    queue.Job ``run_here``) and what else is due, all in this process; returns how many events ran. Works in
    its own application context, so its session never mixes with the caller's."""
    app = app or current_app._get_current_object()
    with app.app_context():
        left = []
        count = drain(after_commit=left.append, limit=limit)
        for effects in left:
            for job, args in effects:
                job.run_here(*args)
        for catch_up in _catch_ups:
            catch_up()
    return count


def waiting_work():
    """How many events a worker could claim now (due, heading their user's line, or with a lease run out)."""
    e = WebhookEvent
    now = utcnow()
    return db.session.scalar(select(db.func.count()).select_from(e).where(
        _runnable(e, now), _head_of_its_user(e, now))) or 0


def next_retry_at():
    """When the earliest event waiting for its backoff becomes due, if any."""
    e = WebhookEvent
    return db.session.scalar(select(db.func.min(e.next_attempt_at)).where(
        e.status == EventStatus.PENDING, e.next_attempt_at > utcnow()))


def wake():
    """Tell the queue that new events are stored (the receiver calls this after its commit)."""
    queue.wake(current_app._get_current_object())
