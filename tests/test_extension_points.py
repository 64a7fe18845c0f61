"""Adding a kind of outgoing message and a new event rule is one registration each, and both work end to end:
a signed webhook reaches the receiver, the new rule runs in the worker, and the new purpose's message reaches
the customer through the LINE sandbox, with its outbox row, retry key and conversation entry like any other."""
import secrets
import time

import pytest

from tests.webhooks import encode, signed_headers, ulid
from wizard import queue
from wizard.customers.rules import contact_for
from wizard.line import events, worker
from wizard.outgoing import outbox, purposes

THANKS = "謝謝您選了「{choice}」！我們會盡快為您準備。"


def postback_event(user_id, data, reply_token=None):
    """A postback (a customer tapped a button of a rich menu or a template) as LINE sends it."""
    at = int(time.time() * 1000)
    event = {"type": "postback", "mode": "active", "timestamp": at, "source": {"type": "user", "userId": user_id},
             "webhookEventId": ulid(at), "deliveryContext": {"isRedelivery": False},
             "postback": {"data": data}}
    if reply_token:
        event["replyToken"] = reply_token
    return event


@pytest.fixture
def thanks_for_postbacks():
    """The two registrations a developer writes: a purpose (what the message says) and an event rule (when
    it goes). Undone after the test: the registries are per process."""
    purpose = purposes.register(purposes.Purpose(
        "thanks", render=lambda row, channel, contact: [{"type": "text", "text": THANKS.format(
            choice=contact.customer_name or "這個選項")}]))

    @events.handles("postback")
    def on_postback(event, effects):
        choice = (event.payload.get("postback") or {}).get("data")
        if not isinstance(choice, str):
            raise events.Unprocessable("'postback.data' is not text")
        contact = contact_for(event.channel_id, event.source_user_id)
        contact.customer_name = choice[:100]  # stands in for whatever the rule would record
        row = outbox.add(event.channel_id, contact.id, "thanks", event=event,
                         reply_token=event.payload.get("replyToken"))
        effects.later(queue.send_message, row.id)
        return "thanked"

    yield purpose, on_postback
    events.unregister("postback", on_postback)
    purposes.unregister("thanks")


def deliver(line, *events_):
    """A delivery as LINE makes it: signed with the channel's secret, POSTed to the receiver's URL."""
    body = encode({"destination": line.channel["bot_user_id"], "events": list(events_)})
    response = line.app.test_client().post(line.channel["path"], data=body,
                                           headers=signed_headers(line.channel["secret"], body))
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_new_purpose_and_a_new_event_rule_work_end_to_end(app, line, thanks_for_postbacks):
    user_id = line.follow(name="王小明")
    worker.process_pending(app)  # the follow: the form goes out as before
    assert [r.purpose for r in line.outbox()] == ["form"]

    # A reply token LINE never issued: LINE refuses it, nothing went out, so the message is pushed instead.
    deliver(line, postback_event(user_id, "珍珠奶茶", reply_token=secrets.token_hex(16)))
    worker.process_pending(app)

    [event] = [e for e in line.events() if e.type == "postback"]
    assert (event.status, event.error) == ("processed", "thanked")
    [row] = [r for r in line.outbox() if r.purpose == "thanks"]
    assert (row.status, row.method, row.messages) == ("sent", "push", [
        {"type": "text", "text": THANKS.format(choice="珍珠奶茶")}])
    received = [m for m in line.control.sent_messages(line.id, user_id) if m["retryKey"] == row.retry_key]
    assert [m["message"]["text"] for m in received] == [THANKS.format(choice="珍珠奶茶")]
    assert row.line_message_ids == [received[0]["id"]]
    assert [m.text for m in line.messages("out") if m.event_id == event.id] == [THANKS.format(choice="珍珠奶茶")]

    # The same delivery again (LINE's redelivery) runs nothing twice: one event, one row, one message.
    deliver(line, dict(event.payload, deliveryContext={"isRedelivery": True}))
    worker.process_pending(app)
    assert len([r for r in line.outbox() if r.purpose == "thanks"]) == 1
    assert len([m for m in line.control.sent_messages(line.id, user_id)
                if m["message"]["text"].startswith("謝謝您選了")]) == 1


def test_without_the_registrations_the_event_is_kept_and_nothing_is_sent(app, line):
    user_id = line.follow()
    worker.process_pending(app)
    deliver(line, postback_event(user_id, "珍珠奶茶"))
    worker.process_pending(app)
    [event] = [e for e in line.events() if e.type == "postback"]
    assert (event.status, event.error) == ("processed", None)  # stored, left alone
    assert [r.purpose for r in line.outbox()] == ["form"]
    with app.app_context(), pytest.raises(ValueError, match="unknown outbox purpose 'thanks'"):
        outbox.add(line.outbox()[0].channel_id, line.outbox()[0].contact_id, "thanks", retry_key="x")
