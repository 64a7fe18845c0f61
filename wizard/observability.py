"""Logs an operator can search, and the gunicorn hooks that make the metrics right across worker processes.

Logs: with ``LOG_FORMAT = "json"`` (production's default) every line on stderr is one JSON object: ``time``
(UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` inside a request, ``exception`` with the
traceback text. ``"text"`` (the embedded default and the tests) leaves Python's and Flask's logging alone.
Like ``logging.basicConfig``, the app sets up logging only in a process where nobody has: under gunicorn its
logconfig (below) already writes the same JSON, and a test runner's own handlers are never replaced.
Secrets in paths (``/line/webhook/<token>``, ``/form/<token>``) are masked by ``wizard.redact`` in every line.

Request ids: each request gets one, from an incoming ``X-Request-Id`` when it is sane (1 to 128 visible ASCII
characters: deploy/nginx.conf sends its ``$request_id``, which its own access log shows) or a new random one;
it is sent back in the ``X-Request-Id`` response header, and gunicorn's access log line
(``AccessJsonFormatter``) reads it from there. A webhook delivery is stored with it, and the work it causes
carries it on (``traced``): the worker runs each event under its delivery's request id and shop, and a job
queued meanwhile takes them along (wizard/queue.py, ``Job``; jobs.py's bodies run under them), so one webhook
can be followed from nginx to the form sent.
JSON lines name the shop (``shop``, its slug) when one is known: the receiver names it (``name_shop``).

Metrics of every request: ``wizard_http_requests_total`` by route, method and status, and
``wizard_http_request_duration_seconds`` by route (the route's pattern, never the path: no token, bounded).

gunicorn.conf.py calls, at config-load time and as hooks: ``prepare_multiprocess_env()`` (before any worker
imports prometheus_client, which picks its mode at import time), ``gunicorn_logconfig()``,
``on_starting(server)`` (empties the multiprocess directory once per master start) and
``child_exit(server, worker)``. This module never imports prometheus_client at import time for that reason.
"""
import contextlib
import contextvars
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .redact import RedactingFilter, redact

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# prometheus_client's own variable; it must be set before prometheus_client is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client writes there: <type>_<pid>.db, gauge_<mode>_<pid>.db.
_PROMETHEUS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_[0-9A-Za-z-]+\.db")
# Loggers that say nothing an operator needs at INFO (alembic lists its plugins at every start).
QUIET_LOGGERS = {"alembic.runtime.plugins": "WARNING"}


def _redact(value):
    return redact(value) if value else value


