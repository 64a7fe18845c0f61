"""Every answer the sandbox gives and every webhook it sends, validated against LINE's own OpenAPI specs.

The specs live in ``../shared/line-platform/`` beside the repository, or in ``$WIZARD_SHARED_DIR``'s
``line-platform/``. OpenAPI 3.0 ``discriminator``s on base schemas are not applied by validators, so events,
message contents and sources are also validated against the schema their ``type`` maps to. Calls are made
with plain HTTP here (not the SDK) so that error answers reach the validator untouched.
"""
import os
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
    import time
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
