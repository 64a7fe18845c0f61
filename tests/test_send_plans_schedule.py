"""When a send plan runs, in Taipei time: a one-off time entered in Taipei is kept in UTC and shown back the
same; a yearly plan's next run is its hour in Taipei (every day for birthdays, the first of the month for
birthday months); and a birthday run of a Taipei day reaches exactly the contacts born on that day, with
those born on 29 February greeted on 28 February when the year has no 29th."""
import secrets
from datetime import date, datetime

import pytest

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import Contact
from wizard.plans import plans, schedule


def test_a_taipei_time_is_stored_in_utc_and_read_back(app):
    with app.app_context():
        assert plans.parse_time("2026-12-24 18:00") == datetime(2026, 12, 24, 10, 0)
        assert plans.parse_time("2026-12-24T18:00:00+08:00") == datetime(2026, 12, 24, 10, 0)
        assert plans.parse_time("2026-12-24T10:00:00Z") == datetime(2026, 12, 24, 10, 0)
        assert schedule.to_local(datetime(2026, 12, 24, 10, 0)) == datetime(2026, 12, 24, 18, 0)
        # 07:30 in Taipei on 1 January is still 31 December in UTC: the run's day is Taipei's.
        assert schedule.local_day(datetime(2025, 12, 31, 23, 30)) == date(2026, 1, 1)


@pytest.mark.parametrize("repeat, after, expected", [
    # 09:00 UTC is 17:00 in Taipei: today's 10:00 has passed, so tomorrow 10:00 Taipei = 02:00 UTC.
    ("birthday", datetime(2026, 3, 10, 9, 0), datetime(2026, 3, 11, 2, 0)),
    # 01:00 UTC is 09:00 Taipei: today's 10:00 is still ahead.
    ("birthday", datetime(2026, 3, 10, 1, 0), datetime(2026, 3, 10, 2, 0)),
    # The first of the next month, 10:00 Taipei.
    ("birthday_month", datetime(2026, 3, 10, 1, 0), datetime(2026, 4, 1, 2, 0)),
    # 31 March 18:30 UTC is already 1 April 02:30 in Taipei: 1 April 10:00 Taipei is next.
    ("birthday_month", datetime(2026, 3, 31, 18, 30), datetime(2026, 4, 1, 2, 0)),
])
def test_a_yearly_plans_next_run_is_its_hour_in_taipei(app, repeat, after, expected):
    with app.app_context():
        assert schedule.next_occurrence(repeat, 10, after) == expected


def _contacts(app, slug, birthdays):
    channel = make_channel(app, slug)
    with app.app_context():
        for name, born in birthdays.items():
            db.session.add(Contact(channel_id=channel["id"], line_user_id="U" + secrets.token_hex(16),
                                   display_name=name, birthday=born))
        db.session.commit()


def _born_on(app, repeat, day):
    with app.app_context():
        return sorted(db.session.scalars(db.select(Contact.display_name)
                                         .where(schedule.birthday_condition(repeat, day))))


def test_a_birthday_run_reaches_those_born_on_that_taipei_day_and_29_february_on_28th(app, make_shop):
    slug, _email = make_shop()
    _contacts(app, slug, {"阿明": date(1990, 2, 28), "小華": date(2000, 2, 29), "美美": date(1985, 3, 1),
                          "老王": date(1970, 12, 31), "無生日": None})
    assert _born_on(app, "birthday", date(2027, 2, 28)) == ["小華", "阿明"]  # 2027 has no 29 February
    assert _born_on(app, "birthday", date(2028, 2, 28)) == ["阿明"]  # 2028 has one: 小華 waits a day
    assert _born_on(app, "birthday", date(2028, 2, 29)) == ["小華"]
    assert _born_on(app, "birthday", date(2027, 3, 1)) == ["美美"]
    assert _born_on(app, "birthday", date(2026, 12, 31)) == ["老王"]
    # Birthday month: only on the first day of the month, everyone born in it.
    assert _born_on(app, "birthday_month", date(2027, 2, 1)) == ["小華", "阿明"]
    assert _born_on(app, "birthday_month", date(2027, 2, 2)) == []
