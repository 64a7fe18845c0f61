"""A send plan's life as the owner sees it: what they may ask for, what it will cost, and what they may do to it.

- ``check(shop, data)``: the plan an owner (page) or a program (API) asks for, cleaned (``Wanted``), with a
  message per problem in the reader's language; nothing is written while there is one;
- ``channel_of(shop)``: the one scope of every audience count and send: the shop's connected channel;
- ``estimate(channel, wanted)``: who would get it now, who is left out and why, and what it costs against
  the month's quota (LINE's quota and consumption, through the sender), so the owner sees it before
  confirming; ``quota_problem`` refuses a plan over it; a service plan to all friends goes by broadcast and
  costs what LINE counts of its friends (``Estimate``);
- ``create``: INSERTs the plan (scheduled, or a draft the owner then confirms), once per Idempotency-Key;
- ``update_plan`` / ``cancel`` / ``pause`` / ``resume``: each a conditional UPDATE on the plan's state, so an
  owner's click and the worker that starts the plan (plans/runs.py) never both win: a plan can be edited only
  until it starts, cancelled until it has finished, paused and resumed only while it sends (a yearly plan
  also between runs). A refusal is worded from the state the plan is in when it is refused, re-read then;
- ``totals`` and ``as_json``: the counts the pages show and the API's shape, exactly as issue 16 gives it.

The state words (statuses.py ``PlanState``) are the owner's; ``reason`` says in words why a plan failed, or
that an edit took it back to a draft (``UNCONFIRMED``).
"""
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import audit, queue
from ..customers import contacts as contact_names, segments
from ..extensions import db
from ..line.problems import MESSAGES as LINE_PROBLEMS
from ..models import LARGEST_ID, Contact, MessageTemplate, SendPlan, SendPlanRecipient, SendPlanRun, iso_utc, utcnow
from ..outgoing import sender as senders
from ..statuses import PlanState, RecipientOutcome
from . import schedule, templates

PURPOSES = ("marketing", "service")
MAX_NAME = 100
# How far ahead a one-off plan may be set (LINE keeps a retry key a day; a plan a year out is a mistake).
MAX_AHEAD = timedelta(days=366)
# A one-off time this close behind now is still "now" (the owner pressed the button in that minute).
LATE_BY = timedelta(minutes=1)
# The API's Idempotency-Key: the same key within this long returns the first plan.
IDEMPOTENCY_WINDOW = timedelta(days=1)
MAX_KEY = 100
# How many names the confirmation page lists of those the quota leaves out.
NAMES_SHOWN = 10
EDITABLE = (PlanState.DRAFT, PlanState.SCHEDULED)


class Refused(Exception):
    """The plan cannot do what was asked in its state (409); the message says why, in the reader's words."""


@dataclass
class Wanted:
    """A plan as asked for, cleaned (``check``)."""
    name: str = ""
    template_id: int | None = None
    purpose: str = "marketing"
    all: bool = True
    filters: dict = field(default_factory=dict)
    segment_id: int | None = None
    send_at: datetime | None = None  # naive UTC; None: now
    repeat: str | None = None
    hour: int | None = None
    up_to_quota: bool = False

    @property
    def audience(self):
        return {"all": self.all, "filters": self.filters}


def _segment(shop, segment_id):
    return segments.saved_one(shop, segment_id)


