"""Staff pages: every shop with its status at a glance; creating a shop with its owner account."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired

from ..cli import create_shop, create_user
from ..extensions import db
from ..models import Shop, StepState
from ..steps.registry import STEPS
from ..steps.status import stored_status

NUMBERS = {step.key: (index + 1, step) for index, step in enumerate(STEPS)}

bp = Blueprint("shops", __name__, url_prefix="/shops")


class NewShopForm(FlaskForm):
    slug = StringField(_l("Shop code"), validators=[DataRequired(_l("Enter a shop code."))])
    name = StringField(_l("Shop name"), validators=[DataRequired(_l("Enter the shop's name."))])
    owner_email = EmailField(_l("Owner's e-mail"), validators=[DataRequired(_l("Enter the owner's e-mail."))])
    owner_password = PasswordField(_l("Owner's first password"),
                                   validators=[DataRequired(_l("Enter a first password for the owner."))])


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
    return render_template("shops/index.html", statuses=statuses, numbers=NUMBERS, form=form), code


@bp.route("/new", methods=["POST"])
def new():
    form = NewShopForm()
    if form.validate_on_submit():
        try:
            create_user(form.owner_email.data, form.owner_password.data)
            shop = create_shop(form.slug.data, form.name.data, form.owner_email.data)
        except ValueError as exc:
            db.session.rollback()
            form.slug.errors.append(str(exc)) if "shop" in str(exc) else form.owner_email.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("Shop %(name)s created.", name=shop.name), "success")
            return redirect(url_for("wizard.resume_shop", slug=shop.slug))
    return _index(form, 422)
