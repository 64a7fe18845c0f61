"""LineClient: the only gateway from the app to LINE (or the sandbox), through line-bot-sdk v3.

Credentials are proven by issuing a *stateless* (v3) channel access token: it lives 15 minutes, has no cap and
never revokes the shop's other tokens (a v2 short-lived token would push out the oldest of 30). Tokens are
cached per process, keyed by host, Channel ID and a digest of the secret (a reissued secret means a new key),
until a minute before they expire; a cached token LINE rejects with 401 is dropped and issued again once.

Every failure becomes a ``LineProblem`` with a named code (see ``problems.py``) and LINE's status and words:
connection refused or unresolvable → ``line_unreachable``; no answer in ``timeout`` seconds → ``timeout``;
429 → ``rate_limited`` (``monthly_limit`` when a send meets the month's message limit: LINE's "You have
reached your monthly limit."); 400 naming message objects (``details``) → ``messages_invalid``, LINE's
details kept on the problem; 400 from the token endpoint → ``wrong_secret`` or ``unknown_channel``; 401 →
``invalid_token``; 403 → ``forbidden``; 404 on the webhook endpoint → ``endpoint_not_set`` (LINE answers
404 "Webhook endpoint not found" when no URL is set; it never answers an empty endpoint), elsewhere
``not_found``; 400 from mark-as-read → ``invalid_read_token``; anything else (5xx included) → ``line_error``.
Message content: 202 (a video or audio LINE is still preparing) → ``content_not_ready``; more than
``content_max_bytes`` (``LINE_CONTENT_MAX_BYTES``) → ``content_too_large``.

Message content lives on LINE's data host (api-data.line.me); the SDK's ``MessagingApiBlob`` goes there by
itself when no host is configured, and to the one configured host (the sandbox) otherwise, like every other
call here.

Secrets and tokens are never logged: the SDK's own loggers are reset to WARNING by every ``Configuration``
it builds, and this module logs only codes and statuses.
"""
import hashlib
import json
import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

import urllib3
from flask import current_app
from linebot.v3 import insight, messaging, oauth
from linebot.v3.messaging import (BroadcastRequest, MarkMessagesAsReadByTokenRequest, MessagingApi,
                                  MessagingApiBlob, MulticastRequest, PushMessageRequest, ReplyMessageRequest,
                                  SetWebhookEndpointRequest, TestWebhookEndpointRequest)
from linebot.v3.oauth import ChannelAccessToken

from ..config import DEFAULTS
from .problems import LineProblem

log = logging.getLogger(__name__)

# Re-issue a cached token when less than this many seconds of its life remain.
TOKEN_MARGIN = 60
# LINE's answer (429) to a send once the month's message quota is used up.
MONTHLY_LIMIT = "You have reached your monthly limit."
# The sends LINE checks message objects for; ``validate`` asks LINE about the same kinds.
SENDS = ("reply", "push", "multicast", "narrowcast", "broadcast")
VALIDATE_OPERATIONS = tuple(f"validate_{kind}" for kind in SENDS)

_cache: dict[tuple, tuple[str, float]] = {}
_cache_lock = threading.Lock()
_issue_locks: dict[tuple, threading.Lock] = {}


def client_for(channel) -> "LineClient":
    """A client for a saved ``wizard.models.Channel``, pointed where the app's configuration says."""
    return client_with(channel.channel_id, channel.secret)


def client_with(channel_id: str, channel_secret: str) -> "LineClient":
    """A client for credentials not saved yet (the owner just typed them), configured like ``client_for``."""
    config = current_app.config
    return LineClient(channel_id, channel_secret, host=config["LINE_API_HOST"], timeout=config["LINE_TIMEOUT"],
                      content_max_bytes=config["LINE_CONTENT_MAX_BYTES"])


