"""Multicast and broadcast chunks (wizard/outgoing/batches.py): what a run writes before anything is sent, and
what its owner can do with it (hold, release, cancel, progress); the pace every consumer shares (pace.py).

Sending through LINE (the sandbox), its faults and killed consumers are in test_batches_sending.py and
test_batches_faults.py."""
import threading
import uuid

import pytest
from sqlalchemy import select

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import OutgoingBatch
from wizard.outgoing import batches, pace

TEXT = [{"type": "text", "text": "週年慶全館八折"}]


@pytest.fixture
def told():
    """A registered owner ("test_plan") that writes down every outcome it hears: (owner_id, outcome, count)."""
    heard = []
    batches.register(batches.Owner("test_plan", lambda batch, outcome, count, now:
                                   heard.append((batch.owner_id, batch.seq, outcome, count))))
    yield heard
    batches.unregister("test_plan")


@pytest.fixture
def channel(app, make_shop):
    slug, _ = make_shop()
    return make_channel(app, slug)


def people(n, start=0):
    return [(start + i + 1, f"U{start + i:032x}") for i in range(n)]


def chunks(app, owner_id=1):
    with app.app_context():
        rows = db.session.scalars(select(OutgoingBatch).filter_by(owner_id=owner_id).order_by(OutgoingBatch.seq)).all()
        db.session.expunge_all()
        return rows


def add(app, channel, recipients, owner_id=1, run_key="now", messages=TEXT):
    with app.app_context():
        count = batches.add(channel["id"], owner="test_plan", owner_id=owner_id, run_key=run_key,
                            recipients=recipients, messages=messages, unit="plan_1")
        db.session.commit()
        return count


def test_a_run_is_written_in_chunks_of_500_with_recipients_and_a_retry_key_before_anything_is_sent(
        app, channel, told):
    everyone = people(1200)
    count = add(app, channel, everyone + everyone[:3])  # three people twice: each gets it once

    assert count == 3
    rows = chunks(app)
    assert [row.recipient_count for row in rows] == [500, 500, 200]
    assert [tuple(r) for row in rows for r in row.recipients] == everyone
    assert len({row.retry_key for row in rows}) == 3
    for row in rows:
        assert str(uuid.UUID(row.retry_key)) == row.retry_key  # LINE's X-Line-Retry-Key is a UUID
        assert (row.kind, row.status, row.called_at, row.unit, row.messages) == (
            "multicast", "queued", None, "plan_1", TEXT)
    with app.app_context():
        assert batches.progress("test_plan", 1) == {
            "chunks": 3, "recipients": 1200, "sent": 0, "recipients_sent": 0, "failed": 0, "recipients_failed": 0,
            "over_quota": 0, "recipients_over_quota": 0, "cancelled": 0, "recipients_cancelled": 0,
            "pending": 3, "recipients_pending": 1200, "held": 0, "sending": 0}
    assert told == []


def test_adding_the_same_run_again_writes_nothing_and_keeps_its_keys(app, channel, told):
    assert add(app, channel, people(700)) == 2
    keys = [row.retry_key for row in chunks(app)]

    assert add(app, channel, people(700)) == 2  # the caller retried after a lost answer
    assert add(app, channel, people(900)) == 2  # even with another audience: the run was written already
    assert [row.retry_key for row in chunks(app)] == keys
    assert add(app, channel, people(700), run_key="2027-03-01") == 2  # another run of the plan (a birthday day)
    assert len(chunks(app)) == 4


def test_a_broadcast_is_one_chunk_without_recipients(app, channel, told):
    assert add(app, channel, None) == 1
    [row] = chunks(app)
    assert (row.kind, row.recipients, row.recipient_count) == ("broadcast", None, 0)


