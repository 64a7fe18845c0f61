"""Every message we hand to LINE: the row first, then LINE, then its outcome; never twice, never unrecorded.

A message's life (``Outbox.status``):

    queued ──claim──▶ sending ──LINE said yes──▶ sent
       ▲                 │──LINE said no for good──▶ failed
       └──429/5xx/down───┤   (after Retry-After or the backoff; RETRY_DELAYS, then dead)
                         └──the worker died──▶ (sweeper) queued again if it was a push, unknown if a reply

- The row is committed before LINE is asked (``called_at`` is set in the same commit as the text), and the
  outcome after, so every message LINE received has its row, and a crash shows which ones were in flight.
- A push carries ``X-Line-Retry-Key`` (the row's ``retry_key``) on every attempt: if LINE took the first
  try, the second answers 409 and counts as sent. LINE remembers a key 24 hours; the retries end well
  within that.
- A reply has no retry key. A reply token LINE refused (400: expired or used) means nothing went out, so the
  message is pushed instead. But a reply whose answer we never saw (timeout, 5xx, a crash mid-call) may have
  arrived: it is then never pushed, and once its fate cannot be learned it is marked ``unknown`` for staff.
- ``dead`` rows are shown to staff (views/outbox.py), who may send them again (``retry``).
"""
import logging
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from ..extensions import db
from ..models import Channel, Contact, Message, Outbox, utcnow
from . import events, store

log = logging.getLogger(__name__)

# Seconds before each further attempt (LINE's Retry-After wins when it asks for longer); then dead.
RETRY_DELAYS = (10, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
STATUSES = ("queued", "sending", "sent", "failed", "dead", "unknown")
# A reply token works for about a minute after its event (LINE's reference). An older follow (one released
# from the quarantine once the secret was entered again, or run after a long backlog) is pushed at once with
# its retry key: a reply would only be refused, or, if that call timed out, leave the form's fate unknown.
REPLY_TOKEN_LIFETIME = timedelta(seconds=60)


def queue_form(event, contact, reply_token):
    """Add the customer form for this follow to the outbox, in the caller's transaction; returns the row.

    One row per follow event (a unique constraint): a follow run twice cannot queue two forms. The caller has
    asked ``events.form_not_due`` first (a shop that switched the form off gets no row at all). The text is
    written when it is sent: the shop's text (customers/form_settings.py; the default one in the language
    of the profile fetched then) and a new signed personal link.
    """
    if reply_token and utcnow() - store.event_time(event.timestamp) >= REPLY_TOKEN_LIFETIME:
        reply_token = None
    store.insert_ignoring(Outbox, [{
        "channel_id": event.channel_id, "contact_id": contact.id, "event_id": event.id, "purpose": "form",
        "method": "reply" if reply_token else "push", "reply_token": reply_token or None,
        "reply_uncertain": False, "retry_key": str(uuid.uuid4()), "status": "queued", "attempts": 0,
        "created_at": utcnow(), "updated_at": utcnow(),
    }], ["event_id", "purpose"])
    return db.session.scalar(select(Outbox).filter_by(event_id=event.id, purpose="form"))


def _due(now):
    o = Outbox
    return and_(o.status == "queued", or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))


