"""The LINE sandbox as the LINE side: CLI commands, JSON control API, control page, signed webhooks."""
import json
import re
import time
from html.parser import HTMLParser

import pytest
import requests
from sqlalchemy import update

from tests.servers import Served
from tests.sink import Sink
from wizard import create_app
from wizard.line.client import LineClient
from wizard.line.problems import LineProblem
from wizard.sandbox import Sandbox, SandboxError, create_sandbox_app
from wizard.sandbox.store import deliveries, messages, sends

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def sandbox_switched(tmp_path, on: bool, line_api_host: str):
    """The app as the embedded default (SANDBOX on) or a deployment (off) sees it; its instance/ is the sandbox
    fixture's, so ``flask sandbox …`` acts on the channels the served sandbox knows."""
    from tests.conftest import ENCRYPTION_KEY
    return create_app({
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "SECRET_KEY": "test-secret-key",
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "LINE_API_HOST": line_api_host,
        "SANDBOX": on,
    })


@pytest.fixture
def runner(sandbox, tmp_path):
    """``flask sandbox …`` exists only where the sandbox is on (the embedded default), so these tests run it there."""
    return sandbox_switched(tmp_path, True, sandbox.url).test_cli_runner()


def test_a_deployment_has_no_sandbox_command(sandbox, tmp_path):
    production = sandbox_switched(tmp_path, False, "https://api.line.me").test_cli_runner()
    result = production.invoke(args=["sandbox", "create-channel", "--json"])
    assert result.exit_code == 2 and "No such command 'sandbox'" in result.output
    assert "sandbox" not in production.invoke(args=["--help"]).output.split("Commands:")[1]
    # The same app with the sandbox on has it: the switch, not the code, decides.
    assert "sandbox" in sandbox_switched(tmp_path, True, sandbox.url).test_cli_runner().invoke(
        args=["--help"]).output.split("Commands:")[1]


