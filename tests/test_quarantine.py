"""No customer lost while the secret is wrong: refused bodies are kept (encrypted, bounded) and, once the new
Channel secret is entered, those LINE signed with it are stored and run; the rest are deleted.

The sandbox plays LINE over real HTTP: its secret is reissued, its users follow, and it signs each webhook
with the secret we do not have yet, which our receiver refuses. Nothing in the signature check is bypassed.
"""
import http.client
import json
import threading
import time
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken
import pytest
from sqlalchemy import text, update

from tests.webhooks import encode, follow_event, sign, signed_headers
from wizard import crypto, jobs
from wizard.extensions import db
from wizard.line import quarantine, receiver, store, worker
from wizard.models import (Channel, Contact, QuarantinedBody, Shop, WebhookDelivery, WebhookEvent,
                           WebhookRejection, utcnow)

OWNER = "owner-sunny-bakery@example.com"  # the ``line`` fixture's shop owner (make_shop)


def counts(app):
    with app.app_context():
        def number(model):
            return db.session.scalar(db.select(db.func.count()).select_from(model))
        return {"deliveries": number(WebhookDelivery), "events": number(WebhookEvent),
                "quarantined": number(QuarantinedBody)}


def rejections(app):
    with app.app_context():
        return {r.reason: r.count for r in db.session.scalars(db.select(WebhookRejection))}


def refused(result):
    """A sandbox user's action whose webhook our receiver refused (LINE signed it with the new secret)."""
    assert result["delivery"]["statusCode"] == 400, result
    assert "does not match the Channel secret" in result["delivery"]["responseBody"]
    return result["user"]["userId"]


def reissue(line):
    """The owner reissues the Channel secret in LINE's console and does not enter it here (yet)."""
    return line.control.update(line.id, reissue_secret=True)["channelSecret"]


def connect_cli(runner, line, secret):
    result = runner.invoke(args=["line", "connect", line.slug, "--channel-id", line.id,
                                 "--channel-secret", secret])
    assert result.exit_code == 0, result.output
    return result.output


def forge(client, line, body, secret="0" * 32):
    response = client.post(line.channel["path"], data=body, headers=signed_headers(secret, body))
    assert response.status_code == 400
    return response


def plausible(line, n, pad=0, **fields):
    """A body with the shape of a LINE delivery to this channel's bot (a follow), as a forger would make it."""
    return encode({"destination": line.channel["bot_user_id"], "events": [follow_event(f"U{n:032x}")],
                   **({"pad": "x" * pad} if pad else {}), **fields})


def kept_rows(app):
    with app.app_context():
        rows = db.session.scalars(db.select(QuarantinedBody).order_by(QuarantinedBody.id)).all()
        db.session.expunge_all()
        return rows


def opened(app, row):
    with app.app_context():
        return json.loads(crypto.decrypt(row.body_encrypted))


# ---- the test --------------------------------------------------------------------------------------

def test_three_friends_who_followed_while_the_secret_was_wrong_are_welcomed_once_it_is_entered(
        app, client, line, login):
    new_secret = reissue(line)
    users = [refused(line.control.follow(line.id)) for _ in range(3)]
    assert counts(app) == {"deliveries": 0, "events": 0, "quarantined": 3}
    assert rejections(app) == {receiver.BAD_SIGNATURE: 3}  # the refusals are counted as before
    line.control.expire_reply_tokens(line.id)  # the owner noticed later: the follows' reply tokens are gone

    login(OWNER)
    client.get("/?lang=en")
    page = client.post(f"/setup/{line.slug}/credentials", follow_redirects=True, data={
        "action": "save", "channel_id": line.id, "channel_secret": new_secret}).get_data(as_text=True)

    assert "3 friends who added you while it was broken have now been welcomed." in page
    assert counts(app) == {"deliveries": 3, "events": 3, "quarantined": 0}
    assert worker.process_pending(app) == 3
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Contact)) == 3
    keys = {row.contact.line_user_id: row.retry_key for row in _outbox_with_contacts(app)}
    for user in users:
        contact = line.contact(user)
        assert contact.form_sent_at is not None and not contact.blocked
        [received] = line.control.sent_messages(line.id, user)
        assert (received["kind"], received["delivered"]) == ("push", True)
        assert received["retryKey"] == keys[user]
        assert f"/form/{contact.form_token}" in received["message"]["text"]

    # Exactly once: LINE redelivering a follow (signed with the secret now saved) is stored once, and neither
    # the worker nor the sweep runs anything again.
    again = line.control.redeliver(line.id)["delivery"]
    assert again["statusCode"] == 200 and json.loads(again["responseBody"])["stored"] == 0
    with app.app_context():
        jobs.sweep()
    assert worker.process_pending(app) == 0
    assert sorted(m["to"] for m in line.control.sent_messages(line.id)) == sorted(users)


