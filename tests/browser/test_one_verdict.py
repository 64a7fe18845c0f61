"""One verdict per page, in a real browser: what an owner (or staff acting for the shop) reads after each
mistake, at phone width and in Traditional Chinese unless a test needs English to name what it looks for."""
import re

from playwright.sync_api import expect

from tests.browser.pages import save_credentials, scroll_width, set_up_to_the_friend_test, shown_status, sign_in


def _connect_everything(page, slug, line, channel):
    set_up_to_the_friend_test(page, slug, channel)
    line.follow(channel["channelId"], name="林小美")


def test_unticked_boxes_say_what_is_missing_and_step_6_names_the_mode(page, owner):
    slug, email = owner
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, email, lang=None)
    page.goto(f"/setup/{slug}/prepare")
    page.locator(".confirm-form button[type=submit]").click()  # saved without ticking
    flash = page.locator(".flashes")
    expect(flash).to_be_focused()
    expect(flash).to_contain_text("尚未標為完成")
    assert shown_status(page) == ("todo", "not_confirmed")
    page.goto(f"/setup/{slug}/response_settings")
    expect(page.locator("main")).to_contain_text("回應方式：手動聊天＋自動回應訊息")
    expect(page.locator("main")).to_contain_text("回應時間")
    assert scroll_width(page) <= 360


def test_a_broken_step_turns_the_friend_test_and_the_summary(page, owner, sandbox, live_app):
    slug, email = owner
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    sign_in(page, email, lang="en")
    _connect_everything(page, slug, line, channel)
    page.goto(f"/setup/{slug}/connected")
    expect(page.locator("h1")).to_have_text("Step 9 of 9: Connected")

    line.update(channel["channelId"], webhook_active=False)  # someone switches "Use webhook" off in LINE
    page.goto(f"/setup/{slug}/response_settings")
    page.locator(".status-actions button[type=submit]").click()
    assert shown_status(page) == ("action_needed", "webhook_inactive")
    page.goto(f"/setup/{slug}/test_friend")
    assert shown_status(page) == ("todo", "fix_step_first")
    expect(page.locator("main")).not_to_contain_text("It works!")
    expect(page.locator("#friend-live")).not_to_contain_text("See the summary")
    page.locator(".status-fix a").click()
    expect(page).to_have_url(re.compile("/response_settings$"))
    page.goto(f"/setup/{slug}/connected")
    expect(page.locator("h1")).to_have_text("Step 9 of 9: Not connected yet")
    expect(page.locator("main")).not_to_contain_text("is connected to the CRM")


def test_a_basic_id_for_another_account_is_shown_where_it_is_fixed(page, owner, sandbox, live_app):
    slug, email = owner
    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")
    sign_in(page, email, lang="en")
    page.goto(f"/setup/{slug}/create_account")
    page.locator("#account_created").check()
    page.locator("#basic_id").fill("＠９９９ｚｚｚｚ")  # typed full-width on a phone
    page.locator(".confirm-form button[type=submit]").click()
    expect(page).to_have_url(re.compile("/enable_messaging_api$"))  # accepted as @999zzzz
    save_credentials(page, slug, channel)
    assert shown_status(page) == ("action_needed", "basic_id_mismatch")
    expect(page.locator(".flashes")).not_to_contain_text("LINE accepted")
    expect(page.locator("main .status")).to_contain_text("@999zzzz")
    expect(page.locator(".rail .rail-item").nth(3)).to_have_class(re.compile(r"\bstate-action_needed\b"))
    page.get_by_role("link", name="Correct the Basic ID in step 2").click()
    expect(page.locator("#basic_id")).to_have_value("@999zzzz")


def test_a_line_error_gives_a_reference_to_pass_on(page, owner, sandbox, live_app):
    slug, email = owner
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    sign_in(page, email, lang="en")
    save_credentials(page, slug, channel)
    line.fail(channel["channelId"], 500)
    page.locator(".status-actions button[type=submit]").click()
    reference = page.locator(".status-reference code")
    expect(reference).to_have_text(re.compile(r"^line_error-500-\d{8}T\d{6}Z$"))
    expect(page.locator("main .status")).to_contain_text("give your onboarding contact the reference")


def test_staff_acting_for_a_shop_are_told_and_named(page, owner, make_user, live_app):
    slug, _email = owner
    staff = make_user("helper@example.com", staff=True)
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, staff, lang=None)
    page.goto(f"/setup/{slug}/prepare")
    banner = page.locator(".acting-banner")
    expect(banner).to_contain_text("晴天烘焙坊")
    expect(banner).to_contain_text("helper@example.com")
    page.locator("#line_login").check()
    page.locator(".confirm-form button[type=submit]").click()
    page.goto(f"/setup/{slug}/prepare")
    expect(page.locator(".confirmed-by")).to_contain_text("由工作人員 helper@example.com")
    assert scroll_width(page) <= 360