class LineClient:
    def __init__(self, channel_id: str, channel_secret: str, host: str | None = None,
                 timeout: float = DEFAULTS["LINE_TIMEOUT"],
                 content_max_bytes: int = DEFAULTS["LINE_CONTENT_MAX_BYTES"]):
        self.channel_id = str(channel_id)
        self._secret = channel_secret
        self.host = host.rstrip("/") if host else None
        self.timeout = timeout
        self.content_max_bytes = int(content_max_bytes)
        secret_digest = hashlib.sha256(channel_secret.encode("utf-8")).hexdigest()
        self._key = (self.host, self.channel_id, secret_digest)

    def __repr__(self):
        return f"<LineClient channel {self.channel_id} at {self.host or 'api.line.me'}>"

    # ---- tokens --------------------------------------------------------------------------------------------

    def issue_token(self, fresh: bool = False) -> str:
        """A stateless channel access token, from the cache unless ``fresh`` (or near expiry)."""
        return self._token(fresh)[0]

    def _token(self, fresh=False) -> tuple[str, bool]:
        """(token, came from the cache). One issue at a time per key, so a burst of calls issues one token."""
        with _cache_lock:
            lock = _issue_locks.setdefault(self._key, threading.Lock())
        with lock:
            if not fresh:
                with _cache_lock:
                    cached = _cache.get(self._key)
                if cached and cached[1] - TOKEN_MARGIN > time.time():
                    return cached[0], True
            answer = self._call("issue_token", self._issue)
            with _cache_lock:
                _cache[self._key] = (answer.access_token, time.time() + answer.expires_in)
            return answer.access_token, False

    def _forget(self, token: str) -> None:
        with _cache_lock:
            if _cache.get(self._key, (None,))[0] == token:
                del _cache[self._key]

    def _with_token(self, operation: str, call, api=None):
        """Run ``call(api)`` with a MessagingApi (or ``api``, e.g. ``self._insight``) holding a token; a cached
        token refused with 401 is replaced by a fresh one once (it may have expired early or been revoked)."""
        api = api or self._messaging
        token, cached = self._token()
        try:
            return self._call(operation, lambda: api(token, call))
        except LineProblem as problem:
            if problem.code != "invalid_token" or not cached:
                raise
            self._forget(token)
            token, _ = self._token(fresh=True)
            return self._call(operation, lambda: api(token, call))

    # ---- calls ---------------------------------------------------------------------------------------------

    def verify_credentials(self) -> dict:
        """Prove the Channel ID and secret with a fresh token, then return ``bot_info()``."""
        self.issue_token(fresh=True)
        return self.bot_info()

    def bot_info(self) -> dict:
        info = self._with_token("bot_info", lambda api: api.get_bot_info(_request_timeout=self.timeout))
        return {"userId": info.user_id, "basicId": info.basic_id, "premiumId": info.premium_id,
                "displayName": info.display_name, "pictureUrl": self.picture(info.picture_url),
                "chatMode": info.chat_mode, "markAsReadMode": info.mark_as_read_mode}

    def picture(self, url) -> str | None:
        """A picture URL from LINE as our pages may show it: https only (an http one is asked for over https,
        as LINE's CDN serves both; any other scheme is dropped), so a page on https never loads a picture in
        clear text or from a ``javascript:`` or ``data:`` address. The sandbox, which plays LINE over plain
        http, keeps its own pictures."""
        if not isinstance(url, str) or len(url) > 500:
            return None
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme.lower() == "https" and parts.netloc:
            return url
        if parts.scheme.lower() != "http" or not parts.netloc:
            return None
        if self.host and self.host.startswith("http://") and url.startswith(self.host + "/"):
            return url
        return "https://" + url[len("http://"):]

    def get_webhook_endpoint(self) -> dict:
        """``{"endpoint", "active"}``; raises ``endpoint_not_set`` when LINE holds no URL (its 404)."""
        answer = self._with_token("get_webhook_endpoint",
                                  lambda api: api.get_webhook_endpoint(_request_timeout=self.timeout))
        return {"endpoint": answer.endpoint, "active": answer.active}

    def set_webhook_endpoint(self, url: str) -> None:
        """LINE accepts an https URL of at most 500 characters (``url_not_https`` / ``invalid_url``)."""
        request = _endpoint_request(SetWebhookEndpointRequest, url)
        with _url_refused(url):
            self._with_token("set_webhook_endpoint", lambda api: api.set_webhook_endpoint(
                request, _request_timeout=self.timeout))

    def test_webhook_endpoint(self, url: str | None = None) -> dict:
        """LINE calls the URL (the one it holds when ``url`` is None) and reports what it got back.
        LINE allows 60 of these an hour per channel."""
        request = _endpoint_request(TestWebhookEndpointRequest, url) if url else TestWebhookEndpointRequest()
        with _url_refused(url):
            answer = self._with_token("test_webhook_endpoint", lambda api: api.test_webhook_endpoint(
                request, _request_timeout=self.timeout))
        return {"success": answer.success, "timestamp": _iso(answer.timestamp),
                "statusCode": answer.status_code, "reason": answer.reason, "detail": answer.detail}

    def followers(self, date: str) -> dict:
        """LINE's friend count on ``date`` (yyyyMMdd, Japan time): ``{"status", "followers", "targetedReaches",
        "blocks"}``; ``status`` "unready" until LINE has counted that day (counts are then None)."""
        answer = self._with_token("followers", lambda api: api.get_number_of_followers(
            var_date=date, _request_timeout=self.timeout), api=self._insight)
        return {"status": answer.status, "followers": answer.followers,
                "targetedReaches": answer.targeted_reaches, "blocks": answer.blocks}

    def get_profile(self, user_id: str) -> dict:
        answer = self._with_token("get_profile",
                                  lambda api: api.get_profile(user_id, _request_timeout=self.timeout))
        return {"userId": answer.user_id, "displayName": answer.display_name,
                "pictureUrl": self.picture(answer.picture_url), "statusMessage": answer.status_message,
                "language": answer.language}

    def reply(self, reply_token: str, messages: list[dict]) -> dict:
        """Reply with LINE message objects (e.g. ``{"type": "text", "text": …}``); returns LINE's answer,
        ``{"sentMessages": [{"id", "quoteToken"?}]}``."""
        body = ReplyMessageRequest.from_dict({"replyToken": reply_token, "messages": messages})
        answer = self._with_token("reply", lambda api: api.reply_message(body, _request_timeout=self.timeout))
        return answer.to_dict()

    def push(self, to: str, messages: list[dict], retry_key: str | None = None) -> dict:
        """Push messages to a user. With ``retry_key`` (a UUID) a repeated push is not delivered twice: LINE
        answers 409 for a key it already accepted, which counts as success here."""
        body = PushMessageRequest.from_dict({"to": to, "messages": messages})

        def send(api):
            try:
                answer = api.push_message(body, x_line_retry_key=retry_key, _request_timeout=self.timeout)
                return answer.to_dict()
            except messaging.ApiException as exc:
                if exc.status == 409 and retry_key:
                    return {"sentMessages": _json(exc.body).get("sentMessages", [])}
                raise
        return self._with_token("push", send)

    def quota(self) -> dict:
        """This month's message limit: ``{"type": "none"|"limited", "value": int|None}`` (value only when
        limited: free plus additional messages)."""
        answer = self._with_token("quota", lambda api: api.get_message_quota(_request_timeout=self.timeout))
        kind = answer.type.value if hasattr(answer.type, "value") else answer.type
        return {"type": kind, "value": answer.value}

    def quota_consumption(self) -> dict:
        """``{"totalUsage": int}``: messages counted against the quota this month (pushes; replies are free)."""
        answer = self._with_token("quota_consumption", lambda api: api.get_message_quota_consumption(
            _request_timeout=self.timeout))
        return {"totalUsage": answer.total_usage}

    def multicast(self, to: list[str], messages: list[dict], retry_key: str | None = None,
                  unit: str | None = None) -> str:
        """Send the same messages to up to 500 users; returns LINE's request ID (``X-Line-Request-Id``).

        With ``retry_key`` (a UUID) LINE sends a repeated request once: its 409 for a key it already accepted
        counts as success and gives the first request's ID (``X-Line-Accepted-Request-Id``). ``unit`` is the
        ``customAggregationUnits`` name the per-unit statistics (``statistics_per_unit``) are asked by."""
        body = _request(MulticastRequest, {"to": list(to), "messages": messages, **_units(unit)})
        return self._send("multicast", lambda api: api.multicast_with_http_info(
            body, x_line_retry_key=retry_key, _request_timeout=self.timeout), retry_key)

    def broadcast(self, messages: list[dict], retry_key: str | None = None) -> str:
        """Send to every friend of the account (each counts against the quota); as ``multicast`` otherwise.
        LINE allows 60 broadcasts an hour per channel. A broadcast carries no aggregation unit: LINE's
        per-unit statistics cover push and multicast only (its BroadcastRequest has no such field)."""
        body = _request(BroadcastRequest, {"messages": messages})
        return self._send("broadcast", lambda api: api.broadcast_with_http_info(
            body, x_line_retry_key=retry_key, _request_timeout=self.timeout), retry_key)

    def validate(self, kind: str, messages) -> list[dict]:
        """LINE's verdict on message objects for a ``kind`` of send (reply, push, multicast, narrowcast,
        broadcast) without sending them: ``[]`` when LINE accepts them, else LINE's ``details``
        (``[{"property": "messages[0].text", "message": "…"}]``).

        The messages go to LINE exactly as given, through the SDK's own HTTP client (``call_api``) rather than
        its request models: those refuse a missing field before LINE can say which one, and naming the field
        is the point of asking."""
        if kind not in SENDS:
            raise ValueError(f"kind is one of {', '.join(SENDS)}")

        def ask(api):
            return api.api_client.call_api(
                f"/v2/bot/message/validate/{kind}", "POST", header_params={"Content-Type": "application/json"},
                body={"messages": messages}, response_types_map={}, auth_settings=["Bearer"],
                _request_timeout=self.timeout, _host=api.line_base_path)
        try:
            self._with_token(f"validate_{kind}", ask)
        except LineProblem as problem:
            if problem.code == "messages_invalid":
                return problem.details
            raise
        return []

    def statistics_per_unit(self, unit: str, day_from: str, day_to: str) -> dict:
        """LINE's statistics of the sends named ``unit`` between two days (yyyyMMdd, Japan time; at most 30
        days apart): ``{"overview": {"uniqueImpression", "uniqueClick", …}, "messages": [{"seq",
        "impression", …}], "clicks": [{"seq", "url", "click", "uniqueClick", …}]}``; counts LINE does not
        have (yet) are None."""
        answer = self._with_token("statistics_per_unit", lambda api: api.get_statistics_per_unit(
            unit, day_from, day_to, _request_timeout=self.timeout), api=self._insight)
        return answer.to_dict()

    def aggregation_units(self) -> list[str]:
        """The ``customAggregationUnits`` names used this month (LINE allows a limited number a month)."""
        names, start = [], None
        while True:
            answer = self._with_token("aggregation_units", lambda api, start=start: (
                api.get_aggregation_unit_name_list(limit="100", start=start, _request_timeout=self.timeout)))
            names.extend(answer.custom_aggregation_units or [])
            if not answer.next:
                return names
            start = answer.next

    def message_content(self, message_id: str) -> tuple[bytes, str]:
        """(bytes, Content-Type) of an image, video, audio or file a user sent. ``not_found`` for an unknown
        (or expired) message, ``content_not_ready`` while LINE still prepares a video or audio (see
        ``content_ready``), ``content_too_large`` above ``content_max_bytes``.

        The SDK reads a body whole, so the cap is checked on the announced Content-Length and on the bytes
        that came; ``timeout`` bounds how long a download may take."""
        answer = self._with_token("message_content", lambda api: api.get_message_content_with_http_info(
            str(message_id), _request_timeout=self.timeout), api=self._blob)
        headers = answer.headers or {}
        if answer.status_code == 202:
            raise LineProblem("content_not_ready", 202, "LINE is still preparing this content")
        data = bytes(answer.raw_data or b"")
        try:
            announced = int(headers.get("Content-Length") or 0)
        except (TypeError, ValueError):
            announced = 0
        size = max(announced, len(data))
        if size > self.content_max_bytes:
            log.info("LINE content %s for channel %s refused: %s bytes, more than %s", message_id,
                     self.channel_id, size, self.content_max_bytes)
            raise LineProblem("content_too_large", None,
                              f"{size} bytes, more than the {self.content_max_bytes} allowed")
        content_type = headers.get("Content-Type") or "application/octet-stream"
        return data, content_type

    def content_status(self, message_id: str) -> str:
        """LINE's preparation status of a video or audio: "processing", "succeeded" or "failed" (images and
        files are "succeeded" at once)."""
        answer = self._with_token("content_transcoding",
                                  lambda api: api.get_message_content_transcoding_by_message_id(
                                      str(message_id), _request_timeout=self.timeout), api=self._blob)
        return answer.status

    def content_ready(self, message_id: str) -> bool:
        """Whether ``message_content`` can fetch the content now (False while processing or after a failure:
        ``content_status`` tells which)."""
        return self.content_status(message_id) == "succeeded"

    def mark_as_read(self, token: str) -> None:
        """Mark a user's messages read up to the message whose event carried ``markAsReadToken`` ``token``
        (only sent while Chat is on); ``invalid_read_token`` when LINE refuses it."""
        try:
            body = MarkMessagesAsReadByTokenRequest(mark_as_read_token=token)
        except ValueError:
            raise LineProblem("invalid_read_token", None, "A markAsReadToken is a string.") from None
        self._with_token("mark_as_read", lambda api: api.mark_messages_as_read_by_token(
            body, _request_timeout=self.timeout))

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _send(self, operation, call, retry_key) -> str:
        """Run a send that returns LINE's request ID: the answer's ``X-Line-Request-Id``, or, when LINE refuses
        a retry key it already accepted (409), the ``X-Line-Accepted-Request-Id`` of the request that used it."""
        def send(api):
            try:
                answer = call(api)
            except messaging.ApiException as exc:
                if exc.status == 409 and retry_key:
                    return _header(exc.headers, "X-Line-Accepted-Request-Id")
                raise
            return _header(answer.headers, "X-Line-Request-Id")
        return self._with_token(operation, send)

    def _issue(self):
        config = oauth.Configuration(host=self.host)
        config.retries = False  # one attempt; whoever asked decides whether to try again
        with _closing(oauth.ApiClient(config)) as api_client:
            return ChannelAccessToken(api_client).issue_stateless_channel_token_by_client_secret(
                client_id=self.channel_id, client_secret=self._secret, _request_timeout=self.timeout)

    def _messaging(self, token, call):
        config = messaging.Configuration(host=self.host, access_token=token)
        config.retries = False
        with _closing(messaging.ApiClient(config)) as api_client:
            return call(MessagingApi(api_client))

    def _blob(self, token, call):
        # host None: the SDK's own host for these operations, api-data.line.me; else the configured one.
        config = messaging.Configuration(host=self.host, access_token=token)
        config.retries = False
        with _closing(messaging.ApiClient(config)) as api_client:
            return call(MessagingApiBlob(api_client))

    def _insight(self, token, call):
        config = insight.Configuration(host=self.host, access_token=token)
        config.retries = False
        with _closing(insight.ApiClient(config)) as api_client:
            return call(insight.Insight(api_client))

    def _call(self, operation, call):
        from ..extensions import release_sqlite_write_lock
        from ..metrics import LINE_CALLS
        release_sqlite_write_lock()  # no request holds SQLite's one write lock while it waits on LINE
        try:
            answer = call()
            LINE_CALLS.labels(operation, "ok").inc()
            return answer
        except (oauth.ApiException, messaging.ApiException, insight.ApiException) as exc:
            problem = _from_answer(operation, exc)
        except urllib3.exceptions.ConnectTimeoutError as exc:
            # Refused, unresolvable (NewConnectionError is a ConnectTimeoutError) or no TCP answer at all.
            problem = LineProblem("line_unreachable", None, _reason(exc))
        except urllib3.exceptions.TimeoutError as exc:
            problem = LineProblem("timeout", None, _reason(exc))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            problem = LineProblem("line_unreachable", None, _reason(exc))
        except ValueError as exc:
            # The SDK could not read the answer as LINE's (pydantic's ValidationError is a ValueError).
            problem = LineProblem("line_error", None, f"LINE's answer was unreadable ({type(exc).__name__})")
        LINE_CALLS.labels(operation, problem.code).inc()
        log.info("LINE %s for channel %s failed: %s (status %s)", operation, self.channel_id, problem.code,
                 problem.status)
        raise problem


