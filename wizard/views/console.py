"""The staff console: every shop at a glance on /shops/ (``shops.index`` renders it), one shop's page on
/shops/<slug>/, the CSV export, "check now" for one shop or many, reassigning staff, acknowledging and
snoozing alerts. The list API (``GET /api/v1/shops``) reads the same query.

Lists read the recorded state (models.ShopHealth) through SQL joins and never evaluate a shop: listing 10,000
shops must not call LINE once. A page is one filtered, sorted query with its count, then grouped queries for
its own 50 shops (friends and blocks, owners, staff). Only "check now" asks LINE, through watch/drift.py.

A shop's page reads its histories as steps/status.py writes them: the step history (each change of a wizard
step's result) and, merged into the timeline, every live check with what ran it and what it found.
"""
import csv
import io
import math
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   url_for)
from flask_babel import format_datetime, gettext as _, lazy_gettext as _l, ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import and_, case, func, literal, or_

from .. import audit, audit_words
from ..extensions import db
from ..i18n import localtime, zone_name
from . import checked_post, staff_only
from ..models import (Alert, Channel, Contact, Invitation, Shop, ShopCheck, ShopHealth, ShopStateChange,
                      StepChange, User, WebhookDelivery, WebhookEvent, WebhookRejection, iso_utc, utcnow)
from ..steps import health as shop_health
from ..steps.reasons import headline
from ..steps.registry import CONNECTED_KEY, registry
from ..steps.state import State
from ..steps.status import stored_status, triggered_by

bp = Blueprint("console", __name__, url_prefix="/shops")

PER_PAGE = 50
CHECK_AT_ONCE = 50  # "check now" asks LINE for each shop while the request waits
STUCK_AFTER = timedelta(days=1)
MAX_QUERY = 100
TRAFFIC_DAYS = 14
STEP_HISTORY = 50  # the shop page's step history: the newest changes
SNOOZE_HOURS = (1, 4, 24, 72)
# The worst first: the default order puts what needs a person at the top, longest waiting first.
SEVERITY = {shop_health.BROKEN: 0, shop_health.DORMANT: 1, shop_health.ATTENTION: 2,
            shop_health.ONBOARDING: 3, shop_health.HEALTHY: 4}
SORTS = {
    "state": _l("Worst first"),
    "since": _l("Longest in its state"),
    "name": _l("Shop name"),
    "checked": _l("Checked longest ago"),
    "last_event": _l("Quiet longest"),
    "friends": _l("Most friends"),
    "newest": _l("Newest shop"),
}
# Actions the console records, beside those of the people pages (views/people.py ACTIONS).
ACTIONS = {
    "shop.assigned": _l("Staff assigned"),
    "shop.checked": _l("Checked now by staff"),
    "alert.opened": _l("Alert opened"),
    "alert.acknowledged": _l("Alert acknowledged"),
    "alert.snoozed": _l("Alert snoozed"),
    "alert.closed": _l("Alert closed"),
}
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


staff_only(bp)


# ---- the list: filters, sort, paging ----------------------------------------------------------------------

class BadListRequest(ValueError):
    """A filter or page the list cannot show; the message says what is wrong (translated)."""


@dataclass
class ShopFilter:
    state: str = ""
    stuck: bool = False
    never_started: bool = False
    mine: bool = False
    q: str = ""
    sort: str = "state"
    page: int = 1
    problems: list = field(default_factory=list)

    @classmethod
    def from_args(cls, args, *, allow=("state", "stuck", "never_started", "mine", "q", "sort", "page")):
        """The filter a query string asks for; each wrong value is a problem (the default is used instead)."""
        wanted = cls()
        if "state" in allow:
            state = (args.get("state") or "").strip().lower()
            if state and state not in shop_health.STATES:
                wanted.problems.append(_("There is no state “%(state)s”: choose one of %(states)s.",
                                         state=state[:40], states=", ".join(shop_health.STATES)))
            else:
                wanted.state = state
        for flag in ("stuck", "never_started", "mine"):
            if flag in allow:
                setattr(wanted, flag, (args.get(flag) or "") in ("1", "on", "y", "yes", "true"))
        if "q" in allow:
            wanted.q = unicodedata.normalize("NFKC", args.get("q") or "").strip()[:MAX_QUERY]
        if "sort" in allow:
            sort = args.get("sort") or "state"
            if sort not in SORTS:
                wanted.problems.append(_("The list cannot be sorted by “%(sort)s”.", sort=sort[:40]))
            else:
                wanted.sort = sort
        if "page" in allow:
            raw = (args.get("page") or "1").strip()
            if not raw.isdecimal() or int(raw) < 1 or len(raw) > 9:
                wanted.problems.append(_("“%(page)s” is not a page number: pages are numbered from 1.",
                                         page=raw[:20]))
            else:
                wanted.page = int(raw)
        return wanted

    def args(self, **changes):
        """The query string arguments that show this list again (with ``changes``), defaults left out."""
        values = dict(state=self.state, stuck=self.stuck, never_started=self.never_started, mine=self.mine,
                      q=self.q, sort=self.sort, page=self.page)
        values.update(changes)
        out = {}
        for key, value in values.items():
            if key == "sort" and value == "state" or key == "page" and value == 1:
                continue
            if value is True:
                out[key] = "1"
            elif value:
                out[key] = value
        return out

    @property
    def narrowed(self):
        return bool(self.state or self.stuck or self.never_started or self.mine or self.q)


