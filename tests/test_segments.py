"""The segment builder (customers/segments.py): each filter picks the friends an owner means, in Taipei time
(birthdays, ages, friend-since dates), combinations narrow together, blocked friends are never picked, and
filters it cannot read are refused with a message per key that says what is wrong."""
import secrets
from datetime import date, datetime, timedelta

import pytest
from flask_babel import force_locale

from tests.webhooks import make_channel
from wizard.customers import segments
from wizard.extensions import db
from wizard.models import Contact, Message, Segment, Shop

NOW = datetime(2026, 6, 10, 4, 0)  # naive UTC: 12:00 on 10 June 2026 in Taipei


def add(app, channel_id, name, messages=(), **values):
    """One contact as the worker and the form leave it; ``messages``: (direction, sent_at) pairs."""
    with app.app_context():
        values.setdefault("followed_at", datetime(2026, 1, 5, 2, 0))
        contact = Contact(channel_id=channel_id, line_user_id="U" + secrets.token_hex(16), display_name=name,
                          **values)
        db.session.add(contact)
        db.session.flush()
        for direction, sent_at in messages:
            db.session.add(Message(channel_id=channel_id, contact_id=contact.id, direction=direction, type="text",
                                   text="你好", sent_at=sent_at))
        db.session.commit()
        return contact.id


def picked(app, channel_id, filters, now=NOW):
    """The names ``matching`` picks, checked against ``count``."""
    with app.app_context():
        ids = list(db.session.scalars(segments.matching(channel_id, filters, now=now)))
        names = set(db.session.scalars(db.select(Contact.display_name).where(Contact.id.in_(ids))))
        assert segments.count(channel_id, filters, now=now) == len(ids) == len(names)
        return names


@pytest.fixture
def channel(app, owner):
    """The owner's channel with five friends of all kinds, one of them blocked, and a stranger on another shop's
    channel who would match everything."""
    channel_id = make_channel(app, owner)["id"]
    add(app, channel_id, "美玲", city="TPE", gender="female", birthday=date(1990, 3, 15),
        form_filled_at=datetime(2026, 1, 6), followed_at=datetime(2025, 12, 31, 16, 30),  # 1 Jan, 00:30 Taipei
        messages=[("in", NOW - timedelta(days=2))])
    add(app, channel_id, "大文", city="NWT", gender="male", birthday=date(2001, 12, 1),
        form_filled_at=datetime(2026, 2, 1), followed_at=datetime(2025, 12, 31, 15, 30),  # 31 Dec, 23:30 Taipei
        messages=[("in", NOW - timedelta(days=10)), ("out", NOW - timedelta(hours=1))])
    add(app, channel_id, "小芳", city="TPE", gender="female", birthday=date(2008, 2, 29),
        form_filled_at=datetime(2026, 3, 1), followed_at=datetime(2026, 3, 1, 2, 0),
        messages=[("out", NOW - timedelta(days=1))])
    add(app, channel_id, "路人", followed_at=None, created_at=datetime(2026, 5, 1, 3, 0))
    add(app, channel_id, "封鎖者", city="TPE", gender="female", birthday=date(1990, 3, 20),
        form_filled_at=datetime(2026, 1, 6), blocked_at=datetime(2026, 4, 1),
        messages=[("in", NOW - timedelta(days=1))])
    with app.app_context():
        other = Shop(slug="calm-tea", name="平靜茶坊")
        db.session.add(other)
        db.session.commit()
    other_channel = make_channel(app, "calm-tea")["id"]
    add(app, other_channel, "別家客人", city="TPE", gender="female", birthday=date(1990, 3, 16),
        form_filled_at=datetime(2026, 1, 6), messages=[("in", NOW - timedelta(days=1))])
    return channel_id


def test_no_filter_is_every_friend_of_the_channel_and_never_a_blocked_one(app, channel):
    assert picked(app, channel, {}) == {"美玲", "大文", "小芳", "路人"}
    # A filter the blocked friend matches alone still leaves them out.
    assert picked(app, channel, {"birthday_month": [3], "age_min": 36}) == {"美玲"}


@pytest.mark.parametrize("filters, names", [
    ({"city": ["TPE"]}, {"美玲", "小芳"}),
    ({"city": ["NWT", "KHH"]}, {"大文"}),
    ({"city": ["HUA"]}, set()),
    ({"gender": ["male"]}, {"大文"}),
    ({"gender": ["female", "male"]}, {"美玲", "大文", "小芳"}),
    ({"birthday_month": [2]}, {"小芳"}),  # born on 29 February
    ({"birthday_month": [3, 12]}, {"美玲", "大文"}),
    ({"form_filled": True}, {"美玲", "大文", "小芳"}),
    ({"form_filled": False}, {"路人"}),
    ({"messaged_within_days": 3}, {"美玲"}),  # 小芳 only had our message
    ({"messaged_within_days": 30}, {"美玲", "大文"}),
    ({"age_min": 30}, {"美玲"}),  # no birthday: no age, never picked by one
    ({"age_max": 24}, {"大文", "小芳"}),
    ({"age_min": 18, "age_max": 24}, {"大文", "小芳"}),  # 小芳, born 2008-02-29, is 18 since 1 March 2026
    ({"age_min": 19, "age_max": 24}, {"大文"}),
])
def test_each_filter_picks_what_it_says(app, channel, filters, names):
    assert picked(app, channel, filters) == names


