"""Chunks sent through LINE (the sandbox, over HTTP): every recipient once, whatever LINE answers on the way —
a 429 with Retry-After, a 500, the month's limit, a worker that died after LINE took its chunk — and the
owner's pause and cancel in the middle of a run."""
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.test_batches import TEXT, chunks
from tests.webhooks import ROOT, make_channel
from wizard import jobs
from wizard.extensions import db
from wizard.models import OutgoingBatch, OutgoingPace, utcnow
from wizard.outgoing import batches

UNIT = "plan_1"


@pytest.fixture
def told():
    heard = []
    batches.register(batches.Owner("test_plan", lambda batch, outcome, count, now:
                                   heard.append((batch.seq, outcome, count))))
    yield heard
    batches.unregister("test_plan")


class Line:
    """A sandbox channel with ``friends`` friends, and a shop's channel on it; reads what each friend got."""

    def __init__(self, app, sandbox, make_shop, friends):
        slug, _ = make_shop()
        self.app, self.control = app, sandbox.control
        created = self.control.create_channel(display_name="晴天烘焙坊")
        self.id = created["channelId"]
        self.control.update(self.id, quota=None)  # no monthly limit unless a test sets one
        self.channel = make_channel(app, slug, channel_id=self.id, secret=created["channelSecret"],
                                    bot_user_id=created["botUserId"])
        self.users = self.control.make_friends(self.id, friends) if friends else []

    def recipients(self, users=None):
        return [(number + 1, user_id) for number, user_id in enumerate(users or self.users)]

    def add(self, broadcast=False, run_key="now"):
        """The run to every friend: by multicast (chunks of 500), or as one broadcast."""
        with self.app.app_context():
            count = batches.add(self.channel["id"], owner="test_plan", owner_id=1, run_key=run_key,
                                recipients=None if broadcast else self.recipients(), messages=TEXT, unit=UNIT)
            db.session.commit()
            return count

    def send(self, batch_id):
        with self.app.app_context():
            return batches.send(batch_id)

    def send_due(self):
        with self.app.app_context():
            return batches.send_due()

    def received(self):
        """How many messages each friend got (a friend who got none is missing)."""
        counts = {}
        for message in self.control.sent_messages(self.id):
            if message["delivered"]:
                counts[message["to"]] = counts.get(message["to"], 0) + 1
        return counts

    def time_passes(self):
        """Every backoff, Retry-After and pace slot has run out."""
        with self.app.app_context():
            db.session.execute(update(OutgoingBatch).where(OutgoingBatch.next_attempt_at.is_not(None))
                               .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
            db.session.execute(update(OutgoingPace).values(free_at_us=0))
            db.session.commit()


@pytest.fixture
def line(app, sandbox, make_shop):
    return Line(app, sandbox, make_shop, 1201)


def test_every_friend_gets_the_message_once_and_the_owner_hears_each_chunk(app, line, told):
    assert line.add() == 3

    assert line.send_due() == 3
    assert line.received() == {user: 1 for user in line.users}
    rows = chunks(app)
    assert [row.status for row in rows] == ["sent"] * 3
    sends = {send["retryKey"]: send for send in line.control.sends(line.id)}
    for row in rows:  # each chunk is one multicast with its own key and LINE's request id on record
        assert sends[row.retry_key]["requestId"] == row.request_id
        assert (sends[row.retry_key]["kind"], sends[row.retry_key]["unit"]) == ("multicast", UNIT)
    assert sorted(told) == [(0, "sent", 500), (1, "sent", 500), (2, "sent", 201)]
    with app.app_context():
        progress = batches.progress("test_plan", 1)
    assert (progress["sent"], progress["recipients_sent"], progress["pending"]) == (3, 1201, 0)

    assert line.send_due() == 0  # nothing is due any more: nobody gets it twice
    assert line.received() == {user: 1 for user in line.users}


def test_a_429_waits_for_retry_after_on_every_chunk_of_the_channel_then_everyone_gets_it_once(app, line, told):
    line.add()
    first, second, third = (row.id for row in chunks(app))
    line.control.fail(line.id, 429, times=1, retry_after=40)

    outcome, delay = line.send(first)
    assert (outcome, delay) == (batches.Outcome.RETRY, 40)  # LINE's 40 s, longer than our first backoff (5 s)
    row = chunks(app)[0]
    assert (row.status, row.called_at) == ("queued", None)  # LINE refused: nothing went out
    assert timedelta(seconds=39) < row.next_attempt_at - utcnow() <= timedelta(seconds=40)
    outcome, wait = line.send(second)  # another chunk of the channel waits for LINE's 40 s too
    assert outcome == batches.Outcome.WAIT and 38 < wait <= 40
    assert chunks(app)[1].attempts == 0 and line.received() == {}

    line.time_passes()
    assert line.send_due() == 3
    assert line.received() == {user: 1 for user in line.users}
    assert [row.attempts for row in chunks(app)] == [2, 1, 1]
    assert sorted(told) == [(0, "sent", 500), (1, "sent", 500), (2, "sent", 201)]
    assert line.send(third) == (batches.Outcome.SKIPPED, None)


def test_a_500_mid_run_is_tried_again_with_the_same_key_and_nobody_gets_it_twice(app, line, told):
    line.add()
    first, second, _ = (row.id for row in chunks(app))
    assert line.send(first) == (batches.Outcome.SENT, None)
    line.control.fail(line.id, 500, times=1)

    outcome, delay = line.send(second)
    assert (outcome, delay) == (batches.Outcome.RETRY, batches.BACKOFF.delays[0])
    row = chunks(app)[1]
    assert row.status == "queued" and row.called_at is not None  # no answer seen: it may have arrived
    assert "status 500" in row.error
    assert line.send(second) == (batches.Outcome.SKIPPED, None)  # not before its backoff

    line.time_passes()
    assert line.send_due() == 2
    assert line.received() == {user: 1 for user in line.users}
    assert [(row.status, row.attempts) for row in chunks(app)] == [("sent", 1), ("sent", 2), ("sent", 1)]
    assert sorted(send["retryKey"] for send in line.control.sends(line.id)) == sorted(
        row.retry_key for row in chunks(app))  # one accepted request per chunk, the retried one with its key


def test_the_months_limit_leaves_the_rest_of_the_run_over_quota_and_says_who(app, line, told):
    line.control.set_plan(line.id, "free")  # 200 messages a month: a chunk of 500 does not fit
    line.add()

    assert line.send_due() == 3  # the first is refused; the other two are no longer due
    assert line.received() == {}
    rows = chunks(app)
    assert [row.status for row in rows] == ["over_quota"] * 3
    assert "monthly limit" in rows[0].error and rows[1].error == "the month's message limit was reached"
    assert sorted(told) == [(0, "over_quota", 500), (1, "over_quota", 500), (2, "over_quota", 201)]
    with app.app_context():
        progress = batches.progress("test_plan", 1)
    assert (progress["over_quota"], progress["recipients_over_quota"], progress["pending"]) == (3, 1201, 0)


def test_cancel_mid_run_stops_the_chunks_not_sent_and_pause_resume_sends_the_rest_once(app, line, told):
    line.add()
    first, second, third = (row.id for row in chunks(app))
    assert line.send(first)[0] == batches.Outcome.SENT
    with app.app_context():
        batches.hold("test_plan", 1)
        db.session.commit()
    assert line.send_due() == 0 and line.send(second)[0] == batches.Outcome.SKIPPED
    with app.app_context():
        batches.release("test_plan", 1)
        db.session.commit()
    assert line.send(second)[0] == batches.Outcome.SENT

    with app.app_context():
        assert batches.cancel("test_plan", 1) == 1
        db.session.commit()
    assert line.send_due() == 0
    assert [row.status for row in chunks(app)] == ["sent", "sent", "cancelled"]
    got = line.received()
    assert got == {user: 1 for user in line.users[:1000]}  # the third chunk's 201 friends got nothing
    assert sorted(told) == [(0, "sent", 500), (1, "sent", 500), (2, "cancelled", 201)]


def test_a_broadcast_reaches_every_friend_once(app, line, told):
    assert line.add(broadcast=True) == 1
    assert line.send_due() == 1
    assert line.received() == {user: 1 for user in line.users}
    [row] = chunks(app)
    assert row.status == "sent" and line.control.sends(line.id)[0]["kind"] == "broadcast"


CRASH_AFTER_LINE_TOOK_IT = """
import os
from wizard import create_app
from wizard.line import sender
from wizard.outgoing import batches

app = create_app()
real = sender.LineSender.multicast


def dies_after_line_took_it(self, *args, **kwargs):
    real(self, *args, **kwargs)  # LINE has the chunk ...
    os._exit(17)  # ... and the process dies before our row says so


sender.LineSender.multicast = dies_after_line_took_it
batches.register(batches.Owner("test_plan", lambda *args: None))
with app.app_context():
    batches.send(int(os.environ["BATCH_ID"]))
"""


@pytest.mark.system  # a process of its own
def test_a_worker_killed_after_line_took_a_chunk_never_sends_it_twice(app, line, db_url, told):
    """The worker dies between LINE's answer and our record of it; the sweeper gives the chunk to another
    worker, which sends it with the same key: LINE answers 409 (it has it), and the chunk is sent, once."""
    line.add()
    first = chunks(app)[0]
    env = {**os.environ, "WIZARD_DATABASE_URL": db_url, "WIZARD_INSTANCE_PATH": app.instance_path,
           "WIZARD_SECRET_KEY": app.config["SECRET_KEY"], "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"], "BATCH_ID": str(first.id)}
    died = subprocess.run([sys.executable, "-c", CRASH_AFTER_LINE_TOOK_IT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert died.returncode == 17, died.stderr
    assert len(line.received()) == 500
    [accepted] = line.control.sends(line.id)
    row = chunks(app)[0]
    assert row.status == "sending" and row.called_at is not None  # in flight when the worker died

    with app.app_context():
        db.session.execute(update(OutgoingBatch).values(claimed_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        jobs.sweep()  # the dead worker's lease ran out: the chunk is queued again
        assert db.session.scalar(select(OutgoingBatch.status).filter_by(id=first.id)) == "queued"
    assert line.send_due() == 3

    assert line.received() == {user: 1 for user in line.users}
    row = chunks(app)[0]
    assert (row.status, row.attempts, row.request_id) == ("sent", 2, accepted["requestId"])  # LINE's 409 named it
    assert len(line.control.sends(line.id)) == 3


def test_a_chunk_goes_out_while_every_other_thread_is_busy_with_a_flood_of_events(app, sandbox, make_shop, told):
    """A consumer's threads are never all taken by events: while the events of a webhook flood hold every
    drain (here a rule that waits, as a slow handler would), a send plan's chunk still goes out on the thread
    drains leave free. Before, every thread drained and the plan started only once the flood was over."""
    import threading
    import time

    from tests.test_extension_points import deliver, postback_event
    from wizard import queue
    from wizard.line import events

    line = Line(app, sandbox, make_shop, 3)
    entered, release = [], threading.Event()

    @events.handles("postback")
    def slow_rule(event, effects):
        entered.append(event.source_user_id)
        release.wait(60)
        return "slow"

    def until(condition, what, seconds=30):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
            time.sleep(0.05)

    queue.start_in_process(app, threads=2)
    try:
        deliver(line, postback_event(line.users[0], "first"))
        until(lambda: len(entered) == 1, "the first event's rule to start")
        for user in line.users[1:]:  # each rings a drain of its own while the first still runs
            deliver(line, postback_event(user, "more"))
            time.sleep(0.3)
        line.add()
        with app.app_context():
            batches.wake("test_plan", 1, app=app)
        until(lambda: line.received() == {user: 1 for user in line.users}, "the chunk to reach every friend")
        assert entered == [line.users[0]] and not release.is_set()  # the flood's events are still being run
        release.set()
        until(lambda: len(entered) == 3, "the other events to run once the first is done")
    finally:
        release.set()
        queue.stop_in_process(app)
        events.unregister("postback", slow_rule)
    assert told == [(0, "sent", 3)]
