"""The staff console's board: every shop's recorded state, filtered, sorted, paged and counted, for the list on
/shops/, its CSV export and ``GET /api/v1/shops``.

It lives beside the watch because it reads what the watch keeps (and what every evaluation records through
steps/health.py): the recorded state of each shop (models.ShopHealth), never a fresh one. Listing 10,000 shops
must not call LINE once, so a page is one filtered, sorted query with its count (``db.paginate``), then grouped
queries for its own 50 shops (friends and blocks, owners, staff). Only "check now" asks LINE, through drift.py.

The list's words and orders (page size, the severity order, the sorts, the CSV's columns) are here too, so the
pages (views/shops.py) and the API (views/api.py) import this module and it imports no view.
"""
import csv
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import and_, case, func, literal, or_
from sqlalchemy.orm import aliased

from ..extensions import db
from ..i18n import localtime, zone_name
from ..models import Channel, Contact, Invitation, Shop, ShopHealth, User, iso_utc, utcnow
from ..rows import one_page
from ..steps import health as shop_health
from ..steps.reasons import headline
from ..steps.registry import CONNECTED_KEY, registry

PER_PAGE = 50
STUCK_AFTER = timedelta(days=1)
MAX_QUERY = 100
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


# ---- the filter ---------------------------------------------------------------------------------------------

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


# ---- the queries --------------------------------------------------------------------------------------------

def _state():
    return func.coalesce(ShopHealth.state, literal(shop_health.ONBOARDING))


def _since():
    return func.coalesce(ShopHealth.since, Shop.created_at)


def _like(text):
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def friend_counts():
    """Per shop, over every channel it ever had: friends (following now) and blocks. Grouped, all shops."""
    return (db.select(Channel.shop_id.label("shop_id"),
                      func.count(Contact.id).filter(Contact.blocked_at.is_(None)).label("friends"),
                      func.count(Contact.blocked_at).label("blocks"))
            .join(Contact, Contact.channel_id == Channel.id).group_by(Channel.shop_id))


def friends_and_blocks(shop):
    """(friends, blocks) of one shop, over every channel it ever had."""
    row = db.session.execute(friend_counts().where(Channel.shop_id == shop.id)).first()
    return (row[1], row[2]) if row else (0, 0)


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


def _friends_of_each():
    """A shop's friends over every channel it ever had, as a subquery correlated to the list's shop: only in
    the ORDER BY, so the page's count (``db.paginate`` drops the order) does not compute it."""
    channel = aliased(Channel)
    return (db.select(func.count(Contact.id)).join(channel, channel.id == Contact.channel_id)
            .where(channel.shop_id == Shop.id, Contact.blocked_at.is_(None)).correlate(Shop).scalar_subquery())


def _ordered(query, sort):
    if sort == "friends":
        return query.order_by(_friends_of_each().desc(), Shop.name, Shop.id)
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


# ---- a row of the list --------------------------------------------------------------------------------------

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


def said(health):
    """A recorded state in one line: "Broken: …" (the verdict "check now" flashes)."""
    return _("%(state)s: %(reason)s", state=shop_health.LABELS.get(health.state, health.state),
             reason=staff_sentence(health))


def step_title(key):
    """"Step 3: …" for a step's key; a key the registry no longer has shows as it is."""
    if not key:
        return ""
    steps = registry()
    if key != CONNECTED_KEY and key not in steps:
        return key
    return _("Step %(n)d: %(title)s", n=steps.number(key), title=steps.title(key))


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
    counts = friend_counts()
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


# ---- a page, every shop, the counts -------------------------------------------------------------------------

@dataclass
class ShopPage:
    rows: list
    page: int
    pages: int
    total: int


def list_shops(wanted, user_id=None, per_page=PER_PAGE):
    """One page of the filtered, sorted list. Raises BadListRequest for a page past the last."""
    found, pages = one_page(_ordered(_filtered(wanted, user_id), wanted.sort), wanted.page, per_page,
                            BadListRequest)
    ids = found.items  # the page's shop ids, in the list's order
    if not ids:
        return ShopPage([], wanted.page, pages, found.total)
    results = {r.id: r for r in db.session.execute(_row_query().where(Shop.id.in_(ids)))}
    rows = _fill_people_and_counts(_build(results[i] for i in ids if i in results))
    return ShopPage(rows, wanted.page, pages, found.total)


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


# ---- the CSV ------------------------------------------------------------------------------------------------

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


def csv_text(wanted, user_id=None):
    """Every shop the filter selects as CSV text, starting with a BOM (Excel in Taiwan reads the Chinese then)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([str(label) % {"zone": zone_name()} for _key, label in CSV_COLUMNS])
    for row in all_shops(wanted, user_id):
        values = {"sentence": row.sentence, "label": row.label, "step_title": step_title(row.step)}
        writer.writerow([_cell(values[key] if key in values else getattr(row, key)) for key, _label in CSV_COLUMNS])
    return out.getvalue()
