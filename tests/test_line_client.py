"""The LINE client against the sandbox over real HTTP: every call, and every way LINE can fail."""
import logging
import time
import uuid

import pytest

from tests.servers import free_port
from tests.sink import Sink
from wizard.line.client import LineClient, client_for
from wizard.line.problems import LineProblem


@pytest.fixture
def channel(sandbox):
    return sandbox.control.create_channel(display_name="晴天烘焙坊")


@pytest.fixture
def line_client(sandbox, channel):
    # Generous: these tests are about LINE's answers, not its speed (two suites side by side once made a call
    # wait over 3 s). test_timeout sets its own short bound.
    return LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url, timeout=10.0)


def problem_of(call, *args, **kwargs) -> LineProblem:
    with pytest.raises(LineProblem) as caught:
        call(*args, **kwargs)
    return caught.value


def test_verify_credentials_shows_the_account_the_owner_will_recognise(sandbox, channel, line_client):
    info = line_client.verify_credentials()
    assert info["userId"] == channel["botUserId"] and info["basicId"] == channel["basicId"]
    assert info["displayName"] == "晴天烘焙坊"
    assert (info["chatMode"], info["markAsReadMode"]) == ("chat", "manual")
    assert info["premiumId"] is None and info["pictureUrl"].startswith(sandbox.url)
    # The verification issued a stateless token: nothing else of the shop's is revoked by it.
    assert sandbox.control.token_issues(channel["channelId"]) == 1


def test_wrong_secret_is_named(sandbox, channel):
    client = LineClient(channel["channelId"], "0" * 32, host=sandbox.url)
    problem = problem_of(client.verify_credentials)
    assert (problem.code, problem.status) == ("wrong_secret", 400)
    assert problem.detail == "Invalid 'client_credentials'."
    assert "Channel secret" in problem.message


def test_unknown_channel_is_named(sandbox, channel):
    stranger = LineClient("1999999999", channel["channelSecret"], host=sandbox.url)
    problem = problem_of(stranger.verify_credentials)
    assert (problem.code, problem.status) == ("unknown_channel", 400)


def test_reissued_secret_stops_the_old_one(sandbox, channel, line_client):
    line_client.verify_credentials()
    new_secret = sandbox.control.update(channel["channelId"], reissue_secret=True)["channelSecret"]
    assert problem_of(line_client.verify_credentials).code == "wrong_secret"
    info = LineClient(channel["channelId"], new_secret, host=sandbox.url).verify_credentials()
    assert info["basicId"] == channel["basicId"]


def test_line_down_is_unreachable_and_fails_fast(channel):
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    problem = problem_of(LineClient(channel["channelId"], channel["channelSecret"], host=closed).bot_info)
    assert problem.code == "line_unreachable" and problem.status is None
    assert time.monotonic() - started < 1


def test_rate_limited(sandbox, channel, line_client):
    line_client.issue_token()
    sandbox.control.fail(channel["channelId"], 429)
    problem = problem_of(line_client.bot_info)
    assert (problem.code, problem.status) == ("rate_limited", 429)
    assert problem.detail == "The API rate limit has been exceeded. Try again later."
    sandbox.control.heal(channel["channelId"])
    assert line_client.bot_info()["basicId"] == channel["basicId"]


def test_rate_limited_while_issuing_a_token(sandbox, channel, line_client):
    sandbox.control.fail(channel["channelId"], 429, times=1)
    assert problem_of(line_client.verify_credentials).code == "rate_limited"
    assert line_client.verify_credentials()["userId"] == channel["botUserId"]


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_keep_lines_status(sandbox, channel, line_client, status):
    sandbox.control.fail(channel["channelId"], status)
    problem = problem_of(line_client.get_webhook_endpoint)
    assert (problem.code, problem.status) == ("line_error", status)


