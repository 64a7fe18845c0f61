"""The send plans' JSON API (issue 16), for the shop's owner (session) or staff (session or Bearer token):

- ``GET /api/v1/shops/<slug>/send-plans``: ``{"send_plans": [plan, …]}``, newest first;
- ``POST /api/v1/shops/<slug>/send-plans``: a plan (``name``, ``template_id``, ``purpose``, ``audience``,
  ``send_at`` or null for now, ``repeat`` with ``hour``, ``up_to_quota``), checked and scheduled at once: 201
  with the plan; 400 with a message per problem, 409 when it would go over the month's quota or the shop has
  no LINE account connected; nothing is written then. An ``Idempotency-Key`` header makes a retry safe: the
  same key within a day answers the first plan (200) and creates nothing;
- ``GET …/send-plans/<id>``; ``POST …/<id>/cancel``, ``/pause``, ``/resume``: the plan, or 409 with why not.

A one-off ``send_at`` that has passed is refused (400): ``null`` is the way to send now. A session caller's
POST sends JSON or the ``X-CSRFToken`` header (views/api.py).

The plan's JSON is plans/plans.py ``as_json``; the messages are English, as the rest of the API's.
"""
from flask import Blueprint, jsonify, request
from flask_babel import force_locale

from ..extensions import db
from ..plans import plans
from .api import _shop_for_caller, problems_answer

bp = Blueprint("api_plans", __name__, url_prefix="/api/v1")

KEYS = {"name", "template_id", "purpose", "audience", "send_at", "repeat", "hour", "up_to_quota", "segment_id"}


@bp.get("/shops/<slug>/send-plans")
def index(slug):
    _caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    return jsonify(send_plans=[plans.as_json(plan) for plan in plans.for_shop(shop)])


@bp.post("/shops/<slug>/send-plans")
def create(slug):
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    key = request.headers.get("Idempotency-Key")
    with force_locale("en"):
        if key is not None:
            key = key.strip()
            if not key or len(key) > plans.MAX_KEY or not key.isprintable():
                return problems_answer({"Idempotency-Key": "The Idempotency-Key header is 1 to "
                                                      f"{plans.MAX_KEY} printable characters."})
            first = plans.by_key(shop, key)
            if first is not None:
                return jsonify(plans.as_json(first)), 200
        data = request.get_json(silent=True) if request.is_json else None
        if not isinstance(data, dict):
            return problems_answer({"body": "Send a JSON object (Content-Type: application/json) "
                                                          "with the plan's name, template_id, purpose, audience "
                                                          "and send_at."})
        problems = {key_: f"“{key_}” is not a field of a send plan." for key_ in sorted(set(data) - KEYS)}
        wanted, found_problems = plans.check(shop, data)
        problems.update(found_problems)
        if problems:
            return problems_answer(problems)
        channel = plans.channel_of(shop)
        if channel is None:
            return problems_answer({"shop": "The shop's LINE account is not connected."}, 409, "not_connected")
        found = plans.estimate(channel, wanted)
        over = plans.quota_problem(found, wanted)
        if over:
            return problems_answer({"up_to_quota": over}, 409, "over_quota")
        plan, created = plans.create(shop, wanted, caller, key=key, found=found)
    if created:
        plans.queue_start(plan)
    return jsonify(plans.as_json(plan)), 201 if created else 200


def _plan_or_404(shop, plan_id):
    plan = plans.of_shop(shop, plan_id)
    if plan is None:
        return None, (jsonify(error="not_found", message=f"No send plan {plan_id} in this shop."), 404)
    return plan, None


@bp.get("/shops/<slug>/send-plans/<int:plan_id>")
def show(slug, plan_id):
    _caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    plan, missing = _plan_or_404(shop, plan_id)
    return missing or jsonify(plans.as_json(plan))


def _act(slug, plan_id, action):
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    plan, missing = _plan_or_404(shop, plan_id)
    if missing:
        return missing
    with force_locale("en"):
        try:
            action(plan, caller)
        except plans.Refused as conflict:
            return problems_answer({"state": str(conflict)}, 409, "conflict")
    db.session.expire_all()
    return jsonify(plans.as_json(plans.of_shop(shop, plan_id)))


@bp.post("/shops/<slug>/send-plans/<int:plan_id>/cancel")
def cancel(slug, plan_id):
    return _act(slug, plan_id, plans.cancel)


@bp.post("/shops/<slug>/send-plans/<int:plan_id>/pause")
def pause(slug, plan_id):
    return _act(slug, plan_id, plans.pause)


@bp.post("/shops/<slug>/send-plans/<int:plan_id>/resume")
def resume(slug, plan_id):
    return _act(slug, plan_id, plans.resume)
