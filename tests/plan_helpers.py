"""A shop connected to a sandbox channel with friends written as the CRM knows them, for the send plans' tests:
make friends (in LINE's sandbox and as contacts), templates and plans (through the API), let the plans' minute
pass (``send``), and read what each customer received from the sandbox."""
import secrets
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.line import worker
from wizard.models import Contact, MessageTemplate, SendPlan, Shop, utcnow
from wizard.plans import runs


class PlanShop:
    def __init__(self, app, client, control, channel, slug):
        self.app, self.client, self.control, self.channel, self.slug = app, client, control, channel, slug
        self.id = channel["channel_id"]

    def friend(self, name, *, consent=True, city="TPE", birthday=None, form=True, days_ago=0):
        """A LINE friend of the shop's account (since ``days_ago``) and the contact the CRM made of them;
        returns the user id."""
        user_id = self.stranger(name, days_ago=days_ago)
        with self.app.app_context():
            db.session.add(Contact(
                channel_id=self.channel["id"], line_user_id=user_id, display_name=name, customer_name=name,
                city=city, birthday=birthday, marketing_consent=consent,
                followed_at=utcnow() - timedelta(days=days_ago),
                form_filled_at=utcnow() if form else None, marketing_consent_at=utcnow() if consent else None))
            db.session.commit()
        return user_id

    def stranger(self, name, *, days_ago=0):
        """A LINE friend of the shop's account the CRM has no record of (they added the account before its
        webhook was connected); returns the user id."""
        at = time.time() - days_ago * 86400
        return self.control.follow(self.id, name=name, deliver_event=False, at=at)["user"]["userId"]

    def change(self, user_id, **values):
        with self.app.app_context():
            db.session.execute(update(Contact).where(Contact.line_user_id == user_id).values(**values))
            db.session.commit()

    def template(self, *texts, name=None):
        with self.app.app_context():
            shop = db.session.scalar(db.select(Shop).filter_by(slug=self.slug))
            template = MessageTemplate(shop_id=shop.id, name=name or f"範本 {secrets.token_hex(3)}",
                                       messages=[{"type": "text", "text": text} for text in texts])
            db.session.add(template)
            db.session.commit()
            return template.id

    def post(self, key=None, **plan):
        headers = {"Idempotency-Key": key} if key else {}
        return self.client.post(f"/api/v1/shops/{self.slug}/send-plans", json=plan, headers=headers)

    def plan(self, plan_id):
        response = self.client.get(f"/api/v1/shops/{self.slug}/send-plans/{plan_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def make_due(self, plan_id):
        """The plan's time has come."""
        with self.app.app_context():
            db.session.execute(update(SendPlan).where(SendPlan.id == plan_id)
                               .values(send_at=utcnow() - timedelta(seconds=1)))
            db.session.commit()

    def tick(self, now=None):
        """The plans' minute: due runs start (in this process, as the periodic job would)."""
        with self.app.app_context():
            return runs.tick(now)

    def deliver(self):
        """Everything queued goes (chunks and personal messages), then the outcomes are counted."""
        worker.process_pending(self.app)
        with self.app.app_context():
            runs.reconcile()

    def send(self, now=None):
        started = self.tick(now)
        self.deliver()
        return started

    def received(self, user_id):
        """The texts this customer got from the shop's account, in order."""
        return [sent["message"].get("text") for sent in self.control.sent_messages(self.id, user_id)
                if sent["delivered"]]


@pytest.fixture(name="plan_shop")
def plan_shop_fixture(app, sandbox, client, make_shop, login):
    """The signed-in owner's shop (pages in English) connected to a sandbox channel with no friends yet."""
    slug, email = make_shop()
    login(email)
    client.get("/?lang=en")
    control = sandbox.control
    created = control.create_channel(display_name="晴天烘焙坊")
    channel = make_channel(app, slug, channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    return PlanShop(app, client, control, channel, slug)


def taipei(text):
    """A Taipei wall time as the naive UTC the app stores."""
    return datetime.fromisoformat(text) - timedelta(hours=8)
