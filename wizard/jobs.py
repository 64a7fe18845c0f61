"""What each job on the queue does (the jobs themselves are declared in wizard/queue.py); each body is thin and
calls a domain module. Imported by the app factory only (which the consumer, ``flask worker``, runs too):
this is the one module that imports every domain, so nothing else may import it.

- ``drain_events``: run the stored events, one user's at a time (line/worker.py); the jobs their handlers
  leave (a message to send, a profile or a picture to fetch) are queued after their commit;
- ``send_message``: one attempt at one outbox row (outgoing/outbox.py); a retry is this job scheduled again
  after the channel's Retry-After or the backoff;
- ``fetch_profile``: a contact's LINE profile when no form was sent (standby, form not due);
- ``fetch_content``: an image, video, audio or file a customer sent, kept in our database (customers/content.py);
- ``mark_read``: a customer's messages marked read on LINE when someone opens the conversation;
- ``scan_evidence`` and ``recheck_shop``: passive evidence (refused signatures, deliveries to a shop not
  healthy) re-derives that shop's recorded state at once (watch/evidence.py);
- ``check_shop``, ``notify_alerts`` and ``watch``: the drift watch (watch/drift.py, watch/alerts.py);
- ``sweep`` (every minute): exactly one consumer runs each minute's sweep however many run, because the
  run must first advance that minute's slot in ``periodic_runs`` (queue.once_per_slot);
- ``retention`` (nightly): deletes what outlived its retention setting (retention.py), on one consumer;
- ``send_batches`` and ``send_batch``: a multicast's or broadcast's chunks (outgoing/batches.py), each
  again after the backoff, LINE's Retry-After or its pace slot; the sweep re-queues those whose worker died;
- ``send_plans`` (every minute, on one consumer): due send plans start, their outcomes are counted
  (plans/runs.py); ``fill_run``: a run whose worker died while writing it slice by slice, queued by the
  sweep (so a restarted consumer goes on at once) and filled on from its cursor (plans/filling.py);
  ``plan_statistics`` (hourly): LINE's statistics of recent plans (plans/statistics.py);
- ``media_cleanup`` (hourly, on one consumer): the templates' pictures nothing uses any more are deleted
  (plans/media.py).
"""
import logging
import threading
from contextlib import contextmanager

from flask import current_app

from . import claims, metrics, queue, retention
from .customers import content, conversation, profiles
from .extensions import db
from .line import quarantine, worker
from .line.problems import retryable
from .models import utcnow
from .outgoing import batches, outbox
from .plans import filling as plan_filling, media, runs as plan_runs, statistics as plan_statistics
from .watch import alerts, drift, evidence

log = logging.getLogger(__name__)

SWEEP_EVERY = 60  # seconds: huey's scheduler looks at periodic tasks once a minute
DRAIN_SECONDS = 20  # one drain task yields its consumer thread after this long, and enqueues the rest
PROFILE = claims.backoff("profile")


_running = {}  # app id → {"drains": n, "fills": n} running in this process (tests run several apps' consumers)
_running_lock = threading.Lock()


def _counts():
    return _running.setdefault(id(current_app._get_current_object()), {"drains": 0, "fills": 0})


def _drain_share(counts):
    """How many of the consumer's threads drains may hold: all but one, and one fewer while a send plan's run
    is being written (plans/filling.py holds its thread for the whole run), so its chunks still find a
    thread and go while later slices are written."""
    return max(1, queue.consumer_threads() - 1 - counts["fills"])


def _drain_slot():
    """Whether this task may drain: drains hold at most their share of the consumer's threads, so a backlog
    of events (a flood of webhooks) never holds every thread and a send plan's chunks, profiles and the
    watch still get one. A task refused here has nothing to do: the drains running re-queue themselves
    while work is left, and each checks for new work after leaving its slot."""
    with _running_lock:
        counts = _counts()
        if counts["drains"] >= _drain_share(counts):
            return False
        counts["drains"] += 1
        return True