def _int(value):
    """A whole number from JSON or a form field, else None (a bool, text that is not one, or an int past the
    largest id the database holds)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= LARGEST_ID else None
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 10:
        return int(value.strip())
    return None


# The years a time may name: outside them a date is a typing mistake (and 0001 or 9999 overflow when moved to
# UTC); send_at is refused more narrowly still (past, or more than MAX_AHEAD ahead).
FIRST_YEAR, LAST_YEAR = 1900, 2100


class OutOfRange(ValueError):
    """A time that reads as one but lies outside FIRST_YEAR-LAST_YEAR."""


def parse_time(value, now=None):
    """An ISO 8601 time: with an offset it is read as given, without one as Taipei time (as the owner
    enters it). Returns naive UTC; raises ValueError for text that is no time, ``OutOfRange`` for a year
    outside 1900-2100."""
    text = str(value).strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise OutOfRange(text)
    if moment.tzinfo is None:
        return schedule.to_utc(moment)
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def check(shop, data, now=None):
    """(Wanted, problems): ``data`` as the API sends it (the page's form sends the same keys). ``problems``
    maps each key to a message; when it is empty ``Wanted`` is what will be saved."""
    now = now or utcnow()
    wanted, problems = Wanted(), {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems["name"] = _("Give the plan a name, so you can find it in the list.")
    elif len(name.strip()) > MAX_NAME:
        problems["name"] = _("The name is too long: at most %(n)d characters.", n=MAX_NAME)
    else:
        wanted.name = name.strip()
    template_id = _int(data.get("template_id"))
    if template_id is None or templates.get(shop, template_id) is None:
        problems["template_id"] = _("Choose one of this shop's message templates.")
    else:
        wanted.template_id = template_id
    purpose = data.get("purpose")
    if purpose not in PURPOSES:
        problems["purpose"] = _("Choose the purpose: marketing (only to customers who agreed to receive it) "
                                "or service.")
    else:
        wanted.purpose = purpose
    audience = data.get("audience")
    segment_id = data.get("segment_id")
    if segment_id not in (None, ""):
        segment = _segment(shop, _int(segment_id)) if _int(segment_id) is not None else None
        if segment is None:
            problems["audience"] = _("There is no such saved audience in this shop.")
        else:
            wanted.segment_id, wanted.all, wanted.filters = segment.id, not segment.filters, dict(segment.filters)
    elif not isinstance(audience, dict) or not isinstance(audience.get("all", False), bool):
        problems["audience"] = _("Choose who gets it: all friends, or friends matching the conditions.")
    else:
        filters = audience.get("filters") or {}
        if audience.get("all"):
            wanted.all, wanted.filters = True, {}
        elif not isinstance(filters, dict) or not filters:
            problems["audience"] = _("Choose at least one condition, or all friends.")
        else:
            clean, wrong = segments.check(filters)
            if wrong:
                problems["audience"] = " ".join(str(message) for message in wrong.values())
            else:
                wanted.all, wanted.filters = False, clean
    repeat = data.get("repeat")
    if repeat not in (None, "", *schedule.REPEATS):
        problems["repeat"] = _("Choose when: now, once at a time, on each customer's birthday or on the first "
                               "day of their birthday month.")
    else:
        wanted.repeat = repeat or None
    if wanted.repeat:
        hour = _int(data.get("hour"))
        if hour is None or not 0 <= hour <= 23:
            problems["hour"] = _("Choose the hour (0 to 23, Taipei time) the greetings go out.")
        else:
            wanted.hour = hour
    elif data.get("send_at") not in (None, ""):
        try:
            at = parse_time(data["send_at"])
        except OutOfRange:
            problems["send_at"] = _("“%(value)s” is not a time a plan can be sent at: choose a date and time "
                                    "within the next year.", value=str(data["send_at"])[:40])
        except (TypeError, ValueError, OverflowError):
            problems["send_at"] = _("“%(value)s” is not a date and time: write it like 2026-12-24 18:00.",
                                    value=str(data["send_at"])[:40])
        else:
            if at < now - LATE_BY:
                problems["send_at"] = _("That time has passed: choose a later one, or send now.")
            elif at > now + MAX_AHEAD:
                problems["send_at"] = _("That is more than a year ahead: choose an earlier time.")
            else:
                wanted.send_at = at
    up_to = data.get("up_to_quota", False)
    if not isinstance(up_to, bool):
        problems["up_to_quota"] = _("“up_to_quota” is true or false.")
    else:
        wanted.up_to_quota = up_to
    return wanted, problems


# ---- cost and audience -----------------------------------------------------------------------------------


@dataclass
class Estimate:
    """Who a plan reaches now and what that costs. ``limit`` None: no monthly limit; ``quota_error``: LINE
    could not tell (the plan is not refused for it; the start checks again).

    A service plan to all friends (not naming each customer) goes by broadcast (``broadcast_wanted``): LINE
    sends it to every friend of the account, those the CRM has no record of too (friends added before the
    webhook was connected), and counts each against the month. Its cost is then ``reach``, LINE's own count of
    its friends (``broadcast_reach``), not the contacts we know. A marketing plan never goes by broadcast: the
    consent it needs is each person's, so it goes by multicast to those who gave it.

    Over the quota a broadcast cannot be cut short; with "send only up to the quota" such a plan goes by
    multicast to the contacts we know instead, as many as the quota allows (``sendable``), and the friends we
    have no record of (``unknown``) do not get it."""
    audience: int = 0
    no_consent: int = 0
    recipients: int = 0
    limit: int | None = None
    used: int | None = None
    quota_error: str | None = None
    left_out_names: list = field(default_factory=list)
    broadcast_wanted: bool = False
    reach: int | None = None  # friends a broadcast reaches (broadcast plans only)
    reach_counted: int | None = None  # LINE's count of them (followers - blocks) on ``reach_day``
    reach_line: int | None = None  # that, with the contacts who became friends after it
    reach_day: object = None  # the (Japan) day LINE counted, or None: no count at all
    reach_latest: bool = False  # LINE's count is yesterday's, the newest LINE makes
    reach_error: str | None = None  # LINE could not tell (the sender's problem code)

    @property
    def messages(self):
        """What LINE counts against the month: one per recipient per request (multicast, push or broadcast
        alike), however many message bubbles the template has; a broadcast: one per friend it reaches."""
        if self.broadcast_wanted and self.reach is not None:
            return self.reach
        return self.recipients

    @property
    def left(self):
        if self.limit is None or self.used is None:
            return None
        return max(self.limit - self.used, 0)

    @property
    def over(self):
        return self.left is not None and self.messages > self.left

    @property
    def broadcast(self):
        """The run goes by broadcast: a broadcast plan within the quota (over it, multicast up to the quota)."""
        return self.broadcast_wanted and not self.over

    @property
    def unknown(self):
        """Friends a broadcast would reach whom the CRM has no record of (so cannot send to one by one)."""
        return max(self.reach - self.recipients, 0) if self.broadcast_wanted and self.reach is not None else 0

    @property
    def sendable(self):
        """The contacts who get it: every recipient, or as many as the quota allows (by contact id)."""
        return min(self.recipients, self.left) if self.left is not None else self.recipients

    @property
    def over_by(self):
        """Who would not get it with "send only up to the quota" (friends without a record included)."""
        return self.messages - self.sendable if self.over else 0

    @property
    def over_known(self):
        """Of ``over_by``, the contacts we know (their names are listed)."""
        return self.recipients - self.sendable


def time_passed(plan, now=None) -> bool:
    """Has a one-off plan's time gone by (a draft saved for 18:00 and confirmed at 19:00)? Confirming it
    would send it at once, not at the time it says, so the owner chooses a new time instead."""
    now = now or utcnow()
    return not plan.repeat and plan.send_at is not None and plan.send_at < now - LATE_BY


def channel_of(shop):
    """The channel a shop's plans send through, and so the scope of every audience count (the plan form's
    live count, the confirmation, the API's audience count and the run): the connected one, None while none
    is. The contacts list shows the friends of every channel the shop ever had; a plan reaches only these."""
    return shop.channel


def audience_count(shop, clean):
    """How many friends clean filters pick on the channel the shop's plans send through (blocked never);
    None while no channel is connected."""
    channel = channel_of(shop)
    return None if channel is None else segments.count(channel.id, clean)


def problem_words(code):
    """A LINE problem's code (what the sender's failure carries) as the reader's words."""
    words = LINE_PROBLEMS.get(code)
    return str(words[0]) if words else _("LINE answered with an error.")