def test_an_unknown_owner_or_no_messages_are_refused_and_nothing_is_written(app, channel, told):
    with app.app_context():
        with pytest.raises(ValueError, match="unknown batch owner 'nobody'"):
            batches.add(channel["id"], owner="nobody", owner_id=1, run_key="now", recipients=people(3),
                        messages=TEXT)
        with pytest.raises(ValueError, match="one to five messages"):
            batches.add(channel["id"], owner="test_plan", owner_id=1, run_key="now", recipients=people(3),
                        messages=[])
    assert chunks(app) == []
    assert add(app, channel, []) == 0  # nobody to send to: no chunk


def test_held_chunks_are_not_sent_until_released(app, channel, told):
    add(app, channel, people(1100))
    with app.app_context():
        assert batches.hold("test_plan", 1) == 3
        db.session.commit()
        assert batches.due_ids() == []
        assert batches.send(chunks(app)[0].id) == (batches.Outcome.SKIPPED, None)
        assert batches.progress("test_plan", 1)["held"] == 3
    assert [row.status for row in chunks(app)] == ["queued"] * 3 and chunks(app)[0].attempts == 0

    with app.app_context():
        assert batches.release("test_plan", 1) == 3
        db.session.commit()
        assert batches.due_ids() == [row.id for row in chunks(app)]
        assert batches.progress("test_plan", 1)["held"] == 0
    assert told == []


def test_cancel_ends_every_chunk_not_yet_sent_and_tells_the_owner_who_was_left_out(app, channel, told):
    add(app, channel, people(1100))
    add(app, channel, people(10), owner_id=2)  # another plan's run goes on
    with app.app_context():
        assert batches.cancel("test_plan", 1) == 3
        db.session.commit()
        assert batches.due_ids() == [chunks(app, owner_id=2)[0].id]
        progress = batches.progress("test_plan", 1)
    assert (progress["cancelled"], progress["recipients_cancelled"], progress["pending"]) == (3, 1100, 0)
    assert sorted(told) == [(1, 0, "cancelled", 500), (1, 1, "cancelled", 500), (1, 2, "cancelled", 100)]
    assert [row.status for row in chunks(app)] == ["cancelled"] * 3

    with app.app_context():
        assert batches.cancel("test_plan", 1) == 0  # twice: nothing more, nobody told twice
        db.session.commit()
    assert len(told) == 3


def test_the_pace_is_shared_by_every_consumer(app):
    """Four threads (each its own session and connection, as four consumers) take 24 multicast slots of one
    channel at 20 a second: no two slots are closer than LINE's interval, whoever took them."""
    app.config["LINE_MULTICAST_PER_SECOND"] = 20.0
    taken, errors = [], []

    def consumer():
        try:
            with app.app_context():
                for _ in range(6):
                    slot = pace.reserve(7, "multicast", longest=5.0)
                    assert slot.taken
                    taken.append(slot.at_us)
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    taken.sort()
    gaps = [later - earlier for earlier, later in zip(taken, taken[1:], strict=False)]
    assert len(taken) == 24 and min(gaps) >= 50_000, gaps  # µs


def test_a_slot_too_far_ahead_is_not_taken_and_says_how_long_to_wait(app):
    """Broadcasts: 60 an hour per channel. The second within the minute is told to come back, taking nothing;
    LINE's Retry-After pushes every consumer's next slot back."""
    with app.app_context():
        assert pace.reserve(8, "broadcast", longest=2.0)[:2] == (True, 0.0)
        ok, wait, _ = pace.reserve(8, "broadcast", longest=2.0)
        assert not ok and 58 < wait <= 60
        ok, again, _ = pace.reserve(8, "broadcast", longest=2.0)
        assert not ok and again <= wait  # nothing was taken by the refused tries
        assert pace.reserve(9, "broadcast", longest=2.0)[:2] == (True, 0.0)  # another channel: its own limit

        pace.defer(9, "multicast", 30)
        db.session.commit()
        ok, wait, _ = pace.reserve(9, "multicast", longest=2.0)
        assert not ok and 29 < wait <= 30
