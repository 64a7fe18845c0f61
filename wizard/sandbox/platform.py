"""The LINE Platform's HTTP API as our LINE client uses it: same paths, fields, status codes and error bodies.

Covered: ``POST /oauth2/v3/token`` (stateless tokens), ``GET /v2/bot/info``, ``GET|PUT
/v2/bot/channel/webhook/endpoint``, ``POST /v2/bot/channel/webhook/test`` (really calls the URL; 60 an hour),
``GET /v2/bot/profile/{userId}``, ``POST /v2/bot/message/reply``, ``GET /v2/bot/message/quota``
and ``/quota/consumption``, ``GET /v2/bot/message/{messageId}/content`` and ``/content/transcoding`` (LINE serves
these two on api-data.line.me; the sandbox serves everything on one host), ``POST /v2/bot/chat/markAsRead`` (by
token) and the corporate-only ``POST /v2/bot/message/markAsRead``, which answers 403 as LINE does for an
account without that option.

Push, multicast, narrowcast and broadcast (``sending``), the validate endpoints (``sending``, with the checks of
``message_rules``) and the per-unit statistics (``statistics``) add their routes to this blueprint, so they
answer with the same error bodies and request IDs. A video or audio still being
prepared answers its content request with 202 and no body (LINE's behaviour, not in its spec: ask
``/content/transcoding`` first), and 404 once its preparation failed.

Error bodies follow LINE's reference: ``{"message": …, "details": [...]}`` (details only when not empty) for
the Messaging API, ``{"error": …, "error_description": …}`` for the token endpoint. A wrong secret answers
400 ``invalid_request`` / ``Invalid 'client_credentials'.`` (documented for v3). For an unknown Channel ID
LINE's v3 reference lists 400 without an example; we answer what LINE documents for the same mistake on its
token endpoints, 400 ``invalid_client`` / ``invalid client_id``.
"""
import calendar
import hashlib
import hmac
import time
import uuid

from flask import Blueprint, current_app, g, jsonify, request, url_for
from sqlalchemy import delete, insert, select, update

from . import deliver, ids, message_rules
from .control import mark_as_read_mode, quota_of
from .store import (channels, contents, messages, now, read_tokens, reply_tokens, tokens, users,
                    webhook_tests)

bp = Blueprint("line_platform", __name__)

WEBHOOK_TESTS_PER_HOUR = 60
AUTH_REQUIRED = ("Authorization header required. "
                 "Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'")
AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."
STATUS_MESSAGES = {
    400: "Bad request",
    401: AUTH_FAILED,
    403: "Access to this API is not available for your account",
    404: "Not found",
    429: "The API rate limit has been exceeded. Try again later.",
}
MONTHLY_LIMIT = "You have reached your monthly limit."
INVALID_READ_TOKEN = "Invalid markAsReadToken"


class LineError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(status, message=None, details=None, **extra):
    body = {"message": message or STATUS_MESSAGES.get(status, "Internal server error")}
    if details:
        body["details"] = details
    body.update(extra)
    return LineError(status, body)


@bp.errorhandler(LineError)
def _answer_error(exc):
    return jsonify(exc.body), exc.status, exc.headers


@bp.after_request
def _request_id(response):
    # A send names the request it recorded (the ID a later 409 repeats as X-Line-Accepted-Request-Id).
    response.headers["X-Line-Request-Id"] = g.get("line_request_id") or str(uuid.uuid4())
    return response


def sandbox():
    return current_app.extensions["sandbox"]


def store():
    return sandbox().store


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _apply_failures(channel) -> None:
    """The failure injected by the control side, if any: a delay, then an error status."""
    if channel["fail_delay"]:
        time.sleep(channel["fail_delay"])
    status = channel["fail_status"]
    if status is None:
        return
    if channel["fail_times"] is not None:
        # Count down atomically so that "fail twice" fails exactly twice even under concurrent calls.
        taken = store().run(update(channels).where(channels.c.channel_id == channel["channel_id"],
                                                   channels.c.fail_times > 0)
                            .values(fail_times=channels.c.fail_times - 1))
        if not taken:
            return
    exc = error(status)
    if channel["fail_retry_after"] is not None:
        exc.headers["Retry-After"] = str(channel["fail_retry_after"])
    raise exc


def _channel(channel_id):
    return store().row(select(channels).where(channels.c.channel_id == channel_id))


