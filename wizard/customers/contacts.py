"""A shop's contacts (its LINE friends, over every channel it ever connected): the one query behind the
contacts page, its CSV export and ``GET /api/v1/shops/<slug>/contacts``.

Search looks in the LINE name, the name given on the form, the mobile number and the e-mail address. What
people type is read as they meant it (NFKC: full-width ０９１２ or ｍｅｉ＠ is plain), and a query that reads as a
phone number is also compared the way numbers are stored (customers/fields.py ``normalise_phone``: 0912-345
678 and +886 912 345 678 find 0912345678). Paging is on the server, newest friend first.

The CSV is UTF-8 with a BOM (Excel in Taiwan reads the Chinese then), its column names in the page's
language, and a cell that starts like a formula (= + - @, a tab or a carriage return) is prefixed with ' so
Excel shows it as text instead of running it.

The advanced search (顯示進階查詢) narrows the list, its count and the CSV with the segment builder's filters
(customers/segments.py, the same as a send plan's audience): with them applied the list holds the friends they
pick, blocked ones never, as a send would reach them.
"""
import csv
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import timezone

from flask_babel import get_timezone, gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import DateTime, func, literal, or_, select, tuple_

from ..extensions import db
from ..models import Channel, Contact
from ..rows import one_page
from . import segments
from .fields import CITIES, GENDERS, normalise_phone

PER_PAGE = 50
MAX_QUERY = 100


class BadRequest(ValueError):
    """A search or page the list cannot show; the message says what is wrong (translated)."""


@dataclass
class ContactFilter:
    q: str = ""
    page: int = 1
    problems: list = field(default_factory=list)
    # The advanced search: asked for (``advanced=1`` or any filter chosen), its clean filters, and a message
    # per refused filter (then none of them narrows the list: what the owner sees is never half of a choice).
    advanced: bool = False
    filters: dict = field(default_factory=dict)
    filter_problems: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args):
        wanted = cls()
        wanted.q = unicodedata.normalize("NFKC", args.get("q") or "").strip()[:MAX_QUERY]
        raw = (args.get("page") or "1").strip()
        if not raw.isdecimal() or int(raw) < 1 or len(raw) > 9:
            wanted.problems.append(_("“%(page)s” is not a page number: pages are numbered from 1.", page=raw[:20]))
        else:
            wanted.page = int(raw)
        wanted.advanced = args.get("advanced") == "1" or any(
            value.strip() for key in segments.KEYS for value in args.getlist(key))
        if wanted.advanced:
            clean, wanted.filter_problems = segments.check(segments.from_args(args))
            if wanted.filter_problems:
                wanted.advanced = False
            else:
                wanted.filters = clean
        return wanted

    def args(self, **changes):
        values = dict(q=self.q, page=self.page)
        if self.advanced:
            values.update(advanced="1", **segments.as_args(self.filters))
        values.update(changes)
        return {key: value for key, value in values.items() if value not in (None, "", [])
                and not (key == "page" and value == 1)}


def _like(text):
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _channel_ids(shop):
    return list(db.session.scalars(select(Channel.id).where(Channel.shop_id == shop.id)))


def _of_shop(shop, ids=None):
    """The shop's contacts, by its channels' ids: with one channel (most shops) ``channel_id = …`` lets the
    database read the page in order from ``ix_contacts_channel_recent`` and stop after 50 rows; a join on
    ``channels.shop_id`` made it sort every contact of the shop first (188 ms a page at 52,000 friends)."""
    ids = _channel_ids(shop) if ids is None else ids
    return select(Contact).where(Contact.channel_id == ids[0] if len(ids) == 1 else Contact.channel_id.in_(ids))


def _filtered(shop, wanted):
    ids = _channel_ids(shop)
    query = _of_shop(shop, ids)
    if wanted.q:
        pattern = _like(wanted.q)
        wheres = [func.lower(Contact.display_name).like(pattern, escape="\\"),
                  func.lower(Contact.customer_name).like(pattern, escape="\\"),
                  func.lower(Contact.email).like(pattern, escape="\\"),
                  Contact.line_user_id == wanted.q]
        phone = normalise_phone(wanted.q)
        if phone and phone.isdecimal() and phone.isascii():
            wheres.append(Contact.phone.like(_like(phone), escape="\\"))
        query = query.where(or_(*wheres))
    if wanted.advanced:
        query = query.where(*segments.conditions(wanted.filters, ids))
    return query


def _ordered(query):
    return query.order_by(func.coalesce(Contact.followed_at, Contact.created_at).desc(), Contact.id.desc())


@dataclass
class ContactPage:
    rows: list
    page: int
    pages: int
    total: int


def list_contacts(shop, wanted, per_page=PER_PAGE):
    """One page of the shop's contacts matching ``wanted``; BadRequest for a page past the last."""
    found, pages = one_page(_ordered(_filtered(shop, wanted)), wanted.page, per_page, BadRequest)
    return ContactPage(found.items, wanted.page, pages, found.total)


def count_contacts(shop, wanted) -> int:
    """How many contacts the list shows for ``wanted`` (all its pages): the advanced search's live count."""
    return db.session.scalar(_filtered(shop, wanted).with_only_columns(func.count()).order_by(None))


