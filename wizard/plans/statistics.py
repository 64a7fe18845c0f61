"""LINE's statistics of a plan: every multicast request of a run carries the plan's ``customAggregationUnits``
name (``SendPlan.unit``), and LINE's insight aggregation (impressions, clicks) is read for it once a day for
14 days after each run started, kept on the plan with the time it was read (the page says when). A yearly
(birthday) plan runs again and again, so what counts is its runs' own starts (``SendPlanRun.started_at``),
never the plan's first start: the numbers cover the span from the earliest run still within its 14 days to
today, and a plan whose last run is older than that is read no more.

LINE counts units for push and multicast only: a broadcast (a plan for every friend) and the personal
messages (one push each through the outbox, which names no unit) have no per-plan numbers; ``counted`` says
whether a plan has any, and the page says so instead of showing zeros.
"""
import logging
from datetime import timedelta

from sqlalchemy import exists, func, or_, select

from ..extensions import db
from ..models import SendPlan, SendPlanRun, utcnow
from ..outgoing import sender as senders
from . import schedule

log = logging.getLogger(__name__)

DAYS = 14
EVERY = timedelta(days=1)
KEYS = ("impressions", "unique_impressions", "clicks", "unique_clicks")


def _counted_runs():
    """The runs LINE counts per unit: multicast (not broadcast, not personal) that sent something."""
    return (SendPlanRun.broadcast.is_(False), SendPlanRun.personal.is_(False), SendPlanRun.sent > 0)


def _recent_multicast(now):
    """A run of the plan LINE counts that started within the last 14 days."""
    return exists().where(SendPlanRun.plan_id == SendPlan.id, *_counted_runs(),
                          SendPlanRun.started_at.between(now - timedelta(days=DAYS), now))


def since(plan, now):
    """When the span of the plan's numbers begins: the start of its earliest counted run within the last 14
    days (None: no such run)."""
    return db.session.scalar(select(func.min(SendPlanRun.started_at)).where(
        SendPlanRun.plan_id == plan.id, *_counted_runs(),
        SendPlanRun.started_at.between(now - timedelta(days=DAYS), now)))


def counted(plan) -> bool:
    """Does LINE count this plan's opens and clicks (some run of it went by multicast)?"""
    return any(not run.broadcast and not run.personal and run.sent for run in plan.runs)


def due(now=None):
    """Plans with a run sent by multicast within the last 14 days whose statistics are a day old (or never
    read)."""
    now = now or utcnow()
    return db.session.scalars(select(SendPlan).where(
        SendPlan.unit.is_not(None), _recent_multicast(now),
        or_(SendPlan.stats_at.is_(None), SendPlan.stats_at <= now - EVERY + timedelta(minutes=5)))
        .order_by(SendPlan.id)).all()


def refresh(plan, now=None):
    """Read the plan's statistics from LINE and keep them; False when LINE could not tell (kept as they were)."""
    now = now or utcnow()
    channel = plan.shop.channel
    if channel is None:
        return False
    first = since(plan, now) or plan.started_at
    if first is None:
        return False
    sender = senders.current()
    try:
        found = sender.statistics(channel, plan.unit, schedule.local_day(first), schedule.local_day(now))
    except sender.failure as problem:
        log.warning("statistics of send plan %s not read: %s", plan.id, problem.code)
        return False
    plan.stats = {key: int(found.get(key) or 0) for key in KEYS}
    plan.stats_at = now
    db.session.commit()
    return True


def refresh_due(now=None):
    done = 0
    for plan in due(now):
        done += bool(refresh(plan, now))
    return done