def _leave_drain_slot():
    with _running_lock:
        _counts()["drains"] -= 1


def _over_share():
    """Asked by a drain between its batches: when drains now hold more than their share (a run began to be
    written), this one gives its slot back (True) and stops; it re-queues itself if work is left."""
    with _running_lock:
        counts = _counts()
        if counts["drains"] > _drain_share(counts):
            counts["drains"] -= 1
            return True
        return False


@contextmanager
def _writing_a_run():
    """Around work that may write a send plan's run (its start, its resume, the minute's tick)."""
    with _running_lock:
        _counts()["fills"] += 1
    try:
        yield
    finally:
        with _running_lock:
            _counts()["fills"] -= 1


@queue.drain_events.runs
def drain_events():
    huey = queue.instance()
    huey.get(queue.WAKE_FLAG)  # down before the first claim: anything committed from now on rings again
    if not _drain_slot():
        return  # the flag is down, so what is committed after the running drains' last look rings again
    left = False

    def keep_going():
        nonlocal left
        left = _over_share()
        return not left

    try:
        if worker.drain(after_commit=enqueue_effects, stop_after=DRAIN_SECONDS, keep_going=keep_going):
            evidence.ring()  # deliveries may clear a shop recorded broken (watch/evidence.py)
    finally:
        if not left:
            _leave_drain_slot()  # before the look below: an event committed after it rings a drain that may run
    if worker.waiting_work():
        queue.drain_events()  # more than one drain's share, or new arrivals: keep going on any consumer
    else:
        _schedule_next_retry()


def _schedule_next_retry():
    at = worker.next_retry_at()
    if at is not None:
        queue.drain_events(delay=max((at - utcnow()).total_seconds(), 0.1))


def enqueue_effects(effects):
    """Queue what an event's handler left (``after_commit`` of the drain)."""
    for job, args in effects:
        job(*args)


def send_message(outbox_id):
    outcome, delay = outbox.send(outbox_id)
    if outcome == outbox.Outcome.RETRY:
        queue.send_message(outbox_id, delay=delay)


queue.send_message.runs(send_message, here=outbox.send)


def fetch_profile(contact_id, attempt=1):
    problem = profiles.fetch_profile(contact_id)
    if problem is None or not retryable(problem):
        return
    if PROFILE.exhausted(attempt):
        metrics.TASKS_DEAD.labels(task="fetch_profile").inc()
        return
    metrics.TASKS_RETRIED.labels(task="fetch_profile").inc()
    queue.fetch_profile(contact_id, attempt + 1, delay=PROFILE.delay(attempt, problem.retry_after))


queue.fetch_profile.runs(fetch_profile, here=profiles.fetch_profile)


@queue.fetch_content.runs
def fetch_content(content_id):
    """An image, video, audio or file a customer sent, from LINE into our database (customers/content.py).
    Nothing runs here in ``process_pending``: tests and ``worker --once`` fetch with ``content.fetch_due``."""
    outcome, delay = content.fetch(content_id)
    if outcome == content.Outcome.RETRY:
        queue.fetch_content(content_id, delay=delay)


@queue.mark_read.runs
def mark_read(message_id, attempt=1):
    """Mark a customer's messages read on LINE (customers/conversation.py); a couple of tries at most."""
    done, delay = conversation.mark_read(message_id)
    if not done and delay is not None and attempt <= len(conversation.MARK_DELAYS):
        queue.mark_read(message_id, attempt + 1, delay=max(delay, conversation.MARK_DELAYS[attempt - 1]))


@queue.notify_alerts.runs
def notify_alerts():
    alerts.notify_due()


@queue.scan_evidence.runs
def scan_evidence():
    evidence.scan()


@queue.recheck_shop.runs
def recheck_shop(shop_id):
    evidence.recheck(shop_id)


@queue.check_shop.runs
def check_shop(shop_id):
    drift.check_by_id(shop_id)


