"""The customer data form: ``/form/<token>``, the personal link a new friend gets in the shop's message.

Public (customers have no account): the signed, expiring token (customers/links.py) is the only key, and it
opens only that one contact's own details; a changed token or an expired one gets a friendly page and
changes nothing. The fields asked, and which are required, are the shop's (customers/form_settings.py);
the privacy notice (customers/notice.py) stands before the submit button; every submission leaves its
evidence (customers/consent.py). The page speaks the customer's language (the LINE profile's, else
Traditional Chinese), prefills the name LINE gave, and on a second visit shows what was saved only masked
(0912***678): a field left empty keeps its saved value, one typed in replaces it.

The link is a key to the customer's data, so the page is never cached (``Cache-Control: no-store``), only
the contact's newest link works (customers/links.py), and submissions are throttled per link and per address
(``FORM_SUBMIT_LIMIT``): a leaked link cannot be used to rewrite the record hundreds of times.
"""
import hashlib
import math
import time
import unicodedata
from datetime import date

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import force_locale, gettext as _, lazy_gettext as _l, ngettext
from flask_limiter import RateLimitExceeded
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, EmailField, HiddenField, SelectField, StringField, TelField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, StopValidation, ValidationError

from ..accounts import EMAIL, MAX_EMAIL, normalise_email
from ..customers import consent, form_settings, links, notice
from ..customers.fields import CITIES, FIELDS, GENDERS, OLDEST_BIRTHDAY, has_control_characters, is_mobile, \
    masked, normalise_phone
from ..extensions import db, limiter
from ..customers.profiles import contact_locale
from ..models import Channel, utcnow

bp = Blueprint("contact_form", __name__, url_prefix="/form")

REQUIRED_MESSAGES = {
    "name": _l("Enter your name."),
    "mobile": _l("Enter your mobile number."),
    "email": _l("Enter your e-mail address."),
    "birthday": _l("Enter your birthday."),
    "gender": _l("Choose your gender, or “Prefer not to say”."),
    "city": _l("Choose your city or county."),
}


def check_mobile(_form, field):
    if field.data and not is_mobile(field.data):
        raise ValidationError(_l("Enter a Taiwanese mobile number: 09 and 8 more digits, for example "
                                 "0912 345 678."))


def check_email(_form, field):
    if not field.data:
        return
    email = normalise_email(field.data)
    if len(email) > MAX_EMAIL:  # NFKC may lengthen what was typed: the column takes 254
        raise ValidationError(_l("Use at most %(max)d characters.", max=MAX_EMAIL))
    if not EMAIL.match(email):
        raise ValidationError(_l("Enter an e-mail address like name@example.com."))


def check_name(_form, field):
    # Nobody types these, but PostgreSQL refuses a NUL: say no here instead of failing on save.
    if has_control_characters(field.data):
        raise ValidationError(_l("Enter your name without control characters."))


def check_birthday(required):
    def check(_form, field):
        raw = field.raw_data[0].strip() if field.raw_data else ""
        field.errors[:] = []  # wtforms' own "Not a valid date value." (untranslated): ours say it better
        if not raw:
            if required:
                raise StopValidation(REQUIRED_MESSAGES["birthday"])
            raise StopValidation()
        if field.data is None:
            # wtforms drops unparsable input to None; say so instead of silently storing nothing.
            raise ValidationError(_l("Enter the birthday as a date, for example 1990-05-31."))
        if not OLDEST_BIRTHDAY <= field.data <= date.today():
            raise ValidationError(_l("Enter a birthday between 1900 and today."))
    if required:
        check.field_flags = {"required": True}
    return check


def check_choice(choices):
    def check(_form, field):
        if field.data and field.data not in choices:
            raise ValidationError(_l("Choose one of the list."))
    return check


def _label(name, required):
    label = FIELDS[name][1]
    return label if required else _l("%(label)s (optional)", label=label)


