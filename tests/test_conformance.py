"""Every answer the sandbox gives and every webhook it sends, validated against LINE's own OpenAPI specs.

The specs live in ``../shared/line-platform/`` beside the repository, or in ``$WIZARD_SHARED_DIR``'s
``line-platform/``. OpenAPI 3.0 ``discriminator``s on base schemas are not applied by validators, so events,
message contents and sources are also validated against the schema their ``type`` maps to. Calls are made
with plain HTTP here (not the SDK) so that error answers reach the validator untouched.
"""
import os
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from tests.servers import free_port
from tests.sink import Sink

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("WIZARD_SHARED_DIR") or ROOT.parent / "shared") / "line-platform"
SPEC_FILES = {"messaging": "messaging-api.yml", "token": "channel-access-token.yml", "webhook": "webhook.yml",
              "insight": "insight.yml"}

if not all((SHARED / name).is_file() for name in SPEC_FILES.values()):
    pytest.skip(f"LINE's OpenAPI specs are not at {SHARED} (set WIZARD_SHARED_DIR to the folder holding "
                "line-platform/); conformance cannot be checked without them", allow_module_level=True)


@pytest.fixture(scope="module")
def specs():
    return {key: yaml.safe_load((SHARED / name).read_text(encoding="utf-8"))
            for key, name in SPEC_FILES.items()}


def validate(spec, schema, instance):
    """Validate against a schema of ``spec``, resolving its local ``$ref``s."""
    root = dict(schema, components=spec["components"])
    OAS30Validator(root, format_checker=oas30_format_checker).validate(instance)


def validate_ref(spec, name, instance):
    validate(spec, {"$ref": f"#/components/schemas/{name}"}, instance)


class Checked:
    """Calls the sandbox and validates each answer against the documented response of its operation."""

    def __init__(self, specs, base):
        self.specs, self.base, self.seen = specs, base, set()

    def __call__(self, method, template, status, path=None, spec="messaging", **kwargs):
        response = requests.request(method, self.base + (path or template), timeout=10, **kwargs)
        assert response.status_code == status, (method, path or template, response.status_code, response.text)
        operation = self.specs[spec]["paths"][template][method.lower()]
        documented = operation.get("responses", {}).get(str(status), {})
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is None and status >= 400:
            # Statuses the operation does not list (401, 429, 5xx …) answer with the spec's common error body.
            schema = {"$ref": "#/components/schemas/ErrorResponse"}
        if schema is not None:
            validate(self.specs[spec], schema, response.json())
        if spec == "messaging" and status >= 400:
            assert response.json().get("details", None) != [], "LINE leaves out an empty details list"
        self.seen.add((method, template, status))
        return response


def validate_webhook(specs, body):
    spec = specs["webhook"]
    validate_ref(spec, "CallbackRequest", body)
    event_types = spec["components"]["schemas"]["Event"]["discriminator"]["mapping"]
    content_types = spec["components"]["schemas"]["MessageContent"]["discriminator"]["mapping"]
    source_types = spec["components"]["schemas"]["Source"]["discriminator"]["mapping"]
    for event in body["events"]:
        validate(spec, {"$ref": event_types[event["type"]]}, event)
        validate(spec, {"$ref": source_types[event["source"]["type"]]}, event["source"])
        if event["type"] == "message":
            validate(spec, {"$ref": content_types[event["message"]["type"]]}, event["message"])