def _state():
    return func.coalesce(ShopHealth.state, literal(shop_health.ONBOARDING))


def _since():
    return func.coalesce(ShopHealth.since, Shop.created_at)


def _like(text):
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _friend_counts():
    """Per shop, over every channel it ever had: friends (following now) and blocks. Grouped, all shops."""
    return (db.select(Channel.shop_id.label("shop_id"),
                      func.count(Contact.id).filter(Contact.blocked_at.is_(None)).label("friends"),
                      func.count(Contact.blocked_at).label("blocks"))
            .join(Contact, Contact.channel_id == Channel.id).group_by(Channel.shop_id))


def _filtered(wanted, user_id=None, now=None):
    """SELECT … FROM shops ⟕ shop_health ⟕ the connected channel, WHERE the filter; no order, no paging."""
    now = now or utcnow()
    query = (db.select(Shop.id).select_from(Shop)
             .outerjoin(ShopHealth, ShopHealth.shop_id == Shop.id)
             .outerjoin(Channel, and_(Channel.shop_id == Shop.id, Channel.disconnected_at.is_(None))))
    if wanted.state:
        query = query.where(_state() == wanted.state)
    if wanted.stuck:
        query = query.where(_state() != shop_health.HEALTHY, _since() < now - STUCK_AFTER)
    if wanted.never_started:
        # Nobody has done the first step: no state recorded yet, or still on step 1, and no channel ever.
        first = registry().steps[0].key if len(registry()) else CONNECTED_KEY
        query = query.where(
            or_(ShopHealth.shop_id.is_(None),
                and_(ShopHealth.state == shop_health.ONBOARDING, ShopHealth.step == first)),
            Shop.id.not_in(db.select(Channel.shop_id)))
    if wanted.mine:
        query = query.where(Shop.assigned_staff_id == user_id)
    if wanted.q:
        pattern = _like(wanted.q)
        query = query.where(or_(
            func.lower(Shop.name).like(pattern, escape="\\"),
            Shop.slug.like(pattern, escape="\\"),
            Shop.id.in_(db.select(User.shop_id).where(func.lower(User.email).like(pattern, escape="\\"))),
            Shop.id.in_(db.select(Invitation.shop_id)
                        .where(func.lower(Invitation.email).like(pattern, escape="\\")))))
    return query


def _ordered(query, sort):
    if sort == "friends":
        counts = _friend_counts().subquery()
        query = query.outerjoin(counts, counts.c.shop_id == Shop.id)
        return query.order_by(func.coalesce(counts.c.friends, 0).desc(), Shop.name, Shop.id)
    severity = case(SEVERITY, value=_state(), else_=9)
    order = {
        "state": (severity, _since()),
        "since": (_since(),),
        "name": (),
        "checked": (ShopHealth.checked_at.is_not(None), ShopHealth.checked_at),
        "last_event": (Channel.last_event_at.is_not(None), Channel.last_event_at),
        "newest": (Shop.created_at.desc(),),
    }[sort]
    return query.order_by(*order, Shop.name, Shop.id)