def test_timeout(sandbox, channel):
    sandbox.control.fail(channel["channelId"], None, delay=1.0)
    client = LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url, timeout=0.3)
    started = time.monotonic()
    assert problem_of(client.verify_credentials).code == "timeout"
    assert time.monotonic() - started < 0.9


def test_token_is_cached_across_calls_and_clients(sandbox, channel, line_client):
    line_client.bot_info()
    problem_of(line_client.get_webhook_endpoint)
    LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url).bot_info()
    assert sandbox.control.token_issues(channel["channelId"]) == 1
    # Verifying credentials always asks LINE again (the secret may have been reissued since).
    line_client.verify_credentials()
    assert sandbox.control.token_issues(channel["channelId"]) == 2


def test_token_near_expiry_is_renewed(sandbox, channel, line_client):
    sandbox.control.token_ttl = 30  # inside the client's one-minute margin: never worth reusing
    line_client.bot_info()
    line_client.bot_info()
    assert sandbox.control.token_issues(channel["channelId"]) == 2


def test_rejected_cached_token_is_dropped_and_issued_again_once(sandbox, channel, line_client):
    line_client.bot_info()
    sandbox.control.revoke_tokens(channel["channelId"])
    assert line_client.bot_info()["basicId"] == channel["basicId"]
    assert sandbox.control.token_issues(channel["channelId"]) == 2
    # When LINE keeps refusing, the client gives up after that one new token instead of looping.
    sandbox.control.fail(channel["channelId"], 401)
    assert problem_of(line_client.bot_info).code == "invalid_token"
    assert sandbox.control.token_issues(channel["channelId"]) == 2


def test_webhook_endpoint_get_set(sandbox, channel, line_client, sink):
    problem = problem_of(line_client.get_webhook_endpoint)
    assert (problem.code, problem.status) == ("endpoint_not_set", 404)
    assert problem.detail == "Webhook endpoint not found"
    line_client.set_webhook_endpoint(sink.url)
    assert line_client.get_webhook_endpoint() == {"endpoint": sink.url, "active": True}
    sandbox.control.update(channel["channelId"], webhook_active=False)
    assert line_client.get_webhook_endpoint() == {"endpoint": sink.url, "active": False}


@pytest.mark.parametrize("url, code", [
    ("http://crm.example.com/line/webhook/abc", "url_not_https"),
    ("https://crm.example.com/" + "a" * 500, "invalid_url"),
    ("not a url", "invalid_url"),
    ("ftp://crm.example.com/hook", "invalid_url"),
])
def test_set_webhook_endpoint_refusals(line_client, url, code):
    assert problem_of(line_client.set_webhook_endpoint, url).code == code
    assert problem_of(line_client.get_webhook_endpoint).code == "endpoint_not_set"


def test_https_endpoint_is_accepted(line_client):
    line_client.set_webhook_endpoint("https://crm.example.com/line/webhook/abc")
    assert line_client.get_webhook_endpoint()["endpoint"] == "https://crm.example.com/line/webhook/abc"


def test_webhook_test_really_calls_the_url(sandbox, channel, line_client, sink):
    assert problem_of(line_client.test_webhook_endpoint).code == "endpoint_not_set"
    line_client.set_webhook_endpoint(sink.url)
    result = line_client.test_webhook_endpoint()
    assert result["success"] is True and result["statusCode"] == 200
    assert (result["reason"], result["detail"]) == ("OK", "200")
    assert result["timestamp"].endswith("Z")
    assert sink.bodies == [{"destination": channel["botUserId"], "events": []}]
    assert sink.verified(channel["channelSecret"])


