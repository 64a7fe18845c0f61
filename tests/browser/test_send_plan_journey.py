"""A send plan from end to end, in Chromium on a 360 px phone, in Chinese (the default), by keyboard where a
person would use one.

The contacts are made for real: LINE users of the sandbox add the shop's account (signed webhooks to the live
receiver), the event worker sends each the customer data form, and four of them fill it in on their phones
(city 臺北市 or 新北市, the marketing box ticked or not); a fifth never fills it in. The owner builds a card
template with an uploaded picture and a button, previews and saves it; makes a marketing plan for the friends
in 臺北市 who filled in the form, sees the count, who is left out for lack of consent and what it costs against
the month's 200 free messages, and schedules it for the next whole minute at least 30 seconds ahead (the
product offers no earlier time than "now", which is another path). The consumer starts it at that time (the
start that confirming it queued for then; the minute job is the safety net): no test code moves the clock or
calls the plans' tick. The users in the
segment who consented receive the card once, as the sandbox's control API says; the others receive nothing but
their form. The plan's page shows the results.

Screenshots of each page at 360 px go to the test's tmp dir; their paths are printed (``pytest -s``).
"""
import json
import re
import time
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect
from PIL import Image

from tests.browser.conftest import TIMEOUT_MS
from tests.browser.pages import scroll_width, sign_in

PHONE = {"width": 360, "height": 740}
TAIPEI = ZoneInfo("Asia/Taipei")
# Confirming the plan queues its start for its very time; the chunk then goes within seconds. 90 s after the
# chosen time is generous on a busy machine (the consumer's minute job would also have started it by then)
# and still ends a broken run with a clear message.
START_BOUND = 90


def wait_for(check, seconds, what):
    """Poll ``check`` until it returns something true, at most ``seconds``; fail saying ``what`` never came."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {seconds:.0f} s)")
        time.sleep(0.2)


class Shots:
    """Full-page screenshots at the phone's width, named in order, under the test's tmp dir."""

    def __init__(self, directory):
        self.directory = directory
        directory.mkdir()
        self.paths = []

    def take(self, page, name):
        assert scroll_width(page) <= PHONE["width"], f"{name}: wider than the phone ({scroll_width(page)} px)"
        path = self.directory / f"{len(self.paths) + 1:02d}-{name}-360.png"
        page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(f"screenshot: {path}")


def received(sandbox, channel_id, user_id):
    """What the LINE user received from the account, from the sandbox's control API (over HTTP)."""
    url = f"{sandbox.url}/_sandbox/api/channels/{channel_id}/users/{user_id}/received"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def form_link(sandbox, channel_id, user_id):
    """The personal link in the form message the user received (None until it came)."""
    for message in received(sandbox, channel_id, user_id):
        found = re.search(r"https?://\S+/form/\S+", message["message"].get("text", ""))
        if found:
            return found.group(0)
    return None


def fill_the_form(browser, link, name, phone, city, consent):
    """The customer on their phone: name, mobile, city, the marketing box as they choose; saved."""
    context = browser.new_context(viewport=PHONE, locale="zh-TW", timezone_id="Asia/Taipei")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        customer = context.new_page()
        customer.goto(link)
        customer.get_by_label("姓名").fill(name)
        customer.get_by_label(re.compile("^手機號碼")).fill(phone)
        customer.get_by_label(re.compile("^居住縣市")).select_option(label=city)
        marketing = customer.get_by_label(re.compile("行銷訊息"))
        expect(marketing).not_to_be_checked()  # never ticked for them
        if consent:
            marketing.focus()
            customer.keyboard.press("Space")
        customer.get_by_role("button", name="儲存我的資料").click()
        expect(customer).to_have_url(re.compile(r"/form/[^/]+/thanks$"))
        return customer.screenshot(full_page=True)
    finally:
        context.close()


def next_minute(after_seconds=30):
    """The first whole minute (Taipei time) at least ``after_seconds`` from now."""
    at = datetime.now(TAIPEI) + timedelta(seconds=after_seconds)
    return at.replace(second=0, microsecond=0) + timedelta(minutes=1 if at.second or at.microsecond else 0)


