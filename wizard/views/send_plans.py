"""A shop's send plans (LINE發送計畫), for its owners and for staff acting for it.

- ``/c/<slug>/plans``: the list (states, progress) with the month's quota at a glance;
- ``/c/<slug>/plans/new`` and ``/c/<slug>/plans/<id>/edit``: template, audience, purpose and time; saving
  makes a draft and leads to the confirmation;
- ``/c/<slug>/plans/<id>/confirm``: who gets it, who is left out and why, what it costs against the month's
  quota; confirming schedules it (refused over the quota unless "send only up to the quota" is chosen);
- ``/c/<slug>/plans/<id>``: progress, results and LINE's statistics; cancel, pause and resume buttons.

The shop comes through ``shop_for`` (owners their own, staff any, 404 otherwise); a plan of another shop is
a 404 too. The rules and words are plans/plans.py's, shared with the API (views/api_plans.py).
"""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.datastructures import MultiDict

from .. import queue
from ..customers import segments
from ..models import utcnow
from ..outgoing import sender as senders
from ..plans import plans, runs, schedule, statistics, templates
from ..statuses import PlanState
from . import checked_post, shop_for

bp = Blueprint("send_plans", __name__, url_prefix="/c")


@bp.before_request
@login_required
def signed_in():
    pass


def _plan(shop, plan_id):
    plan = plans.of_shop(shop, plan_id)
    if plan is None:
        abort(404)
    return plan


def _templates(shop):
    return templates.for_shop(shop)


def _quota(shop):
    """(limit, used, error) of this month for the list's bar; LINE not answering is said, not hidden."""
    channel = shop.channel
    if channel is None:
        return None
    try:
        limit, used = plans.read_quota(channel)
    except senders.current().failure as problem:
        return {"error": problem.code}
    left = None if limit is None else max(limit - used, 0)
    return {"limit": limit, "used": used, "left": left, "error": None}


def _common(shop):
    return dict(shop=shop, acting_for=shop if current_user.is_staff else None, PlanState=PlanState)


@bp.get("/<slug>/plans")
def index(slug):
    shop = shop_for(slug)
    listed = plans.for_shop(shop)
    return render_template("send_plans/index.html", plans=listed, totals={p.id: plans.totals(p) for p in listed},
                           quota=_quota(shop), **_common(shop))


def _checked(shop, form):
    """``plans.check`` of the page's fields, and the page's own problem: "once" without a time."""
    wanted, problems = plans.check(shop, _data_from_form(form))
    if form.get("when") == "once" and not (form.get("send_at") or "").strip():
        problems["send_at"] = _("Choose the date and time (Taipei time) it goes out.")
    return wanted, problems


def _data_from_form(form):
    """The page's fields as the API's plan keys, so both are checked by the same rules."""
    when = form.get("when", "now")
    filters = segments.from_args(form)
    data = {"name": form.get("name", ""), "template_id": form.get("template_id"), "purpose": form.get("purpose"),
            "audience": {"all": form.get("audience") == "all", "filters": filters},
            "up_to_quota": form.get("up_to_quota") == "1"}
    if form.get("audience") == "segment":
        data["segment_id"] = form.get("segment_id") or "0"
    if when == "once":
        data["send_at"] = form.get("send_at") or None
    elif when in schedule.REPEATS:
        data["repeat"], data["hour"] = when, form.get("hour")
    elif when != "now":
        data["repeat"] = when
    return data


def _form_values(plan):
    """A saved plan as the form's fields (editing)."""
    audience = plan.audience or {}
    values = {"name": plan.name, "template_id": plan.template_id, "purpose": plan.purpose,
              "audience": "segment" if plan.segment_id else ("all" if audience.get("all") else "filters"),
              "segment_id": plan.segment_id,
              "when": plan.repeat or ("once" if plan.send_at else "now"), "hour": plan.hour,
              "send_at": schedule.to_local(plan.send_at).strftime("%Y-%m-%dT%H:%M")
              if plan.send_at and not plan.repeat else ""}
    return values


def _editor(shop, plan, values, problems, filters, code=200):
    """The plan's form; ``filters``: what the segment builder's fields show (a MultiDict)."""
    _clean, filter_problems = segments.check(segments.from_args(filters)) if filters else ({}, {})
    return render_template("send_plans/form.html", plan=plan, values=values, problems=problems,
                           templates=_templates(shop), saved_segments=segments.saved(shop), filters=filters,
                           filter_problems=filter_problems, **_common(shop)), code