@dataclass
class ShopRow:
    """One shop as the list shows it; ``reason``, ``detail`` and ``step`` make it readable by
    ``health.describe`` like a ShopHealth row."""
    id: int
    slug: str
    name: str
    created_at: datetime
    state: str
    reason: str
    step: str | None
    since: datetime | None
    checked_at: datetime | None
    detail: dict
    last_event_at: datetime | None
    assigned_staff_id: int | None
    recorded: bool
    has_channel: bool = False
    friends: int = 0
    blocks: int = 0
    owners: list = field(default_factory=list)
    staff: str | None = None

    @property
    def label(self):
        return shop_health.LABELS.get(self.state, self.state)

    @property
    def sentence(self):
        return staff_sentence(self)

    @property
    def line_checked_at(self):
        """When LINE was last asked about the shop: without a channel nothing was asked, whatever the
        evaluation's time (the list API keeps ``checked_at`` as recorded)."""
        return self.checked_at if self.has_channel else None

    def as_json(self):
        return {"slug": self.slug, "name": self.name, "state": self.state, "reason": self.reason,
                "since": iso_utc(self.since.replace(microsecond=0)) if self.recorded and self.since else None,
                "fix_step": self.step, "last_event_at": iso_utc(self.last_event_at),
                "checked_at": iso_utc(self.checked_at)}


def staff_sentence(health):
    """What staff read about a recorded state (a ShopHealth or ShopRow). While a shop sets up, the step's own
    sentence speaks to the owner ("tick the box below"): staff read which step the owner is on and what it
    waits for instead. Every other state reads as the owner's page says it."""
    if health.state != shop_health.ONBOARDING:
        return shop_health.describe(health)
    step = health.step
    if not step or step == CONNECTED_KEY or step not in registry():
        return _("The owner has not started the setup yet.") if health.reason == "not_checked" else \
            shop_health.describe(health)
    steps = registry()
    return _("The owner is on step %(n)d of %(total)d (%(title)s): %(what)s.", n=steps.number(step),
             total=steps.page_count, title=steps.title(step), what=headline(health.reason))


def _row_query():
    """The columns a ShopRow is built from (``_build``), over the same joins as ``_filtered``."""
    return (db.select(Shop.id, Shop.slug, Shop.name, Shop.created_at, Shop.assigned_staff_id,
                       ShopHealth.shop_id.label("recorded"), ShopHealth.state, ShopHealth.reason, ShopHealth.step,
                       ShopHealth.since, ShopHealth.checked_at, ShopHealth.detail, Channel.last_event_at,
                       Channel.id.label("channel_id"))
             .select_from(Shop)
             .outerjoin(ShopHealth, ShopHealth.shop_id == Shop.id)
             .outerjoin(Channel, and_(Channel.shop_id == Shop.id, Channel.disconnected_at.is_(None))))


def _build(results):
    rows = []
    for r in results:
        rows.append(ShopRow(
            id=r.id, slug=r.slug, name=r.name, created_at=r.created_at, assigned_staff_id=r.assigned_staff_id,
            recorded=r.recorded is not None, state=r.state or shop_health.ONBOARDING,
            reason=r.reason or "not_checked", step=r.step if r.recorded is not None else None,
            since=r.since if r.recorded is not None else r.created_at,
            checked_at=r.checked_at, has_channel=r.channel_id is not None,
            detail=r.detail or {}, last_event_at=r.last_event_at))
    return rows


def _fill_people_and_counts(rows, all_shops=False):
    """Friends, blocks, owners and staff for ``rows``: three grouped queries, never one per shop."""
    if not rows:
        return rows
    ids = [row.id for row in rows]
    counts = _friend_counts()
    owners = db.select(User.shop_id, User.email).where(User.is_staff.is_(False), User.shop_id.is_not(None))
    if not all_shops:
        counts = counts.where(Channel.shop_id.in_(ids))
        owners = owners.where(User.shop_id.in_(ids))
    by_id = {row.id: row for row in rows}
    for shop_id, friends, blocks in db.session.execute(counts):
        if shop_id in by_id:
            by_id[shop_id].friends, by_id[shop_id].blocks = friends, blocks
    for shop_id, email in db.session.execute(owners.order_by(User.email)):
        if shop_id in by_id:
            by_id[shop_id].owners.append(email)
    staff_ids = {row.assigned_staff_id for row in rows if row.assigned_staff_id}
    if staff_ids:
        emails = dict(db.session.execute(db.select(User.id, User.email).where(User.id.in_(staff_ids))).all())
        for row in rows:
            row.staff = emails.get(row.assigned_staff_id)
    return rows


@dataclass
class ShopPage:
    rows: list
    page: int
    pages: int
    total: int


