"""JSON API for staff tools and the owner's own pages: ``GET /api/v1/shops/<slug>/status``.

A request is let in by the session (the shop's owner, or staff) or by a staff API token sent as
``Authorization: Bearer …`` (``flask --app wizard user token EMAIL`` prints one).
"""
from flask import Blueprint, jsonify, request
from flask_login import current_user

from .. import crypto
from ..extensions import db
from ..models import Shop, User
from ..steps.status import evaluate

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _caller():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header[len("Bearer "):].strip()
        user = db.session.scalar(db.select(User).filter_by(api_token_digest=crypto.token_digest(token)))
        return user if user is not None and user.is_staff else None
    return current_user if current_user.is_authenticated else None


@bp.route("/shops/<slug>/status")
def shop_status(slug):
    caller = _caller()
    if caller is None:
        response = jsonify(error="unauthorized", message="Sign in or send a staff API token as a Bearer header.")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
    if shop is None or not caller.can_see(shop):
        return jsonify(error="not_found", message=f"No shop {slug} that you can see."), 404
    status = evaluate(shop)
    db.session.commit()
    return jsonify(status.as_json())