def read_quota(channel):
    """(limit or None, used) of this month, from LINE through the sender; raises the sender's failure."""
    answer = senders.current().quota(channel)
    return answer.get("limit"), int(answer.get("used") or 0)


def by_broadcast(wanted, template) -> bool:
    """The rule: only a service plan to all friends, sent the same to everyone (a template naming each
    customer goes one by one) and not yearly (a birthday plan picks its day's customers), goes by broadcast."""
    return (wanted.purpose == "service" and wanted.all and not wanted.repeat and template is not None
            and not templates.personal(template))


def _last_reading(channel):
    """The friend count the daily checks (the watch) last kept for the channel: (friends, day, until) or None."""
    reading = (channel.check_results or {}).get("followers")
    try:
        friends = int(reading["followers"]) - int(reading.get("blocks") or 0)
        day = date.fromisoformat(reading["date"])
        until = datetime.fromisoformat(str(reading["at"]).rstrip("Z"))
    except (TypeError, KeyError, ValueError):
        return None
    return max(friends, 0), day, until


def broadcast_reach(channel, found):
    """Fill ``found.reach``: how many friends a broadcast reaches, what it costs against the month.

    LINE's count (the sender's ``reach``: yesterday's, LINE counts each day once it is over) plus the contacts
    who became friends since, and never fewer than the contacts we know. When LINE has no count of yesterday
    yet (``unready``) or cannot be asked (its 60 calls an hour), the last count known (LINE's day before, else
    the daily checks' reading) is used the same way, and ``reach_latest`` is False: the page says so."""
    try:
        counted = senders.current().reach(channel)
    except senders.current().failure as problem:
        counted, found.reach_error = {"friends": None}, problem.code
    if counted.get("friends") is not None:
        friends, day, until = counted["friends"], counted["day"], counted["until"]
        found.reach_latest = bool(counted.get("latest"))
    else:
        friends, day, until = _last_reading(channel) or (None, None, None)
    if friends is not None:
        since = db.session.scalar(select(func.count(Contact.id)).where(
            Contact.channel_id == channel.id, Contact.blocked_at.is_(None), Contact.followed_at >= until)) or 0
        found.reach_counted, found.reach_line, found.reach_day = friends, friends + since, day
    found.reach = max(found.recipients, found.reach_line or 0)
    return found


