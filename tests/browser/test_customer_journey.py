"""A customer's whole way in, in real browsers: the owner sets the form's text, a sandbox user follows and the
sandbox shows the form message with that text; the customer opens the link on a 360 px phone, submits wrong
and then right details (the mobile number in full-width digits) and appears filled in on the owner's
contacts list; the conversation then shows the text and the sticker the customer sent and the reply the
owner typed, as the sandbox user received it."""
import re
import time

from playwright.sync_api import expect

from tests.browser.conftest import TIMEOUT_MS
from tests.browser.pages import scroll_width, set_up_to_the_friend_test, sign_in

TEXT = "歡迎加入晴天烘焙坊！請填寫客戶資料，生日當月有小禮物。"
REPLY = "有的，明天早上九點開門，等你來！"
PHONE = {"width": 360, "height": 740}


def wait_for(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_a_new_friend_fills_in_the_form_on_a_phone_and_talks_with_the_shop(
        app, page, browser, owner, sandbox, live_app, worker):
    slug, email = owner
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    channel_id = channel["channelId"]
    sign_in(page, email, lang="en")
    set_up_to_the_friend_test(page, slug, channel)
    page.goto(f"/setup/{slug}/customer_form")
    bubble = page.locator(".line-preview [data-preview-of]")
    page.locator("#text").fill("")  # an empty box sends the default text, and the bubble shows it
    expect(bubble).to_have_text(re.compile("^Thank you for adding .* as a friend!"))
    page.locator("#text").fill(TEXT)
    expect(bubble).to_have_text(TEXT)  # the preview follows the typing before anything is saved
    page.locator(".settings-form button[type=submit]").click()
    expect(page).to_have_url(re.compile("/test_friend$"))

    # A LINE user adds the account; the sandbox shows the message LINE delivered to them.
    user_id = line.follow(channel_id, name="林小美")["user"]["userId"]
    assert wait_for(lambda: line.sent_messages(channel_id, user_id)), "the form never reached the sandbox"
    lineside = browser.new_context(base_url=sandbox.url, viewport=PHONE, locale="zh-TW")
    lineside.set_default_timeout(TIMEOUT_MS)
    sandbox_page = lineside.new_page()
    sandbox_page.goto(f"/_sandbox/channels/{channel_id}")
    received = sandbox_page.locator(".messages li", has_text=TEXT)
    expect(received).to_have_count(1)
    link = received.locator("a[href*='/form/']").get_attribute("href")
    assert link.startswith(live_app.url)
    lineside.close()

    # The customer opens the link on a phone: invalid details first, then valid ones (full-width digits).
    phone = browser.new_context(viewport=PHONE, locale="zh-TW", timezone_id="Asia/Taipei")
    phone.set_default_timeout(TIMEOUT_MS)
    customer = phone.new_page()
    customer.goto(link)
    expect(customer.locator("h1")).to_have_text(re.compile("的聯絡資料$"))  # in the customer's language
    assert scroll_width(customer) <= 360
    customer.get_by_label("姓名").fill("")
    customer.get_by_label(re.compile("^手機號碼")).fill("12345")
    customer.get_by_label(re.compile("^電子郵件")).fill("mei@")
    customer.get_by_role("button", name="儲存我的資料").click()
    summary = customer.locator(".error-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("li")).to_have_count(3)
    assert scroll_width(customer) <= 360
    customer.get_by_label("姓名").fill("林小美")
    customer.get_by_label(re.compile("^手機號碼")).fill("０９１２－３４５－６７８")
    customer.get_by_label(re.compile("^電子郵件")).fill("mei@example.com")
    customer.get_by_label(re.compile("行銷訊息")).check()
    customer.get_by_role("button", name="儲存我的資料").click()
    expect(customer).to_have_url(re.compile(r"/form/[^/]+/thanks$"))
    phone.close()

    # The owner's contacts list shows her filled in.
    page.goto(f"/c/{slug}/contacts")
    row = page.locator(f'tr[data-contact="{user_id}"]')
    expect(row).to_have_attribute("data-form-filled", "true")
    expect(row).to_have_attribute("data-marketing", "true")
    expect(row).to_contain_text("林小美")
    expect(row).to_contain_text("0912345678")
    expect(row).to_contain_text("Filled in")

    # She writes, and sends a sticker; the owner opens the conversation and replies from the CRM.
    line.send(channel_id, user_id, "text", text="請問明天有開嗎？")
    line.send(channel_id, user_id, "sticker", packageId="446", stickerId="1988")
    row.get_by_role("link", name="林小美").click()
    messages = page.locator("ol.messages li[data-direction=in]")
    for _ in range(50):  # the worker stores them within moments
        if messages.count() >= 2:
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator('li[data-direction=in][data-type=text]')).to_contain_text("請問明天有開嗎？")
    sticker = page.locator('li[data-direction=in][data-type=sticker]')
    expect(sticker.locator("img")).to_have_attribute("alt", re.compile("Sticker"))  # the picture, not numbers
    assert wait_for(lambda: line.read_marks(channel_id, user_id)), "opening the conversation marks it read"
    page.get_by_label("Your message").fill(REPLY)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".flashes")).to_contain_text("on its way by reply (free)")
    mine = page.locator("li[data-direction=out]", has_text=REPLY)
    expect(mine).to_have_count(1)
    delivered = wait_for(lambda: [m for m in line.sent_messages(channel_id, user_id)
                                  if m["message"].get("text") == REPLY and m["delivered"]])
    assert [m["kind"] for m in delivered] == ["reply"]
    page.reload()
    expect(mine).to_have_attribute("data-status", "sent")
    expect(mine).to_contain_text("Delivered to LINE")
    # Newest last: the form, her text, her sticker, the reply.
    kinds = page.locator("ol.messages li").evaluate_all(
        "items => items.map(li => li.dataset.direction + ':' + li.dataset.type)")
    assert kinds == ["out:text", "in:text", "in:sticker", "out:text"]

    page.set_viewport_size(PHONE)
    page.reload()
    assert scroll_width(page) <= 360