def test_webhook_test_reports_what_went_wrong(sandbox, channel, line_client):
    not_found = Sink(status=404)
    slow = Sink(delay=1.0)
    try:
        result = line_client.test_webhook_endpoint(not_found.url)
        assert (result["success"], result["statusCode"], result["reason"], result["detail"]) == (
            False, 404, "ERROR_STATUS_CODE", "404")
        result = line_client.test_webhook_endpoint(f"http://127.0.0.1:{free_port()}/hook")
        assert (result["success"], result["statusCode"], result["reason"]) == (False, 0, "COULD_NOT_CONNECT")
        sandbox.control.webhook_timeout = 0.3  # LINE waits 2 s; the sandbox can be told to give up sooner
        result = line_client.test_webhook_endpoint(slow.url)
        assert (result["success"], result["statusCode"], result["reason"]) == (False, 0, "REQUEST_TIMEOUT")
        assert problem_of(line_client.test_webhook_endpoint, "http://crm.example.com/hook").code == "url_not_https"
    finally:
        not_found.stop()
        slow.stop()


def test_webhook_test_is_limited_to_60_an_hour(channel, line_client):
    closed = f"http://127.0.0.1:{free_port()}/hook"
    for _ in range(60):
        line_client.test_webhook_endpoint(closed)
    problem = problem_of(line_client.test_webhook_endpoint, closed)
    assert (problem.code, problem.status) == ("rate_limited", 429)


def test_profile(sandbox, channel, line_client):
    user = sandbox.control.follow(channel["channelId"], name="林小美")["user"]
    profile = line_client.get_profile(user["userId"])
    assert profile["userId"] == user["userId"] and profile["displayName"] == "林小美"
    assert profile["language"] == "zh-TW" and profile["pictureUrl"].startswith("http")
    assert profile["statusMessage"] is None
    assert problem_of(line_client.get_profile, "U" + "0" * 32).code == "not_found"
    sandbox.control.unfollow(channel["channelId"], user["userId"])
    problem = problem_of(line_client.get_profile, user["userId"])
    assert (problem.code, problem.status) == ("not_found", 404)