def audience_ids(channel_id, wanted, day=None, between=None):
    """The Select of contact ids a plan reaches (blocked never), before consent, for the Taipei ``day`` of a
    yearly plan's run; ``between`` (low, high): only the contacts with low < id <= high (a run's slice,
    plans/filling.py)."""
    ids = segments.matching(channel_id, wanted.filters if not wanted.all else {})
    if wanted.repeat:
        ids = ids.where(schedule.birthday_condition(wanted.repeat, day))
    if between is not None:
        ids = ids.where(Contact.id > between[0], Contact.id <= between[1])
    return ids


def recipient_ids(channel_id, wanted, day=None, between=None):
    """The Select of contacts who would get it: the audience, and for marketing only those who consent
    (their consent as it is now: one withdrawn since the plan was made counts), in a stable order."""
    ids = audience_ids(channel_id, wanted, day, between)
    query = select(Contact.id).where(Contact.id.in_(ids), Contact.blocked_at.is_(None))
    if wanted.purpose == "marketing":
        query = query.where(Contact.marketing_consent.is_(True))
    return query.order_by(Contact.id)


def estimate(channel, wanted, now=None, with_quota=True) -> Estimate:
    """Who gets the plan if it went now (a yearly plan: on today's Taipei date), and its cost (a broadcast's:
    LINE's count of the friends it reaches, ``broadcast_reach``). ``with_quota`` False: the caller reads the
    quota itself (the start, which must not go on without it)."""
    now = now or utcnow()
    day = schedule.local_day(now)
    found = Estimate()
    if channel is None:
        return found
    audience = audience_ids(channel.id, wanted, day)
    found.audience = db.session.scalar(select(func.count()).select_from(
        select(Contact.id).where(Contact.id.in_(audience), Contact.blocked_at.is_(None)).subquery())) or 0
    found.recipients = db.session.scalar(select(func.count()).select_from(
        recipient_ids(channel.id, wanted, day).order_by(None).subquery())) or 0
    found.no_consent = found.audience - found.recipients
    template = db.session.get(MessageTemplate, wanted.template_id) if wanted.template_id is not None else None
    found.broadcast_wanted = by_broadcast(wanted, template) and found.recipients > 0
    if found.broadcast_wanted:
        broadcast_reach(channel, found)
    if with_quota:
        try:
            found.limit, found.used = read_quota(channel)
        except senders.current().failure as problem:
            found.quota_error = problem.code
        if later_quota_month(wanted, now):
            found.used = 0  # what this month used counts for nothing then: that month starts afresh
        if found.over:
            found.left_out_names = [
                contact_names.name_of(c) or _("(no name)") for c in db.session.scalars(
                    select(Contact).where(Contact.id.in_(
                        recipient_ids(channel.id, wanted, day).offset(found.left).limit(NAMES_SHOWN))
                    ).order_by(Contact.id))]
    return found


# LINE counts a month's messages by the calendar month in Japan time.
LINE_MONTH_ZONE = timezone(timedelta(hours=9))


def later_quota_month(wanted, now) -> bool:
    """Does a one-off plan go in a later month of LINE's quota than ``now``'s (a plan for next month, while
    this month's messages are used up)? Its start checks that month's quota again (plans/runs.py)."""
    if wanted.repeat or wanted.send_at is None:
        return False
    month = lambda at: at.replace(tzinfo=timezone.utc).astimezone(LINE_MONTH_ZONE).strftime("%Y-%m")  # noqa: E731
    return month(wanted.send_at) > month(now)


