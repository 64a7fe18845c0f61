"""The ``line`` fixture: a shop connected to a sandbox channel whose webhook URL is our live receiver, with
readers for what the worker made of its events (contacts, messages, the outbox) and ways to let time pass."""
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.webhooks import encode, make_channel, signed_headers
from wizard.extensions import db
from wizard.models import Contact, Message, Outbox, WebhookEvent, utcnow


@pytest.fixture
def line(app, sandbox, live_app, make_shop):
    """A shop connected to a sandbox channel whose webhook URL is our live receiver."""
    slug, _ = make_shop()
    control = sandbox.control
    created = control.create_channel(display_name="晴天烘焙坊")
    channel = make_channel(app, slug, channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    control.update(created["channelId"], endpoint=live_app.url + channel["path"])
    return Line(app, control, channel, slug)


class Line:
    def __init__(self, app, control, channel, slug):
        self.app, self.control, self.channel, self.slug = app, control, channel, slug
        self.id = channel["channel_id"]

    def act(self, result):
        """A sandbox user's action; LINE's webhook must have reached us and been acknowledged."""
        assert result["delivery"]["statusCode"] == 200, result
        return result["user"]["userId"]

    def follow(self, user_id=None, **options):
        return self.act(self.control.follow(self.id, user_id, **options))

    def post(self, *events):
        body = encode({"destination": self.channel["bot_user_id"], "events": list(events)})
        response = self.app.test_client().post(self.channel["path"], data=body,
                                               headers=signed_headers(self.channel["secret"], body))
        assert response.status_code == 200, response.get_data(as_text=True)

    def contact(self, user_id):
        with self.app.app_context():
            contact = db.session.scalar(db.select(Contact).filter_by(line_user_id=user_id))
            db.session.expunge_all()
            return contact

    def events(self):
        with self.app.app_context():
            rows = db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()
            db.session.expunge_all()
            return rows

    def messages(self, direction=None):
        with self.app.app_context():
            query = db.select(Message).order_by(Message.id)
            if direction:
                query = query.filter_by(direction=direction)
            rows = db.session.scalars(query).all()
            db.session.expunge_all()
            return rows

    def outbox(self):
        with self.app.app_context():
            rows = db.session.scalars(db.select(Outbox).order_by(Outbox.id)).all()
            db.session.expunge_all()
            return rows

    def expire_leases(self):
        """Time passes: every claim (on events and on messages being sent) has run out."""
        with self.app.app_context():
            for model in (WebhookEvent, Outbox):
                db.session.execute(update(model).where(model.claimed_until.is_not(None))
                                   .values(claimed_until=utcnow() - timedelta(seconds=1)))
            db.session.commit()

    def make_due(self):
        """Time passes: every event and message waiting for its backoff becomes due now."""
        with self.app.app_context():
            for model in (WebhookEvent, Outbox):
                db.session.execute(update(model).where(model.next_attempt_at.is_not(None))
                                   .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
            db.session.commit()
