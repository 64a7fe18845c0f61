"""The sandbox as LINE sending to many: friends made in bulk, plans and their monthly limit, narrowcast's
options and progress, retry keys under concurrency, and the control page showing what each user received."""
import threading
import time
import uuid

import pytest
import requests

from wizard.line.client import LineClient
from wizard.line.problems import LineProblem
from wizard.sandbox import SandboxError

TEXT = [{"type": "text", "text": "母親節蛋糕預購開始"}]
CARD = {"type": "flex", "altText": "母親節蛋糕", "contents": {"type": "carousel", "contents": [{
    "type": "bubble",
    "hero": {"type": "image", "url": "https://shop.example.com/media/cake.jpg"},
    "body": {"type": "box", "layout": "vertical", "contents": [{"type": "text", "text": "草莓鮮奶油 6 吋"}]},
    "footer": {"type": "box", "layout": "vertical", "contents": [
        {"type": "button", "action": {"type": "uri", "label": "預購", "uri": "https://shop.example.com/cake"}}]},
}]}}


@pytest.fixture
def channel(sandbox):
    return sandbox.control.create_channel(display_name="晴天烘焙坊")


@pytest.fixture
def line(sandbox, channel):
    return LineClient(channel["channelId"], channel["channelSecret"], host=sandbox.url)


def api(sandbox, channel_id, path=""):
    return f"{sandbox.url}/_sandbox/api/channels/{channel_id}{path}"


def token(sandbox, channel):
    return requests.post(sandbox.url + "/oauth2/v3/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": channel["channelId"],
        "client_secret": channel["channelSecret"]}).json()["access_token"]


def test_many_friends_at_once_through_the_json_api(sandbox, channel):
    made = requests.post(api(sandbox, channel["channelId"], "/friends"), json={"count": 12_000}, timeout=60)
    assert made.status_code == 201
    user_ids = made.json()["userIds"]
    assert len(user_ids) == len(set(user_ids)) == 12_000
    assert sandbox.control.friend_count(channel["channelId"]) == 12_000
    assert sandbox.control.user(channel["channelId"], user_ids[-1])["following"] is True
    shown = requests.get(api(sandbox, channel["channelId"]), params={"limit": 5}, timeout=10).json()
    assert (shown["friends"], len(shown["users"])) == (12_000, 5)
    for bad in (0, -1, "many", None, True):
        refused = requests.post(api(sandbox, channel["channelId"], "/friends"), json={"count": bad}, timeout=10)
        assert refused.status_code == 400 and "count" in refused.json()["error"]
    assert sandbox.control.friend_count(channel["channelId"]) == 12_000


def test_plans_set_the_monthly_limit(sandbox, channel, line):
    assert line.quota() == {"type": "limited", "value": 200}
    for plan, quota in (("3000", {"type": "limited", "value": 3000}), ("6000", {"type": "limited", "value": 6000}),
                        ("none", {"type": "none", "value": None}), ("free", {"type": "limited", "value": 200})):
        answer = requests.put(api(sandbox, channel["channelId"], "/plan"), json={"plan": plan}, timeout=10)
        assert answer.status_code == 200 and line.quota() == quota
    refused = requests.put(api(sandbox, channel["channelId"], "/plan"), json={"plan": "gold"}, timeout=10)
    assert refused.status_code == 400 and "free, 3000, 6000, none" in refused.json()["error"]
    assert line.quota() == {"type": "limited", "value": 200}


def test_the_free_plan_stops_a_broadcast_at_200_friends(sandbox, channel, line):
    users = sandbox.control.make_friends(channel["channelId"], 201)
    refused = pytest.raises(LineProblem, line.broadcast, TEXT)
    assert refused.value.code == "monthly_limit"
    assert sandbox.control.sent_messages(channel["channelId"]) == []
    sandbox.control.unfollow(channel["channelId"], users[0])  # 200 friends now: exactly the free plan
    line.broadcast(TEXT)
    assert line.quota_consumption() == {"totalUsage": 200}
    assert pytest.raises(LineProblem, line.push, users[1], TEXT).value.code == "monthly_limit"