def test_every_api_answer_matches_lines_spec(specs, sandbox, sink):
    call = Checked(specs, sandbox.url)
    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")
    form = {"grant_type": "client_credentials", "client_id": channel["channelId"],
            "client_secret": channel["channelSecret"]}

    # Tokens: issued, wrong secret, unknown channel.
    token = call("POST", "/oauth2/v3/token", 200, spec="token", data=form).json()["access_token"]
    wrong = call("POST", "/oauth2/v3/token", 400, spec="token",
                 data=dict(form, client_secret="0" * 32)).json()
    assert wrong == {"error": "invalid_request", "error_description": "Invalid 'client_credentials'."}
    unknown = call("POST", "/oauth2/v3/token", 400, spec="token",
                   data=dict(form, client_id="1999999999")).json()
    assert unknown["error"] == "invalid_client"
    auth = {"Authorization": f"Bearer {token}"}

    # Bot info, and LINE's two 401 answers.
    call("GET", "/v2/bot/info", 200, headers=auth)
    call("GET", "/v2/bot/info", 401)
    call("GET", "/v2/bot/info", 401, headers={"Authorization": "Bearer not-a-token"})

    # Webhook endpoint: not set, refused, set, read back.
    endpoint = "/v2/bot/channel/webhook/endpoint"
    assert call("GET", endpoint, 404, headers=auth).json() == {"message": "Webhook endpoint not found"}
    call("PUT", endpoint, 400, headers=auth, json={"endpoint": "http://crm.example.com/hook"})
    call("PUT", endpoint, 400, headers=auth, json={})
    assert call("PUT", endpoint, 200, headers=auth, json={"endpoint": sink.url}).json() == {}
    call("GET", endpoint, 200, headers=auth)

    # Webhook test: success, each failure reason, bad URL, no URL, and the hourly limit.
    test = "/v2/bot/channel/webhook/test"
    assert call("POST", test, 200, headers=auth, json={}).json()["success"] is True
    not_found = Sink(status=404)
    try:
        call("POST", test, 200, headers=auth, json={"endpoint": not_found.url})
    finally:
        not_found.stop()
    call("POST", test, 200, headers=auth, json={"endpoint": f"http://127.0.0.1:{free_port()}/x"})
    call("POST", test, 400, headers=auth, json={"endpoint": "ftp://crm.example.com/x"})

    # Users: a follower's profile, an unknown user; reply: bad body, ok, used token; push: ok, again, unknown.
    followed = sandbox.control.follow(channel["channelId"], name="林小美")
    user_id, reply_token = followed["user"]["userId"], followed["event"]["replyToken"]
    call("GET", "/v2/bot/profile/{userId}", 200, path=f"/v2/bot/profile/{user_id}", headers=auth)
    call("GET", "/v2/bot/profile/{userId}", 404, path=f"/v2/bot/profile/U{'0' * 32}", headers=auth)
    text = [{"type": "text", "text": "歡迎加入！"}]
    call("POST", "/v2/bot/message/reply", 400, headers=auth, json={"replyToken": reply_token, "messages": []})
    call("POST", "/v2/bot/message/reply", 400, headers=auth,
         json={"replyToken": reply_token, "messages": [{"type": "text", "text": ""}, {"type": "nope"}]})
    reply = {"replyToken": reply_token, "messages": text}
    call("POST", "/v2/bot/message/reply", 200, headers=auth, json=reply)
    used = call("POST", "/v2/bot/message/reply", 400, headers=auth, json=reply)
    assert used.json() == {"message": "Invalid reply token"}
    key = {"X-Line-Retry-Key": str(uuid.uuid4())}
    call("POST", "/v2/bot/message/push", 200, headers={**auth, **key}, json={"to": user_id, "messages": text})
    repeated = call("POST", "/v2/bot/message/push", 409, headers={**auth, **key},
                    json={"to": user_id, "messages": text})
    assert repeated.headers["X-Line-Accepted-Request-Id"]
    call("POST", "/v2/bot/message/push", 400, headers=auth, json={"to": f"U{'1' * 32}", "messages": text})

    # Failures the control side injects: 429 and 5xx, on the API and on the token endpoint.
    sandbox.control.fail(channel["channelId"], 429, times=2)
    call("GET", "/v2/bot/info", 429, headers=auth)
    call("POST", "/oauth2/v3/token", 429, spec="token", data=form)
    sandbox.control.fail(channel["channelId"], 500, times=1)
    call("POST", "/v2/bot/message/push", 500, headers=auth, json={"to": user_id, "messages": text})
    sandbox.control.heal(channel["channelId"])

    sandbox.control.update(channel["channelId"], endpoint="")
    call("POST", test, 404, headers=auth, json={})
    for _ in range(60 - 5):  # five tests were made above; the 61st in the hour is refused
        requests.post(sandbox.url + test, headers=auth, json={"endpoint": f"http://127.0.0.1:{free_port()}/x"})
    call("POST", test, 429, headers=auth, json={})

    expected = {
        ("POST", "/oauth2/v3/token", 200), ("POST", "/oauth2/v3/token", 400),
        ("POST", "/oauth2/v3/token", 429),
        ("GET", "/v2/bot/info", 200), ("GET", "/v2/bot/info", 401), ("GET", "/v2/bot/info", 429),
        ("GET", endpoint, 200), ("GET", endpoint, 404), ("PUT", endpoint, 200), ("PUT", endpoint, 400),
        ("POST", test, 200), ("POST", test, 400), ("POST", test, 404), ("POST", test, 429),
        ("GET", "/v2/bot/profile/{userId}", 200), ("GET", "/v2/bot/profile/{userId}", 404),
        ("POST", "/v2/bot/message/reply", 200), ("POST", "/v2/bot/message/reply", 400),
        ("POST", "/v2/bot/message/push", 200), ("POST", "/v2/bot/message/push", 400),
        ("POST", "/v2/bot/message/push", 409), ("POST", "/v2/bot/message/push", 500),
    }
    assert call.seen == expected


