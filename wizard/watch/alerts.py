"""Alerts: a shop that becomes broken or dormant opens one (per shop and reason); it closes by itself when the
shop's state moves on, and staff may acknowledge or snooze it.

Alerts follow ``health.state_changed``, so they open and close in the same transaction as the state that
caused them, from whichever evaluation noticed it: a page, the status API or the watch. One page can then never
show an open alert beside a healthy state.

Escalation (``notify_due``, run by the periodic sweep and after ``check-all``; each mail is re-checked against
the newest evidence just before it goes, ``still_open``):
- the owner's wizard shows a banner with the step that fixes it (templates/wizard/_alert.html);
- an e-mail to the shop's owners and its assigned staff, at most once per alert per ``ALERT_EMAIL_HOURS``,
  none while acknowledged or snoozed. The send is claimed first (a conditional update), so however many
  consumers sweep at once, one sends;
- optionally a JSON POST to ``ALERT_WEBHOOK_URL`` (a chat tool), once when the alert opens and once when it
  closes. It carries ``X-Wizard-Timestamp`` (Unix seconds when it was sent) and ``X-Wizard-Signature``, the hex
  HMAC-SHA256 under ``ALERT_WEBHOOK_SECRET`` of the timestamp, a dot and the body: the time is signed with the
  body, so a receiver that refuses old timestamps (``verify_post``) cannot be fed a captured POST again later.
"""
import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import timedelta

from flask import current_app, has_request_context, url_for
from flask_babel import force_locale, gettext as _
from sqlalchemy import or_, update

from .. import audit, mail
from ..extensions import db
from ..line import store
from ..models import Alert, Shop, iso_utc, utcnow
from ..steps import health as shop_health

log = logging.getLogger(__name__)


def connect():
    shop_health.state_changed.connect(on_state_changed, weak=False)


def on_state_changed(shop, health, previous):
    """Close the shop's alerts its new state no longer bears out; open one for a new broken/dormant reason."""
    now = utcnow()
    alerting = health.state in shop_health.ALERTING
    for alert in open_alerts(shop):
        if not (alerting and alert.reason == health.reason):
            close(alert, now)
    if alerting:
        _open(shop, health, now)


def _open(shop, health, now):
    inserted = db.session.execute(
        store.dialect_insert(Alert).values(
            shop_id=shop.id, state=health.state, reason=health.reason, open_reason=health.reason,
            step=health.step, opened_at=now, emails_sent=0)
        .on_conflict_do_nothing(index_elements=["shop_id", "open_reason"])).rowcount
    if inserted:
        audit.record("alert.opened", shop=shop, actor="system", target=health.reason, state=health.state)
        log.info("alert opened for shop %s: %s (%s)", shop.slug, health.state, health.reason)


def close(alert, now=None):
    alert.closed_at, alert.open_reason = now or utcnow(), None
    audit.record("alert.closed", shop=alert.shop_id, actor="system", target=alert.reason)
    log.info("alert closed for shop %s: %s", alert.shop_id, alert.reason)


def open_alerts(shop):
    shop_id = shop.id if isinstance(shop, Shop) else shop
    return db.session.scalars(db.select(Alert).where(Alert.shop_id == shop_id, Alert.closed_at.is_(None))
                              .order_by(Alert.opened_at)).all()


def acknowledge(alert, user):
    """Staff have seen it: it stays open (until the check passes) but sends no more e-mail."""
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by_id = utcnow(), user.id
        audit.record("alert.acknowledged", shop=alert.shop_id, actor=user, target=alert.reason)


def snooze(alert, user, until):
    alert.snoozed_until = until
    audit.record("alert.snoozed", shop=alert.shop_id, actor=user, target=alert.reason, until=iso_utc(until))


# ---- escalation ---------------------------------------------------------------------------------------------

RETRY_FAILED_MAIL = timedelta(minutes=15)


