"""Helpers for webhook tests and the benchmark: LINE-shaped events, real signatures, channels in the database.

Signatures are computed here exactly as LINE computes them (Base64 HMAC-SHA256 of the raw body under the
Channel secret); nothing in the app's signature check is bypassed.
"""
import base64
import copy
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def shared_dir() -> Path:
    """``../shared`` beside the repository, or WIZARD_SHARED_DIR."""
    return Path(os.environ.get("WIZARD_SHARED_DIR") or ROOT.parent / "shared")


def sdk_events_file() -> Path:
    return shared_dir() / "line-platform" / "webhook-events.sdk-tests.json"


def sdk_sample():
    """The 28-event sample from line-bot-sdk-python's tests, as a dict (pytest-skips when absent)."""
    import pytest
    path = sdk_events_file()
    if not path.exists():
        pytest.skip(f"{path} is absent: the LINE reference data (../shared/line-platform) is not checked out")
    return json.loads(path.read_text(encoding="utf-8"))


def ulid(at_ms: int | None = None) -> str:
    """A ULID, as LINE's ``webhookEventId`` is: 48-bit milliseconds + 80 random bits in Crockford base32."""
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    value = (at_ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def encode(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(secret: str, body: bytes) -> dict:
    return {"Content-Type": "application/json; charset=utf-8", "x-line-signature": sign(secret, body)}


def text_event(user_id: str, text: str, *, event_id=None, timestamp=None, redelivery=False, mode="active"):
    """A one-to-one text message event as LINE sends it."""
    timestamp = timestamp or int(time.time() * 1000)
    return {
        "type": "message", "mode": mode, "timestamp": timestamp,
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": event_id or ulid(timestamp),
        "deliveryContext": {"isRedelivery": redelivery},
        "replyToken": secrets.token_hex(16),
        "message": {"id": str(secrets.randbelow(10 ** 17)), "type": "text", "text": text,
                    "quoteToken": secrets.token_urlsafe(16)},
    }


def follow_event(user_id: str, *, kind="follow", mode="active", timestamp=None, reply_token=True):
    timestamp = timestamp or int(time.time() * 1000)
    event = {
        "type": kind, "mode": mode, "timestamp": timestamp,
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": ulid(timestamp), "deliveryContext": {"isRedelivery": False},
    }
    if kind == "follow" and mode == "active" and reply_token:
        event["replyToken"] = secrets.token_hex(16)
        event["follow"] = {"isUnblocked": False}
    return event


def with_unique_ids(sample: dict, destination: str) -> dict:
    """The SDK sample with a fresh ULID per event and our bot as destination.

    The SDK's file gives all 28 events the same ``webhookEventId`` ("testwebhookeventid") because its own
    parser never looks at it. LINE gives every event its own ULID, and the receiver stores each
    (channel, webhookEventId) once, so as-is the file is one event delivered 28 times.
    """
    payload = copy.deepcopy(sample)
    payload["destination"] = destination
    for event in payload["events"]:
        event["webhookEventId"] = ulid(event["timestamp"])
    return payload


def make_channel(app, shop_slug, *, channel_id=None, secret=None, bot_user_id=None):
    """A connected Channel row for the shop, written straight to the database; returns its plain facts."""
    from wizard import crypto
    from wizard.extensions import db
    from wizard.models import Channel, Shop
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=shop_slug))
        channel = Channel(
            shop_id=shop.id, channel_id=channel_id or str(1_600_000_000 + secrets.randbelow(10 ** 8)),
            webhook_token=crypto.new_token(), bot_user_id=bot_user_id or "U" + secrets.token_hex(16),
        )
        channel.secret = secret or secrets.token_hex(16)
        db.session.add(channel)
        db.session.commit()
        return {"id": channel.id, "channel_id": channel.channel_id, "secret": channel.secret,
                "token": channel.webhook_token, "bot_user_id": channel.bot_user_id,
                "path": f"/line/webhook/{channel.webhook_token}"}
