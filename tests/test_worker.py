"""The event worker and what events do, against the LINE sandbox over real HTTP.

The sandbox plays LINE: its users follow, block and talk, and it POSTs the signed webhooks to the app
served on ``live_app``; the worker then calls the sandbox back for profiles, replies and pushes.
"""
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.webhooks import (ROOT, encode, follow_event, sdk_sample, signed_headers, text_event,
                            with_unique_ids)
from wizard import create_app, jobs, queue
from wizard.extensions import db
from wizard.line import worker
from wizard.models import Contact, WebhookEvent, utcnow
from wizard.outgoing import outbox


def restarted(app, **overrides):
    """A new app on the same database and instance, as a restarted process would build it."""
    keys = ("TESTING", "DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY", "WTF_CSRF_ENABLED", "LINE_API_HOST",
            "SANDBOX", "PUBLIC_BASE_URL", "LINE_TIMEOUT", "QUEUE_NAME")
    return create_app({"INSTANCE_PATH": app.instance_path, **{k: app.config[k] for k in keys}, **overrides})


def test_a_follow_makes_a_contact_with_its_profile_and_sends_the_form(app, client, line):
    user_id = line.follow(name="林小美")

    assert worker.process_pending(app) == 1

    contact = line.contact(user_id)
    assert (contact.display_name, contact.language) == ("林小美", "zh-TW")
    assert contact.picture_url and contact.followed_at and not contact.blocked
    assert contact.form_sent_at is not None and contact.form_token
    received = line.control.sent_messages(line.id, user_id)
    assert len(received) == 1 and received[0]["kind"] == "reply"
    form_url = f"{app.config['PUBLIC_BASE_URL']}/form/{contact.form_token}"
    assert form_url in received[0]["message"]["text"]
    [sent] = line.messages("out")
    # Kept as sent, except the personal link: only the customer has a copy that opens their form.
    assert (sent.contact_id, sent.text, sent.line_message_id) == (
        contact.id, received[0]["message"]["text"].replace(contact.form_token, "****"), received[0]["id"])
    assert contact.form_token not in str(line.outbox()[0].messages)
    [event] = line.events()
    assert (event.status, event.attempts, event.error) == ("processed", 1, "form queued")
    [row] = line.outbox()
    assert (row.status, row.method, row.event_id, row.line_message_ids) == ("sent", "reply", event.id,
                                                                           [received[0]["id"]])
    # The link in the message opens the customer's own form.
    page = client.get(form_url.removeprefix(app.config["PUBLIC_BASE_URL"]))
    assert page.status_code == 200 and "晴天烘焙坊" in page.get_data(as_text=True)


def test_the_form_speaks_the_contacts_language_when_we_have_it(app, line):
    user_id = line.follow(language="en")
    worker.process_pending(app)
    [received] = line.control.sent_messages(line.id, user_id)
    assert received["message"]["text"].startswith("Thank you for adding 晴天烘焙坊 as a friend!")


def test_the_form_is_pushed_when_the_reply_token_has_expired(app, line):
    user_id = line.follow()
    line.control.expire_reply_tokens(line.id)  # the worker was down for more than a minute

    worker.process_pending(app)

    [received] = line.control.sent_messages(line.id, user_id)
    assert received["kind"] == "push" and received["delivered"]
    [row] = line.outbox()
    assert (row.status, row.method, row.attempts) == ("sent", "push", 1)
    assert received["retryKey"] == row.retry_key


def test_unfollow_blocks_and_a_refollow_restores_without_a_second_form(app, line):
    user_id = line.follow()
    worker.process_pending(app)

    line.act(line.control.unfollow(line.id, user_id))
    worker.process_pending(app)
    blocked = line.contact(user_id)
    assert blocked.blocked and blocked.blocked_at >= blocked.followed_at

    line.follow(user_id)
    worker.process_pending(app)
    restored = line.contact(user_id)
    assert not restored.blocked and restored.followed_at > blocked.followed_at
    assert restored.id == blocked.id
    # Blocking and unblocking within a day does not send the form again.
    assert len(line.control.sent_messages(line.id, user_id)) == 1
    assert line.events()[-1].error == "form sent recently: not sent again"


def test_events_taken_out_of_order_leave_the_latest_state(app, line):
    """A follow processed after a newer unfollow of the same user must not turn a blocker into a friend."""
    user_id = "U" + "7" * 32
    now = int(time.time() * 1000)
    line.post(follow_event(user_id, kind="unfollow", timestamp=now))
    worker.process_pending(app)
    line.post(follow_event(user_id, mode="standby", timestamp=now - 5000))
    worker.process_pending(app)
    assert line.contact(user_id).blocked
    assert line.events()[-1].error == "older than the contact's latest unfollow: ignored"


