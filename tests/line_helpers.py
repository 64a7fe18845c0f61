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

    def _rows(self, query):
        """Every row the query finds, detached so a test can read them after the context closes."""
        with self.app.app_context():
            rows = db.session.scalars(query).all()
            db.session.expunge_all()
            return rows

    def events(self):
        return self._rows(db.select(WebhookEvent).order_by(WebhookEvent.id))

    def messages(self, direction=None):
        query = db.select(Message).order_by(Message.id)
        return self._rows(query.filter_by(direction=direction) if direction else query)

    def outbox(self):
        return self._rows(db.select(Outbox).order_by(Outbox.id))

    def _a_second_ago(self, column):
        """Time passes: every event and message whose ``column`` is set now finds it a second in the past."""
        with self.app.app_context():
            for model in (WebhookEvent, Outbox):
                db.session.execute(update(model).where(getattr(model, column).is_not(None))
                                   .values({column: utcnow() - timedelta(seconds=1)}))
            db.session.commit()

    def expire_leases(self):
        """Every claim (on events and on messages being sent) has run out."""
        self._a_second_ago("claimed_until")

    def make_due(self):
        """Every event and message waiting for its backoff is due now."""
        self._a_second_ago("next_attempt_at")
