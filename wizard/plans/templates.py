"""A shop's message templates (圖文訊息範本): a name and one to five LINE message objects.

Stored as LINE takes them, so the API hands out exactly what will go, and a send plan (plans/…) only fills
``{name}``: ``messages_for(template, contact)``. A template whose text uses ``{name}`` is ``personal``: it
cannot go by multicast (one text for all), only one contact at a time.

The builder's pages work on *drafts*, the owner's view of the same messages (``drafts_of`` / ``to_messages``):
``{"kind": "text", "text"}`` (LINE emoji written ``{emoji:001}``), ``{"kind": "image", "url", "preview"}``,
``{"kind": "card", "card"}`` and ``{"kind": "carousel", "cards"}`` (plans/cards.py), and ``{"kind": "other",
"message"}`` for a message the builder cannot edit (made through the API): kept as it is.

Every save is checked twice: by us, in the owner's words and next to the field (``check_drafts``), and then
by LINE's validate endpoint through the outgoing core's sender (``save``), whose refusal is mapped back to the
field it is about (``field_for_property``) and explained in the user's language (``explain``). A refused save
changes nothing.
"""
import json
import re

from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import LARGEST_ID, MessageTemplate, SendPlan
from ..outgoing import sender
from ..statuses import PlanState
from . import cards, media

MAX_MESSAGES = 5
MAX_NAME = 100
MAX_TEXT = 5000  # LINE's limit for a text message
MAX_EMOJIS = 20  # LINE's limit of emoji in one text message
NAME_TOKEN = "{name}"
# LINE's own free emoji set; the picker offers these, and {emoji:001} is short for {emoji:<this>/001}.
EMOJI_PRODUCT = "5ac1bfd5040ab15980c9b435"
EMOJI_IDS = [f"{n:03d}" for n in range(1, 41)]
EMOJI_TOKEN = re.compile(r"\{emoji:(?:([0-9a-f]{24})/)?(\d{3})\}")
KINDS = ("text", "image", "card", "carousel")
# The plans a template cannot be deleted from under: they will still send it.
LIVE_PLAN_STATES = (PlanState.SCHEDULED, PlanState.SENDING, PlanState.PAUSED)


class Refused(Exception):
    """A save that did not happen: ``problems`` maps where (a form field, or LINE's property path) to why,
    in the caller's language. ``duplicate``: the name is taken in the shop (the API's 409)."""

    def __init__(self, problems, duplicate=False):
        super().__init__(" ".join(problems.values()))
        self.problems = problems
        self.duplicate = duplicate


class InUse(Exception):
    """A template that send plans still send (``plans``): deleting it would leave them nothing to send."""

    def __init__(self, plans):
        self.plans = list(plans)
        super().__init__(self.message)

    @property
    def message(self):
        return _("Send plans that have not finished use this template: %(plans)s. Cancel them, or wait until "
                 "they have sent (a scheduled plan can be changed to another template); then delete it.",
                 plans=_(", ").join(_("“%(name)s”", name=plan.name) for plan in self.plans))


class Personal(ValueError):
    """``messages_for_all`` of a template that names each customer: send it one contact at a time."""


# ---- reading -------------------------------------------------------------------------------------------

def for_shop(shop):
    return db.session.scalars(db.select(MessageTemplate).filter_by(shop_id=shop.id)
                              .order_by(MessageTemplate.name)).all()


def get(shop, template_id):
    """The shop's template with this id, or None (also for another shop's: its id says nothing)."""
    template = db.session.get(MessageTemplate, template_id) if _an_id(template_id) else None
    return template if template is not None and template.shop_id == shop.id else None


