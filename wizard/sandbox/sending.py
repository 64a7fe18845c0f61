"""Sending to friends as LINE does: ``POST /v2/bot/message/push``, ``/multicast``, ``/narrowcast`` (with ``GET
/v2/bot/message/progress/narrowcast``) and ``/broadcast``, plus ``/v2/bot/message/validate/{kind}``.

What LINE guarantees and the app relies on, kept here in one place:

- ``X-Line-Retry-Key`` (a UUID): a request repeating a key LINE accepted in the last 24 hours is not sent again;
  LINE answers 409 with the header ``X-Line-Accepted-Request-Id`` naming the first request (a push's 409 also
  lists the ``sentMessages``). A refused request (400, 429 …) does not use up its key. Keys are checked and
  recorded under one lock, so two sends racing with one key send once (the sandbox serves from one process).
- The monthly quota: push and multicast count one message per friend reached, broadcast and narrowcast one per
  friend they reach; replies are free. A send that would go over the month's limit is refused whole with 429
  ``You have reached your monthly limit.`` (a narrowcast with ``limit.upToRemainingQuota`` goes to as many as
  fit instead).
- Message objects are checked as LINE checks them (``message_rules``), with LINE's ``details``.
- ``customAggregationUnits`` (one unit name) names a push or multicast for the per-unit statistics
  (``statistics``); LINE allows ``UNITS_PER_MONTH`` names a month.

Friends who blocked the account are not sent anything (push to one still answers 200, as on LINE); user IDs
the account never met are skipped. A narrowcast completes at once here (LINE takes a while): its progress is
``succeeded`` as soon as it was accepted. The sandbox knows no demographics and keeps no audience groups, so a
narrowcast goes to every friend, or to the recipients of an earlier request (``redelivery``); a demographic
filter or an audience is refused with 400.
"""
import re
import threading
import time
import uuid

from flask import g, jsonify, request
from sqlalchemy import func, insert, select

from . import ids, message_rules
from .control import month_bounds, quota_of
from .platform import (MONTHLY_LIMIT, _authenticated, _json_body, body_errors, bp, check_messages, error, sandbox,
                       store)
from .store import messages, now, sends, users

RETRY_KEY_LIFETIME = 24 * 3600
MAX_MULTICAST = 500
# LINE allows this many distinct aggregation unit names a month per channel.
UNITS_PER_MONTH = 1000
UNIT = re.compile(r"^[a-zA-Z0-9_]{1,30}$")
USER_ID = re.compile(r"^U[0-9a-f]{32}$")
VALIDATE_KINDS = ("reply", "push", "multicast", "narrowcast", "broadcast")

_sending = threading.Lock()


def _retry_key():
    raw = request.headers.get("X-Line-Retry-Key")
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise error(400, "The value of the X-Line-Retry-Key header is invalid") from None


def _refuse_repeat(channel, retry_key):
    """LINE's 409 for a retry key it accepted in the last 24 hours, naming the request that used it."""
    if retry_key is None:
        return
    earlier = store().row(select(sends).where(sends.c.channel_id == channel["channel_id"],
                                                 sends.c.retry_key == retry_key,
                                                 sends.c.created_at > now() - RETRY_KEY_LIFETIME)
                          .order_by(sends.c.id))
    if earlier is None:
        return
    extra = {}
    if earlier["kind"] == "push":
        sent = store().rows(select(messages.c.message_id).where(messages.c.request_id == earlier["request_id"])
                            .order_by(messages.c.id))
        if sent:
            extra["sentMessages"] = [{"id": row["message_id"]} for row in sent]
    exc = error(409, "The retry key is already accepted", **extra)
    exc.headers["X-Line-Accepted-Request-Id"] = earlier["request_id"]
    raise exc


def _unit(channel, body):
    """The request's aggregation unit name (or None), refused as LINE refuses a bad one."""
    units = body.get("customAggregationUnits")
    if units is None or units == []:
        return None
    if not isinstance(units, list) or len(units) > 1:
        raise body_errors([{"message": "Size must be between 0 and 1", "property": "customAggregationUnits"}])
    unit = units[0]
    if not isinstance(unit, str) or not UNIT.match(unit):
        raise body_errors([{"message": 'must match "^[a-zA-Z0-9_]{1,30}$"',
                            "property": "customAggregationUnits[0]"}])
    used = units_this_month(channel["channel_id"])
    if unit not in used and len(used) >= UNITS_PER_MONTH:
        raise error(400, "The number of aggregation units exceeded the monthly limit")
    return unit


