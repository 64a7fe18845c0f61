"""The contacts list's advanced search in Chromium on a 360 px phone, in Chinese, by keyboard: the count of
matching friends follows each choice before anything is submitted (static/js/segments.js), the list follows
when the owner asks for it, and the filters are saved as a segment and picked again."""
import re
from datetime import date, datetime

from playwright.sync_api import expect

from tests.browser.pages import scroll_width, sign_in
from tests.test_segments_pages import add
from tests.webhooks import make_channel


def test_the_count_follows_each_choice_and_the_list_follows_on_request(app, page, owner, screenshots):
    slug, email = owner
    channel_id = make_channel(app, slug)["id"]
    add(app, channel_id, "林小美", city="TPE", gender="female", birthday=date(1990, 3, 15),
        form_filled_at=datetime(2026, 3, 2))
    add(app, channel_id, "陳大文", city="TPE", gender="male", form_filled_at=datetime(2026, 3, 2))
    add(app, channel_id, "王阿明", city="NWT", gender="male", form_filled_at=datetime(2026, 3, 4))
    add(app, channel_id, "封鎖者", city="TPE", form_filled_at=datetime(2026, 3, 4), blocked_at=datetime(2026, 4, 1))
    add(app, channel_id, "路過的人")
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, email, lang=None)
    page.goto(f"/c/{slug}/contacts")

    summary = page.get_by_text("顯示進階查詢")
    summary.focus()
    page.keyboard.press("Enter")  # opens the details by keyboard
    count = page.locator("[data-segment-count]")
    page.get_by_label("臺北市", exact=True).focus()
    page.keyboard.press("Space")
    expect(count).to_have_text("符合的客戶共 2 位（封鎖者一律排除）")
    expect(page.locator("[data-segment-pending]")).to_be_visible()
    page.get_by_label("已填寫表格", exact=True).check()
    page.get_by_label("男", exact=True).check()
    expect(count).to_have_text("符合的客戶共 1 位（封鎖者一律排除）")
    assert page.locator("table.contacts-table tbody tr").count() == 5  # not asked for yet: the list as it was
    assert scroll_width(page) <= 360
    page.screenshot(path=str(screenshots / "segments-builder-360.png"), full_page=True)

    page.locator("#seg-age_min").fill("40")
    page.locator("#seg-age_max").fill("30")
    expect(count).to_have_text("最大年齡（30）小於最小年齡（40）。")
    page.locator("#seg-age_min").fill("")
    page.locator("#seg-age_max").fill("")
    expect(count).to_have_text("符合的客戶共 1 位（封鎖者一律排除）")

    page.get_by_role("button", name="顯示這些客戶").click()
    expect(page).to_have_url(re.compile(r"city=TPE"))
    rows = page.locator("table.contacts-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("陳大文")
    expect(page.locator(".contacts-total")).to_contain_text("符合的客戶共 1 位")

    page.get_by_label("將這些條件儲存為客群").fill("台北 男性 填表")
    page.get_by_role("button", name="儲存客群").click()
    expect(page.locator("body")).to_contain_text("客群「台北 男性 填表」已儲存")
    page.goto(f"/c/{slug}/contacts")
    expect(page.locator("table.contacts-table tbody tr")).to_have_count(5)
    page.get_by_role("link", name="台北 男性 填表").click()
    expect(page.locator("table.contacts-table tbody tr")).to_have_count(1)
    expect(page.get_by_label("男", exact=True)).to_be_checked()
