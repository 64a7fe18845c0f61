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
from wizard.line.client import LineClient
from wizard.line.problems import LineProblem
from wizard.sandbox import Sandbox, SandboxError, create_sandbox_app
from wizard.sandbox.store import deliveries, messages

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


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
