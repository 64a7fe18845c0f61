"""The invitation link (``/invite/<token>``: choose a password, signed in at once) and the owner's page of
who has access to their shop (``/account/people``: invite a second person, withdraw a pending invitation).

A link that is unknown, tampered with, expired, used or replaced gets a page saying so in plain words and
what to do; it changes nothing. The accept page is never cached and sends no referrer, since its address is
the invitation itself.
"""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required, login_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import EqualTo

from .. import accounts, invitations
from ..extensions import db
from ..models import Invitation, User, utcnow

bp = Blueprint("invitations", __name__)

INVALID = {
    "unknown": (_l("This invitation link does not work"),
                _l("The link may be incomplete: open it again from the e-mail, all of it, or copy the whole "
                   "address. If it still does not work, ask the person who invited you to send a new one.")),
    "expired": (_l("This invitation has expired"),
                _l("Invitation links work for a limited time. Ask the person who invited you to send a new "
                   "one.")),
    "accepted": (_l("This invitation has already been used"),
                 _l("The account was created with it. Sign in with your e-mail address and password.")),
    "revoked": (_l("This invitation no longer works"),
                _l("A newer invitation was sent, or this one was withdrawn. Use the link in the newest "
                   "e-mail, or ask the person who invited you.")),
    "email_taken": (_l("This e-mail address already has an account"),
                    _l("Sign in with your e-mail address and password.")),
}


class AcceptForm(FlaskForm):
    password = PasswordField(_l("Choose a password"))
    confirm = PasswordField(_l("The password again"), validators=[
        EqualTo("password", message=_l("The two passwords are not the same.")),
    ])


class InvitePersonForm(FlaskForm):
    email = EmailField(_l("Their e-mail address"))


def _no_trace(response, code):
    return response, code, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _invalid(reason, invitation=None):
    title, text = INVALID[reason]
    code = 404 if reason == "unknown" else 410
    return _no_trace(render_template("accounts/invite_invalid.html", title=title, text=text, reason=reason,
                                     shop=invitation.shop if invitation is not None else None), code)


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept(token):
    invitation = invitations.find(token)
    if invitation is None:
        return _invalid("unknown")
    state = invitations.state(invitation)
    if state != "pending":
        return _invalid(state, invitation)
    form = AcceptForm()
    code = 200
    if form.validate_on_submit():
        try:
            user = invitations.accept(invitation, form.password.data)
        except accounts.AccountErrors as exc:
            db.session.rollback()
            refused = exc.errors[0]
            if refused.field == "invitation":
                return _invalid(refused.code if refused.code in INVALID else "revoked", invitation)
            for error in exc.errors:
                form.password.errors.append(error.message)
            code = 422
        else:
            user.last_sign_in_at = utcnow()
            db.session.commit()
            login_user(user, remember=True)
            flash(_("Welcome! Your account for %(shop)s is ready.", shop=invitation.shop.name), "success")
            return redirect(url_for("wizard.resume_shop", slug=invitation.shop.slug))
    elif form.is_submitted():
        code = 422
    return _no_trace(render_template("accounts/invite_accept.html", form=form, invitation=invitation,
                                     min_password=accounts.MIN_PASSWORD, min_distinct=accounts.MIN_DISTINCT), code)


def _own_shop():
    if current_user.is_staff:
        abort(404)  # staff have no shop of their own; they use /shops/people/
    if current_user.shop is None:
        abort(404)
    return current_user.shop


def _people_page(form, code=200):
    shop = _own_shop()
    people = db.session.scalars(db.select(User).filter_by(shop_id=shop.id).order_by(User.email)).all()
    return render_template("accounts/shop_people.html", shop=shop, people=people, form=form,
                           pending=invitations.pending_for_shop(shop), action_form=FlaskForm()), code


@bp.get("/account/people")
@login_required
def people():
    return _people_page(InvitePersonForm(formdata=None))


@bp.post("/account/people")
@login_required
def invite():
    shop = _own_shop()
    form = InvitePersonForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        # The same answer whether the address has an account or not: this form is no way to find out.
        invitation, token = invitations.invite(shop, form.email.data, current_user._get_current_object(),
                                               reveal=False)
    except accounts.AccountErrors as exc:
        db.session.rollback()
        for error in exc.errors:
            form.email.errors.append(error.message)
        return _people_page(form, 422)
    db.session.commit()
    message = invitations.deliver(invitation, token, current_user._get_current_object())
    db.session.commit()
    if message.error is None:
        flash(_("An invitation was sent to %(email)s. The link works for %(hours)d hours.",
                email=invitation.email, hours=round((invitation.expires_at - invitation.created_at)
                                                    .total_seconds() / 3600)), "success")
    else:
        flash(_("The invitation to %(email)s could not be sent: the mail server did not take it. Try again "
                "in a few minutes.", email=invitation.email), "error")
    return redirect(url_for("invitations.people"))


@bp.post("/account/people/invitations/<int:invitation_id>/withdraw")
@login_required
def withdraw(invitation_id):
    shop = _own_shop()
    if not FlaskForm().validate_on_submit():
        abort(400)
    invitation = db.session.get(Invitation, invitation_id)
    if invitation is None or invitation.shop_id != shop.id:
        abort(404)
    if invitations.revoke(invitation, current_user._get_current_object()):
        db.session.commit()
        flash(_("The invitation to %(email)s is withdrawn: its link no longer works.", email=invitation.email),
              "success")
    else:
        flash(_("The invitation to %(email)s was no longer pending.", email=invitation.email), "info")
    return redirect(url_for("invitations.people"))
