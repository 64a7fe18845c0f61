"""The queue (huey): where it lives, the tasks, and the consumer; each task is thin and calls a domain module.

Where the queue lives (``QUEUE_URL``, see config.py): a SQLite file in ``instance/`` in the embedded default
(``SqliteHuey``: no server), the app's own PostgreSQL in production (``PostgresHuey``: every machine that
reaches the database shares the queue, with LISTEN/NOTIFY so consumers wake at once), or Redis
(``PriorityRedisHuey``, Redis 5 or later) if an operator prefers it. The task code is the same for all three.

The queue is only a doorbell. huey hands a task to at most one consumer and forgets it, so a consumer killed
mid-task loses the task, never the work: the work lives in our tables (events pending, outbox queued) and
the claims there decide who does it and that it is done once. ``sweep``, a periodic task, rings again for
whatever is waiting: due events, messages due for retry, messages whose worker died mid-send.

Tasks:
- ``drain_events``: run the stored events, one user's at a time (line/worker.py); what they leave for LINE
  becomes ``send_message`` and ``fetch_profile`` tasks after their commit;
- ``send_message``: one attempt at one outbox row (line/outbox.py); a retry is this task scheduled again
  after LINE's Retry-After or the backoff;
- ``fetch_profile``: a contact's LINE profile when no form was sent (standby, form not due);
- ``fetch_content``: an image, video, audio or file a customer sent, kept in our database (customers/content.py);
- ``mark_read``: a customer's messages marked read on LINE when someone opens the conversation;
- ``scan_evidence`` and ``recheck_shop``: passive evidence (refused signatures, deliveries to a shop not
  healthy) re-derives that shop's recorded state at once (watch/evidence.py);
- ``sweep`` (every minute): exactly one consumer runs each minute's sweep however many run, because the
  run must first advance that minute's slot in ``periodic_runs`` (``once_per_slot``);
- ``retention`` (nightly): deletes what outlived its retention setting (retention.py), on one consumer.

Webhook effects go first: the tasks a delivery causes (drain, send, profile, content, mark read) and the
sweep that rings for them are queued with priority ``EFFECTS_FIRST``; the drift watch's checks and alert mails
keep priority 0; the re-checks passive evidence asks for sit between (``EVIDENCE_NEXT``). Every
storage hands out the highest priority first (SQLite and PostgreSQL order by it; Redis uses huey's priority
queue, a sorted set), so a watch round that queues a check for each of 10,000 shops delays a new friend's
form by at most the checks already running, never by the ones still queued.

The receiver rings with ``wake``: a flag in the queue's store says "a drain is queued and has not started";
while it is up, further deliveries only read it (no write per delivery); the drain takes it down before it
starts, so an event committed after that rings again.
"""
import logging
import os
import threading
import time

from flask import current_app
from huey import PostgresHuey, PriorityRedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from . import observability
from .extensions import db
from .models import PeriodicRun

log = logging.getLogger(__name__)

WAKE_FLAG = "wake"
SWEEP_EVERY = 60  # seconds: huey's scheduler looks at periodic tasks once a minute
DRAIN_SECONDS = 20  # one drain task yields its consumer thread after this long, and enqueues the rest
PROFILE_ATTEMPTS = 4
PROFILE_DELAYS = (30, 120, 600)
# huey: a higher priority is handed out first. What LINE's deliveries cause waits on nothing else queued.
EFFECTS_FIRST = 10
# Passive evidence (watch/evidence.py) re-checks a shop the staff list shows wrong: after the webhook's effects
# (a re-check asks LINE three times; forged refusals on many shops must not delay a form), before the watch's
# round (a reissued secret shows within seconds however many checks a round queued).
EVIDENCE_NEXT = 5


def queue(app=None):
    """The app's huey instance, made on first use (so a database that is down does not stop the app)."""
    app = app or current_app._get_current_object()
    huey = app.extensions.get("huey")
    if huey is None:
        with _making:
            huey = app.extensions.get("huey")
            if huey is None:
                huey = app.extensions["huey"] = _make(app)
    return huey


