"""Webhook bodies refused for their signature, kept for the Channel secret that may yet prove them.

When the owner reissues the Channel secret in LINE and has not entered it here yet, LINE signs every delivery
with a secret we do not have, and the receiver refuses each one (400, counted as ``bad_signature``). Those
are real customers adding the shop as a friend. So a refused body is kept here, encrypted like the secrets
(crypto.py: its column ends in ``_encrypted``, so ``flask rotate-key`` re-encrypts it with them) together with
its x-line-signature; while it waits it is never processed and never counted as a delivery or an event.

- ``keep`` (the receiver's refusal): anyone who knows the webhook URL can POST bodies with any signature, so
  only what could be LINE's is kept (``could_be_lines``): a body no larger than a LINE delivery
  (``MAX_BODY_BYTES``) with LINE's shape, at least one event with a recent timestamp, and ``destination`` our
  bot (its user id when known). A channel holds at most ``MAX_BODIES`` bodies and ``MAX_BYTES`` of them, and
  takes at most ``MAX_PER_MINUTE`` a minute. When a bound is reached the NEW body is not kept: nothing
  unverifiable ever evicts an older body, which is more likely LINE's (a flood cannot push out the friends
  who followed before it). Nothing is deleted on the way in, so a flood leaves no dead rows either: the
  table's growth is the bounds, per channel. One read (an index) and one insert, both committed with the
  refusal's count; nothing here touches (or locks) a row a valid delivery writes.
- ``release`` (a secret saved, steps/connection.py): each kept body of the channel is checked with the new
  secret exactly as the receiver checks one (``signature_matches``, then ``parse_payload``). Those that pass
  are stored as a delivery and its events as if they had just arrived (events are unique per channel on
  ``webhookEventId``, so one LINE also redelivered meanwhile is stored once) and the worker is woken once
  they are committed; the rest are deleted. The worker runs them like any other event: a follow makes a
  contact and queues the form, which goes by push with its retry key, since the follow's reply token has
  long expired (outbox.queue_form).
- ``sweep`` (the periodic sweep, jobs.py): deletes what is past its age (``MAX_AGE``, 7 days), and releases
  the bodies refused while a new secret was being saved (the receiver still read the old one when
  ``release`` had already looked).
"""
import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, event as orm_event, func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from .. import crypto
from ..extensions import db
from ..models import Channel, Contact, QuarantinedBody, WebhookDelivery, WebhookEvent, utcnow
from . import store
from .payload import NotLinePayload, event_row, parse_payload, signature_matches, unique_events

log = logging.getLogger(__name__)

MAX_AGE = timedelta(days=7)
MAX_BODIES = 1000
MAX_BYTES = 4 * 1024 * 1024
MAX_PER_MINUTE = 120
# A LINE delivery carries a few events of a few KiB each (a 5,000-character text is 15 KiB of UTF-8).
MAX_BODY_BYTES = 64 * 1024
# LINE stamps an event when it happens; a body kept for a later secret was sent within the last MAX_AGE.
FUTURE_SLACK_MS = 5 * 60 * 1000
_BOT_USER_ID = re.compile(r"U[0-9a-f]{32}")
# Base64 of an HMAC-SHA256 is 44 characters: a header of any other length matches no secret, ever.
SIGNATURE_LENGTH = 44
# The sweep looks again at bodies refused this long around a save (its transaction may stay open while the
# wizard asks LINE), for as long as the save is this recent.
SAVE_RACE = timedelta(minutes=1)
SAVE_RECENT = timedelta(minutes=10)
_CHUNK = 100

_Q = QuarantinedBody.__table__


@dataclass(frozen=True)
class ReleaseResult:
    """What a release did: ``welcomed`` friends will get the form (their follow was stored from it),
    ``stored`` bodies proved to be LINE's and are deliveries now, ``deleted`` ones did not and are gone."""
    welcomed: int = 0
    stored: int = 0
    deleted: int = 0


