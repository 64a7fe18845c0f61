"""axe-core on every page a shop owner or staff member sees, errors shown included, at phone and desktop width.

Any violation of impact "serious" or "critical" fails the test; the report names the rule, the elements and
axe's own explanation, so the fix can start from the failure message.
"""
import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.pages import sign_in
from tests.browser.tour import tour

BLOCKING = {"serious", "critical"}
WIDTHS = [{"width": 360, "height": 740}, {"width": 1280, "height": 800}]


@pytest.fixture(scope="module")
def axe():
    return Axe()


def violations(axe, page):
    """Blocking violations on the page as it is now, at each width, as readable text (empty when none)."""
    found = []
    for viewport in WIDTHS:
        page.set_viewport_size(viewport)
        results = axe.run(page).response
        for violation in results["violations"]:
            if violation.get("impact") not in BLOCKING:
                continue
            nodes = "\n".join(f"      {', '.join(map(str, node['target']))}: "
                              f"{' '.join(node.get('failureSummary', '').split())[:240]}\n"
                              f"        {' '.join(node['html'].split())[:160]}" for node in violation["nodes"][:3])
            more = len(violation["nodes"]) - 3
            nodes += f"\n      … and {more} more" if more > 0 else ""
            found.append(f"  [{violation['impact']}] {violation['id']} at {viewport['width']} px: "
                         f"{violation['help']} ({violation['helpUrl']})\n{nodes}")
    return found


def report(failures):
    return "axe-core found serious or critical violations:\n" + "\n".join(
        f"{where}:\n" + "\n".join(found) for where, found in failures.items())


def test_every_wizard_page_has_no_serious_violation(page, owner, sandbox, worker, axe):
    slug, email = owner
    failures = {}
    checked = []
    for name in tour(page, slug, email, sandbox.control):
        checked.append(name)
        found = violations(axe, page)
        if found:
            failures[f"{name} ({page.url})"] = found
    assert not failures, report(failures)
    assert any(name.startswith("09-") for name in checked)


def test_account_and_staff_pages_have_no_serious_violation(page, owner, make_user, axe):
    failures = {}

    def check(name):
        found = violations(axe, page)
        if found:
            failures[f"{name} ({page.url})"] = found

    _, email = owner
    sign_in(page, email, lang=None)
    page.goto("/account/password")
    check("password")
    page.locator("main form button[type=submit]").click()
    expect(page.locator(".error-summary")).to_be_visible()
    check("password with errors")
    page.locator("form[action$='/logout'] button").click()
    expect(page).to_have_url(re.compile("/login$"))

    staff = make_user("staff@example.com", staff=True)
    sign_in(page, staff, lang=None)
    page.goto("/shops/")
    check("staff shop list")
    page.locator("#slug").fill("Bad Slug")
    page.locator("main form[action$='/shops/new'] button[type=submit]").click()
    expect(page.locator(".error-summary")).to_be_visible()
    check("staff shop list with errors")
    assert not failures, report(failures)
