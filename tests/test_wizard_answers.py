"""The wizard's answers as a new user found them: never stale, never two verdicts, always the step that fixes.

Each test here is one rough edge a trial in a phone-sized browser found (issue 6), checked against the LINE
sandbox with real signed webhooks.
"""
import logging
import re
from datetime import datetime

import pytest

from tests.wizard_helpers import connect, page_text, status_reason
from wizard.extensions import db
from wizard.line.endpoint import is_damaged_copy
from wizard.line.problems import reference
from wizard.models import Channel, Shop


def _confirm_first_steps(client, slug):
    client.post(f"/setup/{slug}/prepare", data={"action": "confirm", "line_login": "y"})
    client.post(f"/setup/{slug}/create_account", data={"action": "confirm", "account_created": "y"})


def _connected(client, slug, sandbox_control, **channel_options):
    """A shop that has reached Connected: every step done, one friend followed."""
    channel = sandbox_control.create_channel(**channel_options)
    _confirm_first_steps(client, slug)
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{slug}/response_settings", data={"action": "confirm", "auto_response": "y"})
    sandbox_control.follow(channel["channelId"], name="林小美")
    assert client.get(f"/api/v1/shops/{slug}/status").get_json()["connected"] is True
    return channel


def _flashes(response):
    html = page_text(response)
    start = html.find('class="flashes"')
    assert start != -1, "no message shown"
    return html[start:html.index("</div>", start)]


# 1. Resume lands on the step whose action fixes the problem.

def test_reissued_secret_resumes_on_step_4_and_dependants_name_it(client, owner, sandbox_control, live_app):
    channel = _connected(client, owner, sandbox_control)
    sandbox_control.update(channel["channelId"], reissue_secret=True)
    client.post(f"/setup/{owner}/credentials", data={"action": "recheck"})
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("action_needed", "wrong_secret")
    assert client.get(f"/setup/{owner}/").headers["Location"].endswith(f"/setup/{owner}/credentials")
    for key in ("enable_messaging_api", "webhook_url", "response_settings", "test_friend"):
        page = client.get(f"/setup/{owner}/{key}")
        assert status_reason(page) == ("todo", "fix_step_first"), key
        assert "This step waits for step 4 (Channel ID and Channel secret)" in page_text(page)
        assert f'href="/setup/{owner}/credentials">Go to step 4: Channel ID and Channel secret' in page_text(page)
    steps = {s["key"]: s for s in client.get(f"/api/v1/shops/{owner}/status").get_json()["steps"]}
    assert steps["test_friend"]["fix_step"] == "credentials"


# 2. Cached live results never contradict what just happened.

def test_saving_step_6_asks_line_again_and_says_what_changed(client, owner, sandbox_control):
    channel = sandbox_control.create_channel(chat_mode="bot")
    _confirm_first_steps(client, owner)
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("action_needed", "chat_mode_bot")

    # Saving while Chat is still off: asked again, nothing changed, and the page says why.
    response = client.post(f"/setup/{owner}/response_settings", data={"action": "confirm", "auto_response": "y"},
                           follow_redirects=True)
    assert "Checked again just now, and nothing changed: Chat is off (bot mode)" in _flashes(response)

    sandbox_control.update(channel["channelId"], chat_mode="chat")  # the owner switches Chat on in LINE, then saves
    response = client.post(f"/setup/{owner}/response_settings", data={"action": "confirm", "auto_response": "y"})
    assert response.headers["Location"].endswith("/customer_form")
    assert "Checked again just now: Webhook is on and the response mode is" in _flashes(
        client.get(f"/setup/{owner}/test_friend"))
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("done", "settings_ok")


