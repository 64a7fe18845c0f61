"""The staff console's list, /shops/: every shop with its recorded state at a glance (filters, sorting, pages,
counts per state), its CSV export, "check now" for the shops ticked, and creating a shop with its owner's
invitation. One shop's own page and its buttons are views/shop.py (/shops/<slug>/…); the staff pages beside
them have their own blueprints (people.py: /shops/people/, /shops/tokens/, /shops/audit/; outbox.py:
/shops/messages/; mail.py: /shops/mail/).

What the list shows is watch/board.py's: recorded states only, so listing shops never calls LINE. Only "check
now" asks LINE, through watch/drift.py.

The new-shop form has no rules of its own: ``invitations.create_shop`` checks every field at once and names
each refused one after this form's fields, so every error of a submit stands under its own field.
"""
from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func
from wtforms import EmailField, StringField

from .. import accounts, audit, invitations
from ..extensions import db
from ..models import Outbox, Shop, utcnow
from ..steps import health as shop_health
from ..steps.registry import registry
from ..steps.status import triggered_by
from ..watch import board
from . import checked_post, staff_only
from .outbox import NEEDS_A_PERSON

bp = Blueprint("shops", __name__, url_prefix="/shops")

CHECK_AT_ONCE = 50  # "check now" asks LINE for each shop while the request waits


class NewShopForm(FlaskForm):
    """Field names are the ones ``invitations.create_shop`` reports errors under. No password: the owner
    chooses it from the invitation mail."""
    slug = StringField(_l("Shop code"))
    name = StringField(_l("Shop name"))
    owner_email = EmailField(_l("Owner's e-mail"))


staff_only(bp)


@bp.route("/")
def index():
    """The list with its filters, and the new-shop form."""
    wanted = board.ShopFilter.from_args(request.args)
    problems = list(wanted.problems)
    try:
        page = board.list_shops(wanted, current_user.id)
    except board.BadListRequest as exc:
        problems.append(str(exc))
        wanted.page = 1
        page = board.list_shops(wanted, current_user.id)
    attention = db.session.scalar(db.select(func.count(Outbox.id)).where(Outbox.status.in_(NEEDS_A_PERSON)))
    return render_template(
        "shops/index.html", page=page, wanted=wanted, problems=problems, form=NewShopForm(), attention=attention,
        states=board.state_counts(), sorts=board.SORTS, steps=registry(), check_form=FlaskForm(),
        check_at_once=CHECK_AT_ONCE, step_title=board.step_title, back=request.full_path.rstrip("?"),
        has_endpoint=has_endpoint), 400 if problems else 200


def has_endpoint(name):
    return name in current_app.view_functions


@bp.get("/export.csv")
def export():
    """The filtered list (every page of it) as CSV: UTF-8 with a BOM, so Excel in Taiwan reads the Chinese."""
    wanted = board.ShopFilter.from_args(request.args, allow=("state", "stuck", "never_started", "mine", "q", "sort"))
    if wanted.problems:
        return Response(" ".join(wanted.problems) + "\n", 400, mimetype="text/plain")
    text = board.csv_text(wanted, current_user.id)
    name = f"shops-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(text.encode("utf-8"), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# ---- check now ----------------------------------------------------------------------------------------------

def back_to(default):
    """Where to go after a POST: the page it came from, if that is a console page of ours."""
    back = request.form.get("back") or ""
    if back.startswith("/shops/") and not back.startswith("//") and "\\" not in back:
        return back
    return default


def check(shops):
    """Ask LINE about each shop now (watch/drift.py), recorded as "shop.checked"; the states found."""
    from ..watch import drift
    with triggered_by("check_now"):
        rows = drift.check_now(shops)
    for shop in shops:
        audit.record("shop.checked", shop=shop)
    db.session.commit()
    return rows


@bp.post("/check")
def check_many():
    """"Check now" for the shops ticked on the list (at most CHECK_AT_ONCE)."""
    checked_post()
    slugs = list(dict.fromkeys(request.form.getlist("shop")))
    back = back_to(url_for("shops.index"))
    if not slugs:
        flash(_("Nothing was checked: tick the shops to check first."), "error")
        return redirect(back)
    if len(slugs) > CHECK_AT_ONCE:
        flash(_("Nothing was checked: at most %(num)d shops can be checked at once, and %(count)d were ticked.",
                num=CHECK_AT_ONCE, count=len(slugs)), "error")
        return redirect(back)
    shops = db.session.scalars(db.select(Shop).where(Shop.slug.in_(slugs)).order_by(Shop.name)).all()
    if not shops:
        flash(_("Nothing was checked: none of those shops exists any more."), "error")
        return redirect(back)
    rows = check(shops)
    by_state = {}
    for row in rows:
        by_state[row.state] = by_state.get(row.state, 0) + 1
    summary = ", ".join(f"{shop_health.LABELS[state]} {count}" for state, count in sorted(
        by_state.items(), key=lambda item: board.SEVERITY.get(item[0], 9)))
    flash(ngettext("Checked %(num)d shop just now: %(summary)s.", "Checked %(num)d shops just now: %(summary)s.",
                   len(rows), summary=summary), "success")
    return redirect(back)


# ---- a new shop ---------------------------------------------------------------------------------------------

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
            say_mailed(invitations.deliver(invitation, token, current_user),
                       _("Shop %(name)s created.", name=shop.name))
            db.session.commit()
            return redirect(url_for("wizard.resume_shop", slug=shop.slug))
    return render_template("accounts/new_shop.html", form=form), 422


def say_mailed(message, done):
    if message.error is None:
        flash(done + " " + _("An invitation was sent to %(email)s.", email=message.to), "success")
    else:
        flash(done + " " + _("The invitation to %(email)s could not be sent (the mail server did not take it). "
                             "Send it again later from the people page.", email=message.to), "error")
