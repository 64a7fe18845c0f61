"""Queue consumers say they are alive: a row per consumer (host:pid) in ``consumer_heartbeats``, written every
``EVERY`` seconds by a thread of the consumer with how many of its task threads are still running.

Why in the database: consumers run on machines of their own, often with no metrics port anyone scrapes, and a
consumer that hangs or dies says nothing. Every machine's ``/metrics`` reads these rows (metrics.py):
``wizard_consumers_alive`` (beat within ``ALIVE_WITHIN`` with a task thread alive) and, per consumer, the
age of its last beat; alert on the first dropping below what you run. One small write per consumer every
15 s; rows of consumers silent for more than ``KEEP`` are deleted by the next beat of any consumer.
"""
import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .models import ConsumerHeartbeat, utcnow

log = logging.getLogger(__name__)

EVERY = 15  # seconds
ALIVE_WITHIN = timedelta(seconds=3 * EVERY)
KEEP = timedelta(days=1)


def consumer_name():
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def beat(name, threads, threads_alive):
    """Record one beat of consumer ``name`` (commits); never raises a database error."""
    from .rows import insert_ignoring
    now = utcnow()
    try:
        insert_ignoring(ConsumerHeartbeat, [{"consumer": name, "started_at": now, "beat_at": now,
                                             "threads": threads, "threads_alive": threads_alive}],
                        ["consumer"])
        db.session.execute(update(ConsumerHeartbeat).where(ConsumerHeartbeat.consumer == name)
                           .values(beat_at=now, threads=threads, threads_alive=threads_alive)
                           .execution_options(synchronize_session=False))
        db.session.execute(delete(ConsumerHeartbeat).where(ConsumerHeartbeat.beat_at < now - KEEP))
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("consumer %s could not record its heartbeat", name, exc_info=True)


def stop_beating(app, name):
    """The consumer stopped on purpose: its row goes (a stopped consumer is not a missing one)."""
    with app.app_context():
        try:
            db.session.execute(delete(ConsumerHeartbeat).where(ConsumerHeartbeat.consumer == name))
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()


class Heartbeat:
    """The beating thread of one consumer (huey's ``Consumer``: its ``worker_threads`` are (worker, thread))."""

    def __init__(self, app, consumer, every=EVERY):
        self.app, self.consumer, self.every = app, consumer, every
        self.name = consumer_name()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wizard-heartbeat", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
        stop_beating(self.app, self.name)

    def _run(self):
        while not self._stop.is_set():
            threads = getattr(self.consumer, "worker_threads", None) or []
            alive = sum(1 for _, thread in threads if thread.is_alive())
            with self.app.app_context():
                beat(self.name, len(threads), alive)
            self._stop.wait(self.every)