def units_this_month(channel_id, at=None) -> list[str]:
    """Aggregation unit names used this (Japan-time) month, in the order they were first used."""
    start, end = month_bounds(now() if at is None else at)
    rows = store().rows(select(sends.c.unit, func.min(sends.c.id).label("first"))
                        .where(sends.c.channel_id == channel_id, sends.c.unit.is_not(None),
                               sends.c.created_at >= start, sends.c.created_at < end)
                        .group_by(sends.c.unit).order_by("first"))
    return [row["unit"] for row in rows]


def _within_quota(channel, count):
    quota = quota_of(channel)
    if quota["type"] == "limited" and sandbox().quota_consumption(channel["channel_id"]) + count > quota["value"]:
        raise error(429, MONTHLY_LIMIT)


def _remaining(channel):
    quota = quota_of(channel)
    if quota["type"] != "limited":
        return None
    return max(0, quota["value"] - sandbox().quota_consumption(channel["channel_id"]))


def _friends(channel_id, user_ids=None) -> dict[str, bool]:
    """``{user_id: following}`` of the users the account knows (all of them when ``user_ids`` is None)."""
    query = select(users.c.user_id, users.c.following).where(users.c.channel_id == channel_id)
    if user_ids is not None:
        query = query.where(users.c.user_id.in_(list(user_ids)))
    else:
        query = query.where(users.c.following.is_(True))
    return {row["user_id"]: bool(row["following"]) for row in store().rows(query.order_by(users.c.user_id))}


def _record(channel, kind, recipients, items, retry_key, unit, targets, **progress):
    """Keep the accepted request and what each recipient received, in one transaction; returns the request
    ID (also sent back as ``X-Line-Request-Id``) and the first recipient's ``sentMessages``."""
    request_id, at, rows, first = ids.request_id(), now(), [], []
    for number, (user_id, following) in enumerate(recipients.items()):
        for item in items:
            message_id = ids.message_id()
            if number == 0:
                entry = {"id": message_id}
                if item["type"] in ("text", "sticker"):
                    entry["quoteToken"] = ids.quote_token()
                first.append(entry)
            rows.append(dict(message_id=message_id, channel_id=channel["channel_id"], user_id=user_id,
                             kind=kind, message=item, delivered=following, retry_key=retry_key,
                             request_id=request_id, created_at=at))
    delivered = sum(1 for following in recipients.values() if following)
    with store().begin() as conn:
        if rows:
            conn.execute(insert(messages), rows)
        conn.execute(insert(sends).values(
            request_id=request_id, channel_id=channel["channel_id"], kind=kind, retry_key=retry_key, unit=unit,
            messages=items, targets=targets, delivered=delivered, created_at=at, **progress))
    g.line_request_id = request_id
    return request_id, first


def _send(kind, prepare):
    """Authenticate, refuse a repeated retry key, then ``prepare(channel, body)`` → ``(recipients, targets,
    extra)`` and record the send, all under the lock."""
    channel = _authenticated()
    with _sending, store().transaction():
        retry_key = _retry_key()
        _refuse_repeat(channel, retry_key)
        body = _json_body()
        check_messages(body)
        # LINE's per-unit statistics cover push and multicast; other sends have no such field.
        unit = _unit(channel, body) if kind in ("push", "multicast") else None
        recipients, targets, progress = prepare(channel, body)
        return _record(channel, kind, recipients, body["messages"], retry_key, unit, targets, **progress)


@bp.post("/v2/bot/message/push")
def push():
    def prepare(channel, body):
        to = body.get("to")
        if not isinstance(to, str) or not to:
            raise body_errors([{"message": message_rules.EMPTY, "property": "to"}])
        known = _friends(channel["channel_id"], [to])
        if not known:
            raise error(400, "Failed to send messages")
        _within_quota(channel, 1)
        return known, 1, {}
    _, sent = _send("push", prepare)
    return jsonify(sentMessages=sent)