def test_a_message_is_stored_with_its_contact(app, line):
    user_id = line.follow()
    line.act(line.control.say(line.id, user_id, "請問週末有營業嗎？"))

    assert worker.process_pending(app) == 2

    [incoming] = line.messages("in")
    assert (incoming.text, incoming.type, incoming.contact_id) == (
        "請問週末有營業嗎？", "text", line.contact(user_id).id)


def test_a_message_from_a_stranger_creates_the_contact(app, line):
    sticker = text_event("U" + "8" * 32, "")
    sticker["message"] = {"id": "1", "type": "sticker", "packageId": "1", "stickerId": "1"}
    line.post(sticker)
    worker.process_pending(app)
    [incoming] = line.messages("in")
    assert (incoming.type, incoming.text) == ("sticker", None)
    assert line.contact("U" + "8" * 32).id == incoming.contact_id


def test_a_standby_follow_is_recorded_but_never_answered(app, line):
    user_id = line.follow()
    other = "U" + "9" * 32
    line.post(follow_event(other, mode="standby"))

    worker.process_pending(app)

    assert line.contact(other).followed_at is not None
    assert line.control.sent_messages(line.id, other) == []
    assert "standby mode: no message sent" in line.events()[-1].error
    assert len(line.control.sent_messages(line.id, user_id)) == 1


def test_line_failing_is_retried_with_backoff_and_never_blocks_other_events(app, line):
    line.control.fail(line.id, 500)
    user_id = line.follow()
    talker = line.follow()
    line.act(line.control.say(line.id, talker, "hello"))

    worker.process_pending(app)

    # The events are done (the contacts are saved); what waits is the message to LINE, with its backoff.
    assert {e.status for e in line.events()} == {"processed"}
    assert line.contact(user_id) is not None and len(line.messages("in")) == 1
    first, second = line.outbox()
    assert (first.status, first.attempts) == ("queued", 1)
    assert first.next_attempt_at > utcnow() and "500" in first.error
    assert line.control.sent_messages(line.id) == []
    worker.process_pending(app)
    assert line.outbox()[0].attempts == 1  # nothing is tried again before its backoff

    line.control.heal(line.id)
    line.make_due()
    worker.process_pending(app)
    assert {row.status for row in line.outbox()} == {"sent"}
    assert line.contact(user_id).form_sent_at
    assert len(line.control.sent_messages(line.id, user_id)) == 1


def test_a_message_that_keeps_failing_ends_dead_with_its_error(app, line):
    line.control.fail(line.id, 503)
    line.follow()
    for _ in range(outbox.MAX_ATTEMPTS):
        line.make_due()
        worker.process_pending(app)
    [row] = line.outbox()
    assert (row.status, row.attempts) == ("dead", outbox.MAX_ATTEMPTS)
    assert "503" in row.error
    line.make_due()
    worker.process_pending(app)
    assert line.outbox()[0].attempts == outbox.MAX_ATTEMPTS


def test_processing_stopped_midway_finishes_after_a_restart(app, line):
    payload = with_unique_ids(sdk_sample(), destination=line.channel["bot_user_id"])
    line.post(*payload["events"])

    assert worker.process_pending(app, limit=10) == 10  # the process stops here
    assert [e.status for e in line.events()].count("pending") == 18

    again = restarted(app)
    try:
        assert worker.process_pending(again) == 18
    finally:
        with again.app_context():
            db.engine.dispose()
    events = line.events()
    assert {e.status for e in events} == {"processed"}
    assert {e.attempts for e in events} == {1}
    # Each one-to-one message of the file became exactly one stored message.
    one_to_one = [e for e in payload["events"] if e["type"] == "message" and e["source"]["type"] == "user"]
    assert len(line.messages("in")) == len(one_to_one)


CRASHING_WORKER = """
import os
from wizard import create_app, jobs, queue
from wizard.extensions import db
from wizard.line import events, worker

app = create_app()
real = events.HANDLERS["message"]
done = []

@events.handles("message")
def dies_midway(event, effects):
    if len(done) == int(os.environ["DIE_AT"]):
        real(event, effects)
        db.session.flush()  # the message is written but never committed: the process dies here
        os._exit(17)
    done.append(event.id)
    return real(event, effects)

worker.process_pending(app)
"""


