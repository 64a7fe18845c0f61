"""Staff pages in a real browser: every one carries the staff navigation (the mails and messages pages too),
"send the invitation again" on a shop's page stays on that page with its flash, and a new API token has a copy
button (app.js, no inline script: the CSP forbids it) that puts the token on the clipboard."""
from playwright.sync_api import expect

from tests.browser.pages import sign_in
from wizard.extensions import db

NAV = ["Shops", "People", "API tokens", "Audit log", "Mails sent", "Messages to LINE"]


def _invited_shop(app, staff_email):
    from wizard import invitations
    from wizard.models import User
    with app.app_context():
        staff = db.session.scalar(db.select(User).filter_by(email=staff_email))
        invitations.create_shop("new-bakery", "新麵包店", "new-owner@example.com", staff)
        db.session.commit()


def test_every_staff_page_has_the_staff_navigation(app, page, make_user, live_app):
    staff = make_user("helper@example.com", staff=True)
    _invited_shop(app, staff)
    sign_in(page, staff, lang="en")
    for path in ("/shops/", "/shops/mail/", "/shops/messages/", "/shops/people/", "/shops/tokens/",
                 "/shops/audit/", "/shops/new-bakery/"):
        page.goto(path)
        nav = page.get_by_role("navigation", name="Staff pages")
        for name in NAV:
            expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()


def test_sending_the_invitation_again_stays_on_the_shops_page(app, page, make_user, live_app):
    staff = make_user("helper@example.com", staff=True)
    _invited_shop(app, staff)
    sign_in(page, staff, lang="en")
    page.goto("/shops/new-bakery/")
    page.get_by_role("button", name="Send the invitation again").click()
    expect(page).to_have_url(f"{live_app.url}/shops/new-bakery/")
    expect(page.locator(".flashes")).to_contain_text("New invitation made.")


def test_a_new_token_has_a_copy_button(app, context, make_user, live_app):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    staff = make_user("helper@example.com", staff=True)
    sign_in(page, staff, lang="en")
    page.goto("/shops/tokens/")
    page.get_by_label("Token name").fill("CRM sync")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("[data-token]").text_content().strip()
    assert len(token) > 20
    page.locator(".new-token").get_by_role("button", name="Copy").click()
    expect(page.locator(".new-token .copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == token
