"""One shop's history as its console page (/shops/<slug>/) shows it: the timeline, the traffic per day and the
step history.

It lives beside the watch because it reads what the watch and every evaluation record, as steps/status.py and
steps/health.py write it: the state changes, the live checks with what ran them and what they found
(models.ShopCheck), each change of a wizard step's result (models.StepChange), the audit log (alerts opened,
acknowledged, snoozed and closed are recorded there by alerts.py, with who did it), the deliveries refused for
their signature, and our own webhook traffic. Nothing here asks LINE. Days are the configured time zone's.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import format_datetime, gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import func

from .. import audit, audit_words
from ..extensions import db
from ..models import (Channel, ShopCheck, ShopStateChange, StepChange, WebhookDelivery, WebhookEvent,
                      WebhookRejection, utcnow)
from ..steps import health as shop_health
from ..steps.reasons import headline
from ..steps.state import State
from .board import step_title

TRAFFIC_DAYS = 14
TIMELINE = 80  # the timeline's newest items
STEP_HISTORY = 50  # the step history: the newest changes
# What ran a live check (models.ShopCheck.trigger), as the timeline says it.
TRIGGERS = {
    "watch": _l("the watch"),
    "cli": _l("the command line"),
    "check_now": _l("“Check now”"),
    "owner_page": _l("the owner's wizard page"),
    "staff_page": _l("the wizard, opened by staff"),
    "api": _l("the status API"),
    "evidence": _l("new evidence: LINE's deliveries or refused signatures"),
    "alert_mail": _l("the re-check before an alert e-mail"),
}


def _offset():
    """The configured time zone's offset from UTC now, for grouping by the local day in SQL."""
    zone = ZoneInfo(current_app.config.get("BABEL_DEFAULT_TIMEZONE") or "UTC")
    return datetime.now(zone).utcoffset() or timedelta(0)


def _local_day(column):
    seconds = int(_offset().total_seconds())
    if db.engine.dialect.name == "sqlite":
        return func.date(column, f"{seconds:+d} seconds")
    return func.date(column + timedelta(seconds=seconds))


def traffic(shop, days=TRAFFIC_DAYS, now=None):
    """Deliveries and events per local day over the shop's channels for the last ``days`` days: grouped SQL.
    [(date text YYYY-MM-DD, deliveries, events)], newest first, days without traffic left out."""
    now = now or utcnow()
    start = now - timedelta(days=days)
    channel_ids = db.select(Channel.id).where(Channel.shop_id == shop.id)
    per_day = {}
    for model, index in ((WebhookDelivery, 0), (WebhookEvent, 1)):
        day = _local_day(model.received_at).label("day")
        query = (db.select(day, func.count()).where(model.channel_id.in_(channel_ids), model.received_at >= start)
                 .group_by(day))
        for value, count in db.session.execute(query):
            per_day.setdefault(str(value), [0, 0])[index] = count
    return sorted(((day, d, e) for day, (d, e) in per_day.items()), reverse=True)


# ---- the timeline -------------------------------------------------------------------------------------------

@dataclass
class TimelineItem:
    at: datetime
    kind: str  # state, alert, audit, check
    text: str
    who: str | None = None
    # A run of checks that found the same (collapse_checks): how many, and when the oldest of them ran.
    count: int = 1
    first_at: datetime | None = None
    same: tuple | None = None  # what makes two checks the same, for collapse_checks


def timeline(shop, limit=TIMELINE):
    """State changes, the audit log and the live checks (models.ShopCheck), newest first.

    Every source is read newest first with the same ``limit``, so the merge is exact for the newest ``limit``
    items. Checks are read a few times deeper, since runs of identical checks are collapsed into one item
    before the cut (a healthy shop's watch adds 96 a day). A shop checked only before check history existed
    shows its last check, as it did then."""
    items = []
    changes = db.session.scalars(db.select(ShopStateChange).where(ShopStateChange.shop_id == shop.id)
                                 .order_by(ShopStateChange.at.desc(), ShopStateChange.id.desc()).limit(limit))
    for change in changes:
        items.append(TimelineItem(change.at, "state", _(
            "State: %(state)s (%(reason)s)", state=shop_health.LABELS.get(change.state, change.state),
            reason=headline(change.reason))))
    for entry in audit.for_shop(shop, limit):
        items.append(TimelineItem(entry.at, "audit", audit_words.sentence(entry), audit_words.actor(entry.actor)))
    checks = db.session.scalars(db.select(ShopCheck).where(ShopCheck.shop_id == shop.id)
                                .order_by(ShopCheck.at.desc(), ShopCheck.id.desc()).limit(limit * 5)).all()
    for check in checks:
        items.append(TimelineItem(check.at, "check", _(
            "Live check by %(trigger)s: %(state)s (%(reason)s)", trigger=TRIGGERS.get(check.trigger, check.trigger),
            state=shop_health.LABELS.get(check.state, check.state), reason=headline(check.reason)), check.actor,
            same=(check.trigger, check.actor, check.state, check.reason)))
    items += _refused_runs(shop)
    if not checks and shop.health is not None and shop.health.checked_at:
        items.append(TimelineItem(shop.health.checked_at, "check", _("Last live check against LINE")))
    items.sort(key=lambda item: item.at, reverse=True)
    return collapse_checks(items)[:limit]