def _field(name, required):
    presence = DataRequired(REQUIRED_MESSAGES[name]) if required else Optional()
    label = _label(name, required)
    if name == "name":
        return StringField(label, validators=[
            presence, Length(max=100, message=_l("Use at most %(max)d characters.", max=100)), check_name])
    if name == "mobile":
        return TelField(label, validators=[presence, check_mobile])
    if name == "email":
        return EmailField(label, validators=[
            presence, Length(max=254, message=_l("Use at most %(max)d characters.", max=254)), check_email])
    if name == "birthday":
        return NormalisedDateField(label, validators=[check_birthday(required)], format="%Y-%m-%d")
    choices = GENDERS if name == "gender" else CITIES
    options = [SelectChoice("", _l("Choose…"))] + [SelectChoice(value, text) for value, text in choices.items()]
    return SelectField(label, choices=options, validate_choice=False,
                       validators=[presence, check_choice(choices)])


class NormalisedDateField(DateField):
    """A date typed with full-width digits (１９９０-０５-３１, as Chinese keyboards give) is a date too."""

    def process_formdata(self, valuelist):
        super().process_formdata([unicodedata.normalize("NFKC", value) for value in valuelist])


def form_class(settings):
    """A form asking what this shop's settings ask, plus the separate, unticked marketing box."""
    class CustomerForm(FlaskForm):
        # gettext, not lazy_gettext: a lazy string tells Jinja it is safe HTML (it has ``__html__``), so the
        # owner-set collector inside it went out unescaped. A plain string is escaped like any other value.
        marketing = BooleanField(_("I agree to receive marketing messages (news and offers) from %(shop)s.",
                                   shop=settings.collector))
        # The notice version the page showed: the consent kept is to the notice the customer read.
        seen_notice = HiddenField()

    for name, required in settings.asked:
        setattr(CustomerForm, FIELDS[name][0], _field(name, required))
    return CustomerForm


def _locale(contact):
    """The customer's own choice on this page, else their LINE profile's language, else the default."""
    supported = current_app.config["LANGUAGES"]
    for wanted in (request.args.get("lang"), session.get("lang")):
        if wanted in supported:
            return wanted
    return contact_locale(contact)


def _refused(problem):
    if problem == links.EXPIRED:
        return render_template("contact_form/expired.html"), 410
    if problem == links.REPLACED:
        return render_template("contact_form/replaced.html"), 410
    return render_template("contact_form/unknown.html"), 404


def _open(token):
    contact, problem = links.resolve(token)
    if contact is None:
        return None, None, _refused(problem)
    return contact, db.session.get(Channel, contact.channel_id).shop, None


@bp.errorhandler(404)
def unknown_link(_error):
    return render_template("contact_form/unknown.html"), 404


@bp.after_request
def never_cached(response):
    """The page holds a customer's (masked) details and the link is their key: no cache may keep either."""
    response.headers["Cache-Control"] = "no-store"
    return response


THANKED = "form_thanked"


def _link_key():
    """The throttle's key for the link submitted (hashed: the limiter's storage holds no usable link)."""
    return hashlib.sha256((request.view_args or {}).get("token", "").encode()).hexdigest()[:32]


@bp.errorhandler(RateLimitExceeded)
def throttled(_error):
    """Too many submissions from this link or address: a page that says to wait, nothing saved."""
    reset_at = getattr(limiter.current_limit, "reset_at", None)
    seconds = max(1, math.ceil(reset_at - time.time())) if reset_at else 60
    minutes = max(1, math.ceil((seconds - 1) / 60))
    contact, _problem = links.resolve((request.view_args or {}).get("token"))
    with force_locale(_locale(contact) if contact is not None else current_app.config["BABEL_DEFAULT_LOCALE"]):
        message = ngettext("This form was sent many times in a short while. Nothing was saved this time: wait "
                           "%(num)d minute and try again.",
                           "This form was sent many times in a short while. Nothing was saved this time: wait "
                           "%(num)d minutes and try again.", minutes)
        return (render_template("contact_form/throttled.html", message=message), 429,
                {"Retry-After": str(seconds)})


@bp.route("/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["FORM_SUBMIT_LIMIT"], methods=["POST"], scope="form-link",
               key_func=_link_key)
@limiter.limit(lambda: current_app.config["FORM_SUBMIT_LIMIT_PER_ADDRESS"], methods=["POST"],
               scope="form-address")
