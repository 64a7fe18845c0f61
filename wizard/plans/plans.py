"""A send plan's life as the owner sees it: what they may ask for, what it will cost, and what they may do to it.

- ``check(shop, data)``: the plan an owner (page) or a program (API) asks for, cleaned, with a message per
  problem in the reader's language; nothing is written while there is one;
- ``estimate(plan-like)``: who would get it now, who is left out and why, and what it costs against the
  month's quota (LINE's quota and consumption, through the sender), so the owner sees it before confirming;
- ``create`` / ``update`` / ``schedule`` / ``cancel`` / ``pause`` / ``resume``: each a conditional UPDATE on
  the plan's state, so an owner's click and the worker that starts the plan (plans/runs.py) never both win:
  a plan can be edited or cancelled only until it starts, paused and resumed only while it sends;
- ``as_json``: the API's shape, exactly as issue 16 gives it.

The state words (statuses.py ``PlanState``) are the owner's; ``reason`` says in words why a plan failed.
"""
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import audit
from ..customers import contacts as contact_names, segments
from ..extensions import db
from ..models import Contact, SendPlan, SendPlanRun, iso_utc, utcnow
from ..outgoing import sender as senders
from ..statuses import PlanState
from . import schedule, templates

PURPOSES = ("marketing", "service")
MAX_NAME = 100
# How far ahead a one-off plan may be set (LINE keeps a retry key a day; a plan a year out is a mistake).
MAX_AHEAD = timedelta(days=366)
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
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 10:
        return int(value.strip())
    return None


def parse_time(value, now=None):
    """An ISO 8601 time: with an offset it is read as given, without one as Taipei time (as the owner
    enters it). Returns naive UTC, or raises ValueError."""
    text = str(value).strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
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
        except (TypeError, ValueError):
            problems["send_at"] = _("“%(value)s” is not a date and time: write it like 2026-12-24 18:00.",
                                    value=str(data["send_at"])[:40])
        else:
            if at < now - timedelta(minutes=1):
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
    could not tell (the plan is not refused for it; the start checks again)."""
    audience: int = 0
    no_consent: int = 0
    recipients: int = 0
    limit: int | None = None
    used: int | None = None
    quota_error: str | None = None
    left_out_names: list = field(default_factory=list)

    @property
    def messages(self):
        """What LINE counts against the month: one per recipient per request (multicast, push or broadcast
        alike), however many message bubbles the template has."""
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
    def over_by(self):
        return max(self.messages - self.left, 0) if self.left is not None else 0

    @property
    def sendable(self):
        return min(self.recipients, self.left) if self.left is not None else self.recipients


def read_quota(channel):
    """(limit or None, used) of this month, from LINE through the sender; raises the sender's failure."""
    answer = senders.current().quota(channel)
    return answer.get("limit"), int(answer.get("used") or 0)


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
    """Who gets the plan if it went now (a yearly plan: on today's Taipei date), and its cost."""
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
    if with_quota:
        try:
            found.limit, found.used = read_quota(channel)
        except senders.current().failure as problem:
            found.quota_error = problem.code
        if found.over:
            found.left_out_names = [
                contact_names.name_of(c) or _("(no name)") for c in db.session.scalars(
                    select(Contact).where(Contact.id.in_(
                        recipient_ids(channel.id, wanted, day).offset(found.left).limit(NAMES_SHOWN))
                    ).order_by(Contact.id))]
    return found


def quota_problem(found: Estimate, wanted) -> str | None:
    """The refusal of a plan over the month's quota, unless the owner chose to send only up to it."""
    if not found.over or wanted.up_to_quota or wanted.repeat:
        return None
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
    the worker starting it meanwhile wins, and this answers ``refusal``)."""
    done = db.session.execute(update(SendPlan).where(SendPlan.id == plan.id, SendPlan.state.in_(allowed))
                              .values(updated_at=utcnow(), **values)
                              .execution_options(synchronize_session=False)).rowcount
    if done != 1:
        db.session.rollback()
        raise Refused(refusal)
    db.session.expire(plan)


def started_refusal(plan):
    return _("This plan has started (“%(state)s”): it can no longer be changed; you can pause it while "
             "it sends.", state=plan.state.label)


def update_plan(plan, wanted, actor, *, state=None, found=None, now=None):
    """Edit a draft or scheduled plan (and maybe schedule it); refused once it has started."""
    now = now or utcnow()
    values = _values(wanted, now)
    if state is not None:
        values["state"] = state
    if found is not None:
        values.update(cost_messages=found.messages, quota_left=found.left)
    _change(plan, EDITABLE, values, started_refusal(plan))
    audit.record("send_plan.edited", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


def cancel(plan, actor):
    """Stop the plan: before it starts nothing goes; a yearly plan makes no more runs; a run that is sending
    stops (what LINE has accepted stays sent, the rest is recorded cancelled)."""
    from . import runs
    if plan.state in (PlanState.SENDING, PlanState.PAUSED) or (plan.repeat and plan.state == PlanState.SCHEDULED):
        allowed = (PlanState.SCHEDULED, PlanState.SENDING, PlanState.PAUSED)
    else:
        allowed = EDITABLE
    _change(plan, allowed, {"state": PlanState.CANCELLED, "finished_at": utcnow()},
            _("Nothing is left to cancel: the plan is “%(state)s”.", state=plan.state.label))
    for run in _open_runs(plan):
        runs.stop(run)
    audit.record("send_plan.cancelled", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


def pause(plan, actor):
    """Hold a plan while it sends (what is not yet with LINE waits), or a yearly plan between runs."""
    from . import runs
    allowed = (PlanState.SENDING, PlanState.SCHEDULED) if plan.repeat else (PlanState.SENDING,)
    _change(plan, allowed, {"state": PlanState.PAUSED},
            _("Only a plan that is sending can be paused; this one is “%(state)s”.", state=plan.state.label))
    for run in _open_runs(plan):
        runs.hold(run)
    audit.record("send_plan.paused", shop=plan.shop_id, actor=actor, target=plan.name, plan=plan.id)
    db.session.commit()


def resume(plan, actor):
    from . import runs
    sending = any(run.state in (PlanState.SENDING, PlanState.PAUSED) for run in plan.runs)
    back = PlanState.SCHEDULED if plan.repeat and not sending else PlanState.SENDING
    values = {"state": back}
    now = utcnow()
    if plan.repeat and plan.send_at is not None and plan.send_at < now:
        # The days it was paused are not sent late: the next run is the next one ahead.
        values["send_at"] = schedule.next_occurrence(plan.repeat, plan.hour, now)
    _change(plan, (PlanState.PAUSED,), values,
            _("Only a paused plan can be resumed; this one is “%(state)s”.", state=plan.state.label))
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
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    no_consent: int = 0
    blocked: int = 0
    over_quota: int = 0
    cancelled: int = 0
    # A run still being written slice by slice (plans/filling.py): ``recipients`` are those written so far.
    preparing: bool = False

    @property
    def done(self):
        return self.sent + self.failed + self.over_quota + self.cancelled


def totals(plan) -> Totals:
    """The plan's counts over its runs (a one-off plan has one)."""
    found = Totals()
    for run in plan.runs:
        for name in ("recipients", "sent", "failed", "no_consent", "blocked", "over_quota", "cancelled"):
            setattr(found, name, getattr(found, name) + getattr(run, name))
        found.preparing = found.preparing or run.filling
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
