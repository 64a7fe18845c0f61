"""What the browser tests read off the wizard's pages and compare with the status JSON and ``line doctor``.

A step page shows its state as ``<section class="status status-<state>" data-reason="<reason>">``; the
Connected page as ``data-reason="connected"`` (or ``not_connected``). These helpers read that, ask
``GET /api/v1/shops/<slug>/status`` with the page's own cookies, run ``flask line doctor --json``, and
assert that all three say the same thing.
"""
import json
import re

from playwright.sync_api import expect

STEP_KEYS = ["prepare", "create_account", "enable_messaging_api", "credentials", "webhook_url",
             "response_settings", "customer_form", "test_friend"]


def sign_in(page, email, password="correct horse", lang="en"):
    """Sign in through the form, as a person does; ``lang=None`` keeps the default language."""
    page.goto("/login" + (f"?lang={lang}" if lang else ""))
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("main form button[type=submit]").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def shown_status(page):
    """(state, reason) as the page shows them."""
    status = page.locator("main .status").first
    classes = (status.get_attribute("class") or "").split()
    states = [c[len("status-"):] for c in classes if c.startswith("status-")]
    assert len(states) == 1, f"one status-<state> class expected, got {classes}"
    return states[0], status.get_attribute("data-reason")


def api_status(page, slug):
    response = page.request.get(f"/api/v1/shops/{slug}/status")
    assert response.ok, response.text()
    return response.json()


def doctor_status(runner, slug):
    result = runner.invoke(args=["line", "doctor", slug, "--json"])
    status = json.loads(result.output)
    assert result.exit_code == (0 if status["connected"] else 1), result.output
    return status


def step_of(status, key):
    return next(step for step in status["steps"] if step["key"] == key)


def assert_agrees(page, slug, key, expected=None, runner=None):
    """The page, the status JSON and (given a ``runner``) ``line doctor`` report the same state and reason for
    step ``key``; ``expected`` (state, reason) pins what that is. Returns the JSON status."""
    shown = shown_status(page)
    if expected is not None:
        assert shown == tuple(expected), f"page shows {shown}, expected {expected}"
    status = api_status(page, slug)
    step = step_of(status, key)
    assert (step["state"], step["reason"]) == shown, f"API says {step}, page shows {shown}"
    # Same session, same language: the sentence is the same too.
    assert " ".join(step["message"].split()) in " ".join(page.locator("main .status").first.inner_text().split())
    if runner is not None:
        doctor = step_of(doctor_status(runner, slug), key)
        assert (doctor["state"], doctor["reason"]) == shown, f"line doctor says {doctor}, page shows {shown}"
    return status


def rail_state(page, key):
    """The state the progress rail shows for a step (its ``state-<state>`` class)."""
    index = STEP_KEYS.index(key)
    classes = page.locator(".rail .rail-item").nth(index).get_attribute("class").split()
    return next(c[len("state-"):] for c in classes if c.startswith("state-"))


def scroll_width(page):
    """How wide the page lays out, measured once its stylesheet and fonts are in.

    A click that submits a form resolves as soon as the new page's elements exist; measured then, before
    ``app.css`` has arrived, an unstyled form is wider than a phone (seen once as 376 px on a busy machine).
    """
    page.wait_for_load_state("load")
    return page.evaluate("document.fonts.ready.then(() => document.documentElement.scrollWidth)")


def focus_ring(page):
    """How the focused element shows focus: its outline (style, width in px) and box-shadow."""
    return page.evaluate("""() => {
        const el = document.activeElement, s = getComputedStyle(el);
        return {tag: el.tagName.toLowerCase(), id: el.id, style: s.outlineStyle,
                width: parseFloat(s.outlineWidth) || 0, color: s.outlineColor, shadow: s.boxShadow};
    }""")


def tab_to(page, selector, limit=60):
    """Press Tab until the element matching ``selector`` has focus; returns how many presses it took."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return presses
    raise AssertionError(f"{selector} not reached with {limit} presses of Tab")


def save_credentials(page, slug, channel):
    """Step 4 as an owner fills it in."""
    page.goto(f"/setup/{slug}/credentials")
    page.locator("#channel_id").fill(channel["channelId"])
    page.locator("#channel_secret").fill(channel["channelSecret"])
    page.locator(".credentials-form button[type=submit]").click()


def set_up_to_the_friend_test(page, slug, channel):
    """Steps 1 to 7 through their pages: boxes ticked, credentials saved, "Set it for me", auto-response
    confirmed, the customer form's settings saved as they are (which moves on to step 8)."""
    for key, box in (("prepare", "line_login"), ("create_account", "account_created")):
        page.goto(f"/setup/{slug}/{key}")
        page.locator(f"#{box}").check()
        page.locator(".confirm-form button[type=submit]").click()
    save_credentials(page, slug, channel)
    page.goto(f"/setup/{slug}/webhook_url")
    page.locator("form:has(input[value=set_endpoint]) button[type=submit]").click()
    page.goto(f"/setup/{slug}/response_settings")
    page.locator("#auto_response").check()
    page.locator(".confirm-form button[type=submit]").click()
    page.locator(".settings-form button[type=submit]").click()


def connect_as_documented(page, slug, line, name="林小美"):
    """A sandbox channel, steps 1 to 7 through their pages and a friend's follow: the shop as the setup document
    leaves it, on its "connected" page. Returns the channel."""
    channel = line.create_channel(display_name="晴天烘焙坊")
    set_up_to_the_friend_test(page, slug, channel)
    line.follow(channel["channelId"], name=name)
    page.goto(f"/setup/{slug}/connected")
    return channel


def check_now(app, slug):
    """The watch's check of one shop, as a round runs it (drift.check_now): its (state, reason)."""
    from wizard.extensions import db
    from wizard.models import Shop
    from wizard.watch import drift
    with app.app_context():
        [health] = drift.check_now([db.session.scalar(db.select(Shop).filter_by(slug=slug))])
        return health.state, health.reason
