"""POST /line/webhook/<token>: verify, store, acknowledge; nothing else (see worker.py for the rest).

LINE counts a delivery as failed when we take longer than 2 seconds, and it does not come back for a 200 we
gave but did not keep. So the request does only what makes the delivery durable: find the channel by its
random token, check the body's size and signature, check it has LINE's shape, and in one transaction store
the delivery and each event (unique per channel on ``webhookEventId``, so duplicates and redeliveries are
stored once). Nothing here calls LINE; the worker runs the events after the answer.

Under load, requests that arrive together share one transaction (group_commit.py); each still answers
only after its own delivery is committed. The benchmark (tests/bench/webhook.py) shows why it matters. The
common case (a cached channel, a good signature, LINE's body) is taken before Flask by fast_path.py, the same
way (``Delivery``, ``store_delivery``, the same answer); everything else comes here.

Refusals are never stored as deliveries (the body may be forged); they bump a per-channel counter with the
reason, so the wizard can tell "the Channel secret was reissued" (steady ``bad_signature``) apart from stray
noise. A body refused for its signature is also kept encrypted and bounded in the quarantine (quarantine.py):
if LINE signed it with a secret not entered yet, it is stored once that secret is, and no friend is lost.
"""
import logging
import os
import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg

from blinker import Namespace
from flask import Blueprint, abort, current_app, request
from sqlalchemy import bindparam, select, update

from .. import crypto, metrics, observability, queue
from ..extensions import db
from ..models import Channel, Shop, WebhookDelivery, utcnow
from . import payload, quarantine, store
from .group_commit import GroupCommit
# The refusal reasons and the body checks live with the row shapes in payload.py (the quarantine checks bodies
# the same way); they are named here too, where pages, `line stats` and the tests have always found them.
from .payload import (  # noqa: F401
    BAD_SIGNATURE, INVALID_JSON, INVALID_PAYLOAD, MAX_NESTING, MISSING_SIGNATURE, REASONS, TOO_LARGE,
    NotLinePayload, nested_too_deep, parse_payload, signature_matches)

bp = Blueprint("receiver", __name__)
RULE = "/line/webhook/<token>"  # the route's pattern: its metrics' label, here and in fast_path.py
# Set by fast_path.py when it could not store a delivery: the route raises it as its own (a 500, logged).
FAILED_ENVIRON = "wizard.webhook.failed"
log = logging.getLogger(__name__)

# Sent (with the app as sender) once a body refused for its signature is kept and the refusal counted: the app
# factory connects the watch's doorbell (watch/evidence.py), which re-checks the shop; line/ never imports
# the watch.
signature_refused = Namespace().signal("wizard.line.signature-refused")


def _refuse(channel_id, reason, status, detail):
    store.count_rejection(channel_id, reason)
    metrics.WEBHOOKS_REJECTED.labels(reason).inc()
    # Only the reason goes to the log (its JSON line names the shop): the body may carry personal data, the
    # signature is not ours to keep.
    log.info("webhook refused for channel %s: %s (%s)", channel_id, reason, detail)
    return {"message": detail}, status


