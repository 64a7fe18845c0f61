"""Thin blueprints. ``staff_only(bp)`` is the one rule for the staff pages: signed in, and staff (403 else);
``checked_post()`` refuses a POST without a valid CSRF token (400) for forms that have no fields of their own."""
from flask import abort
from flask_login import current_user, login_required
from flask_wtf import FlaskForm


def staff_only(bp):
    """Let only signed-in staff reach any route of ``bp`` (others are sent to sign in, owners get 403)."""

    @bp.before_request
    @login_required
    def _staff_only():
        if not current_user.is_staff:
            abort(403)

    return bp


def checked_post():
    """A button's POST (no fields but the CSRF token): 400 unless its token is good."""
    if not FlaskForm().validate_on_submit():
        abort(400)
