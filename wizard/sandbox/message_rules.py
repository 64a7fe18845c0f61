"""Message objects checked as LINE checks them before sending, with LINE's ``details`` for each problem.

Every send (reply, push, multicast, narrowcast, broadcast) and the ``/v2/bot/message/validate/…`` endpoints
refuse what LINE refuses, naming the property as LINE does (``messages[0].contents.body.contents[1].text``), so
the app's template builder can explain each refusal next to the field it concerns. Covered: the number of
messages (1–5); text (not empty, at most 5,000 characters) with LINE emoji (``$`` placeholders at the UTF-16
``index`` LINE counts in); stickers; images (https URLs of at most 2,000 characters; the sandbox also takes
http on loopback hosts, as it does for webhooks); Flex bubbles and carousels (at most 12 bubbles) with boxes,
texts, spans, images, icons, buttons, separators and fillers, and the actions a button or block may carry.
The kinds the app never builds (video, audio, location, imagemap, template, textV2, coupon) are checked for
their type only.
"""
import re
from urllib.parse import urlsplit

MESSAGE_TYPES = ["text", "image", "video", "audio", "location", "sticker", "imagemap", "template", "flex",
                 "textV2", "coupon"]
MAX_MESSAGES = 5
MAX_TEXT = 5000
MAX_EMOJIS = 20
MAX_URL = 2000
MAX_URI_ACTION = 1000
MAX_ALT_TEXT = 1500
MAX_BUBBLES = 12
MAX_LABEL = 40
MAX_ACTION_TEXT = 300
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LAYOUTS = ("horizontal", "vertical", "baseline")
COMPONENTS = ("box", "button", "image", "video", "icon", "text", "span", "separator", "filler")
ACTIONS = ("uri", "message", "postback", "datetimepicker", "camera", "cameraRoll", "location",
           "richmenuswitch", "clipboard")
URI_SCHEMES = ("http", "https", "line", "tel")
_PRODUCT_ID = re.compile(r"^[0-9a-f]{24}$")
_EMOJI_ID = re.compile(r"^[0-9]{3}$")

REQUIRED = "must be specified"
EMPTY = "May not be empty"