def test_the_friend_count_matches_lines_spec_and_counts_first_adds_by_japan_day(specs, sandbox):
    """LINE's statistics: a day is counted once it is over in Japan; later blocks never lower the count."""
    call = Checked(specs, sandbox.url)
    channel = sandbox.control.create_channel()
    token = requests.post(sandbox.url + "/oauth2/v3/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": channel["channelId"],
        "client_secret": channel["channelSecret"]}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    three_days_ago = time.time() - 3 * 86400
    first = sandbox.control.follow(channel["channelId"], at=three_days_ago)["user"]["userId"]
    sandbox.control.follow(channel["channelId"], at=three_days_ago)
    sandbox.control.follow(channel["channelId"])  # today: not in any finished day yet
    sandbox.control.unfollow(channel["channelId"], first)  # blocked today: yesterday's count keeps it

    def day(days_ago):
        return time.strftime("%Y%m%d", time.gmtime(time.time() + 9 * 3600 - days_ago * 86400))

    path = "/v2/bot/insight/followers"
    yesterday = call("GET", path, 200, spec="insight", params={"date": day(1)}, headers=auth).json()
    assert (yesterday["status"], yesterday["followers"], yesterday["blocks"]) == ("ready", 2, 0)
    before = call("GET", path, 200, spec="insight", params={"date": day(5)}, headers=auth).json()
    assert (before["status"], before["followers"]) == ("ready", 0)
    assert call("GET", path, 200, spec="insight", params={"date": day(0)}, headers=auth).json() == {
        "status": "unready"}
    call("GET", path, 400, spec="insight", params={"date": "2026-12-01"}, headers=auth)
    call("GET", path, 401, spec="insight", params={"date": day(1)})
    # LINE counts a finished day some hours after it ends: until then that day is unready too.
    sandbox.control.update(channel["channelId"], insight_lag=2 * 86400)
    assert call("GET", path, 200, spec="insight", params={"date": day(1)}, headers=auth).json() == {
        "status": "unready"}
    assert call("GET", path, 200, spec="insight", params={"date": day(3)}, headers=auth).json()["status"] == "ready"
    assert call.seen == {("GET", path, 200), ("GET", path, 400), ("GET", path, 401)}