def _outbox_with_contacts(app):
    from wizard.models import Outbox
    with app.app_context():
        rows = db.session.scalars(db.select(Outbox).options(db.joinedload(Outbox.contact))).all()
        db.session.expunge_all()
        return rows


def test_line_connect_releases_them_too_and_prints_how_many(app, runner, line):
    new_secret = reissue(line)
    users = {refused(line.control.follow(line.id)) for _ in range(2)}

    output = connect_cli(runner, line, new_secret)

    assert "2 friends who added the account while it was broken have now been welcomed." in output
    assert output.strip().splitlines()[-1].endswith(line.channel["path"])  # the webhook URL stays last
    assert new_secret not in output
    assert worker.process_pending(app) == 2
    assert {m["to"] for m in line.control.sent_messages(line.id)} == users


def test_nothing_is_said_when_nobody_was_waiting(app, runner, line):
    output = connect_cli(runner, line, reissue(line))
    assert "welcomed" not in output


# ---- what is released, what is deleted ---------------------------------------------------------------------

def test_bodies_the_new_secret_does_not_prove_are_deleted_and_store_nothing(app, client, line):
    new_secret = reissue(line)
    user = refused(line.control.follow(line.id))
    forged = encode({"destination": line.channel["bot_user_id"], "events": [follow_event("U" + "f" * 32)]})
    forge(client, line, forged)  # signed with a secret nobody has
    forge(client, line, b'{"hello": "world"}', secret=new_secret)  # signed right, but no LINE payload: not kept
    assert counts(app)["quarantined"] == 2

    with app.app_context():
        channel = db.session.get(Channel, line.channel["id"])
        result = quarantine.release(channel, new_secret)
        db.session.commit()

    assert result == quarantine.ReleaseResult(welcomed=1, stored=1, deleted=1)
    assert counts(app) == {"deliveries": 1, "events": 1, "quarantined": 0}
    [event] = line.events()
    assert (event.type, event.source_user_id, event.status) == ("follow", user, "pending")


def test_kept_bodies_are_encrypted_and_count_as_neither_deliveries_nor_events(app, line):
    new_secret = reissue(line)
    user = refused(line.control.follow(line.id, name="林小美"))

    with app.app_context():
        stats = store.traffic_stats(db.session.scalar(db.select(Shop).filter_by(slug=line.slug)))
        assert (stats["deliveries"], stats["events"], stats["contacts"], stats["rejected"]) == (0, 0, 0, 1)
        # What a copy of the database shows: no user, no event, no bot; only ciphertext.
        [raw] = db.session.execute(text("SELECT * FROM quarantined_bodies")).all()
        dumped = repr(tuple(raw))
        for plain in (user, "follow", "webhookEventId", line.channel["bot_user_id"]):
            assert plain not in dumped
        [row] = db.session.scalars(db.select(QuarantinedBody)).all()
        body = crypto.decrypt(row.body_encrypted).encode()
        assert row.signature == sign(new_secret, body)  # kept as LINE sent it: the new secret will prove it
        assert row.size == len(body) and row.channel_id == line.channel["id"]
        assert json.loads(body)["events"][0]["source"]["userId"] == user
    assert worker.process_pending(app) == 0


