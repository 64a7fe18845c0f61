"""The queue (huey): where it lives, the jobs it carries, the doorbells, and the consumer. Imports no domain.

Where the queue lives (``QUEUE_URL``, see config.py): a SQLite file in ``instance/`` in the embedded default
(``SqliteHuey``: no server), the app's own PostgreSQL in production (``PostgresHuey``: every machine that
reaches the database shares the queue, with LISTEN/NOTIFY so consumers wake at once), or Redis
(``PriorityRedisHuey``, Redis 5 or later) if an operator prefers it. The job code is the same for all three.

Why this module knows no domain: every layer queues work (the receiver rings, the CRM queues a read mark, the
views a message, the watch its checks), so whatever configures the queue sits below all of them. Each kind of
task is a ``Job`` declared here (``queue.send_message(outbox_id)``: a name the linter sees, never a string);
what it does is attached by wizard/jobs.py (``@queue.send_message.runs``), which imports the domains and is
imported only by the app factory. When the app first uses its queue, the jobs with a body are bound to it.

The queue is only a doorbell. huey hands a task to at most one consumer and forgets it, so a consumer killed
mid-task loses the task, never the work: the work lives in our tables (events pending, outbox queued) and
the claims there decide who does it and that it is done once. ``sweep``, a periodic job, rings again for
whatever is waiting. So a failed enqueue loses nothing either; ``Job.try_now`` says so in the log with the
row, for callers whose row is committed and who must not fail because the queue's store is away.

Webhook effects go first: the jobs a delivery causes (drain, send, profile, content, mark read) and the
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
from .heartbeat import Heartbeat
from .models import PeriodicRun, utcnow
from .rows import insert_ignoring

log = logging.getLogger(__name__)

WAKE_FLAG = "wake"
# huey: a higher priority is handed out first. What LINE's deliveries cause waits on nothing else queued.
EFFECTS_FIRST = 10
# Passive evidence (watch/evidence.py) re-checks a shop the staff list shows wrong: after the webhook's effects
# (a re-check asks LINE three times; forged refusals on many shops must not delay a form), before the watch's
# round (a reissued secret shows within seconds however many checks a round queued).
EVIDENCE_NEXT = 5
# The module the task names carry in the queue's store ("wizard.tasks.send_message"), unchanged since the
# tasks lived in wizard/tasks.py: tasks queued before an upgrade still run after it, and log lines still say so.
TASK_MODULE = "wizard.tasks"

JOBS = {}


class Job:
    """One kind of task. Call it to queue it (``queue.check_shop(shop_id)``, ``delay=`` seconds to run later);
    it carries the request id and shop of the request or work that queues it (observability.traced).

    wizard/jobs.py attaches the body (``runs``), and, where one attempt can run in the caller's process
    (``worker --once``, tests: line/worker.py ``process_pending``), the attempt without the queue's retries
    (``here``). A body returns nothing; it re-queues itself when it must try again."""

    def __init__(self, name, priority=0, schedule=None):
        self.name, self.priority, self.schedule = name, priority, schedule
        self.body = self.here = None
        JOBS[name] = self

    def runs(self, body=None, here=None):
        """Attach the body (as a decorator, or with ``here``, the in-process attempt)."""
        def attach(func):
            self.body, self.here = func, here
            return func
        return attach(body) if body is not None else attach

    def __call__(self, *args, delay=None, app=None):
        wrapper = instance(app).wizard_tasks.get(self.name)
        if wrapper is None:
            raise RuntimeError(f"job {self.name} has no body here: wizard.jobs attaches them (create_app imports it)")
        trace = observability.current_trace()
        kwargs = {"trace": trace} if trace else {}
        return wrapper.schedule(args, kwargs, delay=delay) if delay else wrapper(*args, **kwargs)

    def try_now(self, *args, row=None, app=None, delay=None):
        """Queue it (``delay``: to run that many seconds from now); when the queue's store cannot be reached,
        say so in the log with the row (committed by the caller, so the sweep finds it) instead of failing the
        caller. Returns whether it was queued."""
        try:
            self(*args, app=app, delay=delay)
            return True
        except Exception as exc:
            log.warning("could not queue %s for %s (%s); the sweeper will pick it up", self.name,
                        row or ", ".join(map(str, args)), type(exc).__name__)
            return False

    def run_here(self, *args):
        """One attempt in this process, in the current application context (no queue, no retry)."""
        if self.here is not None:
            self.here(*args)

    def __repr__(self):
        return f"<Job {self.name}>"


# ---- the jobs (bodies: wizard/jobs.py) ------------------------------------------------------------------------

drain_events = Job("drain_events", EFFECTS_FIRST)  # run the stored events (line/worker.py)
send_message = Job("send_message", EFFECTS_FIRST)  # one attempt at one outbox row (wizard/outgoing/)
fetch_profile = Job("fetch_profile", EFFECTS_FIRST)  # a contact's LINE profile (customers/profiles.py)
fetch_content = Job("fetch_content", EFFECTS_FIRST)  # a picture, video, audio or file (customers/content.py)
mark_read = Job("mark_read", EFFECTS_FIRST)  # a customer's messages marked read on LINE
sweep = Job("sweep", EFFECTS_FIRST, schedule=crontab(minute="*"))  # ring for whatever waits in our tables
check_shop = Job("check_shop")  # the drift watch's check of one shop
notify_alerts = Job("notify_alerts")  # alert e-mails due
watch = Job("watch", schedule=crontab(minute="*"))  # the drift watch's round, once per WATCH_INTERVAL_MINUTES
scan_evidence = Job("scan_evidence", EVIDENCE_NEXT)  # passive evidence → re-checks (watch/evidence.py)
recheck_shop = Job("recheck_shop", EVIDENCE_NEXT)
# Nightly from 03:00 in Taiwan (huey's crontab reads UTC; the next two hours stand in when no consumer ran at
# 03:00): retention.py deletes what outlived its setting, on one consumer.
retention = Job("retention", schedule=crontab(minute="0", hour="19-21"))
# Multicast and broadcast chunks (outgoing/batches.py): after the webhook's effects and the evidence's
# re-checks (a new friend's form never waits behind a send plan), before the drift watch's checks.
SENDS_NEXT = 3
send_batches = Job("send_batches", SENDS_NEXT)  # queue one send_batch per due chunk of an owner's runs
send_batch = Job("send_batch", SENDS_NEXT)  # one attempt at one chunk
# Send plans (wizard/plans/): each minute the due runs start, once (plans/runs.py); each hour the plans whose
# LINE statistics are a day old are read again, for 14 days after a send (plans/statistics.py).
send_plans = Job("send_plans", schedule=crontab(minute="*"))
start_plan = Job("start_plan")  # a plan started at its time to the second (now, or later), not at the next tick
fill_run = Job("fill_run")  # a run whose worker died while writing it, filled on from where it was left
plan_statistics = Job("plan_statistics", schedule=crontab(minute="17"))
# Each hour, the templates' pictures that nothing uses any more are deleted (plans/media.py), on one consumer.
media_cleanup = Job("media_cleanup", schedule=crontab(minute="41"))


# ---- the app's huey -----------------------------------------------------------------------------------------


def instance(app=None):
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
    _bind(huey, app)
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


def _bind(huey, app):
    """The jobs with a body, bound to ``app``: each runs in its own application context (its own session)."""

    def in_app(job):
        body = job.body

        def run(*args, trace=None):
            with app.app_context(), observability.traced(trace):
                return body(*args)
        run.__name__, run.__module__, run.__doc__ = job.name, TASK_MODULE, body.__doc__
        return run

    huey.wizard_app = app  # for the consumers' heartbeat
    huey.wizard_tasks = {}
    for job in JOBS.values():
        if job.body is None:
            continue  # wizard/jobs.py not imported (a script using the queue alone): nothing to bind
        if job.schedule is not None:
            task = huey.periodic_task(job.schedule, name=job.name, priority=job.priority)
        else:
            task = huey.task(name=job.name, priority=job.priority)
        huey.wizard_tasks[job.name] = task(in_app(job))


# ---- the doorbells ------------------------------------------------------------------------------------------


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


def ring_evidence(app=None, interval=RING_INTERVAL):
    """Passive evidence arrived (watch/evidence.py): queue a scan for it, debounced like ``wake`` (at most
    every ``interval`` seconds per process, the last ring of a burst kept), but always from the timer's
    thread: the request that rang (a refused webhook) never writes to the queue's store. Never raises."""
    app = app or current_app._get_current_object()
    key = ("wizard_evidence_bell", os.getpid())
    bell = app.extensions.get(key)
    if bell is None:
        bell = app.extensions.setdefault(key, Doorbell(app, interval, _queue_evidence_scan, leading=False))
    bell.ring()


