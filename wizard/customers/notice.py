"""The privacy notice the form shows before its submit button (PDPA Art. 8), built from the shop's settings.

``content`` is what the notice says, as data: the collector, the processor, the purposes and data
categories with their official codes, the fields asked, the period, the ways to exercise Art. 3's rights.
Its ``version`` is a hash of that content (and of ``REVISION``, raised whenever the wording below changes),
so each submission records exactly which notice the customer saw; ``remember`` keeps each version's content.
``sections`` turns the content into the sentences the page shows, in the customer's language.
"""
import hashlib
import json

from babel.lists import format_list
from flask import current_app
from flask_babel import get_locale, gettext as _, lazy_gettext as _l

from ..rows import insert_ignoring
from ..models import FormNotice, utcnow
from .fields import DESCRIBING, FIELDS, IDENTIFYING

# Raise when the sentences of ``sections`` change in meaning: the version then changes with them.
# 3: the ways to reach the shop are a list of their own (they ran together in Chinese).
# 4: the notice says how long LINE's copies and the files customers send are kept (retention.py).
REVISION = 4
CUSTOMER_CARE = "090"  # ○九○ 消費者、客戶管理與服務: always, with the form
MARKETING = "040"  # ○四○ 行銷: only with its own ticked box
PURPOSES = {CUSTOMER_CARE: _l("○九○ consumer and customer management and services"),
            MARKETING: _l("○四○ marketing")}
CATEGORIES = {"C001": _l("C○○一 identifying the person"), "C011": _l("C○一一 describing the person")}


def content(settings):
    asked = dict(settings.asked)
    categories = []
    if any(name in asked for name in IDENTIFYING):
        categories.append("C001")
    if any(name in asked for name in DESCRIBING):
        categories.append("C011")
    notice = settings.notice
    return {
        "revision": REVISION,
        "collector": settings.collector,
        "processor": current_app.config["CRM_VENDOR_NAME"],
        "purposes": [CUSTOMER_CARE],
        "optional_purposes": [MARKETING],
        "categories": categories,
        "fields": {name: ("required" if required else "optional") for name, required in settings.asked},
        "retention_years": int(notice.get("retention_years") or 0),
        # What the CRM itself deletes sooner (retention.py): LINE's copies of the chat, and the files sent.
        "copies_days": int(current_app.config["RETAIN_EVENTS_DAYS"] or 0),
        "files_days": int(current_app.config["RETAIN_MEDIA_DAYS"] or 0),
        "region": "TW",
        "contact": {"line": True, "email": notice.get("contact_email"), "phone": notice.get("contact_phone")},
        "note": notice.get("note"),
    }


def version(notice_content):
    text = json.dumps(notice_content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def remember(shop_id, notice_content):
    """Keep this version's content (once per shop and version), in the caller's transaction."""
    number = version(notice_content)
    insert_ignoring(FormNotice, [{"shop_id": shop_id, "version": number, "content": notice_content,
                                  "created_at": utcnow()}], ["shop_id", "version"])
    return number


def listed(items, style="standard"):
    """Words joined as the current language lists them (English "Name and Mobile phone", Chinese
    「姓名和手機號碼」), never one language's separator in another."""
    items = [str(item) for item in items]
    return format_list(items, style, locale=get_locale()) if items else ""


def _names(notice_content, names):
    return listed(FIELDS[name][1] for name in FIELDS if name in names and name in notice_content["fields"])


def sections(notice_content, shop_name):
    """[(heading, [sentences])] in the current language: Art. 8's six items, in its order."""
    c = notice_content
    collector = c["collector"]
    categories = []
    if "C001" in c["categories"]:
        categories.append(_("%(category)s: %(fields)s.", category=CATEGORIES["C001"],
                            fields=_names(c, IDENTIFYING)))
    if "C011" in c["categories"]:
        categories.append(_("%(category)s: %(fields)s.", category=CATEGORIES["C011"],
                            fields=_names(c, DESCRIBING)))
    # What the CRM keeps besides the form: what LINE tells the shop about a friend, and the chat itself.
    categories.append(_("From LINE: your LINE user ID, display name, profile picture and language, when you "
                        "added or blocked the account, and the messages and files you send in this chat."))
    if c["retention_years"]:
        period = _("While you are our customer, and for %(n)d year(s) after your last contact with us, unless "
                   "you ask us to delete your data sooner.", n=c["retention_years"])
    else:
        period = _("While you are our customer (as long as the purposes above exist), until you ask us to "
                   "delete your data.")
    deleted_sooner = []
    if c.get("copies_days"):
        deleted_sooner.append(_("The copies of what you send that LINE delivers to us are deleted after "
                                "%(n)d days.", n=c["copies_days"]))
    if c.get("files_days"):
        deleted_sooner.append(_("Pictures, videos, audio and files you send are deleted after %(n)d days.",
                                n=c["files_days"]))
    ways = [_("send a message to %(shop)s in this LINE chat", shop=shop_name)]
    if c["contact"].get("email"):
        ways.append(_("write to %(email)s", email=c["contact"]["email"]))
    if c["contact"].get("phone"):
        ways.append(_("call %(phone)s", phone=c["contact"]["phone"]))
    required = [name for name, mode in c["fields"].items() if mode == "required"]
    if required:
        left_out = _("Fields marked “required” (%(fields)s) are needed to keep you as a customer in our records; "
                     "without them we cannot save the form, but you stay our LINE friend and can still talk "
                     "to us. Everything else may be left out with no consequence.",
                     fields=_names(c, required))
    else:
        left_out = _("Every field is optional: leave out what you prefer, with no consequence.")
    items = [
        (_("Who collects your data"),
         [_("%(collector)s collects the data on this form.", collector=collector)]),
        (_("Why"),
         [_("For %(purpose)s: to know you as our customer, serve you and answer you.",
            purpose=PURPOSES[CUSTOMER_CARE]),
          _("For %(purpose)s (news and offers) only if you tick the separate box below; you can refuse or "
            "stop it at any time, free of charge.", purpose=PURPOSES[MARKETING])]),
        (_("Which data"), categories),
        (_("How long, where, who and how"),
         [period, *deleted_sooner,
          _("Used in Taiwan. Kept for %(collector)s by %(processor)s, the CRM it uses, as its processor; given "
            "to no one else unless the law requires it.", collector=collector, processor=c["processor"]),
          _("Used by %(collector)s, in writing and electronically, only for the purposes above.",
            collector=collector)]),
        (_("Your rights"),
         [_("You may ask to see your data, to get a copy, to add to or correct it, to have its collection, "
            "processing or use stopped, and to have it deleted (PDPA Art. 3)."),
          # Each way on a line of its own: run into one sentence, an e-mail address and a phone number
          # touched the words around them.
          _("To do so, any of these:")] + [f"• {way}" for way in ways]
         + [_("You can also correct your data yourself through this link.")]),
        (_("If you leave something out"), [left_out]),
    ]
    if c.get("note"):
        items.append((_("Also from %(collector)s", collector=collector), [c["note"]]))
    return items