def _an_id(value):
    """An int that can be an id (a bool or one past what the database holds is none)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LARGEST_ID


def as_json(template):
    return {"id": template.id, "name": template.name, "messages": template.messages}


def personal(template) -> bool:
    """True when a text message of the template uses ``{name}``."""
    return any(m.get("type") == "text" and NAME_TOKEN in m.get("text", "") for m in template.messages)


def messages_for(template, contact) -> list[dict]:
    """The template's messages for one contact: ``{name}`` filled with the name they gave on the form, else
    their LINE name (else nothing), and the positions of LINE emoji moved to follow it."""
    name = contact.customer_name or contact.display_name or ""
    return [_filled(m, name) for m in template.messages]


def messages_for_all(template) -> list[dict]:
    """The messages as one text for everyone (multicast, broadcast). A personal template is refused
    (``Personal``): it would reach each customer with an empty name."""
    if personal(template):
        raise Personal(f"template {template.id} uses {NAME_TOKEN}: send it to one contact at a time")
    return [dict(m) for m in template.messages]


def units(text):
    """The length of ``text`` as LINE counts an emoji's ``index``: in UTF-16 code units (as JavaScript does),
    so a character outside the BMP (most emoji typed on a phone) counts two."""
    return len(text.encode("utf-16-le")) // 2


def _filled(message, name):
    text = message.get("text", "") if message.get("type") == "text" else ""
    if NAME_TOKEN not in text:
        return dict(message)
    starts = [units(text[:found.start()]) for found in re.finditer(re.escape(NAME_TOKEN), text)]
    grow = units(name) - units(NAME_TOKEN)
    result = dict(message, text=text.replace(NAME_TOKEN, name))
    if message.get("emojis"):
        # An emoji's "$" is never inside {name}: every {name} starting before it moves it by the same amount.
        result["emojis"] = [dict(e, index=e["index"] + grow * sum(1 for s in starts if s < e["index"]))
                            for e in message["emojis"]]
    return result


# ---- the builder's drafts -------------------------------------------------------------------------------

def text_message(text):
    """A LINE text message from the owner's text, its ``{emoji:…}`` written as LINE's ``$`` and ``emojis``."""
    out, emojis, position = [], [], 0
    for found in EMOJI_TOKEN.finditer(text):
        out.append(text[position:found.start()])
        emojis.append({"index": sum(units(part) for part in out), "productId": found.group(1) or EMOJI_PRODUCT,
                       "emojiId": found.group(2)})
        out.append("$")
        position = found.end()
    out.append(text[position:])
    message = {"type": "text", "text": "".join(out)}
    if emojis:
        message["emojis"] = emojis
    return message


def text_of(message):
    """The owner's text for a LINE text message: each emoji's ``$`` written back as ``{emoji:…}``."""
    text = message.get("text", "")
    where = {e.get("index"): e for e in message.get("emojis") or [] if isinstance(e, dict)}
    out, index = [], 0  # index: in UTF-16 code units, as LINE counts
    for character in text:
        emoji = where.get(index)
        if character == "$" and emoji:
            product = "" if emoji.get("productId") == EMOJI_PRODUCT else f"{emoji.get('productId')}/"
            out.append(f"{{emoji:{product}{emoji.get('emojiId')}}}")
        else:
            out.append(character)
        index += units(character)
    return "".join(out)


def to_messages(drafts, alt_text):
    """LINE's message objects for the builder's drafts; ``alt_text`` names a card in the chat list and in
    notifications when the card has no title of its own."""
    messages = []
    for draft in drafts:
        kind = draft["kind"]
        if kind == "text":
            messages.append(text_message(draft.get("text", "")))
        elif kind == "image":
            messages.append({"type": "image", "originalContentUrl": draft.get("url", ""),
                             "previewImageUrl": draft.get("preview", "")})
        elif kind == "card":
            messages.append(_flex(cards.bubble(draft["card"]), [draft["card"]], alt_text))
        elif kind == "carousel":
            messages.append(_flex({"type": "carousel", "contents": [cards.bubble(c) for c in draft["cards"]]},
                                  draft["cards"], alt_text))
        else:
            messages.append(draft["message"])
    return messages


def _flex(contents, made_of, alt_text):
    first = next((c.get("title") or c.get("text") for c in made_of if c.get("title") or c.get("text")), "")
    return {"type": "flex", "altText": (first or alt_text or "…")[:400], "contents": contents}


def drafts_of(messages):
    """The builder's drafts for stored messages (the edit page)."""
    drafts = []
    for message in messages:
        kind = message.get("type")
        if kind == "text" and set(message) <= {"type", "text", "emojis"}:
            drafts.append({"kind": "text", "text": text_of(message)})
        elif kind == "image" and set(message) <= {"type", "originalContentUrl", "previewImageUrl"}:
            drafts.append({"kind": "image", "url": message.get("originalContentUrl", ""),
                           "preview": message.get("previewImageUrl", "")})
        elif kind == "flex" and set(message) <= {"type", "altText", "contents"}:
            contents = message.get("contents") or {}
            if contents.get("type") == "carousel":
                found = [cards.card(b) for b in contents.get("contents") or []]
                if found and all(found):
                    drafts.append({"kind": "carousel", "cards": found})
                    continue
            elif cards.card(contents):
                drafts.append({"kind": "card", "card": cards.card(contents)})
                continue
            drafts.append({"kind": "other", "message": message})
        else:
            drafts.append({"kind": "other", "message": message})
    return drafts


