"""Retention (issue 14, item 26): each kind is deleted after its own setting by a nightly task, and the
customer form's privacy notice states the same periods the deletion follows.

The data is made the real way (the sandbox's users follow and send a picture, the worker runs the events,
the content is fetched), then made old by moving its timestamps back, and ``flask --app wizard retention``
(what the nightly task runs) deletes what is past its period and nothing else.
"""
import re
from datetime import datetime, timedelta

from sqlalchemy import update

from tests.test_conversation import PNG
from wizard import queue
from wizard.customers import content, form_settings
from wizard.extensions import db
from wizard.line import worker
from wizard.models import (Contact, FormSubmission, MailMessage, Message, MessageContent, Shop, ShopCheck,
                           WebhookDelivery, WebhookEvent, utcnow)


def _age(app, model, column, days, *where):
    """Move ``column`` back ``days`` on the rows matching ``where`` (row by row: SQLite keeps text times)."""
    with app.app_context():
        for row in db.session.scalars(db.select(model).where(*where)):
            setattr(row, column, getattr(row, column) - timedelta(days=days))
        db.session.commit()


def _count(app, model, *where):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(model).where(*where))


def test_each_kind_goes_after_its_own_period_and_the_conversation_says_so(app, client, line, login, runner):
    login(f"owner-{line.slug}@example.com")
    client.get("/?lang=en")
    user_id = line.follow(name="林小美")
    line.control.send(line.id, user_id, "image", content=PNG, content_type="image/png")
    line.control.send(line.id, user_id, "text", text="這張照片的蛋糕還有嗎？")
    worker.process_pending(app)
    with app.app_context():
        assert content.fetch_due() == 1
        contact_id = db.session.scalar(db.select(Contact.id).filter_by(line_user_id=user_id))
        image_id = db.session.scalar(db.select(Message.id).filter_by(type="image"))
        shop_id = db.session.scalar(db.select(Shop.id))
        now = utcnow()
        db.session.add_all([ShopCheck(shop_id=shop_id, at=now - timedelta(days=40), trigger="watch",
                                      state="healthy", reason="ok"),
                            ShopCheck(shop_id=shop_id, at=now, trigger="watch", state="healthy", reason="ok")])
        db.session.add_all([MailMessage(to="owner@example.com", subject=subject, kind="alert", transport="file",
                                        sent_at=at) for subject, at in (("old", now - timedelta(days=400)),
                                                                        ("new", now))])
        db.session.commit()
        events_before = db.session.scalar(db.select(db.func.count(WebhookEvent.id)))
    # Everything LINE delivered so far is 100 days old; one old event is still waiting (its retry is due).
    _age(app, WebhookEvent, "received_at", 100)
    _age(app, WebhookDelivery, "received_at", 100)
    _age(app, MessageContent, "created_at", 400)
    with app.app_context():
        waiting = db.session.scalar(db.select(WebhookEvent.id).filter_by(type="message").order_by(
            WebhookEvent.id.desc()))
        db.session.execute(update(WebhookEvent).where(WebhookEvent.id == waiting).values(status="pending"))
        db.session.commit()
    fresh_user = line.follow(name="陳大文")  # a delivery from today

    result = runner.invoke(args=["retention"])
    assert result.exit_code == 0, result.output
    assert f"{events_before - 1} events" in result.output and "1 media" in result.output, result.output
    assert "1 checks" in result.output and "1 mail" in result.output, result.output

    with app.app_context():
        kept_events = db.session.execute(db.select(WebhookEvent.id, WebhookEvent.source_user_id)
                                         .order_by(WebhookEvent.id)).all()
        assert {event_id for event_id, _ in kept_events} >= {waiting}
        assert [user for _, user in kept_events] == [user_id, fresh_user]  # the waiting one and today's
        # Deliveries go only once none of their events is left (the waiting event keeps its own).
        assert db.session.scalar(db.select(db.func.count(WebhookDelivery.id))) == 2
        # What the events made stays: the contact and its messages.
        assert db.session.scalar(db.select(db.func.count(Message.id))
                                 .filter_by(contact_id=contact_id, direction="in")) == 2
        assert db.session.scalar(db.select(MessageContent.status)) == "expired"
        assert [m.subject for m in db.session.scalars(db.select(MailMessage))] == ["new"]
    assert _count(app, ShopCheck) == 1

    html = client.get(f"/c/contacts/{contact_id}").get_data(as_text=True)
    assert "Picture: deleted after 365 days, as this CRM keeps files only that long." in html
    assert "這張照片的蛋糕還有嗎？" in html
    assert client.get(f"/c/contacts/{contact_id}/messages/{image_id}/content").status_code == 404

    # Nightly: the queue offers it from 19:00 UTC (03:00 in Taiwan), and it runs once that day.
    nightly = queue.instance(app).wizard_tasks["retention"].task_class()
    assert nightly.validate_datetime(datetime(2026, 12, 6, 19, 0))
    assert nightly.validate_datetime(datetime(2026, 12, 6, 20, 0))  # no consumer ran at 19:00
    assert not nightly.validate_datetime(datetime(2026, 12, 6, 18, 0))
    with app.app_context():
        assert queue.once_per_slot("retention", 86400) and not queue.once_per_slot("retention", 86400)


def test_the_notice_states_the_periods_and_a_silent_customer_goes_after_the_notices_years(app, client, line):
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=line.slug))
        settings, problems = form_settings.validate(shop, {"text": "請填寫客戶資料", "notice": {"retention_years": 1}})
        assert not problems, problems
        form_settings.save(settings, "test")
        db.session.commit()
    silent = line.follow(name="林小美")
    worker.process_pending(app)
    [sent] = line.control.sent_messages(line.id, silent)
    path = re.search(r"https?://[^\s]+(/form/[^\s/]+)", sent["message"]["text"]).group(1)
    notice = client.get(path + "?lang=en").get_data(as_text=True)
    assert "for 1 year(s) after your last contact" in notice
    assert "The copies of what you send that LINE delivers to us are deleted after 90 days." in notice
    assert "Pictures, videos, audio and files you send are deleted after 365 days." in notice
    assert client.post(path, data={"customer_name": "林小美", "phone": "0912 345 678"}).status_code == 302

    # She has said nothing for 13 months; another friend wrote yesterday but was added long ago.
    active = line.follow(name="陳大文")
    worker.process_pending(app)
    with app.app_context():
        silent_id, active_id = (db.session.scalar(db.select(Contact.id).filter_by(line_user_id=user))
                                for user in (silent, active))
    for column in ("created_at", "followed_at", "form_filled_at", "updated_at"):  # updated_at last: any update sets it
        _age(app, Contact, column, 396, getattr(Contact, column).is_not(None))
    _age(app, Message, "sent_at", 396, Message.contact_id == silent_id)
    _age(app, Message, "sent_at", 1, Message.contact_id == active_id)
    line.control.send(line.id, active, "text", text="明天有開嗎？")
    worker.process_pending(app)
    _age(app, Contact, "updated_at", 396, Contact.id == active_id)  # only the message says she is active

    with app.app_context():
        from wizard import retention
        assert retention.run()["contacts"] == 1
    assert _count(app, Contact, Contact.id == silent_id) == 0
    assert _count(app, Message, Message.contact_id == silent_id) == 0
    assert _count(app, FormSubmission) == 0
    assert _count(app, Contact, Contact.id == active_id) == 1
