"""The customer data form as a message: when it goes to a new friend, and what it says (its outgoing purpose).

- It is queued on follow (one outbox row per follow event, unique in the database), not when the shop
  switched it off (customers/form_settings.py), not to a contact who filled it in, nor within
  ``FORM_RESEND_HOURS`` (default 24 h) of the last one that went or may have gone out, so blocking and
  unblocking does not spam anyone (``not_due``).
- Its text is written when it is sent (``render``): the shop's text (the default one in the language of the
  profile fetched then) and a new signed personal link (customers/links.py). The link is made anew for each
  attempt and kept nowhere: whoever reads the outbox or the conversation must not be able to fill in the
  customer's form (and their consent) in their name, so the outbox keeps the text with the link masked.
- A form queued while LINE was away does not go out once the shop switched the form off (``refuse``).
"""
from datetime import timedelta

from flask import current_app

from ..extensions import db
from ..models import Outbox, utcnow
from ..outgoing import outbox, purposes
from ..redact import redact
from ..statuses import OutboxStatus
from . import form_settings, links
from .profiles import refresh_profile

PURPOSE = "form"

# A form in one of these went, is going or may have gone: another within FORM_RESEND_HOURS would be twice.
_ON_ITS_WAY = (OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.SENT, OutboxStatus.UNKNOWN)


def not_due(contact):
    """Why the form must not go to this contact now, or None when it may."""
    if not form_settings.for_channel(contact.channel_id).enabled:
        return "form switched off by the shop: not sent"
    if contact.form_filled_at is not None:
        return "form already filled in: not sent"
    since = utcnow() - timedelta(hours=float(current_app.config["FORM_RESEND_HOURS"]))
    recent = db.session.scalar(db.select(Outbox.id).where(
        Outbox.contact_id == contact.id, Outbox.purpose == PURPOSE,
        Outbox.status.in_(_ON_ITS_WAY),
        db.or_(Outbox.created_at >= since, Outbox.sent_at >= since)).limit(1))
    return "form sent recently: not sent again" if recent is not None else None


def queue_for_follow(event, contact, reply_token):
    """The form for this follow, in the caller's transaction (the caller asked ``not_due`` first); the row."""
    return outbox.add(event.channel_id, contact.id, PURPOSE, event=event, reply_token=reply_token)


def url(contact):
    return links.url(contact.form_token)


def text(channel, contact, fresh=True):
    """The form's message (customers/form_settings.py) with a new signed link (customers/links.py), or with
    the contact's current link when not ``fresh`` (a retry of a push LINE may have delivered already: only the
    newest link works, so a new one would disable the link the customer may be holding)."""
    if fresh or not contact.form_token:
        links.issue(contact, channel.shop_id)
    return form_settings.message_text(channel, contact, url(contact))


def render(row, channel, contact):
    if contact.profile_fetched_at is None:
        # Best effort, for the language: the form goes in the default language when LINE will not say.
        refresh_profile(channel, contact)
    # A retry keeps the link this row made on its first attempt: that attempt may have reached the
    # customer (a push whose answer was lost), and only a contact's newest link works.
    retried = row.attempts > 1 and contact.form_link_issued_at is not None \
        and contact.form_link_issued_at >= row.created_at
    return [{"type": "text", "text": text(channel, contact, fresh=not retried)}]


def masked(message):
    """A message as we keep it: any personal form link masked (the customer has the only usable copy)."""
    if isinstance(message.get("text"), str):
        return dict(message, text=redact(message["text"]))
    return message


def refuse(row, channel):
    if not form_settings.for_channel(channel.id).enabled:
        return "the shop switched the form off before it went out"
    return None


def sent(row, contact, now):
    contact.form_sent_at = now


FORM = purposes.Purpose(PURPOSE, render=render, fresh=True, kept=masked, refuse=refuse, sent=sent)
