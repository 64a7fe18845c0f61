"""``POST /api/v1/shops/<slug>/audience/count`` with ``{"filters": {...}}`` → ``{"contacts": N}``: how many of
the shop's LINE friends the filters pick (customers/segments.py: the keys of issue 16, blocked friends never),
on the channel that is connected now, the one a send plan would send through (0 while none is): the same
count as the plan form's (``plans.audience_count``).

Let in as the rest of the API (views/api.py): the shop's owner or staff by session, or a staff API token as
``Authorization: Bearer …``; another shop's owner gets the 404 of a shop that does not exist. Refused filters
answer 400 with a message per problem key (English, as the whole API) and count nothing.
"""
from flask import Blueprint, jsonify, request
from flask_babel import force_locale

from ..customers import segments
from ..plans import plans
from .api import _shop_for_caller, problems_answer

bp = Blueprint("api_audience", __name__, url_prefix="/api/v1")


@bp.post("/shops/<slug>/audience/count")
def audience_count(slug):
    _caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    with force_locale("en"):  # the API's messages are English, whatever the session's language
        data = request.get_json(silent=True) if request.is_json else None
        if not isinstance(data, dict):
            return problems_answer({"body": "Send a JSON object (Content-Type: application/json) with “filters”."})
        problems = {}
        if "filters" not in data:
            problems["filters"] = "“filters” is missing: send {} for every friend."
        for key in sorted(set(data) - {"filters"}):
            problems[str(key)[:40]] = f"“{str(key)[:40]}” is not a field here: send only “filters”."
        clean, refused_filters = segments.check(data.get("filters", {}))
        problems.update(refused_filters)
        if problems:
            return problems_answer(problems)
    return jsonify(contacts=plans.audience_count(shop, clean) or 0)