_making = threading.Lock()


def _make(app):
    url = make_url(app.config["QUEUE_URL"])
    name = app.config["QUEUE_NAME"]
    backend = url.get_backend_name()
    if backend == "sqlite":
        huey = SqliteHuey(name, filename=url.database, results=False, timeout=10)
    elif backend == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        huey = PostgresHuey(name, dsn=dsn, results=False, connect_timeout=5, create_tables=False)
        _create_tables(huey.storage)
    elif backend == "redis":
        huey = PriorityRedisHuey(name, url=str(app.config["QUEUE_URL"]), results=False)
        _list_to_priority_queue(huey.storage)
    else:
        raise RuntimeError(f"QUEUE_URL must be sqlite://, postgresql:// or redis://, not {backend}://")
    _register(huey, app)
    return huey


def _create_tables(storage, attempts=3):
    """huey's ``CREATE TABLE IF NOT EXISTS`` can still collide when two processes start on a new database at
    the same moment (PostgreSQL's catalog refuses the second); the next try finds the tables there."""
    for attempt in range(attempts):
        try:
            storage.initialize_schema()
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _list_to_priority_queue(storage):
    """Redis: the queue was a list before tasks had priorities (huey's RedisHuey); the priority queue is a
    sorted set under the same key. Tasks left in a list from before an upgrade are moved over, oldest first."""
    key = storage.queue_key
    if storage.conn.type(key) != b"list":
        return
    moved = storage.conn.lrange(key, 0, -1)
    storage.conn.delete(key)
    for data in reversed(moved):  # lpush put the newest first
        storage.enqueue(data)


def _register(huey, app):
    """The tasks, bound to ``app``: each runs in its own application context (its own database session)."""

    def in_app(func):
        def run(*args, trace=None):
            with app.app_context(), observability.traced(trace):
                return func(*args)
        run.__name__ = func.__name__
        return run

    huey.wizard_app = app  # for the consumers' heartbeat

    first = EFFECTS_FIRST
    huey.wizard_tasks = {
        "drain_events": huey.task(name="drain_events", priority=first)(in_app(_drain_events)),
        "send_message": huey.task(name="send_message", priority=first)(in_app(_send_message)),
        "fetch_profile": huey.task(name="fetch_profile", priority=first)(in_app(_fetch_profile)),
        "fetch_content": huey.task(name="fetch_content", priority=first)(in_app(_fetch_content)),
        "mark_read": huey.task(name="mark_read", priority=first)(in_app(_mark_read)),
        "sweep": huey.periodic_task(crontab(minute="*"), name="sweep", priority=first)(in_app(_periodic_sweep)),
        "check_shop": huey.task(name="check_shop")(in_app(_check_shop)),
        "notify_alerts": huey.task(name="notify_alerts")(in_app(_notify_alerts)),
        "watch": huey.periodic_task(crontab(minute="*"), name="watch")(in_app(_periodic_watch)),
        "scan_evidence": huey.task(name="scan_evidence", priority=EVIDENCE_NEXT)(in_app(_scan_evidence)),
        "recheck_shop": huey.task(name="recheck_shop", priority=EVIDENCE_NEXT)(in_app(_recheck_shop)),
        # Nightly from 03:00 in Taiwan (huey's crontab reads UTC; the next two hours stand in when no consumer
        # ran at 03:00): retention.py deletes what outlived its setting.
        "retention": huey.periodic_task(crontab(minute="0", hour="19-21"), name="retention")(
            in_app(_periodic_retention)),
    }


def enqueue(name, *args, delay=None, app=None):
    """Put one task on the queue, to run now or after ``delay`` seconds (huey's schedule). It carries the
    request id and shop of the request or work that queues it (observability.traced), for its log lines."""
    wrapper = queue(app).wizard_tasks[name]
    trace = observability.current_trace()
    kwargs = {"trace": trace} if trace else {}
    return wrapper.schedule(args, kwargs, delay=delay) if delay else wrapper(*args, **kwargs)


