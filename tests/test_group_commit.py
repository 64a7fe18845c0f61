"""Group commit: deliveries that arrive together share one transaction, and one that cannot be stored never
sinks the others (each is then written alone, and only the failing one gets an error: a 500, so LINE
delivers it again)."""
import threading
import time

from tests.webhooks import encode, make_channel, text_event
from wizard.extensions import db
from wizard.line import receiver
from wizard.line.group_commit import GroupCommit
from wizard.models import Channel, WebhookDelivery, WebhookEvent


def delivery(app, channel, text):
    event = text_event("U" + "a" * 32, text)
    with app.app_context():
        known = receiver._known_channel(channel["token"])
    return receiver.Delivery(known, channel["bot_user_id"], encode({"events": [event]}), [event])


def stored_texts(app):
    with app.app_context():
        events = db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()
        deliveries = db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery))
        return [e.payload["message"]["text"] for e in events], deliveries


def test_one_delivery_that_cannot_be_stored_does_not_sink_the_others_in_its_commit(app, make_shop):
    slug, _ = make_shop()
    kept, gone = make_channel(app, slug), make_channel(app, make_shop("rainy-cafe", "雨天咖啡")[0])
    first, last = delivery(app, kept, "first"), delivery(app, kept, "last")
    doomed = delivery(app, gone, "doomed")
    with app.app_context():  # the other shop's channel is deleted while its delivery is on its way
        db.session.delete(db.session.get(Channel, gone["id"]))
        db.session.commit()

    # The first writer is held inside its transaction so that the three queue up behind it, as deliveries
    # arriving during a commit do; they then go into the next commit together.
    entered, release = threading.Event(), threading.Event()
    batches = []

    def write(batch, connection):
        batches.append(len(batch))
        if len(batches) == 1:
            entered.set()
            release.wait(10)
        receiver._write(batch, connection)

    group = GroupCommit(write, _engine_url(app))
    holder = delivery(app, kept, "holder")
    threads = [threading.Thread(target=_submit, args=(app, group, holder))]
    threads[0].start()
    assert entered.wait(10)
    for item in (first, doomed, last):
        threads.append(threading.Thread(target=_submit, args=(app, group, item)))
        threads[-1].start()
        _wait_until(lambda queued=item: queued in group._queue)
    release.set()
    for thread in threads:
        thread.join(10)

    assert batches[:2] == [1, 3]  # the holder alone, then the three in one transaction (which failed)
    assert [(d.done, d.error, d.new) for d in (holder, first, last)] == [(True, None, 1)] * 3
    assert doomed.done and doomed.new == 0 and "FOREIGN KEY" in str(doomed.error).upper()
    texts, deliveries = stored_texts(app)
    assert sorted(texts) == ["first", "holder", "last"]
    assert deliveries == 3


def _engine_url(app):
    with app.app_context():
        return db.engine.url


def _submit(app, group, item):
    with app.app_context():
        group.submit(item)


def _wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)