def cli_channel(runner) -> dict:
    result = runner.invoke(args=["sandbox", "create-channel", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_create_channel_prints_credentials_the_running_sandbox_knows(runner, sandbox):
    created = cli_channel(runner)
    assert set(created) == {"channelId", "channelSecret", "basicId", "botUserId"}
    assert re.fullmatch(r"[12]\d{9}", created["channelId"])
    assert re.fullmatch(r"[0-9a-f]{32}", created["channelSecret"])
    assert re.fullmatch(r"@\d{3}[a-z]{4}", created["basicId"])
    assert re.fullmatch(r"U[0-9a-f]{32}", created["botUserId"])
    # The CLI and the served sandbox share one database: LINE's API knows the new channel at once.
    info = LineClient(created["channelId"], created["channelSecret"], host=sandbox.url).verify_credentials()
    assert (info["userId"], info["basicId"]) == (created["botUserId"], created["basicId"])
    shown = json.loads(runner.invoke(args=["sandbox", "show", created["channelId"]]).output)
    assert (shown["tokensIssued"], shown["users"], shown["sentMessages"]) == (1, [], [])


def test_set_changes_what_line_reports(runner, sandbox, sink):
    created = cli_channel(runner)
    result = runner.invoke(args=["sandbox", "set", created["channelId"], "--endpoint", sink.url,
                                 "--webhook-active", "off", "--chat-mode", "bot"])
    assert result.exit_code == 0, result.output
    line = LineClient(created["channelId"], created["channelSecret"], host=sandbox.url)
    assert line.get_webhook_endpoint() == {"endpoint": sink.url, "active": False}
    assert (line.bot_info()["chatMode"], line.bot_info()["markAsReadMode"]) == ("bot", "auto")

    result = runner.invoke(args=["sandbox", "set", created["channelId"], "--reissue-secret"])
    assert result.exit_code == 0, result.output
    new_secret = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", new_secret) and new_secret != created["channelSecret"]
    assert LineClient(created["channelId"], new_secret, host=sandbox.url).verify_credentials()
    with pytest.raises(LineProblem) as refused:
        line.verify_credentials()
    assert refused.value.code == "wrong_secret"


def test_set_refuses_what_line_refuses(runner):
    created = cli_channel(runner)
    result = runner.invoke(args=["sandbox", "set", created["channelId"], "--endpoint", "http://crm.example.com/x"])
    assert result.exit_code == 1 and "https" in result.output
    result = runner.invoke(args=["sandbox", "set", "1000000000", "--chat-mode", "bot"])
    assert result.exit_code == 1 and "1000000000" in result.output


def test_follow_sends_the_signed_webhook_line_sends(runner, sink):
    created = cli_channel(runner)
    runner.invoke(args=["sandbox", "set", created["channelId"], "--endpoint", sink.url])
    before = int(time.time() * 1000)
    result = runner.invoke(args=["sandbox", "follow", created["channelId"], "--name", "林小美"])
    assert result.exit_code == 0, result.output
    assert "林小美" in result.output and "OK 200" in result.output
    assert sink.verified(created["channelSecret"])
    request = sink.requests[0]
    assert request["method"] == "POST" and request["headers"]["content-type"].startswith("application/json")
    body = sink.bodies[0]
    assert body["destination"] == created["botUserId"] and len(body["events"]) == 1
    event = body["events"][0]
    assert event["type"] == "follow" and event["follow"] == {"isUnblocked": False}
    assert event["mode"] == "active" and event["deliveryContext"] == {"isRedelivery": False}
    assert ULID.match(event["webhookEventId"]) and re.fullmatch(r"[0-9a-f]{32}", event["replyToken"])
    assert before <= event["timestamp"] <= int(time.time() * 1000)
    assert event["source"]["type"] == "user" and re.fullmatch(r"U[0-9a-f]{32}", event["source"]["userId"])


def test_block_unblock_and_talk(runner, sink):
    created = cli_channel(runner)
    channel_id = created["channelId"]
    runner.invoke(args=["sandbox", "set", channel_id, "--endpoint", sink.url])
    result = runner.invoke(args=["sandbox", "follow", channel_id, "--json"])
    user_id = json.loads(result.output)["user"]["userId"]

    assert runner.invoke(args=["sandbox", "say", channel_id, "請問營業時間？"]).exit_code == 0
    assert runner.invoke(args=["sandbox", "unfollow", channel_id, "--user-id", user_id]).exit_code == 0
    blocked = runner.invoke(args=["sandbox", "say", channel_id, "hello", "--user-id", user_id])
    assert blocked.exit_code == 1 and "blocked" in blocked.output
    again = runner.invoke(args=["sandbox", "follow", channel_id, "--user-id", user_id])
    assert again.exit_code == 0, again.output
    twice = runner.invoke(args=["sandbox", "follow", channel_id, "--user-id", user_id])
    assert twice.exit_code == 1 and "already a friend" in twice.output

    follow, message, unfollow, refollow = sink.events
    assert message["type"] == "message" and message["replyToken"]
    assert message["message"]["type"] == "text" and message["message"]["text"] == "請問營業時間？"
    assert message["message"]["id"].isdigit() and message["message"]["quoteToken"]
    assert unfollow["type"] == "unfollow" and "replyToken" not in unfollow
    assert refollow["follow"] == {"isUnblocked": True}
    assert {event["source"]["userId"] for event in sink.events} == {user_id}
    assert len({event["webhookEventId"] for event in sink.events}) == 4
    assert sink.verified(created["channelSecret"])


def test_no_webhook_without_url_or_with_webhook_off(runner, sandbox, sink):
    created = cli_channel(runner)
    result = runner.invoke(args=["sandbox", "follow", created["channelId"]])
    assert result.exit_code == 0 and "No webhook sent: no webhook URL is set" in result.output
    runner.invoke(args=["sandbox", "set", created["channelId"], "--endpoint", sink.url,
                        "--webhook-active", "off"])
    result = runner.invoke(args=["sandbox", "say", created["channelId"], "hi"])
    assert result.exit_code == 0 and "Use webhook" in result.output
    assert sink.requests == []
    # The users still acted: LINE knows them as friends.
    assert len(sandbox.control.users(created["channelId"])) == 1


def test_webhooks_are_signed_with_the_current_secret(sandbox, sink):
    channel = sandbox.control.create_channel(endpoint=sink.url)
    new_secret = sandbox.control.update(channel["channelId"], reissue_secret=True)["channelSecret"]
    sandbox.control.follow(channel["channelId"])
    assert sink.verified(new_secret) and not sink.verified(channel["channelSecret"])


def test_endpoint_answer_is_reported(sandbox):
    refusing = Sink(status=500)
    try:
        channel = sandbox.control.create_channel(endpoint=refusing.url)
        delivery = sandbox.control.follow(channel["channelId"])["delivery"]
        assert (delivery["success"], delivery["statusCode"]) == (False, 500)
        assert delivery["reason"] == "ERROR_STATUS_CODE"
        assert sandbox.control.deliveries(channel["channelId"])[0]["statusCode"] == 500
    finally:
        refusing.stop()


def test_redelivery_repeats_the_event_marked_as_such(sandbox, sink):
    channel = sandbox.control.create_channel(endpoint=sink.url)
    sandbox.control.follow(channel["channelId"])
    sandbox.control.redeliver(channel["channelId"])
    first, second = sink.events
    assert second["webhookEventId"] == first["webhookEventId"]
    assert second["deliveryContext"] == {"isRedelivery": True}
    assert sink.verified(channel["channelSecret"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/x", "http://127.8.0.1/x", "http://localhost:8000/x",
                                 "http://[::1]:8000/x", "https://crm.example.com/line/webhook/x"])
def test_http_is_accepted_only_on_loopback(sandbox, url):
    channel = sandbox.control.create_channel()
    assert sandbox.control.update(channel["channelId"], endpoint=url)["endpoint"] == url


@pytest.mark.parametrize("url", ["http://crm.example.com/x", "http://10.0.0.5/x", "https://", "mailto:a@b.c",
                                 "https://crm.example.com/" + "x" * 480])
def test_urls_line_refuses(sandbox, url):
    channel = sandbox.control.create_channel()
    with pytest.raises(SandboxError):
        sandbox.control.update(channel["channelId"], endpoint=url)


def test_json_control_api(sandbox, sink):
    api = sandbox.url + "/_sandbox/api"
    response = requests.post(f"{api}/channels", json={"displayName": "阿美小吃", "endpoint": sink.url})
    assert response.status_code == 201
    channel = response.json()
    channel_id = channel["channelId"]
    assert channel["displayName"] == "阿美小吃" and channel["webhookActive"] is True

    followed = requests.post(f"{api}/channels/{channel_id}/follow", json={"name": "王淑芬"}).json()
    assert followed["delivery"]["statusCode"] == 200 and followed["user"]["displayName"] == "王淑芬"
    user_id = followed["user"]["userId"]
    said = requests.post(f"{api}/channels/{channel_id}/say", json={"userId": user_id, "text": "hi"}).json()
    assert said["event"]["message"]["text"] == "hi"
    assert [event["type"] for event in sink.events] == ["follow", "message"]

    LineClient(channel_id, channel["channelSecret"], host=sandbox.url).reply(
        said["event"]["replyToken"], [{"type": "text", "text": "您好"}])
    sent = requests.get(f"{api}/channels/{channel_id}/messages").json()
    assert [(m["to"], m["kind"], m["message"]) for m in sent] == [
        (user_id, "reply", {"type": "text", "text": "您好"})]

    changed = requests.patch(f"{api}/channels/{channel_id}", json={"webhookActive": False, "chatMode": "bot",
                                                                   "reissueSecret": True}).json()
    assert (changed["webhookActive"], changed["chatMode"]) == (False, "bot")
    assert changed["channelSecret"] != channel["channelSecret"]
    assert requests.put(f"{api}/channels/{channel_id}/failure", json={"status": 429, "times": 2}).json()[
        "failure"]["status"] == 429
    assert requests.delete(f"{api}/channels/{channel_id}/failure").json()["failure"]["status"] is None
    shown = requests.get(f"{api}/channels/{channel_id}").json()
    assert [u["userId"] for u in shown["users"]] == [user_id]
    last = requests.get(f"{api}/channels/{channel_id}/deliveries").json()[0]
    assert last["body"]["events"][0]["type"] == "message"

    missing = requests.post(f"{api}/channels/1000000000/follow", json={})
    assert missing.status_code == 404 and "1000000000" in missing.json()["error"]
    bad_url = requests.patch(f"{api}/channels/{channel_id}", json={"endpoint": "http://crm.example.com/x"})
    assert bad_url.status_code == 400


def test_control_page_plays_the_line_side(sandbox, sink):
    browser = requests.Session()
    page = browser.get(sandbox.url + "/")
    assert page.status_code == 200 and "Create a channel" in page.text
    created = browser.post(sandbox.url + "/_sandbox/channels",
                           data={"display_name": "小島咖啡", "endpoint": sink.url})
    assert created.status_code == 200 and "小島咖啡" in created.text
    channel = sandbox.control.channels()[0]
    assert channel["channelSecret"] in created.text and channel["channelId"] in created.text
    base = f"{sandbox.url}/_sandbox/channels/{channel['channelId']}"

    followed = browser.post(base + "/follow", data={"name": "陳大文"})
    assert "陳大文" in followed.text and "Webhook: OK 200" in followed.text
    user_id = sandbox.control.users(channel["channelId"])[0]["userId"]
    said = browser.post(base + "/say", data={"user_id": user_id, "text": "想預約"})
    assert "sent a message" in said.text
    saved = browser.post(base + "/settings",
                         data={"endpoint": sink.url, "chat_mode": "bot", "display_name": "小島"})
    assert "Settings saved" in saved.text
    assert sandbox.control.channel(channel["channelId"])["webhookActive"] is False  # box left unticked
    blocked = browser.post(base + "/unfollow", data={"user_id": user_id})
    assert "No webhook sent" in blocked.text
    assert [event["type"] for event in sink.events] == ["follow", "message"]
    failing = browser.post(base + "/failure", data={"status": "429", "times": "", "delay": ""})
    assert "answers 429" in failing.text
    assert browser.get(f"{sandbox.url}/_sandbox/channels/1000000000").status_code == 404
    picture = browser.get(f"{sandbox.url}/_sandbox/picture/{channel['botUserId']}.svg")
    assert picture.headers["Content-Type"].startswith("image/svg+xml")


def test_control_page_refuses_cross_origin_posts(sandbox):
    response = requests.post(sandbox.url + "/_sandbox/channels", data={"display_name": "x"},
                             headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert sandbox.control.channels() == []


def test_sandbox_state_on_each_database(db_url, sink):
    """The sandbox's own store works on SQLite and PostgreSQL alike (its tables sit beside the app's)."""
    sandbox_app = create_sandbox_app(db_url)
    served = Served(sandbox_app)
    control = sandbox_app.control
    try:
        channel = control.create_channel(endpoint=sink.url)
        line = LineClient(channel["channelId"], channel["channelSecret"], host=served.url)
        assert line.verify_credentials()["basicId"] == channel["basicId"]
        token = control.follow(channel["channelId"], name="張志明")["event"]["replyToken"]
        line.reply(token, [{"type": "text", "text": "歡迎光臨"}])
        with pytest.raises(LineProblem) as used:
            line.reply(token, [{"type": "text", "text": "again"}])
        assert used.value.code == "invalid_reply_token"
        control.fail(channel["channelId"], 503, times=1)
        with pytest.raises(LineProblem) as failed:
            line.bot_info()
        assert failed.value.status == 503
        assert line.bot_info()["userId"] == channel["botUserId"]
        # A second Sandbox on the same database (as a CLI process would open) sees the same state.
        other = Sandbox(db_url)
        assert [m["message"]["text"] for m in other.sent_messages(channel["channelId"])] == ["歡迎光臨"]
        assert other.token_issues(channel["channelId"]) == 1
        other.close()
    finally:
        served.stop()
        if not db_url.startswith("sqlite"):
            control.store.drop()
        control.close()


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser would parse them."""

    def __init__(self, text):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_urls_in_sent_messages_become_links_and_nothing_else_does(sandbox):
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    token = line.follow(channel["channelId"], name="林小美")["event"]["replyToken"]
    form_url = "http://127.0.0.1:5000/form/Xy_9-abcDEF"
    text = ("感謝您將晴天烘焙坊加入好友！請花一分鐘留下您的姓名、電話和電子郵件：\n" + form_url + "。"
            ' <script>alert(1)</script> "><img src=x onerror=alert(1)> javascript:alert(2)'
            ' https://evil.example/a"onmouseover="alert(3) ftp://files.example/x')
    LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url).reply(
        token, [{"type": "text", "text": text}])

    page = requests.get(f"{sandbox.url}/_sandbox/channels/{channel['channelId']}")
    assert page.status_code == 200
    tags = Tags(page.text).tags
    links = [attrs["href"] for tag, attrs in tags if tag == "a" and "rel" in attrs]
    # The form link (without the full stop after it), the https URL cut at the quote; not ftp, not javascript.
    assert links == [form_url, "https://evil.example/a"]
    assert [tag for tag, _ in tags if tag in ("script", "img")] == []
    assert not any(name.startswith("on") for _, attrs in tags for name in attrs)
    assert (f'<a href="{form_url}" rel="noopener noreferrer">{form_url}</a>。 &lt;script&gt;alert(1)'
            "&lt;/script&gt; &#34;&gt;&lt;img src=x onerror=alert(1)&gt; javascript:alert(2)") in page.text


def test_control_page_shows_taipei_time(sandbox, sink):
    line = sandbox.control
    channel = line.create_channel(endpoint=sink.url)
    token = line.follow(channel["channelId"], name="陳大文")["event"]["replyToken"]
    LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url).reply(
        token, [{"type": "text", "text": "歡迎"}])
    at = 1764590400  # 2025-12-01 12:00:00 UTC, 20:00 in Taipei
    line.store.run(update(messages).values(created_at=at))
    line.store.run(update(deliveries).values(at=at + 5))

    page = requests.get(f"{sandbox.url}/_sandbox/channels/{channel['channelId']}").text
    assert '<time datetime="2025-12-01T20:00:00+08:00">2025-12-01 20:00:00</time>' in page
    assert '<time datetime="2025-12-01T20:00:05+08:00">2025-12-01 20:00:05</time>' in page
    assert "12:00:0" not in page
    assert "times are Taipei time, UTC+8" in page and "When (Taipei time, UTC+8)" in page


def test_control_page_reissues_the_secret_only_when_confirmed(sandbox):
    line = sandbox.control
    channel = line.create_channel(display_name="小島咖啡")
    channel_id, old_secret = channel["channelId"], channel["channelSecret"]
    browser = requests.Session()
    # Without the "yes" ticked (a browser without JavaScript or a hand-made POST) nothing changes.
    for refused in ({}, {"confirm": ""}, {"confirm": "on"}):
        answer = browser.post(f"{sandbox.url}/_sandbox/channels/{channel_id}/reissue", data=refused)
        assert line.channel(channel_id)["channelSecret"] == old_secret
        assert answer.status_code == 200 and "Nothing changed" in answer.text and old_secret in answer.text
    still = LineClient(channel_id, old_secret, host=sandbox.url).verify_credentials()
    assert still["basicId"] == channel["basicId"]
    # The form asks for that "yes", and the browser will not submit it unticked.
    form = re.search(r'<form id="reissue".*?</form>', answer.text, re.S).group(0)
    assert re.search(r'<input type="checkbox" id="reissue_confirm" name="confirm" value="yes" required', form)
    assert '<label class="inline" for="reissue_confirm">Yes, issue a new Channel secret</label>' in form

    done = browser.post(f"{sandbox.url}/_sandbox/channels/{channel_id}/reissue", data={"confirm": "yes"})
    new_secret = line.channel(channel_id)["channelSecret"]
    assert new_secret != old_secret
    assert done.status_code == 200 and new_secret in done.text and old_secret not in done.text
    assert "The old secret no longer works" in done.text and "step 4" in done.text
    now = LineClient(channel_id, new_secret, host=sandbox.url).verify_credentials()
    assert now["basicId"] == channel["basicId"]
    with pytest.raises(LineProblem) as refused:
        LineClient(channel_id, old_secret, host=sandbox.url).verify_credentials()
    assert refused.value.code == "wrong_secret"


def test_channel_page_shows_the_basic_id_under_the_name(sandbox):
    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")
    page = requests.get(f"{sandbox.url}/_sandbox/channels/{channel['channelId']}").text
    assert re.search(r'<h1>晴天烘焙坊</h1>\s*<p class="basic-id" id="basic-id">Basic ID <strong>'
                     + re.escape(channel["basicId"]) + "</strong>", page)


# ---- the monthly quota, what users send, read marks ----------------------------------------------------------


def test_month_bounds_are_calendar_months_in_japan_time():
    from calendar import timegm

    from wizard.sandbox.control import month_bounds
    jst_midnight_dec_1 = timegm((2026, 11, 30, 15, 0, 0))  # 2026-12-01 00:00 in Japan
    assert month_bounds(jst_midnight_dec_1) == (jst_midnight_dec_1, timegm((2026, 12, 31, 15, 0, 0)))
    assert month_bounds(jst_midnight_dec_1 - 1) == (timegm((2026, 10, 31, 15, 0, 0)), jst_midnight_dec_1)
    # December rolls over into January of the next year.
    assert month_bounds(timegm((2026, 12, 20, 0, 0, 0)))[1] == timegm((2026, 12, 31, 15, 0, 0))


def test_quota_counts_pushes_that_reach_friends_this_month(sandbox):
    control = sandbox.control
    channel = control.create_channel()
    channel_id = channel["channelId"]
    line = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    assert channel["quota"] == {"type": "limited", "value": 200}  # the free plan in Taiwan
    friend = control.follow(channel_id)
    user_id = friend["user"]["userId"]
    text = [{"type": "text", "text": "您的蛋糕好了"}]

    line.reply(friend["event"]["replyToken"], text)  # replies are free
    assert line.quota_consumption() == {"totalUsage": 0}
    line.push(user_id, text + [{"type": "text", "text": "歡迎取貨"}])  # one push to one friend: one message
    key = "0b8e6b0c-6c41-4d53-9d2e-8a86a0d0b4a1"
    line.push(user_id, text, retry_key=key)
    line.push(user_id, text, retry_key=key)  # LINE's 409: already sent, not counted again
    assert line.quota_consumption() == {"totalUsage": 2}
    blocked = control.follow(channel_id)["user"]["userId"]
    control.unfollow(channel_id, blocked)
    line.push(blocked, text)  # never delivered, so not counted
    assert control.quota(channel_id)["totalUsage"] == 2

    # A push of last month (Japan time) no longer counts.
    from wizard.sandbox.control import month_bounds
    start, _ = month_bounds(time.time())
    first = control.store.row(sends.select().where(sends.c.channel_id == channel_id,
                                                   sends.c.kind == "push").order_by(sends.c.id))
    control.store.run(update(sends).where(sends.c.request_id == first["request_id"])
                      .values(created_at=start - 1))
    assert line.quota_consumption() == {"totalUsage": 1}
    assert control.quota_consumption(channel_id, at=start - 1) == 1


def test_push_at_the_monthly_limit_is_refused_and_replies_still_go(sandbox):
    control = sandbox.control
    channel = control.create_channel()
    channel_id = channel["channelId"]
    line = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    control.update(channel_id, quota=2)
    assert line.quota() == {"type": "limited", "value": 2}
    user_id = control.follow(channel_id)["user"]["userId"]
    text = [{"type": "text", "text": "hi"}]
    line.push(user_id, text)
    line.push(user_id, text)
    with pytest.raises(LineProblem) as refused:
        line.push(user_id, text)
    assert (refused.value.code, refused.value.status) == ("monthly_limit", 429)
    assert refused.value.detail == "You have reached your monthly limit."
    assert len(control.sent_messages(channel_id)) == 2  # the refused push went nowhere
    reply_token = control.say(channel_id, user_id, "還有嗎？")["event"]["replyToken"]
    line.reply(reply_token, text)  # replies are not limited
    control.update(channel_id, quota=None)  # no target limit
    assert line.quota() == {"type": "none", "value": None}
    line.push(user_id, text)
    assert line.quota_consumption() == {"totalUsage": 3}
    with pytest.raises(SandboxError):
        control.update(channel_id, quota=-1)
    with pytest.raises(SandboxError):
        control.update(channel_id, quota="many")


@pytest.mark.parametrize("kind, content_type", [
    ("image", "image/png"), ("video", "video/mp4"), ("audio", "audio/x-m4a"), ("file", "application/pdf")])
def test_content_users_send_is_served_with_its_type(sandbox, kind, content_type):
    control = sandbox.control
    channel = control.create_channel()
    line = LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url)
    user_id = control.follow(channel["channelId"])["user"]["userId"]
    message = control.send(channel["channelId"], user_id, kind)["event"]["message"]
    data, served_type = line.message_content(message["id"])
    assert served_type == content_type
    signature = {"image": b"\x89PNG\r\n\x1a\n", "video": b"\x00\x00\x00\x18ftypmp42",
                 "audio": b"\x00\x00\x00\x18ftypM4A ", "file": b"%PDF-"}[kind]
    assert data.startswith(signature)
    if kind == "file":
        assert (message["fileName"], message["fileSize"]) == ("訂購單.pdf", len(data))
    assert line.content_ready(message["id"]) is True


def test_content_given_by_the_test_and_what_has_none(sandbox):
    control = sandbox.control
    channel = control.create_channel()
    channel_id = channel["channelId"]
    line = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    user_id = control.follow(channel_id)["user"]["userId"]
    photo = control.send(channel_id, user_id, "image", content=b"\xff\xd8\xff\xe0 a jpeg",
                         content_type="image/jpeg")["event"]["message"]
    assert line.message_content(photo["id"]) == (b"\xff\xd8\xff\xe0 a jpeg", "image/jpeg")
    sheet = control.send(channel_id, user_id, "file", fileName="價目表.csv", fileSize=1000)["event"]["message"]
    data, content_type = line.message_content(sheet["id"])
    assert (len(data), sheet["fileSize"], content_type) == (1000, 1000, "text/csv")
    for kind in ("text", "sticker", "location"):
        fields = {"text": "hi"} if kind == "text" else {}
        message = control.send(channel_id, user_id, kind, **fields)["event"]["message"]
        with pytest.raises(LineProblem) as none:
            line.message_content(message["id"])
        assert (none.value.code, none.value.status) == ("not_found", 404)
    with pytest.raises(SandboxError, match="one of"):
        control.send(channel_id, user_id, "postcard")
    with pytest.raises(SandboxError, match="has no"):
        control.send(channel_id, user_id, "location", fileName="x.pdf")
    with pytest.raises(SandboxError, match="no content"):
        control.send(channel_id, user_id, "sticker", content=b"x")
    with pytest.raises(SandboxError, match="latitude"):
        control.send(channel_id, user_id, "location", latitude=91)
    control.unfollow(channel_id, user_id)
    with pytest.raises(SandboxError, match="blocked"):
        control.send(channel_id, user_id, "image")


def test_video_is_prepared_before_its_content_can_be_fetched(sandbox):
    control = sandbox.control
    channel = control.create_channel()
    channel_id = channel["channelId"]
    line = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    user_id = control.follow(channel_id)["user"]["userId"]
    video = control.send(channel_id, user_id, "video", ready=False)["event"]["message"]["id"]
    assert (line.content_status(video), line.content_ready(video)) == ("processing", False)
    with pytest.raises(LineProblem) as waiting:
        line.message_content(video)
    assert (waiting.value.code, waiting.value.status) == ("content_not_ready", 202)
    control.finish_transcoding(channel_id, video)
    assert line.content_ready(video) is True
    assert line.message_content(video)[1] == "video/mp4"
    with pytest.raises(SandboxError):
        control.finish_transcoding(channel_id, video, "done")
    image = control.send(channel_id, user_id, "image")["event"]["message"]["id"]
    with pytest.raises(SandboxError, match="only video and audio"):
        control.finish_transcoding(channel_id, image)


def test_read_marks_follow_the_chat_mode_and_read_earlier_messages_too(sandbox):
    control = sandbox.control
    channel = control.create_channel()
    channel_id = channel["channelId"]
    line = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    user_id = control.follow(channel_id)["user"]["userId"]
    first = control.say(channel_id, user_id, "你好")["event"]["message"]
    second = control.send(channel_id, user_id, "sticker")["event"]["message"]
    third = control.send(channel_id, user_id, "image")["event"]["message"]
    assert control.read_marks(channel_id) == []
    line.mark_as_read(second["markAsReadToken"])
    marks = control.read_marks(channel_id, user_id)
    assert [mark["messageId"] for mark in marks] == [first["id"], second["id"]]
    line.mark_as_read(second["markAsReadToken"])  # again: nothing changes
    assert control.read_marks(channel_id) == marks
    line.mark_as_read(third["markAsReadToken"])
    assert [mark["messageId"] for mark in control.read_marks(channel_id)] == [first["id"], second["id"], third["id"]]
    # With Chat off LINE reads messages by itself (markAsReadMode auto): events carry no token.
    control.update(channel_id, chat_mode="bot")
    assert "markAsReadToken" not in control.say(channel_id, user_id, "在嗎")["event"]["message"]


def test_json_control_api_for_messages_quota_and_read_marks(sandbox, sink):
    api = sandbox.url + "/_sandbox/api"
    channel = requests.post(f"{api}/channels", json={"endpoint": sink.url}).json()
    channel_id = channel["channelId"]
    user_id = requests.post(f"{api}/channels/{channel_id}/follow", json={}).json()["user"]["userId"]
    sent = requests.post(f"{api}/channels/{channel_id}/send", json={
        "userId": user_id, "type": "location", "title": "晴天烘焙坊", "latitude": 25.04, "longitude": 121.54})
    assert sent.status_code == 200
    assert sent.json()["event"]["message"]["title"] == "晴天烘焙坊"
    video = requests.post(f"{api}/channels/{channel_id}/send",
                          json={"type": "video", "ready": False}).json()["event"]["message"]
    assert [event["message"]["type"] for event in sink.events[1:]] == ["location", "video"]
    ready = requests.put(f"{api}/channels/{channel_id}/contents/{video['id']}/transcoding",
                         json={"status": "succeeded"}).json()
    assert (ready["transcoding"], ready["contentType"]) == ("succeeded", "video/mp4") and "data" not in ready
    refused = requests.post(f"{api}/channels/{channel_id}/send", json={"type": "image", "content": "AAAA"})
    assert refused.status_code == 400 and "content" in refused.json()["error"]
    assert requests.post(f"{api}/channels/{channel_id}/send", json={"type": "gif"}).status_code == 400

    assert requests.patch(f"{api}/channels/{channel_id}", json={"quota": 500}).json()["quota"] == {
        "type": "limited", "value": 500}
    assert requests.get(f"{api}/channels/{channel_id}/quota").json() == {
        "type": "limited", "value": 500, "totalUsage": 0}
    assert requests.patch(f"{api}/channels/{channel_id}", json={"quota": None}).json()["quota"]["type"] == "none"
    assert requests.patch(f"{api}/channels/{channel_id}", json={"quota": -5}).status_code == 400

    LineClient(channel_id, channel["channelSecret"], host=sandbox.url).mark_as_read(video["markAsReadToken"])
    marks = requests.get(f"{api}/channels/{channel_id}/read-marks", params={"userId": user_id}).json()
    assert [mark["messageId"] for mark in marks][-1] == video["id"] and len(marks) == 2


def test_control_page_sends_every_kind_and_sets_the_quota(sandbox, sink):
    browser = requests.Session()
    channel = sandbox.control.create_channel(endpoint=sink.url)
    channel_id = channel["channelId"]
    base = f"{sandbox.url}/_sandbox/channels/{channel_id}"
    user_id = sandbox.control.follow(channel_id, name="陳大文")["user"]["userId"]
    page = browser.get(base)
    assert "0 of 200 messages used this month" in page.text
    for kind in ("sticker", "image", "video", "audio", "file", "location"):
        answer = browser.post(base + "/send", data={"user_id": user_id, "type": kind, "file_name": "",
                                                    "title": ""})
        assert f"sent a {kind} message" in answer.text and "Webhook: OK 200" in answer.text
    assert [event["message"]["type"] for event in sink.events[1:]] == [
        "sticker", "image", "video", "audio", "file", "location"]
    waiting = browser.post(base + "/send", data={"user_id": user_id, "type": "audio", "processing": "on"})
    assert "transcoding processing" in waiting.text
    audio = sandbox.control.contents(channel_id)[0]
    assert (audio["type"], audio["transcoding"]) == ("audio", "processing")
    done = browser.post(f"{base}/transcoding/{audio['messageId']}", data={"status": "failed"})
    assert "transcoding failed" in done.text
    assert "a LINE user sends one of" in browser.post(base + "/send", data={"type": "postcard"},
                                                      headers={"Referer": base}).text
    limited = browser.post(base + "/quota", data={"quota": "1000"})
    assert "0 of 1000 messages used this month" in limited.text
    assert "No limit" in browser.post(base + "/quota", data={"quota": ""}).text
    assert "whole number" in browser.post(base + "/quota", data={"quota": "lots"}, headers={"Referer": base}).text
    LineClient(channel_id, channel["channelSecret"], host=sandbox.url).mark_as_read(
        sink.events[-1]["message"]["markAsReadToken"])
    assert "Marked as read by the app" in browser.get(base).text


def test_the_sandbox_page_keeps_its_own_cookie_so_the_owners_session_in_the_app_next_door_survives(app, sandbox):
    """The demo runs the app and the sandbox on one host, two ports, and a browser sends cookies by host alone:
    the sandbox's flash messages must not be kept in a cookie named like the app's session, which they would
    replace (the owner's forms in the app then said "expired")."""
    answer = requests.post(f"{sandbox.url}/_sandbox/channels", data={"display_name": "晴天烘焙坊"},
                           allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert set(answer.cookies.keys()) == {"line_sandbox_session"}
    assert app.config.get("SESSION_COOKIE_NAME", "session") not in answer.cookies