def count_text(total, wanted):
    """The count as the page says it: with the advanced search, who it leaves out always."""
    if wanted.advanced:
        return ngettext("%(num)d contact matches (blocked ones are always left out)",
                        "%(num)d contacts match (blocked ones are always left out)", total)
    return ngettext("%(num)d contact", "%(num)d contacts", total)


def contact_of_shop(shop, contact_id):
    """The shop's contact with this id, or None (another shop's contact is None too)."""
    return db.session.scalar(_of_shop(shop).where(Contact.id == contact_id))


def name_of(contact):
    """The name the customer gave on the form, else the one LINE shows."""
    return contact.customer_name or contact.display_name


def as_json(contact):
    return {"line_user_id": contact.line_user_id, "name": name_of(contact), "phone": contact.phone,
            "email": contact.email, "blocked": contact.blocked, "form_filled": contact.form_filled_at is not None,
            "marketing_consent": bool(contact.marketing_consent)}


# ---- CSV ---------------------------------------------------------------------------------------------------

class _Words:
    """What the CSV's cells say, translated once per export: a gettext or a time zone lookup costs tens of
    microseconds through Flask-Babel's context, and 50,000 rows asked for several each."""

    def __init__(self):
        self.yes, self.no = _("Yes"), _("No")
        self.zone = get_timezone()
        self.genders = {key: str(value) for key, value in GENDERS.items()}
        self.cities = {key: str(value) for key, value in CITIES.items()}

    def yes_no(self, value):
        return self.yes if value else self.no

    def time(self, value):
        """Naive UTC as the shop's local time, yyyy-MM-dd HH:mm (a pattern without words)."""
        if not value:
            return ""
        return value.replace(tzinfo=timezone.utc).astimezone(self.zone).strftime("%Y-%m-%d %H:%M")


CSV_COLUMNS = [
    (_l("LINE user ID"), lambda c, w: c.line_user_id),
    (_l("LINE name"), lambda c, w: c.display_name),
    (_l("Name"), lambda c, w: c.customer_name),
    (_l("Mobile phone"), lambda c, w: excel_phone(c.phone)),
    (_l("E-mail"), lambda c, w: c.email),
    (_l("Birthday"), lambda c, w: c.birthday.isoformat() if c.birthday else ""),
    (_l("Gender"), lambda c, w: w.genders.get(c.gender, c.gender) if c.gender else ""),
    (_l("City or county"), lambda c, w: w.cities.get(c.city, c.city) if c.city else ""),
    (_l("Friend since"), lambda c, w: w.time(c.followed_at)),
    (_l("Blocked the account"), lambda c, w: w.yes_no(c.blocked_at is not None)),
    (_l("Form filled in"), lambda c, w: w.time(c.form_filled_at) if c.form_filled_at else w.yes_no(False)),
    (_l("Marketing consent"), lambda c, w: w.yes_no(c.marketing_consent)),
]


def excel_phone(phone):
    """A Taiwanese mobile number as people write it, 0912-345-678: Excel reads a bare 0912345678 in a CSV as
    the number 912345678 and drops the leading zero, but keeps a number with dashes as the text it is. (The API
    gives the plain digits.)"""
    if phone and len(phone) == 10 and phone.isdigit():
        return f"{phone[:4]}-{phone[4:7]}-{phone[7:]}"
    return phone


def cell(value):
    if value is None:
        return ""
    value = str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


CSV_BATCH = 1000


def csv_chunks(shop, wanted):
    """Every contact ``wanted`` selects, as the CSV's text in pieces (BOM first; times in the shop's time zone):
    a generator, so the response streams the file while it is read, in memory a batch at a time, instead of
    the request building all of it first (9.1 s at 52,000 friends, past gunicorn's 30 s near 170,000).

    Read by keyset (the page's order, ``ix_contacts_channel_recent``), a batch per query: no query or cursor
    stays open while the client reads, so a slow download never holds a transaction open. The query is built
    here, before the response starts: the generator runs after the view has returned."""
    recent = func.coalesce(Contact.followed_at, Contact.created_at)
    # Plain rows (the table's columns), not ORM objects: nothing to track or forget, a batch at a time.
    columns = [column for column in Contact.__table__.c if column.name != "form_token_encrypted"]
    base = _ordered(_filtered(shop, wanted)).with_only_columns(*columns, recent.label("recent"))
    return _csv_batches(base, recent, _Words())


def _csv_batches(base, recent, words):
    out = io.StringIO()
    writer = csv.writer(out)
    out.write("\ufeff")
    writer.writerow([str(label) for label, _read in CSV_COLUMNS])
    yield out.getvalue()
    after = None
    while True:
        query = base
        if after is not None:
            # A row-value comparison, which both databases read as one range of the index.
            query = query.where(tuple_(recent, Contact.id) < tuple_(literal(after[0], DateTime()), after[1]))
        rows = db.session.execute(query.limit(CSV_BATCH)).all()
        if not rows:
            db.session.commit()
            return
        db.session.commit()  # the batch's read transaction ends before it goes out
        out.seek(0)
        out.truncate()
        for row in rows:
            writer.writerow([cell(read(row, words)) for _label, read in CSV_COLUMNS])
        after = (rows[-1].recent, rows[-1].id)
        yield out.getvalue()


def csv_text(shop, wanted):
    """The whole CSV as one text (the API and tests); the page streams ``csv_chunks``."""
    return "".join(csv_chunks(shop, wanted))
