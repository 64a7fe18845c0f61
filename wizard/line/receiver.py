"""POST /line/webhook/<token>: verify, store, acknowledge; nothing else (see worker.py for the rest).

LINE counts a delivery as failed when we take longer than 2 seconds, and it does not come back for a 200 we
gave but did not keep. So the request does only what makes the delivery durable: find the channel by its
random token, check the body's size and signature, check it has LINE's shape, and in one transaction store
the delivery and each event (unique per channel on ``webhookEventId``, so duplicates and redeliveries are
stored once). Nothing here calls LINE; the worker runs the events after the answer.

Under load, requests that arrive together share one transaction (group_commit.py); each still answers
only after its own delivery is committed. The benchmark (tests/bench/webhook.py) shows why it matters.

Refusals are never stored as deliveries (the body may be forged); they bump a per-channel counter with the
reason, so the wizard can tell "the Channel secret was reissued" (steady ``bad_signature``) apart from stray
noise. A body refused for its signature is also kept encrypted and bounded in the quarantine (quarantine.py):
if LINE signed it with a secret not entered yet, it is stored once that secret is, and no friend is lost.
"""
import base64
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter

import psycopg

from flask import Blueprint, abort, current_app, request
from linebot.v3.webhook import SignatureValidator
from sqlalchemy import bindparam, select, update

from .. import crypto, metrics, observability
from ..extensions import db
from ..models import Channel, Shop, WebhookDelivery, utcnow
from ..watch import evidence
from . import store, worker
from .group_commit import GroupCommit

bp = Blueprint("receiver", __name__)
log = logging.getLogger(__name__)

# Rejection reasons as stored in WebhookRejection.reason (pages and `line stats` read these codes).
MISSING_SIGNATURE = "missing_signature"
BAD_SIGNATURE = "bad_signature"
TOO_LARGE = "too_large"
INVALID_JSON = "invalid_json"
INVALID_PAYLOAD = "invalid_payload"
REASONS = (MISSING_SIGNATURE, BAD_SIGNATURE, TOO_LARGE, INVALID_JSON, INVALID_PAYLOAD)

# Column sizes in models.WebhookEvent; a longer value is not something LINE sends.
_MAX_EVENT_ID = 64
_MAX_TYPE = 40


class NotLinePayload(ValueError):
    """A correctly signed body that is not a LINE webhook request body."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


def _refuse(channel_id, reason, status, detail):
    store.count_rejection(channel_id, reason)
    metrics.WEBHOOKS_REJECTED.labels(reason).inc()
    # Only the reason goes to the log (its JSON line names the shop): the body may carry personal data, the
    # signature is not ours to keep.
    log.info("webhook refused for channel %s: %s (%s)", channel_id, reason, detail)
    return {"message": detail}, status


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """Constant-time check of ``x-line-signature`` (Base64 HMAC-SHA256 of the raw body under the secret).

    LINE's SDK validator takes the body as text; a body that is not UTF-8 cannot be LINE's JSON, but we
    still check it byte for byte (same HMAC, same constant-time compare) so that a correctly signed odd body
    is reported as "not a LINE payload" and not as a wrong secret.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        return hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), expected)
    return SignatureValidator(secret).validate(text, signature)


def _reject_constant(name):
    """NaN and Infinity are not JSON (PostgreSQL's JSON columns refuse them), so LINE never sends them."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    """A number too large for a float (1e400) is valid JSON, but Python reads it as infinity, which could only
    be written back as the non-JSON ``Infinity``: LINE sends no such number, so the body is refused."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError("a number out of range")
    return value