def keep(channel_id: int, body: bytes, signature: str) -> bool:
    """Keep a body refused for its signature, in the caller's transaction (the receiver's refusal count
    commits it). Returns whether it was kept: only a body that could be LINE's is, and only while the channel
    is within its bounds. A database failure here never changes the refusal."""
    if len(signature) != SIGNATURE_LENGTH or len(body) > MAX_BODY_BYTES:
        return False  # a signature of another length matches no secret; a larger body is not a delivery
    try:
        bot_user_id = db.session.scalar(select(Channel.bot_user_id).where(Channel.id == channel_id))
        if not could_be_lines(body, bot_user_id):
            return False
        now = utcnow()
        if not _room_for(channel_id, len(body), now):
            return False
        encrypted = crypto.encrypt(body.decode("utf-8"))
        db.session.execute(insert(_Q).values(channel_id=channel_id, received_at=now, size=len(body),
                                             signature=signature, body_encrypted=encrypted))
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("a refused body of channel %s could not be kept", channel_id, exc_info=True)
        return False
    return True


def could_be_lines(body: bytes, bot_user_id=None, now_ms=None) -> bool:
    """Whether ``body`` has the shape of a LINE delivery to our bot that a later secret could prove: LINE's
    JSON (parse_payload), at least one event, each stamped within MAX_AGE (and not in the future), and a
    ``destination`` that is our bot's user id (when we know it) or at least shaped like one."""
    try:
        destination, events = parse_payload(body)
    except NotLinePayload:
        return False
    if not events or not isinstance(destination, str):
        return False
    if not (destination == bot_user_id if bot_user_id else _BOT_USER_ID.fullmatch(destination)):
        return False
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    oldest = now_ms - int(MAX_AGE.total_seconds() * 1000)
    return all(oldest <= event["timestamp"] <= now_ms + FUTURE_SLACK_MS for event in events)


def _room_for(channel_id, size, now):
    """Whether the channel may keep one more body of ``size`` bytes now: its bodies younger than MAX_AGE (older
    ones are the sweep's to delete) stay within MAX_BODIES and MAX_BYTES, and fewer than MAX_PER_MINUTE came
    in the last minute. Read through the (channel, id, size) and (channel, received_at) indexes, bodies unread.

    Refusals at the same instant may each find room for the last place, so a channel can hold a few more than
    the bounds (at most one per request served at once): still bounded, and nothing older is lost for it."""
    live = (_Q.c.channel_id == channel_id, _Q.c.received_at >= now - MAX_AGE)
    kept, kept_bytes = db.session.execute(
        select(func.count(), func.coalesce(func.sum(_Q.c.size), 0)).where(*live)).one()
    if kept >= MAX_BODIES or kept_bytes + size > MAX_BYTES:
        return False
    recent = db.session.scalar(select(func.count()).where(
        _Q.c.channel_id == channel_id, _Q.c.received_at >= now - timedelta(minutes=1)))
    return recent < MAX_PER_MINUTE


def count(channel_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(_Q).where(_Q.c.channel_id == channel_id)) or 0


