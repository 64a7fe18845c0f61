"""The setup wizard: one generic view driven by the step registry.

Every GET re-evaluates the shop (reusing fresh live results), so a page never trusts a stored "done". Every
action is a POST to the step's own page (``action=<name>``) that changes one thing; the step and what it
depends on are then asked again and the page says what changed, and the browser is redirected back (PRG).
A form with mistakes is shown again at once, with what was typed.
"""
import io
import re

import segno
from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..crypto import SecretUnreadable
from ..extensions import db
from ..line.endpoint import webhook_url
from ..steps import confirmations, health as shop_health
from ..steps.connection import forget_results
from ..steps.reasons import describe
from ..steps.registry import CONNECTED_KEY, Action, registry
from ..steps.status import evaluate, stored_status
from ..steps.context import latest_event
from ..watch import alerts
from . import shop_for

bp = Blueprint("wizard", __name__, url_prefix="/setup")


def step_url(shop, key):
    if key is None or key == CONNECTED_KEY:
        return url_for("wizard.connected", slug=shop.slug)
    return url_for("wizard.step", slug=shop.slug, key=key)


class Page:
    """One request to one step's page: what a step's context and actions work with."""

    def __init__(self, shop, step, status=None):
        self.shop = shop
        self.step = step
        self.status = status

    @property
    def channel(self):
        return self.shop.channel

    def confirmed(self, what):
        return confirmations.given(self.shop, what)

    def url(self, key):
        return step_url(self.shop, key)

    def redirect(self, key):
        return redirect(self.url(key))

    def describe(self, reason, detail=None):
        return describe(reason, detail)

    def flash_problem(self, problem):
        """A failed call to LINE, with the reference staff can look up when it is not the owner's to fix."""
        message = f"{problem.message} {problem.hint}"
        if problem.code not in ("wrong_secret", "unknown_channel"):
            message += " " + _("Reference: %(reference)s", reference=problem.reference)
            current_app.logger.warning("LINE problem ref=%s shop=%s", problem.reference, self.shop.slug)
        flash(message, "error")

    def rollback(self):
        db.session.rollback()
        self.status = None

    def render(self, status_code=200, stored=False, **extra):
        """The step's page. ``stored``: show the results as last saved instead of asking LINE (for a form
        shown again with its mistakes, where the owner's attempt has just asked LINE already)."""
        if self.status is None:
            self.status = stored_status(self.shop) if stored else evaluate(self.shop)
            db.session.commit()
        context = self.step.context(self)
        context.update(extra)
        return _render(self.shop, self.status, self.step, **context), status_code


def _render(shop, status, step, **context):
    steps = registry()
    key = step.key if step else CONNECTED_KEY
    channel = shop.channel
    url = webhook_url(channel) if channel else None
    before = steps.before(key) if step else (steps.steps[-1].key if len(steps) else None)
    common = dict(
        shop=shop, status=status, step=step, result=status.results[key] if step else None,
        number=steps.number(key), page_count=steps.page_count, steps=steps.steps, channel=channel,
        prev_url=step_url(shop, before) if before else None,
        next_url=step_url(shop, steps.after(key)) if step else None,
        step_url=lambda k: step_url(shop, k), step_number=steps.number,
        confirmation=lambda what: confirmations.get(shop, what),
        acting_for=shop if current_user.is_staff else None,
        webhook_url=url,
        # Sketches of LINE's screens show the owner's own names where we know them.
        sketch_account_name=(channel.display_name if channel and channel.display_name else shop.name),
        sketch_basic_id=channel.basic_id if channel and channel.basic_id else None,
        sketch_channel_id=channel.channel_id if channel else None,
        sketch_webhook_url=url,
    )
    alert = alerts.banner(shop)
    common.update(shop_alert=alert, step_title=steps.title,
                  shop_state_message=shop_health.describe(status.health) if status.health else None,
                  shop_alert_message=alerts.sentence(alert, shop) if alert else None)
    common.update(context)
    template = step.template_name if step else "wizard/connected.html"
    return render_template(template, **common)