def test_rotate_key_re_encrypts_kept_bodies_which_are_released_after(app, runner, line):
    new_secret = reissue(line)
    user = refused(line.control.follow(line.id))
    [before] = kept_rows(app)
    old, new = app.config["ENCRYPTION_KEY"], Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEY"] = f"{new},{old}"

    result = runner.invoke(args=["rotate-key"])

    assert result.exit_code == 0, result.output
    assert "quarantined_bodies.body_encrypted: 1 re-encrypted" in result.output
    assert ("Re-encrypted 1 secret(s) and 1 quarantined webhook body under the first of 2 key(s)"
            in result.output)
    app.config["ENCRYPTION_KEY"] = new  # the old key dropped
    [after] = kept_rows(app)
    assert after.body_encrypted != before.body_encrypted
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(after.body_encrypted.encode())
    assert "1 friend who added the account while it was broken has now been welcomed." in connect_cli(
        runner, line, new_secret)
    assert worker.process_pending(app) == 1
    assert line.contact(user).form_sent_at is not None


# ---- the bounds: only what could be LINE's, never evicting what came first -------------------------------

def test_a_flood_of_forged_bodies_cannot_evict_the_friends_who_followed_before_it(app, client, runner, line,
                                                                                   monkeypatch):
    """The red team's attack: 11 forged 1 MiB POSTs (and here a flood of bodies shaped like LINE's) after five
    real friends were refused. The friends' bodies stay, and all five are welcomed once the secret is entered."""
    monkeypatch.setattr(quarantine, "MAX_BODIES", 40)  # a smaller bound, so the flood is quick to exceed
    monkeypatch.setattr(quarantine, "MAX_PER_MINUTE", 1000)
    new_secret = reissue(line)
    users = {refused(line.control.follow(line.id)) for _ in range(5)}
    limit = app.config["WEBHOOK_MAX_BYTES"]
    for n in range(11):
        forge(client, line, plausible(line, n, pad=limit - 1000))  # 1 MiB: larger than any LINE delivery
    for n in range(60):
        forge(client, line, plausible(line, 100 + n))  # LINE's shape, signed with a secret nobody has
    assert counts(app)["quarantined"] == 40
    assert rejections(app) == {receiver.BAD_SIGNATURE: 5 + 11 + 60}  # every refusal still counted

    assert "5 friends who added the account while it was broken have now been welcomed." in connect_cli(
        runner, line, new_secret)
    assert counts(app)["quarantined"] == 0  # the forged ones did not prove and are gone
    assert worker.process_pending(app) == 5
    assert {m["to"] for m in line.control.sent_messages(line.id)} == users


def test_only_a_body_that_could_be_lines_delivery_to_our_bot_is_kept(app, client, line):
    bot = line.channel["bot_user_id"]
    now_ms = int(time.time() * 1000)
    never = [
        encode({"events": [follow_event("U" + "1" * 32)]}),  # no destination
        encode({"destination": "U" + "0" * 32, "events": [follow_event("U" + "1" * 32)]}),  # another bot
        encode({"destination": bot, "events": []}),  # nothing anyone could recover
        encode({"destination": bot, "events": [{"type": "follow"}]}),  # not LINE's event shape
        b"not json at all",
        encode({"destination": bot, "events": [follow_event("U" + "1" * 32, timestamp=now_ms - 8 * 86400_000)]}),
        encode({"destination": bot, "events": [follow_event("U" + "1" * 32, timestamp=now_ms + 3600_000)]}),
        plausible(line, 1, pad=quarantine.MAX_BODY_BYTES),  # larger than a LINE delivery
    ]
    for body in never:
        forge(client, line, body)
    assert kept_rows(app) == []
    forge(client, line, plausible(line, 2, pad=quarantine.MAX_BODY_BYTES - 1000))
    assert len(kept_rows(app)) == 1
    assert rejections(app) == {receiver.BAD_SIGNATURE: len(never) + 1}


