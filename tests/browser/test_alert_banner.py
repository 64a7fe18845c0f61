"""The owner's wizard when the watch found the connection broken: on a 360 px phone, in Chinese, the alert says
what broke and its button (reached with Tab) leads to the step that fixes it; fixed, the banner is gone."""
from playwright.sync_api import expect

from tests.browser.pages import check_now, connect_as_documented, scroll_width, sign_in, tab_to



def test_a_broken_connection_shows_on_the_owners_phone_with_the_way_to_fix_it(app, page, owner, sandbox, live_app):
    slug, email = owner
    line = sandbox.control
    sign_in(page, email, lang="zh_Hant_TW")
    channel = connect_as_documented(page, slug, line)
    expect(page.locator("[data-alert-reason]")).to_have_count(0)

    line.update(channel["channelId"], chat_mode="bot")  # someone switched Chat off in LINE
    assert check_now(app, slug) == ("broken", "chat_mode_bot")
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"/setup/{slug}/connected")
    banner = page.locator("section.alert-banner[role=alert]")
    expect(banner).to_have_attribute("data-alert-reason", "chat_mode_bot")
    expect(banner).to_contain_text("LINE 連線已中斷")
    expect(banner).to_contain_text("聊天")  # the reason in words: Chat is off
    assert scroll_width(page) <= 360
    tab_to(page, "section.alert-banner a.button")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_app.url}/setup/{slug}/response_settings")
    expect(page.locator("section.alert-banner")).to_be_visible()  # on every page of the wizard until fixed

    line.update(channel["channelId"], chat_mode="chat")
    # Works again: healthy (webhook redelivery, which LINE cannot tell us about, is advice, not a condition).
    assert check_now(app, slug) == ("healthy", "connected")
    page.reload()
    expect(page.locator("[data-alert-reason]")).to_have_count(0)
