"""Staff pages: every shop with its status at a glance; creating a shop and inviting its owner.

The new-shop form has no rules of its own: ``invitations.create_shop`` checks every field at once and names
each refused one after this form's fields, so every error of a submit stands under its own field.
"""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, StringField

from .. import accounts, invitations
from ..extensions import db
from . import staff_only
from ..models import Shop


bp = Blueprint("shops", __name__, url_prefix="/shops")


class NewShopForm(FlaskForm):
    """Field names are the ones ``invitations.create_shop`` reports errors under. No password: the owner
    chooses it from the invitation mail."""
    slug = StringField(_l("Shop code"))
    name = StringField(_l("Shop name"))
    owner_email = EmailField(_l("Owner's e-mail"))


class InviteForm(FlaskForm):
    """Resend a shop's invitation: to ``email``, or (left empty) to the address last invited."""
    email = EmailField(_l("E-mail to invite"))


staff_only(bp)


@bp.route("/")
def index():
    """The staff console (views/console.py): recorded states only, listing shops never calls LINE."""
    return _index(NewShopForm())


def _index(form, code=200):
    from .console import console_page
    return console_page(form, code)


@bp.route("/new", methods=["GET", "POST"])
def new():
    """The new-shop form on its own page; a refused submit comes back here with every mistake."""
    form = NewShopForm()
    if request.method == "GET":
        return render_template("accounts/new_shop.html", form=form)
    if form.validate_on_submit():
        try:
            shop, invitation, token = invitations.create_shop(form.slug.data, form.name.data,
                                                              form.owner_email.data, current_user)
        except accounts.AccountErrors as exc:
            db.session.rollback()
            for error in exc.errors:
                form[error.field].errors.append(error.message)
        else:
            db.session.commit()  # the shop and its invitation stand even if the mail server is down
            _say_mailed(invitations.deliver(invitation, token, current_user),
                        _("Shop %(name)s created.", name=shop.name))
            db.session.commit()
            return redirect(url_for("wizard.resume_shop", slug=shop.slug))
    return render_template("accounts/new_shop.html", form=form), 422


def _say_mailed(message, done):
    if message.error is None:
        flash(done + " " + _("An invitation was sent to %(email)s.", email=message.to), "success")
    else:
        flash(done + " " + _("The invitation to %(email)s could not be sent (the mail server did not take it). "
                             "Send it again later from the people page.", email=message.to), "error")


@bp.post("/<slug>/invite")
def invite(slug):
    """Send the shop's invitation again (a new link; the older pending one stops working)."""
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
    if shop is None:
        abort(404)
    form = InviteForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        invitation, token = invitations.resend(shop, current_user, form.email.data)
    except accounts.AccountErrors as exc:
        db.session.rollback()
        flash(" ".join(str(error.message) for error in exc.errors), "error")
    else:
        db.session.commit()
        _say_mailed(invitations.deliver(invitation, token, current_user), _("New invitation made."))
        db.session.commit()
    # Back where the button was: the shop's page sends "back", the people page does not.
    if request.form.get("back") == "shop":
        return redirect(url_for("console.shop", slug=shop.slug))
    return redirect(url_for("people.index"))