@bp.route("/")
@login_required
def resume():
    if current_user.is_staff:
        return redirect(url_for("shops.index"))
    if current_user.shop is None:
        abort(404)
    return redirect(url_for("wizard.resume_shop", slug=current_user.shop.slug))


@bp.route("/<slug>/")
@login_required
def resume_shop(slug):
    """Where the owner left off: the page whose action fixes the first step that is not done."""
    shop = shop_for(slug)
    status = evaluate(shop)
    db.session.commit()
    return redirect(step_url(shop, status.first_open_step))


@bp.route("/<slug>/<key>", methods=["GET", "POST"])
@login_required
def step(slug, key):
    steps = registry()
    if key not in steps:
        abort(404)
    step = steps.get(key)
    shop = shop_for(slug)
    if request.method == "GET":
        return Page(shop, step).render()
    return _act(shop, step, request.form.get("action", "recheck"))


def _act(shop, step, name):
    """Run one action of a step's page; then ask again and say what changed (or why nothing did)."""
    if name == "recheck":
        action = Action(lambda page: None)
    elif name in step.actions:
        action = step.actions[name]
    else:
        abort(400)
    # What the page said before, to compare with; an action that asks nothing again needs no evaluation.
    before = evaluate(shop) if action.recheck else None
    page = Page(shop, step, before)
    try:
        outcome = action.handler(page)
    except SecretUnreadable:
        # The saved secret cannot be decrypted (the encryption key changed): step 4 must say so, not a
        # cached "done".
        db.session.rollback()
        forget_results(shop, "credentials")
        db.session.commit()
        flash(describe("secret_unreadable"), "error")
        return redirect(step_url(shop, "credentials"))
    if outcome is not None and outcome is not False:
        db.session.commit()
        return outcome
    if outcome is None and action.recheck:
        after = evaluate(shop, force=True)
        _say_what_changed(before.results[step.key], after.results[step.key], step)
    else:
        after = evaluate(shop)
    db.session.commit()
    if action.advance and after.results[step.key].done:
        return redirect(step_url(shop, registry().after(step.key)))
    return redirect(step_url(shop, step.key))


def _say_what_changed(before, after, step):
    """The line that takes focus after the submit: the new verdict, or that nothing changed and why."""
    if (after.state, after.reason) == (before.state, before.reason) and not after.done:
        message = _("Checked again just now, and nothing changed: %(message)s", message=after.message)
        if step.live:
            message += " " + _("A change made in LINE can take a minute to show; check again shortly.")
        flash(message, "warning")
    else:
        flash(_("Checked again just now: %(message)s", message=after.message),
              "success" if after.done else "info")


@bp.route("/<slug>/test_friend/live")
@login_required
def friend_live(slug):
    """Polled by the test page: the friend test's verdict (and the last event of any kind) as HTML."""
    shop = shop_for(slug)
    status = evaluate(shop)
    db.session.commit()
    result = status.results["test_friend"]
    html = render_template("wizard/_friend_live.html", shop=shop, result=result,
                           last_event=latest_event(shop.channel) if shop.channel else None)
    return jsonify(done=result.done, html=html, connected=status.connected, reason=result.reason)


@bp.route("/<slug>/qr.<fmt>")
@login_required
def qr(slug, fmt):
    shop = shop_for(slug)
    if fmt not in ("svg", "png") or shop.channel is None or not shop.channel.add_friend_url:
        abort(404)
    buffer = io.BytesIO()
    segno.make(shop.channel.add_friend_url, error="m").save(buffer, kind=fmt, scale=10, border=4)
    buffer.seek(0)
    name = re.sub(r"[^0-9A-Za-z_-]", "", shop.channel.basic_id or "line") or "line"
    return send_file(buffer, mimetype="image/svg+xml" if fmt == "svg" else "image/png",
                     as_attachment=True, download_name=f"add-friend-{name}.{fmt}")


@bp.route("/<slug>/connected")
@login_required
def connected(slug):
    shop = shop_for(slug)
    status = evaluate(shop)
    db.session.commit()
    return _render(shop, status, None)
