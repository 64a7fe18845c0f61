"""What a shop owner sees on a 360 px phone when the answer changes: long URLs and LINE user IDs wrap inside
the page, and the friend test's live box and status box change together, without a reload."""
import re

from playwright.sync_api import expect

from tests.browser.pages import save_credentials, scroll_width, set_up_to_the_friend_test, shown_status, sign_in


def test_a_truncated_webhook_url_wraps_on_a_phone(page, owner, sandbox, live_app):
    slug, email = owner
    page.set_viewport_size({"width": 360, "height": 740})
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    sign_in(page, email, lang=None)
    save_credentials(page, slug, channel)
    page.goto(f"/setup/{slug}/webhook_url")
    ours = page.locator("#webhook-url").inner_text().strip()
    line.update(channel["channelId"], endpoint=ours[:-3])
    page.locator(".status-actions button[type=submit]").click()
    assert shown_status(page) == ("action_needed", "endpoint_incomplete")
    expect(page.locator(".flashes")).to_contain_text(ours[:-3])  # the URL is quoted in the message …
    assert scroll_width(page) <= 360, "the page scrolls sideways"  # … and wraps


def test_an_existing_friends_message_changes_the_whole_page_at_once(page, owner, sandbox, live_app, worker):
    slug, email = owner
    page.set_viewport_size({"width": 360, "height": 740})
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    line.follow(channel["channelId"], name="老朋友")  # already a friend before the CRM was connected
    sign_in(page, email, lang="en")
    set_up_to_the_friend_test(page, slug, channel)
    expect(page).to_have_url(re.compile("/test_friend$"))
    assert shown_status(page) == ("todo", "no_follow_yet")
    hint = page.locator("#already-friend")
    expect(hint).not_to_have_attribute("open", "")

    page.evaluate("window.__sameDocument = true")
    line.say(channel["channelId"], text="哈囉")
    status = page.locator("main .status")
    expect(status).to_have_attribute("data-reason", "friend_message_received", timeout=10_000)
    expect(status).to_contain_text("is already a friend")
    expect(hint).to_have_attribute("open", "")  # the block/unblock hint opened by itself
    expect(page.locator("#friend-live")).not_to_contain_text("Waiting for the first friend")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert scroll_width(page) <= 360


def test_staff_resend_a_dead_message_from_a_phone_with_the_keyboard(page, app, make_user, sandbox, screenshots):
    """The messages page in Chinese at 360 px: a dead form, its reason, and "重新傳送" reached with Tab."""
    from tests.line_helpers import Line
    from tests.webhooks import make_channel
    from wizard.accounts import create_shop
    from wizard.extensions import db
    from wizard.line import worker
    from wizard.outgoing import outbox
    staff = make_user("staff@example.com", staff=True)
    with app.app_context():
        create_shop("rainy-tea", "雨天茶舖", make_user("owner-rainy@example.com"))
        db.session.commit()
    created = sandbox.control.create_channel(display_name="雨天茶舖")
    channel = make_channel(app, "rainy-tea", channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    line = Line(app, sandbox.control, channel, "rainy-tea")
    sandbox.control.fail(line.id, 503)
    sandbox.control.update(line.id, endpoint="")
    line.post(sandbox.control.follow(line.id, name="林小美")["event"])
    for _ in range(outbox.MAX_ATTEMPTS):
        line.make_due()
        worker.process_pending(app)
    sandbox.control.heal(line.id)

    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, staff, lang=None)
    page.goto("/shops/messages/")
    expect(page.locator("h1")).to_have_text("傳給 LINE 的訊息")
    expect(page.locator("main")).to_contain_text("重試多次後放棄")
    assert scroll_width(page) <= 360, "the page scrolls sideways"
    page.screenshot(path=str(screenshots / "staff-messages-360.png"), full_page=True)
    button = page.get_by_role("button", name="重新傳送")
    for _ in range(40):
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    else:
        raise AssertionError("重新傳送 cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_contain_text("訊息已重新排入佇列")
    worker.process_pending(app)
    assert [r.status for r in line.outbox()] == ["sent"]