# LINE's events are a few levels deep (the deepest, a message's emoji list, about 6). A signed body nested far
# deeper parses (json.loads goes to about 990 levels) but then makes the database layer's JSON serialisation
# recurse past Python's limit: refuse it before parsing, as not JSON LINE would send.
MAX_NESTING = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nested_too_deep(body: bytes, limit: int = MAX_NESTING) -> bool:
    """True when brackets outside JSON strings nest more than ``limit`` deep (or the body is not JSON anyway).

    Nearly every body has fewer opening brackets than ``limit`` in all, which settles it in C; only the rest
    are walked, bracket by bracket, once their strings (which may hold any bracket) are taken out."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def parse_payload(body: bytes):
    """Return (destination, events) or raise NotLinePayload; checks only what storing needs."""
    if nested_too_deep(body):
        raise NotLinePayload(INVALID_JSON, f"The body is nested more than {MAX_NESTING} levels deep.")
    try:
        # Decode first: json.loads(bytes) would also accept UTF-16/32, which LINE never sends.
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
        if b"\\ud" in body or b"\\uD" in body:
            # Both databases must take the event as it is: no lone surrogate (\udXXX) anywhere in it.
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; deep nesting recurses
        raise NotLinePayload(INVALID_JSON, "The body is not JSON.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise NotLinePayload(INVALID_PAYLOAD, "The body has no 'events' list.")
    destination = payload.get("destination")
    if destination is not None and not _storable(destination, 40):
        raise NotLinePayload(INVALID_PAYLOAD, "'destination' is not a bot user id.")
    for index, event in enumerate(payload["events"]):
        problem = _event_problem(event)
        if problem:
            raise NotLinePayload(INVALID_PAYLOAD, f"events[{index}]: {problem}")
    return destination, payload["events"]


def _storable(value, max_length):
    """A string a text column takes on both databases: not empty, not too long, no NUL, no lone surrogate."""
    if not isinstance(value, str) or not 0 < len(value) <= max_length or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _event_problem(event):
    if not isinstance(event, dict):
        return "not an object"
    if not _storable(event.get("type"), _MAX_TYPE):
        return "no 'type'"
    timestamp = event.get("timestamp")
    # bool is an int in Python (a JSON true is not a timestamp); the column is a signed 64-bit integer.
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp < 2 ** 63:
        return "no 'timestamp' in milliseconds"
    if not _storable(event.get("webhookEventId"), _MAX_EVENT_ID):
        return "no 'webhookEventId'"
    if "mode" in event and not _storable(event["mode"], 20):
        return "'mode' is not a short string"
    for key in ("source", "deliveryContext"):
        if key in event and not isinstance(event[key], dict):
            return f"'{key}' is not an object"
    source = event.get("source") or {}
    for key, length in (("type", 10), ("userId", 40)):
        if key in source and not _storable(source[key], length):
            return f"'source.{key}' is not a short string"
    return None


def _event_row(channel_id, delivery_id, event, now):
    source = event.get("source") or {}
    return {
        "channel_id": channel_id,
        "delivery_id": delivery_id,
        "webhook_event_id": event["webhookEventId"],
        "type": event["type"],
        "mode": event.get("mode"),
        "timestamp": event["timestamp"],
        "source_type": source.get("type"),
        "source_user_id": source.get("userId"),
        "is_redelivery": store.is_redelivery(event),
        "payload": event,
        "status": "pending",
        "attempts": 0,
        "received_at": now,
    }


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


@bp.post("/line/webhook/<token>")
def webhook(token):
    if len(token) > 64:
        abort(404)
    channel = _known_channel(token)
    if channel is None:
        abort(404)
    channel_id, secret = channel.id, channel.secret
    observability.name_shop(channel.slug)  # the request's log lines name the shop, never the token

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
            # the next secret is saved, and committed with the refusal's count. (Imported here: quarantine.py
            # checks bodies with this module's functions.)
            from . import quarantine
            quarantine.keep(channel_id, body, signature)
            refused = _refuse(channel_id, BAD_SIGNATURE, 400, "The signature does not match the Channel secret.")
            evidence.ring()  # debounced doorbell: the shop is re-checked on the queue (watch/evidence.py)
            return refused

    try:
        destination, events = parse_payload(body)
    except NotLinePayload as exc:
        return _refuse(channel_id, exc.reason, 400, str(exc))

    delivery = Delivery(channel, destination, body, events, observability.current_request_id())
    _group_commit().submit(delivery)
    if delivery.error is not None:
        raise delivery.error  # the database failed: a 500, and LINE may deliver again
    if delivery.new:
        worker.wake()
    metrics.WEBHOOKS_RECEIVED.inc()
    return _stored(delivery.new)


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
        self.unique, seen = [], set()
        for event in events:
            if event["webhookEventId"] not in seen:
                seen.add(event["webhookEventId"])
                self.unique.append(event)
        self.new, self.error, self.done = 0, None, False


def _group_commit():
    """This process's GroupCommit for the app's database (made on first use, so after gunicorn forks)."""
    key = ("wizard_group_commit", os.getpid())
    group = current_app.extensions.get(key)
    if group is None:
        group = current_app.extensions.setdefault(key, GroupCommit(_write, db.engine.url))
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
        if any(store.is_redelivery(event) for event in item.events):
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
    deliveries = [{
        "channel_id": item.channel.id, "received_at": now, "destination": item.destination or None,
        "event_count": len(item.events), "new_event_count": len(item.unique),
        "body": item.body.decode("utf-8"), "request_id": item.request_id,
    } for item in batch]
    delivery_ids = store.insert_deliveries(connection, deliveries)
    rows = [_event_row(item.channel.id, delivery_id, event, now)
            for item, delivery_id in zip(batch, delivery_ids, strict=True) for event in item.unique]
    new_per_delivery = Counter(store.insert_new_events(connection, rows, now) if rows else ())
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
