"""The shop's one state — onboarding, healthy, attention, broken or dormant — derived from its step results and
our own traffic, with the reason and since when.

Every place that shows a shop's state (the wizard, the staff console, the status API, ``line doctor``,
``line check-all``) reads it from here: ``evaluate()`` (status.py) records it each time it runs, and lists read
the recorded row (models.ShopHealth) instead of evaluating thousands of shops.

- onboarding: the shop has never been seen connected (or its connection was reset on purpose); the reason is
  the current step's.
- healthy: connected and nothing is off.
- attention: it works, or nothing is known to be wrong, but something is off: a check could not run, the
  auto-response is unconfirmed, a connection entered again has not proved itself yet, the month's message
  quota is nearly used. Webhook redelivery is never a condition: a shop set up as the setup document says
  (which does not mention it: the switch is only in LINE Developers Console) is healthy, and the console
  recommends the switch to staff (``redelivery_known``).
- broken: it was connected and a step that matters needs action now (LINE says something is set wrong); the
  reason is that step's, and ``step`` is the page that fixes it. "The Channel secret was reissued" is said
  only when LINE itself refuses the stored secret (a fresh token) while deliveries arrive with another
  signature: a run of refused signatures alone is anyone's forgery and makes the shop attention
  (``signature_refused``), never broken.
- dormant: connected, but LINE counts new friends whose follow events never reached us (and, for
  ``silent_while_friends_grow``, nothing at all arrived for far longer than the shop's usual gap).

``state_changed`` (a blinker signal) fires when the state or its reason changes; the watch opens and closes
alerts on it (watch/alerts.py), so this module never needs to know about them.
"""
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from blinker import Namespace
from flask import current_app
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..line import store
from ..models import ShopHealth, ShopStateChange, WebhookEvent, iso_utc, utcnow
from ..statuses import ShopState
from .context import TRANSIENT, signature_refusals
from .registry import CONNECTED_KEY
from .state import State

NEVER = datetime(1970, 1, 1)  # a new row's updated_at: any evaluation is newer
# The states are statuses.ShopState (the models store them); these names stay for the modules that use them.
ONBOARDING, HEALTHY, ATTENTION, BROKEN, DORMANT = ShopState
STATES = tuple(ShopState)
ALERTING = (BROKEN, DORMANT)
LABELS = {state: state.label for state in ShopState}

# Sentences of the reasons only this module gives (the others are the steps' own, see reasons.py).
REASONS = {
    "connected": _l("Connected: LINE delivers the account's events to the CRM."),
    "quota_nearly_used": _l(
        "%(used)s of this month's %(limit)s messages are used (%(left)s left). Pushed messages, the customer "
        "form among them when a reply is no longer possible, stop when none are left: raise the plan in LINE "
        "Official Account Manager, or wait for next month."),
    # No longer given (redelivery is advice, not a condition); kept for states recorded before.
    "redelivery_unconfirmed": _l(
        "Nobody has confirmed that “Use webhook redelivery” is on, and LINE has never redelivered anything: "
        "an event the CRM cannot take at once would be lost. Turn it on in LINE Developers Console and tick the "
        "box in step %(fix_number)s."),
    "signature_refused": _l(
        "Deliveries with a wrong signature are arriving: %(count)s since %(first_at_local)s, none valid since. "
        "LINE still accepts the saved Channel secret, so they are not LINE's own (anyone who knows the webhook "
        "URL can send them); if the secret is reissued, LINE will say so and the shop shows it at once."),
    "silent_while_friends_grow": _l(
        "Nothing has arrived from LINE since %(last_event_at_local)s, although LINE counts %(new_friends)s new "
        "friends since then: their follow events never reached the CRM."),
    "followers_without_follows": _l(
        "LINE counts %(new_friends)s more friends than at %(since_at_local)s, but no follow event arrived in that "
        "time: new friends are not reaching the CRM."),
}

signals = Namespace()
# sender: the shop; keyword arguments: health (the ShopHealth row, already updated), previous (state, reason).
state_changed = signals.signal("shop-state-changed")


@dataclass
class Verdict:
    state: ShopState
    reason: str
    step: str | None = None
    detail: dict = field(default_factory=dict)
    # When the evidence behind it began (the first refused delivery of a run), if earlier than the evaluation:
    # the recorded ``since`` says when it started, not when it was noticed.
    began: datetime | None = None

    @property
    def label(self):
        return LABELS[self.state]


