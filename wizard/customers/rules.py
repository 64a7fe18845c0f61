"""What a LINE event means for the CRM: a follow makes a contact and maybe sends the form, an unfollow blocks,
a message joins the conversation. Registered into the worker's handler registry (line/events.py) by
``register``, which the app factory calls; line/ itself knows none of this.

Decisions worth knowing:
- ``followed_at`` and ``blocked_at`` hold the *event's* time (LINE's timestamp), not the processing time, and
  a follow's state change is applied only when the event is newer than what the contact records, so a late
  redelivery cannot turn a friend back into a blocker or vice versa.
- The customer data form is queued on follow when it is due (customers/form.py). Events in ``standby`` mode
  (another module owns the chat) are recorded, never answered.
- Only one-to-one (``source.type == "user"``) events touch contacts: a message in a group or room comes
  from someone who may not be the shop's friend, so it stays a stored event.
- A handler writes only to our database and leaves what needs LINE to the queue (``effects.later``).
"""
from .. import queue
from ..extensions import db
from ..line import events
from ..line.events import Unprocessable, event_time, one_to_one_user
from ..models import Contact, Message, utcnow
from ..outgoing import purposes
from ..rows import insert_ignoring
from . import content, form, replies


def contact_for(channel_id: int, line_user_id: str, lock=False) -> Contact:
    """The channel's contact for this LINE user, created if missing (race-safe: the database skips a twin).
    ``lock`` holds the row until the commit on PostgreSQL, for decisions that must not interleave.

    Read first, written only when missing (nearly never: a customer's messages come after their follow). An
    INSERT that finds its twin still takes SQLite's write lock, and an event's transaction then held it from
    its first statement to its commit, through all of the handler's work: the webhooks' receiver waited
    behind every message of every customer."""
    query = db.select(Contact).filter_by(channel_id=channel_id, line_user_id=line_user_id)
    if lock and db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    contact = db.session.scalar(query)
    if contact is not None:
        return contact
    insert_ignoring(Contact, [{
        "channel_id": channel_id, "line_user_id": line_user_id,
        "created_at": utcnow(), "updated_at": utcnow(),
    }], ["channel_id", "line_user_id"])
    return db.session.scalar(query)


def on_follow(event, effects):
    user_id = one_to_one_user(event)
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
        effects.later(queue.fetch_profile, contact.id)
        return "standby mode: no message sent"
    why_not = form.not_due(contact)
    if why_not:
        effects.later(queue.fetch_profile, contact.id)
        return why_not
    row = form.queue_for_follow(event, contact, reply_token)
    effects.later(queue.send_message, row.id)
    return "form queued"


def on_unfollow(event, effects):
    user_id = one_to_one_user(event)
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


def on_message(event, effects):
    user_id = one_to_one_user(event)
    if user_id is None:
        return "message in a group or room: kept as an event only"
    message = event.payload.get("message")
    if not isinstance(message, dict):
        raise Unprocessable("'message' is not an object")
    at = event_time(event)
    contact = contact_for(event.channel_id, user_id)
    kind = str(message.get("type") or "unknown")[:20]
    text = message.get("text") if kind == "text" else None
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
        effects.later(queue.fetch_content, content.queue_fetch(row))
    return None


def _short_text(value, limit):
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "")[:limit] or None


RULES = {"follow": on_follow, "unfollow": on_unfollow, "message": on_message}


def register():
    """The CRM's event rules, its message purposes and its answer to "is a follow welcomed" (app factory)."""
    for kind, handler in RULES.items():
        events.handles(kind)(handler)
    events.welcome_rule(lambda contact: form.not_due(contact) is None)
    purposes.register(form.FORM)
    purposes.register(replies.TYPED)
