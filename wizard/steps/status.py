"""A shop's status: run (or reuse) every step's check, store the results, derive "connected".

Step results are stored in ``step_states`` with their time; a live result younger than CHECK_MAX_AGE is reused
instead of asking LINE again. "Connected" is computed from the results every time and never stored.
"""
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app

from ..extensions import db
from ..models import StepState, iso_utc, utcnow
from .checks import DONE, Context, StepResult
from .registry import BY_KEY, EVALUATION_ORDER, STEPS


@dataclass
class ShopStatus:
    shop: object
    results: dict  # key -> StepResult, in wizard order when iterated via ``steps``

    @property
    def steps(self):
        return [self.results[step.key] for step in STEPS]

    @property
    def connected(self):
        return all(result.state == DONE or not result.blocks for result in self.steps)

    @property
    def first_open_step(self):
        """Where "resume" takes the owner: the first step not done (what only they can confirm included)."""
        for result in self.steps:
            if result.state != DONE:
                return result.key
        return None

    def as_json(self):
        return {
            "shop": self.shop.slug,
            "name": self.shop.name,
            "connected": self.connected,
            "steps": [{
                "key": r.key, "state": r.state, "reason": r.reason, "message": r.message,
                "checked_at": iso_utc(r.checked_at.replace(microsecond=0)),
            } for r in self.steps],
        }


def _stored(shop):
    return {row.key: row for row in db.session.scalars(db.select(StepState).filter_by(shop_id=shop.id))}


def _from_row(row):
    return StepResult(row.key, row.state, row.reason, dict(row.detail or {}), row.checked_at,
                      blocks=bool((row.detail or {}).get("_blocks", True)))


def stored_status(shop, rows=None):
    """The status as last checked, without asking anyone: for lists of many shops."""
    rows = rows if rows is not None else _stored(shop)
    results = {}
    for step in STEPS:
        row = rows.get(step.key)
        results[step.key] = _from_row(row) if row else StepResult(step.key, "todo", "not_checked")
    return ShopStatus(shop, results)


def evaluate(shop, force=False):
    """Check every step (live ones only when stale or ``force``d) and save the new results.

    The caller commits; a failure to reach LINE is itself a result ("unverifiable"), never an exception.
    """
    max_age = timedelta(seconds=current_app.config["CHECK_MAX_AGE"])
    now = utcnow()
    stored = _stored(shop)
    ctx = Context(shop)
    for key in EVALUATION_ORDER:
        step = BY_KEY[key]
        row = stored.get(key)
        fresh = (row is not None and ctx.channel is not None and now - row.checked_at < max_age
                 and row.checked_at >= ctx.channel.connected_at)
        if step.live and fresh and not force:
            result = _from_row(row)
        else:
            result = step.check(ctx)
            _save(shop, stored, result)
        ctx.results[key] = result
    return ShopStatus(shop, ctx.results)


def _save(shop, stored, result):
    row = stored.get(result.key)
    if row is None:
        row = StepState(shop_id=shop.id, key=result.key)
        db.session.add(row)
        stored[result.key] = row
    detail = {k: v for k, v in result.detail.items() if _jsonable(v)}
    detail["_blocks"] = result.blocks
    row.state, row.reason, row.detail, row.checked_at = result.state, result.reason, detail, result.checked_at


def _jsonable(value):
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def invalidate(shop, *keys):
    """Forget cached results so the next evaluation asks LINE again (after the owner changed something)."""
    query = db.delete(StepState).where(StepState.shop_id == shop.id)
    if keys:
        query = query.where(StepState.key.in_(keys))
    db.session.execute(query)