def problems(items) -> list[dict]:
    """LINE's ``details`` for a request's ``messages``: ``[{"message", "property"}]``, empty when fine."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MESSAGES:
        return [_detail(f"Size must be between 1 and {MAX_MESSAGES}", "messages")]
    found = []
    for index, item in enumerate(items):
        found.extend(_message(item, f"messages[{index}]"))
    return found


def _detail(message, prop):
    return {"message": message, "property": prop}


def _one_of(values):
    return f"Must be one of the following values: [{', '.join(values)}]"


def _length(value, limit, prop, required=True):
    """A string property: present (when required), not empty, at most ``limit`` characters."""
    if value is None:
        return [_detail(REQUIRED, prop)] if required else []
    if not isinstance(value, str):
        return [_detail("must be a string", prop)]
    if not value and required:
        return [_detail(EMPTY, prop)]
    if len(value) > limit:
        return [_detail(f"Length must be between 0 and {limit}", prop)]
    return []


def _image_url(value, prop):
    """An image LINE fetches itself: https (loopback http in the sandbox), at most 2,000 characters."""
    found = _length(value, MAX_URL, prop)
    if found:
        return found
    parts = urlsplit(value)
    secure = parts.scheme == "https" and parts.hostname
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK
    return [] if secure or loopback else [_detail("must be a valid HTTPS URL", prop)]


def _message(item, at) -> list[dict]:
    kind = item.get("type") if isinstance(item, dict) else None
    if kind not in MESSAGE_TYPES:
        return [_detail(_one_of(MESSAGE_TYPES), f"{at}.type")]
    if kind == "text":
        return _text_message(item, at)
    if kind == "textV2":
        return _length(item.get("text"), MAX_TEXT, f"{at}.text")
    if kind == "sticker":
        return [_detail(REQUIRED, f"{at}.{key}") for key in ("packageId", "stickerId") if not item.get(key)]
    if kind == "image":
        return (_image_url(item.get("originalContentUrl"), f"{at}.originalContentUrl")
                + _image_url(item.get("previewImageUrl"), f"{at}.previewImageUrl"))
    if kind == "flex":
        return _flex_message(item, at)
    return []


def _text_message(item, at):
    text = item.get("text")
    found = _length(text, MAX_TEXT, f"{at}.text")
    emojis = item.get("emojis")
    if emojis is None or found:
        return found
    if not isinstance(emojis, list) or len(emojis) > MAX_EMOJIS:
        return [_detail(f"Size must be between 0 and {MAX_EMOJIS}", f"{at}.emojis")]
    # LINE counts the index in UTF-16 code units (as JavaScript does), not in characters.
    units = text.encode("utf-16-le")
    for number, emoji in enumerate(emojis):
        where = f"{at}.emojis[{number}]"
        if not isinstance(emoji, dict):
            found.append(_detail(REQUIRED, where))
            continue
        index = emoji.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(units) // 2:
            found.append(_detail("Invalid emoji index", f"{where}.index"))
        elif units[index * 2:index * 2 + 2] != "$".encode("utf-16-le"):
            found.append(_detail("The character at the index must be '$'", f"{where}.index"))
        if not isinstance(emoji.get("productId"), str) or not _PRODUCT_ID.match(emoji["productId"]):
            found.append(_detail("Invalid productId", f"{where}.productId"))
        if not isinstance(emoji.get("emojiId"), str) or not _EMOJI_ID.match(emoji["emojiId"]):
            found.append(_detail("Invalid emojiId", f"{where}.emojiId"))
    return found


def _flex_message(item, at):
    found = _length(item.get("altText"), MAX_ALT_TEXT, f"{at}.altText")
    contents = item.get("contents")
    where = f"{at}.contents"
    if not isinstance(contents, dict):
        return found + [_detail(REQUIRED, where)]
    kind = contents.get("type")
    if kind == "bubble":
        return found + _bubble(contents, where)
    if kind != "carousel":
        return found + [_detail(_one_of(["bubble", "carousel"]), f"{where}.type")]
    bubbles = contents.get("contents")
    if not isinstance(bubbles, list) or not 1 <= len(bubbles) <= MAX_BUBBLES:
        return found + [_detail(f"Size must be between 1 and {MAX_BUBBLES}", f"{where}.contents")]
    for index, bubble in enumerate(bubbles):
        inner = f"{where}.contents[{index}]"
        if not isinstance(bubble, dict) or bubble.get("type") != "bubble":
            found.append(_detail(_one_of(["bubble"]), f"{inner}.type"))
        else:
            found.extend(_bubble(bubble, inner))
    return found


def _bubble(bubble, at):
    found = []
    for block in ("header", "hero", "body", "footer"):
        part = bubble.get(block)
        if part is None:
            continue
        where = f"{at}.{block}"
        allowed = ("box", "image", "video") if block == "hero" else ("box",)
        if not isinstance(part, dict) or part.get("type") not in allowed:
            found.append(_detail(_one_of(list(allowed)), f"{where}.type"))
        else:
            found.extend(_component(part, where))
    if bubble.get("action") is not None:
        found.extend(_action(bubble["action"], f"{at}.action", label_required=False))
    return found


def _component(part, at):
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in COMPONENTS:
        return [_detail(_one_of(list(COMPONENTS)), f"{at}.type")]
    found = []
    if kind == "box":
        if part.get("layout") not in LAYOUTS:
            found.append(_detail(_one_of(list(LAYOUTS)), f"{at}.layout"))
        children = part.get("contents")
        if not isinstance(children, list):
            found.append(_detail(REQUIRED, f"{at}.contents"))
        else:
            for index, child in enumerate(children):
                found.extend(_component(child, f"{at}.contents[{index}]"))
    elif kind == "text":
        spans = part.get("contents")
        if spans:
            for index, span in enumerate(spans if isinstance(spans, list) else []):
                found.extend(_component(span, f"{at}.contents[{index}]"))
        else:
            found.extend(_length(part.get("text"), MAX_TEXT, f"{at}.text"))
    elif kind == "span":
        found.extend(_length(part.get("text"), MAX_TEXT, f"{at}.text"))
    elif kind in ("image", "icon"):
        found.extend(_image_url(part.get("url"), f"{at}.url"))
    elif kind == "video":
        found.extend(_image_url(part.get("url"), f"{at}.url") + _image_url(part.get("previewUrl"),
                                                                            f"{at}.previewUrl"))
    elif kind == "button":
        if part.get("action") is None:
            found.append(_detail(REQUIRED, f"{at}.action"))
        else:
            found.extend(_action(part["action"], f"{at}.action", label_required=True))
    if kind in ("box", "image", "text") and part.get("action") is not None:
        found.extend(_action(part["action"], f"{at}.action", label_required=False))
    return found


def _action(action, at, label_required):
    kind = action.get("type") if isinstance(action, dict) else None
    if kind not in ACTIONS:
        return [_detail(_one_of(list(ACTIONS)), f"{at}.type")]
    found = _length(action.get("label"), MAX_LABEL, f"{at}.label", required=label_required)
    if kind == "uri":
        uri = action.get("uri")
        problem = _length(uri, MAX_URI_ACTION, f"{at}.uri")
        if not problem and urlsplit(uri).scheme not in URI_SCHEMES:
            problem = [_detail("invalid uri scheme", f"{at}.uri")]
        found.extend(problem)
    elif kind == "message":
        found.extend(_length(action.get("text"), MAX_ACTION_TEXT, f"{at}.text"))
    elif kind == "postback":
        found.extend(_length(action.get("data"), MAX_ACTION_TEXT, f"{at}.data"))
    return found
