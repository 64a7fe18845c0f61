"""What an owner and staff read must fit a 360 px phone: a long URL in the owner's alert banner wraps instead of
widening every wizard page, the buttons below it stay on screen, and the step rail shows its last circle."""
from playwright.sync_api import expect

from tests.browser.pages import check_now, connect_as_documented, scroll_width, sign_in

LONG_URL = "https://crm.example-company-with-a-long-name.com.tw/line/webhook/" + "x" * 90 + "/and-more/path"



def test_a_long_url_in_the_alert_banner_wraps_and_set_it_for_me_stays_clickable_at_360_px(
        app, page, owner, sandbox, live_app):
    slug, email = owner
    line = sandbox.control
    sign_in(page, email, lang="zh_Hant_TW")
    channel = connect_as_documented(page, slug, line)
    line.update(channel["channelId"], endpoint=LONG_URL)  # someone pasted another system's URL in LINE
    assert check_now(app, slug) == ("broken", "endpoint_mismatch")

    page.set_viewport_size({"width": 360, "height": 740})
    for step in ("webhook_url", "prepare", "test_friend"):
        page.goto(f"/setup/{slug}/{step}")
        banner = page.locator("section.alert-banner[role=alert]")
        expect(banner).to_contain_text("crm.example-company")
        assert scroll_width(page) <= 360, (step, scroll_width(page))
    page.goto(f"/setup/{slug}/webhook_url")
    button = page.get_by_role("button", name="幫我設定")
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360, box
    # Nothing lies on top of it: the element at its centre is the button itself.
    assert page.evaluate("""([x, y]) => { const el = document.elementFromPoint(x, y);
        return !!el && !!el.closest('button') && el.closest('button').textContent.includes('幫我設定'); }""",
                         [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
    button.click()
    expect(page.locator(".flashes")).to_be_visible()


def test_the_step_rail_shows_every_circle_whole_at_360_px(page, owner, live_app):
    slug, email = owner
    sign_in(page, email, lang="zh_Hant_TW")
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"/setup/{slug}/prepare")
    circles = page.locator(".rail .rail-num")
    expect(circles).to_have_count(9)  # eight steps and the summary
    rail = page.locator(".rail ol")
    right = rail.evaluate("el => el.getBoundingClientRect().right")
    assert rail.evaluate("el => el.scrollWidth <= el.clientWidth"), "the rail scrolls sideways: a circle is hidden"
    last = circles.last.bounding_box()
    assert last["x"] + last["width"] <= right and last["x"] + last["width"] <= 360, (last, right)
    assert scroll_width(page) <= 360
