"""Sending to many through the app's sender (LINE's, over real HTTP to the sandbox): multicast and broadcast
exactly once with retry keys, the month's limit, LINE's rate limit and errors, validate with LINE's details,
the quota and the per-unit statistics."""
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.line.client import LineClient
from wizard.line.problems import LineProblem
from wizard.models import Channel
from wizard.outgoing import sender as outgoing_sender

TEXT = [{"type": "text", "text": "週年慶全館八折"}]


def card(button_uri="https://shop.example.com/sale", text="全館八折"):
    """A Flex bubble as the template builder makes it: image, title, text, a button."""
    return {"type": "flex", "altText": "週年慶", "contents": {
        "type": "bubble",
        "hero": {"type": "image", "url": "https://shop.example.com/media/a.jpg", "size": "full"},
        "body": {"type": "box", "layout": "vertical", "contents": [
            {"type": "text", "text": "週年慶", "weight": "bold"}, {"type": "text", "text": text}]},
        "footer": {"type": "box", "layout": "vertical", "contents": [
            {"type": "button", "action": {"type": "uri", "label": "立即選購", "uri": button_uri}}]}}}


@pytest.fixture
def shop_line(app, sandbox, make_shop):
    """A shop's saved channel on a sandbox channel: (sandbox channel, call(method, *args) through the app's
    registered sender with the saved Channel row)."""
    slug, _ = make_shop()
    created = sandbox.control.create_channel(display_name="晴天烘焙坊")
    made = make_channel(app, slug, channel_id=created["channelId"], secret=created["channelSecret"],
                        bot_user_id=created["botUserId"])

    def call(method, *args, **kwargs):
        with app.app_context():
            channel = db.session.get(Channel, made["id"])
            return getattr(outgoing_sender.current(), method)(channel, *args, **kwargs)
    return created, call


def problem_of(call, *args, **kwargs) -> LineProblem:
    with pytest.raises(LineProblem) as caught:
        call(*args, **kwargs)
    return caught.value


def friends(sandbox, channel, count):
    return sandbox.control.make_friends(channel["channelId"], count)


def received(sandbox, channel):
    """{user_id: [texts or alt texts]} of what each user received."""
    got = {}
    for message in sandbox.control.sent_messages(channel["channelId"]):
        if message["delivered"]:
            body = message["message"]
            got.setdefault(message["to"], []).append(body.get("text") or body.get("altText"))
    return got


def test_multicast_reaches_each_friend_once_even_when_repeated(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 3)
    sandbox.control.unfollow(channel["channelId"], users[2])
    stranger = "U" + "0" * 32  # never followed this account: LINE skips it
    key = str(uuid.uuid4())
    first = call("multicast", users + [stranger], TEXT, key, "sale_2026")
    assert first == sandbox.control.sends(channel["channelId"])[0]["requestId"]
    # The same key again (a worker that died before recording the answer): LINE's 409, counted as sent.
    again = call("multicast", users + [stranger], TEXT, key, "sale_2026")
    assert again == first
    assert received(sandbox, channel) == {users[0]: ["週年慶全館八折"], users[1]: ["週年慶全館八折"]}
    assert call("quota") == {"limit": 200, "used": 2}
    # A new key is a new send.
    assert call("multicast", users[:1], TEXT, str(uuid.uuid4())) != first
    assert received(sandbox, channel)[users[0]] == ["週年慶全館八折", "週年慶全館八折"]


def test_broadcast_reaches_every_friend_once_and_counts_each(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 4)
    sandbox.control.unfollow(channel["channelId"], users[3])
    key = str(uuid.uuid4())
    first = call("broadcast", [card()], key)
    assert call("broadcast", [card()], key) == first
    assert received(sandbox, channel) == {user: ["週年慶"] for user in users[:3]}
    assert call("quota") == {"limit": 200, "used": 3}


def test_a_send_over_the_months_limit_is_refused_whole_and_final(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 5)
    sandbox.control.update(channel["channelId"], quota=4)
    problem = problem_of(call, "multicast", users, TEXT, str(uuid.uuid4()))
    assert (problem.code, problem.status, problem.detail) == (
        "monthly_limit", 429, "You have reached your monthly limit.")
    assert outgoing_sender.current().retryable(problem) is False
    assert "limit" in problem.message
    assert received(sandbox, channel) == {}
    assert problem_of(call, "broadcast", TEXT, str(uuid.uuid4())).code == "monthly_limit"
    # Four fit: sent, and then not one more.
    call("multicast", users[:4], TEXT, str(uuid.uuid4()))
    assert call("quota") == {"limit": 4, "used": 4}
    assert problem_of(call, "multicast", users[4:], TEXT, str(uuid.uuid4())).code == "monthly_limit"
    sandbox.control.set_plan(channel["channelId"], "none")
    assert call("quota") == {"limit": None, "used": 4}
    call("multicast", users[4:], TEXT, str(uuid.uuid4()))
    assert len(received(sandbox, channel)) == 5


