"""A contact's conversation: what they sent us (``Message`` rows, direction ``in``) and what we sent them (the
outbox, each row with its delivery state), newest last; and marking their messages read on LINE.

Our messages are read from the outbox, not from the ``out`` Message rows: the outbox holds every message from
the moment it is written (queued, sending) to its outcome (sent, refused, dead, unknown), so a reply typed a
second ago shows as "sending" and a refused push shows as not sent. The ``out`` rows exist only once LINE
took a message and would show it twice.

Mark as read: LINE's ``markAsRead`` takes the ``markAsReadToken`` of one message event and marks that message
and every earlier one of the user read (it matters only with Chat on, the only time LINE sends tokens). When
a person opens the conversation, the newest unmarked incoming message is claimed in the database (so two
people opening it at once, or a reload, call LINE once per token) and the call goes through the queue
(wizard/queue.py ``mark_read``): the page never waits for LINE and never fails because of it.
"""
import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from .. import claims, queue
from ..extensions import db
from ..line.client import client_for
from ..line.problems import LineProblem, retryable
from ..models import Channel, Contact, Message, MessageContent, Outbox, utcnow

log = logging.getLogger(__name__)

LIMIT = 200  # the newest items a page shows; older ones are summarised by a count
MARK_DELAYS = claims.backoff("read_mark").delays


@dataclass
class Item:
    """One line of the conversation. ``direction`` "in" (the customer) or "out" (us)."""
    direction: str
    at: datetime
    type: str
    text: str | None = None
    detail: dict = field(default_factory=dict)
    message_id: int | None = None
    content: MessageContent | None = None
    outbox: Outbox | None = None

    @property
    def status(self):
        return self.outbox.status if self.outbox is not None else None

    @property
    def quota_exceeded(self):
        # "quota_exceeded" was the code's name before issue 16; rows written then keep it.
        return self.outbox is not None and (self.outbox.error or "").startswith(("monthly_limit", "quota_exceeded"))

    @property
    def key(self):
        return f"{self.direction}-{self.message_id or (self.outbox.id if self.outbox else 0)}"


@dataclass
class Conversation:
    items: list
    older: int  # items before the first one shown


def _outgoing_items(outbox_row):
    """An outbox row as items: one per message in it (a form not written yet shows as the form)."""
    at = outbox_row.sent_at or outbox_row.created_at
    messages = outbox_row.messages or [{"type": "form"}]
    return [Item("out", at, str(message.get("type") or "text"), text=message.get("text"), outbox=outbox_row)
            for message in messages if isinstance(message, dict)]


def for_contact(contact, limit=LIMIT):
    """The conversation with ``contact``, newest last, at most ``limit`` items."""
    incoming = db.session.scalars(
        select(Message).where(Message.contact_id == contact.id, Message.direction == "in")
        .order_by(Message.sent_at.desc(), Message.id.desc()).limit(limit + 1)).all()
    outgoing = db.session.scalars(
        select(Outbox).where(Outbox.contact_id == contact.id)
        .order_by(Outbox.created_at.desc(), Outbox.id.desc()).limit(limit + 1)).all()
    contents = {}
    media = [m.id for m in incoming]
    if media:
        contents = {c.message_id: c for c in db.session.scalars(
            select(MessageContent).where(MessageContent.message_id.in_(media)))}
    items = [Item("in", m.sent_at, m.type, text=m.text, detail=m.detail or {}, message_id=m.id,
                  content=contents.get(m.id)) for m in incoming]
    for row in outgoing:
        items.extend(_outgoing_items(row))
    items.sort(key=lambda item: (item.at, 0 if item.direction == "in" else 1, item.message_id or 0))
    total = _count(contact)
    shown = items[-limit:]
    return Conversation(items=shown, older=max(0, total - len(shown)))


def _count(contact):
    incoming = db.session.scalar(select(db.func.count(Message.id)).where(
        Message.contact_id == contact.id, Message.direction == "in")) or 0
    outgoing = db.session.scalar(select(db.func.count(Outbox.id)).where(Outbox.contact_id == contact.id)) or 0
    return incoming + outgoing


