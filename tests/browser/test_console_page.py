"""The staff console in a real browser: staff filter to the broken shops, open one, check it now, acknowledge
its alert and read the audit entry; the list works at 360 px and with the keyboard alone."""
import re

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.pages import scroll_width, set_up_to_the_friend_test, sign_in, tab_to
from wizard.extensions import db
from wizard.models import Shop


def _broken_shop(app, page, slug, line):
    """The shop set up through its pages and connected; then its Channel secret is reissued in LINE and the
    watch's check (drift.check_now, as a round runs it) finds it broken and opens an alert."""
    channel = line.create_channel(display_name="晴天烘焙坊")
    set_up_to_the_friend_test(page, slug, channel)
    line.follow(channel["channelId"], name="林小美")
    page.goto(f"/setup/{slug}/connected")
    expect(page.locator("h1")).to_contain_text("Connected")
    line.update(channel["channelId"], reissue_secret=True)
    from wizard.watch import drift
    with app.app_context():
        [health] = drift.check_now([db.session.scalar(db.select(Shop).filter_by(slug=slug))])
        assert health.state == "broken", (health.state, health.reason)


def _with_history(app, slug):
    """The shop's steps evaluated (a step history) and two checks by people with long addresses in its
    timeline, so the phone test sees the history's table and the timeline's longest lines."""
    from wizard.models import ShopCheck, utcnow
    from wizard.steps.status import evaluate
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        evaluate(shop)
        for trigger in ("owner_page", "check_now"):
            db.session.add(ShopCheck(shop_id=shop.id, at=utcnow(), trigger=trigger, state="broken",
                                     reason="webhook_endpoint_changed", step="webhook_url",
                                     actor="a-rather-long-staff-address@example-company.com.tw"))
        db.session.commit()


def test_staff_filter_to_broken_shops_check_one_and_acknowledge_its_alert(
        app, page, owner, make_shop, make_user, sandbox, live_app):
    slug, _email = owner
    make_shop("calm-tea", "平靜茶坊")  # not broken: filtered out
    staff = make_user("helper@example.com", staff=True)
    sign_in(page, staff, lang="en")
    _broken_shop(app, page, slug, sandbox.control)

    page.goto("/shops/")
    expect(page.locator("tbody tr[data-shop]")).to_have_count(2)
    page.locator("#state").select_option("broken")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/shops/\?.*state=broken"))
    expect(page.locator("tbody tr[data-shop]")).to_have_count(1)
    row = page.locator(f'tr[data-shop="{slug}"]')
    expect(row).to_contain_text("Broken")
    row.get_by_role("link", name="晴天烘焙坊").click()

    expect(page.locator("h1")).to_contain_text("晴天烘焙坊")
    expect(page.locator(".shop-state")).to_have_attribute("data-state", "broken")
    page.get_by_role("button", name="Check now").click()
    expect(page.locator(".flashes")).to_contain_text("Checked 晴天烘焙坊 just now. Broken:")
    expect(page.locator(".flashes")).to_be_focused()
    alert = page.locator(".alerts li.alert")
    expect(alert).to_have_count(1)
    alert.get_by_role("button", name="Acknowledge").click()

    expect(page.locator(".flashes")).to_contain_text("Alert acknowledged")
    expect(page.locator(".alerts li.alert")).to_contain_text("acknowledged by helper@example.com")
    entry = page.locator(".timeline li.timeline-audit", has_text="Alert acknowledged")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("helper@example.com")
    expect(page.locator(".timeline li.timeline-audit", has_text="Checked now by staff")).to_have_count(1)
    # Words, not codes: the alert line, the step history and the timeline (issue 14 item 4).
    for shown in (".alerts", ".step-history", ".timeline"):
        expect(page.locator(shown)).not_to_contain_text("secret_reissued")
    expect(page.locator(".timeline")).not_to_contain_text("— system")
    expect(page.locator(".timeline")).to_contain_text("— the system (automatic)")


def test_the_console_on_a_phone_with_the_keyboard_alone(app, page, owner, make_user, live_app):
    slug, _email = owner
    staff = make_user("helper@example.com", staff=True)
    _with_history(app, slug)
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, staff, lang=None)
    page.goto("/shops/")
    expect(page.locator("h1")).to_have_text("商店")
    assert scroll_width(page) <= 360
    tab_to(page, "#q")
    page.keyboard.type("sunny")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"q=sunny"))
    expect(page.locator("tbody tr[data-shop]")).to_have_count(1)
    tab_to(page, f'a[href="/shops/{slug}/"]')
    page.keyboard.press("Enter")
    expect(page.locator(".shop-state")).to_be_visible()
    expect(page.locator(".step-history tbody tr").first).to_be_visible()
    expect(page.locator(".timeline li.timeline-check").first).to_be_visible()
    assert scroll_width(page) <= 360
    results = Axe().run(page).response
    blocking = [v["id"] for v in results["violations"] if v.get("impact") in {"serious", "critical"}]
    assert blocking == []
    page.goto("/shops/")
    results = Axe().run(page).response
    blocking = [v["id"] for v in results["violations"] if v.get("impact") in {"serious", "critical"}]
    assert blocking == []


def test_the_list_at_1280_px_keeps_codes_and_addresses_whole_and_tells_staff_where_the_owner_is(
        app, page, make_shop, make_user, live_app):
    """Staff read a setting-up shop's step (not the owner's "tick the box below"); a shop without a LINE channel
    claims no LINE check; a shop code or e-mail address is never broken mid-word on a wide screen."""
    from wizard.steps.status import evaluate
    slug, owner_email = make_shop("demo-shop", "示範商店")
    make_shop("another-shop-with-a-longer-code", "另一家店")
    with app.app_context():
        evaluate(db.session.scalar(db.select(Shop).filter_by(slug=slug)))  # as the owner's first page does
        db.session.commit()
    staff = make_user("a-rather-long-staff-address@example-company.com.tw", staff=True)
    sign_in(page, staff, lang="zh_Hant_TW")
    page.goto("/shops/")
    row = page.locator(f'tr[data-shop="{slug}"]')
    expect(row).to_contain_text("店主在第 1 步")
    expect(row).not_to_contain_text("請勾選")
    expect(row.locator(".console-activity")).to_contain_text("尚未連上 LINE")
    expect(row.locator(".console-activity")).not_to_contain_text("20")  # no time of a LINE check
    for cell in page.locator(".console-table .unbroken").all():
        lines = cell.evaluate("el => el.getClientRects().length")
        assert lines == 1, (cell.text_content(), lines)
    assert row.locator(".unbroken", has_text=owner_email).count() == 1
    assert scroll_width(page) <= 1280

    page.locator(f'tr[data-shop="{slug}"] th a').click()
    expect(page.locator(".shop-state .status-message")).to_contain_text("店主在第 1 步")
    expect(page.locator(".shop-state")).to_contain_text("尚未連上 LINE")
    expect(page.locator(".shop-state")).not_to_contain_text("上次向 LINE 檢查")