def list_shops(wanted, user_id=None, per_page=PER_PAGE):
    """One page of the filtered, sorted list. Raises BadListRequest for a page past the last."""
    filtered = _filtered(wanted, user_id)
    total = db.session.scalar(db.select(func.count()).select_from(filtered.subquery()))
    pages = max(1, math.ceil(total / per_page))
    if wanted.page > pages:
        raise BadListRequest(ngettext("There is no page %(page)s: the list has %(num)d page.",
                                      "There is no page %(page)s: the list has %(num)d pages.",
                                      pages, page=wanted.page))
    ordered = _ordered(filtered, wanted.sort).limit(per_page).offset((wanted.page - 1) * per_page)
    ids = [row[0] for row in db.session.execute(ordered)]
    if not ids:
        return ShopPage([], wanted.page, pages, total)
    results = {r.id: r for r in db.session.execute(_row_query().where(Shop.id.in_(ids)))}
    rows = _fill_people_and_counts(_build(results[i] for i in ids if i in results))
    return ShopPage(rows, wanted.page, pages, total)


def all_shops(wanted, user_id=None):
    """Every shop the filter selects, in its order (the CSV export)."""
    filtered = _filtered(wanted, user_id)
    sort = "state" if wanted.sort == "friends" else wanted.sort
    ordered = _ordered(_row_query(), sort).where(Shop.id.in_(filtered))
    rows = _build(db.session.execute(ordered))
    if wanted.sort == "friends":
        _fill_people_and_counts(rows, all_shops=True)
        rows.sort(key=lambda row: (-row.friends, row.name, row.id))
        return rows
    return _fill_people_and_counts(rows, all_shops=True)


def state_counts():
    """How many shops are in each state (a shop with no recorded state yet is setting up)."""
    counts = dict(db.session.execute(db.select(ShopHealth.state, func.count()).group_by(ShopHealth.state)).all())
    unrecorded = db.session.scalar(db.select(func.count(Shop.id)).where(
        Shop.id.not_in(db.select(ShopHealth.shop_id))))
    counts[shop_health.ONBOARDING] = counts.get(shop_health.ONBOARDING, 0) + (unrecorded or 0)
    return [(state, shop_health.LABELS[state], counts.get(state, 0)) for state in shop_health.STATES]


# ---- the console page -------------------------------------------------------------------------------------

def console_page(form, code=200):
    """/shops/ (endpoint ``shops.index``): the list with its filters, and the new-shop ``form``."""
    wanted = ShopFilter.from_args(request.args)
    problems = list(wanted.problems)
    try:
        page = list_shops(wanted, current_user.id)
    except BadListRequest as exc:
        problems.append(str(exc))
        wanted.page = 1
        page = list_shops(wanted, current_user.id)
    if problems and code == 200:
        code = 400
    from .outbox import NEEDS_A_PERSON
    from ..models import Outbox
    attention = db.session.scalar(db.select(func.count(Outbox.id)).where(Outbox.status.in_(NEEDS_A_PERSON)))
    return render_template(
        "shops/index.html", page=page, wanted=wanted, problems=problems, form=form, attention=attention,
        states=state_counts(), sorts=SORTS, steps=registry(), check_form=FlaskForm(), check_at_once=CHECK_AT_ONCE,
        step_title=_step_title, back=request.full_path.rstrip("?"), has_endpoint=_has_endpoint), code


def _has_endpoint(name):
    return name in current_app.view_functions


def _step_title(key):
    if not key:
        return ""
    steps = registry()
    if key != CONNECTED_KEY and key not in steps:
        return key
    return _("Step %(n)d: %(title)s", n=steps.number(key), title=steps.title(key))


# The words people read, each code beside them in its own column for machines (and filters in a sheet);
# times in Taipei time, as on the pages.
CSV_COLUMNS = [
    ("slug", _l("Shop code")), ("name", _l("Shop name")), ("label", _l("State")), ("state", _l("State code")),
    ("sentence", _l("What it means")), ("reason", _l("Reason code")), ("step_title", _l("Step that fixes it")),
    ("step", _l("Step code")), ("since", _l("Since (%(zone)s)")), ("last_event_at", _l("Last event (%(zone)s)")),
    ("line_checked_at", _l("Last checked against LINE (%(zone)s)")),
    ("friends", _l("Friends")), ("blocks", _l("Blocks")), ("owners", _l("Owners")), ("staff", _l("Staff")),
]


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return localtime(value)
    if isinstance(value, list):
        value = " ".join(value)
    value = str(value)
    # A cell starting like a formula is run by Excel: quoted so it is only text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@bp.get("/export.csv")