@bp.post("/v2/bot/message/multicast")
def multicast():
    def prepare(channel, body):
        to = body.get("to")
        if not isinstance(to, list) or not 1 <= len(to) <= MAX_MULTICAST:
            raise body_errors([{"message": f"Size must be between 1 and {MAX_MULTICAST}", "property": "to"}])
        bad = [index for index, user_id in enumerate(to) if not isinstance(user_id, str) or not USER_ID.match(user_id)]
        if bad:
            raise body_errors([{"message": "invalid user ID", "property": f"to[{index}]"} for index in bad])
        known = _friends(channel["channel_id"], set(to))
        _within_quota(channel, sum(known.values()))
        return known, len(set(to)), {}
    _send("multicast", prepare)
    return jsonify({})


@bp.post("/v2/bot/message/broadcast")
def broadcast():
    def prepare(channel, body):
        friends = _friends(channel["channel_id"])
        _within_quota(channel, len(friends))
        return friends, len(friends), {}
    _send("broadcast", prepare)
    return jsonify({})


@bp.post("/v2/bot/message/narrowcast")
def narrowcast():
    def prepare(channel, body):
        if body.get("filter") is not None:
            raise body_errors([{"message": "The sandbox knows no demographics", "property": "filter"}])
        friends = _narrowcast_recipients(channel, body.get("recipient"))
        targets = len(friends)
        limit = body.get("limit") or {}
        if not isinstance(limit, dict):
            raise body_errors([{"message": "must be an object", "property": "limit"}])
        up_to_quota, forbid_partial = bool(limit.get("upToRemainingQuota")), bool(limit.get("forbidPartialDelivery"))
        if forbid_partial and not up_to_quota:
            raise body_errors([{"message": "forbidPartialDelivery requires upToRemainingQuota",
                                "property": "limit.forbidPartialDelivery"}])
        chosen = sorted(friends)
        if limit.get("max") is not None:
            maximum = limit["max"]
            if not isinstance(maximum, int) or isinstance(maximum, bool) or maximum < 1:
                raise body_errors([{"message": "must be greater than or equal to 1", "property": "limit.max"}])
            chosen = chosen[:maximum]
        remaining = _remaining(channel)
        progress = {"phase": "succeeded", "completed_at": now()}
        if up_to_quota and remaining is not None and len(chosen) > remaining:
            if forbid_partial:
                chosen = []
                progress.update(phase="failed", error_code=5,
                                failed_description="The number of messages exceeds the remaining quota")
            else:
                chosen = chosen[:remaining]
        else:
            _within_quota(channel, len(chosen))
        return {user_id: True for user_id in chosen}, targets, progress
    _send("narrowcast", prepare)
    return jsonify({}), 202


def _narrowcast_recipients(channel, recipient):
    """Every friend, or the friends an earlier request reached (a ``redelivery`` recipient)."""
    if recipient is None:
        return _friends(channel["channel_id"])
    if not isinstance(recipient, dict) or recipient.get("type") != "redelivery":
        raise body_errors([{"message": "The sandbox keeps no audience groups", "property": "recipient"}])
    earlier = store().rows(select(messages.c.user_id).distinct().where(
        messages.c.channel_id == channel["channel_id"], messages.c.request_id == str(recipient.get("requestId"))))
    if not earlier:
        raise body_errors([{"message": "invalid requestId", "property": "recipient.requestId"}])
    known = _friends(channel["channel_id"], {row["user_id"] for row in earlier})
    return {user_id: True for user_id, following in known.items() if following}


@bp.get("/v2/bot/message/progress/narrowcast")
def narrowcast_progress():
    channel = _authenticated()
    request_id = request.args.get("requestId")
    if not request_id:
        raise error(400, "The request parameter 'requestId' is required",
                    [{"message": "must be specified", "property": "requestId"}])
    found = store().row(select(sends).where(sends.c.channel_id == channel["channel_id"],
                                               sends.c.request_id == request_id,
                                               sends.c.kind == "narrowcast"))
    if found is None:
        raise error(404)
    answer = {"phase": found["phase"], "acceptedTime": _iso(found["created_at"])}
    if found["phase"] in ("succeeded", "failed"):
        answer.update(successCount=found["delivered"], failureCount=0, targetCount=found["targets"],
                      completedTime=_iso(found["completed_at"] or found["created_at"]))
    if found["phase"] == "failed":
        answer.update(failedDescription=found["failed_description"], errorCode=found["error_code"])
    return jsonify(answer)


@bp.post("/v2/bot/message/validate/<kind>")
def validate(kind):
    if kind not in VALIDATE_KINDS:
        raise error(404)
    _authenticated()
    check_messages(_json_body())
    return jsonify({})


def _iso(epoch) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"
