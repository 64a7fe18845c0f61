"""The drift watch: a connected sandbox shop broken in each way LINE's settings can drift, then fixed.

For each way, ``line check-all``, the status API, the staff console and the owner's wizard name the same state,
reason and fixing step; an alert opens, one e-mail goes to each person who looks after the shop (through a
real SMTP server), and fixing it in the sandbox closes the alert again."""
import json
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from tests.servers import Served
from tests.sink import Sink
from tests.wizard_helpers import connect
from wizard.extensions import db
from wizard.models import Alert, Channel, Shop, ShopHealth, User, WebhookEvent, utcnow

pytest_plugins = ["tests.smtp_helpers"]


@pytest.fixture
def sink():
    served = Sink()
    yield served
    served.served.stop()


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


def _lose_follows_while_silent(shop):
    """Nothing from LINE for six days while two new friends' follow events were lost on their way."""
    with shop.app.app_context():
        week_ago = utcnow() - timedelta(days=6)
        db.session.execute(update(WebhookEvent).values(received_at=week_ago))
        channel = db.session.scalar(db.select(Channel))
        channel.last_delivery_at = channel.last_verified_at = week_ago
        channel.connected_at = week_ago - timedelta(days=1)
        five_days_ago = (utcnow() + timedelta(hours=9) - timedelta(days=5)).date()
        results = dict(channel.check_results)
        end = datetime.combine(five_days_ago, datetime.min.time()) + timedelta(days=1, hours=-9)
        results["followers_history"] = [{"date": five_days_ago.isoformat(), "at": end.isoformat() + "Z",
                                         "followers": 0, "blocks": 0}]
        channel.check_results = results
        db.session.commit()
    for _ in range(2):
        lost = shop.sandbox.control.follow(shop.id, deliver_event=False, at=time.time() - 2 * 86400)
        assert lost["delivery"] is None
    shop.daily_due()


def _stop_answering(shop):
    shop.app.extensions["test_live_app"].stop()
    shop.daily_due()


def _answer_again(shop):
    """Answering again; no day needs to pass: while LINE's test is what broke it, each round tests again."""
    served = Served(shop.app, port=int(shop.app.config["PUBLIC_BASE_URL"].rsplit(":", 1)[1]))
    shop.app.extensions["test_restarted"] = served


BREAKS = {
    # name: (break it, expected state, reason, fixing step, fix it)
    "secret reissued": (lambda s: s.sandbox.control.update(s.id, reissue_secret=True),
                        "broken", "wrong_secret", "credentials", None),
    "webhook URL changed": (lambda s: s.sandbox.control.update(s.id, endpoint="https://crm.example.net/hook"),
                            "broken", "endpoint_mismatch", "webhook_url",
                            lambda s: s.client.post(f"/setup/{s.slug}/webhook_url", data={
                                "action": "set_endpoint", "confirm_replace": "y"})),
    "webhook URL removed": (lambda s: s.sandbox.control.update(s.id, endpoint=""),
                            "broken", "endpoint_not_set", "webhook_url",
                            lambda s: s.client.post(f"/setup/{s.slug}/webhook_url", data={"action": "set_endpoint"})),
    "Use webhook off": (lambda s: s.sandbox.control.update(s.id, webhook_active=False),
                        "broken", "webhook_inactive", "response_settings",
                        lambda s: s.sandbox.control.update(s.id, webhook_active=True)),
    "Chat mode changed": (lambda s: s.sandbox.control.update(s.id, chat_mode="bot"),
                          "broken", "chat_mode_bot", "response_settings",
                          lambda s: s.sandbox.control.update(s.id, chat_mode="chat")),
    "LINE's test failing": (_stop_answering, "broken", "webhook_test_failed", "webhook_url", _answer_again),
    "silence": (_lose_follows_while_silent, "dormant", "silent_while_friends_grow", "webhook_url",
                lambda s: s.sandbox.control.follow(s.id)),
}


