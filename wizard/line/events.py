"""What each stored webhook event does: follow, unfollow, message; every other type is kept and left alone.

The worker calls ``handle(event)`` for one stored ``WebhookEvent`` at a time, outside any request. A handler
either returns (the worker marks the event processed, with the returned note if any) or raises (the worker
retries it later with backoff). Handlers are written to be run again safely: contacts are upserted, and a
follow's state change is applied only when the event is newer than what the contact already records, so
two workers or a retry taking events out of order cannot turn a friend back into a blocker or vice versa.

Decisions worth knowing:
- ``followed_at`` and ``blocked_at`` hold the *event's* time (LINE's timestamp), not the processing time.
- A profile that LINE will not give (e.g. the user blocked again at once) never loses the contact: the
  contact is committed first and the problem becomes the event's note.
- The customer data form is sent on follow, as a reply (free) or, when the reply token has expired
  (LINE answers 400), as a push with a retry key derived from the event, so a retried event is not
  delivered twice. LINE failing or unreachable makes the worker retry the event; a refusal that would
  repeat (unknown user, not allowed) is noted on the event instead. The form is not sent again to a
  contact who has filled it in, nor within ``FORM_RESEND_HOURS`` (default 24 h) of the last one, so
  blocking and unblocking does not spam anyone; an unfilled form keeps its link, so an older message
  still works. Events in ``standby`` mode (another module owns the chat) are recorded, never answered.
- Only one-to-one (``source.type == "user"``) events touch contacts: a message in a group or room comes
  from someone who may not be the shop's friend, so it stays a stored event.
"""
import logging
import uuid
from datetime import timedelta

from flask import current_app
from flask_babel import force_locale, gettext as _

from .. import crypto
from ..extensions import db
from ..models import Channel, Contact, Message, utcnow
from . import store

log = logging.getLogger(__name__)

HANDLERS = {}
# LINE's profile "language" (BCP 47 as LINE sends it) to our catalog names; anything else gets the default.
_LANGUAGES = {"en": "en", "zh-TW": "zh_Hant_TW", "zh-Hant": "zh_Hant_TW", "zh-HK": "zh_Hant_TW"}


def handles(kind):
    """Register the handler for one event ``type``; the last registration wins."""
    def register(func):
        HANDLERS[kind] = func
        return func
    return register


def handle(event):
    """Run the event's handler, if its type has one. Returns a note for the event record, or None."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return None  # stored and marked processed: unknown types are kept, not dropped
    channel = db.session.get(Channel, event.channel_id)
    if channel.disconnected_at is not None and channel.disconnected_at < store.event_time(event.timestamp):
        # The shop reset this connection: keep what LINE sent, but speak for the shop no more (no contact
        # made, no form sent) until it connects the channel again.
        return "channel disconnected by the shop: stored only"
    return handler(event)


def contact_for(channel_id: int, line_user_id: str) -> Contact:
    """The channel's contact for this LINE user, created if missing (race-safe: the database skips a twin)."""
    store.insert_ignoring(Contact, [{
        "channel_id": channel_id, "line_user_id": line_user_id,
        "created_at": utcnow(), "updated_at": utcnow(),
    }], ["channel_id", "line_user_id"])
    return db.session.scalar(db.select(Contact).filter_by(channel_id=channel_id, line_user_id=line_user_id))


def _one_to_one_user(event):
    if event.source_type == "user" and event.source_user_id:
        return event.source_user_id
    return None


@handles("follow")
def on_follow(event):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "follow without a user source: nothing to do"
    channel = db.session.get(Channel, event.channel_id)
    at = store.event_time(event.timestamp)
    contact = contact_for(channel.id, user_id)
    if contact.blocked_at is not None and at < contact.blocked_at:
        return "older than the contact's latest unfollow: ignored"
    contact.blocked_at = None
    if contact.followed_at is None or at > contact.followed_at:
        contact.followed_at = at
    notes = []
    problem = refresh_profile(channel, contact)
    if problem:
        notes.append(f"profile not fetched: {problem}")
    # The contact is kept whatever sending the form does next.
    db.session.commit()
    if event.mode == "standby":
        notes.append("standby mode: no message sent")
    else:
        notes.append(send_form(channel, contact, event.payload.get("replyToken"), event.id))
    return "; ".join(n for n in notes if n) or None


@handles("unfollow")
def on_unfollow(event):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "unfollow without a user source: nothing to do"
    at = store.event_time(event.timestamp)
    contact = contact_for(event.channel_id, user_id)
    if contact.followed_at is not None and at < contact.followed_at:
        return "older than the contact's latest follow: ignored"
    if contact.blocked_at is None or at > contact.blocked_at:
        contact.blocked_at = at
    return None


