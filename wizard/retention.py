"""Retention: what is deleted, and when (a nightly job, jobs.py; ``flask --app wizard retention`` runs it now).

Nothing was ever deleted: a million events with their raw bodies take about 1.2 GB, and customers' files sit
in the database. Each kind has its own setting (config.py, README "Configuration"):

- ``RETAIN_EVENTS_DAYS``: webhook events the worker is done with, and the deliveries (raw bodies) none of
  whose events is still waiting. What an event did (the contact, the message) stays; only LINE's copy goes.
- ``RETAIN_MEDIA_DAYS``: the bytes of images, videos, audio and files customers sent; the message stays and
  the conversation says the file was deleted after that many days.
- ``CHECK_HISTORY_DAYS``: the console's live checks (status.py trims a shop when it is checked; this also
  trims shops nobody checks any more).
- ``RETAIN_MAIL_DAYS``: the record of every e-mail sent.
- A customer's own data follows the period the shop's privacy notice states (customers/notice.py): with
  "N year(s) after your last contact", a contact with no activity for N years is deleted with its messages,
  files and form submissions. "Until you ask us" deletes nothing by itself.

The notice tells customers the event and media periods too, so what it promises and what happens agree.
Deletes run in batches of ``BATCH`` rows, each its own short transaction: a night's backlog never holds a
lock on a table the webhooks write to for long (PostgreSQL) nor SQLite's one write lock.
"""
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, delete, exists, or_, select, update

from .extensions import db
from .models import (Channel, Contact, FormSettings, MailMessage, Message, MessageContent, ShopCheck, WebhookDelivery,
                     WebhookEvent, utcnow)
from .statuses import ContentStatus, EventStatus

log = logging.getLogger(__name__)

BATCH = 2000
DAYS_PER_YEAR = 365.25
WAITING = (EventStatus.PENDING, EventStatus.PROCESSING)


def days(name):
    """A retention setting in days; 0 or less keeps that kind for ever."""
    return float(current_app.config[name] or 0)


def run(now=None):
    """Delete what has outlived its retention; returns {kind: rows deleted (or files emptied)}."""
    now = now or utcnow()
    counts = {"events": 0, "deliveries": 0, "media": 0, "checks": 0, "mail": 0, "contacts": 0}
    if days("RETAIN_EVENTS_DAYS") > 0:
        cutoff = now - timedelta(days=days("RETAIN_EVENTS_DAYS"))
        e, d = WebhookEvent, WebhookDelivery
        counts["events"] = _in_batches(e, and_(e.received_at < cutoff, e.status.not_in(WAITING)))
        counts["deliveries"] = _in_batches(d, and_(d.received_at < cutoff,
                                                   ~exists().where(e.delivery_id == d.id)))
    if days("RETAIN_MEDIA_DAYS") > 0:
        counts["media"] = _expire_media(now - timedelta(days=days("RETAIN_MEDIA_DAYS")))
    if days("CHECK_HISTORY_DAYS") > 0:
        counts["checks"] = _in_batches(ShopCheck, ShopCheck.at < now - timedelta(days=days("CHECK_HISTORY_DAYS")))
    if days("RETAIN_MAIL_DAYS") > 0:
        counts["mail"] = _in_batches(MailMessage, MailMessage.sent_at < now - timedelta(
            days=days("RETAIN_MAIL_DAYS")))
    counts["contacts"] = _forget_customers(now)
    log.info("retention: %s", ", ".join(f"{kind} {count}" for kind, count in counts.items()))
    return counts


def _in_batches(model, condition):
    """Delete ``model``'s rows matching ``condition``, BATCH at a time, each batch committed."""
    total = 0
    while True:
        ids = db.session.scalars(select(model.id).where(condition).limit(BATCH)).all()
        if not ids:
            db.session.commit()
            return total
        db.session.execute(delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False))
        db.session.commit()
        total += len(ids)


def _expire_media(cutoff):
    """Empty the kept files fetched before ``cutoff``: status ``expired``, no bytes; the message stays."""
    c = MessageContent
    total = 0
    while True:
        ids = db.session.scalars(select(c.id).where(c.status == ContentStatus.READY, c.created_at < cutoff)
                                 .limit(BATCH)).all()
        if not ids:
            db.session.commit()
            return total
        db.session.execute(update(c).where(c.id.in_(ids)).values(status=ContentStatus.EXPIRED, data=None)
                           .execution_options(synchronize_session=False))
        db.session.commit()
        total += len(ids)


def _forget_customers(now):
    """Contacts with no activity for the period their shop's notice states are deleted (their messages,
    files and form submissions go with them: ON DELETE CASCADE)."""
    total = 0
    for shop_id, notice in db.session.execute(select(FormSettings.shop_id, FormSettings.notice)).all():
        years = int((notice or {}).get("retention_years") or 0)
        if years <= 0:
            continue
        cutoff = now - timedelta(days=years * DAYS_PER_YEAR)
        channels = select(Channel.id).where(Channel.shop_id == shop_id)
        recent_message = exists().where(Message.contact_id == Contact.id, Message.sent_at >= cutoff)
        # "Last contact": the newest of their messages and of anything they did (followed, blocked, filled in
        # the form, consented) or we recorded about them.
        quiet = [or_(column.is_(None), column < cutoff) for column in (
            Contact.created_at, Contact.updated_at, Contact.followed_at, Contact.blocked_at,
            Contact.form_filled_at, Contact.marketing_consent_at)]
        total += _in_batches(Contact, and_(Contact.channel_id.in_(channels), *quiet, ~recent_message))
    return total
