"""Thin blueprints, and the access rules every one of them uses:

- ``staff_only(bp)``: the rule for the staff pages: signed in, and staff (403 else);
- ``shop_for(slug)``: the one gate for every route that names a shop: its owner or staff get the shop, anyone
  else a 404, the same as for a shop that does not exist, so slugs cannot be probed (flaskr's ``get_post``);
- ``checked_post()`` refuses a POST without a valid CSRF token (400) for forms that have no fields of their own;
- ``acting_for(shop)``: the shop for the acting-for banner when staff act for it (owners see none);
- ``BoundedInt``: the app's ``<int:…>`` URL converter (the factory registers it before any blueprint): an id
  past ``LARGEST_ID`` is a 404 like any id that does not exist, not SQLite's OverflowError (a 500).
"""
from flask import abort
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.routing import IntegerConverter

from ..extensions import db
from ..models import LARGEST_ID, Shop


class BoundedInt(IntegerConverter):
    """Werkzeug's ``int`` with a ceiling: ``/c/<slug>/plans/99999999999999999999`` matches no route (404)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", LARGEST_ID)
        super().__init__(map, *args, **kwargs)


def staff_only(bp):
    """Let only signed-in staff reach any route of ``bp`` (others are sent to sign in, owners get 403)."""

    @bp.before_request
    @login_required
    def _staff_only():
        if not current_user.is_staff:
            abort(403)

    return bp


def shop_for(slug, user=None):
    """The shop named ``slug`` if ``user`` (the signed-in person, unless an API caller is given) may see it:
    its owner, or staff. Anyone else gets 404 (under /api/ the JSON ``not_found`` with this message)."""
    user = current_user if user is None else user
    description = f"No shop {slug} that you can see."
    shop = db.first_or_404(db.select(Shop).filter_by(slug=slug), description=description)
    if not user.can_see(shop):
        abort(404, description)
    return shop


def acting_for(shop):
    """The shop staff act for (the banner ``wizard/_acting.html`` shows), None for its owner."""
    return shop if current_user.is_staff else None


def checked_post():
    """A button's POST (no fields but the CSRF token): 400 unless its token is good."""
    if not FlaskForm().validate_on_submit():
        abort(400)