def check_drafts(drafts, own_picture):
    """Our checks of the builder's drafts, in the user's language: {form field: message}. ``own_picture(url)``
    says whether a picture's address is one of the shop's uploads still stored (``media.owned``): a form
    cannot point LINE elsewhere, nor at another shop's picture."""
    problems = {}
    if not drafts:
        problems["messages"] = _("Add at least one message.")
    if len(drafts) > MAX_MESSAGES:
        problems["messages"] = _("A template has at most %(num)d messages.", num=MAX_MESSAGES)
    for n, draft in enumerate(drafts):
        where = f"messages.{n}"
        kind = draft["kind"]
        if kind == "text":
            text = draft.get("text", "")
            if not text.strip():
                problems[f"{where}.text"] = _("Type the message's text.")
            else:
                message = text_message(text)
                if len(message["text"]) > MAX_TEXT:
                    problems[f"{where}.text"] = _("The text is longer than %(num)d characters.", num=MAX_TEXT)
                elif len(message.get("emojis", [])) > MAX_EMOJIS:
                    problems[f"{where}.text"] = _("A message has at most %(num)d LINE emoji.", num=MAX_EMOJIS)
        elif kind == "image":
            if not draft.get("url"):
                problems[f"{where}.image"] = _("Upload the picture (JPEG or PNG).")
            elif not own_picture(draft["url"]):
                problems[f"{where}.image"] = _("Upload the picture again here.")
        elif kind in ("card", "carousel"):
            many = draft["cards"] if kind == "carousel" else [draft["card"]]
            if kind == "carousel" and not many:
                problems[f"{where}.cards"] = _("Add at least one card.")
            if len(many) > cards.MAX_CARDS:
                problems[f"{where}.cards"] = _("A carousel has at most %(num)d cards.", num=cards.MAX_CARDS)
            for c, card in enumerate(many):
                prefix = f"{where}.cards.{c}"
                if card.get("image") and not own_picture(card["image"]):
                    problems[f"{prefix}.image"] = _("Upload the picture again here.")
                cards.check(card, lambda field, text, prefix=prefix: problems.setdefault(f"{prefix}.{field}", text))
    return problems


_MESSAGE = re.compile(r"^messages\[(\d+)\]\.?(.*)$")
_CAROUSEL = re.compile(r"^contents\.contents\[(\d+)\]\.?(.*)$")


def field_for_property(drafts, prop):
    """The builder's form field a LINE ``property`` (``messages[1].contents.contents[2].hero.url``) is about:
    the nearest field the owner can see and change."""
    found = _MESSAGE.match(prop or "")
    if not found or int(found.group(1)) >= len(drafts):
        return "messages"
    n, rest = int(found.group(1)), found.group(2)
    where, draft = f"messages.{n}", drafts[n]
    kind = draft["kind"]
    if kind == "text":
        return f"{where}.text"
    if kind == "image":
        return f"{where}.image"
    if kind == "card" and rest.startswith("contents."):
        field = cards.field_for(draft["card"], rest[len("contents."):])
        return f"{where}.cards.0.{field}" if field else f"{where}.cards.0"
    if kind == "carousel":
        inner = _CAROUSEL.match(rest)
        if inner and int(inner.group(1)) < len(draft["cards"]):
            c = int(inner.group(1))
            field = cards.field_for(draft["cards"][c], inner.group(2))
            return f"{where}.cards.{c}.{field}" if field else f"{where}.cards.{c}"
    return where


# LINE's wording of a refusal (its ``details[].message``) → ours. What is not here is shown with LINE's own
# words after a sentence of ours, so the owner is never left with English alone.
_LINE_WORDS = [
    (re.compile(r"^(may not be empty|must be specified|must be non-empty text)", re.I),
     lambda m: _("LINE says this may not be empty.")),
    (re.compile(r"^length must be between (\d+) and (\d+)", re.I),
     lambda m: _("LINE takes at most %(num)s characters here.", num=m.group(2))),
    (re.compile(r"^size must be between (\d+) and (\d+)", re.I),
     lambda m: _("LINE takes %(low)s to %(high)s of these.", low=m.group(1), high=m.group(2))),
    (re.compile(r"(invalid uri|invalid url|uri scheme|https url|must be https)", re.I),
     lambda m: _("LINE does not accept this web address (it must start with https://).")),
    (re.compile(r"must be one of the following values", re.I),
     lambda m: _("LINE does not know this kind of message.")),
    (re.compile(r"emoji|productId|character at the index", re.I),
     lambda m: _("LINE does not accept this LINE emoji or its position.")),
]


