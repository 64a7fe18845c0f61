"""The message templates' JSON API (plans/templates.py), let in as views/api.py lets in (the session, or a
staff API token as ``Authorization: Bearer …``):

- ``GET /api/v1/shops/<slug>/templates``: ``{"templates": [{"id", "name", "messages"}]}``;
- ``POST …/templates`` with ``{"name", "messages": [LINE message objects]}``: 201 and the template;
- ``GET``, ``PUT`` (the same body) and ``DELETE`` ``…/templates/<id>`` (409 naming the plans while a
  scheduled, sending or paused send plan uses it).

Messages are LINE's own objects, checked by LINE's validate endpoint before anything is saved. A refused
request answers 400 (409 when only the name is taken) with ``problems``, a message per problem keyed by
where it is (``name``, ``messages``, or LINE's property path such as ``messages[0].text``), and changes
nothing. Another shop's template, like another shop, is 404.
"""
from flask import Blueprint, abort, jsonify, request
from flask_babel import force_locale

from .. import audit
from ..extensions import db
from ..plans import templates
from .api import _shop_for_caller, problems_answer

bp = Blueprint("api_templates", __name__, url_prefix="/api/v1")


@bp.route("/shops/<slug>/templates", methods=["GET", "POST"])
def collection(slug):
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    if request.method == "GET":
        return jsonify(templates=[templates.as_json(t) for t in templates.for_shop(shop)])
    return _save(caller, shop, None)


@bp.route("/shops/<slug>/templates/<int:template_id>", methods=["GET", "PUT", "DELETE"])
def one(slug, template_id):
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    template = templates.get(shop, template_id)
    if template is None:
        abort(404, f"No template {template_id} in this shop.")
    if request.method == "GET":
        return jsonify(templates.as_json(template))
    if request.method == "PUT":
        return _save(caller, shop, template)
    name = template.name
    try:
        templates.delete(template)
    except templates.InUse as in_use:
        with force_locale("en"):
            return problems_answer({"template": in_use.message}, 409)
    audit.record("message_template.deleted", shop=shop, actor=caller, target=name)
    db.session.commit()
    return "", 204


def _save(caller, shop, template):
    with force_locale("en"):  # the API's messages are English, whatever the session's language
        data = request.get_json(silent=True) if request.is_json else None
        if not isinstance(data, dict):
            return problems_answer({"request": "Send a JSON object (Content-Type: application/json) with “name” and "
                                        "“messages”."})
        problems = {key: f"“{key}” is missing." for key in ("name", "messages") if key not in data}
        unknown = sorted(set(data) - {"id", "name", "messages"})
        if unknown:
            problems["request"] = f"Unknown field(s): {', '.join(unknown)}."
        if not isinstance(data.get("name", ""), str):
            problems["name"] = "“name” is text."
        if problems:
            return problems_answer(problems)
        try:
            saved = templates.save(shop, data["name"], data["messages"], template)
        except templates.Refused as refusal:
            return problems_answer(refusal.problems, 409 if refusal.duplicate else 400)
    audit.record("message_template.saved" if template else "message_template.created", shop=shop, actor=caller,
                 target=saved.name, messages=len(saved.messages))
    db.session.commit()
    return jsonify(templates.as_json(saved)), 200 if template else 201
