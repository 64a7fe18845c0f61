"""When a send plan runs, in the shop's time (Taipei): the owner enters and reads Taipei times, the tables keep
naive UTC, and a birthday belongs to the Taipei date.

- ``to_utc`` / ``to_local``: a Taipei wall time to the stored UTC and back;
- ``next_occurrence``: a yearly plan's next run (every day at ``hour`` for "birthday", the first day of each
  month at ``hour`` for "birthday_month"); the run's day is the Taipei date of that time;
- ``birthday_condition``: which contacts a birthday run of one Taipei day is for. Someone born on 29 February
  is greeted on 28 February in a year without one (the plan's page says so).
"""
import calendar
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, extract, false, or_

from ..i18n import zone
from ..models import Contact

REPEATS = ("birthday", "birthday_month")


def to_utc(local: datetime) -> datetime:
    """A naive Taipei wall time as the naive UTC the tables store."""
    return local.replace(tzinfo=zone()).astimezone(timezone.utc).replace(tzinfo=None)


def to_local(value: datetime) -> datetime:
    """A stored naive UTC time as naive Taipei wall time."""
    return value.replace(tzinfo=timezone.utc).astimezone(zone()).replace(tzinfo=None)


def local_day(value: datetime) -> date:
    """The Taipei date of a stored UTC time."""
    return to_local(value).date()


def next_occurrence(repeat: str, hour: int, after: datetime) -> datetime:
    """The first run time (UTC) of a yearly plan strictly after ``after`` (UTC): its ``hour`` in Taipei on
    every day ("birthday") or on the first of every month ("birthday_month")."""
    local = to_local(after)
    day = local.date()
    for _ in range(400):
        if repeat == "birthday" or day.day == 1:
            at = to_utc(datetime.combine(day, time(hour)))
            if at > after:
                return at
        day += timedelta(days=1)
    raise ValueError(f"no occurrence for {repeat!r}")  # cannot happen: a month has a first day


def birthday_days(day: date) -> list[tuple[int, int]]:
    """The (month, day) birthdays celebrated on ``day``: its own, and 29 February on 28 February of a year
    without one."""
    days = [(day.month, day.day)]
    if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
        days.append((2, 29))
    return days


def birthday_condition(repeat: str, day: date):
    """The SQL condition on contacts for a yearly plan's run on the Taipei date ``day``."""
    month = extract("month", Contact.birthday)
    if repeat == "birthday_month":
        return month == day.month if day.day == 1 else false()
    dom = extract("day", Contact.birthday)
    return or_(*(and_(month == m, dom == d) for m, d in birthday_days(day)))
