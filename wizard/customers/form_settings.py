"""A shop's customer data form settings: read with their defaults, checked, saved. The wizard step, the
shop's pages and the API (``/api/v1/shops/<slug>/form``) all go through ``validate`` and ``save``.

Defaults are compliant with Taiwan's PDPA out of the box: a shop that never opens the settings sends the
form (on), with the default text in each customer's language, asking name and mobile (required), e-mail and
birthday (optional), with a notice naming the shop as collector and the CRM vendor as processor.
"""
import unicodedata
from dataclasses import dataclass, field

from flask import current_app
from flask_babel import force_locale, gettext as _, lazy_gettext as _l

from ..accounts import EMAIL, normalise_email
from ..extensions import db
from ..models import Channel, FormSettings, utcnow
from .fields import FIELDS, MODES, has_control_characters, normalise_phone
from .profiles import contact_locale

DEFAULT_FIELDS = {"name": "required", "mobile": "required", "email": "optional", "birthday": "optional",
                  "gender": "off", "city": "off"}
MAX_TEXT = 1000  # LINE takes 5,000 characters in a text message; the link follows the text
MAX_COLLECTOR = 200
MAX_NOTE = 500
MAX_RETENTION_YEARS = 10
NOTICE_KEYS = ("collector", "contact_email", "contact_phone", "retention_years", "note")


@dataclass
class Settings:
    """The effective settings of one shop (the saved row, or the defaults where nothing is saved)."""
    shop: object
    enabled: bool = True
    text: str | None = None  # None: the default text, in each customer's language
    fields: dict = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    notice: dict = field(default_factory=dict)
    saved_at: object = None
    updated_by: str | None = None

    @property
    def asked(self):
        """The fields the form asks, in wizard order: [(name, required?)]."""
        return [(name, self.fields[name] == "required") for name in FIELDS if self.fields[name] != "off"]

    @property
    def collector(self):
        return self.notice.get("collector") or self.shop.name

    def effective_text(self, locale=None):
        """The message's text before the link: the owner's, or the default in ``locale``."""
        if self.text:
            return self.text
        with force_locale(locale or current_app.config["BABEL_DEFAULT_LOCALE"]):
            return default_text(self.shop.name)

    def as_json(self):
        from . import notice
        return {"enabled": self.enabled, "text": self.effective_text(), "text_is_default": self.text is None,
                "fields": dict(self.fields), "notice": dict(self.notice),
                "notice_version": notice.version(notice.content(self)),
                "saved_at": self.saved_at.isoformat() + "Z" if self.saved_at else None,
                "updated_by": self.updated_by}


def default_text(shop_name):
    return _("Thank you for adding %(shop)s as a friend! Please take a minute to fill in our customer data "
             "form so we can serve you better.", shop=shop_name)


def _row(shop):
    return db.session.scalar(db.select(FormSettings).filter_by(shop_id=shop.id))


def get(shop):
    row = _row(shop)
    if row is None:
        return Settings(shop)
    fields = dict(DEFAULT_FIELDS)
    fields.update({k: v for k, v in (row.fields or {}).items() if k in FIELDS and v in MODES})
    return Settings(shop, bool(row.enabled), row.text or None, fields, dict(row.notice or {}), row.saved_at,
                    row.updated_by)


def for_channel(channel_id):
    return get(db.session.get(Channel, channel_id).shop)


class Problems(dict):
    """Field or key -> the sentence that says what is wrong with it (lazy, translated when shown)."""


READ_ONLY = {"text_is_default", "notice_version", "saved_at", "updated_by"}


def validate(shop, data, current=None):
    """Check a change (a dict in the API's shape; keys left out keep their current value). Returns
    (Settings, Problems): the settings as they would be saved, and what is wrong (empty: nothing)."""
    current = current or get(shop)
    problems = Problems()
    result = Settings(shop, current.enabled, current.text, dict(current.fields), dict(current.notice))
    if not isinstance(data, dict):
        problems["body"] = _l("Send a JSON object with “enabled”, “text” and “fields”.")
        return result, problems
    # What GET adds about the settings (not settings themselves) may come back unchanged in a PUT: a script that
    # reads, changes one value and writes the body back must not be refused for it.
    unknown = sorted(set(data) - {"enabled", "text", "fields", "notice"} - READ_ONLY)
    for key in unknown:
        problems[key] = _l("Unknown setting “%(key)s”: use enabled, text, fields or notice.", key=key)
    if "enabled" in data:
        if isinstance(data["enabled"], bool):
            result.enabled = data["enabled"]
        else:
            problems["enabled"] = _l("“enabled” must be true or false.")
    if "text" in data:
        text = data["text"]
        if text is None:
            result.text = None
        elif not isinstance(text, str):
            problems["text"] = _l("The message text must be text.")
        else:
            text = text.replace("\r\n", "\n").strip()
            if len(text) > MAX_TEXT:
                problems["text"] = _l("Keep the message text to at most %(max)d characters (it has %(n)d).",
                                      max=MAX_TEXT, n=len(text))
            elif has_control_characters(text, allow_newlines=True):
                problems["text"] = _l("The message text contains control characters; type it again.")
            elif not text or is_default_text(shop, text):
                result.text = None  # the default follows each customer's language
            else:
                result.text = text
    if "fields" in data:
        fields = data["fields"]
        if not isinstance(fields, dict):
            problems["fields"] = _l("“fields” must be an object like {\"name\": \"required\"}.")
        else:
            for name, mode in fields.items():
                if name not in FIELDS:
                    problems[f"fields.{name}"] = _l(
                        "The form has no field “%(name)s”; it can ask: %(names)s.", name=name,
                        names=", ".join(FIELDS))
                elif mode not in MODES:
                    problems[f"fields.{name}"] = _l(
                        "Field “%(name)s” must be “required”, “optional” or “off”.", name=name)
                else:
                    result.fields[name] = mode
            if not any(mode != "off" for mode in result.fields.values()):
                problems["fields"] = _l("Ask for at least one field, or switch the form off instead.")
    if "notice" in data:
        _validate_notice(data["notice"], result, problems)
    return result, problems


