"""The sandbox's control page (playing LINE's side) in a real browser, as a new user meets it on a phone.

The page must never scroll sideways at 360 px however long its IDs, URLs and messages are, the customer-form
link in a message the app sent must be a link that opens, every control must be reachable with the keyboard
alone and named, and reissuing the Channel secret must ask first. The LINE side's state is made with the
sandbox's own ``Sandbox`` object and LINE's API (``LineClient``), as the app would send its messages.
"""
import re
import secrets

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.conftest import TIMEOUT_MS
from wizard.line.client import LineClient
from wizard.line.problems import LineProblem

PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
FORM_TEXT = ("感謝您將晴天烘焙坊 Sunny Bakery 信義旗艦店加入好友！請花一分鐘留下您的姓名、電話和電子郵件，"
             "讓我們能為您提供更好的服務：\n{url}")
# Every element a keyboard user must be able to reach on the page.
CONTROLS = "a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex='-1'])"
# The outermost elements reaching past the right edge: what to fix when the page scrolls sideways.
TOO_WIDE = """limit => [...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > limit + 0.5
                  && !(el.parentElement && el.parentElement.getBoundingClientRect().right > limit + 0.5))
    .slice(0, 5).map(el => el.outerHTML.slice(0, 160))"""


@pytest.fixture
def sandbox_page(browser, sandbox):
    """A phone-sized page on the sandbox itself (not the app), as a developer in Taiwan opens it."""
    ctx = browser.new_context(base_url=sandbox.url, viewport=PHONE, locale="zh-TW", timezone_id="Asia/Taipei")
    ctx.set_default_timeout(TIMEOUT_MS)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def busy_channel(sandbox, sink):
    """A channel as it looks after a while: a long webhook URL, several friends (one blocked), messages the
    app sent (the customer form with its link, to the sink so the link really opens) and webhooks."""
    line = sandbox.control
    endpoint = f"{sink.served.url}/line/webhook/{secrets.token_urlsafe(48)}"
    channel = line.create_channel(display_name="晴天烘焙坊 Sunny Bakery 信義旗艦店", endpoint=endpoint)
    channel_id = channel["channelId"]
    client = LineClient(channel_id, channel["channelSecret"], host=sandbox.url)
    form_url = f"{sink.served.url}/form/{secrets.token_urlsafe(24)}"
    first = line.follow(channel_id, name="林小美")
    client.reply(first["event"]["replyToken"], [{"type": "text", "text": FORM_TEXT.format(url=form_url)}])
    said = line.say(channel_id, first["user"]["userId"], "請問週末有營業嗎？我想預訂一個生日蛋糕")
    client.reply(said["event"]["replyToken"], [{"type": "text", "text": "有的，週末 9:00–18:00 營業。"}])
    second = line.follow(channel_id, name="Christopher Alexander Montgomery-Wellington")
    line.unfollow(channel_id, second["user"]["userId"])
    client.push(second["user"]["userId"], [{"type": "text", "text": FORM_TEXT.format(url=form_url)}])
    line.follow(channel_id, name="陳大文")
    line.verify(channel_id)
    sink.requests.clear()
    return dict(line.channel(channel_id), formUrl=form_url)


def fits(page, name):
    page.set_viewport_size(PHONE)
    scroll, client = page.evaluate("[document.documentElement.scrollWidth, "
                                   "document.documentElement.clientWidth]")
    assert scroll <= client, (f"{name}: the page is {scroll} px wide on a {client} px wide phone; too wide: "
                              f"{page.evaluate(TOO_WIDE, client)}")


def test_sandbox_pages_never_scroll_sideways_on_a_phone(sandbox_page, busy_channel, screenshots):
    page = sandbox_page
    page.goto("/")
    expect(page.locator("main")).to_contain_text(busy_channel["basicId"])
    fits(page, "channel list")
    page.screenshot(path=screenshots / "sandbox-index-360.png", full_page=True)

    page.get_by_role("link", name=busy_channel["displayName"]).click()
    expect(page.locator("h1")).to_have_text(busy_channel["displayName"])
    expect(page.locator("#basic-id")).to_contain_text(busy_channel["basicId"])
    expect(page.locator("#endpoint")).to_have_value(busy_channel["endpoint"])
    expect(page.locator(".messages > li")).to_have_count(3)
    fits(page, "channel page")
    page.screenshot(path=screenshots / "sandbox-channel-360.png", full_page=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=screenshots / "sandbox-channel-1280.png", full_page=True)

    # A refused action's message (with a long ID in it) does not widen the page either.
    page.set_viewport_size(PHONE)
    page.locator("#follow_user").fill(page.locator(".cards code").first.inner_text())
    page.get_by_role("button", name="Add friend", exact=True).click()
    expect(page.locator(".flash-error")).to_contain_text("is already a friend")
    fits(page, "channel page with an error")


