"""What each stored webhook event does: follow, unfollow, message; every other type is kept and left alone.

The worker calls ``handle(event, effects)`` for one claimed ``WebhookEvent`` at a time and commits whatever
the handler wrote together with the event's new status (worker.py), so a handler never commits and never
calls LINE. What needs LINE is left in ``effects``: the outbox rows to send (outbox.py writes the row in the
same transaction, sends after the commit) and the contacts whose profile to fetch.

Decisions worth knowing:
- ``followed_at`` and ``blocked_at`` hold the *event's* time (LINE's timestamp), not the processing time, and
  a follow's state change is applied only when the event is newer than what the contact records, so a late
  redelivery cannot turn a friend back into a blocker or vice versa.
- The customer data form is queued on follow (one outbox row per follow event, unique in the database), not
  when the shop switched it off (customers/form_settings.py), not to a contact who filled it in, nor within
  ``FORM_RESEND_HOURS`` (default 24 h) of the last one that went or may have gone out, so blocking and
  unblocking does not spam anyone. Events in ``standby`` mode (another module owns the chat) are recorded,
  never answered.
- A signed event we cannot act on (a timestamp no calendar holds, ``message`` not an object, a reply token
  that is not a string) raises ``Unprocessable``: it is marked so with the reason and never retried.
- Only one-to-one (``source.type == "user"``) events touch contacts: a message in a group or room comes
  from someone who may not be the shop's friend, so it stays a stored event.
"""
import logging
from datetime import timedelta

from flask import current_app

from ..extensions import db
from ..models import Channel, Contact, Message, Outbox, utcnow
from . import store

log = logging.getLogger(__name__)

HANDLERS = {}
# LINE's profile "language" (BCP 47 as LINE sends it) to our catalog names; anything else gets the default.
_LANGUAGES = {"en": "en", "zh-TW": "zh_Hant_TW", "zh-Hant": "zh_Hant_TW", "zh-HK": "zh_Hant_TW"}


class Unprocessable(ValueError):
    """A signed event that is not something we can act on; the message is the reason staff see."""


class Effects:
    """What a handler leaves for after its commit: outbox ids to send, contact ids whose profile to fetch,
    message content rows (customers/content.py) to fetch from LINE."""

    __slots__ = ("outbox", "profiles", "contents")

    def __init__(self):
        self.outbox, self.profiles, self.contents = [], [], []


def handles(kind):
    """Register the handler for one event ``type``; the last registration wins."""
    def register(func):
        HANDLERS[kind] = func
        return func
    return register


def handle(event, effects=None):
    """Run the event's handler, if its type has one. Returns a note for the event record, or None."""
    effects = effects if effects is not None else Effects()
    handler = HANDLERS.get(event.type)
    if handler is None:
        return None  # stored and marked processed: unknown types are kept, not dropped
    at = event_time(event)
    channel = db.session.get(Channel, event.channel_id)
    if channel.disconnected_at is not None and channel.disconnected_at < at:
        # The shop reset this connection: keep what LINE sent, but speak for the shop no more (no contact
        # made, no form sent) until it connects the channel again.
        return "channel disconnected by the shop: stored only"
    return handler(event, effects)


def event_time(event):
    """The event's LINE time, or ``Unprocessable`` when no calendar holds it."""
    try:
        return store.event_time(event.timestamp)
    except (OverflowError, OSError, ValueError):
        raise Unprocessable(f"timestamp {event.timestamp} is out of range") from None


def contact_for(channel_id: int, line_user_id: str, lock=False) -> Contact:
    """The channel's contact for this LINE user, created if missing (race-safe: the database skips a twin).
    ``lock`` holds the row until the commit on PostgreSQL, for decisions that must not interleave."""
    store.insert_ignoring(Contact, [{
        "channel_id": channel_id, "line_user_id": line_user_id,
        "created_at": utcnow(), "updated_at": utcnow(),
    }], ["channel_id", "line_user_id"])
    query = db.select(Contact).filter_by(channel_id=channel_id, line_user_id=line_user_id)
    if lock and db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return db.session.scalar(query)


def _one_to_one_user(event):
    if event.source_type == "user" and event.source_user_id:
        return event.source_user_id
    return None


@handles("follow")
def on_follow(event, effects):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "follow without a user source: nothing to do"
    reply_token = event.payload.get("replyToken")
    if reply_token is not None and not isinstance(reply_token, str):
        raise Unprocessable("'replyToken' is not a string")
    at = event_time(event)
    contact = contact_for(event.channel_id, user_id, lock=True)
    if contact.blocked_at is not None and at < contact.blocked_at:
        return "older than the contact's latest unfollow: ignored"
    contact.blocked_at = None
    if contact.followed_at is None or at > contact.followed_at:
        contact.followed_at = at
    if event.mode == "standby":
        effects.profiles.append(contact.id)
        return "standby mode: no message sent"
    why_not = form_not_due(contact)
    if why_not:
        effects.profiles.append(contact.id)
        return why_not
    from . import outbox
    row = outbox.queue_form(event, contact, reply_token)
    effects.outbox.append(row.id)
    return "form queued"