# ---- the receiver's doorbell -------------------------------------------------------------------------------


def wake(app=None):
    """Make sure a drain is queued soon: at once for the first delivery in a while, then at most once per
    ``RING_INTERVAL`` per process (the last ring of a burst is never dropped: a timer rings it). The request
    path pays a lock and a clock read; the queue's store is asked at most ten times a second."""
    app = app or current_app._get_current_object()
    key = ("wizard_doorbell", os.getpid())  # made after gunicorn forks: a timer thread does not survive fork
    bell = app.extensions.get(key)
    if bell is None:
        bell = app.extensions.setdefault(key, Doorbell(app))
    bell.ring()


RING_INTERVAL = 0.1


def ring_evidence(app=None):
    """Passive evidence arrived (watch/evidence.py): queue a scan for it, debounced like ``wake`` (at most
    every ``evidence.RING_INTERVAL`` per process, the last ring of a burst kept), but always from the timer's
    thread: the request that rang (a refused webhook) never writes to the queue's store. Never raises."""
    from .watch import evidence
    app = app or current_app._get_current_object()
    key = ("wizard_evidence_bell", os.getpid())
    bell = app.extensions.get(key)
    if bell is None:
        bell = app.extensions.setdefault(key, Doorbell(app, evidence.RING_INTERVAL, _queue_evidence_scan,
                                                       leading=False))
    bell.ring()


def _queue_evidence_scan(app):
    try:
        enqueue("scan_evidence", app=app)
    except Exception:  # the evidence is stored; the periodic sweep scans for it too
        log.warning("could not queue the evidence scan; the sweep will", exc_info=True)


class Doorbell:
    """Leading and trailing debounce of ``action`` (default ``ring_now``) for one app in one process; with
    ``leading=False`` only trailing (the caller's thread never runs ``action``)."""

    def __init__(self, app, interval=RING_INTERVAL, action=None, leading=True):
        self.app, self.interval = app, interval
        self.action = action or ring_now
        self.leading = leading
        self._lock = threading.Lock()
        self._last = -interval
        self._timer = None

    def ring(self):
        now = time.monotonic()
        with self._lock:
            if self._timer is not None:
                return  # a ring is already due: it will cover this delivery too
            if self.leading and now - self._last >= self.interval:
                self._last = now
            else:
                wait = max(0.0, self.interval - (now - self._last)) if self.leading else self.interval
                self._timer = threading.Timer(wait, self._trailing)
                self._timer.daemon = True
                self._timer.start()
                return
        self.action(self.app)

    def _trailing(self):
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        with self.app.app_context():
            self.action(self.app)


def ring_now(app=None):
    """Queue a drain unless one is queued and has not started (a read when it is; no write per delivery)."""
    try:
        huey = queue(app)
        if huey.get(WAKE_FLAG, peek=True) is not None:
            return
        if huey.put_if_empty(WAKE_FLAG, "1"):
            enqueue("drain_events", app=app)
    except Exception:  # the events are stored; the sweeper will ring for them. Never fail the delivery.
        log.warning("could not wake the queue; the sweeper will pick the events up", exc_info=True)


# ---- tasks ---------------------------------------------------------------------------------------------------


def _drain_events():
    from .line import worker
    huey = queue()
    huey.get(WAKE_FLAG)  # down before the first claim: anything committed from now on rings again
    if worker.drain(after_commit=_enqueue_effects, stop_after=DRAIN_SECONDS):
        ring_evidence()  # deliveries may clear a shop recorded broken (watch/evidence.py)
    if worker.waiting_work():
        enqueue("drain_events")  # more than one drain's share, or new arrivals: keep going on any consumer
    else:
        _schedule_next_retry()


def _schedule_next_retry():
    from .line import worker
    from .models import utcnow
    at = worker.next_retry_at()
    if at is not None:
        enqueue("drain_events", delay=max((at - utcnow()).total_seconds(), 0.1))


