"""Passive evidence updates a shop's recorded state when it arrives, not at the next watch round.

The staff list, the list API and the CSV read the state recorded at the last evaluation (steps/health.py). Our
own traffic often knows better before the watch asks again: deliveries refused for their signature (the secret
may have been reissued, or a stranger is forging them), and valid deliveries to a shop recorded broken, dormant
or needing a look (LINE calls us again: "Use webhook" is back on, the URL works). So each of these rings a
doorbell (``ring``: per process, debounced; the request pays a lock and a clock read, and a timer thread
queues a ``scan``); the scan finds the shops whose evidence is newer than their recorded state and queues one re-check
each (``recheck``: the shop's own evaluation, steps/status.py, outside any request).

The re-check asks LINE afresh (the watch's own check: a fresh token and the bot info with the stored secret,
and the webhook endpoint; 3 calls): does LINE still accept the stored secret? That is what tells a reissued
secret (LINE refuses the stored one: broken at once) from forged POSTs (LINE accepts it: attention, never
broken), and what confirms a fix a delivery suggests.

One re-check per burst, and at most one per ``EVIDENCE_SPACING`` per shop, however much arrives: each shop's
``evidence_check_at`` (models.ShopHealth) says when its re-check runs, and a scan queues a new one only
once that time has passed (a compare-and-set, so concurrent scans on several consumers queue it once). A
forged flood therefore costs LINE at most three calls per shop per spacing. The periodic sweep scans too, so
evidence whose doorbell was lost (a process killed) is picked up within a minute.
"""
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from ..extensions import db
from ..line.store import DELIVERY_TIME_RESOLUTION
from ..models import Channel, Shop, ShopHealth, WebhookRejection, utcnow
from ..statuses import ShopState

log = logging.getLogger(__name__)

DEBOUNCE = timedelta(seconds=1)
"""A re-check waits this long after the evidence that asked for it, so a burst (LINE's deliveries of a few
friends, a handful of forged POSTs) is judged once, whole."""
RING_INTERVAL = 0.25
"""Seconds from a ring to its scan, and between two scans one process queues (a burst rings once)."""
# Deliveries say something about these states only: LINE calling us again disproves "not delivering", "could
# not ask", "not proved yet", "forged refusals". (A quota nearly used is not something a delivery changes.)
STATES_A_DELIVERY_CAN_CLEAR = (ShopState.BROKEN, ShopState.DORMANT, ShopState.ATTENTION)
REASONS_A_DELIVERY_CANNOT_CLEAR = ("quota_nearly_used",)


def spacing():
    return timedelta(seconds=float(current_app.config["EVIDENCE_SPACING_SECONDS"]))


def ring(app=None):
    """Evidence just arrived (a refused signature, events stored): queue a scan soon. Never raises."""
    from .. import queue
    queue.ring_evidence(app, RING_INTERVAL)


def waiting(now=None):
    """(shop id, evidence_check_at) of the shops whose passive evidence is newer than their recorded state and
    whose re-check is not waiting to run already."""
    now = now or utcnow()
    h = ShopHealth
    free = or_(h.evidence_check_at.is_(None), h.evidence_check_at < now)
    live = (Channel.shop_id == h.shop_id) & Channel.disconnected_at.is_(None)
    refused = (select(h.shop_id, h.evidence_check_at).join(Channel, live)
               .join(WebhookRejection, (WebhookRejection.channel_id == Channel.id)
                     & (WebhookRejection.reason == "bad_signature"))
               .where(free, WebhookRejection.last_at > h.updated_at))
    rows = {row.shop_id: row.evidence_check_at for row in db.session.execute(refused)}
    # Shops not healthy are few: their last delivery is compared here, not in SQL (SQLite has no interval
    # arithmetic). last_delivery_at is written at most once a second (the receiver), so a delivery up to a
    # second after it may not show: anything recorded that close to the state counts as maybe newer.
    delivered = (select(h.shop_id, h.evidence_check_at, h.updated_at, Channel.last_delivery_at).join(Channel, live)
                 .where(free, h.state.in_(STATES_A_DELIVERY_CAN_CLEAR),
                        h.reason.not_in(REASONS_A_DELIVERY_CANNOT_CLEAR), Channel.last_delivery_at.is_not(None)))
    for row in db.session.execute(delivered):
        if row.last_delivery_at + DELIVERY_TIME_RESOLUTION > row.updated_at:
            rows[row.shop_id] = row.evidence_check_at
    return sorted(rows.items())


def scan(now=None):
    """Queue one re-check for each shop with evidence newer than its recorded state; returns the shop ids.

    Each re-check runs ``DEBOUNCE`` from now, or ``EVIDENCE_SPACING`` after the shop's previous one if that
    is later; the claim is a compare-and-set on ``evidence_check_at``, so of several scans one queues it."""
    from .. import queue
    now = now or utcnow()
    queued = []
    for shop_id, previous in waiting(now):
        due = now + DEBOUNCE
        if previous is not None:
            due = max(due, previous + spacing())
        same = (ShopHealth.evidence_check_at.is_(None) if previous is None
                else ShopHealth.evidence_check_at == previous)
        claimed = db.session.execute(update(ShopHealth).where(ShopHealth.shop_id == shop_id, same)
                                     .values(evidence_check_at=due)
                                     .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if claimed:
            queue.recheck_shop(shop_id, delay=max((due - now).total_seconds(), 0.05))
            queued.append(shop_id)
    return queued


def recheck(shop_id):
    """Evaluate one shop now, asking LINE afresh, and commit its recorded state. Named "evidence" in the
    shop's timeline."""
    from ..steps.status import evaluate, triggered_by
    shop = db.session.get(Shop, shop_id)
    if shop is None or shop.channel is None:
        return None
    try:
        with triggered_by("evidence"):
            status = evaluate(shop, force=True)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    health = status.health
    log.info("shop %s re-checked on new evidence: %s (%s)", shop.slug, health.state, health.reason)
    return health
