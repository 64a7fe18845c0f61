"""The queue (huey): one sweep per minute however many consumers, the sweep finds work whose task was lost,
the same tasks run on Redis, and readiness says when the queue's store cannot be reached."""
import os
import time

import pytest
from sqlalchemy import update

from tests.servers import redis_url
from wizard import create_app, queue
from wizard.extensions import db
from wizard.line import worker
from wizard.models import PeriodicRun, Shop, WebhookEvent


def test_one_sweep_per_slot_however_many_consumers_ask(app):
    """Every consumer's scheduler fires the periodic sweep; only the first of each minute runs it."""
    other = create_app({**{k: app.config[k] for k in ("TESTING", "DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY",
                                                       "LINE_API_HOST", "SANDBOX", "QUEUE_NAME")},
                        "INSTANCE_PATH": app.instance_path})
    try:
        answers = []
        for each in (app, other, app, other):
            with each.app_context():
                answers.append(queue.once_per_slot("sweep", 3600))
        assert answers == [True, False, False, False]
        with app.app_context():
            db.session.execute(update(PeriodicRun).values(slot=PeriodicRun.slot - 1))  # an hour passes
            db.session.commit()
        with other.app_context():
            assert queue.once_per_slot("sweep", 3600) is True
    finally:
        with other.app_context():
            db.engine.dispose()


def test_the_sweep_finds_events_whose_task_was_lost(app, line):
    """The receiver rang, but the consumer that took the task died: the flag stays up, nobody is told again.
    The sweep takes the flag down and rings for what waits."""
    with app.app_context():
        queue.instance().put(queue.WAKE_FLAG, "1")  # a drain "is queued" that never will run
    user_id = line.follow()
    assert line.events()[0].status == "pending"
    consumer = queue.start_in_process(app, threads=2)  # its start-up sweep is the one that finds it
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [r.status for r in line.outbox()] != ["sent"]:
            time.sleep(0.05)
    finally:
        queue.stop_in_process(app)
    assert consumer is not None
    assert line.events()[0].status == "processed"
    assert len(line.control.sent_messages(line.id, user_id)) == 1


def test_the_same_tasks_run_on_redis(app, line):
    app.config["QUEUE_URL"] = redis_url(1)
    app.extensions.pop("huey", None)
    with app.app_context():
        queue.instance().storage.flush_all()
    queue.start_in_process(app, threads=2)
    try:
        user_id = line.follow()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [r.status for r in line.outbox()] != ["sent"]:
            time.sleep(0.05)
        with app.app_context():
            assert queue.describe_queue() == "redis " + redis_url(1).removeprefix("redis://")
    finally:
        queue.stop_in_process(app)
    assert [e.status for e in line.events()] == ["processed"]
    assert len(line.control.sent_messages(line.id, user_id)) == 1


def test_a_queue_that_cannot_be_reached_is_named_and_the_delivery_still_stored(app, line):
    app.config["QUEUE_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    app.extensions.pop("huey", None)
    with app.app_context():
        problem = queue.queue_problem()
    assert problem.startswith("ConnectionError")
    line.follow()  # the receiver's doorbell fails; LINE still gets its 200 and the event is kept
    assert [e.status for e in line.events()] == ["pending"]
    app.config["QUEUE_URL"] = "sqlite:///" + app.instance_path + "/huey.db"
    app.extensions.pop("huey", None)
    with app.app_context():
        assert queue.queue_problem() is None
        assert worker.waiting_work() == 1
        assert db.session.scalar(db.select(db.func.count(WebhookEvent.id))) == 1


def test_a_burst_of_deliveries_rings_at_once_and_once_more_after_it(app):
    """The first delivery rings at once; the rest of a burst share one ring after the bell's interval, so the
    last event of a burst is never left for the sweep, and the queue's store is not asked once per delivery.
    The bell here waits 2 s instead of RING_INTERVAL, so that a burst on a starved machine still fits in it."""
    with app.test_request_context():
        app.extensions[("wizard_doorbell", os.getpid())] = queue.Doorbell(app, interval=2.0)
        huey = queue.instance()
        queue.wake()
        assert huey.pending_count() == 1  # rung at once: a drain is queued
        huey.get(queue.WAKE_FLAG)  # that drain starts (and takes the flag down) ...
        for _ in range(20):
            queue.wake()  # ... while the burst goes on
        assert huey.pending_count() == 1  # nobody rang for those yet
        deadline = time.monotonic() + 30
        while huey.pending_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert huey.pending_count() == 2, "nobody rang after the burst: its last events wait for the sweep"
        time.sleep(0.5)
        assert huey.pending_count() == 2  # one ring after the burst, for all of it


@pytest.mark.parametrize("store", ["database", "redis"])
def test_a_new_friends_form_goes_out_at_once_while_hundreds_of_watch_checks_wait(app, line, store):
    """A watch round queued a check for 600 shops (here: this one, 600 times, each asking the LINE sandbox);
    a customer adds the shop as a friend after that. The form goes out while most checks still wait, not after
    them all (first in, first out, it took 30 s at 600 shops)."""
    if store == "redis":
        app.config["QUEUE_URL"] = redis_url(0)
        app.extensions.pop("huey", None)
    with app.app_context():
        shop_id = db.session.scalar(db.select(Shop.id).filter_by(slug=line.slug))
        huey = queue.instance()
        for _ in range(600):
            queue.check_shop(shop_id)
    try:
        user_id = line.follow()  # the receiver rings: a drain is queued behind the 600 checks
        started = time.monotonic()
        queue.start_in_process(app, threads=2)
        deadline = started + 60
        while time.monotonic() < deadline and [r.status for r in line.outbox()] != ["sent"]:
            time.sleep(0.02)
        took, checks_waiting = time.monotonic() - started, huey.pending_count()
    finally:
        queue.stop_in_process(app)
        huey.storage.flush_all()
    assert [r.status for r in line.outbox()] == ["sent"], "the form was never sent"
    assert len(line.control.sent_messages(line.id, user_id)) == 1
    assert checks_waiting >= 500, f"the form waited for {600 - checks_waiting} watch checks ({took:.1f} s)"
    assert took < 10, f"the form took {took:.1f} s"