def _enqueue_effects(effects):
    for outbox_id in effects.outbox:
        enqueue("send_message", outbox_id)
    for contact_id in effects.profiles:
        enqueue("fetch_profile", contact_id, 1)
    for content_id in getattr(effects, "contents", ()):
        enqueue("fetch_content", content_id)


def _send_message(outbox_id):
    from .line import outbox
    outcome, delay = outbox.send(outbox_id)
    if outcome == outbox.Outcome.RETRY:
        enqueue("send_message", outbox_id, delay=delay)


def _fetch_profile(contact_id, attempt=1):
    from . import metrics
    from .line import events
    problem = events.fetch_profile(contact_id)
    if problem is None or not events.retryable(problem):
        return
    if attempt >= PROFILE_ATTEMPTS:
        metrics.TASKS_DEAD.labels(task="fetch_profile").inc()
        return
    metrics.TASKS_RETRIED.labels(task="fetch_profile").inc()
    delay = max(PROFILE_DELAYS[attempt - 1], problem.retry_after or 0)
    enqueue("fetch_profile", contact_id, attempt + 1, delay=delay)


def _fetch_content(content_id):
    """An image, video, audio or file a customer sent, from LINE into our database (customers/content.py)."""
    from .customers import content
    outcome, delay = content.fetch(content_id)
    if outcome == content.Outcome.RETRY:
        enqueue("fetch_content", content_id, delay=delay)


def _mark_read(message_id, attempt=1):
    """Mark a customer's messages read on LINE (customers/conversation.py); a couple of tries at most."""
    from .customers import conversation
    done, delay = conversation.mark_read(message_id)
    if not done and delay is not None and attempt <= len(conversation.MARK_DELAYS):
        enqueue("mark_read", message_id, attempt + 1, delay=max(delay, conversation.MARK_DELAYS[attempt - 1]))


def _notify_alerts():
    from .watch import alerts
    alerts.notify_due()


def _scan_evidence():
    from .watch import evidence
    evidence.scan()


def _recheck_shop(shop_id):
    from .watch import evidence
    evidence.recheck(shop_id)


def _check_shop(shop_id):
    from .watch import drift
    drift.check_by_id(shop_id)


def _periodic_watch():
    """The drift watch's round, once per WATCH_INTERVAL_MINUTES across every consumer."""
    from .watch import drift
    if once_per_slot("watch", max(60, int(drift.interval().total_seconds()))):
        drift.round_now()


def _periodic_retention():
    """Retention's nightly run: once per UTC day (its first hour that a consumer sees), on one consumer."""
    from . import retention
    if once_per_slot("retention", 86400):
        retention.run()


def _periodic_sweep():
    if once_per_slot("sweep", SWEEP_EVERY):
        sweep()


def sweep():
    """Ring for everything that waits in our tables; safe to run any time, any number of times."""
    from .line import outbox, quarantine, worker
    huey = queue()
    # Side duties first as tasks of their own: a slow mail server or a failing quarantine must never hold up
    # (or stop) the customers' messages and events below.
    enqueue("notify_alerts")  # alert e-mails: new alerts now, open ones again after ALERT_EMAIL_HOURS
    enqueue("scan_evidence")  # passive evidence whose doorbell was lost (watch/evidence.py)
    try:
        quarantine.sweep()  # old refused bodies go; any proved by a secret saved just now become events
    except Exception:
        db.session.rollback()
        log.exception("quarantine sweep failed; the next sweep tries again")
    for outbox_id in outbox.recover_in_flight() + outbox.due_ids():
        enqueue("send_message", outbox_id)
    from .customers import content
    for content_id in content.due_ids(limit=500):  # content whose task was lost, or whose lease ran out
        enqueue("fetch_content", content_id)
    waiting = worker.waiting_work()
    if waiting:
        huey.get(WAKE_FLAG)  # a drain whose task was lost would otherwise hold the flag up for good
        for _ in range(min(waiting, int(current_app.config["WORKER_THREADS"]))):
            enqueue("drain_events")
    else:
        _schedule_next_retry()
    return waiting


