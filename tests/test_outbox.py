"""The outbox: every message to LINE has its row; retries honour LINE's Retry-After and 5xx, end dead where
staff see and resend them; a reply whose fate is unknown is never sent twice; odd events never block a user.
"""
import threading
import time
from datetime import timedelta

from tests.webhooks import follow_event, text_event
from wizard.extensions import db
from wizard.line import worker
from wizard.models import Contact, Outbox, utcnow
from wizard.outgoing import outbox


def test_a_429_waits_as_long_as_line_asks(app, line):
    line.control.fail(line.id, 429, times=2, retry_after=120)  # the profile and the reply are refused
    user_id = line.follow()

    worker.process_pending(app)

    [row] = line.outbox()
    assert (row.status, row.attempts) == ("queued", 1)
    wait = row.next_attempt_at - utcnow()
    # LINE's 120 s, not our own first backoff of 10 s.
    assert timedelta(seconds=118) < wait <= timedelta(seconds=120)
    assert "rate_limited" in row.error
    line.make_due()
    worker.process_pending(app)
    assert [r.status for r in line.outbox()] == ["sent"]
    assert len(line.control.sent_messages(line.id, user_id)) == 1


def test_a_dead_message_is_shown_to_staff_who_send_it_again_once(app, client, line, make_user, login):
    line.control.fail(line.id, 503)
    user_id = line.follow(name="陳先生")
    for _ in range(outbox.MAX_ATTEMPTS):
        line.make_due()
        worker.process_pending(app)
    [row] = line.outbox()
    assert row.status == "dead"
    login(make_user("staff@example.com", staff=True))

    page = client.get("/shops/messages/?lang=en").get_data(as_text=True)
    assert "Gave up after every retry" in page and user_id in page and "503" in page
    assert f'action="/shops/messages/{row.id}/retry"' in page
    assert "Messages to LINE that need a person (1)" in client.get("/shops/?lang=en").get_data(as_text=True)

    line.control.heal(line.id)
    answer = client.post(f"/shops/messages/{row.id}/retry?lang=en", follow_redirects=True)
    assert "The message is queued again" in answer.get_data(as_text=True)
    again = client.post(f"/shops/messages/{row.id}/retry?lang=en", follow_redirects=True)
    assert "cannot be sent again from here" in again.get_data(as_text=True)  # a second press changes nothing
    worker.process_pending(app)

    [row] = line.outbox()
    assert (row.status, row.method) == ("sent", "push")
    assert len(line.control.sent_messages(line.id, user_id)) == 1
    assert "Nothing needs a person" in client.get("/shops/messages/?lang=en").get_data(as_text=True)


def test_the_messages_page_is_for_staff_only(client, owner):
    assert client.get("/shops/messages/").status_code == 403
    assert client.post("/shops/messages/1/retry").status_code == 403


def test_a_reply_that_timed_out_is_never_pushed_after_it(app, client, line, make_user, login):
    """LINE took the reply but answered too late for us: the token is used now, and pushing the form again
    would send it twice. It is marked unknown for staff instead."""
    line.follow()
    worker.process_pending(app)  # a first friend: the access token is cached
    app.config["LINE_TIMEOUT"] = 1.0
    line.control.fail(line.id, None, delay=1.5)  # LINE does its work, then answers after we stopped waiting
    user_id = line.follow()
    worker.process_pending(app)
    row = line.outbox()[-1]
    assert (row.status, row.reply_uncertain) == ("queued", True)
    time.sleep(1.6)  # LINE finishes what it was doing: the reply is delivered, its token used
    line.control.heal(line.id)
    line.make_due()
    worker.process_pending(app)

    row = line.outbox()[-1]
    assert (row.status, row.method) == ("unknown", "reply")
    assert len(line.control.sent_messages(line.id, user_id)) == 1  # the customer has it, once
    login(make_user("staff@example.com", staff=True))
    page = client.get("/shops/messages/?lang=en").get_data(as_text=True)
    assert "Fate unknown (not re-sent)" in page
    assert f"/shops/messages/{row.id}/retry" not in page


def test_odd_signed_events_are_unprocessable_and_never_block_the_user(app, line):
    user_id = "U" + "a" * 32
    now = int(time.time() * 1000)
    bad_token = follow_event(user_id, timestamp=now)
    bad_token["replyToken"] = 12345
    not_an_object = text_event(user_id, "hi", timestamp=now + 1)
    not_an_object["message"] = "hi"
    far_future = text_event(user_id, "from the year 146 million", timestamp=2 ** 62)
    line.post(bad_token, not_an_object, far_future)
    line.post(follow_event(user_id, mode="standby", timestamp=now + 2), text_event(user_id, "ok", timestamp=now + 3))

    worker.process_pending(app)

    events = {e.webhook_event_id: e for e in line.events()}
    assert (events[bad_token["webhookEventId"]].status, events[bad_token["webhookEventId"]].error) == (
        "unprocessable", "'replyToken' is not a string")
    assert events[not_an_object["webhookEventId"]].error == "'message' is not an object"
    assert events[far_future["webhookEventId"]].status == "unprocessable"
    assert "out of range" in events[far_future["webhookEventId"]].error
    # The user's later events ran: the standby follow made them a friend, the message is stored.
    assert [e.status for e in line.events()].count("processed") == 2
    assert line.contact(user_id).followed_at is not None
    assert [m.text for m in line.messages("in")] == ["ok"]


def test_one_users_follow_block_and_refollow_run_in_order_with_four_workers(app, line):
    """Four workers on three events of each of 30 users, delivered at once: each user's events run one at a
    time in LINE's order, so everyone ends a friend with one form."""
    users = [line.control.follow(line.id, name=f"客人{n}") for n in range(30)]  # no webhook URL: we deliver
    line.control.update(line.id, endpoint="")
    events = []
    for result in users:
        user_id = result["user"]["userId"]
        events += [result["event"], line.control.unfollow(line.id, user_id)["event"],
                   line.control.follow(line.id, user_id)["event"]]
    line.post(*events)
    start = threading.Barrier(4)

    def work():
        start.wait()
        worker.process_pending(app)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    worker.process_pending(app)

    assert {e.status for e in line.events()} == {"processed"}
    with app.app_context():
        contacts = db.session.scalars(db.select(Contact)).all()
        assert len(contacts) == 30 and all(c.blocked_at is None for c in contacts)
        forms = db.session.scalars(db.select(Outbox)).all()
        assert sorted(r.contact_id for r in forms) == sorted(c.id for c in contacts)
        db.session.remove()
    received = line.control.sent_messages(line.id)
    assert sorted(m["to"] for m in received) == sorted(r["user"]["userId"] for r in users)


def test_a_form_still_queued_when_the_shop_switches_the_form_off_never_goes_out(app, line):
    from wizard.customers import form_settings
    from wizard.models import Shop
    line.control.fail(line.id, 503, times=2)  # LINE is away when the friend follows
    user_id = line.follow()
    worker.process_pending(app)
    assert [r.status for r in line.outbox()] == ["queued"]
    with app.app_context():
        shop = db.session.scalar(db.select(Shop))
        settings = form_settings.get(shop)
        settings.enabled = False
        form_settings.save(settings)
        db.session.commit()
    line.make_due()
    worker.process_pending(app)
    [row] = line.outbox()
    assert (row.status, row.error) == ("failed", "the shop switched the form off before it went out")
    assert line.control.sent_messages(line.id, user_id) == []