def test_every_webhook_the_sandbox_sends_matches_lines_spec(specs, sandbox, sink):
    channel = sandbox.control.create_channel(endpoint=sink.url)
    channel_id = channel["channelId"]
    user_id = sandbox.control.follow(channel_id, name="陳大文")["user"]["userId"]
    sandbox.control.say(channel_id, user_id, "請問有素食嗎？")
    sandbox.control.unfollow(channel_id, user_id)
    sandbox.control.follow(channel_id, user_id)
    sandbox.control.redeliver(channel_id)
    sandbox.control.verify(channel_id)
    token = requests.post(sandbox.url + "/oauth2/v3/token", data={
        "grant_type": "client_credentials", "client_id": channel_id,
        "client_secret": channel["channelSecret"]}).json()["access_token"]
    requests.post(sandbox.url + "/v2/bot/channel/webhook/test", json={},
                  headers={"Authorization": f"Bearer {token}"}).raise_for_status()

    kinds = [[event["type"] for event in body["events"]] for body in sink.bodies]
    assert kinds == [["follow"], ["message"], ["unfollow"], ["follow"], ["follow"], [], []]
    for body in sink.bodies:
        validate_webhook(specs, body)
    assert sink.verified(channel["channelSecret"])


# What a LINE user can send, with the fields the sandbox is asked for (the rest are its sample values).
USER_MESSAGES = [
    ("text", {"text": "請問有素食嗎？"}),
    ("sticker", {"packageId": "11537", "stickerId": "52002734", "stickerResourceType": "ANIMATION",
                 "keywords": ["Hi", "Hello"]}),
    ("sticker", {"stickerResourceType": "MESSAGE", "text": "生日快樂"}),
    ("image", {}),
    ("image", {"imageSet": {"id": "E005D41A7288F41B65", "index": 1, "total": 2}}),
    ("video", {"duration": 12000}),
    ("audio", {"duration": 6000}),
    ("file", {"fileName": "報價單.xlsx"}),
    ("location", {"title": "晴天烘焙坊", "address": "台北市大安區忠孝東路四段 1 號", "latitude": 25.0416,
                  "longitude": 121.5437}),
]


@pytest.mark.parametrize("chat_mode", ["chat", "bot"])
def test_every_kind_of_user_message_matches_lines_spec(specs, sandbox, sink, chat_mode):
    """Each message type's event validates against the schema its type maps to; ``markAsReadToken`` comes
    only while Chat is on (markAsReadMode manual), and ``quoteToken`` where webhook.yml requires it."""
    channel = sandbox.control.create_channel(endpoint=sink.url, chat_mode=chat_mode)
    user_id = sandbox.control.follow(channel["channelId"])["user"]["userId"]
    for kind, fields in USER_MESSAGES:
        sandbox.control.send(channel["channelId"], user_id, kind, **fields)
    bodies = sink.bodies[1:]
    assert [body["events"][0]["message"]["type"] for body in bodies] == [kind for kind, _ in USER_MESSAGES]
    schemas = specs["webhook"]["components"]["schemas"]
    content_types = schemas["MessageContent"]["discriminator"]["mapping"]
    for body, (kind, fields) in zip(bodies, USER_MESSAGES, strict=True):
        validate_webhook(specs, body)
        message = body["events"][0]["message"]
        assert {key: message[key] for key in fields} == fields
        assert ("markAsReadToken" in message) == (chat_mode == "chat")
        schema = schemas[content_types[kind].rsplit("/", 1)[1]]
        required = {name for part in schema["allOf"] for name in part.get("required", [])}
        assert ("quoteToken" in message) == ("quoteToken" in required)
    assert sink.verified(channel["channelSecret"])


def _token(sandbox, channel):
    return requests.post(sandbox.url + "/oauth2/v3/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": channel["channelId"],
        "client_secret": channel["channelSecret"]}).json()["access_token"]