def test_reply_reaches_the_customer_once(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    said = sandbox.control.say(channel["channelId"], user_id, "我想訂蛋糕")
    token = said["event"]["replyToken"]
    answer = line_client.reply(token, [{"type": "text", "text": "好的，請問哪一天？"}])
    assert answer["sentMessages"][0]["id"].isdigit()
    sent = sandbox.control.sent_messages(channel["channelId"])
    assert [(m["kind"], m["to"], m["message"]["text"]) for m in sent] == [
        ("reply", said["user"]["userId"], "好的，請問哪一天？")]
    problem = problem_of(line_client.reply, token, [{"type": "text", "text": "again"}])
    assert (problem.code, problem.status) == ("invalid_reply_token", 400)
    assert problem.detail == "Invalid reply token"


def test_expired_reply_token(sandbox, channel, line_client):
    token = sandbox.control.follow(channel["channelId"])["event"]["replyToken"]
    sandbox.control.expire_reply_tokens(channel["channelId"])
    assert problem_of(line_client.reply, token, [{"type": "text", "text": "hi"}]).code == "invalid_reply_token"
    assert sandbox.control.sent_messages(channel["channelId"]) == []


def test_invalid_message_keeps_lines_words(sandbox, channel, line_client):
    token = sandbox.control.follow(channel["channelId"])["event"]["replyToken"]
    problem = problem_of(line_client.reply, token, [{"type": "text", "text": ""}])
    assert (problem.code, problem.status) == ("messages_invalid", 400)
    assert problem.detail == "The request body has 1 error(s)"
    assert problem.details == [{"property": "messages[0].text", "message": "May not be empty"}]
    # Nothing was sent, so the token is still good.
    line_client.reply(token, [{"type": "text", "text": "歡迎！"}])


def test_push_with_retry_key_is_delivered_once(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    key = str(uuid.uuid4())
    first = line_client.push(user_id, [{"type": "text", "text": "您的蛋糕好了"}], retry_key=key)
    again = line_client.push(user_id, [{"type": "text", "text": "您的蛋糕好了"}], retry_key=key)
    assert again["sentMessages"][0]["id"] == first["sentMessages"][0]["id"]
    sent = sandbox.control.sent_messages(channel["channelId"], user_id)
    assert [(m["kind"], m["message"]["text"], m["delivered"]) for m in sent] == [
        ("push", "您的蛋糕好了", True)]


def test_push_to_unknown_or_blocked_users(sandbox, channel, line_client):
    problem = problem_of(line_client.push, "U" + "1" * 32, [{"type": "text", "text": "hi"}])
    assert (problem.code, problem.status, problem.detail) == ("not_found", 400, "Failed to send messages")
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    sandbox.control.unfollow(channel["channelId"], user_id)
    line_client.push(user_id, [{"type": "text", "text": "hi"}])  # LINE answers 200 and drops it
    assert [m["delivered"] for m in sandbox.control.sent_messages(channel["channelId"])] == [False]


def test_secrets_and_tokens_never_reach_the_logs(sandbox, channel, line_client, caplog):
    caplog.set_level(logging.DEBUG)
    token = line_client.issue_token()
    line_client.verify_credentials()
    sandbox.control.fail(channel["channelId"], 429)
    problem_of(line_client.bot_info)
    problem_of(LineClient(channel["channelId"], "f" * 32, host=sandbox.url).issue_token, fresh=True)
    assert "rate_limited" in caplog.text
    for secret in (channel["channelSecret"], "f" * 32, token):
        assert secret not in caplog.text


def test_client_for_a_saved_channel_uses_the_apps_settings(app, sandbox, channel, make_shop):
    from wizard import crypto
    from wizard.extensions import db
    from wizard.models import Channel, Shop
    slug, _ = make_shop()
    app.config["LINE_TIMEOUT"] = 3.0
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        saved = Channel(shop_id=shop.id, channel_id=channel["channelId"], webhook_token=crypto.new_token(32))
        saved.secret = channel["channelSecret"]
        db.session.add(saved)
        db.session.commit()
        db.session.expunge_all()
        reloaded = db.session.scalar(db.select(Channel).filter_by(channel_id=channel["channelId"]))
        client = client_for(reloaded)
        assert (client.host, client.timeout) == (sandbox.url, 3.0)
        assert client.verify_credentials()["basicId"] == channel["basicId"]


# ---- quota, message content, read marks ----------------------------------------------------------------------


def test_quota_and_its_consumption(sandbox, channel, line_client):
    assert line_client.quota() == {"type": "limited", "value": 200}
    assert line_client.quota_consumption() == {"totalUsage": 0}
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    line_client.push(user_id, [{"type": "text", "text": "新品上市"}])
    assert line_client.quota_consumption() == {"totalUsage": 1}
    sandbox.control.update(channel["channelId"], quota=None)
    assert line_client.quota() == {"type": "none", "value": None}


def test_monthly_limit_is_not_a_rate_limit(sandbox, channel, line_client):
    """LINE answers 429 for both; only the rate limit passes with waiting, the monthly limit lasts the month."""
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    sandbox.control.update(channel["channelId"], quota=0)
    problem = problem_of(line_client.push, user_id, [{"type": "text", "text": "hi"}])
    assert (problem.code, problem.status, problem.retry_after) == ("monthly_limit", 429, None)
    assert "limit" in problem.message
    sandbox.control.fail(channel["channelId"], 429, times=1, retry_after=30)
    problem = problem_of(line_client.push, user_id, [{"type": "text", "text": "hi"}])
    assert (problem.code, problem.retry_after) == ("rate_limited", 30)


def test_message_content_with_its_type(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    image = sandbox.control.send(channel["channelId"], user_id, "image")["event"]["message"]["id"]
    data, content_type = line_client.message_content(image)
    assert content_type == "image/png" and data.startswith(b"\x89PNG")
    assert data == sandbox.control.content(channel["channelId"], image)["data"]
    assert line_client.content_ready(image) is True
    problem = problem_of(line_client.message_content, "100000000000000000")
    assert (problem.code, problem.status) == ("not_found", 404)
    assert problem_of(line_client.content_ready, "100000000000000000").code == "not_found"


def test_message_content_above_the_cap_is_refused(sandbox, channel):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    big = sandbox.control.send(channel["channelId"], user_id, "file", fileName="menu.pdf",
                               fileSize=4096)["event"]["message"]["id"]
    capped = LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url, content_max_bytes=4095)
    problem = problem_of(capped.message_content, big)
    assert problem.code == "content_too_large" and "4096 bytes" in problem.detail
    assert "too large" in problem.message
    roomy = LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url, content_max_bytes=4096)
    assert len(roomy.message_content(big)[0]) == 4096


def test_the_cap_comes_from_the_apps_settings(app, sandbox, channel):
    from wizard.line.client import client_with
    assert app.config["LINE_CONTENT_MAX_BYTES"] == 20 * 1024 * 1024
    app.config["LINE_CONTENT_MAX_BYTES"] = 10
    with app.app_context():
        client = client_with(channel["channelId"], channel["channelSecret"])
    assert client.content_max_bytes == 10
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    audio = sandbox.control.send(channel["channelId"], user_id, "audio")["event"]["message"]["id"]
    assert problem_of(client.message_content, audio).code == "content_too_large"


def test_video_content_waits_for_its_preparation(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    video = sandbox.control.send(channel["channelId"], user_id, "video", ready=False)["event"]["message"]["id"]
    assert (line_client.content_status(video), line_client.content_ready(video)) == ("processing", False)
    problem = problem_of(line_client.message_content, video)
    assert (problem.code, problem.status) == ("content_not_ready", 202)
    sandbox.control.finish_transcoding(channel["channelId"], video)
    assert line_client.content_ready(video) is True
    assert line_client.message_content(video)[1] == "video/mp4"
    failed = sandbox.control.send(channel["channelId"], user_id, "audio", ready=False)["event"]["message"]["id"]
    sandbox.control.finish_transcoding(channel["channelId"], failed, "failed")
    assert (line_client.content_status(failed), line_client.content_ready(failed)) == ("failed", False)
    assert problem_of(line_client.message_content, failed).code == "not_found"


def test_content_calls_fail_like_every_other_call(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    image = sandbox.control.send(channel["channelId"], user_id, "image")["event"]["message"]["id"]
    line_client.issue_token()
    sandbox.control.revoke_tokens(channel["channelId"])  # a cached token LINE forgot is replaced once
    assert line_client.message_content(image)[1] == "image/png"
    sandbox.control.fail(channel["channelId"], 503, times=1)
    assert (problem_of(line_client.message_content, image).code, line_client.message_content(image)[1]) == (
        "line_error", "image/png")
    sandbox.control.fail(channel["channelId"], 429, times=1)
    assert problem_of(line_client.content_status, image).code == "rate_limited"


def test_mark_as_read(sandbox, channel, line_client):
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    message = sandbox.control.say(channel["channelId"], user_id, "請問營業時間？")["event"]["message"]
    assert line_client.mark_as_read(message["markAsReadToken"]) is None
    assert [mark["messageId"] for mark in sandbox.control.read_marks(channel["channelId"], user_id)] == [
        message["id"]]
    problem = problem_of(line_client.mark_as_read, "not-a-token")
    assert (problem.code, problem.status, problem.detail) == ("invalid_read_token", 400, "Invalid markAsReadToken")
    # A token only works for the bot that received it.
    other = sandbox.control.create_channel()
    stranger = LineClient(other["channelId"], other["channelSecret"], host=sandbox.url)
    assert problem_of(stranger.mark_as_read, message["markAsReadToken"]).code == "invalid_read_token"
    assert problem_of(line_client.mark_as_read, None).code == "invalid_read_token"
