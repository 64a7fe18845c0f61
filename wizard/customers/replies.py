"""A message typed by staff or the shop's owner on a contact's conversation, and the month's message quota.

How it goes out (``plan``): by *reply* while the newest message the customer sent still has a reply token
LINE accepts (single use, about a minute: outbox.REPLY_TOKEN_LIFETIME, less a margin for the queue) and no
reply of ours used it yet; replies are free. Otherwise by *push*, which counts against the shop's monthly
quota. Either way it goes through the outbox (outgoing/outbox.py): the row is written first and shown at once as
"sending", LINE is asked after the commit, a push carries the row's retry key, and a reply token LINE
refuses turns the same row into a push, so nothing goes out twice or unrecorded.

Exactly once from the page too: the form carries a random key, minted when the page was drawn, which becomes
the row's ``retry_key`` (unique). Pressing "Send" twice, or sending the form again after a lost answer,
finds the first row instead of writing a second. A reply row names the event of the token it uses, and
(event, purpose) is unique: two people replying in the same second cannot use one token twice; the second
goes by push.

The quota (``quota``) is LINE's (``GET /v2/bot/message/quota`` and ``/consumption``), kept a few minutes per
channel (``QUOTA_CACHE_SECONDS``) in this process, plus our own pushes LINE had not counted when it was read
(sent since, or on their way): the page right after a push shows it used, not the 0 % read a moment before
the push went out. The page the page shows it, warns from ``QUOTA_WARN_PERCENT`` on
and, when the next message would be a push, before one the quota cannot take. LINE refusing a push for the
quota (``monthly_limit``) is final: the row is failed, shown as not sent.
"""
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Channel, Message, Outbox, utcnow
from ..line.client import client_for
from ..line.problems import LineProblem
from ..outgoing import purposes
from ..outgoing.outbox import REPLY_TOKEN_LIFETIME
from . import form_settings
from ..rows import insert_ignoring
from ..statuses import OutboxStatus

log = logging.getLogger(__name__)

PURPOSE = "typed"
# A typed message is written with its row (``send``): nothing to render when it goes.
TYPED = purposes.Purpose(PURPOSE)
MAX_TEXT = 5000  # LINE's limit for a text message
# A reply waits in the queue for a moment; one planned this close to the token's end would only be refused.
REPLY_MARGIN = timedelta(seconds=10)


class NotSent(ValueError):
    """The message cannot go out as asked; the message says why (translated)."""


@dataclass
class Plan:
    method: str  # "reply" or "push"
    message: Message | None = None  # the customer's message whose reply token a reply uses
    until: datetime | None = None  # when that token stops being worth trying


def _token_lifetime():
    return REPLY_TOKEN_LIFETIME - REPLY_MARGIN


def plan(contact, now=None):
    """Reply or push, for a message typed now. Only the newest message counts: LINE gives a token per event,
    and an older one is no fresher."""
    now = now or utcnow()
    newest = db.session.scalar(
        select(Message).where(Message.contact_id == contact.id, Message.direction == "in")
        .order_by(Message.sent_at.desc(), Message.id.desc()).limit(1))
    if newest is None or not newest.reply_token or newest.event_id is None:
        return Plan("push")
    until = newest.sent_at + _token_lifetime()
    if until <= now:
        return Plan("push")
    used = db.session.scalar(select(Outbox.id).where(Outbox.event_id == newest.event_id,
                                                     Outbox.purpose == PURPOSE).limit(1))
    if used is not None:
        return Plan("push")
    return Plan("reply", newest, until)


def new_key():
    return str(uuid.uuid4())


def valid_key(key):
    try:
        return str(uuid.UUID(str(key))) == str(key).lower()
    except (TypeError, ValueError):
        return False


def clean_text(text):
    """The text as it will be sent, or NotSent saying what is wrong with it."""
    from flask_babel import gettext as _
    from .fields import has_control_characters
    text = (text or "").replace("\r\n", "\n").strip()
    if not text:
        raise NotSent(_("Type a message first."))
    if len(text) > MAX_TEXT:
        raise NotSent(_("A LINE message holds at most %(max)d characters; this one has %(num)d.",
                        max=MAX_TEXT, num=len(text)))
    if has_control_characters(text, allow_newlines=True):
        raise NotSent(_("The message holds control characters; type it again without them."))
    return text


def send(contact, text, key):
    """Queue ``text`` for ``contact`` (commits) and return (outbox row, created now). The caller enqueues
    ``send_message`` for a row created now; a row found by its key is the same message sent a second time."""
    from flask_babel import gettext as _
    if not valid_key(key):
        raise NotSent(_("The page was too old to send from. Your message is still in the box: send it again."))
    key = str(key).lower()
    existing = db.session.scalar(select(Outbox).filter_by(retry_key=key))
    if existing is not None:
        if existing.contact_id != contact.id:
            raise NotSent(_("The page was too old to send from. Your message is still in the box: send it again."))
        return existing, False
    text = clean_text(text)
    if contact.blocked_at is not None:
        raise NotSent(_("Not sent: this customer has blocked the account, and LINE delivers nothing to them."))
    channel = db.session.get(Channel, contact.channel_id)
    if channel.disconnected_at is not None:
        raise NotSent(_("Not sent: this contact came through a LINE channel the shop has since disconnected."))
    how = plan(contact)
    now = utcnow()
    row = {"channel_id": contact.channel_id, "contact_id": contact.id, "purpose": PURPOSE,
           "reply_uncertain": False, "retry_key": key, "messages": [{"type": "text", "text": text}],
           "status": OutboxStatus.QUEUED, "attempts": 0, "created_at": now, "updated_at": now}
    try:
        if how.method == "reply":
            insert_ignoring(Outbox, [dict(row, event_id=how.message.event_id, method="reply",
                                          reply_token=how.message.reply_token)], ["event_id", "purpose"])
        if db.session.scalar(select(Outbox.id).filter_by(retry_key=key)) is None:
            # No token, or someone replied with it a moment ago: a push.
            insert_ignoring(Outbox, [dict(row, event_id=None, method="push", reply_token=None)], ["retry_key"])
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # the same key, sent twice at the same moment: the other request's row stands
    created = db.session.scalar(select(Outbox).filter_by(retry_key=key))
    if created is None:
        raise NotSent(_("The message could not be queued. Nothing was sent: try again."))
    return created, created.created_at == now