@handles("message")
def on_message(event):
    user_id = _one_to_one_user(event)
    if user_id is None:
        return "message in a group or room: kept as an event only"
    message = event.payload.get("message") or {}
    contact = contact_for(event.channel_id, user_id)
    kind = str(message.get("type") or "unknown")[:20]
    text = message.get("text") if kind == "text" else None
    db.session.add(Message(
        channel_id=event.channel_id, contact_id=contact.id, event_id=event.id, direction="in", type=kind,
        # PostgreSQL text cannot hold NUL; LINE does not send it, a forged-but-signed body might.
        text=text.replace("\x00", "") if isinstance(text, str) else None,
        line_message_id=str(message.get("id"))[:40] if message.get("id") else None,
        sent_at=store.event_time(event.timestamp),
    ))
    return None


def refresh_profile(channel, contact):
    """Fill the contact from LINE's profile; returns the problem code when LINE would not say."""
    from .client import client_for
    from .problems import LineProblem
    try:
        profile = client_for(channel).get_profile(contact.line_user_id)
    except LineProblem as problem:
        log.info("profile of a contact of channel %s not fetched: %s", channel.id, problem.code)
        return problem.code
    contact.display_name = (profile.get("displayName") or contact.display_name or "")[:200] or None
    contact.picture_url = (profile.get("pictureUrl") or "")[:500] or None
    contact.status_message = profile.get("statusMessage") or None
    contact.language = (profile.get("language") or "")[:16] or None
    return None


def contact_locale(contact):
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    return _LANGUAGES.get(contact.language or "", default)


def form_url(contact):
    return f"{current_app.config['PUBLIC_BASE_URL']}/form/{contact.form_token}"


def form_text(channel, contact):
    with force_locale(contact_locale(contact)):
        return _("Thank you for adding %(shop)s as a friend! Please take a minute to tell us your name, "
                 "phone and e-mail so we can serve you better: %(url)s",
                 shop=channel.shop.name, url=form_url(contact))


def send_form(channel, contact, reply_token, event_id=None):
    """Send the customer data form unless it is not due; returns a note saying what happened."""
    from .client import client_for
    from .problems import LineProblem
    if contact.form_filled_at is not None:
        return "form already filled in: not sent"
    resend_after = timedelta(hours=float(current_app.config["FORM_RESEND_HOURS"]))
    if contact.form_sent_at is not None and utcnow() - contact.form_sent_at < resend_after:
        return "form sent recently: not sent again"
    if not contact.form_token:
        contact.form_token = crypto.new_token()
        db.session.commit()
    text = form_text(channel, contact)
    messages = [{"type": "text", "text": text}]
    client = client_for(channel)
    how, result = "reply", None
    # Claimed before LINE is asked and committed: if the process dies after LINE took the message but before
    # the event's outcome is saved, the retry sees the claim and does not send the form a second time.
    previous_sent_at = contact.form_sent_at
    contact.form_sent_at = utcnow()
    db.session.commit()
    try:
        if reply_token:
            try:
                result = client.reply(reply_token, messages)
            except LineProblem as problem:
                # 400 is LINE saying no (the token expired or was used): nothing went out, so push instead.
                if problem.status != 400:
                    raise
        if result is None:
            how = "push"
            # The same key on every retry of this event: LINE delivers a push with a known key only once.
            retry_key = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                       f"wizard:form:{channel.id}:{event_id}:{contact.id}"))
            result = client.push(contact.line_user_id, messages, retry_key=retry_key)
    except LineProblem as problem:
        contact.form_sent_at = previous_sent_at  # LINE said no: nothing went out, so release the claim
        db.session.commit()
        if retryable(problem):
            raise  # the worker tries again later; the contact is already saved
        return f"form not sent: {problem.code}"
    db.session.add(Message(
        channel_id=channel.id, contact_id=contact.id, event_id=event_id, direction="out", type="text",
        text=text, line_message_id=_sent_message_id(result), sent_at=contact.form_sent_at,
    ))
    return f"form sent by {how}"


# Worth another try later: LINE or the network is struggling, or our credentials are being fixed. Anything
# else (400 unknown user, 403 not allowed, 404 …) would fail the same way again.
_RETRYABLE = {"line_unreachable", "timeout", "rate_limited", "wrong_secret", "unknown_channel",
              "invalid_token"}


def retryable(problem) -> bool:
    return problem.code in _RETRYABLE or (problem.status or 0) >= 500


def _sent_message_id(result):
    sent = (result or {}).get("sentMessages") if isinstance(result, dict) else None
    if sent and isinstance(sent[0], dict) and sent[0].get("id"):
        return str(sent[0]["id"])[:40]
    return None