def _from_answer(operation, exc) -> LineProblem:
    status = exc.status or None
    body = _json(exc.body)
    detail = body.get("message") or body.get("error_description") or body.get("error") or exc.reason
    if not status:
        # The SDK reports TLS failures as status 0.
        return LineProblem("line_unreachable", None, str(exc.reason or "")[:300])
    if operation == "issue_token" and status == 400:
        described = f"{body.get('error', '')} {body.get('error_description', '')}".lower()
        code = "unknown_channel" if "client_id" in described else "wrong_secret"
    elif status == 401:
        code = "invalid_token"
    elif status == 403:
        code = "forbidden"
    elif status == 404:
        webhook = operation in ("get_webhook_endpoint", "test_webhook_endpoint")
        code = "endpoint_not_set" if webhook else "not_found"
    elif status == 429 and body.get("message") == MONTHLY_LIMIT:
        code = "monthly_limit"
    elif status == 429:
        code = "rate_limited"
    elif status == 400 and operation == "mark_as_read":
        code = "invalid_read_token"
    elif status == 400 and operation in ("set_webhook_endpoint", "test_webhook_endpoint"):
        code = "invalid_url"
    elif status == 400 and (operation in SENDS or operation in VALIDATE_OPERATIONS) and _details(body):
        code = "messages_invalid"
    elif status == 400 and operation == "reply" and body.get("message") == "Invalid reply token":
        code = "invalid_reply_token"
    elif status == 400 and operation == "push" and body.get("message") == "Failed to send messages":
        code = "not_found"
    else:
        code = "line_error"
    return LineProblem(code, status, detail, retry_after=_retry_after(exc.headers), details=_details(body))


