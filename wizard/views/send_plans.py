"""A shop's send plans (LINE發送計畫), for its owners and for staff acting for it.

- ``/c/<slug>/plans``: the list (states, progress) with the month's quota at a glance;
- ``/c/<slug>/plans/new`` and ``/c/<slug>/plans/<id>/edit``: template, audience, purpose and time; saving
  makes a draft and leads to the confirmation. Editing a scheduled plan keeps it scheduled when only its name
  or template changed; anything that changes who gets it, what it costs or when makes it a draft again, and
  the plan's page and the list say it will not send until it is confirmed;
- ``/c/<slug>/plans/count``: the plan form's live count of the audience (static/js/segments.js), counted as
  the plan will be (``plans.channel_of``: the connected channel only);
- ``/c/<slug>/plans/<id>/confirm``: who gets it, who is left out and why, what it costs against the month's
  quota; confirming schedules it (refused over the quota unless "send only up to the quota" is chosen, and
  a one-off time that has passed since the draft was saved: the owner chooses a new one);
- ``/c/<slug>/plans/<id>``: progress, results and LINE's statistics; cancel, pause and resume buttons.

The shop comes through ``shop_for`` (owners their own, staff any, 404 otherwise); a plan of another shop is
a 404 too. The rules and words are plans/plans.py's, shared with the API (views/api_plans.py).
"""
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _, ngettext
from flask_login import current_user, login_required
from werkzeug.datastructures import MultiDict

from ..customers import segments
from ..models import utcnow
from ..outgoing import sender as senders
from ..plans import plans, runs, schedule, statistics, templates
from ..statuses import PlanState
from . import acting_for, checked_post, shop_for

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
    channel = plans.channel_of(shop)
    if channel is None:
        return None
    try:
        limit, used = plans.read_quota(channel)
    except senders.current().failure as problem:
        return {"error": plans.problem_words(problem.code)}
    left = None if limit is None else max(limit - used, 0)
    return {"limit": limit, "used": used, "left": left, "error": None}


def _common(shop):
    return dict(shop=shop, acting_for=acting_for(shop), PlanState=PlanState, UNCONFIRMED=plans.UNCONFIRMED)


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


def _form_values(shop, plan):
    """A saved plan as the form's fields (editing). A plan made from a saved segment that has been deleted
    since shows the conditions it keeps (``segment_gone`` says why the segment is not chosen)."""
    audience = plan.audience or {}
    segment_gone = bool(plan.segment_id) and segments.saved_one(shop, plan.segment_id) is None
    values = {"name": plan.name, "template_id": plan.template_id, "purpose": plan.purpose,
              "audience": "segment" if plan.segment_id and not segment_gone
              else ("all" if audience.get("all") else "filters"),
              "segment_id": None if segment_gone else plan.segment_id, "segment_gone": segment_gone,
              "when": plan.repeat or ("once" if plan.send_at else "now"), "hour": plan.hour,
              "send_at": schedule.to_local(plan.send_at).strftime("%Y-%m-%dT%H:%M")
              if plan.send_at and not plan.repeat else ""}
    return values


def _editor(shop, plan, values, problems, filters, code=200):
    """The plan's form; ``filters``: what the segment builder's fields show (a MultiDict)."""
    _clean, filter_problems = segments.check(segments.from_args(filters)) if filters else ({}, {})
    return render_template("send_plans/form.html", plan=plan, values=values, problems=problems,
                           templates=_templates(shop), saved_segments=segments.saved(shop), filters=filters,
                           filter_problems=filter_problems, anchors=ANCHORS, **_common(shop)), code


# Where the form's error summary takes the owner for a problem whose key is not a field's id.
ANCHORS = {"repeat": "send_at", "up_to_quota": "send_at"}