def test_quota_content_and_read_marks_match_lines_spec(specs, sandbox, sink):
    call = Checked(specs, sandbox.url)
    channel = sandbox.control.create_channel(endpoint=sink.url)
    channel_id = channel["channelId"]
    auth = {"Authorization": f"Bearer {_token(sandbox, channel)}"}
    user_id = sandbox.control.follow(channel_id)["user"]["userId"]

    # Quota: limited (the free plan), what was used, the 429 at the limit, then no limit at all.
    quota, consumption = "/v2/bot/message/quota", "/v2/bot/message/quota/consumption"
    assert call("GET", quota, 200, headers=auth).json() == {"type": "limited", "value": 200}
    assert call("GET", consumption, 200, headers=auth).json() == {"totalUsage": 0}
    call("GET", quota, 401)
    call("GET", consumption, 401)
    text = [{"type": "text", "text": "您的蛋糕好了"}]
    sandbox.control.update(channel_id, quota=1)
    call("POST", "/v2/bot/message/push", 200, headers=auth, json={"to": user_id, "messages": text})
    assert call("GET", consumption, 200, headers=auth).json() == {"totalUsage": 1}
    limit = call("POST", "/v2/bot/message/push", 429, headers=auth, json={"to": user_id, "messages": text})
    assert limit.json() == {"message": "You have reached your monthly limit."}
    sandbox.control.update(channel_id, quota=None)
    assert call("GET", quota, 200, headers=auth).json() == {"type": "none"}

    # Content: each kind with its type, a video still being prepared (202, empty), then ready; unknown: 404.
    content, transcoding = "/v2/bot/message/{messageId}/content", "/v2/bot/message/{messageId}/content/transcoding"
    expected_types = {"image": "image/png", "video": "video/mp4", "audio": "audio/x-m4a", "file": "application/pdf"}
    for kind, content_type in expected_types.items():
        message_id = sandbox.control.send(channel_id, user_id, kind)["event"]["message"]["id"]
        got = call("GET", content, 200, path=f"/v2/bot/message/{message_id}/content", headers=auth)
        assert got.headers["Content-Type"] == content_type
        assert got.content == sandbox.control.content(channel_id, message_id)["data"] and got.content
        status = call("GET", transcoding, 200, path=f"/v2/bot/message/{message_id}/content/transcoding",
                      headers=auth)
        assert status.json() == {"status": "succeeded"}
    video = sandbox.control.send(channel_id, user_id, "video", ready=False)["event"]["message"]["id"]
    assert call("GET", transcoding, 200, path=f"/v2/bot/message/{video}/content/transcoding",
                headers=auth).json() == {"status": "processing"}
    assert call("GET", content, 202, path=f"/v2/bot/message/{video}/content", headers=auth).content == b""
    sandbox.control.finish_transcoding(channel_id, video, "failed")
    assert call("GET", transcoding, 200, path=f"/v2/bot/message/{video}/content/transcoding",
                headers=auth).json() == {"status": "failed"}
    call("GET", content, 404, path=f"/v2/bot/message/{video}/content", headers=auth)
    call("GET", content, 404, path="/v2/bot/message/100000000000000000/content", headers=auth)
    call("GET", transcoding, 404, path="/v2/bot/message/100000000000000000/content/transcoding", headers=auth)
    call("GET", content, 401, path=f"/v2/bot/message/{video}/content")
    # Another channel's bot cannot download this channel's content.
    other = sandbox.control.create_channel()
    image = sandbox.control.send(channel_id, user_id, "image")["event"]["message"]["id"]
    call("GET", content, 404, path=f"/v2/bot/message/{image}/content",
         headers={"Authorization": f"Bearer {_token(sandbox, other)}"})

    # Mark as read by token: ok (and again), a bad body, a token of no message, another bot's token.
    mark = "/v2/bot/chat/markAsRead"
    said = sandbox.control.say(channel_id, user_id, "我想訂蛋糕")["event"]["message"]
    assert call("POST", mark, 200, headers=auth, json={"markAsReadToken": said["markAsReadToken"]}).json() == {}
    call("POST", mark, 200, headers=auth, json={"markAsReadToken": said["markAsReadToken"]})
    call("POST", mark, 400, headers=auth, json={})
    assert call("POST", mark, 400, headers=auth, json={"markAsReadToken": "nz0x74mZT2mRn"}).json() == {
        "message": "Invalid markAsReadToken"}
    call("POST", mark, 400, headers={"Authorization": f"Bearer {_token(sandbox, other)}"},
         json={"markAsReadToken": said["markAsReadToken"]})
    call("POST", mark, 401, json={"markAsReadToken": said["markAsReadToken"]})
    # The older mark-as-read by user ID is for corporate customers who applied: 403 for everyone else.
    by_user = "/v2/bot/message/markAsRead"
    call("POST", by_user, 403, headers=auth, json={"chat": {"userId": user_id}})

    assert call.seen == {
        ("GET", quota, 200), ("GET", quota, 401), ("GET", consumption, 200), ("GET", consumption, 401),
        ("POST", "/v2/bot/message/push", 200), ("POST", "/v2/bot/message/push", 429),
        ("GET", content, 200), ("GET", content, 202), ("GET", content, 401), ("GET", content, 404),
        ("GET", transcoding, 200), ("GET", transcoding, 404),
        ("POST", mark, 200), ("POST", mark, 400), ("POST", mark, 401), ("POST", by_user, 403),
    }


