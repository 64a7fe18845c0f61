"""What customers send besides text: each message's display fields, and the content of images, videos, audio
and files, fetched from LINE once and kept (models.MessageContent), then shown only to people who may see
the contact.

Why in the database and not as files under instance/: a deployment runs several web machines and consumers
against one PostgreSQL (README, Production); a file written by the consumer that fetched it would be missing
on the machine that serves the page. In the database every machine sees it, it is backed up and deleted with
its contact (cascade), and ``LINE_CONTENT_MAX_BYTES`` (20 MiB) keeps each row bounded. Lists never load the
bytes (the column is deferred).

The fetch goes through the queue (wizard/queue.py ``fetch_content``) after the event's commit, never in a
handler: ``queue_fetch`` only writes the pending row. A fetch claims its row through the claim helper
(wizard/claims.py ``claim_until``: ``next_attempt_at`` pushed a lease ahead), so a second task (or the sweep
ringing again) finds it taken, and it records its outcome only while that lease is still its own; a consumer
that dies mid-fetch leaves the row due again when the lease runs out, and the sweep rings for it. LINE answers
202 while it still prepares a video or audio (``content_not_ready``): tried again later, up to
``len(DELAYS) + 1`` times (config.py ``BACKOFF["content"]``).
LINE keeps content only for a while: ``not_found`` means it is gone (``failed``).

Each shop has a storage quota (``LINE_CONTENT_SHOP_QUOTA_BYTES``, over all its channels): one busy shop
cannot fill the database every shop shares. Content that would go past it is not fetched or not kept
(``over_quota``), and the conversation tells the owner to open it in LINE's own chat.

Served with its own type only when it is a plain picture, video or sound a browser shows by itself; anything
else (files, SVG, HTML …) is an attachment, and every answer carries a CSP that runs nothing, so content a
customer sent can never act as a page of ours.
"""
import logging
import math
import re
import unicodedata
from datetime import timedelta

from flask import current_app, send_file
from sqlalchemy import and_, func, or_, select

from .. import claims
from ..extensions import db
from ..line.client import client_for
from ..line.problems import LineProblem, retryable
from ..models import Channel, MessageContent, utcnow
from ..rows import insert_ignoring
from ..statuses import ContentStatus

log = logging.getLogger(__name__)

WITH_CONTENT = ("image", "video", "audio", "file")
# Seconds before each further attempt (LINE's Retry-After wins when longer); then failed.
BACKOFF = claims.backoff("content")
DELAYS = BACKOFF.delays
MAX_ATTEMPTS = BACKOFF.attempts
# A fetch holds its row this long: 20 MiB from a slow LINE can take minutes (LINE_TIMEOUT bounds each read, not
# the whole download), and the sweep must not start a second fetch beside a live one.
LEASE = timedelta(minutes=10)
INLINE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4", "video/quicktime",
                "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wav"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
              "video/mp4": "mp4", "video/quicktime": "mov", "audio/mp4": "m4a", "audio/m4a": "m4a",
              "audio/x-m4a": "m4a", "audio/aac": "aac", "audio/mpeg": "mp3", "audio/ogg": "ogg",
              "audio/wav": "wav"}
CONTENT_POLICY = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$")


# ---- what a message event carries (pure; customers/rules.py calls these in its handler) -----------------------

def _text(value, limit):
    return value.replace("\x00", "")[:limit] if isinstance(value, str) else None


