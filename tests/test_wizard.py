"""The setup wizard against the LINE sandbox: each step's checks, messages and actions as an owner sees them."""
import pytest

from tests.wizard_helpers import connect, page_text, status_reason
from wizard.extensions import db
from wizard.models import Channel, Shop


def test_resume_starts_at_first_open_step(client, owner):
    response = client.get("/setup/")
    assert response.headers["Location"].endswith(f"/setup/{owner}/")
    response = client.get(f"/setup/{owner}/")
    assert response.headers["Location"].endswith(f"/setup/{owner}/prepare")
    page = client.get(f"/setup/{owner}/prepare")
    assert "Step 1 of 9: Before you start" in page_text(page)


def test_default_language_is_traditional_chinese(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    page = page_text(client.get(f"/setup/{slug}/prepare"))
    assert 'lang="zh-Hant-TW"' in page
    assert "第 1 步" in page


def test_confirming_prepare_moves_on_and_is_remembered(client, owner):
    response = client.post(f"/setup/{owner}/prepare", data={"action": "confirm", "line_login": "y"})
    assert response.headers["Location"].endswith("/create_account")
    assert status_reason(client.get(f"/setup/{owner}/prepare")) == ("done", "owner_confirmed")
    assert client.get(f"/setup/{owner}/").headers["Location"].endswith("/create_account")


@pytest.mark.parametrize("channel_id, secret, field, message", [
    ("12ab34", "0" * 32, "channel_id", "digits only"),
    ("", "0" * 32, "channel_id", "Enter the Channel ID"),
    ("1234567890", "abc", "channel_secret", "32 letters and digits (you entered 3)"),
    ("1234567890", "", "channel_secret", "Enter the Channel secret"),
])
def test_credential_format_errors_name_the_field_and_save_nothing(client, app, owner, channel_id, secret,
                                                                  field, message):
    response = client.post(f"/setup/{owner}/credentials",
                           data={"action": "save", "channel_id": channel_id, "channel_secret": secret})
    assert response.status_code == 422
    html = page_text(response)
    assert f'id="{field}-error"' in html and message in html
    assert 'class="error-summary"' in html
    assert f'value="{channel_id}"' in html  # what was typed is kept
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Channel.id))) == 0


def test_wrong_secret_and_unknown_channel_are_explained(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    wrong = dict(channel, channelSecret="f" * 32)
    response = connect(client, owner, wrong)
    assert response.status_code == 422
    assert "did not accept this Channel secret" in page_text(response)
    assert "Issue" in page_text(response)  # was it reissued?
    response = connect(client, owner, dict(channel, channelId="9999999999"))
    assert response.status_code == 422 and "does not know this Channel ID" in page_text(response)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Channel.id))) == 0


