"""The customer data form step (before the friend test, so the first test friend receives the shop's form):
on or off (啟用狀態), the message text (客戶資料回填表描述) with its preview as a LINE chat bubble, the fields
asked and which are required, and the privacy notice's details. The same page is the shop's form settings
at any time later (the summary links to it).

It never keeps a shop from counting as connected (``blocks=False``): the defaults are compliant and send the
form. It is done once the owner (or staff) saved the settings, even unchanged, which confirms them.
"""
from flask import flash
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice

from ..customers import form_settings, notice
from ..customers.fields import FIELDS, MODE_LABELS, MODES
from ..models import iso_utc
from .context import StepResult
from .registry import Action, Step
from .state import State

KEY = "customer_form"
# Form field -> the settings key it edits (the notice's details).
NOTICE_FIELDS = ("collector", "contact_email", "contact_phone", "retention_years", "note")


class FormSettingsForm(FlaskForm):
    enabled = RadioField(_l("Status"), choices=[
        SelectChoice("on", _l("On: new friends receive the form")), SelectChoice("off", _l("Off: no form is sent"))])
    text = TextAreaField(_l("Message text"))
    collector = StringField(_l("Collector named in the notice (optional)"))
    contact_email = StringField(_l("E-mail for privacy requests (optional)"))
    contact_phone = StringField(_l("Phone for privacy requests (optional)"))
    retention_years = SelectField(_l("How long the data is kept"), choices=[
        SelectChoice("0", _l("While they are a customer, until they ask for deletion"))] + [
        SelectChoice(str(n), _l("%(n)d year(s) after their last contact", n=n)) for n in range(1, 11)])
    note = TextAreaField(_l("Anything else the notice should say (optional)"))


for _name, (_attribute, _label) in FIELDS.items():
    setattr(FormSettingsForm, f"field_{_name}",
            SelectField(_label, choices=[SelectChoice(mode, MODE_LABELS[mode]) for mode in MODES]))


def _prefilled(settings):
    data = {"enabled": "on" if settings.enabled else "off", "text": settings.effective_text(),
            "retention_years": str(settings.notice.get("retention_years") or 0)}
    data.update({key: settings.notice.get(key) or "" for key in NOTICE_FIELDS if key != "retention_years"})
    data.update({f"field_{name}": mode for name, mode in settings.fields.items()})
    return FormSettingsForm(formdata=None, data=data)


def check(ctx):
    settings = form_settings.get(ctx.shop)
    if settings.saved_at is None:
        return StepResult(KEY, State.TODO, "form_not_reviewed", blocks=False)
    detail = {"saved_at": iso_utc(settings.saved_at)}
    if not settings.enabled:
        return StepResult(KEY, State.DONE, "form_off", detail, blocks=False)
    return StepResult(KEY, State.DONE, "form_on", detail, blocks=False)


def _preview(page, settings):
    channel = page.channel
    return {"account": (channel.display_name if channel and channel.display_name else page.shop.name),
            "picture_url": channel.picture_url if channel else None,
            "text": settings.effective_text(), "default_text": form_settings.default_text(page.shop.name),
            "link": "https://…/form/…"}


def _context(page, form=None):
    settings = form_settings.get(page.shop)
    content = notice.content(settings)
    return {"form": form or _prefilled(settings), "settings": settings, "preview": _preview(page, settings),
            "notice_sections": notice.sections(content, page.shop.name), "notice_version": notice.version(content),
            "saved": settings.saved_at is not None}


def as_change(form):
    """The page's form in the API's shape (form_settings.validate)."""
    years = form.retention_years.data or "0"
    return {
        "enabled": form.enabled.data != "off",
        "text": form.text.data or "",
        "fields": {name: getattr(form, f"field_{name}").data for name in FIELDS},
        "notice": {"collector": form.collector.data or "", "contact_email": form.contact_email.data or "",
                   "contact_phone": form.contact_phone.data or "", "note": form.note.data or "",
                   "retention_years": int(years) if years.isdecimal() else years},
    }


# settings problem key -> the page's field that shows it
_PROBLEM_FIELDS = {"enabled": "enabled", "text": "text", "fields": "field_name",
                   **{f"fields.{name}": f"field_{name}" for name in FIELDS},
                   **{f"notice.{key}": key for key in NOTICE_FIELDS}}


def _save(page):
    form = FormSettingsForm()
    settings, problems = form_settings.validate(page.shop, as_change(form))
    if not form.validate() or problems:
        for key, message in problems.items():
            field = getattr(form, _PROBLEM_FIELDS.get(key, "text"))
            field.errors = list(field.errors or []) + [message]
        page.rollback()
        # The preview shows what was typed, so the owner sees what they are correcting.
        preview_settings = form_settings.Settings(page.shop, text=form.text.data or None)
        return page.render(status_code=422, stored=True, **dict(
            _context(page, form), preview=_preview(page, preview_settings)))
    form_settings.save(settings, current_user)
    flash(_("The customer data form is saved: new friends receive it.") if settings.enabled
          else _("Saved: the customer data form is off, so new friends do not receive it."), "success")
    return None


STEP = Step(
    KEY, _l("Customer data form"), check, context=_context,
    actions={"save": Action(_save, recheck=False, advance=True)},
    reasons={
        "form_not_reviewed": _l("New friends receive the customer data form with the default text and fields. "
                                "Check them and save, so the first test friend receives the form as you want it."),
        "form_on": _l("On: new friends receive the customer data form (saved %(saved_at_local)s)."),
        "form_off": _l("Off: new friends do not receive the customer data form (saved %(saved_at_local)s)."),
    },
)
