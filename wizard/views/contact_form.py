"""The customer data form: ``/form/<token>``, the link a new friend gets in the shop's welcome message.

Public (customers have no account): the long random token in the link (crypto.new_token, 192 bits) is the
only key, and it opens only that one contact's own details. The customer may come back to correct them.
Name, phone and e-mail are required, birthday is optional; each is checked here and stored on the Contact.
Customers type on phones with Chinese input methods, which often give full-width characters
(０９１２－３４５－６７８, ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ): both are read as what the person meant
(NFKC) and stored plain.
"""
import re
import unicodedata
from datetime import date

from flask import Blueprint, abort, redirect, render_template, url_for
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, EmailField, StringField, TelField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ..accounts import EMAIL, MAX_EMAIL, normalise_email
from ..extensions import db
from ..models import Channel, Contact, utcnow

bp = Blueprint("contact_form", __name__, url_prefix="/form")

# What people type between digits: spaces, dots, brackets and dashes (hyphen, non-breaking hyphen, figure
# dash, en and em dash, horizontal bar, minus sign, the katakana long vowel mark some input methods give for
# a dash); a leading + for +886. Full-width forms are already plain after NFKC.
PHONE_SEPARATORS = re.compile(r"[\s.()\-\u2010-\u2015\u2212\u30fc]")
PHONE = re.compile(r"^\+?[0-9]{8,15}$")  # ASCII digits only: \d would also take other scripts' digits


def normalise_phone(value: str) -> str:
    return PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", value or "").strip())


def check_phone(_form, field):
    if not PHONE.match(normalise_phone(field.data)):
        raise ValidationError(_l("Enter a phone number of 8 to 15 digits, for example 0912 345 678."))


def check_email(_form, field):
    email = normalise_email(field.data)
    if len(email) > MAX_EMAIL:  # NFKC may lengthen what was typed: the column takes 254
        raise ValidationError(_l("Use at most %(max)d characters.", max=MAX_EMAIL))
    if not EMAIL.match(email):
        raise ValidationError(_l("Enter an e-mail address like name@example.com."))


def check_name(_form, field):
    # Nobody types these, but PostgreSQL refuses a NUL: say no here instead of failing on save.
    if any(unicodedata.category(char) == "Cc" for char in field.data or ""):
        raise ValidationError(_l("Enter your name without control characters."))


def check_birthday(_form, field):
    if field.data and not date(1900, 1, 1) <= field.data <= date.today():
        raise ValidationError(_l("Enter a birthday between 1900 and today."))


class ContactDetailsForm(FlaskForm):
    customer_name = StringField(_l("Name"), validators=[
        DataRequired(_l("Enter your name.")),
        Length(max=100, message=_l("Use at most %(max)d characters.", max=100)),
        check_name,
    ])
    phone = TelField(_l("Mobile phone"),
                     validators=[DataRequired(_l("Enter your phone number.")), check_phone])
    email = EmailField(_l("E-mail"), validators=[
        DataRequired(_l("Enter your e-mail address.")),
        Length(max=254, message=_l("Use at most %(max)d characters.", max=254)),
        check_email,
    ])
    birthday = DateField(_l("Birthday (optional)"), validators=[Optional(), check_birthday],
                         format="%Y-%m-%d")

    def validate_birthday(self, field):
        # wtforms drops unparsable input to None; say so instead of silently storing nothing.
        if field.raw_data and field.raw_data[0].strip() and field.data is None:
            raise ValidationError(_l("Enter the birthday as a date, for example 1990-05-31."))


def _contact_or_404(token):
    if not token or len(token) > 64:
        abort(404)
    contact = db.session.scalar(db.select(Contact).filter_by(form_token=token))
    if contact is None:
        abort(404)
    return contact


def _shop_name(contact):
    channel = db.session.get(Channel, contact.channel_id)
    return channel.shop.name


@bp.errorhandler(404)
def unknown_link(_error):
    return render_template("contact_form/unknown.html"), 404


@bp.route("/<token>", methods=["GET", "POST"])
def fill(token):
    contact = _contact_or_404(token)
    form = ContactDetailsForm(obj=None if contact.form_filled_at is None else contact)
    if form.validate_on_submit():
        contact.customer_name = form.customer_name.data.strip()
        contact.phone = normalise_phone(form.phone.data)
        contact.email = normalise_email(form.email.data)
        contact.birthday = form.birthday.data
        contact.form_filled_at = utcnow()
        db.session.commit()
        return redirect(url_for(".thanks", token=token))
    return render_template("contact_form/form.html", form=form, shop_name=_shop_name(contact),
                           contact=contact, token=token)


@bp.get("/<token>/thanks")
def thanks(token):
    contact = _contact_or_404(token)
    if contact.form_filled_at is None:
        return redirect(url_for(".fill", token=token))
    return render_template("contact_form/thanks.html", shop_name=_shop_name(contact), contact=contact,
                           token=token)