@pytest.mark.parametrize("way", list(BREAKS))
def test_each_way_a_connection_breaks_is_noticed_alerted_and_closed_when_fixed(watched, live_app, way):
    shop = watched
    shop.app.extensions["test_live_app"] = live_app
    breaker, state, reason, step, fixer = BREAKS[way]
    breaker(shop)
    try:
        states, result = shop.check_all()
        assert (states[shop.slug]["state"], states[shop.slug]["reason"]) == (state, reason), result.output
        assert result.exit_code == (1 if state == "broken" else 0)
        assert "1 shop(s) checked" in result.stderr

        status = shop.status()
        assert (status["state"], status["reason"], status["fix_step"]) == (state, reason, step)
        assert status["since"] == states[shop.slug]["since"]
        console = shop.staff_client().get("/shops/?state=" + state).data.decode()
        assert f'data-shop="{shop.slug}" data-state="{state}" data-reason="{reason}"' in console
        resume = shop.client.get(f"/setup/{shop.slug}/", follow_redirects=True).data.decode()
        assert f'data-alert-reason="{reason}"' in resume, resume[:3000]
        assert f'href="/setup/{shop.slug}/{step}"' in resume
        summary = shop.client.get(f"/setup/{shop.slug}/connected").data.decode()
        assert 'data-reason="connected"' not in summary  # the summary never says "connected" beside the alert

        alerts = shop.alerts()
        assert [(a.state, a.reason, a.closed_at) for a in alerts] == [(state, reason, None)]
        assert len(shop.mails_to(shop.owner)) == 1 and len(shop.mails_to(shop.staff)) == 1
        mail = shop.mails_to(shop.owner)[0]
        assert shop.slug in mail.get_content() and f"/setup/{shop.slug}/{step}" in mail.get_content()
        shop.check_all()  # noticed again: still one alert, no second e-mail the same day
        assert len(shop.alerts()) == 1 and len(shop.mails_to(shop.owner)) == 1

        if fixer is None:  # the secret: the owner enters the new one, and a friend's follow proves it
            new = shop.sandbox.control.channel(shop.id)
            connect(shop.client, shop.slug, {"channelId": shop.id, "channelSecret": new["channelSecret"]})
            shop.sandbox.control.follow(shop.id)
        else:
            fixer(shop)
        states, _ = shop.check_all()
        assert states[shop.slug]["state"] == "healthy", states
        assert [(a.reason, a.closed_at is not None) for a in shop.alerts()] == [(reason, True)]
        assert shop.status()["state"] == "healthy"
        assert 'data-alert-reason' not in shop.client.get(f"/setup/{shop.slug}/", follow_redirects=True).data.decode()
    finally:
        restarted = shop.app.extensions.pop("test_restarted", None)
        if restarted is not None:
            restarted.stop()


def test_a_healthy_shop_costs_three_line_calls_per_round_and_the_daily_checks_four_more(watched):
    states, result = watched.check_all()  # the first round since it connected: the daily checks are due
    # + LINE's webhook test, the friend count, the month's quota and what is used of it
    assert "7 LINE calls (7.0 per shop)" in result.stderr, result.stderr
    assert states[watched.slug]["state"] == "healthy"
    states, result = watched.check_all()
    assert states[watched.slug]["state"] == "healthy"
    assert "3 LINE calls (3.0 per shop)" in result.stderr, result.stderr  # token, bot info, webhook endpoint


