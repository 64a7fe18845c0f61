"""The status JSON (API and ``line doctor --json``) agrees with the pages, and only the right people get
it."""
import json
import re


from tests.wizard_helpers import connect, status_reason

KEYS = ["prepare", "create_account", "enable_messaging_api", "credentials", "webhook_url",
        "response_settings", "customer_form", "test_friend"]


def test_api_shape_and_agreement_with_pages_and_doctor(client, runner, make_shop, login, sandbox_control, live_app):
    slug, email = make_shop()
    login(email)
    channel = sandbox_control.create_channel(chat_mode="bot")
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    body = client.get(f"/api/v1/shops/{slug}/status").get_json()
    assert set(body) >= {"shop", "connected", "steps"} and body["shop"] == slug
    assert [step["key"] for step in body["steps"]] == KEYS
    assert [(step["key"], step["state"], step["reason"]) for step in body["steps"]] == [
        ("prepare", "todo", "not_confirmed"),
        ("create_account", "done", "account_found"),
        ("enable_messaging_api", "done", "credentials_verified"),
        ("credentials", "done", "credentials_verified"),
        ("webhook_url", "todo", "endpoint_matches"),  # LINE has the URL; its test is still to be made
        ("response_settings", "action_needed", "chat_mode_bot"),
        ("customer_form", "todo", "form_not_reviewed"),  # the defaults; never blocks "connected"
        ("test_friend", "todo", "fix_step_first"),  # a test friend is pointless while step 6 is open
    ]
    for step in body["steps"]:
        assert set(step) >= {"key", "state", "reason", "message", "checked_at"}
        assert status_reason(client.get(f"/setup/{slug}/{step['key']}")) == (step["state"], step["reason"])
    assert body["connected"] is False
    # Never connected yet: onboarding, at the step resume leads to.
    assert (body["state"], body["reason"], body["fix_step"]) == ("onboarding", "not_confirmed", "prepare")

    result = runner.invoke(args=["line", "doctor", slug, "--json"])
    assert result.exit_code == 1
    doctor = json.loads(result.output)
    assert [(s["key"], s["state"], s["reason"]) for s in doctor["steps"]] == \
           [(s["key"], s["state"], s["reason"]) for s in body["steps"]]
    assert (doctor["state"], doctor["reason"], doctor["since"]) == (body["state"], body["reason"], body["since"])

    sandbox_control.update(channel["channelId"], chat_mode="chat")
    sandbox_control.follow(channel["channelId"])
    result = runner.invoke(args=["line", "doctor", slug])
    assert result.exit_code == 0, result.output
    assert "connected" in result.output.splitlines()[-1]
    # Connected, but the auto-response only the owner can confirm is not: it works, and needs a look.
    assert "state: attention (auto_response_unconfirmed)" in result.output
    body = client.get(f"/api/v1/shops/{slug}/status").get_json()
    assert body["connected"] is True
    assert (body["state"], body["reason"], body["fix_step"]) == (
        "attention", "auto_response_unconfirmed", "response_settings")


def test_api_access_rules(app, client, runner, make_shop, make_user, login):
    slug, email = make_shop()
    other, other_email = make_shop("other-shop")
    assert client.get(f"/api/v1/shops/{slug}/status").status_code == 401
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), token  # 32 random bytes, URL-safe Base64
    ok = client.get(f"/api/v1/shops/{slug}/status", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.get_json()["shop"] == slug
    assert client.get(f"/api/v1/shops/{slug}/status",
                      headers={"Authorization": "Bearer nope"}).status_code == 401
    assert runner.invoke(args=["user", "token", other_email]).exit_code == 1  # owners get no tokens
    login(other_email)
    assert client.get(f"/api/v1/shops/{slug}/status").status_code == 404
    assert client.get(f"/api/v1/shops/{other}/status").status_code == 200


def test_status_after_cli_connect_is_not_the_cached_one(client, runner, make_shop, login, sandbox_control):
    """A check cached before ``line connect`` must not be served as fresh after it."""
    slug, email = make_shop()
    login(email)
    before = {s["key"]: s for s in client.get(f"/api/v1/shops/{slug}/status").get_json()["steps"]}
    assert before["credentials"]["reason"] == "no_credentials"
    channel = sandbox_control.create_channel()
    result = runner.invoke(args=["line", "connect", slug, "--channel-id", channel["channelId"],
                                 "--channel-secret", channel["channelSecret"]])
    assert result.exit_code == 0, result.output
    after = {s["key"]: s for s in client.get(f"/api/v1/shops/{slug}/status").get_json()["steps"]}
    assert (after["credentials"]["state"], after["credentials"]["reason"]) == ("done", "credentials_verified")