def test_filters_together_narrow_the_audience(app, channel):
    assert picked(app, channel, {"city": ["TPE", "NWT"], "gender": ["female"], "form_filled": True}) == {"美玲", "小芳"}
    assert picked(app, channel, {"city": ["TPE", "NWT"], "gender": ["female"], "form_filled": True,
                                 "messaged_within_days": 7}) == {"美玲"}
    assert picked(app, channel, {"city": ["TPE"], "gender": ["male"]}) == set()
    every = {"city": ["TPE"], "gender": ["female"], "birthday_month": [3], "age_min": 36, "age_max": 36,
             "form_filled": True, "friend_since_from": "2026-01-01", "friend_since_to": "2026-01-01",
             "messaged_within_days": 2}
    assert picked(app, channel, every) == {"美玲"}


def test_friend_since_is_read_in_taipei_days_with_both_ends_included(app, channel):
    # 美玲 followed at 00:30 on 1 January in Taipei (still 31 December in UTC), 大文 at 23:30 on 31 December.
    assert picked(app, channel, {"friend_since_from": "2026-01-01"}) == {"美玲", "小芳", "路人"}
    assert picked(app, channel, {"friend_since_to": "2025-12-31"}) == {"大文"}
    assert picked(app, channel, {"friend_since_from": "2026-03-01", "friend_since_to": "2026-03-01"}) == {"小芳"}
    # Someone we never saw follow counts from when we first heard of them.
    assert picked(app, channel, {"friend_since_from": "2026-05-01", "friend_since_to": "2026-05-31"}) == {"路人"}


def test_the_last_message_counts_only_messages_from_the_customer(app, channel):
    assert picked(app, channel, {"messaged_within_days": 1}) == set()  # 美玲 wrote 2 days ago
    assert picked(app, channel, {"messaged_within_days": 2}) == {"美玲"}
    assert picked(app, channel, {"messaged_within_days": 9}) == {"美玲"}
    assert picked(app, channel, {"messaged_within_days": 11}) == {"美玲", "大文"}


def test_an_age_changes_at_midnight_in_taipei_not_in_utc(app, channel):
    # 美玲 was born on 15 March 1990: 36 from 00:00 on 15 March 2026 in Taipei, 16:00 on the 14th in UTC.
    before = datetime(2026, 3, 14, 15, 59)
    after = datetime(2026, 3, 14, 16, 0)
    assert "美玲" not in picked(app, channel, {"age_min": 36}, now=before)
    assert "美玲" in picked(app, channel, {"age_max": 35}, now=before)
    assert "美玲" in picked(app, channel, {"age_min": 36}, now=after)
    assert "美玲" not in picked(app, channel, {"age_max": 35}, now=after)
    assert picked(app, channel, {"age_min": 36, "age_max": 36}, now=after) == {"美玲"}


@pytest.mark.parametrize("taipei_day, age", [
    (date(2027, 2, 28), 18),  # no 29 February in 2027: still 18 on the 28th …
    (date(2027, 3, 1), 19),   # … and 19 on 1 March (Civil Code Art. 121, 124)
    (date(2028, 2, 28), 19),
    (date(2028, 2, 29), 20),  # a leap year: on the day itself
])
def test_someone_born_on_29_february_is_a_year_older_on_the_day_or_on_1_march(app, channel, taipei_day, age):
    now = datetime.combine(taipei_day, datetime.min.time()) - timedelta(hours=8) + timedelta(minutes=1)
    assert "小芳" in picked(app, channel, {"age_min": age, "age_max": age}, now=now)
    assert "小芳" not in picked(app, channel, {"age_min": age + 1}, now=now)
    assert "小芳" not in picked(app, channel, {"age_max": age - 1}, now=now)


def test_on_29_february_those_born_on_28_february_of_a_year_without_one_are_a_year_older(app, owner):
    channel_id = make_channel(app, owner)["id"]
    add(app, channel_id, "二月底", birthday=date(2027, 2, 28))
    add(app, channel_id, "三月初", birthday=date(2027, 3, 1))
    leap_day = datetime(2028, 2, 29, 4, 0)
    assert picked(app, channel_id, {"age_min": 1}, now=leap_day) == {"二月底"}
    assert picked(app, channel_id, {"age_max": 0}, now=leap_day) == {"三月初"}