def _validate_notice(notice, result, problems):
    if not isinstance(notice, dict):
        problems["notice"] = _l("“notice” must be an object.")
        return
    for key in sorted(set(notice) - set(NOTICE_KEYS)):
        problems[f"notice.{key}"] = _l("Unknown notice detail “%(key)s”: use %(keys)s.", key=key,
                                       keys=", ".join(NOTICE_KEYS))
    clean = dict(result.notice)
    for key, limit in (("collector", MAX_COLLECTOR), ("note", MAX_NOTE)):
        if key in notice:
            value = notice[key]
            if value is not None and not isinstance(value, str):
                problems[f"notice.{key}"] = _l("This must be text.")
                continue
            value = (value or "").strip()
            if len(value) > limit:
                problems[f"notice.{key}"] = _l("Use at most %(max)d characters.", max=limit)
            elif has_control_characters(value, allow_newlines=key == "note"):
                problems[f"notice.{key}"] = _l("This contains control characters; type it again.")
            else:
                clean[key] = value or None
    if "contact_email" in notice:
        value = notice["contact_email"]
        email = normalise_email(value) if isinstance(value, str) else None
        if value and (email is None or len(email) > 254 or not EMAIL.match(email)):
            problems["notice.contact_email"] = _l("Enter an e-mail address like name@example.com.")
        else:
            clean["contact_email"] = email or None
    if "contact_phone" in notice:
        value = notice["contact_phone"]
        phone = normalise_phone(value) if isinstance(value, str) else None
        if value and (phone is None or not phone.lstrip("+").isascii() or not phone.lstrip("+").isdigit()
                      or not 8 <= len(phone.lstrip("+")) <= 15):
            problems["notice.contact_phone"] = _l("Enter a phone number of 8 to 15 digits, for example "
                                                  "02 2345 6789.")
        else:
            # Kept as the owner wrote it (02 2345-6789, (02) 2345 6789): customers read it in the notice and
            # dial it, and the digits alone lose the grouping that makes it readable. Checked as digits above.
            clean["contact_phone"] = " ".join(unicodedata.normalize("NFKC", value).split()) if phone else None
    if "retention_years" in notice:
        value = notice["retention_years"]
        if value in (None, ""):
            clean["retention_years"] = 0
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETENTION_YEARS:
            problems["notice.retention_years"] = _l(
                "The period must be a whole number of years from 0 to %(max)d (0: until the purpose ends or "
                "the customer asks for deletion).", max=MAX_RETENTION_YEARS)
        else:
            clean["retention_years"] = value
    result.notice = {k: v for k, v in clean.items() if v not in (None, "")}


def is_default_text(shop, text):
    """The default text in any of our languages: saving it unchanged keeps the default (multilingual)."""
    for locale in current_app.config["LANGUAGES"]:
        with force_locale(locale):
            if text == default_text(shop.name):
                return True
    return False


def save(settings, user=None):
    """Store ``settings`` (checked by ``validate``) for its shop; the caller commits. Audited."""
    from .. import audit
    from . import notice
    shop = settings.shop
    row = _row(shop)
    if row is None:
        row = FormSettings(shop_id=shop.id)
        db.session.add(row)
    before = None if row.id is None else (row.enabled, row.text, dict(row.fields or {}), dict(row.notice or {}))
    row.enabled, row.text = settings.enabled, settings.text
    row.fields, row.notice = dict(settings.fields), dict(settings.notice)
    row.notice_version = notice.version(notice.content(settings))
    row.saved_at = utcnow()
    row.updated_by = getattr(user, "email", None) or (user if isinstance(user, str) else None)
    changed = before != (row.enabled, row.text, row.fields, row.notice)
    audit.record("form_settings.saved", shop=shop, actor=user, target="customer form",
                 enabled=row.enabled, changed=changed, notice_version=row.notice_version)
    return row


def message_text(channel, contact, url):
    """What the new friend receives: the shop's text (or the default in their language) and their link."""
    settings = get(channel.shop)
    return f"{settings.effective_text(contact_locale(contact))}\n{url}"