def test_a_webhook_that_arrives_outranks_a_cached_webhook_off(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel(webhook_active=False)
    _confirm_first_steps(client, owner)
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("action_needed", "webhook_inactive")
    sandbox_control.update(channel["channelId"], webhook_active=True)
    sandbox_control.follow(channel["channelId"])  # a signed delivery: LINE does call us, "Use webhook" is on
    # No "check again": the cached "off" (younger than CHECK_MAX_AGE) must not be shown any more.
    state, reason = status_reason(client.get(f"/setup/{owner}/response_settings"))
    assert (state, reason) == ("unverifiable", "auto_response_unconfirmed")
    assert status_reason(client.get(f"/setup/{owner}/webhook_url")) == ("done", "webhook_receiving")


def test_friend_test_and_summary_never_say_connected_beside_a_broken_step(client, owner, sandbox_control, live_app):
    channel = _connected(client, owner, sandbox_control)
    assert "It works!" in page_text(client.get(f"/setup/{owner}/test_friend"))
    summary = page_text(client.get(f"/setup/{owner}/connected"))
    assert "<h1 id=\"step-heading\">Step 9 of 9: Connected</h1>" in summary

    sandbox_control.update(channel["channelId"], webhook_active=False)
    client.post(f"/setup/{owner}/response_settings", data={"action": "recheck"})
    friend = client.get(f"/setup/{owner}/test_friend")
    assert status_reason(friend) == ("todo", "fix_step_first")
    assert "It works!" not in page_text(friend) and "This step waits for step 6" in page_text(friend)
    live = client.get(f"/setup/{owner}/test_friend/live").get_json()
    assert live["done"] is False and "See the summary" not in live["html"]
    summary = page_text(client.get(f"/setup/{owner}/connected"))
    assert "<h1 id=\"step-heading\">Step 9 of 9: Not connected yet</h1>" in summary
    assert 'data-reason="not_connected"' in summary and ">Connected<" not in summary


def test_webhook_url_is_not_done_while_it_asks_for_verify(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("todo", "endpoint_matches") and "Press “Verify”" in page_text(page)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "test"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("done", "webhook_verified") and "Press “Verify”" not in page_text(page)


def test_an_old_successful_test_is_not_shown_beside_a_broken_url(client, owner, sandbox_control, live_app):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{owner}/webhook_url", data={"action": "test"})
    assert "test call reached the CRM" in page_text(client.get(f"/setup/{owner}/webhook_url"))
    sandbox_control.update(channel["channelId"], endpoint="https://other-tool.example.com/hook")
    client.post(f"/setup/{owner}/webhook_url", data={"action": "recheck"})
    page = page_text(client.get(f"/setup/{owner}/webhook_url"))
    assert 'data-reason="endpoint_mismatch"' in page
    assert "reached the CRM" not in page and "test-result" not in page


# 3. A tester who is already a friend.

def test_a_message_from_an_existing_friend_proves_the_webhook_and_opens_the_hint(client, owner, sandbox_control,
                                                                                 live_app):
    channel = sandbox_control.create_channel()
    friend = sandbox_control.follow(channel["channelId"], name="老朋友")  # a friend before the CRM was connected
    _confirm_first_steps(client, owner)
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{owner}/response_settings", data={"action": "confirm", "auto_response": "y"})
    page = page_text(client.get(f"/setup/{owner}/test_friend"))
    assert '<details id="already-friend">' in page  # closed while a follow may still come
    sandbox_control.say(channel["channelId"], text="哈囉")
    page = client.get(f"/setup/{owner}/test_friend")
    assert status_reason(page) == ("todo", "friend_message_received")
    assert "so LINE&#39;s messages reach the CRM" in page_text(page)
    assert '<details id="already-friend" open>' in page_text(page)
    assert client.get(f"/setup/{owner}/test_friend/live").get_json()["reason"] == "friend_message_received"
    assert status_reason(client.get(f"/setup/{owner}/webhook_url")) == ("done", "webhook_receiving")
    assert friend  # the sandbox user existed before the connection


# 5. An incomplete copy of our own URL is ours, not another tool's.

def test_a_truncated_copy_of_our_url_is_recognised(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    with app.app_context():
        token = db.session.scalar(db.select(Channel)).webhook_token
    ours = f"{app.config['PUBLIC_BASE_URL']}/line/webhook/{token}"
    sandbox_control.update(channel["channelId"], endpoint=ours[:-6])
    client.post(f"/setup/{owner}/webhook_url", data={"action": "recheck"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page) == ("action_needed", "endpoint_incomplete")
    assert "LINE has an incomplete copy of this shop" in page_text(page)
    assert "another tool" not in page_text(page) and "confirm_replace" not in page_text(page)
    # "Set it for me" replaces a damaged copy of ours without asking.
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert sandbox_control.channel(channel["channelId"])["endpoint"] == ours


@pytest.mark.parametrize("typed, damaged", [
    ("https://crm.example.com/line/webhook/abcdefghijklmnopqrstuv"[:-1], True),  # last character lost
    ("https://crm.example.com/line/webhook/abcdefghij", True),                   # cut in the middle
    ("https://crm.example.com/line/webhook/abcdefghijklmnopqrstuv/", True),      # a slash added
    ("https://crm.example.com/line/webhook/abcdefghijklmnopqrstuvX", True),      # one character too many
    ("https://crm.example.com/line/", True),                                     # only the start
    ("https://crm.example.com/line/webhook/abcdefghijkZZZZZZZZZZZ", True),       # half of the token right
    ("https://crm.example.com/line/webhook/abcdefghijZZZZZZZZZZZZ", False),      # less than half: not ours
    ("https://crm.example.com/line/webhook/zzzzzzzzzzzzzzzzzzzzzz", False),      # another shop's URL here
    ("https://other-tool.example.com/hook", False),
    ("https://crm.example.com/line/webhook/abcdefghijklmnopqrstuv", False),      # exactly ours
])
def test_damaged_copies_are_told_apart_from_other_urls(typed, damaged):
    assert is_damaged_copy(typed, "https://crm.example.com/line/webhook/abcdefghijklmnopqrstuv") is damaged


# 6. Credentials as people mistype them.

def test_swapped_credentials_flag_both_fields(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    response = client.post(f"/setup/{owner}/credentials", data={
        "action": "save", "channel_id": channel["channelSecret"], "channel_secret": channel["channelId"]})
    assert response.status_code == 422
    html = page_text(response)
    assert 'id="channel_id-error"' in html and 'id="channel_secret-error"' in html
    assert html.count("the two values seem swapped") == 4  # each field, and each again in the summary
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Channel.id))) == 0


def test_an_access_token_pasted_as_the_secret_is_named(client, owner):
    token = "eyJhbGciOiJIUzI1NiJ9" + "AbCdEfGh1234+/" * 11 + "="
    html = page_text(client.post(f"/setup/{owner}/credentials", data={
        "action": "save", "channel_id": "1234567890", "channel_secret": token}))
    assert "This is a channel access token, not the Channel secret." in html
    assert 'id="channel_id-error"' not in html


def test_an_empty_submit_marks_both_fields_without_jargon(client, owner):
    html = page_text(client.post(f"/setup/{owner}/credentials", data={"action": "save"}))
    assert "Enter the Channel ID." in html and "Enter the Channel secret." in html
    assert 'id="channel_id-error"' in html and 'id="channel_secret-error"' in html
    html = page_text(client.post(f"/setup/{owner}/credentials", data={
        "action": "save", "channel_id": "1234567890", "channel_secret": "xyz"}))
    assert "0–9" not in html and "a–f" not in html and "32 letters and digits (you entered 3)" in html


def test_a_refused_secret_is_not_shown_under_not_entered_yet(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    response = connect(client, owner, dict(channel, channelSecret="f" * 32))
    html = page_text(response)
    assert "LINE did not accept this Channel secret." in html
    assert "have not been entered yet" not in html and 'class="status ' not in html


# 7 and 9. Full-width Basic ID, compared where the fix is.

def test_a_full_width_basic_id_is_accepted(client, app, owner):
    response = client.post(f"/setup/{owner}/create_account", data={
        "action": "confirm", "account_created": "y", "basic_id": "＠２８９ｊｑｐｗ"})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(Shop)).claimed_basic_id == "@289jqpw"
    assert 'value="@289jqpw"' in page_text(client.get(f"/setup/{owner}/create_account"))  # shown as saved


# 8. An unticked box says what is missing.

@pytest.mark.parametrize("key, field, missing", [
    ("prepare", "line_login", "tick the box when your LINE account has an e-mail address and a password"),
    ("create_account", "account_created", "tick the box when the LINE Official Account exists"),
])
def test_saving_an_unticked_box_says_what_is_missing(client, owner, key, field, missing):
    response = client.post(f"/setup/{owner}/{key}", data={"action": "confirm"}, follow_redirects=True)
    assert missing in _flashes(response)
    assert status_reason(response) == ("todo", "not_confirmed")


def test_unticking_auto_response_says_it_is_not_confirmed(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    response = client.post(f"/setup/{owner}/response_settings", data={"action": "confirm"}, follow_redirects=True)
    assert "Auto-response is not confirmed yet" in _flashes(response)


# 11. A LINE error carries a reference staff can look up.

def test_a_line_error_shows_a_reference_that_is_in_the_log(client, owner, sandbox_control, caplog):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    sandbox_control.fail(channel["channelId"], 500)
    with caplog.at_level(logging.WARNING, logger="wizard.steps.status"):
        page = page_text(client.post(f"/setup/{owner}/credentials", data={"action": "recheck"},
                                     follow_redirects=True))
    assert "Reference for the onboarding staff:" in page
    reference = page.split("Reference for the onboarding staff: <code>")[1].split("</code>")[0]
    assert reference.startswith("line_error-500-") and reference.endswith("Z")
    assert any(reference in record.getMessage() for record in caplog.records)


# 12. Staff acting for a shop.

def test_staff_acting_for_a_shop_see_a_banner_and_their_confirmations_are_theirs(app, client, make_shop, make_user,
                                                                                  login):
    slug, _owner = make_shop()
    staff = make_user("helper@example.com", staff=True)
    login(staff)
    page = page_text(client.get(f"/setup/{slug}/prepare?lang=en"))
    assert "Acting for 晴天烘焙坊 as staff (helper@example.com)" in page
    client.post(f"/setup/{slug}/prepare", data={"action": "confirm", "line_login": "y"})
    with app.app_context():
        record = db.session.scalar(db.select(Shop)).confirmations["line_login"]
    assert record["by"] == "helper@example.com" and record["staff"] is True
    assert "Confirmed by staff helper@example.com on" in page_text(client.get(f"/setup/{slug}/prepare"))


def test_owners_see_no_staff_banner(client, owner):
    assert "Acting for" not in page_text(client.get(f"/setup/{owner}/prepare"))


def test_step_sentences_speak_of_the_shop_not_you(client, make_shop, make_user, login, sandbox_control, live_app):
    """Staff read the same sentences: in Chinese none says 您 ("you")."""
    slug, email = make_shop()
    login(email)
    _connected(client, slug, sandbox_control)
    staff = make_user("helper@example.com", staff=True)
    login(staff)
    client.get("/?lang=zh_Hant_TW")
    for step in client.get(f"/api/v1/shops/{slug}/status").get_json()["steps"]:
        assert "您" not in step["message"], step


# 14. Step 6 says the response mode in words.

def test_step_6_names_the_response_mode_and_response_hours(client, make_shop, login):
    slug, email = make_shop()
    login(email)
    page = page_text(client.get(f"/setup/{slug}/response_settings"))
    assert "回應方式：手動聊天＋自動回應訊息" in page
    assert "回應時間" in page


# What an independent trial found after the first fixes: answers that went stale one step removed.

def test_a_changed_dependency_refreshes_the_steps_that_depend_on_it(client, owner, sandbox_control, live_app):
    channel = _connected(client, owner, sandbox_control)
    client.post(f"/setup/{owner}/create_account", data={"action": "confirm", "account_created": "y",
                                                        "basic_id": "@999zzzz"})
    # No "check again" anywhere: steps 5 and 6 must not keep a cached "done" beside step 4's new verdict.
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("action_needed", "basic_id_mismatch")
    assert status_reason(client.get(f"/setup/{owner}/webhook_url")) == ("todo", "fix_step_first")
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("todo", "fix_step_first")
    # Step 2 names the mismatch too, since a mistyped Basic ID is fixed there.
    assert "@999zzzz" in page_text(client.get(f"/setup/{owner}/create_account"))
    client.post(f"/setup/{owner}/create_account", data={"action": "confirm", "account_created": "y",
                                                        "basic_id": channel["basicId"]})
    assert status_reason(client.get(f"/setup/{owner}/response_settings")) == ("done", "settings_ok")


def test_a_refused_signature_outranks_a_cached_connected(client, owner, sandbox_control, live_app):
    channel = _connected(client, owner, sandbox_control)
    sandbox_control.update(channel["channelId"], reissue_secret=True)
    sandbox_control.say(channel["channelId"], text="還在嗎？")  # signed with the new secret: our receiver refuses it
    summary = page_text(client.get(f"/setup/{owner}/connected"))
    assert 'data-reason="not_connected"' in summary
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("action_needed", "wrong_secret")


def test_after_the_secret_is_entered_again_the_connection_must_prove_itself(client, owner, sandbox_control, live_app):
    channel = _connected(client, owner, sandbox_control)
    reissued = sandbox_control.update(channel["channelId"], reissue_secret=True)
    connect(client, owner, reissued)
    friend = client.get(f"/setup/{owner}/test_friend")
    assert status_reason(friend) == ("todo", "reconnected_unproven")
    assert 'data-reason="not_connected"' in page_text(client.get(f"/setup/{owner}/connected"))
    assert client.get(f"/setup/{owner}/").headers["Location"].endswith("/webhook_url")
    client.post(f"/setup/{owner}/webhook_url", data={"action": "test"})
    assert status_reason(client.get(f"/setup/{owner}/test_friend")) == ("done", "follow_received")
    assert 'data-reason="connected"' in page_text(client.get(f"/setup/{owner}/connected"))


def test_line_down_points_nowhere_and_is_asked_again_next_time(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    _confirm_first_steps(client, owner)
    connect(client, owner, channel)
    sandbox_control.fail(channel["channelId"], 503)
    client.post(f"/setup/{owner}/credentials", data={"action": "recheck"})
    page = client.get(f"/setup/{owner}/webhook_url")
    assert status_reason(page)[0] == "unverifiable"
    assert "Go to step 4" not in page_text(page)  # nothing the owner could fix in step 4
    sandbox_control.heal(channel["channelId"])
    # Within CHECK_MAX_AGE, but "could not ask" is no answer to keep.
    assert status_reason(client.get(f"/setup/{owner}/credentials")) == ("done", "credentials_verified")


def test_a_failed_save_asks_line_once_and_shows_one_reference(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    sandbox_control.fail(channel["channelId"], 500)
    html = page_text(connect(client, owner, channel))
    assert html.count("Reference for the onboarding staff:") == 1
    assert re.search(r"Reference for the onboarding staff: <code>line_error-500-\d{8}T\d{6}Z</code>", html)


def test_a_reference_without_a_status_names_the_code_and_time():
    at = datetime(2026, 12, 1, 12, 15, 3)
    assert reference("timeout", None, at) == "timeout-20261201T121503Z"
    assert reference("line_error", 502, at) == "line_error-502-20261201T121503Z"


def test_an_unreadable_secret_in_an_action_is_explained_not_a_500(client, app, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    connect(client, owner, channel)
    with app.app_context():
        saved = db.session.scalar(db.select(Channel))
        saved.secret_encrypted = "gAAAAA-not-a-fernet-token"
        db.session.commit()
    response = client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/credentials")
    page = client.get(f"/setup/{owner}/credentials")
    assert "can no longer be read by the CRM" in page_text(page)
    assert status_reason(page) == ("action_needed", "secret_unreadable")


def test_a_basic_id_mismatch_is_not_announced_as_success(client, owner, sandbox_control):
    channel = sandbox_control.create_channel()
    client.post(f"/setup/{owner}/create_account", data={"action": "confirm", "account_created": "y",
                                                        "basic_id": "@999zzzz"})
    response = connect(client, owner, channel)
    flashes = _flashes(client.get(response.headers["Location"]))
    assert "saved, but:" in flashes and "LINE accepted the Channel ID" not in flashes
