"""An owner follows a customer's conversation in a real browser: the contacts list counts the customer's new
messages (and forgets them once the conversation was opened), new messages appear on an open conversation
by themselves without a reload (static/js/conversation.js), a sticker shows as LINE's sticker picture rather
than its numbers, and the contacts search box is a usable size on a desktop and on a phone."""
from playwright.sync_api import expect

from tests.browser.pages import scroll_width, sign_in

PHONE = {"width": 360, "height": 740}
POLL_MS = 15_000  # the page asks every 5 s; a loaded machine gets three rounds


def reload_until(page, locator, what):
    """The worker stores LINE's events within moments: reload until ``locator`` shows (at most 10 s)."""
    for _ in range(50):
        if locator.count():
            return
        page.wait_for_timeout(200)
        page.reload()
    raise AssertionError(f"{what} never showed")


def test_new_messages_are_counted_in_the_list_and_appear_on_an_open_conversation(page, line, worker):
    sign_in(page, f"owner-{line.slug}@example.com", lang="en")
    user_id = line.follow(name="林小美")
    page.goto(f"/c/{line.slug}/contacts")
    row = page.locator(f'tr[data-contact="{user_id}"]')
    reload_until(page, row, "the new friend")
    box = page.locator("#q").bounding_box()
    assert box["width"] >= 300, box  # not the browser's 150 px default

    line.control.say(line.id, user_id, "請問明天有開嗎？")
    line.control.say(line.id, user_id, "想訂蛋糕")
    badge = row.locator(".badge.unread")
    reload_until(page, badge.filter(has_text="2 new messages"), "the count of new messages")

    row.get_by_role("link", name="林小美").click()
    expect(page.locator("li[data-direction=in][data-type=text]")).to_have_count(2)
    page.evaluate("window.__notReloaded = true")
    line.control.send(line.id, user_id, "sticker", packageId="446", stickerId="1988", keywords=["Happy"])
    line.control.say(line.id, user_id, "謝謝！")
    sticker = page.locator("li[data-direction=in][data-type=sticker]")
    expect(sticker).to_have_count(1, timeout=POLL_MS)
    expect(page.locator("li[data-direction=in]", has_text="謝謝！")).to_have_count(1, timeout=POLL_MS)
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of refreshing its list"
    expect(page.locator("#conversation-news")).to_have_text("The conversation has new messages.")
    picture = sticker.locator("img")
    expect(picture).to_have_attribute(
        "src", "https://stickershop.line-scdn.net/stickershop/v1/sticker/1988/android/sticker.png")
    expect(picture).to_have_attribute("alt", "Sticker: Happy")
    assert "446" not in sticker.inner_text() and "1988" not in sticker.inner_text()

    page.goto(f"/c/{line.slug}/contacts")  # everything was seen on the open page: nothing new
    expect(page.locator(f'tr[data-contact="{user_id}"] .badge.unread')).to_have_count(0)

    page.set_viewport_size(PHONE)
    page.reload()
    assert scroll_width(page) <= 360
    assert page.locator("#q").bounding_box()["width"] >= 280