def test_rate_limit_and_server_errors_are_retried_with_the_same_key(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 2)
    key = str(uuid.uuid4())
    sandbox.control.fail(channel["channelId"], 429, times=1, retry_after=30)
    problem = problem_of(call, "multicast", users, TEXT, key)
    assert (problem.code, problem.status, problem.retry_after) == ("rate_limited", 429, 30)
    assert outgoing_sender.current().retryable(problem) is True
    sandbox.control.fail(channel["channelId"], 500, times=1)
    problem = problem_of(call, "multicast", users, TEXT, key)
    assert (problem.code, problem.status) == ("line_error", 500)
    assert outgoing_sender.current().retryable(problem) is True
    sandbox.control.fail(channel["channelId"], 503, times=1)
    assert problem_of(call, "broadcast", TEXT, key).status == 503
    # A refused request does not use up its key: the retry sends, once.
    sent = call("multicast", users, TEXT, key)
    assert call("multicast", users, TEXT, key) == sent
    assert received(sandbox, channel) == {user: ["週年慶全館八折"] for user in users}


def test_validate_gives_lines_details_per_field(sandbox, shop_line):
    channel, call = shop_line
    assert call("validate", "multicast", [card(), {"type": "text", "text": "$ 早安", "emojis": [
        {"index": 0, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}]}]) == []
    broken = card(button_uri="javascript:alert(1)", text="")
    broken["contents"]["hero"]["url"] = "http://shop.example.com/a.jpg"
    assert call("validate", "broadcast", [broken]) == [
        {"property": "messages[0].contents.hero.url", "message": "must be a valid HTTPS URL"},
        {"property": "messages[0].contents.body.contents[1].text", "message": "May not be empty"},
        {"property": "messages[0].contents.footer.contents[0].action.uri", "message": "invalid uri scheme"},
    ]
    carousel = {"type": "flex", "altText": "新品", "contents": {"type": "carousel", "contents": [
        card()["contents"]] * 13}}
    assert call("validate", "push", [carousel]) == [
        {"property": "messages[0].contents.contents", "message": "Size must be between 1 and 12"}]
    assert call("validate", "reply", TEXT * 6) == [
        {"property": "messages", "message": "Size must be between 1 and 5"}]
    # Fields the SDK's models would refuse before sending still reach LINE, which names them.
    assert call("validate", "narrowcast", [{"type": "text"}, {"type": "image", "originalContentUrl":
                                                              "https://shop.example.com/a.jpg"}]) == [
        {"property": "messages[0].text", "message": "must be specified"},
        {"property": "messages[1].previewImageUrl", "message": "must be specified"}]
    emoji = call("validate", "push", [{"type": "text", "text": "早安 $", "emojis": [
        {"index": 0, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}]}])
    assert emoji == [{"property": "messages[0].emojis[0].index",
                      "message": "The character at the index must be '$'"}]
    # LINE cannot be reached: that is a failure to retry, not a verdict on the messages.
    sandbox.control.fail(channel["channelId"], 500, times=1)
    assert problem_of(call, "validate", "push", TEXT).code == "line_error"


def test_multicast_of_invalid_messages_names_the_fields_and_sends_nothing(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 2)
    problem = problem_of(call, "multicast", users, [card(text="")], str(uuid.uuid4()))
    assert (problem.code, problem.status) == ("messages_invalid", 400)
    assert problem.details == [{"property": "messages[0].contents.body.contents[1].text",
                                "message": "May not be empty"}]
    assert outgoing_sender.current().retryable(problem) is False
    assert received(sandbox, channel) == {}


def test_statistics_of_a_unit_are_impressions_and_clicks(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 120)
    call("multicast", users[:100], [card()], str(uuid.uuid4()), "plan_7")
    call("multicast", users[100:], [card()], str(uuid.uuid4()), "plan_7")
    call("multicast", users[:10], TEXT, str(uuid.uuid4()), "plan_8")
    today = datetime.now(timezone(timedelta(hours=9))).date()
    stats = call("statistics", "plan_7", today - timedelta(days=13), today)
    assert 0 < stats["unique_impressions"] <= 120 and stats["impressions"] >= stats["unique_impressions"]
    assert 0 < stats["unique_clicks"] <= stats["unique_impressions"] and stats["clicks"] >= stats["unique_clicks"]
    assert call("statistics", "plan_7", today - timedelta(days=13), today) == stats  # the same sends, the same
    assert call("statistics", "plan_8", today, today)["clicks"] == 0  # a text has nothing to click
    assert call("statistics", "plan_9", today, today) == {
        "impressions": 0, "unique_impressions": 0, "clicks": 0, "unique_clicks": 0}
    # Days before the sends count nothing; a span longer than LINE's 31 days is cut, not refused.
    assert call("statistics", "plan_7", date(2026, 1, 1), date(2026, 1, 2))["impressions"] == 0
    assert call("statistics", "plan_7", today - timedelta(days=60), today)["impressions"] == 0
    client = LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url)
    assert client.aggregation_units() == ["plan_7", "plan_8"]


def test_a_bad_unit_name_is_refused_before_anything_goes(sandbox, shop_line):
    channel, call = shop_line
    users = friends(sandbox, channel, 1)
    problem = problem_of(call, "multicast", users, TEXT, str(uuid.uuid4()), "週年慶")
    assert (problem.status, problem.details) == (400, [{"property": "customAggregationUnits[0]",
                                                         "message": 'must match "^[a-zA-Z0-9_]{1,30}$"'}])
    assert received(sandbox, channel) == {}