def test_the_validator_is_not_a_rubber_stamp(specs):
    """A body LINE would never send fails, so the checks above mean something."""
    event = {"type": "follow", "timestamp": 1, "mode": "active", "webhookEventId": "x",
             "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": "U1"}}
    with pytest.raises(ValidationError):
        validate_webhook(specs, {"destination": "U123", "events": [event]})  # destination pattern
    with pytest.raises(ValidationError):  # a follow event without its replyToken and follow detail
        validate_webhook(specs, {"destination": "U" + "0" * 32, "events": [event]})
    with pytest.raises(ValidationError):
        validate_ref(specs["messaging"], "BotInfoResponse", {
            "userId": "U1", "basicId": "@1", "displayName": "x", "chatMode": "on", "markAsReadMode": "auto"})


def test_sending_to_many_matches_lines_spec(specs, sandbox):
    """Multicast, broadcast, narrowcast (and its progress), the validate endpoints, the aggregation units and the
    per-unit statistics: each answer, error and retry-key repeat validates against LINE's specs."""
    call = Checked(specs, sandbox.url)
    channel = sandbox.control.create_channel()
    channel_id = channel["channelId"]
    auth = {"Authorization": f"Bearer {_token(sandbox, channel)}"}
    users = sandbox.control.make_friends(channel_id, 3)
    text = [{"type": "text", "text": "週年慶全館八折"}]
    card = {"type": "flex", "altText": "週年慶", "contents": {"type": "bubble", "body": {
        "type": "box", "layout": "vertical", "contents": [
            {"type": "text", "text": "全館八折"},
            {"type": "button", "action": {"type": "uri", "label": "選購", "uri": "https://shop.example.com"}}]}}}
    broken = [{"type": "text", "text": ""}]

    multicast, broadcast, narrowcast = "/v2/bot/message/multicast", "/v2/bot/message/broadcast", \
        "/v2/bot/message/narrowcast"
    key = {"X-Line-Retry-Key": str(uuid.uuid4())}
    body = {"to": users, "messages": [card], "customAggregationUnits": ["sale_2026"]}
    first = call("POST", multicast, 200, headers={**auth, **key}, json=body)
    assert first.json() == {}
    repeat = call("POST", multicast, 409, headers={**auth, **key}, json=body)
    assert repeat.headers["X-Line-Accepted-Request-Id"] == first.headers["X-Line-Request-Id"]
    details = call("POST", multicast, 400, headers=auth, json={"to": users, "messages": broken}).json()["details"]
    assert details == [{"message": "May not be empty", "property": "messages[0].text"}]
    too_many = call("POST", multicast, 400, headers=auth, json={"to": [users[0]] * 501, "messages": text})
    assert too_many.json()["details"] == [{"message": "Size must be between 1 and 500", "property": "to"}]
    call("POST", multicast, 401, json=body)

    key = {"X-Line-Retry-Key": str(uuid.uuid4())}
    sent = call("POST", broadcast, 200, headers={**auth, **key}, json={"messages": text})
    assert call("POST", broadcast, 409, headers={**auth, **key}, json={"messages": text}).headers[
        "X-Line-Accepted-Request-Id"] == sent.headers["X-Line-Request-Id"]
    call("POST", broadcast, 400, headers=auth, json={"messages": text * 6})

    key = {"X-Line-Retry-Key": str(uuid.uuid4())}
    accepted = call("POST", narrowcast, 202, headers={**auth, **key}, json={"messages": text, "limit": {"max": 2}})
    call("POST", narrowcast, 409, headers={**auth, **key}, json={"messages": text})
    call("POST", narrowcast, 400, headers=auth, json={"messages": broken})
    progress = "/v2/bot/message/progress/narrowcast"
    done = call("GET", progress, 200, headers=auth, params={"requestId": accepted.headers["X-Line-Request-Id"]})
    assert (done.json()["phase"], done.json()["successCount"], done.json()["targetCount"]) == ("succeeded", 2, 3)

    # The month's limit: 3 + 3 + 2 used of 10; a multicast to 3 more would go over it.
    assert sandbox.control.quota_consumption(channel_id) == 8
    sandbox.control.update(channel_id, quota=10)
    limit = call("POST", multicast, 429, headers=auth, json={"to": users, "messages": text})
    assert limit.json() == {"message": "You have reached your monthly limit."}
    call("POST", broadcast, 429, headers=auth, json={"messages": text})
    call("POST", narrowcast, 429, headers=auth, json={"messages": text})
    sandbox.control.set_plan(channel_id, "none")

    # Injected faults reach the new endpoints too: 429 with Retry-After, then 500.
    sandbox.control.fail(channel_id, 429, times=1, retry_after=30)
    assert call("POST", multicast, 429, headers=auth, json=body).headers["Retry-After"] == "30"
    sandbox.control.fail(channel_id, 500, times=1)
    call("POST", broadcast, 500, headers=auth, json={"messages": text})

    for kind in ("reply", "push", "multicast", "narrowcast", "broadcast"):
        path = f"/v2/bot/message/validate/{kind}"
        assert call("POST", path, 200, headers=auth, json={"messages": [card]}).json() == {}
        call("POST", path, 400, headers=auth, json={"messages": broken})

    info, names = "/v2/bot/message/aggregation/info", "/v2/bot/message/aggregation/list"
    push = "/v2/bot/message/push"
    call("POST", push, 200, headers=auth, json={"to": users[0], "messages": text,
                                                 "customAggregationUnits": ["welcome"]})
    assert call("GET", info, 200, headers=auth).json() == {"numOfCustomAggregationUnits": 2}
    page = call("GET", names, 200, headers=auth, params={"limit": "1"}).json()
    assert page["customAggregationUnits"] == ["sale_2026"] and page["next"]
    rest = call("GET", names, 200, headers=auth, params={"limit": "1", "start": page["next"]}).json()
    assert rest == {"customAggregationUnits": ["welcome"]}
    call("GET", names, 400, headers=auth, params={"limit": "0"})

    statistics = "/v2/bot/insight/message/event/aggregation"
    today = time.strftime("%Y%m%d", time.gmtime(time.time() + 9 * 3600))
    per_unit = call("GET", statistics, 200, spec="insight", headers=auth, params={
        "customAggregationUnit": "sale_2026", "from": today, "to": today}).json()
    assert per_unit["overview"]["uniqueImpression"] <= 3
    assert [click["url"] for click in per_unit["clicks"]] == ["https://shop.example.com"]
    call("GET", statistics, 400, spec="insight", headers=auth, params={
        "customAggregationUnit": "sale_2026", "from": "20260101", "to": "20260301"})

    assert call.seen == {
        ("POST", multicast, 200), ("POST", multicast, 409), ("POST", multicast, 400), ("POST", multicast, 401),
        ("POST", multicast, 429), ("POST", broadcast, 200), ("POST", broadcast, 409), ("POST", broadcast, 400),
        ("POST", broadcast, 429), ("POST", broadcast, 500), ("POST", narrowcast, 202), ("POST", narrowcast, 409),
        ("POST", narrowcast, 400), ("POST", narrowcast, 429), ("GET", progress, 200), ("POST", push, 200),
        *{("POST", f"/v2/bot/message/validate/{kind}", status)
          for kind in ("reply", "push", "multicast", "narrowcast", "broadcast") for status in (200, 400)},
        ("GET", info, 200), ("GET", names, 200), ("GET", names, 400),
        ("GET", statistics, 200), ("GET", statistics, 400),
    }
