"""The template builder on a 360 px phone, in Chinese: the preview follows the typing (static/js/
message_templates.js), an emoji goes in at the cursor, a chosen picture shows at once, nothing is wider than
the screen, and the whole form is reachable by keyboard."""

import re

from playwright.sync_api import expect
from PIL import Image

from tests.browser.pages import scroll_width, sign_in


def test_the_preview_follows_the_typing_on_a_phone(page, owner, tmp_path):
    slug, email = owner
    sign_in(page, email, lang="zh_Hant_TW")
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"/c/{slug}/templates/new")
    expect(page.locator("h1")).to_have_text("新增圖文訊息範本")
    text = page.locator("#messages-0-text")
    text.fill("歡迎光臨")
    text.evaluate("el => el.setSelectionRange(0, 0)")  # the cursor at the start
    page.locator("#messages-0-text").focus()
    page.get_by_role("button", name="插入客戶名字").click()
    expect(text).to_have_value("{name}歡迎光臨")  # at the cursor, without a round trip to the server
    shown = page.locator('#preview [data-shows="messages-0-text"]')
    expect(shown).to_contain_text("王小明歡迎光臨")
    page.locator("details.lt-emoji-picker summary").click()
    page.get_by_role("button", name="LINE 表情貼 003").click()
    expect(text).to_have_value("{name}{emoji:003}歡迎光臨")
    expect(shown.locator("img.lt-emoji")).to_have_attribute("src", "https://stickershop.line-scdn.net/sticonshop/"
                                                                   "v1/sticon/5ac1bfd5040ab15980c9b435/iPhone/003.png")
    # A card: added by its button (the server), then drawn as it is typed (the script).
    page.get_by_role("button", name="卡片", exact=True).click()
    expect(page.locator("#messages-1 legend").first).to_contain_text("第 2 則訊息（共 2 則）")
    page.locator("#messages-1-cards-0-title").fill("春季新品")
    page.locator("#messages-1-cards-0-buttons-0-label").fill("看看")
    expect(page.locator('#preview [data-shows="messages-1-cards-0-title"]')).to_have_text("春季新品")
    expect(page.locator('#preview [data-shows="messages-1-cards-0-buttons-0-label"]')).to_be_visible()
    picture = tmp_path / "spring.png"
    Image.new("RGB", (800, 520), (0, 120, 0)).save(picture)
    page.locator("#messages-1-cards-0-image").set_input_files(str(picture))
    expect(page.locator('#preview [data-shows-picture="messages-1-cards-0"]')).to_be_visible()
    assert scroll_width(page) <= 360
    # The form is one keyboard path: Tab reaches the save button.
    page.locator("#name").focus()
    for _ in range(200):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.value") == "save":
            break
    else:
        raise AssertionError("Tab never reached the save button")
    assert page.evaluate("document.activeElement.textContent").strip() == "請 LINE 檢查並儲存"


def test_the_owner_builds_previews_and_saves_a_card_with_a_picture_and_a_button(app, page, line, tmp_path,
                                                                                  screenshots):
    sign_in(page, "owner-sunny-bakery@example.com", lang="zh_Hant_TW")
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"/c/{line.slug}/templates")
    page.get_by_role("link", name="新增範本").click()
    page.locator("#name").fill("春季新品")
    page.get_by_role("button", name="移除").first.click()  # the text message the builder starts with
    page.get_by_role("button", name="卡片", exact=True).click()
    picture = tmp_path / "spring.jpg"
    Image.new("RGB", (1200, 780), (0, 120, 0)).save(picture, "JPEG")
    page.locator("#messages-0-cards-0-image").set_input_files(str(picture))
    page.locator("#messages-0-cards-0-title").fill("春季新品")
    page.locator("#messages-0-cards-0-text").fill("全館九折")
    page.locator("#messages-0-cards-0-buttons-0-label").fill("看看")
    page.locator("#messages-0-cards-0-buttons-0-value").fill("https://example.com/spring")
    page.get_by_role("button", name="預覽", exact=True).last.click()
    # The server's preview, after the round trip: the uploaded picture is ours now, served from /media/.
    hero = page.locator('#preview [data-shows-picture="messages-0-cards-0"]')
    expect(hero).to_have_attribute("src", re.compile(r"^/media/[A-Za-z0-9_-]{32}-preview\.jpg$"))
    assert hero.evaluate("img => img.complete && img.naturalWidth") == 240
    expect(page.locator('#preview [data-shows="messages-0-cards-0-buttons-0-label"]')).to_have_text("看看")
    assert scroll_width(page) <= 360
    page.screenshot(path=str(screenshots / "message-template-builder-360.png"), full_page=True)
    page.get_by_role("button", name="請 LINE 檢查並儲存").click()
    expect(page.locator(".flashes")).to_contain_text("範本「春季新品」已通過 LINE 檢查並儲存。")
    expect(page.locator(".lt-row-name")).to_have_text("春季新品")
