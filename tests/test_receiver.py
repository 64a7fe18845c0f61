"""The webhook receiver: what LINE's deliveries (and everyone else's requests) get back, and what is kept."""
import http.client
import threading
import time

import pytest

from tests.webhooks import encode, make_channel, sdk_sample, signed_headers, text_event, with_unique_ids
from wizard.extensions import db
from wizard.line import receiver, worker
from wizard.models import Channel, Message, WebhookDelivery, WebhookEvent, WebhookRejection


@pytest.fixture
def channel(app, make_shop):
    slug, _ = make_shop()
    return make_channel(app, slug)


def post(client, channel, payload=None, *, body=None, secret=None, headers=None):
    body = encode(payload) if body is None else body
    sent = signed_headers(secret or channel["secret"], body) if headers is None else headers
    return client.post(channel["path"], data=body, headers=sent)


def counts(app):
    with app.app_context():
        return {
            "deliveries": db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery)),
            "events": db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)),
        }


def rejections(app):
    with app.app_context():
        return {r.reason: r.count for r in db.session.scalars(db.select(WebhookRejection))}


def test_signature_matches_lines_published_test_vector():
    signature = "/gg9a+LvFevTH1sd7XCQycD7tsWclCsInj7MhBHxN7k="
    assert receiver.signature_matches("channel_secret", b"bodybodybodybody", signature)
    assert not receiver.signature_matches("channel_secret", b"bodybodybodybodx", signature)
    assert not receiver.signature_matches("other_secret", b"bodybodybodybody", signature)


def test_all_28_sdk_events_are_accepted_and_stored(app, client, channel):
    sample = sdk_sample()
    assert len(sample["events"]) == 28
    payload = with_unique_ids(sample, destination=channel["bot_user_id"])
    body = encode(payload)

    response = post(client, channel, body=body)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["stored"] == 28
    with app.app_context():
        delivery = db.session.scalar(db.select(WebhookDelivery))
        assert delivery.body == body.decode()  # the raw delivery is kept byte for byte
        assert (delivery.destination, delivery.event_count, delivery.new_event_count) == (
            channel["bot_user_id"], 28, 28)
        stored = db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()
        assert [e.type for e in stored] == [e["type"] for e in payload["events"]]
        assert [e.webhook_event_id for e in stored] == [e["webhookEventId"] for e in payload["events"]]
        assert [e.payload for e in stored] == payload["events"]
        assert {e.status for e in stored} == {"pending"}
        # The unknown type "undefined" and types we do nothing with are stored, not dropped.
        kept = {"undefined", "join", "postback", "beacon", "unsend", "memberJoined"}
        assert kept <= {e.type for e in stored}
        assert sum(e.is_redelivery for e in stored) == 2
        assert db.session.get(Channel, channel["id"]).last_delivery_at is not None


def test_the_file_as_is_is_one_event_stored_once_and_processed_once(app, client, channel):
    """All 28 events of the SDK file share webhookEventId 'testwebhookeventid': to us that is one event."""
    body = encode(sdk_sample())

    first = post(client, channel, body=body)
    again = post(client, channel, body=body)

    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.get_json()["stored"], again.get_json()["stored"]) == (1, 0)
    assert counts(app) == {"deliveries": 2, "events": 1}
    assert worker.process_pending(app) == 1
    assert worker.process_pending(app) == 0
    with app.app_context():
        event = db.session.scalar(db.select(WebhookEvent))
        assert (event.type, event.status, event.attempts) == ("message", "processed", 1)
        assert [m.text for m in db.session.scalars(db.select(Message))] == ["Hello, world"]


def test_a_redelivered_event_is_acknowledged_and_not_processed_again(app, client, channel):
    event = text_event("U" + "a" * 32, "我想訂一個蛋糕")
    first = post(client, channel, {"destination": channel["bot_user_id"], "events": [event]})
    assert first.status_code == 200
    assert worker.process_pending(app) == 1

    redelivered = dict(event, deliveryContext={"isRedelivery": True})
    response = post(client, channel, {"destination": channel["bot_user_id"], "events": [redelivered]})

    assert response.status_code == 200
    assert response.get_json()["stored"] == 0
    assert worker.process_pending(app) == 0
    with app.app_context():
        assert [m.text for m in db.session.scalars(db.select(Message))] == ["我想訂一個蛋糕"]
        assert db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)) == 1


def test_lines_verification_records_when_the_webhook_was_verified(app, client, channel):
    response = post(client, channel, {"destination": channel["bot_user_id"], "events": []})

    assert response.status_code == 200
    with app.app_context():
        stored = db.session.get(Channel, channel["id"])
        assert stored.last_verified_at is not None
        assert stored.last_delivery_at == stored.last_verified_at
    assert counts(app) == {"deliveries": 1, "events": 0}