def release(channel, secret: str, *, delete_rest: bool = True, since=None) -> ReleaseResult:
    """Check the channel's kept bodies (received from ``since``, default all) with ``secret``: store those
    LINE signed with it as deliveries and events, delete the others (unless ``delete_rest`` is False), in the
    caller's transaction; the worker is woken after it commits. Returns what it did."""
    if channel.id is None:
        return ReleaseResult()
    query = select(_Q.c.id).where(_Q.c.channel_id == channel.id).order_by(_Q.c.received_at, _Q.c.id)
    if since is not None:
        query = query.where(_Q.c.received_at >= since)
    ids = db.session.scalars(query).all()
    stored, deleted, followers = 0, 0, set()
    for start in range(0, len(ids), _CHUNK):
        rows = db.session.execute(select(_Q.c.id, _Q.c.signature, _Q.c.body_encrypted)
                                  .where(_Q.c.id.in_(ids[start:start + _CHUNK]))
                                  .order_by(_Q.c.received_at, _Q.c.id)).all()
        for row in rows:
            body, payload = _open(row.body_encrypted), None
            if body is not None and signature_matches(secret, body, row.signature):
                try:
                    payload = parse_payload(body)
                except NotLinePayload:
                    pass  # signed, but not a LINE request body: the receiver would have refused it too
            if payload is None and not delete_rest:
                continue
            # Taken out first: of two releases at once (a save and the sweep) only one stores a body.
            if db.session.execute(delete(_Q).where(_Q.c.id == row.id)).rowcount != 1:
                continue
            if payload is None:
                deleted += 1
                continue
            followers |= _store(channel, body, *payload)
            stored += 1
    if stored:
        _wake_after_commit()
        log.info("channel %s: %s refused deliveries proved to be LINE's and are stored", channel.id, stored)
    return ReleaseResult(welcomed=len(_welcomed(channel, followers)), stored=stored, deleted=deleted)


def _open(encrypted):
    try:
        return crypto.decrypt(encrypted).encode("utf-8")
    except crypto.SecretUnreadable:
        return None  # encrypted under a key no longer configured: it cannot be checked, so it goes


def _store(channel, body, destination, events):
    """One delivery and its new events, as the receiver stores them; returns the users whose follow is new."""
    now = utcnow()
    unique = unique_events(events)
    delivery = WebhookDelivery(channel_id=channel.id, received_at=now, destination=destination or None,
                               event_count=len(events), new_event_count=0, body=body.decode("utf-8"))
    db.session.add(delivery)
    db.session.flush()
    rows = [event_row(channel.id, delivery.id, item, now) for item in unique]
    new_ids = store.insert_ignoring(WebhookEvent, rows, ["channel_id", "webhook_event_id"], returning="id")
    delivery.new_event_count = len(new_ids)
    if not new_ids:
        return set()
    e = WebhookEvent
    return set(db.session.scalars(select(e.source_user_id).where(
        e.id.in_(new_ids), e.type == "follow", e.source_type == "user", e.source_user_id.is_not(None),
        or_(e.mode.is_(None), e.mode != "standby"))))


def _welcomed(channel, users):
    """Of the users whose follow was released, those the form will go to (not filled in, not sent lately)."""
    from .events import welcomes
    if not users:
        return set()
    known = {contact.line_user_id: contact for contact in db.session.scalars(db.select(Contact).where(
        Contact.channel_id == channel.id, Contact.line_user_id.in_(users)))}
    return {user for user in users if user not in known or welcomes(known[user])}


def _wake_after_commit():
    """Ring for the worker once the released events are committed (before that it would find nothing)."""
    app = current_app._get_current_object()

    def ring(_session):
        from .. import queue
        queue.wake(app)

    orm_event.listen(db.session(), "after_commit", ring, once=True)


def sweep() -> int:
    """Delete bodies past MAX_AGE; release, with the saved secret, bodies refused around a recent save.
    Commits; returns how many bodies were released. Never raises a database error (the rest of the periodic
    sweep must still run)."""
    now = utcnow()
    released = 0
    try:
        db.session.execute(delete(_Q).where(_Q.c.received_at < now - MAX_AGE))
        db.session.commit()
        channels = db.session.scalars(select(Channel).where(
            Channel.disconnected_at.is_(None), Channel.connected_at >= now - SAVE_RECENT)).all()
        for channel in channels:
            try:
                secret = channel.secret
            except crypto.SecretUnreadable:
                continue
            released += release(channel, secret, delete_rest=False,
                                since=channel.connected_at - SAVE_RACE).stored
            db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("the quarantine sweep failed; the next one tries again", exc_info=True)
    return released