def _iso_now(created):
    """``created`` (epoch seconds) as ISO 8601 UTC with milliseconds; the seconds' text is made once per second
    (every access line asks, thousands of times a second under load)."""
    fraction, second = math.modf(created)  # split and rounded as datetime.fromtimestamp does
    second, micro = int(second), round(fraction * 1e6)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    prefix = _iso_second.get(second)
    if prefix is None:
        _iso_second.clear()
        prefix = _iso_second[second] = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return "%s.%03dZ" % (prefix, micro // 1000)


_iso_second = {}


def _redacted_path(path):
    """``redact(path)``, remembered: a busy server sees the same few paths (one webhook URL per channel)."""
    masked = _redacted_paths.get(path)
    if masked is None:
        if len(_redacted_paths) > 1000:  # paths come from clients: bounded
            _redacted_paths.clear()
        masked = _redacted_paths[path] = _redact(path)
    return masked


_redacted_paths = {}


# ---- request ids --------------------------------------------------------------------------------------------

def sane_request_id(value):
    """``value`` when it can travel on as a request id (short, visible ASCII), else None."""
    return value if value and _SANE_REQUEST_ID.fullmatch(value) else None


def _new_request_id():
    """32 random hex digits, as uuid4().hex looked: unique, not secret (an id to search logs by), so from the
    process's seeded generator (reseeded in every forked worker) rather than a system call per request."""
    return "%032x" % random.getrandbits(128)


def current_request_id():
    """This request's id, made on first use; None outside a request (a worker thread, a CLI command)."""
    from flask import g, has_request_context, request
    if not has_request_context():
        return None
    request_id = g.get("request_id")
    if request_id is None:
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or _new_request_id()
        g.request_id = request_id
    return request_id


def _echo_request_id(response):
    response.headers[REQUEST_ID_HEADER] = current_request_id()
    return response


# ---- tracing work outside requests: the request id and shop a task or an event run belongs to ---------------

# {"request_id": ..., "shop": ...} of the work this thread (or task) is doing outside a request, or None.
_trace = contextvars.ContextVar("wizard_trace", default=None)
SHOP_ENVIRON = "wizard.shop"  # gunicorn's access line reads it as the atom {wizard.shop}e


def name_shop(slug):
    """In a request: every log line of it (and gunicorn's access line) names this shop."""
    from flask import g, request
    g.log_shop = slug
    request.environ[SHOP_ENVIRON] = slug


def current_trace():
    """The request id and shop of what this thread is doing: the request, else the task or event being run;
    a dict without the keys it does not know, or None."""
    from flask import g, has_request_context
    if has_request_context():
        trace = {"request_id": current_request_id(), "shop": g.get("log_shop")}
        return {key: value for key, value in trace.items() if value} or None
    return _trace.get()


@contextlib.contextmanager
def traced(trace):
    """Within it, log lines outside a request carry ``trace`` (a dict as ``current_trace`` gives, or None)."""
    token = _trace.set(dict(trace) if trace else None)
    try:
        yield
    finally:
        _trace.reset(token)


def _trace_of(record):
    """The trace of a log record: the request's or the running work's, else that of the huey task the record
    is about (huey logs "Executing <task>" before the task runs, the task's arguments in the record)."""
    try:
        trace = current_trace()
    except RuntimeError:  # a request context without an app context (never in practice): no id, no crash
        trace = None
    if trace:
        return trace
    for arg in record.args if isinstance(record.args, tuple) else ():
        kwargs = getattr(arg, "kwargs", None)
        if isinstance(kwargs, dict) and isinstance(kwargs.get("trace"), dict):
            return kwargs["trace"]
    return None


# ---- HTTP metrics ---------------------------------------------------------------------------------------------

def _start_clock():
    from flask import g
    g.started = time.perf_counter()


def _count_request(response):
    """One count and one latency sample per request, labelled by the route's pattern (never the path)."""
    from flask import g, request

    started = g.get("started")
    route = request.url_rule.rule if request.url_rule is not None else "(no route)"
    counter(route, request.method, response.status_code)(
        None if started is None else time.perf_counter() - started)
    return response


def counter(route, method, status):
    """A function counting one request of (route pattern, method, status) and its seconds (or None)."""
    key = (route, method, status)
    count = _counted.get(key)
    if count is None:
        count = _counted[key] = _count_for(*key)
    return count


# (route, method, status) -> a function counting one request of it: labels() is looked up once per kind of
# request, not on every request (routes and methods are bounded; statuses are HTTP's few).
_counted = {}


def _count_for(route, method, status):
    from . import metrics
    requests = metrics.HTTP_REQUESTS.labels(route, method, str(status))
    latency = metrics.HTTP_LATENCY.labels(route)

    def count(seconds):
        requests.inc()
        if seconds is not None:
            latency.observe(seconds)
    return count


# ---- formatters ---------------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message and the traceback pass through ``redact``."""

    def format(self, record):
        entry = {"time": _iso_now(record.created), "level": record.levelname, "logger": record.name,
                 "message": _redact(record.getMessage())}
        trace = _trace_of(record) or {}
        request_id = getattr(record, "request_id", None) or trace.get("request_id")
        if request_id:
            entry["request_id"] = request_id
        if trace.get("shop"):
            entry["shop"] = trace["shop"]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = _redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = _redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class AccessJsonFormatter(logging.Formatter):
    """gunicorn's access log as JSON: method, path (masked, query left out), status, bytes, duration,
    client address, user agent, referrer (masked) and the request id the app sent back."""

    def format(self, record):
        atoms = record.args if isinstance(record.args, dict) else {}

        def atom(key):
            value = atoms.get(key)
            # gunicorn's SafeAtoms escaped quotes for its own format; JSON escapes them itself.
            return value.replace('\\"', '"') if isinstance(value, str) else value

        status, method = atom("s"), atom("m")
        path = _redacted_path(atom("U"))  # the method and status hold no secret: the message masks as the path
        entry = {
            "time": _iso_now(record.created), "level": record.levelname, "logger": record.name,
            "message": f"{method} {path} {status}",
            "method": method, "path": path,
            "status": int(status) if str(status).isdecimal() else status,
            "bytes": atom("B"), "duration_ms": round((atom("D") or 0) / 1000, 3),
            "remote_addr": atom("h"), "user_agent": atom("a"), "pid": record.process,
        }
        referrer = atom("f")
        if referrer and referrer != "-":
            entry["referrer"] = _redact(referrer)
        request_id = sane_request_id(atom("{x-request-id}o")) or sane_request_id(atom("{x-request-id}i"))
        if request_id:
            entry["request_id"] = request_id
        shop = atoms.get("{%s}e" % SHOP_ENVIRON)
        if shop and shop != "-":
            entry["shop"] = shop
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the moment (as logging's last resort does), never to a stream
    someone has since closed or replaced."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


# ---- the app ------------------------------------------------------------------------------------------------

def log_format(config):
    """``LOG_FORMAT`` as configured, else json in production and text in the embedded default and tests."""
    chosen = (config.get("LOG_FORMAT") or "").strip().lower()
    if chosen:
        return chosen
    return "text" if config.get("SANDBOX") or config.get("TESTING") else "json"


def configure_json_logging(level="INFO"):
    """JSON lines on stderr from the root logger, the way ``logging.basicConfig`` decides: only when nothing has
    configured this process's logging yet (under gunicorn its logconfig has; in tests the test runner has).
    Returns the handler it added, or None."""
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
    return handler


def init_app(app):
    app.before_request(_start_clock)
    app.after_request(_echo_request_id)
    app.after_request(_count_request)
    from flask.logging import default_handler
    if log_format(app.config) == "json" and configure_json_logging(
            str(app.config.get("LOG_LEVEL") or "INFO").upper()):
        app.logger.removeHandler(default_handler)  # the root's JSON handler has it; no second plain line
    elif not any(isinstance(f, RedactingFilter) for f in default_handler.filters):
        # Text logs (the embedded default): Flask's own handler prints "Exception on /line/webhook/<token>"
        # and the traceback; a filter on the handler masks every line it writes, the app's modules' included.
        default_handler.addFilter(RedactingFilter())


# ---- gunicorn -----------------------------------------------------------------------------------------------

def gunicorn_logconfig():
    """gunicorn's ``logconfig_dict``: its error log and the app's logs as JSON on stderr, one access line per
    request as JSON on stdout. The app's level comes from ``WIZARD_LOG_LEVEL`` (INFO), gunicorn's own from its
    ``--log-level``; ``WIZARD_ACCESS_LOG=0`` turns the access lines off."""
    level = os.environ.get("WIZARD_LOG_LEVEL", "INFO").upper()
    access_on = os.environ.get("WIZARD_ACCESS_LOG", "1").strip().lower() not in {"0", "false", "no", "off"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "wizard.redact.RedactingFilter"}},
        "formatters": {"json": {"()": "wizard.observability.JsonFormatter"},
                       "access": {"()": "wizard.observability.AccessJsonFormatter"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"],
                     "stream": "ext://sys.stderr"},
            # The access formatter masks what it writes itself: the filter would flatten gunicorn's atoms.
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            # No level here: gunicorn has set its --log-level on its error log already.
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO" if access_on else "WARNING", "handlers": ["access"],
                                "propagate": False},
            **{name: {"level": quiet_level} for name, quiet_level in QUIET_LOGGERS.items()},
        },
    }


def prepare_multiprocess_env():
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (kept when given, else a new private directory) and return it.

    Called when gunicorn loads its configuration, before any worker exists, so every worker imports
    prometheus_client in multiprocess mode. A configuration reload (HUP) keeps the same directory."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        directory = tempfile.mkdtemp(prefix="wizard-prometheus-")
        os.environ[MULTIPROC_ENV] = directory
    Path(directory).mkdir(parents=True, exist_ok=True)
    return directory


def on_starting(server):
    """At master start: the directory exists and holds no counts from an earlier run (counters restart at 0,
    as Prometheus expects of a restarted server). Only prometheus_client's own files are removed (a directory
    pointed at by mistake keeps anything else, a SQLite database included)."""
    directory = Path(prepare_multiprocess_env())
    for stale in directory.glob("*.db"):
        if _PROMETHEUS_FILE.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
