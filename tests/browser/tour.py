"""A tour of every page a shop owner sees, in every state worth looking at, for screenshots and axe-core.

``tour`` drives the browser through the wizard as an owner would (in whatever language the page speaks, so
it finds things by id and role, never by text) and pauses at each state, yielding its name: the caller
takes a screenshot or runs a check, then the tour goes on. The LINE side is the sandbox, as in
tests/browser/test_walkthrough.py, which asserts the behaviour; here only the pages' looks are examined.
"""
import re

from playwright.sync_api import expect

WRONG_SECRET = "0123456789abcdef" * 2


def _submit(page, form_selector):
    page.locator(f"{form_selector} button[type=submit]").first.click()


def tour(page, slug, email, line):
    """Yield a name per page state: 00-sign-in … 09-connected (with -error and -done variants)."""
    channel = line.create_channel(display_name="晴天烘焙坊", webhook_active=False, chat_mode="bot")

    page.goto("/login")
    yield "00-sign-in"
    page.locator("#email").fill(email)
    _submit(page, "main form")  # no password: the error summary and the field's error
    expect(page.locator(".error-summary")).to_be_visible()
    yield "00-sign-in-error"
    page.locator("#password").fill("correct horse")
    _submit(page, "main form")
    expect(page).to_have_url(re.compile(f"/setup/{slug}/prepare$"))
    yield "01-prepare"

    page.locator(".confirm-form input[type=checkbox]").check()
    _submit(page, ".confirm-form")
    expect(page).to_have_url(re.compile("/create_account$"))
    yield "02-create-account"
    page.locator(".confirm-form input[type=checkbox]").check()
    page.locator("#basic_id").fill("not a basic id!")
    _submit(page, ".confirm-form")
    expect(page.locator(".error-summary")).to_be_visible()
    yield "02-create-account-error"
    page.locator("#basic_id").fill(channel["basicId"])
    _submit(page, ".confirm-form")
    expect(page).to_have_url(re.compile("/enable_messaging_api$"))
    yield "03-enable-messaging-api"

    page.locator(".step-nav a[rel=next]").click()
    expect(page).to_have_url(re.compile("/credentials$"))
    yield "04-credentials"
    page.locator("#channel_id").fill(channel["channelId"])
    page.locator("#channel_secret").fill(WRONG_SECRET)
    _submit(page, ".credentials-form")
    expect(page.locator(".error-summary")).to_be_focused()
    yield "04-credentials-error"
    page.locator("#channel_secret").fill(channel["channelSecret"])
    _submit(page, ".credentials-form")
    expect(page.locator(".account-card")).to_be_visible()
    yield "04-credentials-done"

    page.locator(".step-nav a[rel=next]").click()
    expect(page).to_have_url(re.compile("/webhook_url$"))
    yield "05-webhook-url"
    page.locator("form:has(input[name=action][value=set_endpoint]) button[type=submit]").click()
    expect(page.locator("main .status")).to_have_attribute("data-reason", "endpoint_matches")
    page.locator("form:has(input[name=action][value=test]) button[type=submit]").click()
    expect(page.locator("main .status")).to_have_attribute("data-reason", "webhook_verified")
    yield "05-webhook-url-verified"

    page.locator(".step-nav a[rel=next]").click()
    expect(page).to_have_url(re.compile("/response_settings$"))
    yield "06-response-settings"
    line.update(channel["channelId"], webhook_active=True, chat_mode="chat")
    _submit(page, ".status-actions")
    expect(page.locator("main .status")).to_have_class(re.compile(r"\bstatus-unverifiable\b"))
    page.locator(".confirm-form input[type=checkbox]").check()
    _submit(page, ".confirm-form")

    expect(page).to_have_url(re.compile("/customer_form$"))
    yield "07-customer-form"
    _submit(page, ".settings-form")

    expect(page).to_have_url(re.compile("/test_friend$"))
    yield "08-test-friend"
    line.follow(channel["channelId"], name="林小美")
    expect(page.locator("#friend-live")).to_contain_text("林小美", timeout=10_000)
    expect(page.locator("main .status")).to_have_class(re.compile(r"\bstatus-done\b"))
    yield "08-test-friend-done"

    page.locator("#friend-live a").click()
    expect(page).to_have_url(re.compile("/connected$"))
    expect(page.locator("main .status")).to_have_attribute("data-reason", "connected")
    yield "09-connected"
