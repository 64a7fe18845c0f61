"""Staff pages about people and access: every account (deactivate, reactivate, lift a sign-in delay), pending
invitations (send again), staff API tokens (create, revoke) and the audit log.

The rules live in ``accounts`` and ``invitations``; these views parse the form, commit and say what happened.
A new API token is shown once, in the answer to the POST that made it (not after a redirect: nothing keeps
it to show again), and only its last 4 characters ever after.
"""
from datetime import datetime, timezone

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField

from .. import accounts, audit, crypto, invitations, throttle
from ..extensions import db
from . import checked_post, staff_only
from ..models import ApiToken, Invitation, Shop, User

bp = Blueprint("people", __name__, url_prefix="/shops")


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"))


staff_only(bp)


@bp.get("/people/")
def index():
    users = db.session.scalars(db.select(User).order_by(User.is_staff.desc(), User.email)).all()
    not_accepted = db.session.scalars(db.select(Invitation).where(Invitation.accepted_at.is_(None))
                                 .order_by(Invitation.created_at.desc()).limit(200)).all()
    # One row per shop and address not yet in: the newest invitation says where it stands.
    emails = {user.email for user in users}
    latest = {}
    for row in not_accepted:
        if row.email not in emails:
            latest.setdefault((row.shop_id, row.email), row)
    waiting = list(latest.values())
    # Whose sign-in is being delayed after failed tries, until when (a lookup per account in the throttle's
    # store; staff lift it with the button beside it).
    delayed = {}
    for user in users:
        until = throttle.delayed_until(user.email)
        if until is not None:
            delayed[user.id] = datetime.fromtimestamp(until, timezone.utc).replace(tzinfo=None)
    return render_template("accounts/people.html", users=users, invitations=waiting, form=FlaskForm(),
                           state=invitations.state, delayed=delayed)


def _user(user_id):
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


@bp.post("/people/<int:user_id>/deactivate")
def deactivate(user_id):
    checked_post()
    user = _user(user_id)
    try:
        changed = accounts.deactivate(user, current_user)
    except accounts.AccountErrors as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        if changed:
            flash(_("%(email)s is deactivated: they cannot sign in, and their sessions have ended.",
                    email=user.email), "success")
        else:
            flash(_("%(email)s was already deactivated.", email=user.email), "info")
    return redirect(url_for("people.index"))


@bp.post("/people/<int:user_id>/lift-sign-in-delay")
def lift_sign_in_delay(user_id):
    """The owner who mistyped (or whose account someone is guessing) may try again now."""
    checked_post()
    user = _user(user_id)
    running = throttle.lift(user.email)
    audit.record("account.sign_in_delay_lifted", shop=user.shop_id, actor=current_user, target=user.email,
                 was_running=running)
    db.session.commit()
    flash(_("%(email)s can try to sign in again now.", email=user.email), "success")
    return redirect(url_for("people.index"))


@bp.post("/people/<int:user_id>/reactivate")
def reactivate(user_id):
    checked_post()
    user = _user(user_id)
    changed = accounts.reactivate(user, current_user)
    db.session.commit()
    if changed:
        flash(_("%(email)s can sign in again with their password.", email=user.email), "success")
    else:
        flash(_("%(email)s was not deactivated.", email=user.email), "info")
    return redirect(url_for("people.index"))


def _tokens_page(form, created=None, code=200):
    rows = db.session.scalars(db.select(ApiToken).order_by(ApiToken.revoked_at.is_not(None),
                                                           ApiToken.created_at.desc()).limit(200)).all()
    return render_template("accounts/tokens.html", rows=rows, form=form, created=created,
                           action_form=FlaskForm(), mask=lambda row: crypto.mask("x" + row.tail)), code


@bp.get("/tokens/")
def tokens():
    return _tokens_page(TokenForm())


@bp.post("/tokens/")
def create_token():
    form = TokenForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        row, token = accounts.create_api_token(current_user._get_current_object(), form.name.data)
    except accounts.AccountErrors as exc:
        db.session.rollback()
        for error in exc.errors:
            form.name.errors.append(error.message)
        return _tokens_page(form, code=422)
    db.session.commit()
    return _tokens_page(TokenForm(formdata=None), created=(row, token))


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id):
    checked_post()
    row = db.session.get(ApiToken, token_id)
    if row is None:
        abort(404)
    if accounts.revoke_api_token(row):
        db.session.commit()
        flash(_("The token “%(name)s” is revoked: it no longer works.", name=row.name), "success")
    else:
        flash(_("The token “%(name)s” was already revoked.", name=row.name), "info")
    return redirect(url_for("people.tokens"))


@bp.get("/audit/")
def audit_log():
    slug = accounts.normalise_slug(request.args.get("shop", ""))[:64]
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug)) if slug else None
    unknown = bool(slug) and shop is None
    entries = [] if unknown else audit.recent(200, shop=shop)
    shops = db.session.scalars(db.select(Shop).order_by(Shop.name)).all()
    return render_template("accounts/audit.html", entries=entries, shops=shops, shop=shop, slug=slug,
                           unknown=unknown)