def _claim(outbox_id):
    claim = uuid.uuid4().hex
    now = utcnow()
    lease = timedelta(seconds=in_flight_seconds())
    o = Outbox
    taken = db.session.execute(update(o).where(o.id == outbox_id, _due(now)).values(
        status="sending", claimed_by=claim, claimed_until=now + lease,
        attempts=o.attempts + 1, called_at=None, updated_at=now,
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return claim if taken.rowcount == 1 else None


def in_flight_seconds():
    """How long a sending row is reserved: a worker that has not finished by then is taken to be dead
    (recover_in_flight). Never shorter than the LINE calls of one send can take (token, profile, reply,
    push: each up to LINE_TIMEOUT), or a slow but live worker would be overtaken."""
    cfg = current_app.config
    return max(float(cfg["WORKER_LEASE_SECONDS"]), 4 * float(cfg["LINE_TIMEOUT"]) + 5)


def _finish(row_id, claim, **values):
    return store.finish_claim(Outbox, row_id, claim, updated_at=utcnow(), **values)


class Outcome:
    SENT, FAILED, RETRY, DEAD, UNKNOWN, SKIPPED = "sent", "failed", "retry", "dead", "unknown", "skipped"


def send(outbox_id):
    """One attempt at one queued message. Returns (outcome, seconds until the next attempt or None)."""
    from .client import client_for
    from .problems import LineProblem
    claim = _claim(outbox_id)
    if claim is None:
        return Outcome.SKIPPED, None  # not due, or another worker has it
    row = db.session.get(Outbox, outbox_id)
    channel = db.session.get(Channel, row.channel_id)
    contact = db.session.get(Contact, row.contact_id)
    if channel.disconnected_at is not None:
        _finish(row.id, claim, status="failed", error="the shop disconnected this channel")
        return Outcome.FAILED, None
    if row.purpose == "form":
        from ..customers import form_settings
        if not form_settings.for_channel(channel.id).enabled:
            # Queued while LINE was away, and the shop has switched the form off since: it must not go out.
            _finish(row.id, claim, status="failed", error="the shop switched the form off before it went out")
            return Outcome.FAILED, None
        # The personal link is made anew for each attempt and kept nowhere: whoever reads the outbox or the
        # conversation must not be able to fill in the customer's form (and their consent) in their name.
        messages = _render(row, channel, contact)
        row.messages = [masked(message) for message in messages]
    else:
        if row.messages is None:
            row.messages = _render(row, channel, contact)
        messages = row.messages
    if row.method == "reply" and not row.reply_uncertain and _token_expired(row):
        _switch_to_push(row)  # a retry after the token's minute: a reply would only be refused
    row.called_at = utcnow()
    db.session.commit()  # the text, and that LINE is about to be asked, are on record first
    client = client_for(channel)
    try:
        result = None
        if row.method == "reply":
            try:
                result = client.reply(row.reply_token, messages)
            except LineProblem as problem:
                if problem.status == 400:
                    if row.reply_uncertain:
                        # An earlier try may have gone through and used the token: pushing could send twice.
                        _finish(row.id, claim, status="unknown",
                                error="an earlier reply got no answer; LINE now refuses the token")
                        return Outcome.UNKNOWN, None
                    _switch_to_push(row)
                else:
                    if problem.code == "timeout" or (problem.status or 0) >= 500:
                        row.reply_uncertain = True
                    raise
        if result is None:
            result = client.push(contact.line_user_id, messages, retry_key=row.retry_key)
    except LineProblem as problem:
        return _failed(row, claim, problem)
    now = utcnow()
    ids = [str(m.get("id"))[:40] for m in (result or {}).get("sentMessages", []) if isinstance(m, dict)]
    if row.purpose == "form":
        contact.form_sent_at = now
    for index, message in enumerate(row.messages):
        db.session.add(Message(
            channel_id=channel.id, contact_id=contact.id, event_id=row.event_id, direction="out",
            type=str(message.get("type"))[:20], text=message.get("text"),
            line_message_id=ids[index] if index < len(ids) else None, sent_at=now))
    _finish(row.id, claim, status="sent", sent_at=now, line_message_ids=ids, error=None,
            reply_uncertain=row.reply_uncertain, method=row.method)
    return Outcome.SENT, None


def masked(message):
    """A message as we keep it: any personal form link masked (the customer has the only usable copy)."""
    from ..redact import redact
    if isinstance(message.get("text"), str):
        return dict(message, text=redact(message["text"]))
    return message


def _token_expired(row):
    """Is this reply's token past its minute (counted from its event's time, or the row's when it has none)?"""
    from ..models import WebhookEvent
    event = db.session.get(WebhookEvent, row.event_id) if row.event_id else None
    since = store.event_time(event.timestamp) if event is not None else row.created_at
    return utcnow() - since >= REPLY_TOKEN_LIFETIME


def _switch_to_push(row):
    """The reply token is no good and nothing went out: from now on this message is a push."""
    row.method, row.reply_token = "push", None
    db.session.commit()


def _render(row, channel, contact):
    if row.purpose == "form":
        if contact.profile_fetched_at is None:
            # Best effort, for the language: the form goes in the default language when LINE will not say.
            events.refresh_profile(channel, contact)
        # A retry keeps the link this row made on its first attempt: that attempt may have reached the
        # customer (a push whose answer was lost), and only a contact's newest link works.
        retried = row.attempts > 1 and contact.form_link_issued_at is not None \
            and contact.form_link_issued_at >= row.created_at
        return [{"type": "text", "text": events.form_text(channel, contact, fresh=not retried)}]
    raise ValueError(f"unknown outbox purpose {row.purpose!r}")


def _failed(row, claim, problem):
    """LINE said no or could not be asked: retry later, give up (dead), or record the refusal (failed)."""
    from .. import metrics
    error = f"{problem.code} (status {problem.status}): {problem.detail or ''}"[:2000]
    if not events.retryable(problem):
        _finish(row.id, claim, status="failed", error=error, reply_uncertain=row.reply_uncertain)
        return Outcome.FAILED, None
    if row.attempts >= MAX_ATTEMPTS:
        _finish(row.id, claim, status="dead", error=error, reply_uncertain=row.reply_uncertain)
        metrics.TASKS_DEAD.labels(task="send").inc()
        log.warning("outbox %s is dead after %s attempts: %s", row.id, row.attempts, problem.code)
        return Outcome.DEAD, None
    delay = max(RETRY_DELAYS[row.attempts - 1], problem.retry_after or 0)
    _finish(row.id, claim, status="queued", error=error, reply_uncertain=row.reply_uncertain,
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
    stale = and_(o.status == "sending", o.claimed_until < now)
    # A reply that was never asked for (the worker died before the call) is as safe to try again as a push.
    safe = or_(o.method == "push", o.called_at.is_(None))
    again = list(db.session.scalars(select(o.id).where(stale, safe)))
    if again:
        db.session.execute(update(o).where(o.id.in_(again), stale).values(
            status="queued", claimed_by=None, claimed_until=None, next_attempt_at=None, updated_at=now,
        ).execution_options(synchronize_session=False))
    db.session.execute(update(o).where(stale, o.method == "reply", o.called_at.is_not(None)).values(
        status="unknown", claimed_by=None, claimed_until=None, updated_at=now,
        error="the worker stopped while asking LINE to reply; it may or may not have arrived",
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return again


def retry(outbox_id):
    """Staff send a dead (or failed) message again: back to the queue, as a push with the same retry key."""
    o = Outbox
    done = db.session.execute(update(o).where(o.id == outbox_id, o.status.in_(("dead", "failed"))).values(
        status="queued", attempts=0, next_attempt_at=None, updated_at=utcnow(),
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
    done = db.session.execute(update(o).where(o.id == outbox_id, o.status == "unknown").values(
        status="queued", attempts=0, next_attempt_at=None, updated_at=utcnow(), method="push", reply_token=None,
        error=None,
    ).execution_options(synchronize_session=False))
    db.session.commit()
    return done.rowcount == 1


def counts():
    return dict(db.session.execute(select(Outbox.status, db.func.count()).group_by(Outbox.status)).all())