def _number(value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not low <= value <= high:
        return None
    return value


def message_detail(kind, message):
    """The fields a page needs to show a message of ``kind``, read defensively from LINE's message object
    (a signed body is LINE's, but a field of the wrong type must not break the conversation). None for
    text and for kinds we do not know."""
    detail = {}
    if kind == "sticker":
        detail = {"packageId": _text(message.get("packageId"), 20), "stickerId": _text(message.get("stickerId"), 20),
                  "resourceType": _text(message.get("stickerResourceType"), 30),
                  "text": _text(message.get("text"), 100)}
        keywords = message.get("keywords")
        if isinstance(keywords, list):
            detail["keywords"] = [_text(k, 50) for k in keywords[:15] if isinstance(k, str)]
    elif kind == "location":
        detail = {"title": _text(message.get("title"), 100), "address": _text(message.get("address"), 300),
                  "latitude": _number(message.get("latitude"), -90, 90),
                  "longitude": _number(message.get("longitude"), -180, 180)}
    elif kind == "file":
        detail = {"fileName": _text(message.get("fileName"), 255),
                  "fileSize": _number(message.get("fileSize"), 0, 10 ** 12)}
    if kind in ("video", "audio"):
        detail["duration"] = _number(message.get("duration"), 0, 10 ** 9)
    if kind in ("image", "video", "audio"):
        provider = message.get("contentProvider")
        if isinstance(provider, dict) and provider.get("type") == "external":
            original = _text(provider.get("originalContentUrl"), 1000)
            preview = _text(provider.get("previewImageUrl"), 1000)
            detail["external"] = {"original": original if original and original.startswith("https://") else None,
                                  "preview": preview if preview and preview.startswith("https://") else None}
        image_set = message.get("imageSet")
        if kind == "image" and isinstance(image_set, dict):
            detail["imageSet"] = {"index": _number(image_set.get("index"), 0, 1000),
                                  "total": _number(image_set.get("total"), 0, 1000)}
    detail = {key: value for key, value in detail.items() if value is not None}
    return detail or None


def fetchable(kind, message):
    """Whether LINE holds content for this message (an external provider's content is at its own URL)."""
    if kind not in WITH_CONTENT or not message.get("id"):
        return False
    provider = message.get("contentProvider")
    return not (isinstance(provider, dict) and provider.get("type") == "external")


def queue_fetch(message):
    """Write the content's pending row for an incoming ``Message`` (in the handler's transaction); returns its
    id. One row per message (unique), so an event run again queues nothing new."""
    now = utcnow()
    row = {"message_id": message.id, "channel_id": message.channel_id,
           "line_message_id": message.line_message_id, "status": ContentStatus.PENDING, "attempts": 0,
           "created_at": now}
    size = (message.detail or {}).get("fileSize")
    if size and size > int(current_app.config["LINE_CONTENT_MAX_BYTES"]):
        # LINE said how big the file is: not worth asking for what we would refuse anyway.
        row.update(status=ContentStatus.TOO_LARGE, size=int(size), error="larger than LINE_CONTENT_MAX_BYTES")
    insert_ignoring(MessageContent, [row], ["message_id"])
    return db.session.scalar(select(MessageContent.id).filter_by(message_id=message.id))


# ---- fetching ----------------------------------------------------------------------------------------------

class Outcome:
    READY, RETRY, FAILED, TOO_LARGE, SKIPPED = "ready", "retry", "failed", "too_large", "skipped"
    OVER_QUOTA = "over_quota"


def shop_usage(channel):
    """Bytes of content kept for the shop of ``channel``, over every channel the shop ever connected."""
    c = MessageContent
    return db.session.scalar(select(func.coalesce(func.sum(c.size), 0)).join(Channel, Channel.id == c.channel_id)
                             .where(Channel.shop_id == channel.shop_id, c.status == ContentStatus.READY)) or 0


def _over_quota(channel, adding=0):
    return shop_usage(channel) + adding > int(current_app.config["LINE_CONTENT_SHOP_QUOTA_BYTES"])


def _due(now):
    c = MessageContent
    return and_(c.status == ContentStatus.PENDING, or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now))


def _claim(content_id):
    """The lease's end when this fetch took the row (the claim), else None."""
    return claims.claim_until(MessageContent, content_id, _due(utcnow()), LEASE)


def _media_type(value):
    kind = (value or "").split(";")[0].strip().lower()
    return kind if _MEDIA_TYPE.match(kind) else "application/octet-stream"