def test_a_channel_keeps_its_first_1000_bodies_and_refuses_more(app, client, line, monkeypatch):
    monkeypatch.setattr(quarantine, "MAX_PER_MINUTE", 10_000)
    for n in range(1005):
        forge(client, line, plausible(line, n))
    rows = kept_rows(app)
    assert len(rows) == quarantine.MAX_BODIES == 1000
    users = [opened(app, row)["events"][0]["source"]["userId"] for row in (rows[0], rows[-1])]
    assert users == [f"U{0:032x}", f"U{999:032x}"]  # the first ones stay: newer never evict older
    assert rejections(app) == {receiver.BAD_SIGNATURE: 1005}


def test_a_channel_keeps_at_most_4_mib_of_bodies_and_120_a_minute(app, client, line, monkeypatch):
    pad = quarantine.MAX_BODY_BYTES - 1000
    for n in range(quarantine.MAX_PER_MINUTE + 10):
        forge(client, line, plausible(line, n, pad=min(pad, 4000)))
    assert len(kept_rows(app)) == quarantine.MAX_PER_MINUTE == 120  # the rest of the minute's flood is not kept

    with app.app_context():  # a minute later
        db.session.execute(update(QuarantinedBody).values(received_at=utcnow() - timedelta(seconds=61)))
        db.session.commit()
    for n in range(100):
        forge(client, line, plausible(line, 1000 + n, pad=pad))
    rows = kept_rows(app)
    assert sum(row.size for row in rows) <= quarantine.MAX_BYTES == 4 * 1024 * 1024
    assert sum(row.size for row in rows) + len(plausible(line, 1, pad=pad)) > quarantine.MAX_BYTES
    assert 120 < len(rows) < 220


def test_bodies_older_than_7_days_make_room_and_the_sweep_deletes_them(app, client, line, monkeypatch):
    monkeypatch.setattr(quarantine, "MAX_BODIES", 2)

    def age_all(days):
        with app.app_context():
            db.session.execute(update(QuarantinedBody).values(received_at=utcnow() - timedelta(days=days)))
            db.session.commit()

    forge(client, line, plausible(line, 1))
    age_all(6)
    forge(client, line, plausible(line, 2))
    forge(client, line, plausible(line, 3))
    assert len(kept_rows(app)) == 2  # six days old is still kept, and counts
    age_all(8)
    forge(client, line, plausible(line, 4))
    assert len(kept_rows(app)) == 3  # past seven days they no longer count ...

    with app.app_context():
        jobs.sweep()
    assert [opened(app, row)["events"][0]["source"]["userId"] for row in kept_rows(app)] == [f"U{4:032x}"]


def table_bytes(app):
    """What the quarantine takes in the database: PostgreSQL's size of the table with its TOAST and indexes;
    SQLite's pages in use (the file may keep free pages, never fewer in use than this)."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            return db.session.scalar(text("SELECT pg_total_relation_size('quarantined_bodies')"))
        pages = db.session.scalar(text("PRAGMA page_count")) - db.session.scalar(text("PRAGMA freelist_count"))
        return pages * db.session.scalar(text("PRAGMA page_size"))


def test_a_flood_grows_the_database_by_the_bounds_and_not_a_byte_more(app, line, live_app, monkeypatch):
    """Measured: 8 clients flood the receiver with bodies shaped like LINE's, 16 KiB each; the table grows by
    about the channel's byte bound (encrypted) and a second flood, as large, grows it by nothing."""
    monkeypatch.setattr(quarantine, "MAX_BYTES", 512 * 1024)
    monkeypatch.setattr(quarantine, "MAX_PER_MINUTE", 10_000)
    threads_count, each = 8, 10
    statuses, valid = [], []

    def post(body, secret):
        connection = http.client.HTTPConnection("127.0.0.1", live_app.port, timeout=10)
        connection.request("POST", line.channel["path"], body=body, headers=signed_headers(secret, body))
        status = connection.getresponse().status
        connection.close()
        return status

    def flood(t):
        start.wait()
        for n in range(each):
            statuses.append(post(plausible(line, t * 1000 + n, pad=16 * 1024), "0" * 32))

    def deliver():
        start.wait()
        for n in range(3):
            event = follow_event(f"U{n:032x}", mode="standby")
            valid.append(post(encode({"destination": line.channel["bot_user_id"], "events": [event]}),
                              line.channel["secret"]))

    def run_flood():
        threads = [threading.Thread(target=flood, args=(t,)) for t in range(threads_count)]
        threads.append(threading.Thread(target=deliver))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    before = table_bytes(app)
    start = threading.Barrier(threads_count + 1)
    run_flood()
    after_one = table_bytes(app)
    start = threading.Barrier(threads_count + 1)
    run_flood()
    after_two = table_bytes(app)

    assert statuses == [400] * threads_count * each * 2 and valid == [200] * 6  # the valid ones still go in
    rows = kept_rows(app)
    assert sum(row.size for row in rows) <= 512 * 1024 + threads_count * 17 * 1024  # refusals may overlap
    assert after_one - before <= 2 * (512 * 1024 + threads_count * 17 * 1024), (before, after_one)
    assert after_two == after_one, f"a flood beyond the bounds grew the table by {after_two - after_one} bytes"


