"""Every page at a 360 px phone's width and at 1280 px: nothing scrolls sideways on the phone, and each page is
saved as a full-page screenshot in tests/artifacts/screenshots/ (git-ignored), e.g. 04-credentials-360.png.

The pages are seen in their default language (Traditional Chinese once its catalog is compiled).
"""
from playwright.sync_api import expect

from tests.browser.pages import scroll_width
from tests.browser.tour import tour

# The outermost elements reaching past the right edge: what to fix when a page scrolls sideways.
TOO_WIDE = """limit => [...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > limit + 0.5
                  && !(el.parentElement && el.parentElement.getBoundingClientRect().right > limit + 0.5))
    .slice(0, 5).map(el => el.outerHTML.slice(0, 160))"""
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


def too_wide(page, limit):
    return page.evaluate(TOO_WIDE, limit)


def test_every_page_fits_a_phone_and_is_saved_as_screenshots(page, owner, sandbox, worker, screenshots):
    slug, email = owner
    page.set_viewport_size(PHONE)
    seen = []
    for name in tour(page, slug, email, sandbox.control):
        seen.append(name)
        page.set_viewport_size(PHONE)
        width = scroll_width(page)
        assert width <= PHONE["width"], (f"{name}: the page is {width} px wide on a 360 px phone; too wide: "
                                         f"{too_wide(page, PHONE['width'])}")
        if name.startswith("04-credentials"):
            # The Channel ID field brings up the phone's number pad.
            expect(page.locator("#channel_id")).to_have_attribute("inputmode", "numeric")
        page.screenshot(path=screenshots / f"{name}-360.png", full_page=True)
        page.set_viewport_size(DESKTOP)
        page.screenshot(path=screenshots / f"{name}-1280.png", full_page=True)
        page.set_viewport_size(PHONE)
    pages = {name.split("-")[0] for name in seen}
    assert pages == {f"{n:02d}" for n in range(10)}, seen  # sign-in, the eight steps and the summary