GOOD = encode({"destination": "U" + "0" * 32, "events": []})
EVENT = text_event("U" + "b" * 32, "hi")


@pytest.mark.parametrize("case, status, reason", [
    ("missing signature", 400, receiver.MISSING_SIGNATURE),
    ("wrong secret", 400, receiver.BAD_SIGNATURE),
    ("signature of another body", 400, receiver.BAD_SIGNATURE),
    ("too large", 413, receiver.TOO_LARGE),
    ("signed, not JSON", 400, receiver.INVALID_JSON),
    ("signed, not UTF-8", 400, receiver.INVALID_JSON),
    ("signed, deeply nested JSON", 400, receiver.INVALID_JSON),
    ("signed, JSON list", 400, receiver.INVALID_PAYLOAD),
    ("signed, no events", 400, receiver.INVALID_PAYLOAD),
    ("signed, event without webhookEventId", 400, receiver.INVALID_PAYLOAD),
    ("signed, event without type", 400, receiver.INVALID_PAYLOAD),
    ("signed, timestamp is text", 400, receiver.INVALID_PAYLOAD),
    ("signed, timestamp beyond 64 bits", 400, receiver.INVALID_PAYLOAD),
    ("signed, user id with NUL", 400, receiver.INVALID_PAYLOAD),
])
def test_bad_input_is_refused_stores_nothing_and_is_counted(app, client, channel, case, status, reason):
    app.config["WEBHOOK_MAX_BYTES"] = 4096
    secret = channel["secret"]

    def signed(body):
        return body, signed_headers(secret, body)

    def event_payload(**changes):
        event = {k: v for k, v in EVENT.items() if changes.get(k, 0) is not None}
        event.update({k: v for k, v in changes.items() if v is not None})
        return encode({"destination": "U" + "0" * 32, "events": [event]})

    body, headers = {
        "missing signature": (GOOD, {"Content-Type": "application/json"}),
        "wrong secret": (GOOD, signed_headers("0" * 32, GOOD)),
        "signature of another body": (GOOD, signed_headers(secret, GOOD + b" ")),
        "too large": signed(encode({"events": [], "pad": "x" * 5000})),
        "signed, not JSON": signed(b"<xml>hello</xml>"),
        "signed, not UTF-8": signed(b'{"events": [], "x": "\xff\xfe"}'),
        "signed, deeply nested JSON": signed(b"[" * 1500 + b"]" * 1500),
        "signed, JSON list": signed(b"[]"),
        "signed, no events": signed(b'{"destination": "U0"}'),
        "signed, event without webhookEventId": signed(event_payload(webhookEventId=None)),
        "signed, event without type": signed(event_payload(type=None)),
        "signed, timestamp is text": signed(event_payload(timestamp="1462629479859")),
        "signed, timestamp beyond 64 bits": signed(event_payload(timestamp=2 ** 64)),
        "signed, user id with NUL": signed(event_payload(source={"type": "user", "userId": "U\u0000x"})),
    }[case]

    first = client.post(channel["path"], data=body, headers=headers)
    second = client.post(channel["path"], data=body, headers=headers)

    assert (first.status_code, second.status_code) == (status, status)
    assert counts(app) == {"deliveries": 0, "events": 0}
    assert rejections(app) == {reason: 2}
    with app.app_context():
        row = db.session.scalar(db.select(WebhookRejection))
        assert row.first_at <= row.last_at
        assert db.session.get(Channel, channel["id"]).last_delivery_at is None


def test_an_unknown_token_is_404_and_nothing_is_kept(app, client, channel):
    for token in ("no-such-token", "x" * 300):
        response = client.post(f"/line/webhook/{token}", data=GOOD,
                               headers=signed_headers(channel["secret"], GOOD))
        assert response.status_code == 404
    assert counts(app) == {"deliveries": 0, "events": 0}
    assert rejections(app) == {}


def test_a_body_larger_than_declared_is_cut_off_at_the_limit(app, channel, live_app):
    """Without Content-Length (chunked), the limit is enforced on the bytes actually read."""
    app.config["WEBHOOK_MAX_BYTES"] = 4096
    body = encode({"events": [], "pad": "x" * 10_000})
    connection = http.client.HTTPConnection("127.0.0.1", live_app.port, timeout=5)
    connection.putrequest("POST", channel["path"])
    for name, value in signed_headers(channel["secret"], body).items():
        connection.putheader(name, value)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(body), 1000):
        chunk = body[start:start + 1000]
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    connection.close()

    assert response.status == 413
    assert rejections(app) == {receiver.TOO_LARGE: 1}
    assert counts(app) == {"deliveries": 0, "events": 0}