def notify_due(now=None):
    """E-mail (and post) every open alert whose turn has come; returns how many e-mails went out."""
    now = now or utcnow()
    cutoff = now - timedelta(hours=float(current_app.config["ALERT_EMAIL_HOURS"]))
    due = (Alert.closed_at.is_(None), Alert.acknowledged_at.is_(None),
           or_(Alert.snoozed_until.is_(None), Alert.snoozed_until <= now),
           or_(Alert.last_emailed_at.is_(None), Alert.last_emailed_at <= cutoff))
    ids = db.session.scalars(db.select(Alert.id).where(*due)).all()
    db.session.commit()
    sent = 0
    for alert_id in ids:
        # Claim first, with every condition again: of several consumers sweeping at once exactly one moves the
        # time and sends, and an alert acknowledged meanwhile sends nothing.
        claimed = db.session.execute(update(Alert).where(Alert.id == alert_id, *due)
                                     .values(last_emailed_at=now)
                                     .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if not claimed:
            continue
        alert = db.session.get(Alert, alert_id)
        if not still_open(alert):
            continue  # fresh evidence closed it: no mail about something already fixed
        went, tried = _email(alert)
        if tried and not went:
            # The mail server refused or was away: try again in a while rather than in a day.
            alert.last_emailed_at = cutoff + RETRY_FAILED_MAIL
        alert.emails_sent += went
        sent += went
        db.session.commit()
    _post_due(now)
    return sent


def still_open(alert):
    """Re-check the alert's shop just before its e-mail goes (LINE asked afresh, at most 3 calls, at most once
    per alert per ALERT_EMAIL_HOURS; our own newest traffic read with it) and say whether the alert is still
    open: an alert that a fix has closed meanwhile ("Use webhook" back on, a message delivered) sends nothing.
    Commits."""
    from ..steps.status import evaluate, triggered_by
    shop = alert.shop
    if shop.channel is not None:
        try:
            with triggered_by("alert_mail"):
                evaluate(shop, force=True)
            db.session.commit()
        except Exception:  # the check itself failed: the alert stands as recorded, and its mail goes
            db.session.rollback()
            log.warning("re-check of shop %s before its alert e-mail failed", shop.slug, exc_info=True)
    db.session.refresh(alert)
    return alert.closed_at is None


def recipients(shop):
    """The owners who can still sign in, and the assigned staff member (each address once)."""
    people = [user for user in shop.owners if user.is_active]
    if shop.assigned_staff is not None and shop.assigned_staff.is_active:
        people.append(shop.assigned_staff)
    seen, unique = set(), []
    for user in people:
        if user.email not in seen:
            seen.add(user.email)
            unique.append(user)
    return unique


def _email(alert):
    """Mail the alert to each recipient in their language; returns (sent, tried)."""
    shop = alert.shop
    sent = tried = 0
    for user in recipients(shop):
        with force_locale(user.locale or current_app.config["BABEL_DEFAULT_LOCALE"]):
            subject, body = _message(alert, shop, staff=user.is_staff)
        tried += 1
        sent += mail.send(user.email, subject, body, kind="alert", shop=shop).error is None
    if tried:
        audit.record("alert.emailed", shop=shop, actor="system", target=alert.reason, recipients=sent)
    return sent, tried


def sentence(alert, shop):
    """What the alert says, in the reader's language: the shop's own state sentence while the alert's reason
    is still the shop's, else the reason's sentence. Pages and mails both use this one."""
    health = shop.health
    if health is not None and health.reason == alert.reason:
        return shop_health.describe(health)
    from ..steps.reasons import describe
    return describe(alert.reason, fix=alert.step)


def _message(alert, shop, staff):
    """The alert e-mail: the subject names the shop and the problem (mails about different troubles differ in
    an inbox), the body says since when, in Taipei time (mails are read where the page's context is missing)."""
    from ..i18n import localtime_zoned
    from ..steps.reasons import headline
    label = shop_health.LABELS.get(alert.state, alert.state)
    subject = _("%(shop)s: %(problem)s (%(state)s)", shop=shop.name, problem=headline(alert.reason), state=label)
    lines = [
        _("The LINE connection of %(shop)s needs you.", shop=shop.name),
        "",
        sentence(alert, shop),
        "",
        _("Since %(time)s; this e-mail was sent at %(now)s.", time=localtime_zoned(alert.opened_at),
          now=localtime_zoned(utcnow())),
        "",
        _("Fix it here: %(url)s", url=fix_url(shop, alert.step)),
    ]
    if staff:
        lines += ["", _("Shop code: %(slug)s. Acknowledge the alert on the shop's page in the console to stop "
                        "these e-mails.", slug=shop.slug)]
    return subject, "\n".join(lines)


def fix_url(shop, step):
    """The page that fixes it, as a full link (mails are read outside the app)."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    if not has_request_context():  # the queue's consumer: build the path as a request would
        with current_app.test_request_context():
            return fix_url(shop, step)
    if step and step != "connected":
        return base + url_for("wizard.step", slug=shop.slug, key=step)
    return base + url_for("wizard.resume_shop", slug=shop.slug)


def _post_due(now):
    """POST each alert that opened or closed since it was last posted (once each way)."""
    url = current_app.config.get("ALERT_WEBHOOK_URL")
    if not url:
        return
    pending = db.session.scalars(db.select(Alert).where(or_(
        Alert.last_posted_at.is_(None),
        Alert.closed_at.is_not(None) & (Alert.closed_at > Alert.last_posted_at)))
        .where(Alert.opened_at >= now - timedelta(days=7))).all()
    for alert in pending:
        claimed = db.session.execute(update(Alert).where(
            Alert.id == alert.id,
            or_(Alert.last_posted_at.is_(None), Alert.last_posted_at == alert.last_posted_at))
            .values(last_posted_at=now).execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if claimed:
            post(url, payload(alert))


def payload(alert):
    shop = alert.shop
    return {"shop": shop.slug, "name": shop.name, "state": alert.state, "reason": alert.reason,
            "status": "closed" if alert.closed_at else "open", "opened_at": iso_utc(alert.opened_at),
            "closed_at": iso_utc(alert.closed_at), "fix_url": fix_url(shop, alert.step)}


POST_MAX_AGE = 300
"""Seconds a receiver should accept a POST's timestamp either side of its own clock (``verify_post``)."""


def signature(body: bytes, timestamp: str, secret: str | None = None) -> str:
    """Hex HMAC-SHA256 of ``timestamp.body`` under ``ALERT_WEBHOOK_SECRET`` (or ``secret``)."""
    if secret is None:
        secret = current_app.config.get("ALERT_WEBHOOK_SECRET") or ""
    return hmac.new(secret.encode(), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_post(secret: str, body: bytes, timestamp: str, signed: str, now: float | None = None,
                max_age: float = POST_MAX_AGE) -> bool:
    """What a receiver of our POSTs checks (README, "Alerts"): the signature over the timestamp and the body,
    and a timestamp within ``max_age`` seconds of its clock. A POST captured and sent again later fails."""
    if not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > max_age:
        return False
    return hmac.compare_digest(signature(body, timestamp, secret), signed or "")


def post(url, data):
    body = json.dumps(data, ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "X-Wizard-Timestamp": timestamp,
        "X-Wizard-Signature": signature(body, timestamp)})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except OSError as exc:  # the chat tool is down: the e-mail still went; say so once in the log
        log.warning("alert post to the staff URL failed: %s", type(exc).__name__)
        return None


def banner(shop):
    """The alert the owner's wizard shows: the newest open one (None when there is none)."""
    alerts = open_alerts(shop)
    return alerts[-1] if alerts else None