def fetch(content_id):
    """One attempt at one content row. Returns (outcome, seconds until the next attempt or None)."""
    claim = _claim(content_id)
    if claim is None:
        return Outcome.SKIPPED, None
    row = db.session.get(MessageContent, content_id)

    def done(outcome, **values):
        claims.finish_until(MessageContent, row.id, claim, next_attempt_at=None, **values)
        return outcome, None

    if row.attempts > MAX_ATTEMPTS:
        # Earlier tries ended in something no LineProblem names (an unreadable secret, a bug): stop here, once.
        return done(Outcome.FAILED, status=ContentStatus.FAILED,
                    error=f"gave up after {row.attempts - 1} tries")
    channel = db.session.get(Channel, row.channel_id)
    if _over_quota(channel):  # full already: not worth asking LINE for what cannot be kept
        return done(Outcome.OVER_QUOTA, status=ContentStatus.OVER_QUOTA,
                    error="the shop's storage quota is full")
    client = client_for(channel)
    try:
        data, content_type = client.message_content(row.line_message_id)
    except LineProblem as problem:
        if problem.code == "content_too_large":
            return done(Outcome.TOO_LARGE, status=ContentStatus.TOO_LARGE, error=problem.detail)
        if problem.code == "content_not_ready":
            try:
                if client.content_status(row.line_message_id) == "failed":  # LINE's word, not ours
                    return done(Outcome.FAILED, status=ContentStatus.FAILED,
                                error="LINE could not prepare it")
            except LineProblem:
                pass  # the next attempt asks again
        elif problem.code == "not_found" or not retryable(problem):
            return done(Outcome.FAILED, status=ContentStatus.FAILED,
                        error=f"{problem.code} (status {problem.status}): {problem.detail or ''}"[:2000])
        if BACKOFF.exhausted(row.attempts):
            return done(Outcome.FAILED, status=ContentStatus.FAILED,
                        error=f"{problem.code} after {row.attempts} tries")
        delay = BACKOFF.delay(row.attempts, problem.retry_after)
        claims.finish_until(MessageContent, row.id, claim, next_attempt_at=utcnow() + timedelta(seconds=delay),
                            error=f"{problem.code} (status {problem.status})")
        return Outcome.RETRY, delay
    if _over_quota(channel, len(data)):
        return done(Outcome.OVER_QUOTA, status=ContentStatus.OVER_QUOTA, size=len(data),
                    error="over the shop's storage quota (LINE_CONTENT_SHOP_QUOTA_BYTES)")
    return done(Outcome.READY, status=ContentStatus.READY, data=data, size=len(data),
                content_type=_media_type(content_type)[:100], fetched_at=utcnow(), error=None)


def due_ids(limit=None):
    query = select(MessageContent.id).where(_due(utcnow())).order_by(MessageContent.id)
    return list(db.session.scalars(query.limit(limit) if limit else query))


def fetch_due(limit=None):
    """Fetch every content row due now, in this process (tests, ``worker --once``); returns how many."""
    count = 0
    for content_id in due_ids(limit):
        fetch(content_id)
        count += 1
    return count


# ---- serving -----------------------------------------------------------------------------------------------

def _file_name(message, content):
    """The download's name: the customer's own for a file, made safe for a header and a disk. LINE passes the
    name as the sender's phone had it, so it may hold CR/LF or other control characters (which cannot go in
    a Content-Disposition header and made the download fail), path separators, or nothing usable at all."""
    name = (message.detail or {}).get("fileName")
    if message.type == "file" and name:
        name = "".join("_" if char in '/\\"' else " " if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
                       else char for char in name)
        name = " ".join(name.split()).strip(". ")
        if name:
            return name
    extension = EXTENSIONS.get(content.content_type or "", "bin")
    return f"line-{message.type}-{message.line_message_id or message.id}.{extension}"


def response(message, content):
    """The kept content as a download (files, and any type a browser would not simply show) or inline."""
    import io
    inline = message.type != "file" and content.content_type in INLINE_TYPES
    answer = send_file(io.BytesIO(content.data or b""), mimetype=content.content_type or "application/octet-stream",
                       as_attachment=not inline, download_name=_file_name(message, content), conditional=False,
                       etag=False, max_age=0)
    answer.headers["Content-Security-Policy"] = CONTENT_POLICY
    answer.headers["Content-Length"] = str(len(content.data or b""))
    return answer
