"""What a LINE webhook body must be before it is stored, and the rows it becomes.

The receiver (a delivery as it arrives) and the quarantine (a refused body proved later by a new secret) check
a body the same way and store the same rows; both import this module, so neither imports the other. Nothing
here touches the database: the checks are exactly what the tables need (strings a text column takes on both
databases, a timestamp that fits a signed 64-bit integer, JSON both databases' JSON columns take).
"""
import base64
import hashlib
import hmac
import json
import math
import re

from linebot.v3.webhook import SignatureValidator

from ..statuses import EventStatus

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


# One decoder for every body (json.loads with hooks builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

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
        payload = _DECODER.decode(body.decode("utf-8"))
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


# ---- the rows a checked body becomes ------------------------------------------------------------------------

def is_redelivery(event):
    """LINE marks an event it sends again (after we failed to take it) in ``deliveryContext.isRedelivery``."""
    return bool((event.get("deliveryContext") or {}).get("isRedelivery"))


def unique_events(events):
    """The events of one body, each ``webhookEventId`` once (the first kept, as the database would keep the
    first of two deliveries)."""
    unique, seen = [], set()
    for event in events:
        if event["webhookEventId"] not in seen:
            seen.add(event["webhookEventId"])
            unique.append(event)
    return unique


def event_row(channel_id, delivery_id, event, now):
    """A checked event as a ``webhook_events`` row: new, pending, never tried."""
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
        "is_redelivery": is_redelivery(event),
        "payload": event,
        "status": EventStatus.PENDING.value,
        "attempts": 0,
        "received_at": now,
    }


def delivery_row(channel_id, destination, body: bytes, events, new_events, request_id, now):
    """A checked body as a ``webhook_deliveries`` row (the body kept as the exact text LINE sent)."""
    return {
        "channel_id": channel_id, "received_at": now, "destination": destination or None,
        "event_count": len(events), "new_event_count": new_events, "body": body.decode("utf-8"),
        "request_id": request_id,
    }