def once_per_slot(name, seconds):
    """True for exactly one caller per ``seconds``-long slot of wall time, across every process."""
    from .line import store
    from .models import utcnow
    slot = int(time.time() // seconds)
    try:
        store.insert_ignoring(PeriodicRun, [{"name": name, "slot": 0}], ["name"])
        won = db.session.execute(update(PeriodicRun).where(PeriodicRun.name == name, PeriodicRun.slot < slot)
                                 .values(slot=slot, ran_at=utcnow())
                                 .execution_options(synchronize_session=False)).rowcount == 1
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        raise
    return won


# ---- health --------------------------------------------------------------------------------------------------


def queue_problem(app=None):
    """None when the queue's store answers, else a short reason (for /readyz)."""
    try:
        queue(app).storage.queue_size()
    except Exception as exc:  # any failure to reach the store is the answer, not an error here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".strip()
    return None


def describe_queue(app=None):
    """Where the queue lives, for people: the backend and host or file, never a password."""
    app = app or current_app._get_current_object()
    url = make_url(app.config["QUEUE_URL"])
    where = url.database if url.get_backend_name() == "sqlite" else f"{url.host}:{url.port or ''}/{url.database}"
    return f"{url.get_backend_name()} {where}"


# ---- consumers -----------------------------------------------------------------------------------------------


class BeatingConsumer(Consumer):
    """huey's consumer that records its heartbeat while it runs (heartbeat.py: every machine's /metrics)."""

    def start(self):
        super().start()
        from .heartbeat import Heartbeat
        self.heartbeat = Heartbeat(self.huey.wizard_app, self).start()

    def stop(self, graceful=False):
        super().stop(graceful=graceful)
        beating = getattr(self, "heartbeat", None)
        if beating is not None:
            beating.stop()


class InProcessConsumer(BeatingConsumer):
    """huey's consumer as threads inside another process (the dev server, tests): the host process keeps its
    own signal handlers (Ctrl+C stops the dev server, which stops this)."""

    def _set_signal_handlers(self):
        pass


class AnnouncingConsumer(BeatingConsumer):
    """huey's consumer that says so once it is running and its signal handlers are in place (a SIGTERM
    right after the announcement is then a graceful stop, not the default kill)."""

    def __init__(self, huey, on_started, **options):
        super().__init__(huey, **options)
        self._on_started = on_started

    def start(self):
        super().start()
        self._on_started()


def consumer_options(app, threads=None, periodic=True):
    return dict(workers=int(threads or app.config["WORKER_THREADS"]), worker_type="thread",
                periodic=periodic, initial_delay=0.05, backoff=1.5,
                max_delay=float(app.config["WORKER_POLL_SECONDS"]), check_worker_health=True)


def start_in_process(app, threads=None):
    """Run a consumer in this process's threads; returns it (``stop_in_process`` ends it). Rings once at start
    so whatever a stopped process left waiting is picked up."""
    existing = app.extensions.get("wizard_consumer")
    if existing is not None:
        return existing
    consumer = InProcessConsumer(queue(app), **consumer_options(app, threads))
    consumer.start()
    app.extensions["wizard_consumer"] = consumer
    sweep_soon(app)
    return consumer


def stop_in_process(app):
    consumer = app.extensions.pop("wizard_consumer", None)
    if consumer is not None:
        consumer.stop(graceful=True)


def sweep_soon(app=None):
    """Run a sweep now in this process (start-up of a consumer: pick up what a stopped one left).

    In an application context of its own, so its session ends with it: the consumer command's context lives
    as long as the process, and a session left there would keep a transaction open for the consumer's whole
    life (PostgreSQL's VACUUM then removes nothing, and every ALTER TABLE of a deploy waits on it)."""
    app = app or current_app._get_current_object()
    with app.app_context():
        try:
            sweep()
        except Exception:
            log.warning("start-up sweep failed; the periodic sweep will try again", exc_info=True)
