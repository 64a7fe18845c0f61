"""Issue 14, "Done when": the staff list shows a reissued secret within seconds of the refused deliveries, and
no watch round runs. The owner sets the shop up through its pages; staff watch the list in Chinese; someone
reissues the Channel secret in LINE (the sandbox) and two new friends' follows are refused by our receiver. The
queue's consumer runs as in the embedded default (the ``worker`` fixture); the watch's round is a day away."""
import time

from playwright.sync_api import expect

from tests.browser.pages import connect_as_documented, sign_in
from wizard.extensions import db
from wizard.models import ShopCheck

LIMIT_SECONDS = 10


def _row_state(staff_page, slug):
    row = staff_page.locator(f'tr[data-shop="{slug}"]')
    return row.get_attribute("data-state"), row.get_attribute("data-reason")


def test_the_staff_list_shows_a_reissued_secret_within_seconds_without_a_watch_round(
        app, page, context, owner, make_user, sandbox, live_app, worker):
    app.config["WATCH_INTERVAL_MINUTES"] = 24 * 60
    slug, email = owner
    line = sandbox.control
    sign_in(page, email, lang="zh_Hant_TW")
    channel = connect_as_documented(page, slug, line)
    expect(page.locator("p.status[data-reason=connected]")).to_be_visible()

    staff = context.browser.new_context(base_url=live_app.url, viewport={"width": 1280, "height": 800},
                                        locale="zh-TW", timezone_id="Asia/Taipei")
    try:
        staff_page = staff.new_page()
        sign_in(staff_page, make_user("helper@example.com", staff=True), lang="zh_Hant_TW")
        staff_page.goto("/shops/")
        assert _row_state(staff_page, slug) == ("healthy", "connected")

        line.update(channel["channelId"], reissue_secret=True)  # the owner pressed "Issue" in LINE
        time.sleep(1.05)  # a refusal run counts from a second after LINE's last valid delivery (store.py)
        refused_at = time.monotonic()
        for name in ("陳大文", "王小明"):
            assert line.follow(channel["channelId"], name=name)["delivery"]["statusCode"] == 400

        deadline = refused_at + LIMIT_SECONDS
        while _row_state(staff_page, slug) != ("broken", "secret_reissued") and time.monotonic() < deadline:
            time.sleep(0.3)
            staff_page.reload()
        waited = time.monotonic() - refused_at
        assert _row_state(staff_page, slug) == ("broken", "secret_reissued"), (
            f"{LIMIT_SECONDS} s after the refused deliveries the list says {_row_state(staff_page, slug)}")
        print(f"the staff list showed the reissued secret {waited:.1f} s after the refused deliveries")
        row = staff_page.locator(f'tr[data-shop="{slug}"]')
        expect(row).to_contain_text("已中斷")
        expect(row).to_contain_text("重新發行")
        expect(row).to_contain_text("共 2 次")

        row.get_by_role("link", name="晴天烘焙坊").click()
        expect(staff_page.locator(".timeline")).to_contain_text("2 筆傳送因簽章錯誤被拒絕")
        with app.app_context():
            triggers = set(db.session.scalars(db.select(ShopCheck.trigger)))
        assert "watch" not in triggers and "evidence" in triggers, triggers
    finally:
        staff.close()