def test_concurrent_duplicates_are_all_acknowledged_and_stored_once(app, channel, live_app):
    body = encode({"destination": channel["bot_user_id"], "events": [text_event("U" + "c" * 32, "hello")]})
    headers = signed_headers(channel["secret"], body)
    statuses, start = [], threading.Barrier(8)

    def deliver():
        connection = http.client.HTTPConnection("127.0.0.1", live_app.port, timeout=10)
        start.wait()
        connection.request("POST", channel["path"], body=body, headers=headers)
        statuses.append(connection.getresponse().status)
        connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 8
    assert counts(app) == {"deliveries": 8, "events": 1}


def test_the_receiver_answers_while_line_is_down(app, client, channel):
    """Nothing in the request calls LINE: with LINE unreachable, a follow is still stored and acknowledged."""
    from tests.servers import free_port
    from tests.webhooks import follow_event
    app.config["LINE_API_HOST"] = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    response = post(client, channel, {"destination": channel["bot_user_id"],
                                      "events": [follow_event("U" + "d" * 32)]})

    assert response.status_code == 200
    assert time.monotonic() - started < 1.0
    with app.app_context():
        assert db.session.scalar(db.select(WebhookEvent)).status == "pending"


def test_an_event_received_by_one_channel_is_not_a_duplicate_for_another(app, client, make_shop, channel):
    other_slug, _ = make_shop("rainy-cafe", "雨天咖啡")
    other = make_channel(app, other_slug)
    event = text_event("U" + "e" * 32, "same id, two shops")
    for target in (channel, other):
        response = post(client, target, {"destination": target["bot_user_id"], "events": [event]})
        assert response.get_json()["stored"] == 1
    assert counts(app) == {"deliveries": 2, "events": 2}


def test_a_body_signed_with_the_old_secret_after_a_reissue_counts_as_bad_signature(app, client, channel):
    """The wizard tells "secret reissued" from the bad_signature count: the count and its time are kept."""
    old_secret = channel["secret"]
    with app.app_context():
        stored = db.session.get(Channel, channel["id"])
        stored.secret = "f" * 32
        db.session.commit()
    for _ in range(3):
        assert post(client, channel, body=GOOD, secret=old_secret).status_code == 400
    assert rejections(app) == {receiver.BAD_SIGNATURE: 3}
    assert counts(app) == {"deliveries": 0, "events": 0}


def test_a_secret_entered_again_applies_to_the_very_next_delivery(app, client, channel):
    """The receiver keeps a channel's secret for a while; a new secret must not cost a delivery meanwhile."""
    verification = {"destination": channel["bot_user_id"], "events": []}
    assert post(client, channel, verification).status_code == 200  # the old secret is now kept in memory
    with app.app_context():
        stored = db.session.get(Channel, channel["id"])
        stored.secret = "e" * 32
        db.session.commit()

    assert post(client, channel, verification, secret="e" * 32).status_code == 200
    assert post(client, channel, verification, secret="0" * 32).status_code == 400
    assert rejections(app) == {receiver.BAD_SIGNATURE: 1}


def test_deliveries_committed_together_still_store_a_shared_event_once(app, channel):
    """Under load deliveries share one transaction (group commit); duplicates inside it are skipped too."""
    from wizard.line.group_commit import GroupCommit
    event = text_event("U" + "f" * 32, "sent three times at once")
    with app.app_context():
        known = receiver._known_channel(channel["token"])
        batch = [receiver.Delivery(known, channel["bot_user_id"], encode({"events": [event]}), [event])
                 for _ in range(3)]
        for delivery in batch:
            delivery.woken = threading.Event()
        GroupCommit(receiver._write, db.engine.url)._commit(batch)
        db.session.commit()

    assert [(d.done, d.error, d.new) for d in batch] == [(True, None, 1), (True, None, 0), (True, None, 0)]
    assert counts(app) == {"deliveries": 3, "events": 1}


def test_many_deliveries_at_once_are_all_stored(app, channel, live_app):
    """Sixteen deliveries racing through the shared commits: every one answered 200 and stored once."""
    bodies = [encode({"destination": channel["bot_user_id"], "events": [text_event("U" + "a" * 32, f"#{n}")]})
              for n in range(16)]
    statuses, start = [], threading.Barrier(16)

    def deliver(body):
        connection = http.client.HTTPConnection("127.0.0.1", live_app.port, timeout=10)
        start.wait()
        connection.request("POST", channel["path"], body=body,
                           headers=signed_headers(channel["secret"], body))
        statuses.append(connection.getresponse().status)
        connection.close()

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 16
    assert counts(app) == {"deliveries": 16, "events": 16}