def test_the_round_runs_on_the_queue_and_one_consumer_checks_each_due_shop(watched):
    """The periodic round queues a check per due shop; a real consumer runs it and the state follows LINE."""
    from wizard import tasks
    from wizard.watch import drift
    app = watched.app
    watched.sandbox.control.update(watched.id, chat_mode="bot")
    with app.app_context():
        db.session.execute(update(ShopHealth).values(checked_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
        assert drift.round_now() == 1
        assert drift.due_shop_ids() == []  # queued, not run yet: the next round must not queue it again
    tasks.start_in_process(app, threads=2)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and watched.status_row().state != "broken":
            time.sleep(0.1)
    finally:
        tasks.stop_in_process(app)
    health = watched.status_row()
    assert (health.state, health.reason) == ("broken", "chat_mode_bot")
    with app.app_context():
        assert drift.due_shop_ids() == []  # checked just now: the next round leaves it alone
    assert [a.reason for a in watched.alerts()] == ["chat_mode_bot"]


def test_a_staff_chat_url_gets_one_signed_post_when_an_alert_opens_and_one_when_it_closes(watched, sink):
    import hashlib
    import hmac
    watched.app.config.update(ALERT_WEBHOOK_URL=sink.url, ALERT_WEBHOOK_SECRET="chat-secret")
    watched.sandbox.control.update(watched.id, webhook_active=False)
    watched.check_all()
    watched.check_all()
    watched.sandbox.control.update(watched.id, webhook_active=True)
    watched.check_all()
    watched.check_all()
    posts = sink.requests
    assert [json.loads(p["body"])["status"] for p in posts] == ["open", "closed"]
    for post in posts:
        expected = hmac.new(b"chat-secret", post["body"], hashlib.sha256).hexdigest()
        assert post["headers"]["x-wizard-signature"] == expected
    opened = json.loads(posts[0]["body"])
    assert (opened["shop"], opened["state"], opened["reason"]) == (watched.slug, "broken", "webhook_inactive")
    assert opened["fix_url"].endswith(f"/setup/{watched.slug}/response_settings")


def test_redelivery_needs_a_look_until_confirmed_or_seen(watched):
    """LINE cannot tell us whether it redelivers: neither confirmed nor ever seen, the shop needs a look."""
    watched.client.post(f"/setup/{watched.slug}/webhook_url",
                        data={"action": "confirm_redelivery"})  # the owner unticks the box
    states, _ = watched.check_all()
    assert (states[watched.slug]["state"], states[watched.slug]["reason"]) == ("attention", "redelivery_unconfirmed")
    assert watched.status()["fix_step"] == "webhook_url"
    assert watched.alerts() == []  # needing a look is no alert: nothing is broken
    watched.sandbox.control.redeliver(watched.id)  # LINE sends an event again: redelivery is on
    states, _ = watched.check_all()
    assert states[watched.slug]["state"] == "healthy"


def test_a_nearly_used_message_quota_needs_a_look_before_it_runs_out(watched):
    """LINE's quota is read daily: at 90 % of the month's messages the shop needs a look, with the numbers."""
    watched.sandbox.control.update(watched.id, quota=10)
    user_id = watched.sandbox.control.users(watched.id)[0]["userId"]
    with watched.app.app_context():
        from wizard.line.client import client_for
        client = client_for(db.session.scalar(db.select(Channel)))
        for number in range(9):
            client.push(user_id, [{"type": "text", "text": f"#{number}"}])
    watched.daily_due()
    states, _ = watched.check_all()
    assert (states[watched.slug]["state"], states[watched.slug]["reason"]) == ("attention", "quota_nearly_used")
    with watched.app.app_context():
        from wizard.steps import health
        row = db.session.scalar(db.select(ShopHealth))
        assert "9" in health.describe(row) and "10" in health.describe(row)
    assert watched.alerts() == []
    watched.sandbox.control.update(watched.id, quota=1000)  # the plan was raised
    watched.daily_due()
    states, _ = watched.check_all()
    assert states[watched.slug]["state"] == "healthy"


def test_line_unreachable_while_broken_keeps_the_alert_open_and_sends_nothing_more(watched):
    """A check that cannot ask LINE proves nothing fixed: the shop stays broken with its last real check's
    time, its one alert stays open, and nobody gets a second e-mail for the same trouble."""
    watched.sandbox.control.update(watched.id, chat_mode="bot")
    states, _ = watched.check_all()
    broken_since = states[watched.slug]["since"]
    checked_at = watched.status_row().checked_at
    watched.sandbox.control.fail(watched.id, 500)
    try:
        states, _ = watched.check_all()
        assert (states[watched.slug]["state"], states[watched.slug]["reason"], states[watched.slug]["since"]) == (
            "broken", "chat_mode_bot", broken_since)
        assert watched.status_row().checked_at == checked_at
    finally:
        watched.sandbox.control.heal(watched.id)
    assert [(a.reason, a.closed_at) for a in watched.alerts()] == [("chat_mode_bot", None)]
    assert len(watched.mails_to(watched.owner)) == 1


def test_an_older_check_finishing_late_never_overwrites_a_newer_verdict(watched):
    """The watch's check began before the owner fixed Chat and finished after the owner's page saw the fix."""
    from wizard.steps import health, status
    app = watched.app
    with app.app_context():
        shop = db.session.scalar(db.select(Shop))
        began = utcnow()
        watched.sandbox.control.update(watched.id, chat_mode="bot")
        stale = status.evaluate(shop, force=True)  # the slow check's answer: Chat off
        db.session.rollback()
        watched.sandbox.control.update(watched.id, chat_mode="chat")
        fresh = status.evaluate(shop, force=True)  # the owner's page, begun later: fixed
        db.session.commit()
        assert fresh.health.state == "healthy"
        late = health.record(shop, stale, began)
        db.session.commit()
        assert (late.state, late.reason) == ("healthy", "connected")
    assert watched.alerts() == []


def test_an_alert_mail_the_server_refused_is_tried_again_within_the_hour_not_the_day(watched):
    from wizard.models import MailMessage
    from wizard.watch import alerts
    watched.smtp.recorder.refuse = "451 Try again later"
    watched.sandbox.control.update(watched.id, webhook_active=False)
    watched.check_all()
    assert watched.mails_to(watched.owner) == []
    with watched.app.app_context():
        failed = db.session.scalars(db.select(MailMessage).where(MailMessage.error.is_not(None))).all()
        assert {m.kind for m in failed} == {"alert"} and len(failed) == 2  # the owner and the assigned staff
        alert = db.session.scalar(db.select(Alert))
        retry_in = alert.last_emailed_at + timedelta(hours=24) - utcnow()
        assert timedelta(minutes=10) < retry_in < timedelta(minutes=16)
        assert alerts.notify_due() == 0  # not yet
        watched.smtp.recorder.refuse = None
        assert alerts.notify_due(now=utcnow() + timedelta(minutes=16)) == 2
        db.session.commit()
    assert len(watched.mails_to(watched.owner)) == 1 and len(watched.mails_to(watched.staff)) == 1
