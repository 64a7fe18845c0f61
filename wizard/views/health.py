"""GET/POST /healthz: a bare 200 for load balancers and for the webhook benchmark's baseline.

It touches nothing (no database, no session), so it measures the server and the framework alone.
"""
from flask import Blueprint

from ..extensions import csrf

bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET", "POST"])
@csrf.exempt
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}