def export():
    """The filtered list (every page of it) as CSV: UTF-8 with a BOM, so Excel in Taiwan reads the Chinese."""
    wanted = ShopFilter.from_args(request.args, allow=("state", "stuck", "never_started", "mine", "q", "sort"))
    if wanted.problems:
        return Response(" ".join(wanted.problems) + "\n", 400, mimetype="text/plain")
    rows = all_shops(wanted, current_user.id)
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([str(label) % {"zone": zone_name()} for _key, label in CSV_COLUMNS])
    for row in rows:
        values = {"sentence": row.sentence, "label": row.label, "step_title": _step_title(row.step)}
        writer.writerow([_cell(values[key] if key in values else getattr(row, key)) for key, _label in CSV_COLUMNS])
    name = f"shops-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(out.getvalue().encode("utf-8"), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# ---- check now ----------------------------------------------------------------------------------------------

def _back(default):
    """Where to go after a POST: the page it came from, if that is a console page of ours."""
    back = request.form.get("back") or ""
    if back.startswith("/shops/") and not back.startswith("//") and "\\" not in back:
        return back
    return default


def _check(shops):
    from ..watch import drift
    with triggered_by("check_now"):
        rows = drift.check_now(shops)
    for shop in shops:
        audit.record("shop.checked", shop=shop)
    db.session.commit()
    return rows


def _said(health_row):
    return _("%(state)s: %(reason)s", state=shop_health.LABELS.get(health_row.state, health_row.state),
             reason=staff_sentence(health_row))


@bp.post("/check")
def check_many():
    """"Check now" for the shops ticked on the list (at most CHECK_AT_ONCE)."""
    checked_post()
    slugs = list(dict.fromkeys(request.form.getlist("shop")))
    back = _back(url_for("shops.index"))
    if not slugs:
        flash(_("Nothing was checked: tick the shops to check first."), "error")
        return redirect(back)
    if len(slugs) > CHECK_AT_ONCE:
        flash(_("Nothing was checked: at most %(num)d shops can be checked at once, and %(count)d were ticked.",
                num=CHECK_AT_ONCE, count=len(slugs)), "error")
        return redirect(back)
    shops = db.session.scalars(db.select(Shop).where(Shop.slug.in_(slugs)).order_by(Shop.name)).all()
    if not shops:
        flash(_("Nothing was checked: none of those shops exists any more."), "error")
        return redirect(back)
    rows = _check(shops)
    by_state = {}
    for row in rows:
        by_state[row.state] = by_state.get(row.state, 0) + 1
    summary = ", ".join(f"{shop_health.LABELS[state]} {count}" for state, count in sorted(
        by_state.items(), key=lambda item: SEVERITY.get(item[0], 9)))
    flash(ngettext("Checked %(num)d shop just now: %(summary)s.", "Checked %(num)d shops just now: %(summary)s.",
                   len(rows), summary=summary), "success")
    return redirect(back)


def _shop(slug):
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
    if shop is None:
        abort(404)
    return shop


@bp.post("/<slug>/check")
def check_one(slug):
    checked_post()
    shop = _shop(slug)
    rows = _check([shop])
    row = rows[0] if rows else db.session.get(ShopHealth, shop.id)
    flash(_("Checked %(shop)s just now. %(verdict)s", shop=shop.name, verdict=_said(row)), "success")
    return redirect(_back(url_for("console.shop", slug=shop.slug)))


# ---- one shop -----------------------------------------------------------------------------------------------

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


def timeline(shop, limit=80):
    """State changes, the audit log (alerts opened, acknowledged, snoozed and closed are recorded there by
    watch/alerts.py, with who did it) and the live checks (models.ShopCheck), newest first.

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
    return [StepHistoryItem(row.at, row.key, _step_title(row.key), row.state, row.reason, row.previous_state,
                            row.previous_reason) for row in rows]


def _state_label(value):
    """A stored step state's translated label; a value the enum no longer knows shows as it is."""
    try:
        return State(value).label
    except ValueError:
        return value


def _by_local_day(items, traffic_rows):
    """The timeline as days, newest first: [(day, (deliveries, events) or None, [items])]."""
    offset = _offset()
    days = {}
    for item in items:
        days.setdefault((item.at + offset).date().isoformat(), []).append(item)
    counts = {day: (deliveries, events) for day, deliveries, events in traffic_rows}
    return [(day, counts.get(day), days.get(day, [])) for day in sorted(set(days) | set(counts), reverse=True)]


def _staff_choices():
    return db.session.scalars(db.select(User).where(User.is_staff.is_(True), User.deactivated_at.is_(None))
                              .order_by(User.email)).all()


