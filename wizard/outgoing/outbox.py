"""Every message we send, on any channel: the row first, then the channel, then its outcome; never twice,
never unrecorded.

A message's life (``Outbox.status``):

    queued ──claim──▶ sending ──the channel said yes──▶ sent
       ▲                 │──it said no for good──▶ failed
       └──429/5xx/down───┤   (after Retry-After or the backoff: config.py BACKOFF["outbox"], then dead)
                         └──the worker died──▶ (sweeper) queued again if it was a push, unknown if a reply

- The row is committed before the channel is asked (``called_at`` is set in the same commit as the text),
  and the outcome after, so every message the channel received has its row, and a crash shows which ones
  were in flight.
- A push carries the row's ``retry_key`` (LINE: ``X-Line-Retry-Key``) on every attempt: if the channel took
  the first try, the second answers 409 and counts as sent. LINE remembers a key 24 hours; the retries end
  well within that.
- A reply has no retry key. A reply token the channel refused means nothing went out, so the message is
  pushed instead. But a reply whose answer we never saw (timeout, 5xx, a crash mid-call) may have arrived:
  it is then never pushed, and once its fate cannot be learned it is marked ``unknown`` for staff.
- ``dead`` rows are shown to staff (views/outbox.py), who may send them again (``retry``).

What the message says, whether it may still go and what its arrival means are its purpose's (purposes.py);
who carries it is the registered sender's (sender.py; LINE's is line/sender.py). Rows are claimed and
finished through the one claim helper (wizard/claims.py).
"""
import logging
import uuid
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import and_, or_, select, update

from .. import claims, metrics
from ..extensions import db
from ..models import Channel, Contact, Message, Outbox, WebhookEvent, utcnow
from ..rows import insert_ignoring
from ..statuses import OutboxStatus
from . import purposes, sender as senders

log = logging.getLogger(__name__)

BACKOFF = claims.backoff("outbox")
RETRY_DELAYS = BACKOFF.delays
MAX_ATTEMPTS = BACKOFF.attempts
# What staff may send again (retry): given up after every retry, or refused by the channel.
RETRYABLE = (OutboxStatus.DEAD, OutboxStatus.FAILED)
# A reply token works for about a minute after its event (LINE's reference). An older follow (one released
# from the quarantine once the secret was entered again, or run after a long backlog) is pushed at once with
# its retry key: a reply would only be refused, or, if that call timed out, leave the form's fate unknown.
REPLY_TOKEN_LIFETIME = timedelta(seconds=60)


def _event_time(timestamp_ms):
    """An event's millisecond epoch time as the naive UTC datetime every table stores."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def add(channel_id, contact_id, purpose, *, event=None, reply_token=None, messages=None, retry_key=None):
    """Queue one message of a registered ``purpose`` in the caller's transaction; returns the row.

    By reply when ``reply_token`` is given and its ``event`` is younger than the token's minute, else by push.
    One row per (event, purpose) for a message answering an event (a follow run twice cannot queue two), one
    per ``retry_key`` otherwise: a row that exists already is returned, not written twice. Without
    ``messages``, the purpose renders them when the message goes."""
    if purpose not in purposes.PURPOSES:  # refused here, where it is written, not when it would be sent
        raise ValueError(f"unknown outbox purpose {purpose!r}")
    if reply_token and (event is None or utcnow() - _event_time(event.timestamp) >= REPLY_TOKEN_LIFETIME):
        reply_token = None
    key = retry_key or str(uuid.uuid4())
    insert_ignoring(Outbox, [{
        "channel_id": channel_id, "contact_id": contact_id, "event_id": event.id if event is not None else None,
        "purpose": purpose, "method": "reply" if reply_token else "push", "reply_token": reply_token or None,
        "reply_uncertain": False, "retry_key": key, "messages": messages, "status": OutboxStatus.QUEUED,
        "attempts": 0, "created_at": utcnow(), "updated_at": utcnow(),
    }], ["event_id", "purpose"] if event is not None else ["retry_key"])
    if event is not None:
        return db.session.scalar(select(Outbox).filter_by(event_id=event.id, purpose=purpose))
    return db.session.scalar(select(Outbox).filter_by(retry_key=key))


def add_pushes(channel_id, purpose, keyed, *, not_before=None):
    """Queue many pushes of ``purpose`` at once in the caller's transaction (a send plan's personal messages,
    a slice at a time): ``keyed`` is ``[(contact_id, retry_key), ...]``; a key already queued is left as it
    is. ``not_before``: held until then (a paused plan's). Returns {retry_key: outbox id}."""
    if purpose not in purposes.PURPOSES:
        raise ValueError(f"unknown outbox purpose {purpose!r}")
    now = utcnow()
    insert_ignoring(Outbox, [{
        "channel_id": channel_id, "contact_id": contact_id, "event_id": None, "purpose": purpose,
        "method": "push", "reply_token": None, "reply_uncertain": False, "retry_key": key, "messages": None,
        "status": OutboxStatus.QUEUED, "attempts": 0, "next_attempt_at": not_before, "created_at": now,
        "updated_at": now,
    } for contact_id, key in keyed], ["retry_key"])
    keys = [key for _, key in keyed]
    return dict(db.session.execute(select(Outbox.retry_key, Outbox.id).where(Outbox.retry_key.in_(keys))).all())


def _due(now):
    o = Outbox
    return and_(o.status == OutboxStatus.QUEUED, or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))