def test_a_worker_killed_mid_event_loses_nothing_and_doubles_nothing(app, line, db_url):
    users = [line.follow() for _ in range(2)]
    for index in range(6):
        line.act(line.control.say(line.id, users[index % 2], f"message {index}"))
    env = {**os.environ, "WIZARD_DATABASE_URL": db_url, "WIZARD_INSTANCE_PATH": app.instance_path,
           "WIZARD_SECRET_KEY": app.config["SECRET_KEY"],
           "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"],
           "WIZARD_PUBLIC_BASE_URL": app.config["PUBLIC_BASE_URL"], "WIZARD_WORKER_LEASE_SECONDS": "0.5",
           "DIE_AT": "3"}

    died = subprocess.run([sys.executable, "-c", CRASHING_WORKER], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)

    assert died.returncode == 17, died.stderr
    statuses = [e.status for e in line.events()]
    assert statuses.count("processed") == 5  # two follows and three messages
    assert statuses.count("processing") == 1  # claimed by the dead worker
    assert len(line.messages("in")) == 3

    time.sleep(0.6)  # the dead worker's lease runs out
    again = restarted(app)
    try:
        assert worker.process_pending(again) == 3  # the dead worker's event and the two behind it
    finally:
        with again.app_context():
            db.engine.dispose()
    assert {e.status for e in line.events()} == {"processed"}
    assert sorted(m.text for m in line.messages("in")) == [f"message {i}" for i in range(6)]
    assert len(line.control.sent_messages(line.id)) == 2  # one form per follower, none doubled


def test_the_in_process_consumer_runs_events_as_they_arrive(app, line):
    """The embedded default's queue: a real huey consumer (threads) on instance/huey.db, rung by the receiver."""
    consumer = queue.start_in_process(app)
    try:
        assert queue.start_in_process(app) is consumer
        started = time.monotonic()
        user_id = line.follow()
        while time.monotonic() - started < 10 and [r.status for r in line.outbox()] != ["sent"]:
            time.sleep(0.02)
        # Rung by the receiver: well before the periodic sweep (a minute) would have found it.
        assert time.monotonic() - started < 5
        assert line.events()[0].status == "processed"
        assert line.contact(user_id).form_sent_at is not None
        assert len(line.control.sent_messages(line.id)) == 1
        # Beside the database: its own SQLite file, or the same PostgreSQL.
        beside = ("sqlite:///" + os.path.join(app.instance_path, "huey.db")
                  if app.config["DATABASE_URL"].startswith("sqlite") else app.config["DATABASE_URL"])
        assert app.config["QUEUE_URL"] == beside
    finally:
        queue.stop_in_process(app)


def test_line_stats_counts_the_traffic(app, runner, line):
    user_id = line.follow()
    line.act(line.control.say(line.id, user_id, "hi"))
    assert line.control.redeliver(line.id)["delivery"]["statusCode"] == 200  # a duplicate: no new event
    line.act(line.control.unfollow(line.id, user_id))
    bad = encode({"destination": line.channel["bot_user_id"], "events": []})
    line.app.test_client().post(line.channel["path"], data=bad, headers=signed_headers("0" * 32, bad))
    worker.process_pending(app, limit=2)

    result = runner.invoke(args=["line", "stats", line.slug, "--json"])

    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    keys = ("deliveries", "events", "processed", "pending", "rejected", "contacts", "blocked", "messages")
    assert {key: stats[key] for key in keys} == {
        "deliveries": 4, "events": 3, "processed": 2, "pending": 1, "rejected": 1, "contacts": 1,
        "blocked": 0, "messages": 2}
    assert stats["rejections"]["bad_signature"]["count"] == 1
    assert stats["forms_sent"] == 1 and stats["failed"] == 0
    assert stats["last_delivery_at"]


