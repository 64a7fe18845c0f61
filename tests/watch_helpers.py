"""The ``watched`` fixture: a shop connected to a sandbox channel through the wizard, healthy after a first
``line check-all``, with its owner and assigned staff, mail through a real SMTP server (tests/smtp_helpers.py),
and ways to read what the watch says and to let time pass for it. Load with
``pytest_plugins = ["tests.smtp_helpers", "tests.watch_helpers"]``."""
import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from tests.wizard_helpers import connect
from wizard.extensions import db
from wizard.models import Alert, Channel, Shop, ShopHealth, User, iso_utc


class Watched:
    """A shop connected to a sandbox channel through the wizard, and ways to read what the watch says."""

    def __init__(self, app, client, runner, sandbox, slug, channel, owner, staff, smtp):
        self.app, self.client, self.runner, self.sandbox = app, client, runner, sandbox
        self.slug, self.channel, self.owner, self.staff, self.smtp = slug, channel, owner, staff, smtp
        self.id = channel["channelId"]

    def check_all(self):
        result = self.runner.invoke(args=["line", "check-all", "--json"])
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        return {line["slug"]: line for line in lines}, result

    def status(self):
        return self.client.get(f"/api/v1/shops/{self.slug}/status").get_json()

    def alerts(self):
        with self.app.app_context():
            rows = db.session.scalars(db.select(Alert).order_by(Alert.id)).all()
            db.session.expunge_all()
            return rows

    def daily_due(self):
        """A day has passed since the once-a-day checks (LINE's webhook test, the friend count)."""
        with self.app.app_context():
            db.session.execute(update(ShopHealth).values(daily_checked_at=None))
            db.session.commit()

    def webhook_test_due(self):
        """An hour has passed since LINE's last webhook test of the channel (the watch runs it at most hourly)."""
        with self.app.app_context():
            channel = db.session.scalar(db.select(Channel))
            results = dict(channel.check_results or {})
            results["webhook_test_history"] = [
                iso_utc(datetime.fromisoformat(at.rstrip("Z")) - timedelta(hours=1))
                for at in results.get("webhook_test_history", [])]
            channel.check_results = results
            db.session.commit()

    def staff_client(self):
        """Staff signed in on a browser of their own (the owner stays signed in on ``client``)."""
        staff = self.app.test_client()
        assert staff.post("/login", data={"email": self.staff, "password": "correct horse"}).status_code == 302
        return staff

    def status_row(self):
        with self.app.app_context():
            row = db.session.scalar(db.select(ShopHealth))
            db.session.expunge_all()
            return row

    def mails_to(self, address):
        return [m for m in self.smtp.messages if m["To"] == address]


@pytest.fixture
def watched(smtp_app, client, runner, sandbox, live_app, make_shop, make_user, login, smtp_server):
    app = smtp_app
    app.config["WEBHOOK_TEST_COOLDOWN"] = 0
    slug, owner = make_shop()
    staff = make_user("staff@example.com", staff=True)
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        shop.assigned_staff_id = db.session.scalar(db.select(User.id).filter_by(email=staff))
        db.session.commit()
    login(owner)
    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")
    assert connect(client, slug, channel).status_code in (200, 302)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{slug}/response_settings", data={"action": "confirm", "auto_response": "y"})
    client.post(f"/setup/{slug}/webhook_url", data={"action": "confirm_redelivery", "webhook_redelivery": "y"})
    assert sandbox.control.follow(channel["channelId"])["delivery"]["statusCode"] == 200
    shop = Watched(app, client, runner, sandbox, slug, channel, owner, staff, smtp_server)
    states, result = shop.check_all()
    assert states[slug]["state"] == "healthy", (states, result.output)
    assert result.exit_code == 0
    return shop