def _authenticated():
    """The channel whose access token came in the Authorization header, or LINE's 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise error(401, AUTH_REQUIRED)
    found = store().row(select(tokens.c.channel_id).where(tokens.c.digest == _digest(token.strip()),
                                                          tokens.c.expires_at > now()))
    channel = found and _channel(found["channel_id"])
    if not channel:
        raise error(401, AUTH_FAILED)
    _apply_failures(channel)
    return channel


def _json_body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise error(400, "The request body could not be parsed as JSON (line: 1, column: 1)")
    return body


# ---- channel access token --------------------------------------------------------------------------------


@bp.post("/oauth2/v3/token")
def issue_stateless_token():
    form = request.form
    if form.get("grant_type") != "client_credentials":
        raise LineError(400, {"error": "invalid_request",
                              "error_description": "grant_type must be client_credentials"})
    channel = _channel(form.get("client_id", ""))
    if channel is None:
        raise LineError(400, {"error": "invalid_client", "error_description": "invalid client_id"})
    _apply_failures(channel)
    if not hmac.compare_digest(form.get("client_secret", "").encode(), channel["secret"].encode()):
        raise LineError(400, {"error": "invalid_request",
                              "error_description": "Invalid 'client_credentials'."})
    token, ttl = ids.access_token(), int(sandbox().token_ttl)
    store().run(
        delete(tokens).where(tokens.c.expires_at < now() - 3600),
        insert(tokens).values(digest=_digest(token), channel_id=channel["channel_id"],
                              expires_at=now() + ttl),
        update(channels).where(channels.c.channel_id == channel["channel_id"])
        .values(tokens_issued=channels.c.tokens_issued + 1),
    )
    return jsonify(token_type="Bearer", access_token=token, expires_in=ttl)


# ---- bot and webhook settings -----------------------------------------------------------------------------


def picture_url(stored, owner_id):
    # A channel or user created without a picture gets a generated one served by the sandbox itself.
    return stored or url_for("sandbox_views.picture", owner_id=owner_id, _external=True)


@bp.get("/v2/bot/info")
def bot_info():
    channel = _authenticated()
    info = {"userId": channel["bot_user_id"], "basicId": channel["basic_id"]}
    if channel["premium_id"]:
        info["premiumId"] = channel["premium_id"]
    info.update(displayName=channel["display_name"],
                pictureUrl=picture_url(channel["picture_url"], channel["bot_user_id"]),
                chatMode=channel["chat_mode"], markAsReadMode=mark_as_read_mode(channel["chat_mode"]))
    return jsonify(info)


@bp.get("/v2/bot/channel/webhook/endpoint")
def get_webhook_endpoint():
    channel = _authenticated()
    if not channel["endpoint"]:
        raise error(404, "Webhook endpoint not found")
    return jsonify(endpoint=channel["endpoint"], active=channel["webhook_active"])


@bp.put("/v2/bot/channel/webhook/endpoint")
def set_webhook_endpoint():
    channel = _authenticated()
    endpoint = _json_body().get("endpoint")
    if not isinstance(endpoint, str):
        raise error(400, "The request body has 1 error(s)",
                    [{"message": "must be specified", "property": "endpoint"}])
    if deliver.url_problem(endpoint):
        raise error(400, "Invalid webhook endpoint URL")
    store().run(update(channels).where(channels.c.channel_id == channel["channel_id"])
                .values(endpoint=endpoint))
    return jsonify({})


@bp.post("/v2/bot/channel/webhook/test")
def test_webhook_endpoint():
    channel = _authenticated()
    since = now() - 3600
    used = store().rows(select(webhook_tests.c.id).where(webhook_tests.c.channel_id == channel["channel_id"],
                                                         webhook_tests.c.at > since))
    if len(used) >= WEBHOOK_TESTS_PER_HOUR:
        raise error(429)
    store().run(insert(webhook_tests).values(channel_id=channel["channel_id"], at=now()))
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise error(400, "The request body could not be parsed as JSON (line: 1, column: 1)")
    url = body.get("endpoint")
    if url is not None:
        if deliver.url_problem(url):
            raise error(400, "Invalid webhook endpoint URL")
    elif not channel["endpoint"]:
        raise error(404, "Webhook endpoint not found")
    outcome = sandbox().verify(channel["channel_id"], url or channel["endpoint"])
    return jsonify({key: outcome[key] for key in ("success", "timestamp", "statusCode", "reason", "detail")})


# ---- statistics ---------------------------------------------------------------------------------------------

JST = 9 * 3600  # LINE's statistics run on Japan time (UTC+9)


@bp.get("/v2/bot/insight/followers")
def number_of_followers():
    """Friends as of the end of ``date`` (yyyyMMdd, Japan time). As on LINE, a day is counted once it is over:
    today's (or a later) date is ``unready``, and so is a finished day for the channel's ``insight_lag``
    seconds after it ended (LINE counts it some hours later); the friend count only ever grows (blocks are
    counted apart)."""
    channel = _authenticated()
    value = request.args.get("date")
    today = time.strftime("%Y%m%d", time.gmtime(now() + JST))
    if value is None:
        value = today
    try:
        day = time.strptime(value, "%Y%m%d") if len(value) == 8 and value.isascii() and value.isdecimal() else None
    except ValueError:
        day = None
    if day is None:
        raise error(400, "The request parameter 'date' is invalid", [
            {"message": "must be yyyyMMdd", "property": "date"}])
    until = calendar.timegm(day) + 86400 - JST
    if value >= today or until + (channel["insight_lag"] or 0) > now():
        return jsonify(status="unready")
    return jsonify(status="ready", **sandbox().follower_counts(channel["channel_id"], until))


# ---- users and messages ------------------------------------------------------------------------------------


@bp.get("/v2/bot/profile/<user_id>")
def profile(user_id):
    channel = _authenticated()
    user = store().row(select(users).where(users.c.channel_id == channel["channel_id"],
                                           users.c.user_id == user_id, users.c.following.is_(True)))
    if user is None:
        raise error(404)
    answer = {"displayName": user["display_name"], "userId": user["user_id"]}
    if user["language"]:
        answer["language"] = user["language"]
    answer["pictureUrl"] = picture_url(user["picture_url"], user["user_id"])
    if user["status_message"]:
        answer["statusMessage"] = user["status_message"]
    return jsonify(answer)


def body_errors(details):
    return error(400, f"The request body has {len(details)} error(s)", details)


def check_messages(body):
    """LINE's 400 for message objects it would not send (``message_rules``)."""
    details = message_rules.problems(body.get("messages"))
    if details:
        raise body_errors(details)