def test_right_credentials_show_the_account_and_mask_the_secret(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel(display_name="晴天烘焙坊")
    messy = dict(channel, channelId=" " + channel["channelId"] + "\n", channelSecret=channel["channelSecret"].upper())
    response = connect(client, owner, messy)
    assert response.status_code == 302
    page = client.get(f"/setup/{owner}/credentials")
    html = page_text(page)
    assert status_reason(page) == ("done", "credentials_verified")
    assert "晴天烘焙坊" in html and channel["basicId"] in html
    assert channel["channelSecret"] not in html and channel["channelSecret"][-4:] in html
    with app.app_context():
        saved = db.session.scalar(db.select(Channel))
        assert saved.channel_id == channel["channelId"]
        assert channel["channelSecret"] not in saved.secret_encrypted
        assert saved.secret == channel["channelSecret"]
    # Step 3 is marked done by the same check.
    assert status_reason(client.get(f"/setup/{owner}/enable_messaging_api")) == ("done", "credentials_verified")


def test_line_down_is_cannot_be_checked_not_wrong(client, app, owner, sandbox_control, sandbox):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    sandbox_control.fail(channel["channelId"], 503)
    client.post(f"/setup/{owner}/credentials", data={"action": "recheck"})
    state, reason = status_reason(client.get(f"/setup/{owner}/credentials"))
    assert (state, reason) == ("unverifiable", "line_error")


def test_basic_id_mismatch_is_flagged(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    client.post(f"/setup/{owner}/create_account", data={"action": "confirm", "account_created": "y",
                                                        "basic_id": "@999zzzz"})
    connect(client, owner, channel)
    # Shown where the fix is: step 4, where the Channel ID was entered, with a way back to step 2.
    page = client.get(f"/setup/{owner}/credentials")
    assert status_reason(page) == ("action_needed", "basic_id_mismatch")
    assert channel["basicId"] in page_text(page) and "@999zzzz" in page_text(page)
    assert f'href="/setup/{owner}/create_account">Correct the Basic ID in step 2' in page_text(page)
    assert status_reason(client.get(f"/setup/{owner}/create_account")) == ("done", "owner_confirmed")
    client.post(f"/setup/{owner}/prepare", data={"action": "confirm", "line_login": "y"})
    # Resume: step 3 waits for step 4, so the owner lands on step 4.
    assert client.get(f"/setup/{owner}/").headers["Location"].endswith("/credentials")
    # The owner corrects the Basic ID in step 2: step 4 agrees at once, not after the cached check expires.
    client.post(f"/setup/{owner}/create_account", data={"action": "confirm", "account_created": "y",
                                                        "basic_id": channel["basicId"]})
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("done", "credentials_verified")


def test_webhook_url_not_set_then_set_for_me(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("action_needed", "endpoint_not_set")
    with app.app_context():
        token = db.session.scalar(db.select(Channel)).webhook_token
    assert f"/line/webhook/{token}" in page_text(page)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert sandbox_control.channel(channel["channelId"])["endpoint"].endswith(f"/line/webhook/{token}")
    # LINE has the URL; nothing has proven it works yet, so the page asks for LINE's test, not "done".
    assert status_reason(client.get(f"/setup/{owner}/webhook_url")) == ("todo", "endpoint_matches")


def test_another_tools_url_is_shown_and_not_replaced_without_consent(client, owner, sandbox_control):
    other = "https://other-tool.example.com/hook"
    channel = sandbox_control.create_channel(endpoint=other)
    connect(client, owner, channel)
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("action_needed", "endpoint_mismatch")
    assert other in page_text(page) and "only one webhook URL" in page_text(page)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert sandbox_control.channel(channel["channelId"])["endpoint"] == other
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint", "confirm_replace": "y"})
    assert sandbox_control.channel(channel["channelId"])["endpoint"] != other


def test_verify_runs_lines_test_and_cooldown_guards_it(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{owner}/webhook_url", data={"action": "test"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("done", "webhook_verified")
    assert "its test call reached the CRM" in page_text(page)
    response = client.post(f"/setup/{owner}/webhook_url", data={"action": "test"}, follow_redirects=True)
    assert "Please wait" in page_text(response)
    assert "disabled" in page_text(response)


def test_verify_failure_is_explained_in_words(client, app, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    sandbox_control.update(channel["channelId"], reissue_secret=True)  # LINE now signs with a secret we do not have
    client.post(f"/setup/{owner}/webhook_url", data={"action": "test"})
    page = client.get(f"/setup/{owner}/webhook_url")
    # LINE's test call carried a signature our receiver refused: that names the cause, the new secret.
    assert status_reason(page) == ("action_needed", "secret_reissued")
    assert "enter the new one in step 4" in page_text(page)
    assert f'href="/setup/{owner}/credentials">Go to step 4: Channel ID and Channel secret' in page_text(page)


def test_secret_reissued_is_detected_from_rejected_deliveries(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    sandbox_control.update(channel["channelId"], reissue_secret=True)
    sandbox_control.follow(channel["channelId"])
    client.post(f"/setup/{owner}/webhook_url", data={"action": "recheck"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("action_needed", "secret_reissued")
    assert "reissued" in page_text(page)


def test_response_settings_read_back_from_line(client, owner, sandbox_control):
    channel = sandbox_control.create_channel(webhook_active=False, chat_mode="bot")
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    page = client.get(f"/setup/{owner}/response_settings")
    assert status_reason(page) == ("action_needed", "webhook_inactive")
    assert "Use webhook: on" in page_text(page)
    sandbox_control.update(channel["channelId"], webhook_active=True)
    client.post(f"/setup/{owner}/response_settings", data={"action": "recheck"})
    page = client.get(f"/setup/{owner}/response_settings")
    assert status_reason(page) == ("action_needed", "chat_mode_bot")
    assert "Response settings → Chat: on" in page_text(page)
    sandbox_control.update(channel["channelId"], chat_mode="chat")
    client.post(f"/setup/{owner}/response_settings", data={"action": "recheck"})
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == \
        ("unverifiable", "auto_response_unconfirmed")
    client.post(f"/setup/{owner}/response_settings", data={"action": "confirm", "auto_response": "y"})
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("done", "settings_ok")


def test_first_follow_connects_the_shop(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    live = client.get(f"/setup/{owner}/test_friend/live").get_json()
    assert live["done"] is False and live["connected"] is False
    page = page_text(client.get(f"/setup/{owner}/test_friend"))
    assert "https://line.me/R/ti/p/%40" + channel["basicId"].lstrip("@") in page
    assert "<svg" in page and "<title>QR code to add " in page  # QR code drawn on the page, named
    sandbox_control.follow(channel["channelId"], name="林小美")
    live = client.get(f"/setup/{owner}/test_friend/live").get_json()
    assert live["done"] is True and live["connected"] is True
    assert "added the account as a friend at" in live["html"]
    assert "someone added the account as a friend at" in live["html"] and "(follow)" not in live["html"]
    connected = page_text(client.get(f"/setup/{owner}/connected"))
    assert 'data-reason="connected"' in connected


def test_qr_downloads(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    png = client.get(f"/setup/{owner}/qr.png")
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    svg = client.get(f"/setup/{owner}/qr.svg")
    assert svg.status_code == 200 and b"<svg" in svg.data


def test_reset_needs_confirmation_then_returns_to_credentials(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    response = client.post(f"/setup/{owner}/credentials", data={"action": "reset"}, follow_redirects=True)
    assert "Nothing was reset: tick the box to confirm first." in page_text(response)
    assert status_reason(client.get(f"/setup/{owner}/credentials"))[1] == "credentials_verified"
    client.post(f"/setup/{owner}/credentials", data={"action": "reset", "confirm_reset": "y"})
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("todo", "no_credentials")
    with app.app_context():
        assert db.session.scalar(db.select(Shop)).channel is None


def test_owner_cannot_see_another_shop(client, make_shop, login, owner):
    other, _ = make_shop("other-shop", "別家店")
    assert client.get(f"/setup/{other}/prepare").status_code == 404
    assert client.get("/shops/").status_code == 403


def test_staff_sees_every_shop_and_creates_one(client, make_shop, make_user, login):
    make_shop("shop-a", "甲店")
    staff = make_user("staff@example.com", staff=True)
    login(staff)
    page = page_text(client.get("/shops/?lang=en"))
    assert "甲店" in page
    response = client.post("/shops/new", data={"slug": "shop-b", "name": "乙店", "owner_email": "b@example.com",
                                               "owner_password": "long-enough"})
    assert response.status_code == 302
    assert "乙店" in page_text(client.get("/shops/"))
    bad = client.post("/shops/new", data={"slug": "Bad Slug", "name": "x", "owner_email": "c@example.com",
                                          "owner_password": "long-enough"})
    assert bad.status_code == 422 and "shop code" in page_text(bad)


@pytest.mark.parametrize("base, reason", [
    ("http://crm.example.com", "public_url_not_https"),
    ("https://127.0.0.1:8443", "public_url_not_public"),
    ("https://192.168.1.20", "public_url_not_public"),
    ("https://crm.local", "public_url_not_public"),
])
def test_public_url_that_line_would_refuse_is_flagged_first(client, app, owner, base, reason):
    """Against the real LINE Platform (no sandbox host), a URL LINE cannot call is the first thing said."""
    app.config.update(LINE_API_HOST=None, PUBLIC_BASE_URL=base)
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("action_needed", reason)
    assert base in page_text(page)
