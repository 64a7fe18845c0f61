"""A card (image, title, text, up to three buttons) as LINE's Flex bubble, and back: the owner fills a form,
LINE gets JSON neither of them has to read.

A card is a dict ``{"image": URL or "", "title": str, "text": str, "buttons": [{"label", "kind", "value"}]}``
where a button's ``kind`` is ``uri`` (opens ``value``, a web address) or ``message`` (the customer sends
``value`` as their own message). ``bubble(card)`` builds LINE's bubble in one fixed shape, so ``card(bubble)``
reads it back for the edit page; a bubble of any other shape (made through the API) is ``None`` there and is
kept as it is. ``field_for(card, path)`` says which of the card's fields a LINE refusal of ``path`` (what
follows ``contents.`` in LINE's ``property``) is about, so its explanation stands next to that field.
"""
import re

MAX_BUTTONS = 3
MAX_CARDS = 10  # a carousel: LINE takes 12 bubbles; ten keep it quick to read on a phone
# LINE's limits for a Flex button's action: a label of up to 40 characters, a URI of up to 1,000, a text of 300.
MAX_LABEL = 40
MAX_URI = 1000
MAX_MESSAGE = 300
MAX_TITLE = 100
MAX_TEXT = 1000
BUTTON_KINDS = ("uri", "message")
URI_SCHEMES = ("https://", "http://", "line://", "tel:")


def empty_card():
    return {"image": "", "title": "", "text": "", "buttons": []}


def bubble(card):
    """LINE's Flex bubble for ``card``: the image as the hero, the title and text in the body, the buttons
    in the footer; a part left empty is left out (LINE refuses empty texts and boxes)."""
    result = {"type": "bubble"}
    if card.get("image"):
        result["hero"] = {"type": "image", "url": card["image"], "size": "full", "aspectRatio": "20:13",
                          "aspectMode": "cover"}
    body = []
    if card.get("title"):
        body.append({"type": "text", "text": card["title"], "weight": "bold", "size": "lg", "wrap": True})
    if card.get("text"):
        body.append({"type": "text", "text": card["text"], "size": "sm", "color": "#555555", "wrap": True})
    if body:
        result["body"] = {"type": "box", "layout": "vertical", "spacing": "sm", "contents": body}
    buttons = [_button(b) for b in card.get("buttons", [])]
    if buttons:
        result["footer"] = {"type": "box", "layout": "vertical", "spacing": "sm", "contents": buttons}
    return result


def _button(button):
    if button["kind"] == "uri":
        action = {"type": "uri", "label": button["label"], "uri": button["value"]}
    else:
        action = {"type": "message", "label": button["label"], "text": button["value"]}
    return {"type": "button", "style": "link", "height": "sm", "action": action}


def card(value):
    """The card a bubble of ``bubble``'s shape holds, or None for any other bubble."""
    if not isinstance(value, dict) or value.get("type") != "bubble" or set(value) - {"type", "hero", "body",
                                                                                     "footer"}:
        return None
    result = empty_card()
    hero = value.get("hero")
    if hero is not None:
        if not isinstance(hero, dict) or hero.get("type") != "image" or not isinstance(hero.get("url"), str):
            return None
        result["image"] = hero["url"]
    body = value.get("body")
    if body is not None:
        texts = _contents(body)
        if texts is None or not texts or len(texts) > 2 or any(t.get("type") != "text" for t in texts):
            return None
        for text in texts:
            key = "title" if text.get("weight") == "bold" and not result["title"] and not result["text"] else "text"
            if result[key] or not isinstance(text.get("text"), str):
                return None
            result[key] = text["text"]
    footer = value.get("footer")
    if footer is not None:
        buttons = _contents(footer)
        if buttons is None or not buttons or len(buttons) > MAX_BUTTONS:
            return None
        for item in buttons:
            action = item.get("action") if isinstance(item, dict) and item.get("type") == "button" else None
            if not isinstance(action, dict) or action.get("type") not in BUTTON_KINDS:
                return None
            value_key = "uri" if action["type"] == "uri" else "text"
            result["buttons"].append({"label": str(action.get("label", "")), "kind": action["type"],
                                      "value": str(action.get(value_key, ""))})
    return result


def _contents(box):
    if not isinstance(box, dict) or box.get("type") != "box" or not isinstance(box.get("contents"), list):
        return None
    return box["contents"]


def check(card, problem):
    """Our own checks of a card before LINE sees it, each reported as ``problem(field, message)`` with the
    card's field (``title``, ``buttons.1.value`` …). ``problem`` words the message (the caller's language)."""
    from flask_babel import gettext as _
    if not (card.get("image") or card.get("title") or card.get("text")):
        problem("title", _("A card needs at least a picture, a title or a text."))
    if len(card.get("title", "")) > MAX_TITLE:
        problem("title", _("The title is longer than %(num)d characters.", num=MAX_TITLE))
    if len(card.get("text", "")) > MAX_TEXT:
        problem("text", _("The text is longer than %(num)d characters.", num=MAX_TEXT))
    for field in ("title", "text"):
        if "{name}" in card.get(field, ""):
            problem(field, _("{name} can only be used in a text message, not in a card."))
    if len(card.get("buttons", [])) > MAX_BUTTONS:
        problem("buttons", _("A card has at most %(num)d buttons.", num=MAX_BUTTONS))
    for n, button in enumerate(card.get("buttons", [])):
        label, value = button.get("label", "").strip(), button.get("value", "").strip()
        if not label:
            problem(f"buttons.{n}.label", _("Give the button a label (what the customer taps)."))
        elif len(label) > MAX_LABEL:
            problem(f"buttons.{n}.label", _("A button's label is at most %(num)d characters.", num=MAX_LABEL))
        if button.get("kind") == "uri":
            if not value.startswith(URI_SCHEMES):
                problem(f"buttons.{n}.value", _("Type the web address the button opens, starting with https://."))
            elif len(value) > MAX_URI or re.search(r"\s", value):
                problem(f"buttons.{n}.value", _("This web address is too long or has spaces in it."))
        elif button.get("kind") == "message":
            if not value:
                problem(f"buttons.{n}.value", _("Type the text the customer sends by tapping the button."))
            elif len(value) > MAX_MESSAGE:
                problem(f"buttons.{n}.value", _("The text is longer than %(num)d characters.", num=MAX_MESSAGE))
        else:
            problem(f"buttons.{n}.value", _("Choose what the button does."))


_BODY = re.compile(r"^body\.contents\[(\d+)\]")
_FOOTER = re.compile(r"^footer\.contents\[(\d+)\](?:\.action\.(\w+))?")


def field_for(card, path):
    """The card's field a LINE property path inside its bubble (``hero.url``, ``body.contents[1].text``,
    ``footer.contents[0].action.uri``) is about; "" for the card as a whole."""
    if path.startswith("hero"):
        return "image"
    found = _BODY.match(path)
    if found:
        parts = [key for key in ("title", "text") if card.get(key)]
        index = int(found.group(1))
        return parts[index] if index < len(parts) else ""
    found = _FOOTER.match(path)
    if found:
        index, key = int(found.group(1)), found.group(2)
        return f"buttons.{index}.label" if key == "label" else f"buttons.{index}.value"
    return ""
