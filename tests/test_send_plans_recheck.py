"""Who gets a multicast chunk is checked again right before LINE is asked for it, not only when the run
started: a plan can be paused for days, and a customer who withdrew consent (through the form link) or blocked
the account meanwhile gets nothing and is counted so on the plan's page (PDPA: "left out of every later
send"). Once LINE has been asked for a chunk its recipients never change: a chunk whose worker died after the
call is sent again with the same key and the same people, and LINE's 409 proves it went, once."""
from datetime import timedelta

from sqlalchemy import select, update

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from wizard import jobs
from wizard.extensions import db
from wizard.models import Channel, OutgoingBatch, SendPlanRecipient, utcnow
from wizard.outgoing import sender as senders
from wizard.statuses import RecipientOutcome

OFFER = "週年慶全品項 8 折，只到週日！"
NOTICE = "12/25 公休一天"


def _start(shop, purpose="marketing", text=OFFER):
    """A plan to the customers in 臺北市 (a segment: multicast whatever the purpose), started now."""
    plan = shop.post(name="週年慶", template_id=shop.template(text), purpose=purpose,
                     audience={"all": False, "filters": {"city": ["TPE"]}}).get_json()
    assert plan["state"] == "scheduled", plan
    shop.tick()
    assert shop.plan(plan["id"])["state"] == "sending"
    return plan["id"]


def _api(shop, plan_id, action):
    response = shop.client.post(f"/api/v1/shops/{shop.slug}/send-plans/{plan_id}/{action}", json={})
    assert response.status_code == 200, response.get_data(as_text=True)


def _chunks(app):
    with app.app_context():
        rows = db.session.scalars(select(OutgoingBatch).order_by(OutgoingBatch.seq)).all()
        db.session.expunge_all()
        return rows


def _outcome(app, user_id):
    with app.app_context():
        from wizard.models import Contact
        return db.session.scalar(select(SendPlanRecipient.outcome).join(
            Contact, Contact.id == SendPlanRecipient.contact_id).where(Contact.line_user_id == user_id))


def test_consent_withdrawn_while_the_plan_is_paused_leaves_the_customer_out(app, plan_shop):
    mei, wen, hua = (plan_shop.friend(name) for name in ("林小美", "陳大文", "張小華"))
    plan_id = _start(plan_shop)
    _api(plan_shop, plan_id, "pause")
    plan_shop.change(wen, marketing_consent=False, marketing_consent_at=utcnow())  # through the form link
    _api(plan_shop, plan_id, "resume")
    plan_shop.deliver()
    assert plan_shop.received(mei) == [OFFER] and plan_shop.received(hua) == [OFFER]
    assert plan_shop.control.sent_messages(plan_shop.id, wen) == []  # not even asked of LINE
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and (plan["recipients"], plan["sent"]) == (3, 2)
    assert plan["left_out"] == {"no_consent": 1, "blocked": 0, "over_quota": 0}
    assert _outcome(app, wen) == RecipientOutcome.NO_CONSENT
    [chunk] = _chunks(app)
    assert chunk.recipient_count == 2 and wen not in [user for _id, user in chunk.recipients]
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan_id}").get_data(as_text=True)
    assert '<dd data-count="sent">2</dd>' in html


def test_a_customer_who_blocked_after_the_start_gets_nothing_and_is_counted_blocked(app, plan_shop):
    mei, wen = plan_shop.friend("林小美"), plan_shop.friend("陳大文")
    plan_id = _start(plan_shop, purpose="service", text=NOTICE)
    plan_shop.control.unfollow(plan_shop.id, wen)
    plan_shop.change(wen, blocked_at=utcnow())  # the unfollow event as the worker records it
    plan_shop.deliver()
    assert plan_shop.received(mei) == [NOTICE]
    assert plan_shop.control.sent_messages(plan_shop.id, wen) == []
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 1 and plan["left_out"]["blocked"] == 1
    assert _outcome(app, wen) == RecipientOutcome.BLOCKED


def test_a_chunk_whose_every_recipient_withdrew_ends_without_asking_line(app, plan_shop):
    friends = [plan_shop.friend("林小美"), plan_shop.friend("陳大文")]
    plan_id = _start(plan_shop)
    for user in friends:
        plan_shop.change(user, marketing_consent=False)
    plan_shop.deliver()
    assert plan_shop.control.sent_messages(plan_shop.id) == [] and plan_shop.control.sends(plan_shop.id) == []
    [chunk] = _chunks(app)
    assert (chunk.status, chunk.recipient_count, chunk.called_at) == ("sent", 0, None)
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 0 and plan["left_out"]["no_consent"] == 2
    plan_shop.deliver()  # nothing left to do, nothing sent later
    assert plan_shop.control.sends(plan_shop.id) == []


def test_a_chunk_line_was_already_asked_for_keeps_its_recipients_and_is_settled_by_its_key(app, plan_shop):
    """The worker asked LINE and died before recording the answer; meanwhile one customer withdrew consent.
    The chunk's fate is open: it is sent again with the same key and the same people (LINE answers 409: it
    had it), so nobody gets it twice and the record says what LINE did."""
    friends = [plan_shop.friend(name) for name in ("林小美", "陳大文", "張小華")]
    plan_id = _start(plan_shop)
    [chunk] = _chunks(app)
    with app.app_context():
        channel = db.session.get(Channel, chunk.channel_id)
        senders.current().multicast(channel, [user for _id, user in chunk.recipients], chunk.messages,
                                    retry_key=chunk.retry_key, unit=chunk.unit)  # LINE took it ...
        db.session.execute(update(OutgoingBatch).where(OutgoingBatch.id == chunk.id).values(
            status="sending", called_at=utcnow(), claimed_by="dead-worker",
            claimed_until=utcnow() - timedelta(seconds=1)))  # ... and the worker died before recording it
        db.session.commit()
        jobs.sweep()  # its lease ran out: queued again, with its key
    plan_shop.change(friends[1], marketing_consent=False)
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 3  # once each, as LINE had it
    [accepted] = plan_shop.control.sends(plan_shop.id)
    [after] = _chunks(app)
    assert (after.status, after.recipients, after.request_id) == ("sent", chunk.recipients, accepted["requestId"])
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 3 and plan["left_out"]["no_consent"] == 0