def test_a_marketing_plan_reaches_the_consenting_friends_in_taipei_once(
        app, page, browser, line, sandbox, worker, tmp_path):
    shots = Shots(tmp_path / "screenshots")
    slug, channel_id = line.slug, line.id
    page.set_viewport_size(PHONE)
    sign_in(page, "owner-sunny-bakery@example.com", lang=None)

    # The form asks for the city (the owner turns the field on in the form's settings).
    page.goto(f"/setup/{slug}/customer_form")
    page.locator("#field_city").select_option("required")
    page.get_by_role("button", name="儲存並繼續").click()
    expect(page).to_have_url(re.compile("/test_friend$"))

    # Five LINE users add the account; the worker sends each the form.
    people = {  # name: (mobile, city or None when they never fill it in, marketing consent)
        "林小美": ("0912345678", "臺北市", True),
        "陳大文": ("0922333444", "臺北市", True),
        "王淑芬": ("0933444555", "臺北市", False),
        "張志明": ("0955666777", "新北市", True),
        "李怡君": (None, None, False),
    }
    users = {name: line.follow(name=name) for name in people}
    links = {name: wait_for(lambda u=user: form_link(sandbox, channel_id, u), 30, f"{name} never got the form")
             for name, user in users.items()}
    for name, (phone, city, consent) in people.items():
        if city is not None:
            picture = fill_the_form(browser, links[name], name, phone, city, consent)
    path = shots.directory / "00-customer-form-thanks-360.png"
    path.write_bytes(picture)
    print(f"screenshot: {path}")
    forms_only = {name: len(received(sandbox, channel_id, user)) for name, user in users.items()}
    assert set(forms_only.values()) == {1}, f"each friend got exactly the form so far: {forms_only}"

    # The card template: a picture, a title, a text, a button opening a URL; previewed, then saved.
    page.goto(f"/c/{slug}/templates")
    shots.take(page, "templates-empty")
    page.get_by_role("link", name="新增範本").click()
    page.locator("#name").fill("春季新品")
    page.get_by_role("button", name="移除").first.click()  # the text message the builder starts with
    page.get_by_role("button", name="卡片", exact=True).click()
    picture = tmp_path / "spring.jpg"
    Image.new("RGB", (1200, 780), (0, 120, 0)).save(picture, "JPEG")
    page.locator("#messages-0-cards-0-image").set_input_files(str(picture))
    page.locator("#messages-0-cards-0-title").fill("春季新品")
    page.keyboard.press("Tab")
    page.keyboard.type("全館九折，只到週日")  # Tab from the title reaches the card's text
    expect(page.locator("#messages-0-cards-0-text")).to_have_value("全館九折，只到週日")
    page.locator("#messages-0-cards-0-buttons-0-label").fill("看看新品")
    page.locator("#messages-0-cards-0-buttons-0-value").fill("https://example.com/spring")
    page.get_by_role("button", name="預覽", exact=True).last.focus()
    page.keyboard.press("Enter")
    hero = page.locator('#preview [data-shows-picture="messages-0-cards-0"]')
    expect(hero).to_have_attribute("src", re.compile(r"^/media/[A-Za-z0-9_-]{32}-preview\.jpg$"))
    expect(page.locator('#preview [data-shows="messages-0-cards-0-title"]')).to_have_text("春季新品")
    expect(page.locator('#preview [data-shows="messages-0-cards-0-buttons-0-label"]')).to_have_text("看看新品")
    shots.take(page, "template-preview")
    page.get_by_role("button", name="請 LINE 檢查並儲存").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_contain_text("範本「春季新品」已通過 LINE 檢查並儲存。")
    shots.take(page, "templates-saved")

    # The plan: marketing, friends in 臺北市 who filled in the form, once at the next minute.
    page.goto(f"/c/{slug}/plans")
    quota = page.locator(".plan-quota")
    expect(quota).to_contain_text("200")  # the free plan's 200 messages, at a glance
    shots.take(page, "plans-empty")
    page.get_by_role("link", name="新增發送計畫").focus()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("新增發送計畫")
    expect(page).to_have_title("新增發送計畫 · 晴天烘焙坊 · LINE 串接精靈")
    page.get_by_label("計畫名稱").fill("春季新品通知")
    page.locator("#template_id").select_option(label="春季新品")
    expect(page.locator('input[name=purpose][value=marketing]')).to_be_checked()  # marketing is the default
    page.get_by_label("符合以下條件的好友").focus()
    page.keyboard.press("Space")
    page.get_by_label("臺北市", exact=True).focus()
    page.keyboard.press("Space")
    count = page.locator("[data-segment-count]")
    expect(count).to_have_text("符合的客戶共 3 位（封鎖者一律排除）")  # 林小美, 陳大文, 王淑芬
    page.get_by_label("已填寫表格", exact=True).focus()
    page.keyboard.press("Space")
    expect(count).to_have_text("符合的客戶共 3 位（封鎖者一律排除）")
    page.get_by_label("指定時間發送一次（台北時間）").focus()
    page.keyboard.press("Space")
    send_at = next_minute()
    page.get_by_label("日期與時間（台北時間）").fill(send_at.strftime("%Y-%m-%dT%H:%M"))
    shots.take(page, "plan-form")
    page.get_by_role("button", name="下一步：確認訊息用量").focus()
    page.keyboard.press("Enter")

    # The cost before it goes: 2 recipients, 1 left out for want of consent, 2 of the month's messages.
    expect(page).to_have_url(re.compile(r"/plans/\d+/confirm$"))
    used = sandbox.control.quota_consumption(channel_id)
    expect(page.locator("[data-recipients]")).to_have_attribute("data-recipients", "2")
    expect(page.locator("[data-no-consent]")).to_have_attribute("data-no-consent", "1")
    expect(page.locator("[data-messages]")).to_have_attribute("data-messages", "2")
    expect(page.locator("[data-left]")).to_have_text(f"{200 - used}／200")  # what is left of the free 200
    expect(page.locator(".plan-cost")).to_contain_text(send_at.strftime("%Y-%m-%d %H:%M"))
    shots.take(page, "plan-confirm")
    page.get_by_role("button", name="確認並排程").focus()
    page.keyboard.press("Enter")

    plan_url = re.compile(r"/c/[^/]+/plans/(\d+)$")
    expect(page).to_have_url(plan_url)
    status = page.locator(".plan-status")
    expect(status).to_have_attribute("data-state", "scheduled")
    expect(status.locator("h2")).to_have_text("狀態： 已排程")
    expect(status).to_contain_text(f"{send_at:%Y-%m-%d %H:%M} （台北時間）")
    expect(page.locator('[data-results="not-started"]')).to_have_text("計畫開始發送後，這裡會顯示發送結果。")
    shots.take(page, "plan-scheduled")
    nobody_yet = {name: len(received(sandbox, channel_id, user)) for name, user in users.items()}
    assert nobody_yet == forms_only, f"nothing goes before its time: {nobody_yet}"

    # The consumer starts it at its time (the start queued when it was confirmed); the page says when it has gone.
    deadline = send_at.timestamp() + START_BOUND - time.time()

    def sent():
        page.reload()
        return status.get_attribute("data-state") == "sent"
    wait_for(sent, max(deadline, 10), f"the plan due at {send_at:%H:%M} (Taipei) was not sent by "
                                      f"{START_BOUND} s after it; its page says "
                                      f"{status.get_attribute('data-state')!r}")
    assert time.time() >= send_at.timestamp(), "the plan went before its time"
    results = page.locator(".plan-results")
    for key, value in {"recipients": 2, "sent": 2, "no_consent": 1, "blocked": 0, "over_quota": 0,
                       "failed": 0}.items():
        expect(results.locator(f'[data-count="{key}"]')).to_have_text(str(value))
    shots.take(page, "plan-sent")

    # What each LINE user received: the card once for the two who consented in 臺北市, nothing more for others.
    for name, user in users.items():
        got = received(sandbox, channel_id, user)
        cards = [m for m in got if m["message"].get("type") == "flex"]
        if name in ("林小美", "陳大文"):
            assert len(cards) == 1, f"{name} should get the card once, got {len(cards)}: {got}"
            assert [m["kind"] for m in cards] == ["multicast"]
            bubble = json.dumps(cards[0]["message"], ensure_ascii=False)
            assert "春季新品" in bubble and "https://example.com/spring" in bubble
            assert len(got) == 2, f"{name}: the form and the card, nothing else: {got}"
        else:
            assert cards == [] and len(got) == 1, f"{name} should get nothing but the form: {got}"
    assert sandbox.control.quota_consumption(channel_id) == used + 2

    page.goto(f"/c/{slug}/plans")
    row = page.locator(".plan-row", has_text="春季新品通知")
    expect(row).to_have_attribute("data-state", "sent")
    expect(row).to_contain_text("2")
    expect(quota).to_contain_text(str(used + 2))
    shots.take(page, "plans-list")