def _claim(outbox_id):
    now = utcnow()
    holder, taken = claims.claim(Outbox, and_(Outbox.id == outbox_id, _due(now)),
                                 timedelta(seconds=in_flight_seconds()),
                                 status=OutboxStatus.SENDING, called_at=None, updated_at=now)
    return holder if taken == 1 else None


def in_flight_seconds():
    """How long a sending row is reserved: a worker that has not finished by then is taken to be dead
    (recover_in_flight). Never shorter than the calls of one send can take (token, profile, reply, push:
    each up to LINE_TIMEOUT), or a slow but live worker would be overtaken."""
    cfg = current_app.config
    return max(float(cfg["WORKER_LEASE_SECONDS"]), 4 * float(cfg["LINE_TIMEOUT"]) + 5)


def _finish(row_id, claim, **values):
    return claims.finish(Outbox, row_id, claim, updated_at=utcnow(), **values)


class Outcome:
    SENT, FAILED, RETRY, DEAD, UNKNOWN, SKIPPED = "sent", "failed", "retry", "dead", "unknown", "skipped"


def send(outbox_id):
    """One attempt at one queued message. Returns (outcome, seconds until the next attempt or None)."""
    claim = _claim(outbox_id)
    if claim is None:
        return Outcome.SKIPPED, None  # not due, or another worker has it
    row = db.session.get(Outbox, outbox_id)
    channel = db.session.get(Channel, row.channel_id)
    contact = db.session.get(Contact, row.contact_id)
    if channel.disconnected_at is not None:
        _finish(row.id, claim, status=OutboxStatus.FAILED, error="the shop disconnected this channel")
        return Outcome.FAILED, None
    purpose = purposes.of(row)
    refused = purpose.refuse(row, channel) if purpose.refuse is not None else None
    if refused:
        _finish(row.id, claim, status=OutboxStatus.FAILED, error=refused)
        return Outcome.FAILED, None
    if purpose.fresh:
        messages = _render(purpose, row, channel, contact)
        row.messages = [purpose.kept(message) for message in messages]
    else:
        if row.messages is None:
            row.messages = _render(purpose, row, channel, contact)
        messages = row.messages
    if row.method == "reply" and not row.reply_uncertain and _token_expired(row):
        _switch_to_push(row)  # a retry after the token's minute: a reply would only be refused
    row.called_at = utcnow()
    db.session.commit()  # the text, and that the channel is about to be asked, are on record first
    sender = senders.current()
    try:
        ids = None
        if row.method == "reply":
            try:
                ids = sender.reply(channel, row.reply_token, messages)
            except sender.failure as problem:
                if sender.token_refused(problem):
                    if row.reply_uncertain:
                        # An earlier try may have gone through and used the token: pushing could send twice.
                        _finish(row.id, claim, status=OutboxStatus.UNKNOWN,
                                error="an earlier reply got no answer; LINE now refuses the token")
                        return Outcome.UNKNOWN, None
                    _switch_to_push(row)
                else:
                    if sender.maybe_arrived(problem):
                        row.reply_uncertain = True
                    raise
        if ids is None:
            ids = sender.push(channel, contact, messages, retry_key=row.retry_key)
    except sender.failure as problem:
        return _failed(sender, row, claim, problem)
    now = utcnow()
    if purpose.sent is not None:
        purpose.sent(row, contact, now)
    for index, message in enumerate(row.messages):
        db.session.add(Message(
            channel_id=channel.id, contact_id=contact.id, event_id=row.event_id, direction="out",
            type=str(message.get("type"))[:20], text=message.get("text"),
            line_message_id=ids[index] if index < len(ids) else None, sent_at=now))
    _finish(row.id, claim, status=OutboxStatus.SENT, sent_at=now, line_message_ids=ids, error=None,
            reply_uncertain=row.reply_uncertain, method=row.method)
    return Outcome.SENT, None