def form_not_due(contact):
    """Why the form must not go to this contact now, or None when it may."""
    from ..customers import form_settings
    if not form_settings.for_channel(contact.channel_id).enabled:
        return "form switched off by the shop: not sent"
    if contact.form_filled_at is not None:
        return "form already filled in: not sent"
    since = utcnow() - timedelta(hours=float(current_app.config["FORM_RESEND_HOURS"]))
    recent = db.session.scalar(db.select(Outbox.id).where(
        Outbox.contact_id == contact.id, Outbox.purpose == "form",
        Outbox.status.in_(("queued", "sending", "sent", "unknown")),
        db.or_(Outbox.created_at >= since, Outbox.sent_at >= since)).limit(1))
    return "form sent recently: not sent again" if recent is not None else None


@handles("unfollow")
def on_unfollow(event, effects):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "unfollow without a user source: nothing to do"
    at = event_time(event)
    contact = contact_for(event.channel_id, user_id, lock=True)
    if contact.followed_at is not None and at < contact.followed_at:
        return "older than the contact's latest follow: ignored"
    if contact.blocked_at is None or at > contact.blocked_at:
        contact.blocked_at = at
    contact.form_token = None  # their form link stops working (customers/links.py); a new follow sends a new one
    return None


@handles("message")
def on_message(event, effects):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "message in a group or room: kept as an event only"
    message = event.payload.get("message")
    if not isinstance(message, dict):
        raise Unprocessable("'message' is not an object")
    at = event_time(event)
    contact = contact_for(event.channel_id, user_id)
    kind = str(message.get("type") or "unknown")[:20]
    text = message.get("text") if kind == "text" else None
    from ..customers import content
    reply_token = event.payload.get("replyToken")
    row = Message(
        channel_id=event.channel_id, contact_id=contact.id, event_id=event.id, direction="in", type=kind,
        # PostgreSQL text cannot hold NUL; LINE does not send it, a forged-but-signed body might.
        text=text.replace("\x00", "") if isinstance(text, str) else None,
        line_message_id=str(message.get("id"))[:40] if message.get("id") else None,
        sent_at=at, detail=content.message_detail(kind, message),
        reply_token=reply_token[:255] if isinstance(reply_token, str) and event.mode != "standby" else None,
        mark_as_read_token=_short_text(message.get("markAsReadToken"), 255),
    )
    db.session.add(row)
    if content.fetchable(kind, message):
        db.session.flush()  # the message's id, for its content row
        effects.contents.append(content.queue_fetch(row))
    return None


def _short_text(value, limit):
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "")[:limit] or None


def refresh_profile(channel, contact):
    """Fill the contact from LINE's profile (the caller commits); returns the problem when LINE would not say."""
    from .client import client_for
    from .problems import LineProblem
    try:
        profile = client_for(channel).get_profile(contact.line_user_id)
    except LineProblem as problem:
        log.info("profile of a contact of channel %s not fetched: %s", channel.id, problem.code)
        return problem
    contact.display_name = (profile.get("displayName") or contact.display_name or "")[:200] or None
    contact.picture_url = (profile.get("pictureUrl") or "")[:500] or None
    contact.status_message = profile.get("statusMessage") or None
    contact.language = (profile.get("language") or "")[:16] or None
    contact.profile_fetched_at = utcnow()
    return None


def fetch_profile(contact_id):
    """Fetch and save one contact's profile; returns the LineProblem if LINE would not give it."""
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        return None
    problem = refresh_profile(db.session.get(Channel, contact.channel_id), contact)
    db.session.commit()
    return problem


def contact_locale(contact):
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    return _LANGUAGES.get(contact.language or "", default)


def form_url(contact):
    from ..customers import links
    return links.url(contact.form_token)


def form_text(channel, contact, fresh=True):
    """The form's message (customers/form_settings.py) with a new signed link (customers/links.py), or with
    the contact's current link when not ``fresh`` (a retry of a push LINE may have delivered already: only the
    newest link works, so a new one would disable the link the customer may be holding)."""
    from ..customers import form_settings, links
    if fresh or not contact.form_token:
        links.issue(contact, channel.shop_id)
    return form_settings.message_text(channel, contact, form_url(contact))


# Worth another try later: LINE or the network is struggling, or our credentials are being fixed. Anything
# else (400 unknown user, 403 not allowed, 404 …) would fail the same way again.
_RETRYABLE = {"line_unreachable", "timeout", "rate_limited", "wrong_secret", "unknown_channel",
              "invalid_token"}


def retryable(problem) -> bool:
    return problem.code in _RETRYABLE or (problem.status or 0) >= 500