def _refused_runs(shop):
    """The deliveries refused for their signature (line/store.count_rejection keeps the newest run per
    channel: how many, from when to when), as one timeline item at the run's first refusal."""
    rows = db.session.execute(db.select(WebhookRejection.streak, WebhookRejection.streak_since,
                                        WebhookRejection.last_at)
                              .join(Channel, Channel.id == WebhookRejection.channel_id)
                              .where(Channel.shop_id == shop.id, WebhookRejection.reason == "bad_signature",
                                     WebhookRejection.streak > 0, WebhookRejection.streak_since.is_not(None)))
    return [TimelineItem(since, "refused", ngettext(
        "%(num)d delivery refused for a wrong signature, the last at %(last)s",
        "%(num)d deliveries refused for a wrong signature, the last at %(last)s", streak,
        last=format_datetime(last_at, "HH:mm:ss"))) for streak, since, last_at in rows]


def collapse_checks(items):
    """Consecutive checks (newest first, nothing else between them) by the same trigger and person that found
    the same state and reason on the same local day become one item with their count: the watch checks a
    healthy shop every 15 minutes, and 96 lines a day saying "healthy" would bury everything else. A check
    that found something else, or anything else that happened, starts a new item; so does a new day, since
    the page groups items by day."""
    offset = _offset()
    out = []
    for item in items:
        last = out[-1] if out else None
        if (item.kind == "check" and item.same is not None and last is not None and last.kind == "check"
                and last.same == item.same and (last.at + offset).date() == (item.at + offset).date()):
            last.count += 1
            last.first_at = item.at
            continue
        out.append(item)
    return out


def by_local_day(items, traffic_rows):
    """The timeline as days, newest first: [(day, (deliveries, events) or None, [items])]."""
    offset = _offset()
    days = {}
    for item in items:
        days.setdefault((item.at + offset).date().isoformat(), []).append(item)
    counts = {day: (deliveries, events) for day, deliveries, events in traffic_rows}
    return [(day, counts.get(day), days.get(day, [])) for day in sorted(set(days) | set(counts), reverse=True)]


def days(shop):
    """The shop page's timeline with its traffic, by local day (``by_local_day``)."""
    return by_local_day(timeline(shop), traffic(shop))


# ---- the step history ---------------------------------------------------------------------------------------

@dataclass
class StepHistoryItem:
    at: datetime
    key: str
    title: str
    state: str
    reason: str | None
    previous_state: str | None
    previous_reason: str | None

    @property
    def label(self):
        return _state_label(self.state)

    @property
    def previous_label(self):
        return _state_label(self.previous_state) if self.previous_state else None

    @property
    def reason_text(self):
        return headline(self.reason)

    @property
    def previous_reason_text(self):
        return headline(self.previous_reason)


def step_history(shop, limit=STEP_HISTORY):
    """The newest ``limit`` changes of the shop's wizard steps (models.StepChange), newest first, titled through
    the registry (a step no longer in it keeps its key) and labelled through the State enum."""
    rows = db.session.scalars(db.select(StepChange).where(StepChange.shop_id == shop.id)
                              .order_by(StepChange.at.desc(), StepChange.id.desc()).limit(limit))
    return [StepHistoryItem(row.at, row.key, step_title(row.key), row.state, row.reason, row.previous_state,
                            row.previous_reason) for row in rows]


def _state_label(value):
    """A stored step state's translated label; a value the enum no longer knows shows as it is."""
    try:
        return State(value).label
    except ValueError:
        return value
