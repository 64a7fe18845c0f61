"""Staff pages: every shop with its status at a glance; creating a shop with its owner account.

The new-shop form has no rules of its own: ``accounts.create_shop_with_owner`` checks every field at once and
names each refused one after this form's fields, so every error of a submit stands under its own field.
"""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField

from .. import accounts
from ..extensions import db
from ..models import Outbox, Shop, StepState
from ..steps.registry import registry
from ..steps.status import stored_status


bp = Blueprint("shops", __name__, url_prefix="/shops")


class NewShopForm(FlaskForm):
    """Field names are the ones ``accounts.create_shop_with_owner`` reports errors under."""
    slug = StringField(_l("Shop code"))
    name = StringField(_l("Shop name"))
    owner_email = EmailField(_l("Owner's e-mail"))
    owner_password = PasswordField(_l("Owner's first password"))


@bp.before_request
@login_required
def staff_only():
    if not current_user.is_staff:
        abort(403)


@bp.route("/")
def index():
    """Stored step states only: listing every shop must not call LINE once per shop."""
    return _index(NewShopForm())


def _index(form, code=200):
    shops = db.session.scalars(db.select(Shop).order_by(Shop.name)).all()
    rows = {}
    for row in db.session.scalars(db.select(StepState)):
        rows.setdefault(row.shop_id, {})[row.key] = row
    statuses = [stored_status(shop, rows.get(shop.id, {})) for shop in shops]
    from .outbox import NEEDS_A_PERSON
    attention = db.session.scalar(db.select(db.func.count(Outbox.id)).where(Outbox.status.in_(NEEDS_A_PERSON)))
    return render_template("shops/index.html", statuses=statuses, steps=registry(), form=form,
                           min_password=accounts.MIN_PASSWORD, attention=attention), code


@bp.route("/new", methods=["POST"])
def new():
    form = NewShopForm()
    if form.validate_on_submit():
        try:
            shop = accounts.create_shop_with_owner(form.slug.data, form.name.data, form.owner_email.data,
                                                   form.owner_password.data)
        except accounts.AccountErrors as exc:
            db.session.rollback()
            for error in exc.errors:
                form[error.field].errors.append(error.message)
        else:
            db.session.commit()
            flash(_("Shop %(name)s created.", name=shop.name), "success")
            return redirect(url_for("wizard.resume_shop", slug=shop.slug))
    return _index(form, 422)
