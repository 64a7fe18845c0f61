"""The sketches of LINE's screens (templates/sketches/): each must stay a clean picture on a 360 px phone.

What an owner would notice: a picture that does not render (broken SVG), one a screen reader cannot name, a
sketch with no marked place to tap, or a label that runs out of its button once translated. Text widths are
estimated with DejaVu Sans' proportions (the wide fallback Linux uses for system-ui), so phones' narrower
system fonts fit too.
"""
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from flask import render_template

SKETCHES = ["create_account", "enable_messaging_api", "choose_provider", "channel_credentials", "webhook_url",
            "response_settings", "developers_console_webhook", "developers_console_redelivery", "add_friend"]
SVG = "{http://www.w3.org/2000/svg}"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "sketches"
# A 360 px phone minus main's padding leaves about 328 px for the picture.
PHONE_CONTENT_PX = 328
# Values the owner supplies (or stand-ins for them) rather than words LINE shows: not translated.
NOT_WORDS = re.compile(r"^(\d+|@\w+|https://…?|•+)$")


def estimated_width(text, size, bold=False):
    """Width in canvas units of ``text`` at ``size``, erring wide."""
    em = 0.0
    for char in text:
        if unicodedata.east_asian_width(char) in "WF" or char in "…@":
            em += 1.0
        elif char == " ":
            em += 0.32
        elif char in "iljtfrI.,:;'!|()[]/-":
            em += 0.4
        elif char in "MWmw%&+=<>~#":
            em += 0.98
        elif char.isupper():
            em += 0.78
        else:
            em += 0.65
    return em * size * (1.1 if bold else 1.0)


def render(app, name, lang="en", **context):
    with app.test_request_context(f"/?lang={lang}"):
        return render_template(f"sketches/{name}.html", **context)


def parse(markup):
    """The rendered template must be exactly one well-formed <svg> element."""
    return ET.fromstring(markup)


def view_box(svg):
    x, y, width, height = (float(v) for v in svg.get("viewBox").split())
    assert (x, y) == (0, 0)
    return width, height


def texts(svg):
    return [t for t in svg.iter(f"{SVG}text")]


def needed_width(text):
    return estimated_width(text.text, float(text.get("font-size")), text.get("font-weight") == "bold")


def test_every_sketch_is_a_named_picture_with_a_place_to_tap(app):
    for name in SKETCHES:
        svg = parse(render(app, name))
        assert svg.tag == f"{SVG}svg", name
        assert svg.get("role") == "img", name
        title = svg.find(f"{SVG}title")
        desc = svg.find(f"{SVG}desc")
        assert title is not None and title.text.strip(), name
        assert desc is not None and desc.text.strip(), name
        # Screen readers take the name from the title and the instruction from the description.
        assert svg.get("aria-labelledby") == title.get("id")
        assert svg.get("aria-describedby") == desc.get("id")
        assert svg.get("width") == "100%" and svg.get("viewBox"), name

        marks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "sketch-highlight"]
        assert marks, f"{name} marks no place to tap"
        for mark in marks:
            ring = mark.find(f"{SVG}rect")
            assert ring.get("fill") == "none" and float(ring.get("stroke-width")) >= 4, name
        badges = [g.find(f"{SVG}text").text for g in svg.iter(f"{SVG}g") if g.get("class") == "sketch-badge"]
        # Badges count the taps in order: 1, 2, 3 …
        assert badges == [str(n) for n in range(1, len(marks) + 1)], name


def test_ids_do_not_clash_when_a_page_shows_several_sketches(app):
    ids = []
    for name in SKETCHES:
        ids += [el.get("id") for el in parse(render(app, name)).iter() if el.get("id")]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("lang", ["en", "zh_Hant_TW"])
def test_every_label_fits_and_reads_at_phone_size(app, lang):
    for name in SKETCHES:
        svg = parse(render(app, name, lang))
        width, height = view_box(svg)
        assert texts(svg), name
        for text in texts(svg):
            label, size = text.text, float(text.get("font-size"))
            assert label and label.strip(), name
            assert size * PHONE_CONTENT_PX / width >= 14, f"{name}: {label!r} is too small on a phone"
            needed = needed_width(text)
            assert needed <= float(text.get("data-fit")), f"{name}: {label!r} ({lang}) does not fit its box"
            x, anchor = float(text.get("x")), text.get("text-anchor", "start")
            left = {"start": x, "middle": x - needed / 2, "end": x - needed}[anchor]
            assert 0 <= left and left + needed <= width, f"{name}: {label!r} runs off the picture"
            assert size <= float(text.get("y")) <= height, name
        # Nothing drawn is cut off at the picture's edge (rings and badges included).
        for rect in svg.iter(f"{SVG}rect"):
            x, y = float(rect.get("x")), float(rect.get("y"))
            assert x >= 0 and y >= 0, name
            assert x + float(rect.get("width")) <= width and y + float(rect.get("height")) <= height, name
        for circle in svg.iter(f"{SVG}circle"):
            cx, cy, r = (float(circle.get(a)) for a in ("cx", "cy", "r"))
            assert r <= cx <= width - r and r <= cy <= height - r, name


def test_every_word_shown_is_translatable_with_a_note_for_the_translator(app):
    """Each label is a msgid with a "zh:" note saying how LINE words it in Chinese; owner values excepted."""
    notes = {}
    for path in TEMPLATES.glob("*.html"):
        for _lineno, message, comments, _context in extract_from_file(
                "jinja2", str(path), keywords={"_": None}, comment_tags=["zh:"]):
            notes.setdefault(message, set()).update(comments)
    for name in SKETCHES:
        for text in texts(parse(render(app, name))):
            label = text.text
            if NOT_WORDS.match(label):
                continue
            assert label in notes, f"{name}: {label!r} does not go through _()"
            assert notes[label], f"{name}: {label!r} has no {{# zh: ... #}} note for the translator"


@pytest.mark.parametrize("owner", [
    {"sketch_account_name": "晴天烘焙坊台北信義旗艦店二號",
     "sketch_provider_name": "晴天烘焙坊股份有限公司台北分公司",
     "sketch_basic_id": "@sunnybakery", "sketch_channel_id": "2001234567",
     "sketch_webhook_url": "https://crm.example.com/line/webhook/abcdef0123456789"},
    {"sketch_account_name": "Sunny <Bakery> & Co. Taipei", "sketch_provider_name": "Sunny <Bakery> & Co."},
], ids=["chinese", "markup"])
def test_the_owners_own_names_appear_cut_to_fit_and_escaped(app, owner):
    start = owner["sketch_account_name"][:4]
    for name in SKETCHES:
        svg = parse(render(app, name, **owner))  # a "<" or "&" in a name must not break the picture
        shown = [t.text for t in texts(svg)]
        for text in texts(svg):
            assert needed_width(text) <= float(text.get("data-fit")), f"{name}: {text.text!r} does not fit"
        if name in {"create_account", "add_friend", "choose_provider", "developers_console_webhook"}:
            assert any(label.startswith(start) and label.endswith("…") for label in shown), (name, shown)
    if "sketch_channel_id" in owner:
        assert "2001234567" in [t.text for t in texts(parse(render(app, "channel_credentials", **owner)))]
        assert "@sunnybakery" in [t.text for t in texts(parse(render(app, "add_friend", **owner)))]
        webhook = [t.text for t in texts(parse(render(app, "webhook_url", **owner)))]
        assert any(label.startswith("https://crm.ex") for label in webhook)
