"""Audiences: which of a channel's friends a set of filters picks, the one segment builder behind the contacts
list's advanced search (顯示進階查詢), the audience count API and a send plan's audience.

The filters are the API's keys exactly (issue 16), as JSON values:

    city                 list of codes as stored (customers/fields.py CITIES: "TPE", "NWT" …)
    gender               list (customers/fields.py GENDERS: "female", "male", "other", "undisclosed")
    birthday_month       list of months 1-12
    age_min, age_max     whole years, as old as the customer is today in Taipei
    form_filled          true: filled in the customer data form; false: not (yet)
    friend_since_from,   dates (2026-03-01) from 1900 to 2100, Taipei days, both ends included
    friend_since_to
    messaged_within_days the customer's last message to us came within these many days (24 hours each)

``check`` reads what a caller sent into clean filters (the same keys, only those that narrow anything) and a
message per key it refuses, in the current language; ``matching`` is the Select of the ids it picks and
``count`` their number. Blocked friends are never picked, whatever the filters: LINE delivers nothing to them,
and an audience that counted them would promise a reach the send cannot have. No filter at all is every
friend.

Ages follow Taiwan's Civil Code (Art. 121, 124): a year of age ends the day before the birthday's date, or, for
someone born on 29 February in a year without one, at the end of February: they are a year older on 1 March.
Every condition is one SQL expression on the contact's row (the last message: one set of ids read from an
index of the messages), so the database counts 100,000 friends without the rows leaving it
(tests/bench/segments.py).

Saved segments (``Segment``) keep clean filters under a name, unique per shop.
"""
import unicodedata
from datetime import date, datetime, time, timedelta, timezone

from flask_babel import gettext as _
from sqlalchemy import extract, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from ..extensions import db
from ..i18n import zone
from ..models import Contact, Message, Segment, utcnow
from .fields import CITIES, GENDERS

KEYS = ("city", "gender", "birthday_month", "age_min", "age_max", "form_filled", "friend_since_from",
        "friend_since_to", "messaged_within_days")
LIST_KEYS = ("city", "gender", "birthday_month")
OLDEST_AGE = 150
MOST_DAYS = 3650
NAME_LENGTH = 60
# The dates a filter may name (friend since): anything else is a typing mistake.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2100, 12, 31)


class BadFilters(ValueError):
    """Filters ``check`` refused; ``problems`` holds its message per key."""

    def __init__(self, problems):
        super().__init__(" ".join(str(message) for message in problems.values()))
        self.problems = problems


# ---- reading filters ---------------------------------------------------------------------------------------