@pytest.mark.parametrize("raw", [
    b'{"destination": "U0", "events": [{"type": "message", "n": NaN}]}',
    b'{"destination": "U0", "events": [], "x": Infinity}',
    b'{"destination": "U0", "events": [{"type": "message", "text": "\\ud800"}]}',
    b'{"destination": "U0", "events": [], "n": -1e400}',
    # An event fit to store but for a number beyond a float's range, with \u0000 (read by Python on PostgreSQL)
    b'{"events": [{"type": "a", "timestamp": 1, "webhookEventId": "x", "n": 1e400, "t": "\\u0000"}]}',
])
def test_signed_bodies_no_database_can_store_are_refused_not_500(client, app, channel, raw):
    """NaN, Infinity, numbers beyond a float's range and lone surrogates parse in Python but cannot be stored
    as JSON: 400, nothing stored."""
    response = client.post(channel["path"], data=raw, headers=signed_headers(channel["secret"], raw))
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(WebhookDelivery.id))) == 0


def test_concurrent_refusals_are_each_counted_in_one_run(app, channel, live_app):
    """The wizard says how many deliveries were refused in a row ("3 in all"): refusals racing each other
    must neither lose a count nor start two runs."""
    body = encode({"destination": channel["bot_user_id"], "events": [text_event("U" + "c" * 32, "forged")]})
    headers = signed_headers("f" * 32, body)
    statuses, start = [], threading.Barrier(8)

    def forge():
        connection = http.client.HTTPConnection("127.0.0.1", live_app.port, timeout=10)
        start.wait()
        connection.request("POST", channel["path"], body=body, headers=headers)
        statuses.append(connection.getresponse().status)
        connection.close()

    threads = [threading.Thread(target=forge) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [400] * 8
    with app.app_context():
        row = db.session.scalar(db.select(WebhookRejection))
        assert (row.reason, row.count, row.streak) == (receiver.BAD_SIGNATURE, 8, 8)
        assert row.streak_since == row.first_at


def test_a_valid_delivery_ends_the_run_of_refusals(app, client, channel):
    verification = {"destination": channel["bot_user_id"], "events": []}
    for _ in range(3):
        assert post(client, channel, verification, secret="0" * 32).status_code == 400
    assert post(client, channel, verification).status_code == 200  # LINE's own, signed with the secret
    with app.app_context():
        delivered = db.session.get(Channel, channel["id"]).last_delivery_at
        # The next refusal starts a new run, from a moment after the delivery.
        assert post(client, channel, verification, secret="0" * 32).status_code == 400
        row = db.session.scalar(db.select(WebhookRejection))
        assert (row.count, row.streak) == (4, 1) and row.streak_since > delivered


def test_a_message_with_a_nul_escape_and_escaped_emoji_is_stored_as_sent(app, client, channel):
    """JSON may escape anything: \\u0000 inside a message's text (valid JSON, which no text column takes) and an
    emoji as an escaped surrogate pair. Both databases keep the body byte for byte and the event as it means."""
    event = text_event("U" + "e" * 32, "placeholder")
    body = encode({"destination": channel["bot_user_id"], "events": [event]}).replace(
        b'"placeholder"', b'"a\\u0000b \\ud83d\\ude00 \xe6\x99\xb4"')
    response = post(client, channel, body=body)
    assert response.status_code == 200 and response.get_json()["stored"] == 1
    with app.app_context():
        stored = db.session.scalar(db.select(WebhookEvent))
        delivery = db.session.scalar(db.select(WebhookDelivery))
        assert stored.payload["message"]["text"] == "a\x00b \U0001F600 晴"
        assert delivery.body == body.decode()


def test_a_known_channels_deliveries_get_the_same_answer_as_its_first(app, client, channel):
    """The first delivery reads the channel (Flask's route); the next ones take the fast path (fast_path.py).
    LINE, the access log and Prometheus cannot tell them apart: same body, headers, request id, counts."""
    from wizard import observability

    def answer(text, request_id):
        body = encode({"destination": channel["bot_user_id"], "events": [text_event("U" + "b" * 32, text)]})
        return client.post(channel["path"], data=body,
                           headers={**signed_headers(channel["secret"], body), "X-Request-Id": request_id})

    first = answer("first", "req-first")
    fast = []
    real_counter = observability.counter
    observability.counter = lambda *key: fast.append(key) or real_counter(*key)
    try:
        second = answer("second", "req-second")
    finally:
        observability.counter = real_counter
    assert fast == [(receiver.RULE, "POST", 200)]  # the second one was counted under the route's pattern
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.get_json() == second.get_json() == {"message": "ok", "stored": 1}
    assert (first.headers["X-Request-Id"], second.headers["X-Request-Id"]) == ("req-first", "req-second")
    same = {name: value for name, value in first.headers.items() if name != "X-Request-Id"}
    assert {name: value for name, value in second.headers.items() if name != "X-Request-Id"} == same
    with app.app_context():
        stored = db.session.scalars(db.select(WebhookDelivery.request_id).order_by(WebhookDelivery.id)).all()
        assert stored == ["req-first", "req-second"]
    assert counts(app) == {"deliveries": 2, "events": 2}
