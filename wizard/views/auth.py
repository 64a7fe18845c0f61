"""Sign-in, sign-out and password change; Flask-Login keeps the session, ``accounts`` holds the rules.

Guessing passwords is slowed by a short, growing delay after failed tries (``throttle``): only failures
count, so an owner who signs in every day never meets it; a try while a delay runs is refused before its
password is even looked at, right or wrong, and once the delay has passed the right password is let in. The
current password on the password change page counts the same way. Unknown e-mail addresses cost the
same password hash as known ones, so the answer's timing does not tell which addresses have an account.
Signing out raises the user's ``session_version``: a copied session or "remember me" cookie stops working.
"""
import math
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo, ValidationError

from .. import accounts, models, throttle
from ..extensions import db, login_manager
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


_dummy_hash = None


def _dummy_check(password):
    """Spend the time a real password check takes, for an e-mail address without an account. The hash is
    made once per process with the current default method, so its cost follows the real ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("not a password of anyone's")
    check_password_hash(_dummy_hash, password)


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        known = throttle.account_key(form.email.data) in throttle.known_accounts(request)
        try:
            attempt = throttle.attempt(form.email.data, request.remote_addr, known=known)
        except throttle.Throttled as exc:
            return _throttled(exc, LoginForm(formdata=None, email=form.email.data), "auth/login.html")
        user = accounts.user_by_email(form.email.data)  # typed with full-width letters or ＠ too
        right = user.check_password(form.password.data) if user is not None else _dummy_check(form.password.data)
        if right and not user.is_active:
            # Said only to whoever knows the password: the account exists but staff closed it.
            attempt.failed()
            form.email.errors.append(_("This account has been deactivated. Ask your onboarding contact if "
                                       "you need it again."))
            return render_template("auth/login.html", form=form)
        if right:
            attempt.succeeded()
            login_user(user, remember=True)
            user.last_sign_in_at = models.utcnow()
            db.session.commit()
            response = redirect(_safe_next(request.args.get("next")) or home_for(user))
            return throttle.remember_device(response, request, user.email)
        attempt.failed()
        form.password.errors.append(_("The e-mail or the password is not right."))
    return render_template("auth/login.html", form=form)


def _throttled(exc, form, template, **context):
    """A try while a delay runs: the same page with the form (e-mail kept, password not), nothing done."""
    seconds = exc.seconds
    if seconds < 90:
        message = ngettext("Too many failed tries. For your account's safety, wait %(num)d second and "
                           "try again.",
                           "Too many failed tries. For your account's safety, wait %(num)d seconds and "
                           "try again.", seconds)
    else:
        message = ngettext("Too many failed tries. For your account's safety, wait %(num)d minute and "
                           "try again.",
                           "Too many failed tries. For your account's safety, wait %(num)d minutes and "
                           "try again.", math.ceil(seconds / 60))
    return (render_template(template, form=form, throttled=message, **context), 429,
            {"Retry-After": str(seconds)})


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
        try:
            # The same delays as signing in (the same counts): a left-open session is no way to guess.
            attempt = throttle.attempt(current_user.email, request.remote_addr, known=True)
        except throttle.Throttled as exc:
            return _throttled(exc, PasswordForm(formdata=None), "auth/password.html",
                              min_password=accounts.MIN_PASSWORD, min_distinct=accounts.MIN_DISTINCT)
        if not current_user.check_password(form.current.data):
            attempt.failed()
            form.current.errors.append(_("The current password is not right."))
        else:
            attempt.succeeded()
            accounts.set_password(current_user, form.new.data)
            db.session.commit()
            # This session stays (signed in again with the new fingerprint); every other one ends.
            login_user(current_user._get_current_object(), remember=True)
            flash(_("Your password has been changed."), "success")
            return redirect(home_for(current_user))
    return render_template("auth/password.html", form=form, min_password=accounts.MIN_PASSWORD,
                           min_distinct=accounts.MIN_DISTINCT)
