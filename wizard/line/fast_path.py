"""The webhook's fast path: a valid delivery from a channel this process knows is stored and answered as a plain
WSGI call, before Flask builds a request (issue 15, item 10).

Why: under load LINE's deliveries are nearly all alike (a known channel, a good signature, a LINE body), and a
profile of the receiver under wrk put more of each one's CPU into Flask's per-request machinery (request and
session objects, URL matching, a dozen hooks, the response object) than into verifying and storing it. With one
process holding the GIL, that was the receiver's throughput.

Only the common case is taken here, and exactly as the route does it (receiver.py: the same checks, the same
Delivery and group commit, the same answer). Everything else goes on to Flask's route unchanged, with the body
already read put back: a channel not cached or due to be read again, a missing or wrong signature, a body that is
too large or not LINE's, a cookie, a query string, a body sent without Content-Length or cut short. So every
refusal, 404 and quarantine is still decided in one place. A database failure is handed to the route too, which
raises it as its own (the 500, its log line and traceback, as ever); nothing is written twice.

What operators see is unchanged: the answer carries the same body, ``X-Request-Id`` and security headers
(security.fixed_headers); the request is counted in the HTTP metrics under the route's pattern and in
``wizard_webhooks_received_total``; gunicorn's access line names the shop; a log line written while it is stored
carries its request id and shop (observability.traced).
"""
import io
import time

from .. import observability, security
from ..guard import BrokenBody, _GuardedInput
from . import receiver
from .endpoint import WEBHOOK_PATH
from .payload import NotLinePayload, parse_payload, signature_matches


# Flask adds it once the session was looked at, which the security headers' hook does on every response.
_VARY_COOKIE = ("Vary", "Cookie")


class _Replay:
    """The body already read, then whatever is left of the client's stream: what Flask's route reads instead."""

    def __init__(self, head, rest):
        self._head, self._rest = io.BytesIO(head), rest

    def read(self, size=-1):
        data = self._head.read(size)
        if size is None or size < 0:
            return data + self._rest.read()
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size=-1):
        line = self._head.readline(size)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        return line + self._rest.readline(-1 if size is None or size < 0 else size - len(line))

    def __iter__(self):
        while line := self.readline():
            yield line


class WebhookFastPath:
    """WSGI middleware in front of Flask (inside ProxyFix, so the client's address is already the real one)."""

    def __init__(self, app, wsgi_app):
        self.app, self.wsgi_app = app, wsgi_app
        self.channels = app.extensions.setdefault("wizard_known_channels", {})  # receiver._known_channel's

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        if (not path.startswith(WEBHOOK_PATH) or environ.get("REQUEST_METHOD") != "POST"
                or environ.get("QUERY_STRING") or "HTTP_COOKIE" in environ):
            return self.wsgi_app(environ, start_response)
        channel = self.channels.get(path[len(WEBHOOK_PATH):])  # only tokens of stored channels are kept
        length = environ.get("CONTENT_LENGTH")
        if channel is None or channel.fresh_until <= time.monotonic() or not length or not length.isdigit():
            return self.wsgi_app(environ, start_response)
        length = int(length)
        if length > self.app.config["WEBHOOK_MAX_BYTES"]:
            return self.wsgi_app(environ, start_response)
        stream = environ["wsgi.input"]
        if not isinstance(stream, _GuardedInput):
            stream = environ["wsgi.input"] = _GuardedInput(stream)
        try:
            body = stream.read(length)
        except BrokenBody:
            return self.wsgi_app(environ, start_response)  # still broken: the route answers it (400)
        environ["wsgi.input"] = _Replay(body, stream)
        if len(body) != length:
            return self.wsgi_app(environ, start_response)
        signature = environ.get("HTTP_X_LINE_SIGNATURE")
        if not signature or not signature_matches(channel.secret, body, signature):
            return self.wsgi_app(environ, start_response)
        try:
            destination, events = parse_payload(body)
        except NotLinePayload:
            return self.wsgi_app(environ, start_response)

        request_id = (observability.sane_request_id(environ.get("HTTP_X_REQUEST_ID"))
                      or observability._new_request_id())
        environ[observability.SHOP_ENVIRON] = channel.slug  # gunicorn's access line names the shop
        delivery = receiver.Delivery(channel, destination, body, events, request_id)
        with observability.traced({"request_id": request_id, "shop": channel.slug}):
            if receiver._group_commit(self.app).needs_app_context:
                with self.app.app_context():
                    receiver.store_delivery(self.app, delivery)
            else:
                receiver.store_delivery(self.app, delivery)
        if delivery.error is not None:
            environ["HTTP_X_REQUEST_ID"] = request_id  # the route's log lines carry the same id
            environ[receiver.FAILED_ENVIRON] = delivery.error
            environ["wsgi.input"] = _Replay(body, stream)
            return self.wsgi_app(environ, start_response)

        answer = b'{"message":"ok","stored":%d}\n' % delivery.new
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer))),
                                  *security.fixed_headers(self.app), _VARY_COOKIE,
                                  (observability.REQUEST_ID_HEADER, request_id)])
        observability.counter(receiver.RULE, "POST", 200)(time.perf_counter() - started)
        return [answer]


def init_app(app):
    app.wsgi_app = WebhookFastPath(app, app.wsgi_app)