def _whole(value):
    """An int from JSON (never a bool, which Python counts as one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _date(value):
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(unicodedata.normalize("NFKC", value).strip())
    except ValueError:
        return None


def _in_range(day):
    """A date the filters take: 1900-2100 (beyond, a typing mistake, and 0001-01-01 or 9999-12-31 overflow
    when the day is turned into UTC times)."""
    return FIRST_DAY <= day <= LAST_DAY


def _shown(value):
    """A refused value as a message quotes it: short, whatever was sent."""
    return str(value)[:20]


def _choices(key, value, allowed, problems, clean):
    if not isinstance(value, list):
        problems[key] = _("Give “%(key)s” as a list of choices, like [\"%(example)s\"].", key=key,
                          example=next(iter(allowed)))
        return
    wrong = [item for item in value if not isinstance(item, str) or item not in allowed]
    if wrong:
        problems[key] = (_("“%(value)s” is not a city or county: choose them from the list (codes such as TPE "
                           "for Taipei City).", value=_shown(wrong[0])) if key == "city" else
                         _("“%(value)s” is not a gender: choose female, male, other or undisclosed.",
                           value=_shown(wrong[0])))
    elif value:
        clean[key] = [code for code in allowed if code in value]  # the list's own order, each once


def check(filters):
    """``(clean, problems)``: the filters as ``matching`` reads them and a message per refused key (in the
    current language). A key with nothing chosen (null, [], "") narrows nothing and is left out of ``clean``.
    Only keys without a problem are in ``clean``; a caller with any problem should change nothing."""
    if not isinstance(filters, dict):
        return {}, {"filters": _("The filters must be an object of filter names and values.")}
    clean, problems = {}, {}
    for key in filters:
        if key not in KEYS:
            problems[str(key)[:40]] = _("“%(key)s” is not a filter. The filters are: %(keys)s.",
                                        key=_shown(key), keys=", ".join(KEYS))
    given = {key: value for key, value in filters.items() if key in KEYS and value not in (None, "", [])}
    if "city" in given:
        _choices("city", given["city"], CITIES, problems, clean)
    if "gender" in given:
        _choices("gender", given["gender"], GENDERS, problems, clean)
    if "birthday_month" in given:
        months = given["birthday_month"]
        if not isinstance(months, list):
            problems["birthday_month"] = _("Give the birthday months as a list of numbers from 1 to 12.")
        else:
            wrong = [m for m in months if _whole(m) is None or not 1 <= m <= 12]
            if wrong:
                problems["birthday_month"] = _("“%(value)s” is not a month: months are numbers from 1 to 12.",
                                               value=_shown(wrong[0]))
            else:
                clean["birthday_month"] = sorted(set(months))
    for key in ("age_min", "age_max"):
        if key in given:
            age = _whole(given[key])
            if age is None or not 0 <= age <= OLDEST_AGE:
                problems[key] = (_("The youngest age must be a whole number of years from 0 to %(most)d.",
                                   most=OLDEST_AGE) if key == "age_min" else
                                 _("The oldest age must be a whole number of years from 0 to %(most)d.",
                                   most=OLDEST_AGE))
            else:
                clean[key] = age
    if clean.get("age_min", 0) > clean.get("age_max", OLDEST_AGE):
        problems["age_max"] = _("The oldest age (%(oldest)d) is below the youngest (%(youngest)d).",
                                oldest=clean.pop("age_max"), youngest=clean["age_min"])
    if "form_filled" in given:
        if isinstance(given["form_filled"], bool):
            clean["form_filled"] = given["form_filled"]
        else:
            problems["form_filled"] = _("“Form filled in” must be true or false.")
    for key in ("friend_since_from", "friend_since_to"):
        if key in given:
            day = _date(given[key])
            if day is None:
                problems[key] = _("“%(value)s” is not a date: write it as 2026-03-01.", value=_shown(given[key]))
            elif not _in_range(day):
                problems[key] = _("“%(value)s” is out of range: choose a date from %(first)s to %(last)s.",
                                  value=_shown(given[key]), first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat())
            else:
                clean[key] = day.isoformat()
    if clean.get("friend_since_from", "") > clean.get("friend_since_to", "9999"):
        problems["friend_since_to"] = _("The friend-since range ends (%(end)s) before it starts (%(start)s).",
                                        end=clean.pop("friend_since_to"), start=clean["friend_since_from"])
    if "messaged_within_days" in given:
        days = _whole(given["messaged_within_days"])
        if days is None or not 1 <= days <= MOST_DAYS:
            problems["messaged_within_days"] = _("The days since the last message must be a whole number from 1 "
                                                 "to %(most)d.", most=MOST_DAYS)
        else:
            clean["messaged_within_days"] = days
    return clean, problems


# ---- the page's form ---------------------------------------------------------------------------------------

def from_args(args):
    """The filters as the builder's form sends them (query or form fields named as the keys; several values
    for a list; form_filled "yes"/"no"), in the API's shape for ``check``: a number that does not read as one
    stays the text it was, so ``check`` names it."""
    filters = {}
    for key in LIST_KEYS:
        values = [value.strip() for value in args.getlist(key) if value.strip()]
        if key == "birthday_month":
            values = [_number(value) for value in values]
        if values:
            filters[key] = values
    for key in ("age_min", "age_max", "messaged_within_days"):
        value = (args.get(key) or "").strip()
        if value:
            filters[key] = _number(value)
    form_filled = (args.get("form_filled") or "").strip()
    if form_filled:
        filters["form_filled"] = {"yes": True, "no": False}.get(form_filled, form_filled)
    for key in ("friend_since_from", "friend_since_to"):
        value = (args.get(key) or "").strip()
        if value:
            filters[key] = value
    return filters


def _number(text):
    plain = unicodedata.normalize("NFKC", text).strip()
    return int(plain) if plain.isdecimal() and plain.isascii() and len(plain) < 10 else text


def as_args(clean):
    """Clean filters as the builder's form fields (the inverse of ``from_args``): for links and hidden fields."""
    args = {}
    for key, value in clean.items():
        if key == "form_filled":
            args[key] = "yes" if value else "no"
        else:
            args[key] = value
    return args


def form_values(clean):
    """Clean filters as the values the builder's fields show (a MultiDict, like ``request.args``)."""
    values = MultiDict()
    for key, value in as_args(clean).items():
        for item in value if isinstance(value, list) else [value]:
            values.add(key, str(item))
    return values


def codes(clean):
    """Clean filters as one short line of codes, for the audit log: ``city=TPE,NWT; form_filled=yes``."""
    return "; ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                     for key, value in as_args(clean).items()) or None


def choices():
    """What the builder's lists offer, in the current language: cities, genders and the months' names."""
    from babel.dates import get_month_names
    from flask_babel import get_locale
    months = get_month_names("wide", locale=get_locale() or "en")
    return {"cities": {code: str(label) for code, label in CITIES.items()},
            "genders": {code: str(label) for code, label in GENDERS.items()},
            "months": {number: months[number] for number in range(1, 13)}}


# ---- who matches -------------------------------------------------------------------------------------------

def today_in_taipei(now=None):
    """The date in Taipei (the configured zone) at ``now`` (naive UTC as stored, or aware; default: now)."""
    now = now or utcnow()
    aware = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    return aware.astimezone(zone()).date()


def born_by(today, age):
    """The latest birthday of someone who is ``age`` or older on ``today``: the same date ``age`` years back,
    28 February for 29 February in a year without one (those born on the 29th are older on 1 March)."""
    year = today.year - age
    try:
        return today.replace(year=year)
    except ValueError:  # today is 29 February and that year had none
        return date(year, 2, 28)