def test_one_retry_key_sent_twice_at_once_delivers_once(sandbox, channel, line):
    users = sandbox.control.make_friends(channel["channelId"], 50)
    key, answers = str(uuid.uuid4()), []

    def send():
        answers.append(line.multicast(users, TEXT, retry_key=key))
    racers = [threading.Thread(target=send) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert len(answers) == 4 and len(set(answers)) == 1
    assert len(sandbox.control.sent_messages(channel["channelId"])) == 50
    assert line.quota_consumption() == {"totalUsage": 50}


def test_a_retry_key_is_good_for_24_hours(sandbox, channel, line):
    from sqlalchemy import update

    from wizard.sandbox.store import sends
    users = sandbox.control.make_friends(channel["channelId"], 2)
    key = str(uuid.uuid4())
    first = line.multicast(users, TEXT, retry_key=key)
    sandbox.control.store.run(update(sends).values(created_at=sends.c.created_at - 24 * 3600 - 1))
    assert line.multicast(users, TEXT, retry_key=key) != first  # a day later LINE forgot the key: sent again
    assert len(sandbox.control.sent_messages(channel["channelId"])) == 4


def test_narrowcast_limits_quota_and_progress(sandbox, channel):
    control = sandbox.control
    users = control.make_friends(channel["channelId"], 10)
    control.unfollow(channel["channelId"], users[0])
    auth = {"Authorization": f"Bearer {token(sandbox, channel)}"}
    narrowcast = sandbox.url + "/v2/bot/message/narrowcast"

    def progress(answer):
        return requests.get(sandbox.url + "/v2/bot/message/progress/narrowcast", headers=auth, timeout=10,
                            params={"requestId": answer.headers["X-Line-Request-Id"]}).json()

    everyone = requests.post(narrowcast, headers=auth, json={"messages": TEXT}, timeout=10)
    assert everyone.status_code == 202
    assert {k: progress(everyone)[k] for k in ("phase", "successCount", "targetCount")} == {
        "phase": "succeeded", "successCount": 9, "targetCount": 9}
    control.update(channel["channelId"], quota=13)  # 9 used, 4 left
    up_to = requests.post(narrowcast, headers=auth, timeout=10, json={
        "messages": TEXT, "limit": {"upToRemainingQuota": True}})
    assert progress(up_to)["successCount"] == 4 and control.quota_consumption(channel["channelId"]) == 13
    control.update(channel["channelId"], quota=15)
    whole_or_nothing = requests.post(narrowcast, headers=auth, timeout=10, json={
        "messages": TEXT, "limit": {"upToRemainingQuota": True, "forbidPartialDelivery": True}})
    assert {k: progress(whole_or_nothing)[k] for k in ("phase", "errorCode", "successCount")} == {
        "phase": "failed", "errorCode": 5, "successCount": 0}
    assert control.quota_consumption(channel["channelId"]) == 13
    # Again to whom the first narrowcast reached, at most 2 of them.
    control.set_plan(channel["channelId"], "none")
    again = requests.post(narrowcast, headers=auth, timeout=10, json={
        "messages": TEXT, "recipient": {"type": "redelivery",
                                        "requestId": everyone.headers["X-Line-Request-Id"]}, "limit": {"max": 2}})
    assert progress(again)["successCount"] == 2
    for refused in ({"filter": {"demographic": {"type": "gender", "oneOf": ["female"]}}},
                    {"recipient": {"type": "audience", "audienceGroupId": 1}},
                    {"limit": {"forbidPartialDelivery": True}}, {"limit": {"max": 0}}):
        answer = requests.post(narrowcast, headers=auth, timeout=10, json={"messages": TEXT, **refused})
        assert answer.status_code == 400 and answer.json()["details"], refused
    unknown = requests.get(sandbox.url + "/v2/bot/message/progress/narrowcast", headers=auth, timeout=10,
                           params={"requestId": str(uuid.uuid4())})
    assert unknown.status_code == 404


def test_the_control_page_shows_what_each_user_received(sandbox, channel, line):
    browser = requests.Session()
    base = f"{sandbox.url}/_sandbox/channels/{channel['channelId']}"
    made = browser.post(base + "/friends", data={"count": "60"})
    assert "60 users added the account" in made.text and "60 friends; the newest 50 of 60 users" in made.text
    users = [user["userId"] for user in sandbox.control.users(channel["channelId"])]
    line.multicast(users[:2], [CARD, TEXT[0]], retry_key=str(uuid.uuid4()), unit="mothers_day")
    sandbox.control.unfollow(channel["channelId"], users[1])
    line.broadcast([{"type": "text", "text": "今天公休"}])
    page = browser.get(f"{base}/users/{users[0]}")
    assert page.status_code == 200
    for seen in ("母親節蛋糕", "草莓鮮奶油 6 吋", "[預購]", "https://shop.example.com/cake", "母親節蛋糕預購開始",
                 "今天公休", "multicast", "broadcast"):
        assert seen in page.text, seen
    blocked = browser.get(f"{base}/users/{users[1]}")
    assert "母親節蛋糕預購開始" in blocked.text and "今天公休" not in blocked.text
    assert "blocked the account" in blocked.text
    stranger = browser.get(f"{base}/users/U{'0' * 32}", headers={"Referer": base})
    assert "never followed this account" in stranger.text
    found = browser.get(f"{base}/user", params={"user_id": users[0]})
    assert found.url.endswith(f"/users/{users[0]}")
    channel_page = browser.get(base)
    assert "mothers_day" in channel_page.text and "2 of 2" in channel_page.text
    assert "received 3" in channel_page.text  # users[0]: two from the multicast, one broadcast
    received = requests.get(api(sandbox, channel["channelId"], f"/users/{users[0]}/received"), timeout=10).json()
    assert [m["kind"] for m in received] == ["multicast", "multicast", "broadcast"]


def test_the_control_page_changes_the_plan(sandbox, channel, line):
    browser = requests.Session()
    base = f"{sandbox.url}/_sandbox/channels/{channel['channelId']}"
    assert "0 of 200 messages used this month" in browser.get(base).text
    assert "0 of 6000 messages used this month" in browser.post(base + "/plan", data={"plan": "6000"}).text
    assert line.quota() == {"type": "limited", "value": 6000}
    assert "No limit" in browser.post(base + "/plan", data={"plan": "none"}).text
    refused = browser.post(base + "/plan", data={"plan": "gold"}, headers={"Referer": base})
    assert "a plan is one of" in refused.text and line.quota() == {"type": "none", "value": None}
    with pytest.raises(SandboxError):
        sandbox.control.set_plan(channel["channelId"], 200)


def test_friends_and_plan_from_the_command_line(sandbox, channel, tmp_path):
    from tests.test_sandbox import sandbox_switched
    runner = sandbox_switched(tmp_path, True, sandbox.url).test_cli_runner()
    made = runner.invoke(args=["sandbox", "friends", channel["channelId"], "1500", "--ids"])
    assert made.exit_code == 0, made.output
    user_ids = made.stdout.split()
    assert len(user_ids) == 1500 and sandbox.control.friend_count(channel["channelId"]) == 1500
    assert sandbox.control.user(channel["channelId"], user_ids[0])["following"] is True
    assert runner.invoke(args=["sandbox", "friends", channel["channelId"], "0"]).exit_code == 2
    planned = runner.invoke(args=["sandbox", "plan", channel["channelId"], "3000"])
    assert planned.exit_code == 0 and sandbox.control.quota(channel["channelId"])["value"] == 3000
    assert runner.invoke(args=["sandbox", "plan", channel["channelId"], "gold"]).exit_code == 2


def test_the_control_page_makes_line_answer_429_with_retry_after(sandbox, channel, line):
    browser = requests.Session()
    base = f"{sandbox.url}/_sandbox/channels/{channel['channelId']}"
    users = sandbox.control.make_friends(channel["channelId"], 1)
    page = browser.post(base + "/failure", data={"status": "429", "times": "1", "delay": "", "retry_after": "45"})
    assert "answers 429 with Retry-After 45 s (1 more)" in page.text
    with pytest.raises(LineProblem) as refused:
        line.multicast(users, TEXT, retry_key=str(uuid.uuid4()))
    assert (refused.value.code, refused.value.retry_after) == ("rate_limited", 45)
    line.multicast(users, TEXT, retry_key=str(uuid.uuid4()))
    wrong = browser.post(base + "/failure", data={"status": "429", "retry_after": "soon"}, headers={"Referer": base})
    assert "Retry-After are numbers" in wrong.text


def test_sending_to_many_on_each_database(db_url):
    """Multicast, broadcast, retry keys, the quota and the statistics on the sandbox's own SQLite or PostgreSQL
    store, and an older PostgreSQL table whose ``kind`` held only five characters is widened on opening."""
    from sqlalchemy import text

    from tests.servers import Served
    from wizard.sandbox import create_sandbox_app
    from wizard.sandbox.store import Store
    if not db_url.startswith("sqlite"):
        Store(db_url).close()
        old = Store(db_url)
        with old.engine.begin() as conn:
            conn.execute(text("ALTER TABLE sandbox_messages ALTER COLUMN kind TYPE varchar(5)"))
        old.close()
    sandbox_app = create_sandbox_app(db_url)
    served = Served(sandbox_app)
    control = sandbox_app.control
    try:
        channel = control.create_channel()
        line = LineClient(channel["channelId"], channel["channelSecret"], host=served.url)
        users = control.make_friends(channel["channelId"], 600)
        control.update(channel["channelId"], quota=1000)
        key = str(uuid.uuid4())
        first = line.multicast(users[:500], [CARD], retry_key=key, unit="mothers_day")
        assert line.multicast(users[:500], [CARD], retry_key=key, unit="mothers_day") == first
        with pytest.raises(LineProblem) as over:
            line.broadcast(TEXT)
        assert over.value.code == "monthly_limit"  # 500 used + 600 friends > 1,000
        control.set_plan(channel["channelId"], "3000")
        line.broadcast(TEXT, retry_key=str(uuid.uuid4()))
        assert line.quota_consumption() == {"totalUsage": 1100}
        assert len(control.received(channel["channelId"], users[0])) == 2
        today = time.strftime("%Y%m%d", time.gmtime(time.time() + 9 * 3600))
        stats = line.statistics_per_unit("mothers_day", today, today)
        assert 0 < stats["overview"]["uniqueImpression"] <= 500
    finally:
        served.stop()
        if not db_url.startswith("sqlite"):
            control.store.drop()
        control.close()
