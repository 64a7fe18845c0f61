"""Sign-in, sign-out and password change; Flask-Login keeps the session, ``accounts`` holds the rules.

Guessing passwords is slowed per e-mail address and per client address: only failed attempts count
(Flask-Limiter's ``deduct_when``), so an owner who signs in every day never meets the limit, while a throttled
attempt is refused before its password is even looked at, right or wrong. Unknown e-mail addresses cost the
same password hash as known ones, so the answer's timing does not tell which addresses have an account.
Signing out raises the user's ``session_version``: a copied session or "remember me" cookie stops working.
"""
import hashlib
import math
import time
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo, ValidationError

from .. import accounts, models
from ..extensions import db, limiter, login_manager
from ..models import User

bp = Blueprint("auth", __name__)

login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please sign in to continue.")
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(session_id):
    user_id, _, fingerprint = session_id.partition(":")
    user = db.session.get(User, int(user_id)) if user_id.isdecimal() else None
    if user is None or user.session_fingerprint != fingerprint or not user.is_active:
        return None  # a deactivated account's sessions end at once, whatever cookie they hold
    return user


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(_l("Enter your e-mail address."))])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password."))])


def check_new_password(_form, field):
    for error in accounts.password_errors(field.data, email=current_user.email):
        raise ValidationError(error.message)


class PasswordForm(FlaskForm):
    current = PasswordField(_l("Current password"),
                            validators=[DataRequired(_l("Enter your current password."))])
    new = PasswordField(_l("New password"), validators=[
        DataRequired(_l("Enter a new password.")),
        check_new_password,
    ])
    confirm = PasswordField(_l("New password again"), validators=[
        EqualTo("new", message=_l("The two new passwords are not the same.")),
    ])


def _safe_next(target):
    """Only follow ``next`` to a path on this site, never to another host."""
    if not target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc and target.startswith("/") else None


def home_for(user):
    if user.is_staff:
        return url_for("shops.index")
    return url_for("wizard.resume")


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    return redirect(url_for("auth.login"))


def _account_key():
    """The throttle's key for the account tried: the e-mail as it is stored, hashed so that the limiter's
    storage (Redis in production) holds no addresses. Empty (no limit applies) when none was typed."""
    email = accounts.normalise_email(request.form.get("email"))
    return hashlib.sha256(email.encode()).hexdigest()[:32] if email else ""


def _failed(_response):
    return g.get("sign_in_failed", False)


_dummy_hash = None


def _dummy_check(password):
    """Spend the time a real password check takes, for an e-mail address without an account. The hash is
    made once per process with the current default method, so its cost follows the real ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("not a password of anyone's")
    check_password_hash(_dummy_hash, password)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["SIGN_IN_LIMIT_PER_ADDRESS"], methods=["POST"], scope="sign-in-address",
               deduct_when=_failed)
@limiter.limit(lambda: current_app.config["SIGN_IN_LIMIT_PER_ACCOUNT"], methods=["POST"], scope="sign-in-account",
               key_func=_account_key, deduct_when=_failed)
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.user_by_email(form.email.data)  # typed with full-width letters or ＠ too
        right = user.check_password(form.password.data) if user is not None else _dummy_check(form.password.data)
        if right and not user.is_active:
            # Said only to whoever knows the password: the account exists but staff closed it.
            g.sign_in_failed = True
            form.email.errors.append(_("This account has been deactivated. Ask your onboarding contact if "
                                       "you need it again."))
            return render_template("auth/login.html", form=form)
        if right:
            login_user(user, remember=True)
            user.last_sign_in_at = models.utcnow()
            db.session.commit()
            return redirect(_safe_next(request.args.get("next")) or home_for(user))
        g.sign_in_failed = True
        form.password.errors.append(_("The e-mail or the password is not right."))
    return render_template("auth/login.html", form=form)


@bp.errorhandler(RateLimitExceeded)
def sign_in_throttled(error):
    """Too many failed sign-ins: the same page with the form (e-mail kept, password not), nothing done."""
    reset_at = getattr(limiter.current_limit, "reset_at", None)
    seconds = max(1, math.ceil(reset_at - time.time())) if reset_at else 60
    minutes = max(1, math.ceil((seconds - 1) / 60))  # the storage rounds the window's end up by a second
    form = LoginForm(formdata=None, email=request.form.get("email", ""))
    message = ngettext("Too many failed sign-ins. For your account's safety, wait %(num)d minute and "
                       "try again.",
                       "Too many failed sign-ins. For your account's safety, wait %(num)d minutes and "
                       "try again.", minutes)
    return render_template("auth/login.html", form=form, throttled=message), 429, {"Retry-After": str(seconds)}


@bp.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        # Every session and "remember me" cookie this user holds ends here, copies included.
        current_user.session_version = (current_user.session_version or 0) + 1
        db.session.commit()
    logout_user()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = PasswordForm()
    if form.validate_on_submit():
        if not current_user.check_password(form.current.data):
            form.current.errors.append(_("The current password is not right."))
        else:
            accounts.set_password(current_user, form.new.data)
            db.session.commit()
            # This session stays (signed in again with the new fingerprint); every other one ends.
            login_user(current_user._get_current_object(), remember=True)
            flash(_("Your password has been changed."), "success")
            return redirect(home_for(current_user))
    return render_template("auth/password.html", form=form, min_password=accounts.MIN_PASSWORD)