def _details(body) -> list[dict]:
    """LINE's ``details`` of a refusal, as ``[{"property", "message"}]`` (strings, at most 100 of them)."""
    found = body.get("details")
    if not isinstance(found, list):
        return []
    return [{"property": str(item.get("property") or ""), "message": str(item.get("message") or "")}
            for item in found[:100] if isinstance(item, dict)]


def _header(headers, name) -> str:
    """A header of LINE's answer (urllib3's headers ignore case); "" when LINE sent none."""
    return str((headers or {}).get(name) or "")


def _units(unit) -> dict:
    return {"customAggregationUnits": [unit]} if unit else {}


def _request(model, body):
    """The SDK's request model for ``body``; what it refuses, LINE would refuse too (``messages_invalid``,
    without LINE's details: ``validate`` asks LINE for them)."""
    try:
        return model.from_dict(body)
    except ValueError as exc:
        raise LineProblem("messages_invalid", None, f"The messages are not LINE message objects: "
                                                    f"{type(exc).__name__}") from None


def _retry_after(headers) -> float | None:
    """LINE's Retry-After in seconds (it sends delta-seconds); None when absent or not a number."""
    try:
        value = float((headers or {}).get("Retry-After"))
    except (TypeError, ValueError):
        return None
    return value if 0 <= value <= 86400 else None


def _endpoint_request(model, url):
    try:
        return model(endpoint=url)
    except ValueError:
        # The SDK refuses what LINE would refuse anyway (not a string, over 500 characters): same answer.
        detail = "A webhook URL is a string of at most 500 characters."
        raise LineProblem("invalid_url", None, detail) from None


@contextmanager
def _url_refused(url):
    """LINE answers 400 for any URL it refuses; say "not https" when that is why."""
    try:
        yield
    except LineProblem as problem:
        if problem.code == "invalid_url" and url and urlsplit(url.strip()).scheme.lower() == "http":
            raise LineProblem("url_not_https", problem.status, problem.detail) from None
        raise


@contextmanager
def _closing(api_client):
    """Close the SDK client's connections when the call is done instead of leaving them to the collector."""
    try:
        yield api_client
    finally:
        api_client.close()
        api_client.rest_client.pool_manager.clear()


def _json(raw) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _reason(exc) -> str:
    # urllib3 messages name host and port, never headers or bodies: safe to keep for staff.
    return str(exc)[:300]


def _iso(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)
