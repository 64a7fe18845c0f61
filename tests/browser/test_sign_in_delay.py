"""The sign-in delay in a real browser: an owner who mistyped is told how long to wait (in Chinese, in
seconds), and staff see the delay on the people page at 360 px and lift it with the keyboard alone."""
import re

from playwright.sync_api import expect

from tests.browser.pages import scroll_width, sign_in, tab_to


def test_an_owner_is_told_to_wait_and_staff_lift_the_delay_from_the_people_page(
        app, browser, page, live_app, owner, make_user):
    app.config.update(SIGN_IN_FIRST_DELAY=60)
    slug, email = owner
    person = browser.new_context(base_url=live_app.url, locale="zh-TW", timezone_id="Asia/Taipei")
    mistyped = person.new_page()
    mistyped.goto("/login")
    for _ in range(5):
        mistyped.locator("#email").fill(email)
        mistyped.locator("#password").fill("not my password")
        mistyped.locator("main form button[type=submit]").click()
    alert = mistyped.locator('[data-reason="sign_in_throttled"]')
    expect(alert).to_contain_text(re.compile(r"失敗的次數太多。為了您帳號的安全，請等 \d+ 秒後再試。"))
    expect(alert).to_contain_text("等待時間過後，輸入正確的密碼就能登入。")
    expect(mistyped.locator("#email")).to_have_value(email)  # the e-mail is kept, the form is still there

    sign_in(page, make_user("staff@example.com", staff=True), lang="en")
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto("/shops/people/")
    row = page.locator(f'tr[data-user="{email}"]')
    expect(row.locator("[data-delayed]")).to_contain_text("Sign-in delayed after failed tries, until")
    assert scroll_width(page) <= 360
    expect(page.locator('tr[data-user="staff@example.com"] [data-delayed]')).to_have_count(0)
    tab_to(page, f'tr[data-user="{email}"] form[action$="lift-sign-in-delay"] button')
    page.keyboard.press("Enter")
    expect(page.locator(".flash-success")).to_contain_text(f"{email} can try to sign in again now.")
    expect(row.locator("[data-delayed]")).to_have_count(0)

    mistyped.locator("#password").fill("correct horse")
    mistyped.locator("main form button[type=submit]").click()
    expect(mistyped).to_have_url(re.compile(rf"/setup/{slug}/"))
    person.close()