def _record(channel, user_id, kind, items, delivered, retry_key=None):
    """Keep what was sent (tests and the control page read it back); returns LINE's ``sentMessages``."""
    request_id, sent, rows = ids.request_id(), [], []
    for item in items:
        message_id = ids.message_id()
        entry = {"id": message_id}
        if item["type"] in ("text", "sticker"):
            entry["quoteToken"] = ids.quote_token()
        sent.append(entry)
        rows.append(dict(message_id=message_id, channel_id=channel["channel_id"], user_id=user_id, kind=kind,
                         message=item, delivered=delivered, retry_key=retry_key, request_id=request_id,
                         created_at=now()))
    store().run(insert(messages).values(rows))
    return sent


@bp.post("/v2/bot/message/reply")
def reply():
    channel = _authenticated()
    body = _json_body()
    token = body.get("replyToken")
    if not isinstance(token, str) or not token:
        raise error(400, "The request body has 1 error(s)",
                    [{"message": "May not be empty", "property": "replyToken"}])
    check_messages(body)
    found = store().row(select(reply_tokens).where(reply_tokens.c.token == token,
                                                   reply_tokens.c.channel_id == channel["channel_id"]))
    used_now = found and store().run(
        update(reply_tokens).where(reply_tokens.c.token == token, reply_tokens.c.used.is_(False),
                                   reply_tokens.c.expires_at > now()).values(used=True))
    if not used_now:
        raise error(400, "Invalid reply token")
    user = store().row(select(users.c.following).where(users.c.channel_id == channel["channel_id"],
                                                       users.c.user_id == found["user_id"]))
    sent = _record(channel, found["user_id"], "reply", body["messages"], bool(user and user["following"]))
    return jsonify(sentMessages=sent)


# ---- quota -------------------------------------------------------------------------------------------------


@bp.get("/v2/bot/message/quota")
def message_quota():
    quota = quota_of(_authenticated())
    return jsonify(quota if quota["type"] == "limited" else {"type": "none"})


@bp.get("/v2/bot/message/quota/consumption")
def message_quota_consumption():
    channel = _authenticated()
    return jsonify(totalUsage=sandbox().quota_consumption(channel["channel_id"]))


# ---- content users sent ------------------------------------------------------------------------------------


def _content(channel, message_id):
    row = store().row(select(contents).where(contents.c.channel_id == channel["channel_id"],
                                             contents.c.message_id == message_id))
    if row is None:
        raise error(404)
    return row


@bp.get("/v2/bot/message/<message_id>/content")
def message_content(message_id):
    row = _content(_authenticated(), message_id)
    if row["transcoding"] == "processing":
        return current_app.response_class(b"", status=202)
    if row["transcoding"] == "failed":
        raise error(404)
    return current_app.response_class(bytes(row["data"]), status=200, content_type=row["content_type"])


@bp.get("/v2/bot/message/<message_id>/content/transcoding")
def message_content_transcoding(message_id):
    row = _content(_authenticated(), message_id)
    # Images and files need no preparation: ready as soon as they arrive.
    return jsonify(status=row["transcoding"] or "succeeded")


# ---- read marks --------------------------------------------------------------------------------------------


@bp.post("/v2/bot/chat/markAsRead")
def mark_as_read_by_token():
    channel = _authenticated()
    token = _json_body().get("markAsReadToken")
    if not isinstance(token, str) or not token:
        raise error(400, "The request body has 1 error(s)",
                    [{"message": "must be specified", "property": "markAsReadToken"}])
    # A token works only for the bot that received it in a webhook.
    found = store().row(select(read_tokens).where(read_tokens.c.token == token,
                                                  read_tokens.c.channel_id == channel["channel_id"]))
    if found is None:
        raise error(400, INVALID_READ_TOKEN)
    # Reading a message in LINE's chat reads everything the user sent before it too.
    store().run(update(read_tokens).where(read_tokens.c.channel_id == channel["channel_id"],
                                          read_tokens.c.user_id == found["user_id"],
                                          read_tokens.c.created_at <= found["created_at"],
                                          read_tokens.c.read_at.is_(None)).values(read_at=now()))
    return jsonify({})


@bp.post("/v2/bot/message/markAsRead")
def mark_as_read_by_user():
    """LINE's older mark-as-read by user ID is an option for corporate customers who applied for it."""
    _authenticated()
    raise error(403)