def test_bodies_that_can_never_verify_are_not_kept(app, client, line):
    body = encode({"events": []})
    for headers in ({"x-line-signature": "x" * 300}, {"x-line-signature": sign("0" * 32, body) + "="}):
        assert client.post(line.channel["path"], data=body, headers=headers).status_code == 400
    not_utf8 = b'{"events": [], "x": "\xff"}'
    forge(client, line, not_utf8)
    assert kept_rows(app) == []
    assert rejections(app) == {receiver.BAD_SIGNATURE: 3}


# ---- the form, exactly once --------------------------------------------------------------------------------

def test_a_released_follow_older_than_its_reply_token_is_pushed_never_replied(app, client, runner, line):
    new_secret = reissue(line)
    line.control.update(line.id, webhook_active=False)
    follow = line.control.follow(line.id)  # LINE has the user, and a reply token still good for a minute
    event = dict(follow["event"], timestamp=int(time.time() * 1000) - 5 * 60 * 1000)  # five minutes ago
    body = encode({"destination": line.channel["bot_user_id"], "events": [event]})
    forge(client, line, body, secret=new_secret)

    connect_cli(runner, line, new_secret)
    worker.process_pending(app)

    [row] = line.outbox()
    assert (row.method, row.status, row.attempts, row.reply_token) == ("push", "sent", 1, None)
    [received] = line.control.sent_messages(line.id)
    assert (received["kind"], received["retryKey"]) == ("push", row.retry_key)


def test_a_friend_who_blocked_and_unblocked_while_it_was_broken_gets_no_second_form(app, runner, line):
    user = line.follow()
    worker.process_pending(app)
    new_secret = reissue(line)
    refused(line.control.unfollow(line.id, user))
    refused(line.control.follow(line.id, user))

    output = connect_cli(runner, line, new_secret)
    worker.process_pending(app)

    assert "welcomed" not in output  # FORM_RESEND_HOURS: nobody is sent the form again, so nobody is told
    contact = line.contact(user)
    assert not contact.blocked
    assert len(line.control.sent_messages(line.id, user)) == 1
    assert line.events()[-1].error == "form sent recently: not sent again"


def test_a_body_refused_while_the_new_secret_was_being_saved_is_released_by_the_sweep(app, runner, line):
    """The receiver read the old secret a moment before the new one was committed, and kept the body after
    the save had looked: the next sweep proves it with the saved secret (and leaves forged ones alone)."""
    new_secret = reissue(line)
    connect_cli(runner, line, new_secret)
    line.control.update(line.id, webhook_active=False)
    follow = line.control.follow(line.id)
    late = encode({"destination": line.channel["bot_user_id"], "events": [follow["event"]]})
    forged = plausible(line, 7)
    with app.app_context():
        assert quarantine.keep(line.channel["id"], late, sign(new_secret, late))
        assert quarantine.keep(line.channel["id"], forged, sign("0" * 32, forged))
        db.session.commit()

        jobs.sweep()
        jobs.sweep()

    assert counts(app) == {"deliveries": 1, "events": 1, "quarantined": 1}
    assert worker.process_pending(app) == 1
    assert len(line.control.sent_messages(line.id, follow["user"]["userId"])) == 1
