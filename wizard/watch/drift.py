"""Drift watch: ask LINE on a schedule whether each connected shop still works, within LINE's limits.

A round (every ``WATCH_INTERVAL_MINUTES``, one scheduler however many consumers: queue.once_per_slot) puts one
``check_shop`` task per due shop on the queue, so the checks spread over every consumer. A check is the
wizard's own evaluation, forced: a fresh token, the bot info and the webhook endpoint, at most 3 LINE calls
per shop. Once a day it also runs LINE's webhook test and reads LINE's friend count (the passive signals in
steps/health.py compare it with the follow events we received) and the month's message quota. LINE allows
only 60 webhook tests and 60 friend-count reads an hour per channel, so the watch runs the test at most once an
hour whoever asks, and reads each day's friend count once. The state it records opens and closes alerts by
itself (alerts.py listens to the state's changes).

Shops that never connected are not watched: onboarding has no drift, and their owners' pages check anyway.
"""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import update

from ..extensions import db
from ..line.problems import LineProblem
from ..models import Channel, Shop, ShopHealth, iso_utc, utcnow
from ..steps import webhook_test
from ..steps.health import as_json
from ..steps.status import evaluate

log = logging.getLogger(__name__)

DAILY = timedelta(hours=24)
CHECK_NOW_DAILY_AFTER = timedelta(hours=1)
"""How old the once-a-day checks must be before "check now" runs them again. Staff press it because they want
LINE's answer now, but they may press it again and again for up to 50 shops; LINE's webhook test and friend
count allow 60 calls an hour per channel, shared with the owner's own test button."""
WEBHOOK_RETEST_AFTER = timedelta(hours=1)
"""The shortest time between two of the watch's webhook tests of one channel. While LINE's test is what broke a
shop it runs again so the shop heals by itself once fixed, but within LINE's 60 tests an hour (each retest
is two attempts) and leaving the owner's own test button its share."""
FOLLOWER_READINGS_KEPT = 35
JST = timedelta(hours=9)


def interval():
    return timedelta(minutes=float(current_app.config["WATCH_INTERVAL_MINUTES"]))


def watched():
    """Shops with a connection that was seen working once: the ones that can drift. A shop with a channel but
    no recorded state yet (saved before the watch existed) is checked once to find out."""
    return (db.select(Shop.id).outerjoin(ShopHealth, ShopHealth.shop_id == Shop.id)
            .join(Channel, (Channel.shop_id == Shop.id) & Channel.disconnected_at.is_(None))
            .where(ShopHealth.connected_once_at.is_not(None) | ShopHealth.shop_id.is_(None)))


def due_shop_ids(now=None):
    """Watched shops whose last live check is older than one interval and whose check is not queued already
    (consumers that fall behind must not find a round's checks piling up behind each other)."""
    now = now or utcnow()
    cutoff = now - interval() + timedelta(seconds=30)  # a round's own checks finish a little after it starts
    return db.session.scalars(watched().where(
        (ShopHealth.checked_at.is_(None)) | (ShopHealth.checked_at <= cutoff),
        (ShopHealth.queued_at.is_(None)) | (ShopHealth.queued_at <= cutoff))
        .order_by(ShopHealth.checked_at.is_not(None), ShopHealth.checked_at)).all()


def check(shop, now=None, daily_after=DAILY):
    """Check one shop now and commit its recorded state; returns its ShopHealth.

    The once-a-day checks run too when the last ones are ``daily_after`` old (check_now asks sooner). LINE's
    webhook test also runs again while it is what broke the shop (at most every ``WEBHOOK_RETEST_AFTER``), so
    a shop fixed (or a test failed by a passing hiccup) is not left broken for a day."""
    now = now or utcnow()
    health = shop.health
    channel = shop.channel
    watched_shop = channel is not None and health is not None and health.connected_once_at is not None
    if watched_shop and (health.daily_checked_at is None or now - health.daily_checked_at >= daily_after):
        _daily(shop, channel, now)
        health.daily_checked_at = now
    elif watched_shop and health.reason == "webhook_test_failed":
        _webhook_test(shop, channel, now)
    status = evaluate(shop, force=True)
    db.session.commit()
    return status.health


def _daily(shop, channel, now):
    """LINE's webhook test (is our URL answering as LINE sees it?), yesterday's friend count, the quota."""
    _webhook_test(shop, channel, now)
    for name, read in (("friend count", read_followers), ("message quota", read_quota)):
        try:
            read(channel, now)
        except LineProblem as problem:
            log.info("%s of shop %s could not be read: %s", name, shop.slug, problem.code)