@bp.get("/<slug>/")
def shop(slug):
    shop = _shop(slug)
    status = stored_status(shop)  # as last checked: this page never asks LINE by itself
    from ..watch import alerts as watch_alerts
    open_alerts = watch_alerts.open_alerts(shop)
    pending = db.session.scalars(db.select(Invitation).where(
        Invitation.shop_id == shop.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .order_by(Invitation.created_at.desc()).limit(1)).first()
    owners = [user for user in shop.owners if not user.is_staff]
    days = _by_local_day(timeline(shop), traffic(shop))
    history = step_history(shop)
    friends = db.session.execute(_friend_counts().where(Channel.shop_id == shop.id)).first()
    return render_template(
        "console/shop.html", shop=shop, health=shop.health, status=status, steps=registry(),
        step_title=_step_title, open_alerts=open_alerts, step_history=history, step_history_limit=STEP_HISTORY,
        alert_sentence=lambda alert: watch_alerts.sentence(alert, shop), days=days, owners=owners, pending=pending,
        staff_users=_staff_choices(), form=FlaskForm(), snooze_hours=SNOOZE_HOURS,
        friends=friends[1] if friends else 0, blocks=friends[2] if friends else 0,
        can_invite=_has_endpoint("shops.invite"), has_endpoint=_has_endpoint,
        labels=shop_health.LABELS, describe=staff_sentence, now=utcnow(),
        redelivery_advice=shop.channel is not None and not shop_health.redelivery_known(shop),
        redelivery_step=registry().number("webhook_url"))


@bp.post("/<slug>/assign")
def assign(slug):
    """Give the shop to a staff member (or to nobody); recorded as "shop.assigned"."""
    checked_post()
    shop = _shop(slug)
    raw = (request.form.get("staff") or "").strip()
    staff = None
    if raw:
        staff = db.session.get(User, int(raw)) if raw.isdecimal() and len(raw) < 10 else None
        if staff is None or not staff.is_staff or staff.deactivated_at is not None:
            flash(_("Nothing changed: only an active staff member can look after a shop."), "error")
            return redirect(url_for("console.shop", slug=shop.slug))
    previous = shop.assigned_staff
    if (previous.id if previous else None) == (staff.id if staff else None):
        flash(_("Nothing changed: that is who looks after this shop already."), "info")
        return redirect(url_for("console.shop", slug=shop.slug))
    shop.assigned_staff_id = staff.id if staff else None
    audit.record("shop.assigned", shop=shop, target=staff.email if staff else None,
                 previous=previous.email if previous else None)
    db.session.commit()
    if staff:
        flash(_("%(email)s now looks after %(shop)s.", email=staff.email, shop=shop.name), "success")
    else:
        flash(_("Nobody is assigned to %(shop)s now.", shop=shop.name), "success")
    return redirect(url_for("console.shop", slug=shop.slug))


def _alert(shop, alert_id):
    alert = db.session.get(Alert, alert_id)
    if alert is None or alert.shop_id != shop.id:
        abort(404)
    return alert


@bp.post("/<slug>/alerts/<int:alert_id>/acknowledge")
def acknowledge(slug, alert_id):
    checked_post()
    shop = _shop(slug)
    alert = _alert(shop, alert_id)
    if alert.closed_at is not None:
        flash(_("This alert has closed already: the check passes again."), "info")
    else:
        from ..watch import alerts as watch_alerts
        watch_alerts.acknowledge(alert, current_user._get_current_object())
        db.session.commit()
        flash(_("Alert acknowledged: no more e-mail about it. It stays open until the check passes."), "success")
    return redirect(url_for("console.shop", slug=shop.slug))


@bp.post("/<slug>/alerts/<int:alert_id>/snooze")
def snooze(slug, alert_id):
    checked_post()
    shop = _shop(slug)
    alert = _alert(shop, alert_id)
    raw = request.form.get("hours") or ""
    if not raw.isdecimal() or int(raw) not in SNOOZE_HOURS:
        flash(_("Nothing changed: choose how long to snooze the alert."), "error")
    elif alert.closed_at is not None:
        flash(_("This alert has closed already: the check passes again."), "info")
    else:
        from ..watch import alerts as watch_alerts
        until = utcnow() + timedelta(hours=int(raw))
        watch_alerts.snooze(alert, current_user._get_current_object(), until)
        db.session.commit()
        flash(ngettext("Alert snoozed for %(num)d hour.", "Alert snoozed for %(num)d hours.", int(raw)), "success")
    return redirect(url_for("console.shop", slug=shop.slug))
