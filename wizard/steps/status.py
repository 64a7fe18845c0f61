"""A shop's status: run (or reuse) every step's check, store the results, derive "connected".

Step results are stored in ``step_states`` with their time; a live result younger than CHECK_MAX_AGE is reused
instead of asking LINE again, unless newer passive evidence contradicts it (LINE delivered an event after a
cached "something is wrong"). "Connected" is computed from the results every time and never stored.

Two histories for the staff console's shop page are written here, where the results are, so that no caller can
forget them: ``step_changes`` (a step's state or reason changed) and ``shop_checks`` (LINE was asked).
"""
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

import click
from flask import current_app, has_request_context, request
from sqlalchemy import func, or_

from ..extensions import db
from ..models import ShopCheck, StepChange, StepState, WebhookEvent, WebhookRejection, iso_utc, utcnow
from . import health
from .context import TRANSIENT, Context, StepResult, latest_event
from .registry import CONNECTED_KEY, registry
from .state import State

log = logging.getLogger(__name__)

# What makes the evaluations in this context run, when the request or process cannot tell (triggered_by).
_trigger = ContextVar("check_trigger", default=None)


@dataclass
class ShopStatus:
    shop: object
    results: dict  # key -> StepResult; ``steps`` gives them in wizard order
    # The shop's state (models.ShopHealth) recorded from these results (health.py); None before any was.
    health: object = None
    # The state these results give (health.Verdict), set by health.record even when it keeps the row as it was.
    verdict: object = None

    @property
    def steps(self):
        return [self.results[step.key] for step in registry()]

    @property
    def connected(self):
        return all(result.satisfied for result in self.steps)

    @property
    def first_open_step(self):
        """Where "resume" takes the owner: the page that fixes the first step not done (what only they can
        confirm included), or the summary when every step is done."""
        for result in self.steps:
            if not result.done:
                return result.fix_key
        return CONNECTED_KEY

    def as_json(self):
        return {
            "shop": self.shop.slug,
            "name": self.shop.name,
            "connected": self.connected,
            **health.as_json(self.health),
            "steps": [{
                "key": r.key, "state": str(r.state), "reason": r.reason, "message": r.message,
                "checked_at": iso_utc(r.checked_at.replace(microsecond=0)),
                "fix_step": r.fix_key,
            } for r in self.steps],
        }


def _stored(shop):
    return {row.key: row for row in db.session.scalars(db.select(StepState).filter_by(shop_id=shop.id))}


def _from_row(row):
    detail = dict(row.detail or {})
    return StepResult(row.key, row.state, row.reason, {k: v for k, v in detail.items() if not k.startswith("_")},
                      row.checked_at, blocks=bool(detail.get("_blocks", True)), fix=detail.get("_fix"))


def stored_status(shop, rows=None):
    """The status as last checked, without asking anyone: for lists of many shops."""
    rows = rows if rows is not None else _stored(shop)
    results = {}
    for step in registry():
        row = rows.get(step.key)
        results[step.key] = _from_row(row) if row else StepResult(step.key, State.TODO, "not_checked")
    return ShopStatus(shop, results, shop.health)


@dataclass
class Evidence:
    """Our own traffic, which outranks a cached answer from LINE: the newest delivery LINE made (LINE calls our
    URL with our secret, so "Use webhook" is on and the URL is ours) and the newest delivery refused for its
    signature.

    A refusal only makes a cached "done" be asked again: anyone who knows the URL can POST a wrong signature,
    so it proves nothing by itself. LINE's own answer about the secret (step 4), or a run of refusals with no
    valid delivery since (``context.signature_refusals``), is what says the secret was reissued."""
    delivered_at: object = None
    rejected_at: object = None

    @classmethod
    def of(cls, channel):
        if channel is None:
            return cls()
        event_at = latest_event(channel, column=WebhookEvent.received_at)
        # A verification (an empty, signed events list) is a valid delivery too, though it stores no event.
        delivered_at = max((at for at in (event_at, channel.last_delivery_at) if at is not None), default=None)
        return cls(delivered_at,
                   db.session.scalar(db.select(db.func.max(WebhookRejection.last_at)).where(
                       WebhookRejection.channel_id == channel.id, WebhookRejection.reason == "bad_signature")))

    def contradicts(self, row):
        """True when something happened after ``row`` was checked that says otherwise."""
        if row.state == State.DONE:
            return self.rejected_at is not None and self.rejected_at > row.checked_at
        return self.delivered_at is not None and self.delivered_at > row.checked_at


def _reusable(step, row, ctx, evidence, changed, max_age, now):
    """May a live step's cached result stand in for asking LINE again?"""
    return (row is not None and ctx.channel is not None and now - row.checked_at < max_age
            and row.checked_at >= ctx.channel.connected_at
            # "Could not ask LINE" is no answer to keep: ask again next time.
            and row.reason not in TRANSIENT
            # A step it depends on has just given another answer: this one's is out of date too.
            and not changed.intersection(step.depends_on)
            and not evidence.contradicts(row))