def _webhook_test(shop, channel, now, attempts=2):
    """LINE's test of our URL, unless one ran (ours or the owner's) within ``WEBHOOK_RETEST_AFTER``: its
    answer is still fresh. A failure is tried once more a second later (a deploy's restart, one lost packet)
    before it counts; both attempts count towards LINE's hourly limit."""
    last = last_webhook_test_at(channel)
    if last is not None and now - last < WEBHOOK_RETEST_AFTER:
        return None
    for attempt in range(attempts):
        try:
            test = webhook_test.run(channel)
        except LineProblem as problem:
            log.info("webhook test of shop %s could not run: %s", shop.slug, problem.code)
            return None
        if test["success"] or attempt == attempts - 1:
            return test
        time.sleep(1)
    return None


def last_webhook_test_at(channel):
    """When LINE's webhook test of this channel last ran (webhook_test.py keeps the last hour's), or None."""
    history = (channel.check_results or {}).get("webhook_test_history", [])
    return max((datetime.fromisoformat(at.rstrip("Z")) for at in history), default=None)


def read_followers(channel, now):
    """Add LINE's friend count for yesterday (Japan time; today's is not counted yet) to the channel's
    readings, each dated at the end of its day. A day already read is not asked again: once LINE has counted
    a day its count no longer changes, and the call counts towards LINE's 60 an hour."""
    from ..line.client import client_for
    day = (now + JST - timedelta(days=1)).date()
    results = dict(channel.check_results or {})
    readings = list(results.get("followers_history", []))
    if any(r.get("date") == day.isoformat() for r in readings):
        return None
    answer = client_for(channel).followers(day.strftime("%Y%m%d"))
    if answer["status"] != "ready" or answer["followers"] is None:
        return None
    end_of_day = datetime.combine(day, datetime.min.time()) + timedelta(days=1) - JST
    readings.append({"date": day.isoformat(), "at": iso_utc(end_of_day), "followers": answer["followers"],
                     "blocks": answer["blocks"]})
    readings.sort(key=lambda r: r["date"])
    results["followers_history"] = readings[-FOLLOWER_READINGS_KEPT:]
    results["followers"] = readings[-1]
    channel.check_results = results
    return answer


def read_quota(channel, now):
    """This month's message quota and what is used of it (pushes count, replies do not), for the warning
    before it runs out (health.py)."""
    from ..line.client import client_for
    client = client_for(channel)
    quota = client.quota()
    used = client.quota_consumption()
    results = dict(channel.check_results or {})
    results["quota"] = {"at": iso_utc(now), "type": quota["type"], "value": quota["value"],
                        "totalUsage": used["totalUsage"]}
    channel.check_results = results
    return results["quota"]


def check_now(shops):
    """Check these shops one after another (the console's "check now"), the once-a-day checks included when
    they last ran over ``CHECK_NOW_DAILY_AFTER`` ago. Returns their ShopHealth rows."""
    return [check(shop, daily_after=CHECK_NOW_DAILY_AFTER) for shop in shops]


def check_by_id(shop_id):
    """The queue's task: one shop's check, in its own session (jobs.py)."""
    shop = db.session.get(Shop, shop_id)
    if shop is None:
        return None
    try:
        return check(shop)
    except Exception:
        db.session.rollback()
        raise


def round_now(now=None):
    """One round: queue a check for every due shop. Returns how many were queued."""
    from .. import queue
    now = now or utcnow()
    ids = due_shop_ids(now)
    if ids:
        db.session.execute(update(ShopHealth).where(ShopHealth.shop_id.in_(ids)).values(queued_at=now)
                           .execution_options(synchronize_session=False))
    db.session.commit()
    for shop_id in ids:
        queue.check_shop(shop_id)
    return len(ids)


def check_all(threads=8):
    """Check every shop now, in ``threads`` parallel sessions, then send the alerts' e-mails due. Unlike a
    round, shops still setting up are checked too (those with credentials ask LINE; those without ask nothing).
    Returns ([(slug, as_json(health), error or None)] in slug order, LINE calls made, seconds taken); a shop
    whose check failed keeps its recorded state and names the error."""
    from ..metrics import LINE_CALLS
    app = current_app._get_current_object()
    ids = db.session.scalars(db.select(Shop.id).order_by(Shop.slug)).all()
    db.session.commit()
    calls_before = _calls(LINE_CALLS)

    def one(shop_id):
        with app.app_context():
            try:
                health = check_by_id(shop_id)
                return db.session.get(Shop, shop_id).slug, as_json(health), None
            except Exception as exc:  # one shop's failure must not cost every other shop its line
                log.exception("check of shop %s failed", shop_id)
                db.session.rollback()
                shop = db.session.get(Shop, shop_id)
                return shop.slug, as_json(shop.health), f"{type(exc).__name__}"
            finally:
                db.session.remove()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(one, ids))
    from .alerts import notify_due
    notify_due()
    return sorted(results), _calls(LINE_CALLS) - calls_before, time.monotonic() - started


def _calls(counter):
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))