def derive(shop, status, connected_once, now=None):
    """The shop's state from its evaluated ``status`` (status.ShopStatus) and our own traffic."""
    now = now or utcnow()
    steps = status.steps
    if shop.channel is None or not (connected_once or status.connected):
        current = next((r for r in steps if not r.done), None)
        if current is None:
            return Verdict(ONBOARDING, "not_checked", CONNECTED_KEY)
        return Verdict(ONBOARDING, _own_reason(current), current.fix_key, dict(current.detail))
    if not status.connected:
        failing = [r for r in steps if not r.satisfied]
        reissued = next((r for r in failing if r.reason == "secret_reissued"), None)
        if reissued is not None:
            # LINE refuses the stored secret and deliveries arrive signed with another: the cause, named with
            # when its first refused delivery came (steps/webhook_url.py gives it only then).
            return Verdict(BROKEN, reissued.reason, reissued.fix_key, dict(reissued.detail),
                           _at_or_none(reissued.detail.get("first_at")))
        for result in failing:
            if result.state == State.ACTION:
                return Verdict(BROKEN, result.reason, result.fix_key, dict(result.detail))
        # "Could not ask LINE", or a step still to prove itself (a secret entered again): nothing is known to
        # be wrong, so nobody is alerted; the shop needs a look.
        first = failing[0]
        return Verdict(ATTENTION, first.reason, first.fix_key, dict(first.detail))
    dormant = dormancy(shop.channel, now)
    if dormant is not None:
        return dormant
    for result in steps:
        if result.state == State.UNVERIFIABLE or (result.state == State.ACTION and not result.blocks):
            return Verdict(ATTENTION, result.reason, result.fix_key, dict(result.detail))
    refused = signature_refusals(shop.channel)
    if refused is not None:
        # A run of deliveries refused for their signature, while LINE (asked after the newest of them, see
        # status.Evidence) still accepts the stored secret: not LINE's, so a look, not an alarm.
        return Verdict(ATTENTION, "signature_refused", None, refused.detail(), refused.first_at)
    quota = quota_nearly_used(shop.channel)
    if quota is not None:
        return Verdict(ATTENTION, "quota_nearly_used", None, quota)
    return Verdict(HEALTHY, "connected", None)


def quota_nearly_used(channel):
    """The month's quota as last read (watch/drift.py) when at least QUOTA_WARN_PERCENT of it is used (the
    conversation page warns from the same share), else None.

    A reading from an earlier month says nothing about this one (LINE counts calendar months)."""
    quota = (channel.check_results or {}).get("quota")
    if not quota or quota.get("type") != "limited" or not quota.get("value"):
        return None
    if quota.get("at", "")[:7] != iso_utc(utcnow())[:7]:
        return None
    used, limit = int(quota.get("totalUsage") or 0), int(quota["value"])
    if used * 100 < float(current_app.config["QUOTA_WARN_PERCENT"]) * limit:
        return None
    return {"used": used, "limit": limit, "left": max(0, limit - used)}


def redelivery_known(shop):
    """LINE cannot tell us whether it redelivers what we could not take at once; a redelivered event proves it,
    and otherwise the owner confirms it on step 5's page. Advice only (the console's shop page recommends it
    while this is False): it never keeps a shop from being healthy."""
    if shop.channel is None:
        return False
    from . import confirmations
    return confirmations.given(shop, "webhook_redelivery") or shop.channel.redelivery_seen_at is not None


def _at_or_none(text):
    return datetime.fromisoformat(text.rstrip("Z")) if text else None


def _own_reason(result):
    """A step that only waits for another says so; the shop's reason is the other step's."""
    if result.reason == "fix_step_first":
        return result.detail.get("blocker_reason") or result.reason
    return result.reason


# ---- passive signals: LINE's friend count against the follow events we received ----------------------------

def follower_readings(channel):
    """LINE's daily friend counts the watch has read for this channel, oldest first: [{"at", "followers"}]."""
    return list((channel.check_results or {}).get("followers_history", []))


def dormancy(channel, now):
    """A dormant Verdict when LINE counts new friends whose follow events did not reach us, else None.

    Two readings of LINE's friend count (at most daily, watch/drift.py) bracket a time span; friends added in
    it must each have sent a follow event. LINE's count is net of blocks, so a rise proves that follows were
    missed only when no follow arrived at all in the span (one day earlier included: LINE's statistics run a
    day behind)."""
    readings = follower_readings(channel)
    if len(readings) < 2:
        return None
    latest = readings[-1]
    last_event_at = _last_heard(channel)
    # The last reading taken before we last heard from a friend (the oldest one, if we never did since).
    baseline = readings[0]
    for reading in readings[:-1]:
        if last_event_at is not None and _at(reading) <= last_event_at:
            baseline = reading
    new_friends = latest["followers"] - baseline["followers"]
    if new_friends < current_app.config["DORMANT_MIN_NEW_FRIENDS"]:
        return None
    window_start = _at(baseline) - timedelta(days=1)
    follows = db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent).where(
        WebhookEvent.channel_id == channel.id, WebhookEvent.type == "follow",
        WebhookEvent.received_at >= window_start))
    if follows:
        return None
    silent = last_event_at is None or now - last_event_at > usual_silence(channel, now)
    if silent:
        return Verdict(DORMANT, "silent_while_friends_grow", "webhook_url",
                       {"last_event_at": iso_utc(last_event_at), "new_friends": new_friends})
    return Verdict(DORMANT, "followers_without_follows", "webhook_url",
                   {"since_at": baseline["at"], "new_friends": new_friends})


