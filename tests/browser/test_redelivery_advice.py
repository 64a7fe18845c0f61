"""Issue 14, item 3: a shop set up exactly as the setup document says (which never mentions webhook
redelivery: the switch exists only in LINE Developers Console) is healthy. Staff see redelivery as a
recommendation on the shop's console page, with its own sketch, on a 360 px phone too; once confirmed it is gone."""
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.pages import connect_as_documented, scroll_width, sign_in, tab_to
from wizard.extensions import db
from wizard.models import Shop


def test_a_shop_set_up_as_documented_is_healthy_and_staff_get_redelivery_as_advice(
        app, page, context, owner, make_user, sandbox, live_app):
    slug, email = owner
    line = sandbox.control
    sign_in(page, email, lang="en")
    # No redelivery box ticked anywhere: as the document says.
    connect_as_documented(page, slug, line)
    expect(page.locator("h1")).to_contain_text("Connected")
    from wizard.watch import drift
    with app.app_context():
        [health] = drift.check_now([db.session.scalar(db.select(Shop).filter_by(slug=slug))])
        assert (health.state, health.reason) == ("healthy", "connected")

    staff = context.browser.new_context(base_url=live_app.url, viewport={"width": 360, "height": 740},
                                        locale="zh-TW", timezone_id="Asia/Taipei")
    try:
        staff_page = staff.new_page()
        sign_in(staff_page, make_user("helper@example.com", staff=True), lang="zh_Hant_TW")
        staff_page.goto("/shops/")
        expect(staff_page.locator(f'tr[data-shop="{slug}"]')).to_contain_text("正常")
        staff_page.goto(f"/shops/{slug}/")
        expect(staff_page.locator("section.shop-state")).to_have_attribute("data-state", "healthy")
        advice = staff_page.locator("#redelivery-advice")
        expect(advice).to_contain_text("建議")
        expect(advice).to_contain_text("Use webhook redelivery")
        sketch = advice.get_by_role("img", name="示意圖：LINE Developers Console 的 Webhook 重新傳送設定")
        expect(sketch).to_be_visible()
        assert scroll_width(staff_page) <= 360
        results = Axe().run(staff_page).response
        blocking = [v["id"] for v in results["violations"] if v.get("impact") in {"serious", "critical"}]
        assert blocking == [], blocking
        tab_to(staff_page, "#redelivery-advice a")  # reachable with the keyboard alone
        advice.get_by_role("link", name="前往第 5 步").click()
        expect(staff_page).to_have_url(f"{live_app.url}/setup/{slug}/webhook_url#redelivery-heading")
        staff_page.locator("#webhook_redelivery").check()
        staff_page.locator("form:has(input[value=confirm_redelivery]) button[type=submit]").click()
        staff_page.goto(f"/shops/{slug}/")
        expect(staff_page.locator("#redelivery-advice")).to_have_count(0)
        expect(staff_page.locator("section.shop-state")).to_have_attribute("data-state", "healthy")
    finally:
        staff.close()