@queue.watch.runs
def periodic_watch():
    """The drift watch's round, once per WATCH_INTERVAL_MINUTES across every consumer."""
    if queue.once_per_slot("watch", max(60, int(drift.interval().total_seconds()))):
        drift.round_now()


@queue.retention.runs
def periodic_retention():
    """Retention's nightly run: once per UTC day (its first hour that a consumer sees), on one consumer."""
    if queue.once_per_slot("retention", 86400):
        retention.run()


def periodic_send_plans():
    """Due send plans start (each once: plans/runs.py claims them), on one consumer per minute."""
    if queue.once_per_slot("send_plans", SWEEP_EVERY):
        with _writing_a_run():
            plan_runs.tick()


def start_plan(plan_id):
    with _writing_a_run():
        plan_runs.start(plan_id)


def fill_run(run_id):
    with _writing_a_run():
        plan_runs.resume(run_id)


queue.send_plans.runs(periodic_send_plans, here=plan_runs.tick)
queue.start_plan.runs(start_plan, here=plan_runs.start)
queue.fill_run.runs(fill_run, here=plan_runs.resume)


@queue.plan_statistics.runs
def periodic_plan_statistics():
    if queue.once_per_slot("plan_statistics", 3600):
        plan_statistics.refresh_due()


@queue.media_cleanup.runs
def periodic_media_cleanup():
    if queue.once_per_slot("media_cleanup", 3600):
        media.clean_up()


def periodic_sweep():
    if queue.once_per_slot("sweep", SWEEP_EVERY):
        sweep()


def sweep():
    """Ring for everything that waits in our tables; safe to run any time, any number of times."""
    huey = queue.instance()
    # Side duties first as tasks of their own: a slow mail server or a failing quarantine must never hold up
    # (or stop) the customers' messages and events below.
    queue.notify_alerts()  # alert e-mails: new alerts now, open ones again after ALERT_EMAIL_HOURS
    queue.scan_evidence()  # passive evidence whose doorbell was lost (watch/evidence.py)
    try:
        quarantine.sweep()  # old refused bodies go; any proved by a secret saved just now become events
    except Exception:
        db.session.rollback()
        log.exception("quarantine sweep failed; the next sweep tries again")
    for outbox_id in outbox.recover_in_flight() + outbox.due_ids():
        queue.send_message(outbox_id)
    for batch_id in batches.recover_in_flight() + batches.due_ids(limit=500):  # chunks whose worker died
        queue.send_batch(batch_id)
    for content_id in content.due_ids(limit=500):  # content whose task was lost, or whose lease ran out
        queue.fetch_content(content_id)
    for run_id in plan_filling.unfilled():  # a send plan's run whose worker died while writing it
        queue.fill_run(run_id)
    waiting = worker.waiting_work()
    if waiting:
        huey.get(queue.WAKE_FLAG)  # a drain whose task was lost would otherwise hold the flag up for good
        for _ in range(min(waiting, int(current_app.config["WORKER_THREADS"]))):
            queue.drain_events()
    else:
        _schedule_next_retry()
    return waiting


queue.sweep.runs(periodic_sweep, here=sweep)


@queue.send_batches.runs
def send_batches(owner, owner_id, run_key=None):
    """An owner's chunks that are due (a run just added or resumed; or one piece of it, ``run_key``): one task
    each, so every consumer's threads share them."""
    for batch_id in batches.due_ids(owner, owner_id, run_key=run_key):
        queue.send_batch(batch_id)


def send_batch(batch_id):
    """One attempt at one chunk; again after the backoff, LINE's Retry-After or the channel's pace slot."""
    outcome, delay = batches.send(batch_id)
    if outcome in (batches.Outcome.RETRY, batches.Outcome.WAIT):
        queue.send_batch(batch_id, delay=max(delay, 0.05))


queue.send_batch.runs(send_batch, here=batches.send)
