"""Sending webhooks as the LINE Platform does: which URLs it accepts, how it signs, how it reports the answer.

LINE signs the exact bytes it sends (``x-line-signature`` = Base64(HMAC-SHA256(channel secret, body))), waits
about 2 seconds, and describes the outcome with ``reason`` OK, ERROR_STATUS_CODE, COULD_NOT_CONNECT,
REQUEST_TIMEOUT or UNCLASSIFIED, ``statusCode`` 0 when no answer arrived. Redirects are not followed.

The one deliberate difference from LINE: plain ``http`` is accepted for loopback hosts (127.0.0.0/8,
``localhost``, ``::1``), so the app can be reached on a developer machine or in tests without a certificate.
LINE itself accepts only ``https``.
"""
import base64
import hashlib
import hmac
import ipaddress
import json
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import urllib3

TIMEOUT = 2.0
USER_AGENT = "LineBotWebhook/2.0"
MAX_URL_LENGTH = 500

# One pool for the process; urllib3 pools are thread-safe. retries=False: LINE makes a single attempt.
_http = urllib3.PoolManager(retries=False, num_pools=20)


def is_loopback(host: str) -> bool:
    host = (host or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url) -> str | None:
    """Why LINE would refuse ``url`` as a webhook endpoint ('not_https', 'invalid'), or None if it is fine."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        return "invalid"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return "invalid"
    if parts.scheme not in ("http", "https") or not host:
        return "invalid"
    if parts.scheme == "http" and not is_loopback(host):
        return "not_https"
    return None


def encode(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def timestamp() -> str:
    """Now as LINE writes it in webhook test results: ISO 8601, UTC, milliseconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post(url: str, body: bytes, secret: str, timeout: float = TIMEOUT) -> dict:
    """POST a signed body once; never raises. Returns LINE's test-result fields plus what we saw."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "x-line-signature": sign(secret, body),
        "User-Agent": USER_AGENT,
    }
    started = time.monotonic()
    status, response_body = 0, None
    try:
        response = _http.request("POST", url, body=body, headers=headers, redirect=False,
                                 timeout=urllib3.Timeout(total=timeout))
        status = response.status
        response_body = response.data[:2000].decode("utf-8", "replace")
        if 200 <= status < 300:
            reason, detail = "OK", str(status)
        else:
            reason, detail = "ERROR_STATUS_CODE", str(status)
    except urllib3.exceptions.SSLError:
        reason, detail = "COULD_NOT_CONNECT", f"TLS handshake failure: {url}"
    except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError):
        # NewConnectionError (refused, unresolvable) is a ConnectTimeoutError in urllib3: both mean no answer.
        reason, detail = "COULD_NOT_CONNECT", f"Connection failed: {url}"
    except urllib3.exceptions.TimeoutError:
        reason, detail = "REQUEST_TIMEOUT", "Request timeout"
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        reason, detail = "UNCLASSIFIED", "N/A"
    return {
        "url": url,
        "success": reason == "OK",
        "timestamp": timestamp(),
        "statusCode": status,
        "reason": reason,
        "detail": detail,
        "responseBody": response_body,
        "elapsedMs": round((time.monotonic() - started) * 1000),
    }