def usual_silence(channel, now):
    """How long this shop may stay quiet before it is unusual: ten of its usual gaps between events over the
    last four weeks (once there are enough to tell a usual gap), never less than ``DORMANT_AFTER_HOURS``."""
    window = timedelta(days=28)
    count = db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent).where(
        WebhookEvent.channel_id == channel.id, WebhookEvent.received_at >= now - window)) or 0
    floor = timedelta(hours=current_app.config["DORMANT_AFTER_HOURS"])
    return max(floor, window / count * 10) if count >= 5 else floor


def _last_heard(channel):
    """When the newest event arrived. Deliveries with no event (LINE's verification, which the watch's daily
    test makes) store none, so they never count: they pass even while every friend's event is lost."""
    return db.session.scalar(db.select(db.func.max(WebhookEvent.received_at))
                             .where(WebhookEvent.channel_id == channel.id))


def _at(reading):
    return datetime.fromisoformat(reading["at"].rstrip("Z"))


# ---- recording ---------------------------------------------------------------------------------------------

def record(shop, status, now=None):
    """Derive the shop's state from ``status`` and keep it in its ShopHealth row (the caller commits).

    ``now`` is when the evaluation began. ``since`` moves only when the state or the reason changes; each
    change is kept for the timeline and announced on ``state_changed``. ``checked_at`` is the newest live check
    behind the status. Two cases leave the row as it is:
    - an evaluation that began after this one has recorded already (a slow watch check finishing after the
      owner's page saw the fix): the newer verdict stands;
    - the shop was broken or dormant and LINE could not be asked this time: nothing shows it was fixed, so it
      stays as it was, with its last real check's time (and its alert stays open, sending nothing new).
    Either way ``status.verdict`` is what this evaluation found: the check history (status.py) keeps that,
    since it says what each check saw, not what the shop's row kept."""
    now = now or utcnow()
    health = _row(shop)
    connected_once = health.connected_once_at is not None and shop.channel is not None
    verdict = status.verdict = derive(shop, status, connected_once, now)
    if health.updated_at is not None and health.updated_at > now:
        return health
    if health.state in ALERTING and verdict.state == ATTENTION and verdict.reason in TRANSIENT:
        health.updated_at = now
        return health
    if shop.channel is None:
        health.connected_once_at = None  # reset on purpose: setting up again, not broken
    elif status.connected and health.connected_once_at is None:
        health.connected_once_at = now
    previous = (health.state, health.reason)
    changed = previous != (verdict.state, verdict.reason)
    if changed:
        health.since = _since(health, verdict, now)
        db.session.add(ShopStateChange(shop_id=shop.id, at=health.since, state=verdict.state,
                                       reason=verdict.reason, previous_state=previous[0],
                                       previous_reason=previous[1]))
    health.state, health.reason, health.step = verdict.state, verdict.reason, verdict.step
    health.detail = {k: v for k, v in verdict.detail.items() if isinstance(v, (str, int, float, bool, type(None)))}
    health.updated_at = now
    live = [result.checked_at for step, result in zip(_registry(), status.steps, strict=True)
            if step.live and result.reason != "not_checked"]
    if live:
        health.checked_at = max(live)
    if changed:
        state_changed.send(shop, health=health, previous=previous)
    return health


def _since(health, verdict, now):
    """When the new state began: when its evidence began (``verdict.began``), but never before the state it
    replaces was recorded (nor after this evaluation)."""
    if verdict.began is None or health.updated_at is None:
        return now
    floor = health.since if health.since is not None else verdict.began
    return min(now, max(verdict.began, floor))


def _row(shop):
    """The shop's ShopHealth row, made if missing; on PostgreSQL locked, so two workers recording one shop at
    once take turns (SQLite has one writer anyway) and never both log the same change."""
    if shop.health is None:
        now = utcnow()
        db.session.execute(store.dialect_insert(ShopHealth).values(
            shop_id=shop.id, state=ONBOARDING, reason="not_checked", since=now, detail={}, updated_at=NEVER)
            .on_conflict_do_nothing(index_elements=["shop_id"]))
    query = (db.select(ShopHealth).where(ShopHealth.shop_id == shop.id).with_for_update()
             .execution_options(populate_existing=True))
    return db.session.scalars(query).one()


def _registry():
    from .registry import registry
    return registry()


def describe(health):
    """The sentence for a recorded state's reason."""
    from .reasons import describe as describe_reason
    return describe_reason(health.reason, health.detail or {}, fix=health.step)


def as_json(health):
    """The keys the status API and ``check-all`` share: ``state``, ``reason``, ``since`` (and ``fix_step``)."""
    if health is None:
        return {"state": ONBOARDING, "reason": "not_checked", "since": None, "fix_step": None}
    return {"state": health.state, "reason": health.reason, "since": iso_utc(health.since.replace(microsecond=0)),
            "fix_step": health.step}