@bp.get("/<slug>/plans/count")
def count(slug):
    """The plan form's live count (static/js/segments.js sends the builder's fields): ``{"contacts", "text"}``
    of the friends the conditions pick on the channel the plan sends through, or 400 with
    ``{"problems", "text"}``: the number the confirmation and the API's audience count give."""
    shop = shop_for(slug)
    clean, problems = segments.check(segments.from_args(request.args))
    if problems:
        words = {key: str(message) for key, message in problems.items()}
        return jsonify(problems=words, text=" ".join(words.values())), 400
    total = plans.audience_count(shop, clean)
    if total is None:
        text = _("The shop's LINE account is not connected: plans cannot send yet.")
    else:
        text = ngettext("%(num)d contact matches (blocked ones are always left out)",
                        "%(num)d contacts match (blocked ones are always left out)", total)
    response = jsonify(contacts=total or 0, text=text)
    response.headers["Cache-Control"] = "no-store"
    return response


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
        flash(plans.started_refusal(plan.state), "error")
        return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    if request.method == "GET":
        return _editor(shop, plan, _form_values(shop, plan), {},
                       segments.form_values((plan.audience or {}).get("filters") or {}))
    checked_post()
    wanted, problems = _checked(shop, request.form)
    if problems:
        return _editor(shop, plan, _values_from_post(request.form), problems, request.form, 400)
    # A scheduled plan whose audience, cost and time are as they were stays scheduled (a typo fixed in its
    # name must not stop it); otherwise it waits for the owner to confirm the new cost.
    stays = plan.state == PlanState.SCHEDULED and not plans.needs_confirming(plan, wanted)
    try:
        plans.update_plan(plan, wanted, current_user, state=None if stays else PlanState.DRAFT)
    except plans.Refused as refused:
        flash(str(refused), "error")
        return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    if stays:
        flash(_("The plan is changed and still scheduled."), "success")
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
    channel = plans.channel_of(shop)
    found = plans.estimate(channel, wanted)
    # What no choice on this page mends (the owner changes the plan): shown at once, and a POST is refused.
    blocker = _blocker(shop, plan)
    if request.method == "POST":
        problem = blocker or plans.quota_problem(found, wanted)
        if channel is None:
            problem = _("The shop's LINE account is not connected: connect it before sending.")
        if problem is None:
            try:
                plans.update_plan(plan, wanted, current_user, state=PlanState.SCHEDULED, found=found)
            except plans.Refused as refused:
                flash(str(refused), "error")
                return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
            plans.queue_start(plan)
            flash(_("The plan is scheduled.") if plan.send_at
                  else _("The plan starts in a moment: reload this page to see it sending."), "success")
            return redirect(url_for(".show", slug=shop.slug, plan_id=plan.id))
    return render_template("send_plans/confirm.html", plan=plan, wanted=wanted, found=found, problem=problem,
                           blocker=blocker, quota_error=plans.problem_words(found.quota_error)
                           if found.quota_error else None,
                           send_at_local=schedule.to_local(plan.send_at) if plan.send_at else None,
                           **_common(shop)), 409 if problem else 200


def _blocker(shop, plan):
    """Why this draft cannot be confirmed as it is, in words, or None: its one-off time has passed since it
    was saved (confirming would send it at once, not at the time it says), or its template was deleted."""
    if plans.time_passed(plan):
        return _("The time this plan was to go out (%(time)s, Taipei time) has passed: choose a new time with "
                 "“Change the plan”.", time=schedule.to_local(plan.send_at).strftime("%Y-%m-%d %H:%M"))
    if templates.get(shop, plan.template_id) is None:
        return _("The plan's message template was deleted: choose another one with “Change the plan”.")
    return None


@bp.get("/<slug>/plans/<int:plan_id>")
def show(slug, plan_id):
    shop = shop_for(slug)
    plan = _plan(shop, plan_id)
    return render_template("send_plans/plan.html", plan=plan, counted=plans.totals(plan),
                           unconfirmed=plan.state == PlanState.DRAFT and plan.reason == plans.UNCONFIRMED,
                           reason=runs.reason_text(plan.reason) if plan.reason != plans.UNCONFIRMED else "",
                           reason_of=runs.reason_text,
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
    return _act(slug, plan_id, plans.cancel, _("The plan is cancelled: nothing more of it will be sent, except "
                                               "messages already handed to LINE, which still arrive."))


@bp.post("/<slug>/plans/<int:plan_id>/pause")
def pause(slug, plan_id):
    return _act(slug, plan_id, plans.pause, _("The plan is paused: what LINE has not received yet waits."))


@bp.post("/<slug>/plans/<int:plan_id>/resume")
def resume(slug, plan_id):
    return _act(slug, plan_id, plans.resume, _("The plan goes on."))