def quota_problem(found: Estimate, wanted) -> str | None:
    """The refusal of a plan over the month's quota, unless the owner chose to send only up to it."""
    if not found.over or wanted.up_to_quota or wanted.repeat:
        return None
    if found.broadcast_wanted:
        return _("This plan goes to every friend by broadcast: %(messages)d messages, and %(left)d are left this "
                 "month. A broadcast cannot stop at the quota: choose “send only up to the quota” and it goes "
                 "only to the customers the CRM knows, as many as the quota allows (%(out)d friends would not "
                 "get it), or make the audience smaller.", messages=found.messages, left=found.left,
                 out=found.over_by)
    return _("This plan needs %(messages)d messages and %(left)d are left this month: choose “send only up to "
             "the quota” (%(out)d customers would not get it), or make the audience smaller.",
             messages=found.messages, left=found.left, out=found.over_by)


# ---- the plan's life -----------------------------------------------------------------------------------


def wanted_of(plan) -> Wanted:
    audience = plan.audience or {}
    return Wanted(name=plan.name, template_id=plan.template_id, purpose=plan.purpose,
                  all=bool(audience.get("all")), filters=dict(audience.get("filters") or {}),
                  segment_id=plan.segment_id, send_at=plan.send_at, repeat=plan.repeat, hour=plan.hour,
                  up_to_quota=plan.up_to_quota)


def _values(wanted, now):
    send_at = wanted.send_at
    if wanted.repeat:
        send_at = schedule.next_occurrence(wanted.repeat, wanted.hour, now - timedelta(seconds=1))
    return dict(name=wanted.name, template_id=wanted.template_id, purpose=wanted.purpose,
                audience=wanted.audience, segment_id=wanted.segment_id, send_at=send_at, repeat=wanted.repeat,
                hour=wanted.hour, up_to_quota=wanted.up_to_quota)


def idempotency_value(key, now):
    return f"{now.date().isoformat()}|{key}"


def by_key(shop, key, now=None):
    """The plan this shop's API caller made with ``key`` within the last day, if any."""
    now = now or utcnow()
    values = [idempotency_value(key, now), idempotency_value(key, now - IDEMPOTENCY_WINDOW)]
    return db.session.scalar(select(SendPlan).where(
        SendPlan.shop_id == shop.id, SendPlan.idempotency.in_(values),
        SendPlan.created_at >= now - IDEMPOTENCY_WINDOW).order_by(SendPlan.id))


def create(shop, wanted, actor, *, state=PlanState.SCHEDULED, key=None, found=None, now=None):
    """Write the plan (scheduled, or a draft) and its audit entry, and commit. With ``key`` (the API's
    Idempotency-Key) a plan made with the same key within a day is returned instead: (plan, created)."""
    now = now or utcnow()
    plan = SendPlan(shop_id=shop.id, state=state, created_by=actor.email, created_at=now, updated_at=now,
                    idempotency=idempotency_value(key, now) if key else None, **_values(wanted, now))
    if found is not None:
        plan.cost_messages, plan.quota_left = found.messages, found.left
    db.session.add(plan)
    try:
        db.session.flush()
    except IntegrityError:  # the same key, a moment ago, from a request running beside this one
        db.session.rollback()
        return by_key(shop, key, now), False
    plan.unit = f"plan_{plan.id}"
    audit.record("send_plan.created", shop=shop, actor=actor, target=plan.name, plan=plan.id, state=str(state))
    db.session.commit()
    return plan, True


def _change(plan, allowed, values, refusal):
    """Apply ``values`` to the plan only while its state is one of ``allowed`` (re-read by the UPDATE itself:
    the worker starting it meanwhile wins). Refused: ``Refused`` with ``refusal(state)``, the words for the
    state the plan is in now (read again after the UPDATE found it elsewhere, never the state this request
    read before)."""
    done = db.session.execute(update(SendPlan).where(SendPlan.id == plan.id, SendPlan.state.in_(allowed))
                              .values(updated_at=utcnow(), **values)
                              .execution_options(synchronize_session=False)).rowcount
    if done != 1:
        db.session.rollback()
        now_in = db.session.scalar(select(SendPlan.state).where(SendPlan.id == plan.id))
        raise Refused(refusal(now_in or PlanState.CANCELLED))
    db.session.expire(plan)