def fill(token):
    contact, shop, refused = _open(token)
    if refused:
        return refused
    settings = form_settings.get(shop)
    with force_locale(_locale(contact)):
        return _fill(token, contact, shop, settings)


def _saved(contact, settings):
    """{form field: masked saved value} for the fields this form asks that hold something."""
    return {FIELDS[name][0]: masked(name, getattr(contact, FIELDS[name][0]))
            for name, _required in settings.asked if getattr(contact, FIELDS[name][0]) not in (None, "")}


def _keeping_saved(contact, saved):
    """The submitted form, where a field left empty keeps its saved value (it was shown only masked)."""
    data = request.form.copy()
    for attribute in saved:
        if not (data.get(attribute) or "").strip():
            value = getattr(contact, attribute)
            data[attribute] = value.isoformat() if hasattr(value, "isoformat") else value
    return data


def _fill(token, contact, shop, settings):
    filled = contact.form_filled_at is not None
    saved = _saved(contact, settings) if filled else {}
    prefill = {}
    if request.method == "GET":
        if filled:
            prefill["marketing"] = contact.marketing_consent
        else:
            prefill["customer_name"] = contact.display_name
    notice_content = notice.content(settings)
    version = notice.version(notice_content)
    prefill["seen_notice"] = version
    if request.method == "GET":
        form = form_class(settings)(formdata=None, data=prefill)
    else:
        form = form_class(settings)(formdata=_keeping_saved(contact, saved) if saved else request.form)
    shown = form.seen_notice.data if request.method == "POST" else None
    notice_changed = bool(shown) and shown != version
    if notice_changed:
        # The shop changed its notice (or the fields) while the page was open: nothing is kept until the
        # customer has seen the notice that applies now.
        form.seen_notice.data = version
    if not notice_changed and form.validate_on_submit():
        submitted = _save(form, contact, settings)
        consent.record(contact, shop.id, notice_content, form.marketing.data, submitted,
                       locale=_locale(contact))
        db.session.commit()
        session[THANKED] = _link_key()  # the thanks page may greet by name this browser, which just typed it
        return redirect(url_for(".thanks", token=token))
    if saved and request.method == "POST":
        # What was kept from the saved record is not echoed back in plain: the field shows empty again.
        for attribute in saved:
            if not (request.form.get(attribute) or "").strip():
                getattr(form, attribute).raw_data = [""]
                getattr(form, attribute).data = None
    return render_template("contact_form/form.html", form=form, shop_name=shop.name, contact=contact,
                           token=token, settings=settings, filled=filled, saved=saved,
                           notice_sections=notice.sections(notice_content, shop.name),
                           notice_version=version, notice_changed=notice_changed,
                           today=date.today().isoformat())


def _save(form, contact, settings):
    """Store what the form asked on the contact; returns the names of the fields that were given."""
    submitted = []
    for name, _required in settings.asked:
        attribute = FIELDS[name][0]
        value = getattr(form, attribute).data
        if isinstance(value, str):
            value = value.strip()
            if name == "mobile":
                value = normalise_phone(value)
            elif name == "email":
                value = normalise_email(value)
        setattr(contact, attribute, value or None)
        if value:
            submitted.append(name)
    now = utcnow()
    marketing = bool(form.marketing.data)
    if marketing != bool(contact.marketing_consent) or (marketing and contact.marketing_consent_at is None):
        contact.marketing_consent, contact.marketing_consent_at = marketing, now
    contact.form_filled_at = now
    return submitted


@bp.get("/<token>/thanks")
def thanks(token):
    contact, shop, refused = _open(token)
    if refused:
        return refused
    if contact.form_filled_at is None:
        return redirect(url_for(".fill", token=token))
    # The name in plain only to the browser that submitted it a moment ago: whoever else opens the link's
    # thanks page learns nothing saved.
    name = contact.customer_name if session.pop(THANKED, None) == _link_key() else None
    with force_locale(_locale(contact)):
        return render_template("contact_form/thanks.html", shop_name=shop.name, name=name, token=token)