def _values_from_post(form):
    return {"name": form.get("name", ""), "template_id": form.get("template_id", type=int),
            "purpose": form.get("purpose"), "audience": form.get("audience", "all"),
            "segment_id": form.get("segment_id", type=int), "when": form.get("when", "now"),
            "hour": form.get("hour", type=int), "send_at": form.get("send_at", "")}


@bp.route("/<slug>/plans/new", methods=["GET", "POST"])
def new(slug):
    shop = shop_for(slug)
    if request.method == "GET":
        return _editor(shop, None, {"purpose": "marketing", "audience": "all", "when": "now", "hour": 10}, {},
                       MultiDict())
    checked_post()
    wanted, problems = _checked(shop, request.form)
    if problems:
        return _editor(shop, None, _values_from_post(request.form), problems, request.form, 400)
    plan, _created = plans.create(shop, wanted, current_user, state=PlanState.DRAFT)
    return redirect(url_for(".confirm", slug=shop.slug, plan_id=plan.id))


@bp.route("/<slug>/plans/<int:plan_id>/edit", methods=["GET", "POST"])
def edit(slug, plan_id):
    shop = shop_for(slug)
    plan = _plan(shop, plan_id)
    if plan.state not in plans.EDITABLE:
        flash(plans.started_refusal(plan), "error")
        return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    if request.method == "GET":
        return _editor(shop, plan, _form_values(plan), {},
                       segments.form_values((plan.audience or {}).get("filters") or {}))
    checked_post()
    wanted, problems = _checked(shop, request.form)
    if problems:
        return _editor(shop, plan, _values_from_post(request.form), problems, request.form, 400)
    try:
        plans.update_plan(plan, wanted, current_user, state=PlanState.DRAFT)
    except plans.Refused as refused:
        flash(str(refused), "error")
        return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    return redirect(url_for(".confirm", slug=shop.slug, plan_id=plan.id))


@bp.route("/<slug>/plans/<int:plan_id>/confirm", methods=["GET", "POST"])
def confirm(slug, plan_id):
    shop = shop_for(slug)
    plan = _plan(shop, plan_id)
    if plan.state != PlanState.DRAFT:
        return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    wanted = plans.wanted_of(plan)
    problem = None
    if request.method == "POST":
        checked_post()
        wanted.up_to_quota = request.form.get("up_to_quota") == "1"
    found = plans.estimate(shop.channel, wanted)
    if request.method == "POST":
        problem = plans.quota_problem(found, wanted)
        if shop.channel is None:
            problem = _("The shop's LINE account is not connected: connect it before sending.")
        if problem is None:
            try:
                plans.update_plan(plan, wanted, current_user, state=PlanState.SCHEDULED, found=found)
            except plans.Refused as refused:
                flash(str(refused), "error")
                return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
            if plan.send_at is None and not plan.repeat:
                queue.start_plan.try_now(plan.id, row=f"send plan {plan.id}")
            flash(_("The plan is scheduled.") if plan.send_at else _("The plan is on its way."), "success")
            return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    return render_template("send_plans/confirm.html", plan=plan, wanted=wanted, found=found, problem=problem,
                           send_at_local=schedule.to_local(plan.send_at) if plan.send_at else None,
                           **_common(shop)), 409 if problem else 200


@bp.get("/<slug>/plans/<int:plan_id>")
def show(slug, plan_id):
    shop = shop_for(slug)
    plan = _plan(shop, plan_id)
    return render_template("send_plans/plan.html", plan=plan, counted=plans.totals(plan),
                           reason=runs.reason_text(plan.reason), reason_of=runs.reason_text,
                           line_counts=statistics.counted(plan),
                           now=utcnow(), **_common(shop))


def _act(slug, plan_id, action, done):
    shop = shop_for(slug)
    plan = _plan(shop, plan_id)
    checked_post()
    try:
        action(plan, current_user)
    except plans.Refused as refused:
        flash(str(refused), "error")
    else:
        flash(done, "success")
    return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))


@bp.post("/<slug>/plans/<int:plan_id>/cancel")
def cancel(slug, plan_id):
    return _act(slug, plan_id, plans.cancel, _("The plan is cancelled: nothing more of it will be sent."))


@bp.post("/<slug>/plans/<int:plan_id>/pause")
def pause(slug, plan_id):
    return _act(slug, plan_id, plans.pause, _("The plan is paused: what LINE has not received yet waits."))


@bp.post("/<slug>/plans/<int:plan_id>/resume")
def resume(slug, plan_id):
    return _act(slug, plan_id, plans.resume, _("The plan goes on."))