def _utc_start_of(day):
    """The start of a Taipei day as naive UTC, how times are stored."""
    return datetime.combine(day, time(), zone()).astimezone(timezone.utc).replace(tzinfo=None)


def friend_since():
    """When the contact became a friend: the follow, else when we first heard of them (the contacts list's
    order, read from ``ix_contacts_channel_recent``)."""
    return func.coalesce(Contact.followed_at, Contact.created_at)


def conditions(clean, channels, now=None):
    """The WHERE conditions of clean filters on ``contacts`` of the channels with these ids (blocked friends
    always left out)."""
    now = now or utcnow()
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    wheres = [Contact.blocked_at.is_(None)]
    if clean.get("city"):
        wheres.append(Contact.city.in_(clean["city"]))
    if clean.get("gender"):
        wheres.append(Contact.gender.in_(clean["gender"]))
    if clean.get("birthday_month"):
        wheres.append(extract("month", Contact.birthday).in_(clean["birthday_month"]))
    today = today_in_taipei(now)
    if "age_min" in clean:
        wheres.append(Contact.birthday <= born_by(today, clean["age_min"]))
    if "age_max" in clean:
        # Not yet age_max + 1: born after the last birthday that would make them that old.
        wheres.append(Contact.birthday > born_by(today, clean["age_max"] + 1))
    if "form_filled" in clean:
        wheres.append(Contact.form_filled_at.isnot(None) if clean["form_filled"] else Contact.form_filled_at.is_(None))
    if "friend_since_from" in clean:
        wheres.append(friend_since() >= _utc_start_of(date.fromisoformat(clean["friend_since_from"])))
    if "friend_since_to" in clean:
        end = date.fromisoformat(clean["friend_since_to"]) + timedelta(days=1)
        wheres.append(friend_since() < _utc_start_of(end))
    if "messaged_within_days" in clean:
        since = now - timedelta(days=clean["messaged_within_days"])
        # The set of those who wrote, read from ``ix_messages_from_customer`` alone (a range of it), then
        # looked up: an EXISTS per contact read each one's messages, 0.7 s for 100,000 friends on SQLite.
        wrote = select(Message.contact_id).where(Message.channel_id.in_(channels), Message.direction == "in",
                                                 Message.sent_at >= since)
        wheres.append(Contact.id.in_(wrote))
    return wheres


def _clean_or_refuse(filters):
    clean, problems = check(filters or {})
    if problems:
        raise BadFilters(problems)
    return clean


def matching(channel_id, filters, now=None):
    """The Select of the ids of ``channel_id``'s contacts the filters pick (blocked never; every friend for no
    filters). Raw filters are checked first: ``BadFilters`` with the problems when any is refused."""
    return select(Contact.id).where(Contact.channel_id == channel_id,
                                    *conditions(_clean_or_refuse(filters), [channel_id], now))


def count(channel_id, filters, now=None) -> int:
    """How many contacts ``matching`` picks, counted by the database."""
    clean = _clean_or_refuse(filters)
    return db.session.scalar(select(func.count()).select_from(Contact)
                             .where(Contact.channel_id == channel_id, *conditions(clean, [channel_id], now)))


# ---- saved segments ----------------------------------------------------------------------------------------

def saved(shop):
    """The shop's saved segments, by name."""
    return list(db.session.scalars(select(Segment).where(Segment.shop_id == shop.id).order_by(Segment.name)))


def saved_one(shop, segment_id):
    """The shop's segment with this id, or None (another shop's is None too)."""
    return db.session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.id == segment_id))


def _name_problem(shop, name, segment=None):
    if not name:
        return _("Give the segment a name.")
    if len(name) > NAME_LENGTH:
        return _("A segment's name can have at most %(most)d characters.", most=NAME_LENGTH)
    same = db.session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.name == name))
    if same is not None and same is not segment:
        return _("There is a segment named “%(name)s” already: choose another name.", name=name)
    return None


def _plain_name(name):
    return " ".join(unicodedata.normalize("NFKC", name or "").split())


def save(shop, name, filters):
    """``(segment, problems)``: the filters saved under a new name (the caller commits); nothing is added when
    the name or any filter is refused (``problems`` by key: "name" or the filter's)."""
    name = _plain_name(name)
    clean, problems = check(filters)
    refused = _name_problem(shop, name)
    if refused:
        problems["name"] = refused
    if problems:
        return None, problems
    segment = Segment(shop_id=shop.id, name=name, filters=clean)
    try:
        with db.session.begin_nested():
            db.session.add(segment)
    except IntegrityError:  # the same name saved a moment ago by someone else
        return None, {"name": _("There is a segment named “%(name)s” already: choose another name.", name=name)}
    return segment, {}


def rename(segment, shop, name):
    """A problem message, or None when the segment now has ``name`` (the caller commits)."""
    name = _plain_name(name)
    refused = _name_problem(shop, name, segment)
    if refused:
        return refused
    segment.name = name
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        db.session.refresh(segment)
        return _("There is a segment named “%(name)s” already: choose another name.", name=name)
    return None


def delete(segment):
    db.session.delete(segment)