def test_empty_choices_narrow_nothing_and_the_clean_filters_are_canonical(app):
    with app.app_context():
        clean, problems = segments.check({"city": ["NWT", "TPE", "NWT"], "gender": None, "age_min": "",
                                          "age_max": [], "birthday_month": [12, 3, 3],
                                          "friend_since_from": "２０２６-０１-０１", "form_filled": False})
    assert problems == {}
    assert clean == {"city": ["TPE", "NWT"], "birthday_month": [3, 12], "friend_since_from": "2026-01-01",
                     "form_filled": False}


@pytest.mark.parametrize("filters, key, words", [
    ({"colour": ["red"]}, "colour", "“colour” is not a filter"),
    ({"city": "TPE"}, "city", "as a list"),
    ({"city": ["Taipei"]}, "city", "“Taipei” is not a city or county"),
    ({"gender": ["f"]}, "gender", "“f” is not a gender"),
    ({"birthday_month": [13]}, "birthday_month", "“13” is not a month"),
    ({"birthday_month": [True]}, "birthday_month", "“True” is not a month"),
    ({"birthday_month": 3}, "birthday_month", "list of numbers from 1 to 12"),
    ({"age_min": -1}, "age_min", "youngest age must be a whole number of years from 0 to 150"),
    ({"age_min": 20.5}, "age_min", "youngest age"),
    ({"age_max": "30"}, "age_max", "oldest age must be a whole number"),
    ({"age_min": 40, "age_max": 30}, "age_max", "oldest age (30) is below the youngest (40)"),
    ({"form_filled": "yes"}, "form_filled", "must be true or false"),
    ({"friend_since_from": "2026-02-30"}, "friend_since_from", "“2026-02-30” is not a date"),
    ({"friend_since_to": 20260101}, "friend_since_to", "is not a date"),
    ({"friend_since_from": "2026-03-01", "friend_since_to": "2026-02-01"}, "friend_since_to",
     "ends (2026-02-01) before it starts (2026-03-01)"),
    ({"messaged_within_days": 0}, "messaged_within_days", "whole number from 1 to 3650"),
    ({"messaged_within_days": False}, "messaged_within_days", "whole number from 1 to 3650"),
])
def test_a_refused_filter_is_named_with_what_is_wrong(app, filters, key, words):
    with app.app_context(), force_locale("en"):
        clean, problems = segments.check(filters)
        assert list(problems) == [key] and words in problems[key]
        assert key not in clean
        with pytest.raises(segments.BadFilters) as refused:
            segments.matching(1, filters)
        assert refused.value.problems == problems


def test_filters_that_are_not_an_object_are_refused(app):
    with app.app_context(), force_locale("en"):
        assert segments.check(["city"]) == ({}, {"filters": "The filters must be an object of filter names and "
                                                            "values."})


def test_the_messages_speak_the_owners_language(app):
    with app.app_context(), force_locale("zh_Hant_TW"):
        _clean, problems = segments.check({"birthday_month": [13], "age_min": 40, "age_max": 30})
    assert problems["birthday_month"] == "「13」不是月份：月份是 1 到 12 的數字。"
    assert problems["age_max"] == "最大年齡（30）小於最小年齡（40）。"


def test_saved_segments_are_named_reused_renamed_and_deleted_per_shop(app, channel, owner):
    with app.app_context(), force_locale("en"):
        shop = db.session.scalar(db.select(Shop).filter_by(slug=owner))
        segment, problems = segments.save(shop, "  台北  女性 ", {"city": ["TPE"], "gender": ["female"]})
        assert problems == {}
        db.session.commit()
        assert segment.name == "台北 女性" and segment.filters == {"city": ["TPE"], "gender": ["female"]}
        assert segments.count(channel, segment.filters, now=NOW) == 2
        again, problems = segments.save(shop, "台北 女性", {"city": ["NWT"]})
        assert again is None and "There is a segment named “台北 女性” already" in problems["name"]
        refused, problems = segments.save(shop, "壞的", {"city": ["XXX"]})
        assert refused is None and list(problems) == ["city"]
        unnamed, problems = segments.save(shop, "   ", {})
        assert unnamed is None and problems == {"name": "Give the segment a name."}
        assert segments.save(shop, "x" * 61, {})[1]["name"] == "A segment's name can have at most 60 characters."
        other = db.session.scalar(db.select(Shop).filter_by(slug="calm-tea"))
        theirs, problems = segments.save(other, "台北 女性", {"city": ["TPE"]})  # the same name in another shop
        assert problems == {}
        second, _problems = segments.save(shop, "新北", {"city": ["NWT"]})
        db.session.commit()
        assert [s.name for s in segments.saved(shop)] == ["台北 女性", "新北"]
        assert segments.saved_one(shop, theirs.id) is None
        assert "already" in segments.rename(second, shop, "台北 女性")
        db.session.rollback()
        assert segments.rename(second, shop, "新北 全部") is None
        db.session.commit()
        segments.delete(segment)
        db.session.commit()
        assert [(s.name, s.filters) for s in segments.saved(shop)] == [("新北 全部", {"city": ["NWT"]})]
        assert db.session.scalar(db.select(db.func.count()).select_from(Segment)) == 2
