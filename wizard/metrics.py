"""Prometheus metrics: the counters other modules bump, and ``GET /metrics`` that shows them with the queue's state.

Counters count what happened in this process (webhooks received and refused, calls to LINE, task retries and
deaths). Under gunicorn every worker is its own process, so prometheus_client's multiprocess mode keeps each
worker's counts in files under ``PROMETHEUS_MULTIPROC_DIR`` and the scrape adds them all up, whichever worker
answers (observability.py prepares the directory; it must be in the environment before prometheus_client is
imported). Without that variable (the embedded default, tests, the CLI) the counts live in this process.

The event backlog is not counted but read from the database at scrape time (``DatabaseCollector``), so it is
the same on every worker and every machine and survives restarts. The collector is registered only in the
registry each ``/metrics`` request builds, so nothing else ever queries the database for metrics.

Who may scrape: with ``METRICS_TOKEN`` set, only ``Authorization: Bearer <METRICS_TOKEN>``; without it, only a
request from a loopback address that did not come through a proxy (no ``X-Forwarded-For``/``Forwarded``).
The numbers are operational (no customer data), but they are still nobody else's business.
"""
import hmac
import ipaddress
import logging
import os

from flask import Blueprint, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from .statuses import EventStatus, OutboxStatus

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

WEBHOOKS_RECEIVED = Counter("wizard_webhooks_received_total",
                            "Webhook deliveries verified, stored and answered 200.")
WEBHOOKS_REJECTED = Counter("wizard_webhooks_rejected_total",
                            "Webhook deliveries refused, by reason (receiver.REASONS).", ["reason"])
LINE_CALLS = Counter("wizard_line_calls_total",
                     "Calls to the LINE Platform, by endpoint and outcome (ok or the LineProblem code).",
                     ["endpoint", "outcome"])
TASKS_RETRIED = Counter("wizard_tasks_retried_total", "Queue task attempts that failed and will run again.",
                        ["task"])
TASKS_DEAD = Counter("wizard_tasks_dead_total", "Queue tasks that failed for the last time.", ["task"])
# Every request (observability.py): the route is Flask's pattern (/line/webhook/<token>), never the path.
HTTP_REQUESTS = Counter("wizard_http_requests_total", "HTTP requests answered, by route, method and status.",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("wizard_http_request_duration_seconds",
                         "Time from the app receiving a request to its answer, by route (LINE waits 2 s).",
                         ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))

# Events the worker still has to run (a claimed one is still not done).
UNFINISHED = (EventStatus.PENDING, EventStatus.PROCESSING)
_FORWARDED = ("X-Forwarded-For", "Forwarded", "X-Real-Ip")


def multiprocess_dir():
    """The directory prometheus_client's multiprocess mode writes to, or None (single-process mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class DatabaseCollector:
    """Gauges read from the database at scrape time: the event backlog, its age, dead outbox messages and the
    queue consumers' heartbeats (heartbeat.py), the same whichever machine is scraped."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        from .models import WebhookEvent, utcnow
        up = GaugeMetricFamily("wizard_database_up", "1 when this scrape could read the database, else 0.")
        events = WebhookEvent.__table__
        try:
            with self.engine.connect() as connection:
                pending, oldest = connection.execute(
                    select(func.count(), func.min(events.c.received_at)).where(events.c.status.in_(UNFINISHED))
                ).one()
                dead = _outbox_dead(connection)
                beats = _heartbeats(connection)
        except SQLAlchemyError as exc:
            log.warning("metrics could not read the database: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("wizard_events_pending", "Stored webhook events not processed yet "
                                "(status pending or processing).", value=pending)
        lag = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily("wizard_event_processing_lag_seconds", "Age of the oldest unprocessed event "
                                "(since it was received); 0 when there is none.", value=lag)
        if dead is not None:
            yield GaugeMetricFamily("wizard_outbox_dead", "Outbox messages given up on (status dead).",
                                    value=dead)
        if beats is not None:
            yield from _heartbeat_gauges(beats, utcnow())


def _heartbeats(connection):
    """Consumers that beat within the last day, or None while the table does not exist."""
    from .heartbeat import KEEP
    from .models import ConsumerHeartbeat, utcnow
    if not inspect(connection).has_table("consumer_heartbeats"):
        return None
    beats = ConsumerHeartbeat.__table__
    return connection.execute(select(beats.c.consumer, beats.c.beat_at, beats.c.threads_alive)
                              .where(beats.c.beat_at >= utcnow() - KEEP)).all()


def _heartbeat_gauges(beats, now):
    from .heartbeat import ALIVE_WITHIN
    age = GaugeMetricFamily("wizard_consumer_heartbeat_age_seconds", "Seconds since each queue consumer "
                            "(host:pid) last beat; a live one beats every 15 s.", labels=["consumer"])
    threads = GaugeMetricFamily("wizard_consumer_threads_alive", "Task threads alive in each queue consumer "
                                "at its last beat.", labels=["consumer"])
    alive = 0
    for beat in beats:
        seconds = max(0.0, (now - beat.beat_at).total_seconds())
        alive += seconds <= ALIVE_WITHIN.total_seconds() and beat.threads_alive > 0
        age.add_metric([beat.consumer], seconds)
        threads.add_metric([beat.consumer], beat.threads_alive)
    yield GaugeMetricFamily("wizard_consumers_alive", "Queue consumers that beat within the last "
                            f"{int(ALIVE_WITHIN.total_seconds())} s with a task thread alive.", value=alive)
    yield age
    yield threads


def _outbox_dead(connection):
    """Dead outbox rows, or None while the ``outbox`` table does not exist (or cannot be read)."""
    if not inspect(connection).has_table("outbox"):
        return None
    try:
        with connection.begin_nested():  # PostgreSQL: a failed statement must not spoil the transaction
            return connection.execute(text("SELECT count(*) FROM outbox WHERE status = :dead"),
                                      {"dead": OutboxStatus.DEAD.value}).scalar()
    except SQLAlchemyError as exc:
        log.warning("metrics could not read the outbox: %s", type(exc).__name__)
        return None


class _ThisProcess:
    """The default registry (this process's counters and its process/platform metrics), for single-process
    mode; no ``describe`` so that registering it twice in one request's registry cannot clash."""

    def collect(self):
        return REGISTRY.collect()


def registry_for_scrape(engine):
    """A registry for one scrape: every worker's counters (or this process's), plus the database's gauges
    when given an ``engine``."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    if engine is not None:
        registry.register(DatabaseCollector(engine))
    return registry


def _loopback(address):
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def scrape_refusal():
    """None when this request may read the metrics, else the (empty) answer to give."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), str(token).encode()):
            return None
        return "", 401, {"WWW-Authenticate": 'Bearer realm="metrics"'}
    if _loopback(request.remote_addr) and not any(name in request.headers for name in _FORWARDED):
        return None
    return "", 403


@bp.get("/metrics")
def metrics():
    refusal = scrape_refusal()
    if refusal is not None:
        return refusal
    from .extensions import db
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    body = encoder(registry_for_scrape(db.engine))
    return body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"}


def start_metrics_server(port, addr="127.0.0.1"):
    """Serve this process's counters on ``addr:port`` (for a queue consumer, which has no web server).

    A consumer on another machine, or one started outside gunicorn's multiprocess directory, would otherwise
    count its retries and dead tasks where no scrape can see them. Binds to loopback unless told otherwise.
    """
    from prometheus_client import start_http_server
    return start_http_server(port, addr=addr, registry=registry_for_scrape(None))