def _read_body(limit):
    """The raw body, or None when it is longer than ``limit`` (declared or actually sent)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


_DELIVERIES = WebhookDelivery.__table__
_CHANNELS = Channel.__table__
_DELIVERY_TIME_RESOLUTION = store.DELIVERY_TIME_RESOLUTION
# Core statements, not ORM queries: LINE waits on this path, and the ORM's per-statement bookkeeping would
# cost more than the SQL itself.
_SHOPS = Shop.__table__
_FIND_CHANNEL = (select(_CHANNELS.c.id, _CHANNELS.c.secret_encrypted, _CHANNELS.c.last_delivery_at, _SHOPS.c.slug)
                 .join(_SHOPS, _SHOPS.c.id == _CHANNELS.c.shop_id)
                 .where(_CHANNELS.c.webhook_token == bindparam("token")))


class KnownChannel:
    """What the receiver needs of a channel, kept for WEBHOOK_CHANNEL_CACHE_SECONDS (10) so busy channels are not
    read per delivery (each read costs a pooled connection, a query and a decryption: with a 1 s cache, the
    threads that all found it expired at once made 5 % of deliveries pay for one).

    A signature that does not match the kept secret is checked again against the stored one before it is
    refused, so a secret changed a moment ago never costs a delivery; ``last_delivery_at`` is what this
    process last wrote, which is all it needs to write it at most once a second.

    When it expires, one thread reads it again while the others go on with what is kept (``refreshing``):
    every thread of a busy process finding it expired at once used to open a database connection each (the
    receiver's own writes do not use the app's pool, so it is cold) and held up deliveries for 100–200 ms.
    """

    __slots__ = ("id", "slug", "secret", "last_delivery_at", "fresh_until", "refreshing")

    def __init__(self, row, fresh_for):
        self.id, self.slug, self.secret = row.id, row.slug, crypto.decrypt(row.secret_encrypted)
        self.last_delivery_at = row.last_delivery_at
        self.fresh_until = time.monotonic() + fresh_for
        self.refreshing = threading.Lock()


def _known_channel(token, fresh=False):
    cache = current_app.extensions.setdefault("wizard_known_channels", {})
    known = cache.get(token)
    if not fresh and known is not None:
        if known.fresh_until > time.monotonic() or not known.refreshing.acquire(blocking=False):
            return known  # fresh, or another thread is reading it again right now
        try:
            return _read_channel(cache, token)
        finally:
            known.refreshing.release()
    return _read_channel(cache, token)


# A new worker reads these channels before it counts as ready (warm_up): LINE delivered to them this recently.
RECENT_CHANNELS = timedelta(minutes=1)
RECENT_CHANNELS_LIMIT = 1000
_RECENT_CHANNELS = (select(_CHANNELS.c.id, _CHANNELS.c.secret_encrypted, _CHANNELS.c.last_delivery_at, _SHOPS.c.slug,
                           _CHANNELS.c.webhook_token)
                    .join(_SHOPS, _SHOPS.c.id == _CHANNELS.c.shop_id)
                    .where(_CHANNELS.c.webhook_token.is_not(None), _CHANNELS.c.last_delivery_at >= bindparam("since"))
                    .order_by(_CHANNELS.c.last_delivery_at.desc()).limit(RECENT_CHANNELS_LIMIT))


def warm_up(app):
    """Make this process ready for LINE's deliveries before it is counted as ready (wizard/restart.py, by
    gunicorn.conf.py's ``post_worker_init``): the group commit's writer connected, its statement prepared and
    planned (GroupCommit.warm_up), and the channels LINE delivered to in the last minute known, so their next
    deliveries take the fast path. Without it, the first deliveries to each new worker of a rolling restart
    paid for all of that while LINE waited (0.5 s each on a busy machine, against 5 ms). Returns how many
    channels it read."""
    with app.app_context():
        group = _group_commit(app)
        if group.needs_app_context:
            group.warm_up()
        cache = app.extensions.setdefault("wizard_known_channels", {})
        fresh_for = float(app.config["WEBHOOK_CHANNEL_CACHE_SECONDS"])
        rows = db.session.execute(_RECENT_CHANNELS, {"since": utcnow() - RECENT_CHANNELS}).all()
        db.session.remove()
        if not group.needs_app_context:
            group.warm_up()
        known = 0
        for row in rows:
            try:
                channel = KnownChannel(row, fresh_for)
            except crypto.SecretUnreadable:
                continue  # left to the route, which says so for its deliveries as ever
            cache.setdefault(row.webhook_token, channel)
            known += 1
    return known


def _read_channel(cache, token):
    row = db.session.connection().execute(_FIND_CHANNEL, {"token": token}).first()
    if row is None:
        cache.pop(token, None)
        return None
    known = KnownChannel(row, float(current_app.config["WEBHOOK_CHANNEL_CACHE_SECONDS"]))
    if len(cache) > 10_000:  # tokens come from the URL: never let them grow the cache without bound
        cache.clear()
    cache[token] = known
    return known


@bp.post(RULE)
def webhook(token):
    if len(token) > 64:
        abort(404)
    channel = _known_channel(token)
    if channel is None:
        abort(404)
    channel_id, secret = channel.id, channel.secret
    observability.name_shop(channel.slug)  # the request's log lines name the shop, never the token
    failed = request.environ.pop(FAILED_ENVIRON, None)
    if failed is not None:
        raise failed  # fast_path.py verified and tried to store it: the database failed

    body = _read_body(current_app.config["WEBHOOK_MAX_BYTES"])
    if body is None:
        return _refuse(channel_id, TOO_LARGE, 413, "The body is too large.")

    signature = request.headers.get("x-line-signature", "")
    if not signature:
        return _refuse(channel_id, MISSING_SIGNATURE, 400, "The x-line-signature header is missing.")
    if not signature_matches(secret, body, signature):
        # The secret may have been changed a moment ago: read it again before refusing.
        channel = _known_channel(token, fresh=True)
        if channel is None:
            abort(404)
        if not signature_matches(channel.secret, body, signature):
            # LINE may be signing with a secret not entered yet: the body is kept (encrypted, bounded) until
            # the next secret is saved, and committed with the refusal's count.
            quarantine.keep(channel_id, body, signature)
            refused = _refuse(channel_id, BAD_SIGNATURE, 400, "The signature does not match the Channel secret.")
            signature_refused.send(current_app._get_current_object())  # the watch's doorbell, if connected
            return refused

    try:
        destination, events = parse_payload(body)
    except NotLinePayload as exc:
        return _refuse(channel_id, exc.reason, 400, str(exc))

    delivery = Delivery(channel, destination, body, events, observability.current_request_id())
    store_delivery(current_app._get_current_object(), delivery)
    if delivery.error is not None:
        raise delivery.error  # the database failed: a 500, and LINE may deliver again
    return _stored(delivery.new)


def store_delivery(app, delivery):
    """Commit a verified delivery (group commit), then wake the worker if it has new events and count it.
    ``delivery.error`` says why it failed; nothing is counted then."""
    _group_commit(app).submit(delivery)
    if delivery.error is not None:
        return
    if delivery.new:
        queue.wake(app)  # worker.wake(), without needing an app context (fast_path.py has none)
    metrics.WEBHOOKS_RECEIVED.inc()


def _stored(new):
    """``{"message": "ok", "stored": n}``: written out, not through jsonify, on the path LINE waits on."""
    return current_app.response_class(b'{"message":"ok","stored":%d}\n' % new, mimetype="application/json")


class Delivery:
    """One verified request on its way into the database: ``done`` once committed, or failed (``error``)."""

    __slots__ = ("channel", "destination", "body", "events", "request_id", "unique", "new", "error", "done",
                 "woken")

    def __init__(self, channel, destination, body, events, request_id=None):
        self.channel, self.request_id = channel, request_id
        self.destination, self.body, self.events = destination, body, events
        # The same id twice in one body: keep the first, as the database would for two deliveries.
        self.unique = payload.unique_events(events)
        self.new, self.error, self.done = 0, None, False


def _group_commit(app=None):
    """This process's GroupCommit for the app's database (made on first use, so after gunicorn forks)."""
    app = app or current_app
    key = ("wizard_group_commit", os.getpid())
    group = app.extensions.get(key)
    if group is None:
        with app.app_context():
            group = app.extensions.setdefault(key, GroupCommit(_write, db.engine.url))
    return group


def _write(batch, connection):
    """Deliveries, their new events and the channels' timestamps, in one transaction on ``connection``: a
    psycopg connection (PostgreSQL, group_commit.PostgresWriter: the whole batch is one statement) or a
    SQLAlchemy one (SQLite, a row at a time, prepared once).

    Each delivery is first written as having all its events new (as it almost always has); on SQLite the
    count is corrected when some were already stored. ``last_delivery_at`` is written at most once a second,
    so a busy channel does not queue every transaction on its own row.
    """
    now = utcnow()
    touched, verified, redelivered, evented = {}, set(), set(), set()
    for item in batch:
        channel = item.channel
        if item.events:
            evented.add(channel.id)
        if any(payload.is_redelivery(event) for event in item.events):
            redelivered.add(channel.id)  # rare, and proof that redelivery is on even for a duplicate
        if channel.last_delivery_at is None or now - channel.last_delivery_at >= _DELIVERY_TIME_RESOLUTION:
            touched[channel.id] = channel
        if not item.events:
            # LINE's "Verify" button and the webhook test send an empty, signed events list.
            touched[channel.id] = channel
            verified.add(channel.id)
    evented &= touched.keys()  # written with last_delivery_at, so at most once a second too
    if isinstance(connection, psycopg.Connection):
        _write_postgres(batch, connection, now, touched, verified, redelivered, evented)
    else:
        _write_rows(batch, connection, now, touched, verified, redelivered, evented)
    for channel in touched.values():
        channel.last_delivery_at = now


def _write_postgres(batch, raw, now, touched, verified, redelivered, evented):
    deliveries = [(item.channel.id, item.destination or None, item.body.decode("utf-8"), item.events,
                   item.request_id) for item in batch]
    new_counts = store.insert_batch_postgres(raw, deliveries, now, touched, verified, redelivered, evented)
    for item, new in zip(batch, new_counts, strict=True):
        item.new = new


def _write_rows(batch, connection, now, touched, verified, redelivered, evented):
    deliveries = [payload.delivery_row(item.channel.id, item.destination, item.body, item.events,
                                       len(item.unique), item.request_id, now) for item in batch]
    delivery_ids = store.insert_deliveries(connection, deliveries)
    rows = [payload.event_row(item.channel.id, delivery_id, event, now)
            for item, delivery_id in zip(batch, delivery_ids, strict=True) for event in item.unique]
    new_per_delivery = Counter(store.insert_new_events(connection, rows) if rows else ())
    for item, delivery_id in zip(batch, delivery_ids, strict=True):
        item.new = new_per_delivery[delivery_id]
        if item.new != len(item.unique):
            connection.execute(update(_DELIVERIES).where(_DELIVERIES.c.id == delivery_id)
                               .values(new_event_count=item.new))
    for channel_id in touched:
        values = {"last_delivery_at": now}
        if channel_id in verified:
            values["last_verified_at"] = now
        if channel_id in evented:
            values["last_event_at"] = now
        connection.execute(update(_CHANNELS).where(_CHANNELS.c.id == channel_id).values(**values))
    for channel_id in redelivered:
        connection.execute(update(_CHANNELS).where(_CHANNELS.c.id == channel_id).values(redelivery_seen_at=now))
