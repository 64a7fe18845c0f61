"""A new shop owner connects their LINE Official Account in a real browser, against the LINE sandbox.

The owner clicks, ticks and types as a person would; the sandbox plays LINE, including the owner's changes in
LINE's own console and a customer adding the account as a friend. At every step the page, the status JSON
and ``line doctor`` must tell the same story.
"""
import re

from playwright.sync_api import expect

from tests.browser.pages import (api_status, assert_agrees, doctor_status, focus_ring, rail_state, sign_in,
                                 step_of, tab_to)

WRONG_SECRET = "0123456789abcdef" * 2  # well-formed, so LINE itself must refuse it


def title_is(page, number, title):
    heading = f"Step {number} of 9: {title}"
    expect(page.locator("h1")).to_have_text(heading)
    expect(page).to_have_title(re.compile("^" + re.escape(heading)))


def test_new_owner_walks_through_every_step(page, owner, sandbox, runner, worker, live_app):
    slug, email = owner
    line = sandbox.control
    # LINE as a new channel has it: webhook switched off and chat mode "bot".
    channel = line.create_channel(display_name="晴天烘焙坊", webhook_active=False, chat_mode="bot")

    def agree(key, expected):
        return assert_agrees(page, slug, key, expected, runner)

    sign_in(page, email, lang="en")

    # 1. Prepare: the owner confirms what cannot be checked.
    expect(page).to_have_url(re.compile(f"/setup/{slug}/prepare$"))
    title_is(page, 1, "Before you start")
    agree("prepare", ("todo", "not_confirmed"))
    page.get_by_role("checkbox", name=re.compile("I have a LINE account")).check()
    page.get_by_role("button", name="Save and continue").click()

    # 2. Create the LINE Official Account: confirmed, with the basic ID the owner sees in LINE.
    expect(page).to_have_url(re.compile("/create_account$"))
    title_is(page, 2, "Create the LINE Official Account")
    assert rail_state(page, "prepare") == "done"
    agree("create_account", ("todo", "not_confirmed"))
    expect(page.get_by_role("link", name=re.compile("Create a LINE Official Account"))).to_have_attribute(
        "href", re.compile(r"^https://"))
    page.get_by_role("checkbox", name=re.compile("I have created the LINE Official Account")).check()
    page.get_by_label("Basic ID of the account (optional)").fill(channel["basicId"])
    page.get_by_role("button", name="Save and continue").click()

    # 3. Enable the Messaging API: nothing to check yet, the credentials will prove it.
    expect(page).to_have_url(re.compile("/enable_messaging_api$"))
    title_is(page, 3, "Enable the Messaging API")
    agree("enable_messaging_api", ("todo", "awaiting_credentials"))
    expect(page.locator("main")).to_contain_text("“晴天烘焙坊”")  # the provider name we suggest
    page.get_by_role("link", name=re.compile("Next")).click()

    # 4. Channel ID and Channel secret: first a secret LINE refuses.
    expect(page).to_have_url(re.compile("/credentials$"))
    title_is(page, 4, "Channel ID and Channel secret")
    agree("credentials", ("todo", "no_credentials"))
    channel_id, secret = page.get_by_label("Channel ID", exact=True), page.get_by_label("Channel secret",
                                                                                         exact=True)
    expect(channel_id).to_have_attribute("inputmode", "numeric")
    channel_id.fill(channel["channelId"])
    secret.fill(WRONG_SECRET)
    page.get_by_role("button", name="Check and save").click()

    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("LINE did not accept this Channel secret.")
    expect(page.locator("#channel_secret-error")).to_contain_text("LINE did not accept this Channel secret.")
    expect(page.locator("#channel_secret-error")).to_contain_text("Issue")  # was it reissued?
    expect(secret).to_have_attribute("aria-invalid", "true")
    expect(secret).to_have_attribute("aria-describedby", re.compile(r"\bchannel_secret-error\b"))
    expect(channel_id).to_have_value(channel["channelId"])  # nothing typed is lost
    expect(secret).to_have_value("")  # a refused secret is never sent back into the page
    # Masked like the password it is; "Show the secret" reveals what is typed, to compare with LINE's screen.
    expect(secret).to_have_attribute("type", "password")
    page.get_by_role("button", name="Show the secret").click()
    expect(secret).to_have_attribute("type", "text")
    expect(page.get_by_role("button", name="Hide the secret")).to_have_attribute("aria-pressed", "true")
    # The error is the page's one verdict: no "not entered yet" beside it, while nothing is saved.
    expect(page.locator("main .status")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("have not been entered yet")
    assert step_of(api_status(page, slug), "credentials")["reason"] == "no_credentials"

    # The summary's link leads to the field; the owner pastes the right secret.
    summary.get_by_role("link").first.click()
    expect(secret).to_be_focused()
    secret.fill(channel["channelSecret"])
    page.get_by_role("button", name="Check and save").click()

    expect(page.locator(".flash")).to_contain_text("LINE accepted the Channel ID and Channel secret.")
    expect(page.locator(".account-name")).to_have_text("晴天烘焙坊")
    expect(page.locator(".account-card")).to_contain_text(channel["basicId"])
    masked = page.locator(".saved dd").nth(1)
    expect(masked).to_have_text("•" * 8 + channel["channelSecret"][-4:])
    assert channel["channelSecret"] not in page.content()
    expect(secret).to_have_value("")  # changing it means entering it again
    agree("credentials", ("done", "credentials_verified"))
    assert rail_state(page, "enable_messaging_api") == "done"
    # The basic ID the owner gave in step 2 matches the account the credentials revealed.
    account = step_of(api_status(page, slug), "create_account")
    assert (account["state"], account["reason"]) == ("done", "account_found")
    page.get_by_role("link", name=re.compile("Next")).click()

    # 5. Webhook URL: ours, large; LINE has none yet. "Set it for me", then LINE's own test.
    expect(page).to_have_url(re.compile("/webhook_url$"))
    title_is(page, 5, "Webhook URL")
    agree("webhook_url", ("action_needed", "endpoint_not_set"))
    url = page.locator("#webhook-url").inner_text().strip()
    assert re.fullmatch(re.escape(live_app.url) + r"/line/webhook/[A-Za-z0-9_-]{22,}", url), url
    # The copy button puts exactly the shown URL on the clipboard (127.0.0.1 counts as a secure origin).
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator(".copy-block").get_by_role("button", name="Copy").click()
    expect(page.locator(".copy-block .copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == url
    page.get_by_role("button", name="Set it for me").click()
    # After the action the page asked LINE again and says what it found; the message takes focus.
    flash = page.locator(".flashes")
    expect(flash).to_contain_text("Checked again just now: LINE has the webhook URL.")
    expect(flash).to_be_focused()
    assert line.channel(channel["channelId"])["endpoint"] == url
    agree("webhook_url", ("todo", "endpoint_matches"))
    expect(page.get_by_role("button", name="Set it for me")).to_have_count(0)  # only the next action

    page.get_by_role("button", name="Verify").click()
    expect(flash).to_contain_text("LINE has the webhook URL and its test call reached the CRM.")
    # One verdict in words; LINE's raw answer ("200 OK") is not shown.
    assert "200 OK" not in page.locator("main").inner_text()
    expect(page.locator(".test-result")).to_have_count(0)
    again = page.get_by_role("button", name="Have LINE test it again")
    expect(again).to_be_disabled()  # LINE's hourly limit: a cooldown
    expect(page.locator("#test-wait")).to_contain_text("seconds")
    agree("webhook_url", ("done", "webhook_verified"))
    page.get_by_role("link", name=re.compile("Next")).click()

    # 6. Response settings, read back from LINE: webhook off, then chat mode "bot", each explained.
    expect(page).to_have_url(re.compile("/response_settings$"))
    title_is(page, 6, "Response settings")
    agree("response_settings", ("action_needed", "webhook_inactive"))
    checklist = page.locator(".checklist")
    expect(checklist).to_contain_text("Use webhook: off — turn it on")
    expect(checklist).to_contain_text("LINE Official Account Manager: Settings → Response settings → Webhook: on.")
    expect(checklist).to_contain_text("LINE Developers Console: your channel → Messaging API tab")
    expect(checklist).to_contain_text("Chat: off (bot mode) — turn it on")

    line.update(channel["channelId"], webhook_active=True)  # the owner switches the webhook on in LINE
    page.get_by_role("button", name="Check again").click()
    agree("response_settings", ("action_needed", "chat_mode_bot"))
    expect(checklist).to_contain_text("Use webhook: on")
    expect(checklist).to_contain_text("Settings → Response settings → Chat: on.")

    line.update(channel["channelId"], chat_mode="chat")  # ... and chat on
    page.get_by_role("button", name="Check again").click()
    agree("response_settings", ("unverifiable", "auto_response_unconfirmed"))
    expect(checklist).to_contain_text("Chat: on")
    page.locator("details summary", has_text="What changes for me").click()
    expect(page.locator("details[open]")).to_contain_text("no longer marked as read automatically")
    page.get_by_role("checkbox", name=re.compile("auto-response messages are on")).check()
    page.get_by_role("button", name="Save and continue").click()

    # 7. The customer data form: its settings, saved as they are.
    expect(page).to_have_url(re.compile("/customer_form$"))
    title_is(page, 7, "Customer data form")
    page.get_by_role("button", name="Save and continue").click()

    # 8. Test by adding a friend: the page waits, a customer follows, the page updates by itself.
    expect(page).to_have_url(re.compile("/test_friend$"))
    title_is(page, 8, "Test by adding a friend")
    agree("test_friend", ("todo", "no_follow_yet"))
    assert rail_state(page, "response_settings") == "done"
    basic = channel["basicId"].lstrip("@")
    expect(page.locator("#friend-url")).to_have_text(f"https://line.me/R/ti/p/%40{basic}")
    expect(page.locator(".qr svg")).to_be_visible()
    live = page.locator("#friend-live")
    expect(live).to_have_attribute("aria-live", "polite")
    expect(live).to_contain_text("Waiting for the first friend")

    page.evaluate("window.__sameDocument = true")
    line.follow(channel["channelId"], name="林小美")
    expect(live).to_contain_text("林小美 added the account as a friend", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(live).to_contain_text("Last thing LINE sent us: someone added the account as a friend at")
    expect(live).not_to_contain_text("(follow)")
    expect(page.locator("main .status")).to_have_class(re.compile(r"\bstatus-done\b"))
    status = agree("test_friend", ("done", "follow_received"))
    assert status["connected"] is True
    assert rail_state(page, "test_friend") == "done"

    # 9. Connected: every check with its time.
    live.get_by_role("link").click()
    expect(page).to_have_url(re.compile("/connected$"))
    title_is(page, 9, "Connected")
    expect(page.locator(".rail [aria-current=step]")).to_contain_text("Summary")
    expect(page.locator("main .status")).to_have_attribute("data-reason", "connected")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(8)
    for index in range(8):
        expect(rows.nth(index).locator("td").first).to_have_text("Done")
        expect(rows.nth(index).locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    status = doctor_status(runner, slug)
    assert status["connected"] is True
    assert [(s["key"], s["state"]) for s in status["steps"]] == [
        (key, "done") for key in ("prepare", "create_account", "enable_messaging_api", "credentials",
                                  "webhook_url", "response_settings", "customer_form", "test_friend")]
    assert status["steps"][1]["reason"] == "account_found"  # the basic ID given in step 2 matched


def test_credentials_with_the_keyboard_alone(page, owner, sandbox):
    slug, email = owner
    channel = sandbox.control.create_channel(display_name="晴天烘焙坊")

    # Sign in: the first Tab reaches the skip link, which shows itself.
    page.goto("/login?lang=en")
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0, "the focused skip link is off screen"
    tab_to(page, "#email")
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("/prepare$"))

    # From the progress rail to step 4.
    tab_to(page, f".rail a[href$='/{slug}/credentials']")
    ring = focus_ring(page)
    assert ring["style"] != "none" and ring["width"] >= 2, f"no visible focus on the rail link: {ring}"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("/credentials$"))

    # The skip link lands on the step's own content, past the header and the progress rail.
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#step-content")).to_be_focused()
    presses = tab_to(page, "#channel_id")
    assert presses <= 3, f"{presses} presses of Tab from the skip link to the first field"
    ring = focus_ring(page)
    assert ring["style"] != "none" and ring["width"] >= 2, f"no visible focus on the Channel ID field: {ring}"
    page.keyboard.type(channel["channelId"])
    page.keyboard.press("Tab")
    expect(page.locator("#channel_secret")).to_be_focused()
    page.keyboard.type("f" * 32)
    page.keyboard.press("Enter")

    # The error summary takes focus; its link takes the owner back to the field.
    expect(page.locator(".error-summary")).to_be_focused()
    page.keyboard.press("Tab")
    link = page.locator(".error-summary a").first
    expect(link).to_be_focused()
    ring = focus_ring(page)
    assert ring["style"] != "none" and ring["width"] >= 2, f"no visible focus on the summary link: {ring}"
    page.keyboard.press("Enter")
    expect(page.locator("#channel_secret")).to_be_focused()
    expect(page.locator("#channel_id")).to_have_value(channel["channelId"])
    page.keyboard.press("Control+A")
    page.keyboard.type(channel["channelSecret"])
    page.keyboard.press("Enter")

    expect(page.locator(".account-name")).to_have_text("晴天烘焙坊")
    assert_agrees(page, slug, "credentials", ("done", "credentials_verified"))
    # The submit button shows focus too.
    tab_to(page, ".credentials-form button[type=submit]")
    ring = focus_ring(page)
    assert ring["style"] != "none" and ring["width"] >= 2, f"no visible focus on the button: {ring}"


def test_a_busy_line_keeps_what_was_typed_and_says_to_wait(page, owner, sandbox):
    slug, email = owner
    line = sandbox.control
    channel = line.create_channel(display_name="晴天烘焙坊")
    line.fail(channel["channelId"], 429, times=1)  # LINE answers the next call with "slow down"
    sign_in(page, email, lang="en")
    page.goto(f"/setup/{slug}/credentials")
    page.get_by_label("Channel ID", exact=True).fill(channel["channelId"])
    page.get_by_label("Channel secret", exact=True).fill(channel["channelSecret"])
    page.get_by_role("button", name="Check and save").click()

    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("LINE asked us to slow down.")
    expect(summary).to_contain_text("Wait a few minutes")
    # Not the owner's typing: no field is marked wrong; the Channel ID is kept, the secret is never sent back.
    expect(page.locator("[aria-invalid=true]")).to_have_count(0)
    expect(page.get_by_label("Channel ID", exact=True)).to_have_value(channel["channelId"])
    expect(page.get_by_label("Channel secret", exact=True)).to_have_value("")
    expect(summary).to_contain_text("Reference for the onboarding staff: rate_limited-429-")
    expect(page.locator("main .status")).to_have_count(0)

    page.get_by_label("Channel secret", exact=True).fill(channel["channelSecret"])
    page.get_by_role("button", name="Check and save").click()  # a moment later LINE answers again
    expect(page.locator(".account-name")).to_have_text("晴天烘焙坊")
    assert_agrees(page, slug, "credentials", ("done", "credentials_verified"))