def _render(purpose, row, channel, contact):
    if purpose.render is None:
        raise ValueError(f"outbox purpose {row.purpose!r} has no renderer and the row no messages")
    return purpose.render(row, channel, contact)


def _token_expired(row):
    """Is this reply's token past its minute (counted from its event's time, or the row's when it has none)?"""
    event = db.session.get(WebhookEvent, row.event_id) if row.event_id else None
    since = _event_time(event.timestamp) if event is not None else row.created_at
    return utcnow() - since >= REPLY_TOKEN_LIFETIME


def _switch_to_push(row):
    """The reply token is no good and nothing went out: from now on this message is a push."""
    row.method, row.reply_token = "push", None
    db.session.commit()


def _failed(sender, row, claim, problem):
    """The channel said no or could not be asked: retry later, give up (dead), or record the refusal."""
    error = f"{problem.code} (status {problem.status}): {problem.detail or ''}"[:2000]
    if not sender.retryable(problem):
        _finish(row.id, claim, status=OutboxStatus.FAILED, error=error, reply_uncertain=row.reply_uncertain)
        return Outcome.FAILED, None
    if BACKOFF.exhausted(row.attempts):
        _finish(row.id, claim, status=OutboxStatus.DEAD, error=error, reply_uncertain=row.reply_uncertain)
        metrics.TASKS_DEAD.labels(task="send").inc()
        log.warning("outbox %s is dead after %s attempts: %s", row.id, row.attempts, problem.code)
        return Outcome.DEAD, None
    delay = BACKOFF.delay(row.attempts, problem.retry_after)
    _finish(row.id, claim, status=OutboxStatus.QUEUED, error=error, reply_uncertain=row.reply_uncertain,
            next_attempt_at=utcnow() + timedelta(seconds=delay))
    metrics.TASKS_RETRIED.labels(task="send").inc()
    return Outcome.RETRY, delay


def send_due(limit=None):
    """Send every message that is due now, in this process (tests, ``worker --once``); returns how many."""
    count = 0
    for outbox_id in due_ids(limit):
        send(outbox_id)
        count += 1
    return count


def due_ids(limit=None):
    query = select(Outbox.id).where(_due(utcnow())).order_by(Outbox.id)
    if limit:
        query = query.limit(limit)
    return list(db.session.scalars(query))


def recover_in_flight():
    """Rows whose worker died mid-send: a push goes back to the queue (its retry key makes that safe); a
    reply's fate is unknown, so it is marked so and never sent again. Returns the ids queued again."""
    o = Outbox
    now = utcnow()
    stale = and_(o.status == OutboxStatus.SENDING, o.claimed_until < now)
    # A reply that was never asked for (the worker died before the call) is as safe to try again as a push.
    safe = or_(o.method == "push", o.called_at.is_(None))
    again = list(db.session.scalars(select(o.id).where(stale, safe)))
    if again:
        db.session.execute(update(o).where(o.id.in_(again), stale).values(
            status=OutboxStatus.QUEUED, claimed_by=None, claimed_until=None, next_attempt_at=None,
            updated_at=now,
        ).execution_options(synchronize_session=False))
    db.session.execute(update(o).where(stale, o.method == "reply", o.called_at.is_not(None)).values(
        status=OutboxStatus.UNKNOWN, claimed_by=None, claimed_until=None, updated_at=now,
        error="the worker stopped while asking LINE to reply; it may or may not have arrived",
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return again


def retry(outbox_id):
    """Staff send a dead (or failed) message again: back to the queue, as a push with the same retry key."""
    o = Outbox
    done = db.session.execute(update(o).where(o.id == outbox_id, o.status.in_(RETRYABLE)).values(
        status=OutboxStatus.QUEUED, attempts=0, next_attempt_at=None, updated_at=utcnow(),
        method="push", reply_token=None,
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return done.rowcount == 1


def send_again(outbox_id):
    """A person on the contact's page sends a message of unknown fate again (the customer says it did not
    arrive, or the conversation shows no answer): as a push, since its reply token is spent either way. A form
    gets a new link, which replaces the one the lost reply may have carried. Only ``unknown`` rows: a sent one
    is not sent twice, a queued one is on its way."""
    o = Outbox
    done = db.session.execute(update(o).where(o.id == outbox_id, o.status == OutboxStatus.UNKNOWN).values(
        status=OutboxStatus.QUEUED, attempts=0, next_attempt_at=None, updated_at=utcnow(), method="push",
        reply_token=None, error=None,
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return done.rowcount == 1


def counts():
    return dict(db.session.execute(select(Outbox.status, db.func.count()).group_by(Outbox.status)).all())
