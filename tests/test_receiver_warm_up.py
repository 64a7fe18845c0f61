"""A new worker gets ready for LINE before it counts as ready (receiver.warm_up, run by gunicorn.conf.py's
``post_worker_init`` before wizard/restart.py may stop the old workers): its database writer connected and
its statement prepared, and the channels LINE delivered to in the last minute known. Otherwise each new
worker's first deliveries of a rolling restart paid for all of that while LINE waited."""
import threading
import time
from datetime import timedelta

import pytest

from tests.webhooks import encode, make_channel, sign, text_event
from wizard.extensions import db
from wizard.line import receiver
from wizard.line.group_commit import GroupCommit
from wizard.models import Channel, WebhookEvent, utcnow


def _delivered(app, channel, ago):
    with app.app_context():
        db.session.get(Channel, channel["id"]).last_delivery_at = utcnow() - ago
        db.session.commit()


def test_a_new_worker_knows_the_channels_line_delivered_to_in_the_last_minute(app, client, make_shop):
    busy = make_channel(app, make_shop("busy-shop", "忙碌小店")[0])
    quiet = make_channel(app, make_shop("quiet-shop", "安靜小店")[0])
    never = make_channel(app, make_shop("new-shop", "新開小店")[0])
    _delivered(app, busy, timedelta(seconds=10))
    _delivered(app, quiet, timedelta(minutes=5))
    known = app.extensions.setdefault("wizard_known_channels", {})
    known.clear()  # a new worker's: nothing read yet

    assert receiver.warm_up(app) == 1
    assert set(known) == {busy["token"]}
    assert known[busy["token"]].secret == busy["secret"] and known[busy["token"]].slug == "busy-shop"

    # Its deliveries are stored and answered as ever, and so are the others' (read when they come).
    for channel in (busy, quiet, never):
        event = text_event("U" + "b" * 32, f"hello {channel['id']}")
        body = encode({"destination": channel["bot_user_id"], "events": [event]})
        answer = client.post(channel["path"], data=body, headers={
            "x-line-signature": sign(channel["secret"], body), "Content-Type": "application/json"})
        assert (answer.status_code, answer.get_json()) == (200, {"message": "ok", "stored": 1})
    with app.app_context():
        stored = db.session.scalars(db.select(WebhookEvent.channel_id)).all()
    assert sorted(stored) == sorted(channel["id"] for channel in (busy, quiet, never))


def test_the_warm_up_prepares_the_writers_statement_on_postgresql(app, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_prepared_statements is PostgreSQL's (SQLite prepares per connection as it runs)")
    receiver.warm_up(app)
    group = receiver._group_commit(app)
    raw = group._postgres._connection()
    names = [row[0] for row in raw.execute("SELECT name FROM pg_prepared_statements").fetchall()]
    assert names == ["wizard_receiver_batch"]


def test_deliveries_arriving_during_the_warm_up_wait_for_it_and_are_stored(app, make_shop):
    """The warm-up writes (an empty batch) as a writer does: a delivery that comes meanwhile queues behind it
    and is written next, never beside it on the writer's one connection."""
    channel = make_channel(app, make_shop()[0])
    entered, release, batches = threading.Event(), threading.Event(), []

    def write(batch, connection):
        batches.append(len(batch))
        if not batch:
            entered.set()
            release.wait(10)
        receiver._write(batch, connection)

    with app.app_context():
        group = GroupCommit(write, db.engine.url)
        known = receiver._known_channel(channel["token"])
    warming = threading.Thread(target=group.warm_up)
    warming.start()
    assert entered.wait(10), "the warm-up never wrote"
    event = text_event("U" + "c" * 32, "during the warm-up")
    item = receiver.Delivery(known, channel["bot_user_id"], encode({"events": [event]}), [event])
    submitting = threading.Thread(target=_submit, args=(app, group, item))
    submitting.start()
    deadline = time.monotonic() + 10
    while item not in group._queue:
        assert time.monotonic() < deadline, "the delivery never queued behind the warm-up"
        time.sleep(0.005)
    assert not item.done
    release.set()
    for thread in (warming, submitting):
        thread.join(10)
    assert (item.done, item.error, item.new, batches) == (True, None, 1, [0, 1])
    # Once deliveries are being written, there is nothing to warm: it returns at once and writes nothing.
    group._writing = True
    group.warm_up()
    assert batches == [0, 1]


def _submit(app, group, item):
    with app.app_context():
        group.submit(item)