def test_line_worker_once_runs_what_is_pending(app, runner, line):
    line.follow()
    result = runner.invoke(args=["line", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "Ran 1 event(s)." in result.output
    assert line.events()[0].status == "processed"


def test_workers_running_side_by_side_never_run_an_event_twice(app, line):
    """Four workers at once (as four gunicorn processes would): each event is claimed by exactly one."""
    users = ["U" + f"{n:032x}" for n in range(4)]
    line.post(*[text_event(users[n % 4], f"message {n}") for n in range(40)])
    counts, start = [], threading.Barrier(4)

    def run():
        start.wait()
        counts.append(worker.process_pending(app))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == 40
    assert {(e.status, e.attempts) for e in line.events()} == {("processed", 1)}
    assert sorted(m.text for m in line.messages("in")) == sorted(f"message {n}" for n in range(40))
    assert len({m.contact_id for m in line.messages("in")}) == 4


def test_events_after_a_reset_are_kept_but_not_acted_on(app, client, make_shop, sandbox, live_app):
    """After the owner resets the connection, LINE may still call the old URL: keep the events, send
    nothing."""
    from wizard.line.endpoint import set_endpoint
    from wizard.steps.connection import connect, disconnect
    from wizard.models import Shop
    slug, _ = make_shop()
    line = sandbox.control
    channel = line.create_channel()
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        saved = connect(shop, channel["channelId"], channel["channelSecret"])
        set_endpoint(saved)
        disconnect(shop)
        db.session.commit()
    line.follow(channel["channelId"], name="林小美")
    with app.app_context():
        worker.process_pending()
        event = db.session.scalar(db.select(WebhookEvent).filter_by(type="follow"))
        assert (event.status, event.error) == ("processed", "channel disconnected by the shop: stored only")
        assert db.session.scalar(db.select(db.func.count(Contact.id))) == 0
    assert line.sent_messages(channel["channelId"]) == []


CRASH_AFTER_LINE_TOOK_IT = """
import os
from wizard import create_app
from wizard.line import client, worker

app = create_app()
method = os.environ["DIE_AFTER"]
real = getattr(client.LineClient, method)


def dies_after_line_took_it(self, *args, **kwargs):
    real(self, *args, **kwargs)  # LINE has the message ...
    os._exit(17)  # ... and the process dies before the outbox row says so


setattr(client.LineClient, method, dies_after_line_took_it)
worker.process_pending(app)
"""


@pytest.mark.parametrize("method, expired, outcome", [("push", True, "sent"), ("reply", False, "unknown")])
def test_a_worker_killed_after_line_took_the_form_never_sends_it_twice(app, line, db_url, method, expired,
                                                                       outcome):
    """A push is sent again with its retry key (LINE answers 409: it is sent); a reply cannot be, so it is
    marked unknown for staff. Either way the customer got the form once."""
    user_id = line.follow()
    if expired:
        line.control.expire_reply_tokens(line.id)
    env = {**os.environ, "WIZARD_DATABASE_URL": db_url, "WIZARD_INSTANCE_PATH": app.instance_path,
           "WIZARD_SECRET_KEY": app.config["SECRET_KEY"],
           "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"],
           "WIZARD_PUBLIC_BASE_URL": app.config["PUBLIC_BASE_URL"], "WIZARD_WORKER_LEASE_SECONDS": "0.5",
           "DIE_AFTER": method}
    died = subprocess.run([sys.executable, "-c", CRASH_AFTER_LINE_TOOK_IT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert died.returncode == 17, died.stderr
    [received] = line.control.sent_messages(line.id)
    assert received["kind"] == method
    assert [r.status for r in line.outbox()] == ["sending"]  # in flight when the worker died

    line.expire_leases()  # time passes: the dead worker's claim runs out
    again = restarted(app)
    try:
        with again.app_context():
            jobs.sweep()
        worker.process_pending(again)
    finally:
        with again.app_context():
            db.engine.dispose()
    [row] = line.outbox()
    assert row.status == outcome
    assert len(line.control.sent_messages(line.id, user_id)) == 1  # the customer got the form once
    if outcome == "sent":
        assert row.line_message_ids == [received["id"]]  # LINE's 409 named the message it had taken
    else:
        assert "may or may not have arrived" in row.error


def test_a_worker_whose_lease_ran_out_does_not_overwrite_the_outcome_of_the_one_that_took_over(app, line):
    """Worker A is slow (LINE hangs, the process is paused); its lease runs out and worker B runs the event.
    When A finally finishes, B's outcome stands: A's is discarded, and the event is not run a third time."""
    line.follow(name="林小美")
    with app.app_context():
        event_id, slow_claim = worker.claim_next()  # worker A
        db.session.execute(update(WebhookEvent).where(WebhookEvent.id == event_id)
                           .values(claimed_until=utcnow() - timedelta(seconds=1)))  # A's lease runs out
        db.session.commit()
    with app.app_context():
        taken_over = worker.claim_next()  # worker B
        assert taken_over is not None and taken_over[0] == event_id and taken_over[1] != slow_claim
        assert worker.run_claimed(*taken_over) is True
    [event] = line.events()
    assert (event.status, event.attempts, event.error) == ("processed", 2, "form queued")

    with app.app_context():
        assert worker.run_claimed(event_id, slow_claim) is False  # A ends after all

    [event] = line.events()
    assert (event.status, event.attempts, event.error) == ("processed", 2, "form queued")
    assert len(line.outbox()) == 1  # one form for the one follow, whoever ran it
    worker.process_pending(app)
    assert (event.claimed_by, event.next_attempt_at) == (None, None)
    line.make_due()
    assert worker.process_pending(app) == 0
    assert len(line.control.sent_messages(line.id)) == 1  # the new friend got the form once


def test_the_lease_lasts_as_long_as_the_configuration_says(app, line):
    line.follow()
    app.config["WORKER_LEASE_SECONDS"] = 300
    with app.app_context():
        before = utcnow()
        event_id, _claim = worker.claim_next()
        claimed_until = db.session.get(WebhookEvent, event_id).claimed_until
    assert timedelta(seconds=300) <= claimed_until - before < timedelta(seconds=301)
    assert queue.consumer_options(app)["max_delay"] == app.config["WORKER_POLL_SECONDS"] == 1.0