# ---- mark as read ------------------------------------------------------------------------------------------

def claim_read_mark(contact):
    """Claim the newest incoming message whose read mark LINE has not been asked for; returns its id, or None
    when there is nothing to mark (no token: Chat off, or all marked). Earlier unmarked messages are marked
    claimed too: LINE reads them with the newest. Commits."""
    m = Message
    newest = db.session.scalar(
        select(m.id).where(m.contact_id == contact.id, m.direction == "in", m.mark_as_read_token.is_not(None))
        .order_by(m.sent_at.desc(), m.id.desc()).limit(1))
    if newest is None:
        return None
    now = utcnow()
    won = db.session.execute(update(m).where(m.id == newest, m.read_marked_at.is_(None)).values(
        read_marked_at=now).execution_options(synchronize_session=False)).rowcount == 1
    if won:
        db.session.execute(update(m).where(
            m.contact_id == contact.id, m.direction == "in", m.read_marked_at.is_(None),
            m.mark_as_read_token.is_not(None), m.id != newest).values(read_marked_at=now)
            .execution_options(synchronize_session=False))
    db.session.commit()
    return newest if won else None


def mark_read(message_id):
    """Ask LINE to mark the message (and the user's earlier ones) read. Returns (done, seconds until another
    try or None). A refused token is not tried again; a LINE that is down is, a couple of times."""
    message = db.session.get(Message, message_id)
    if message is None or not message.mark_as_read_token:
        return False, None
    channel = db.session.get(Channel, message.channel_id)
    if channel is None or channel.disconnected_at is not None:
        return False, None
    try:
        client_for(channel).mark_as_read(message.mark_as_read_token)
    except LineProblem as problem:
        log.info("mark as read for message %s not done: %s", message_id, problem.code)
        if retryable(problem):
            return False, max(MARK_DELAYS[0], problem.retry_after or 0)
        return False, None
    return True, None


def opened(contact):
    """A person opened the conversation: mark it read on LINE through the queue. Never raises."""
    try:
        message_id = claim_read_mark(contact)
        if message_id is not None:
            queue.mark_read(message_id)
        return message_id
    except Exception:  # the page matters more than the read mark
        db.session.rollback()
        log.warning("could not ask for the read mark of contact %s", contact.id, exc_info=True)
        return None


def contact_of(contact_id) -> Contact | None:
    return db.session.get(Contact, contact_id)


# ---- what is new -------------------------------------------------------------------------------------------

def version(talk):
    """A short tag of what the conversation shows (each item and its delivery state): the page's script
    swaps the list only when the tag changed, so an unchanged poll moves nothing under the reader's eyes."""
    import hashlib
    seen = "|".join(f"{item.key}:{item.status or ''}:{item.content.status if item.content else ''}"
                    for item in talk.items)
    return hashlib.sha256(f"{talk.older}|{seen}".encode()).hexdigest()[:16]


def seen(contact):
    """Someone of the shop has the conversation in front of them: the customer's messages so far are read
    (the contacts list counts only later ones as new). Writes only when there is something new."""
    newest = db.session.scalar(select(db.func.max(Message.sent_at)).where(
        Message.contact_id == contact.id, Message.direction == "in"))
    if newest is not None and (contact.seen_at is None or contact.seen_at < newest):
        contact.seen_at = utcnow()
        db.session.commit()


def unread_counts(contact_ids):
    """{contact id: how many of the customer's messages came after someone last opened the conversation}
    for the contacts listed (one grouped query over the page's contacts)."""
    if not contact_ids:
        return {}
    m = Message
    rows = db.session.execute(
        select(m.contact_id, db.func.count(m.id)).join(Contact, Contact.id == m.contact_id)
        .where(m.contact_id.in_(contact_ids), m.direction == "in",
               db.or_(Contact.seen_at.is_(None), m.sent_at > Contact.seen_at))
        .group_by(m.contact_id))
    return dict(rows.all())