def explain(detail):
    """LINE's refusal of one property in the user's words."""
    words = str(detail.get("message") or "")
    for pattern, say in _LINE_WORDS:
        found = pattern.search(words)
        if found:
            return say(found)
    return _("LINE does not accept this: “%(words)s”.", words=words)


# ---- saving ---------------------------------------------------------------------------------------------

def check_messages(messages):
    """The shape LINE's validate endpoint needs before it can say more: {where: message}."""
    if not isinstance(messages, list) or not messages:
        return {"messages": _("Add at least one message.")}
    if len(messages) > MAX_MESSAGES:
        return {"messages": _("A template has at most %(num)d messages.", num=MAX_MESSAGES)}
    problems = {}
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            problems[f"messages[{n}]"] = _("Each message is a LINE message object with a “type”.")
        elif message["type"] != "text" and NAME_TOKEN in json.dumps(message, ensure_ascii=False):
            problems[f"messages[{n}]"] = _("{name} can only be used in a text message.")
    return problems


def save(shop, name, messages, template=None):
    """Create (``template`` None) or change a template of ``shop``, in the caller's transaction (it commits).
    Raises ``Refused`` with every problem found, after which nothing has changed: the name (given, not too
    long, not another template's), the messages' shape, then LINE's validate endpoint (a push's rules: what a
    send plan sends) and our pictures (each one of the shop's, still stored: plans/media.py). Without a
    connected LINE channel nothing can be checked, so nothing is saved. The pictures are marked used last,
    right before the write, so the hourly cleanup cannot take one away from a template being saved."""
    name = (name or "").strip()
    problems = {}
    if not name:
        problems["name"] = _("Give the template a name.")
    elif len(name) > MAX_NAME:
        problems["name"] = _("The name is longer than %(num)d characters.", num=MAX_NAME)
    elif _name_taken(shop, name, template):
        problems["name"] = _("Another template of this shop is called “%(name)s”.", name=name)
    duplicate = "name" in problems and bool(name) and len(name) <= MAX_NAME
    shape = check_messages(messages)
    # LINE is asked whenever the messages have a shape it can judge, so one answer lists every problem.
    problems.update(shape or _line_check(shop, messages))
    if not shape:
        for where, text in media.problems_in(shop, messages).items():
            problems[where] = f"{problems[where]} {text}" if where in problems else text
    if problems:
        raise Refused(problems, duplicate=duplicate and len(problems) == 1)
    gone = media.take(shop, messages)
    if gone:  # the cleanup deleted a picture since the look above
        raise Refused(gone)
    if template is None:
        template = MessageTemplate(shop_id=shop.id, name=name, messages=messages)
        db.session.add(template)
    else:
        template.name, template.messages = name, messages
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        # Another request took the name between our look and our write; the savepoint's rollback has put the
        # session back as it was (a new template is no longer in it, a changed one reads its old values).
        raise Refused({"name": _("Another template of this shop is called “%(name)s”.", name=name)},
                      duplicate=True) from None
    return template


def _name_taken(shop, name, template):
    query = db.select(MessageTemplate.id).filter_by(shop_id=shop.id, name=name)
    if template is not None and template.id is not None:
        query = query.where(MessageTemplate.id != template.id)
    return db.session.scalar(query) is not None


def _line_check(shop, messages):
    """LINE's verdict on the messages: {LINE's property path: explanation}; {} when LINE accepts them."""
    channel = shop.channel
    if channel is None:
        return {"messages": _("Connect the shop's LINE account first: LINE checks every template before it "
                              "is saved.")}
    current = sender.current()
    try:
        details = current.validate(channel, "push", messages)
    except current.failure:
        return {"messages": _("LINE could not be reached to check the template; nothing was saved. Try again "
                              "in a minute.")}
    problems = {}
    for detail in details:
        where = str(detail.get("property") or "messages")
        text = explain(detail)
        problems[where] = f"{problems[where]} {text}" if where in problems else text
    return problems


def live_plans(template):
    """The send plans that will still send this template (scheduled, sending or paused), by name."""
    return db.session.scalars(db.select(SendPlan).where(
        SendPlan.shop_id == template.shop_id, SendPlan.template_id == template.id,
        SendPlan.state.in_(LIVE_PLAN_STATES)).order_by(SendPlan.name, SendPlan.id)).all()


def delete(template):
    """Delete the template (the caller commits), unless a plan that has not finished still sends it: then
    ``InUse`` names those plans and nothing changes. (A plan that starts using it in the same moment is not
    stopped here: its messages are refused as they go, plans/runs.py ``_refuse``.)"""
    using = live_plans(template)
    if using:
        raise InUse(using)
    db.session.delete(template)