def _queue_evidence_scan(app):
    try:
        scan_evidence(app=app)
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
        huey = instance(app)
        if huey.get(WAKE_FLAG, peek=True) is not None:
            return
        if huey.put_if_empty(WAKE_FLAG, "1"):
            drain_events(app=app)
    except Exception:  # the events are stored; the sweeper will ring for them. Never fail the delivery.
        log.warning("could not wake the queue; the sweeper will pick the events up", exc_info=True)


def once_per_slot(name, seconds):
    """True for exactly one caller per ``seconds``-long slot of wall time, across every process."""
    slot = int(time.time() // seconds)
    try:
        insert_ignoring(PeriodicRun, [{"name": name, "slot": 0}], ["name"])
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
        instance(app).storage.queue_size()
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
    """huey's consumer options; the number of threads is kept on the app too (``consumer_threads``): the
    drains leave one of them free (jobs.py)."""
    app.extensions["wizard_consumer_threads"] = workers = int(threads or app.config["WORKER_THREADS"])
    return dict(workers=workers, worker_type="thread",
                periodic=periodic, initial_delay=0.05, backoff=1.5,
                max_delay=float(app.config["WORKER_POLL_SECONDS"]), check_worker_health=True)


def consumer_threads(app=None):
    """How many threads this process's consumer runs (the configured number before one started)."""
    app = app or current_app
    return app.extensions.get("wizard_consumer_threads") or int(app.config["WORKER_THREADS"])


def start_in_process(app, threads=None):
    """Run a consumer in this process's threads; returns it (``stop_in_process`` ends it). Rings once at start
    so whatever a stopped process left waiting is picked up."""
    existing = app.extensions.get("wizard_consumer")
    if existing is not None:
        return existing
    consumer = InProcessConsumer(instance(app), **consumer_options(app, threads))
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
            sweep.run_here()
        except Exception:
            log.warning("start-up sweep failed; the periodic sweep will try again", exc_info=True)