def started_refusal(state):
    """Why a plan in ``state`` can no longer be changed."""
    return _("This plan has started (“%(state)s”): it can no longer be changed; you can pause it while "
             "it sends.", state=PlanState(state).label)


# A plan's ``reason`` after an edit took a scheduled plan back to a draft: it waits for the owner's confirmation.
UNCONFIRMED = "unconfirmed"
# What, changed, needs the owner to look at the cost again: who gets it, what it costs, when it goes.
RECONFIRM = ("purpose", "all", "filters", "segment_id", "send_at", "repeat", "hour", "up_to_quota")


def needs_confirming(plan, wanted) -> bool:
    """Does this edit of a scheduled plan change who gets it, what it costs or when (anything but its name
    and template)? Such an edit takes it back to a draft to be confirmed again."""
    before = wanted_of(plan)
    # A yearly plan's send_at is its next run, worked out from repeat and hour (compared instead).
    keys = [key for key in RECONFIRM if not (key == "send_at" and wanted.repeat)]
    return any(getattr(before, key) != getattr(wanted, key) for key in keys)


def update_plan(plan, wanted, actor, *, state=None, found=None, now=None):
    """Edit a draft or scheduled plan (``state``: what it becomes; None: it stays as it is), refused once it
    has started. A plan scheduled again loses the "unconfirmed" mark; one taken back to a draft gets it."""
    now = now or utcnow()
    values = _values(wanted, now)
    if state is not None:
        values["state"] = state
    if state == PlanState.SCHEDULED:
        values["reason"] = None
    elif state == PlanState.DRAFT and plan.state == PlanState.SCHEDULED:
        values["reason"] = UNCONFIRMED
    if found is not None:
        values.update(cost_messages=found.messages, quota_left=found.left)
    # Kept as it is: only while it still is what this request read (a scheduled plan that started meanwhile
    # is refused); made a draft or scheduled: from either editable state.
    allowed = EDITABLE if state is not None else tuple(s for s in EDITABLE if s == plan.state)
    _change(plan, allowed, values, started_refusal)
    audit.record("send_plan.edited", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


# Every state a plan can be cancelled from: before it starts nothing goes; once sending, the rest stops.
CANCELLABLE = (PlanState.DRAFT, PlanState.SCHEDULED, PlanState.SENDING, PlanState.PAUSED)


def cancel(plan, actor):
    """Stop the plan: before it starts nothing goes; a yearly plan makes no more runs; a run that is sending
    stops (what LINE has accepted stays sent, the rest is recorded cancelled). Allowed from every unfinished
    state whatever this request read: a worker starting the plan in the same moment does not make the cancel
    fail, its run is stopped."""
    from . import runs
    _change(plan, CANCELLABLE, {"state": PlanState.CANCELLED, "finished_at": utcnow()},
            lambda state: _("Nothing is left to cancel: the plan is “%(state)s”.", state=PlanState(state).label))
    for run in _open_runs(plan):
        runs.stop(run)
    audit.record("send_plan.cancelled", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


def _pausable(plan):
    return (PlanState.SENDING, PlanState.SCHEDULED) if plan.repeat else (PlanState.SENDING,)


def pause(plan, actor):
    """Hold a plan while it sends (what is not yet with LINE waits), or a yearly plan between runs."""
    from . import runs
    _change(plan, _pausable(plan), {"state": PlanState.PAUSED},
            lambda state: _("Only a plan that is sending can be paused; this one is “%(state)s”.",
                            state=PlanState(state).label))
    for run in _open_runs(plan):
        runs.hold(run)
    audit.record("send_plan.paused", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


def resume(plan, actor):
    """Let a paused plan go on: its held run sends again. A one-off plan is sending again; a yearly plan is
    scheduled again (statuses.py: it stays scheduled between runs, and only a one-off plan follows its run to
    sent or failed), its held run sending, and its next run the next one ahead: the days it was paused are
    not sent late."""
    from . import runs
    values = {"state": PlanState.SCHEDULED if plan.repeat else PlanState.SENDING}
    now = utcnow()
    if plan.repeat and plan.send_at is not None and plan.send_at < now:
        values["send_at"] = schedule.next_occurrence(plan.repeat, plan.hour, now)
    _change(plan, (PlanState.PAUSED,), values,
            lambda state: _("Only a paused plan can be resumed; this one is “%(state)s”.",
                            state=PlanState(state).label))
    for run in _open_runs(plan):
        runs.release(run)
    audit.record("send_plan.resumed", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()
    runs.after_release(plan)


def _open_runs(plan):
    return db.session.scalars(select(SendPlanRun).where(
        SendPlanRun.plan_id == plan.id, SendPlanRun.state.in_((PlanState.SENDING, PlanState.PAUSED)))).all()


# ---- reading -------------------------------------------------------------------------------------------


def for_shop(shop):
    return db.session.scalars(select(SendPlan).where(SendPlan.shop_id == shop.id)
                              .order_by(SendPlan.created_at.desc(), SendPlan.id.desc())).all()


def of_shop(shop, plan_id):
    """The shop's plan ``plan_id``, or None (another shop's plan is as good as none)."""
    plan = db.session.get(SendPlan, plan_id) if isinstance(plan_id, int) else None
    return plan if plan is not None and plan.shop_id == shop.id else None


@dataclass
class Totals:
    """A plan's counts over its runs. ``recipients``: those it was to be sent to (the left out are counted
    apart: no_consent, blocked, over_quota); ``pending``: of those, the ones without a final outcome yet."""
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    no_consent: int = 0
    blocked: int = 0
    over_quota: int = 0
    cancelled: int = 0
    pending: int = 0
    # A run still being written slice by slice (plans/filling.py): ``recipients`` are those written so far.
    preparing: bool = False

    @property
    def done(self):
        """How many of the recipients have their outcome (sent, failed, refused or cancelled): the x of the
        page's "x of y done". Never those left out before sending, who were never to be sent to."""
        return max(self.recipients - self.pending, 0)


def totals(plan) -> Totals:
    """The plan's counts over its runs (a one-off plan has one)."""
    found = Totals()
    for run in plan.runs:
        for name in ("recipients", "sent", "failed", "no_consent", "blocked", "over_quota", "cancelled"):
            setattr(found, name, getattr(found, name) + getattr(run, name))
        found.preparing = found.preparing or run.filling
    open_runs = [run.id for run in plan.runs if run.state in (PlanState.SENDING, PlanState.PAUSED)]
    if open_runs:
        found.pending = db.session.scalar(select(func.count(SendPlanRecipient.id)).where(
            SendPlanRecipient.run_id.in_(open_runs), SendPlanRecipient.outcome == RecipientOutcome.PENDING)) or 0
    return found


def as_json(plan):
    """The API's plan, exactly the keys issue 16 names."""
    counted = totals(plan)
    return {
        "id": plan.id, "name": plan.name, "template_id": plan.template_id, "purpose": plan.purpose,
        "audience": {"all": bool((plan.audience or {}).get("all")),
                     "filters": dict((plan.audience or {}).get("filters") or {})},
        "send_at": iso_utc(plan.send_at), "repeat": plan.repeat, "up_to_quota": plan.up_to_quota,
        "state": str(plan.state), "recipients": counted.recipients, "sent": counted.sent,
        "left_out": {"no_consent": counted.no_consent, "blocked": counted.blocked,
                     "over_quota": counted.over_quota},
        "failed": counted.failed,
        "cost": {"messages": plan.cost_messages, "quota_left": plan.quota_left},
    }


# A one-off plan due within this long is also queued to start at its very second; further ahead (and for
# yearly plans) the minute's tick starts it, as it does whenever the queued start was lost.
START_QUEUED_WITHIN = timedelta(hours=24)


def queue_start(plan, now=None):
    """After the commit that scheduled ``plan``: ask the queue to start it at its time, to the second (at once
    for "now"), rather than at the next minute's tick (plans/runs.py). Harmless if the plan was edited,
    paused or cancelled meanwhile: the start claims only a scheduled plan whose time has come, once."""
    if plan.repeat or plan.state != PlanState.SCHEDULED:
        return
    now = now or utcnow()
    wait = 0.0 if plan.send_at is None else (plan.send_at - now).total_seconds()
    if wait > START_QUEUED_WITHIN.total_seconds():
        return
    # Half a second late: the start's own check (send_at <= now) must see the time come on this machine too.
    queue.start_plan.try_now(plan.id, row=f"send plan {plan.id}", delay=wait + 0.5 if wait > 0 else None)
