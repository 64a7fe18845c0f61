"""Sign-in, sign-out and password change; Flask-Login keeps the session, ``accounts`` holds the rules."""
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo, ValidationError

from .. import accounts
from ..extensions import db, login_manager
from ..models import User

bp = Blueprint("auth", __name__)

login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please sign in to continue.")
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(session_id):
    user_id, _, fingerprint = session_id.partition(":")
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    return user if user is not None and user.session_fingerprint == fingerprint else None


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(_l("Enter your e-mail address."))])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password."))])


def check_new_password(_form, field):
    for error in accounts.password_errors(field.data):
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


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.user_by_email(form.email.data)  # typed with full-width letters or ＠ too
        if user and user.check_password(form.password.data):
            login_user(user, remember=True)
            return redirect(_safe_next(request.args.get("next")) or home_for(user))
        form.password.errors.append(_("The e-mail or the password is not right."))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
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
