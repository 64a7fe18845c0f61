"""Thin blueprints. ``staff_only(bp)`` is the one rule for the staff pages: signed in, and staff (403 else)."""
from flask import abort
from flask_login import current_user, login_required


def staff_only(bp):
    """Let only signed-in staff reach any route of ``bp`` (others are sent to sign in, owners get 403)."""

    @bp.before_request
    @login_required
    def _staff_only():
        if not current_user.is_staff:
            abort(403)

    return bp