def send_form(contact, key):
    """Push the customer form with a new personal link (commits): for a customer whose link expired or who asks
    for it again. Returns (outbox row, created now); like ``send``, one key sends once however often it comes.
    The link is made when the message goes (customers/form.py), never kept."""
    from flask_babel import gettext as _
    if not valid_key(key):
        raise NotSent(_("The page was too old to send from. Press the button again."))
    key = str(key).lower()
    existing = db.session.scalar(select(Outbox).filter_by(retry_key=key))
    if existing is not None:
        if existing.contact_id != contact.id or existing.purpose != "form":
            raise NotSent(_("The page was too old to send from. Press the button again."))
        return existing, False
    if contact.blocked_at is not None:
        raise NotSent(_("Not sent: this customer has blocked the account, and LINE delivers nothing to them."))
    channel = db.session.get(Channel, contact.channel_id)
    if channel.disconnected_at is not None:
        raise NotSent(_("Not sent: this contact came through a LINE channel the shop has since disconnected."))
    if not form_settings.for_channel(channel.id).enabled:
        raise NotSent(_("Not sent: the shop has switched the customer data form off (step 7 of the wizard)."))
    now = utcnow()
    insert_ignoring(Outbox, [{
        "channel_id": contact.channel_id, "contact_id": contact.id, "event_id": None, "purpose": "form",
        "method": "push", "reply_token": None, "reply_uncertain": False, "retry_key": key, "messages": None,
        "status": OutboxStatus.QUEUED, "attempts": 0, "created_at": now, "updated_at": now}], ["retry_key"])
    db.session.commit()
    created = db.session.scalar(select(Outbox).filter_by(retry_key=key))
    return created, created.created_at == now


# ---- the monthly quota -------------------------------------------------------------------------------------

@dataclass
class Quota:
    limited: bool
    limit: int | None
    used: int | None
    checked_at: float
    problem: str | None = None  # a LineProblem code when LINE would not say
    read_at: datetime | None = None  # when LINE gave the count (UTC): our pushes after it are not in it

    @property
    def known(self):
        return self.problem is None and self.used is not None

    @property
    def left(self):
        if not self.known or not self.limited or self.limit is None:
            return None
        return max(0, self.limit - self.used)

    @property
    def percent(self):
        if self.left is None:
            return None
        return 100 if self.limit == 0 else min(100, round(100 * self.used / self.limit))

    @property
    def warn(self):
        percent = self.percent
        return percent is not None and percent >= float(current_app.config["QUOTA_WARN_PERCENT"])

    @property
    def exhausted(self):
        return self.left == 0

    def as_json(self):
        return {"type": "limited" if self.limited else "none", "limit": self.limit, "used": self.used,
                "left": self.left, "warn": self.warn, "problem": self.problem}


_quota_cache: dict[tuple, Quota] = {}
_quota_lock = threading.Lock()


def _quota_key(channel):
    # LINE's Channel ID (and where LINE is), not our row id: another database's channel 1 is another channel.
    return current_app.config["LINE_API_HOST"], channel.channel_id


def forget_quota(channel):
    with _quota_lock:
        _quota_cache.pop(_quota_key(channel), None)


def quota(channel):
    """This month's limit and use of the channel's messages: LINE's count (read at most every
    QUOTA_CACHE_SECONDS) and our pushes since it was read."""
    answer = _line_quota(channel)
    if not answer.known or answer.read_at is None:
        return answer
    o = Outbox
    ours = db.session.scalar(select(db.func.count(o.id)).where(
        o.channel_id == channel.id, o.method == "push",
        or_(o.status.in_((OutboxStatus.QUEUED, OutboxStatus.SENDING)),
            and_(o.status == OutboxStatus.SENT, o.sent_at >= answer.read_at)))) or 0
    return replace(answer, used=answer.used + ours) if ours else answer


def _line_quota(channel):
    """This month's limit and use of the channel's messages, from LINE (at most every QUOTA_CACHE_SECONDS)."""
    ttl = float(current_app.config["QUOTA_CACHE_SECONDS"])
    with _quota_lock:
        cached = _quota_cache.get(_quota_key(channel))
    if cached is not None and time.monotonic() - cached.checked_at < ttl:
        return cached
    client = client_for(channel)
    try:
        limit = client.quota()
        used = client.quota_consumption()
    except LineProblem as problem:
        # Kept for a tenth of the time: the page stays fast while LINE is down, and asks again soon.
        answer = Quota(False, None, None, time.monotonic() - ttl * 0.9, problem.code)
    else:
        limited = limit.get("type") == "limited"
        answer = Quota(limited, limit.get("value") if limited else None, int(used.get("totalUsage") or 0),
                       time.monotonic(), read_at=utcnow())
    with _quota_lock:
        _quota_cache[_quota_key(channel)] = answer
    return answer