def evaluate(shop, force=False):
    """Check every step (live ones only when stale or ``force``d) and save the new results.

    The caller commits; a failure to reach LINE is itself a result ("unverifiable"), never an exception.
    """
    max_age = timedelta(seconds=current_app.config["CHECK_MAX_AGE"])
    now = utcnow()
    stored = _stored(shop)
    ctx = Context(shop)
    evidence = Evidence.of(ctx.channel) if stored else Evidence()
    changed = set()
    history = _StepHistory(shop)
    asked_line = False
    for step in registry().evaluation_order():
        row = stored.get(step.key)
        if step.live and not force and _reusable(step, row, ctx, evidence, changed, max_age, now):
            result = _from_row(row)
        else:
            result = step.check(ctx)
            # A live step with no channel has nobody to ask: the wizard's pages of a shop still setting up
            # would otherwise log a "check" on every visit.
            asked_line = asked_line or (step.live and ctx.channel is not None)
            if row is None or (row.state, row.reason) != (str(result.state), result.reason):
                changed.add(step.key)
            _save(shop, stored, result, history)
            if result.reference:
                log.warning("LINE problem ref=%s shop=%s step=%s", result.reference, shop.slug, step.key)
        ctx.results[step.key] = result
    status = ShopStatus(shop, ctx.results)
    status.health = health.record(shop, status, now)
    if asked_line:
        _record_check(shop, status.verdict, now)
    return status


def _save(shop, stored, result, history):
    row = stored.get(result.key)
    before = (row.state, row.reason) if row is not None else history.last(result.key)
    if before != (str(result.state), result.reason):
        db.session.add(StepChange(shop_id=shop.id, key=result.key, at=result.checked_at, state=str(result.state),
                                  reason=result.reason, previous_state=before[0] if before else None,
                                  previous_reason=before[1] if before else None))
    if row is None:
        row = StepState(shop_id=shop.id, key=result.key)
        db.session.add(row)
        stored[result.key] = row
    detail = {k: v for k, v in result.detail.items() if _jsonable(v)}
    detail["_blocks"] = result.blocks
    if result.fix:
        detail["_fix"] = result.fix
    row.state, row.reason, row.detail, row.checked_at = str(result.state), result.reason, detail, result.checked_at


def _jsonable(value):
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


class _StepHistory:
    """Each step's last recorded change, read only when a step has no stored result (a new shop, or results
    forgotten on purpose by connection.forget_results): the step history then continues from what the step
    said before instead of logging the same state again as if it were new."""

    def __init__(self, shop):
        self.shop = shop
        self._last = None

    def last(self, key):
        if self._last is None:
            newest = (db.select(func.max(StepChange.id)).where(StepChange.shop_id == self.shop.id)
                      .group_by(StepChange.key))
            self._last = {key: (state, reason) for key, state, reason in db.session.execute(
                db.select(StepChange.key, StepChange.state, StepChange.reason).where(StepChange.id.in_(newest)))}
        return self._last.get(key)


# ---- the check history -------------------------------------------------------------------------------------

@contextmanager
def triggered_by(trigger):
    """Name what makes the evaluations inside run, where the request alone cannot tell (the console's "check
    now" runs the watch's own check in a staff member's request)."""
    token = _trigger.set(trigger)
    try:
        yield
    finally:
        _trigger.reset(token)


def _who():
    """(trigger, actor): what made this check run and the person behind it, if any. Without a request it is
    the watch (a queue task, or a thread of ``check-all``), or the command line when click runs this thread."""
    actor = None
    if has_request_context():
        from flask_login import current_user
        user = current_user if getattr(current_user, "is_authenticated", False) else None
        actor = user.email if user is not None else None
        if request.blueprint == "api":
            default = "api"
        else:
            default = "staff_page" if user is not None and user.is_staff else "owner_page"
    else:
        default = "cli" if click.get_current_context(silent=True) is not None else "watch"
    return _trigger.get() or default, actor


def _record_check(shop, verdict, now):
    """Keep this check (what ran it, what it found) and trim the shop's older ones in the same breath.

    Trimming here rather than in a periodic sweep keeps it simple and exact: only a shop that is checked grows,
    and each write removes at most the few rows that just fell out of the bounds (one indexed DELETE)."""
    trigger, actor = _who()
    db.session.add(ShopCheck(shop_id=shop.id, at=now, trigger=trigger, actor=actor, state=verdict.state,
                             reason=verdict.reason, step=verdict.step))
    db.session.flush()
    days = float(current_app.config["CHECK_HISTORY_DAYS"])  # bounds: config.DEFAULTS says why
    cap = int(current_app.config["CHECK_HISTORY_PER_SHOP"])
    beyond_cap = (db.select(ShopCheck.id).where(ShopCheck.shop_id == shop.id)
                  .order_by(ShopCheck.at.desc(), ShopCheck.id.desc()).offset(cap))
    db.session.execute(db.delete(ShopCheck).where(
        ShopCheck.shop_id == shop.id,
        or_(ShopCheck.at < now - timedelta(days=days), ShopCheck.id.in_(beyond_cap)))
        .execution_options(synchronize_session=False))