def test_form_link_in_a_sent_message_opens(sandbox_page, busy_channel, sink):
    page = sandbox_page
    page.goto(f"/_sandbox/channels/{busy_channel['channelId']}")
    links = page.locator(".messages").get_by_role("link", name=busy_channel["formUrl"], exact=True)
    expect(links).to_have_count(2)  # the form sent by reply, and pushed again to the friend who blocked
    expect(links.first).to_have_attribute("href", busy_channel["formUrl"])
    links.first.click()  # Playwright clicks only what is visible, enabled and not covered
    expect(page).to_have_url(busy_channel["formUrl"])
    page.go_back()
    links.last.focus()
    page.keyboard.press("Enter")  # and opened with the keyboard alone
    expect(page).to_have_url(busy_channel["formUrl"])
    form_path = busy_channel["formUrl"][len(sink.served.url):]
    assert [(r["method"], r["path"]) for r in sink.requests if r["path"].startswith("/form/")] == [
        ("GET", form_path), ("GET", form_path)]


def test_every_control_is_reached_by_keyboard_and_named(sandbox_page, busy_channel):
    page = sandbox_page
    page.goto(f"/_sandbox/channels/{busy_channel['channelId']}")
    count = page.evaluate(f"""() => {{
        const all = [...document.querySelectorAll("{CONTROLS}")];
        all.forEach((el, i) => el.dataset.k = i);
        return all.length; }}""")
    assert count > 20
    reached = []
    for _ in range(count + 5):
        page.keyboard.press("Tab")
        key = page.evaluate("document.activeElement && document.activeElement.dataset.k")
        if key in reached:
            break
        reached.append(key)
    assert sorted(int(k) for k in reached if k is not None) == list(range(count)), reached

    # Each button says what it does to whom: no two "Send" or "Block" buttons a screen reader can't tell apart
    names = page.evaluate("""[...document.querySelectorAll("button")]
        .map(b => (b.getAttribute("aria-label") || b.textContent).replace(/\\s+/g, " ").trim())""")
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
    assert "Send as 林小美" in names and "林小美 blocks the account" in names

    results = Axe().run(page).response
    blocking = [(v["id"], [n["html"][:120] for n in v["nodes"][:3]]) for v in results["violations"]
                if v.get("impact") in ("serious", "critical")]
    assert blocking == []


def test_reissuing_the_secret_asks_first_keyboard_only(sandbox_page, busy_channel, sandbox):
    page = sandbox_page
    channel_id, old_secret = busy_channel["channelId"], busy_channel["channelSecret"]
    page.goto(f"/_sandbox/channels/{channel_id}")
    confirm = page.get_by_role("checkbox", name="Yes, issue a new Channel secret")
    button = page.get_by_role("button", name="Issue a new secret")
    button.focus()
    page.keyboard.press("Enter")  # not confirmed: the browser does not send the form
    expect(page.locator("#channel-secret")).to_have_text(old_secret)
    assert sandbox.control.channel(channel_id)["channelSecret"] == old_secret

    confirm.focus()
    page.keyboard.press("Space")
    expect(confirm).to_be_checked()
    page.keyboard.press("Tab")
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("The old secret no longer works")
    expect(page.get_by_role("status")).to_contain_text("step 4")
    new_secret = sandbox.control.channel(channel_id)["channelSecret"]
    assert new_secret != old_secret
    expect(page.locator("#channel-secret")).to_have_text(new_secret)
    with pytest.raises(LineProblem) as refused:
        LineClient(channel_id, old_secret, host=sandbox.url).verify_credentials()
    assert refused.value.code == "wrong_secret"
    fits(page, "channel page after a reissue")
    assert re.fullmatch(r"[0-9a-f]{32}", new_secret)
