"""The setup wizard: one generic step view driven by the step registry, plus the few actions steps offer.

Every GET re-evaluates the shop (reusing fresh live results), so a page never trusts a stored "done". Every
action is a POST that changes one thing, then redirects back (PRG) — except a failed credentials form, which is
shown again with what the owner typed.
"""
import io
import re

import segno
from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, send_file, \
    url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import Optional, Regexp

from .. import crypto
from ..extensions import db
from ..line.connection import EndpointTaken, FormatProblem, connect, disconnect, set_endpoint, webhook_url
from ..line.problems import LineProblem
from ..models import Shop, WebhookEvent, iso_utc, utcnow
from ..steps import webhook_test
from ..steps.checks import public_url_problem
from ..steps.reasons import describe
from ..steps.registry import BY_KEY, CONNECTED_TITLE, PAGE_COUNT, STEPS, number
from ..steps.status import evaluate, invalidate

bp = Blueprint("wizard", __name__, url_prefix="/setup")


class PrepareForm(FlaskForm):
    line_login = BooleanField(_l("I have a LINE account with an e-mail address and a password set "
                                 "(LINE app → Settings → Account)."))


class AccountForm(FlaskForm):
    account_created = BooleanField(_l("I have created the LINE Official Account and can open it in LINE "
                                      "Official Account Manager."))
    basic_id = StringField(_l("Basic ID of the account (optional)"), validators=[
        Optional(), Regexp(r"^@?[0-9a-zA-Z._-]{3,20}$", message=_l("A basic ID looks like @123abcde."))])


class CredentialsForm(FlaskForm):
    channel_id = StringField(_l("Channel ID"))
    channel_secret = StringField(_l("Channel secret"))


class ResetForm(FlaskForm):
    confirm_reset = BooleanField(_l("Yes, forget the saved Channel ID and Channel secret."))


class EndpointForm(FlaskForm):
    confirm_replace = BooleanField(_l("Yes, replace the URL LINE has now. The other tool will stop receiving "
                                      "messages from this account."))


class ResponseForm(FlaskForm):
    auto_response = BooleanField(_l("In Response settings, auto-response messages are on."))


def shop_for(slug):
    shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
    if shop is None or not current_user.can_see(shop):
        abort(404)
    return shop


def step_url(shop, key):
    if key is None or key == "connected":
        return url_for("wizard.connected", slug=shop.slug)
    return url_for("wizard.step", slug=shop.slug, key=key)


def _confirm(shop, what, value):
    confirmations = dict(shop.confirmations or {})
    if value:
        confirmations.setdefault(what, iso_utc(utcnow()))
    else:
        confirmations.pop(what, None)
    shop.confirmations = confirmations


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
    shop = shop_for(slug)
    status = evaluate(shop)
    db.session.commit()
    return redirect(step_url(shop, status.first_open_step))


def _page(shop, status, key, **extra):
    index = number(key) - 1
    channel = shop.channel
    url = webhook_url(channel) if channel else None
    context = dict(
        shop=shop, status=status, step=BY_KEY[key], result=status.results[key], number=index + 1,
        page_count=PAGE_COUNT, steps=STEPS, channel=channel,
        prev_url=step_url(shop, STEPS[index - 1].key) if index else None,
        next_url=step_url(shop, STEPS[index + 1].key if index + 1 < len(STEPS) else None),
        webhook_url=url,
        masked_secret=_masked_secret(channel),
        step_url=lambda k: step_url(shop, k),
        # Sketches of LINE's screens show the owner's own names where we know them.
        sketch_account_name=(channel.display_name if channel and channel.display_name else shop.name),
        sketch_basic_id=channel.basic_id if channel and channel.basic_id else None,
        sketch_channel_id=channel.channel_id if channel else None,
        sketch_webhook_url=url,
    )
    context.update(extra)
    return render_template(BY_KEY[key].template, **context)


def _masked_secret(channel):
    if channel is None:
        return ""
    try:
        return crypto.mask(channel.secret)
    except crypto.SecretUnreadable:
        return "••••••••"


@bp.route("/<slug>/<key>", methods=["GET", "POST"])
@login_required
def step(slug, key):
    if key not in BY_KEY:
        abort(404)
    shop = shop_for(slug)
    if request.method == "POST":
        action = request.form.get("action", "recheck")
        handler = _recheck if action == "recheck" else ACTIONS.get((key, action))
        if handler is None:
            abort(400)
        response = handler(shop, key)
        if response is not None:
            return response
        db.session.commit()
        return redirect(step_url(shop, key))
    status = evaluate(shop)
    db.session.commit()
    return _page(shop, status, key, **_forms_for(shop, key))


def _forms_for(shop, key):
    """Forms a step page shows, pre-filled from what is saved."""
    confirmations = shop.confirmations or {}
    forms = {
        "prepare": lambda: {"form": PrepareForm(formdata=None, line_login=bool(confirmations.get("line_login")))},
        "create_account": lambda: {"form": AccountForm(
            formdata=None, account_created=bool(confirmations.get("account_created")),
            basic_id=shop.claimed_basic_id or "")},
        "credentials": lambda: {"form": CredentialsForm(
            formdata=None, channel_id=shop.channel.channel_id if shop.channel else ""),
            "reset_form": ResetForm(formdata=None)},
        "webhook_url": lambda: _webhook_context(shop),
        "response_settings": lambda: {"form": ResponseForm(
            formdata=None, auto_response=bool(confirmations.get("auto_response")))},
        "test_friend": lambda: _friend_context(shop),
    }
    return forms[key]() if key in forms else {}


def _recheck(shop, key):
    """Ask LINE afresh: the owner has just changed something there. (Three cheap reads; LINE's one rate-limited
    call, the webhook test, is never part of a re-check.)"""
    evaluate(shop, force=True)
    flash(_("Checked again."), "info")


def _save_prepare(shop, key):
    form = PrepareForm()
    _confirm(shop, "line_login", form.line_login.data)
    return _next_if_done(shop, key)


def _save_account(shop, key):
    form = AccountForm()
    if not form.validate():
        status = evaluate(shop)
        db.session.rollback()
        return _page(shop, status, key, form=form), 422
    _confirm(shop, "account_created", form.account_created.data)
    basic_id = (form.basic_id.data or "").strip()
    shop.claimed_basic_id = ("@" + basic_id.lstrip("@").lower()) if basic_id else None
    return _next_if_done(shop, key)


def _next_if_done(shop, key):
    status = evaluate(shop)
    db.session.commit()
    if status.results[key].state == "done":
        index = number(key) - 1
        return redirect(step_url(shop, STEPS[index + 1].key if index + 1 < len(STEPS) else None))
    return redirect(step_url(shop, key))


def _save_credentials(shop, key):
    form = CredentialsForm()
    error = None
    try:
        connect(shop, form.channel_id.data, form.channel_secret.data)
    except FormatProblem as problem:
        getattr(form, problem.field).errors = [problem.message]
    except LineProblem as problem:
        error = problem
        field = form.channel_id if problem.code == "unknown_channel" else form.channel_secret
        if problem.code in ("wrong_secret", "unknown_channel"):
            field.errors = [f"{problem.message} {problem.hint}"]
    else:
        # connect() cleared the cached step results; the page we redirect to checks afresh.
        db.session.commit()
        flash(_("LINE accepted the Channel ID and Channel secret. They are saved."), "success")
        return redirect(step_url(shop, "credentials"))
    db.session.rollback()
    status = evaluate(shop)
    db.session.commit()
    return _page(shop, status, key, form=form, reset_form=ResetForm(formdata=None), line_problem=error), 422


def _reset(shop, key):
    form = ResetForm()
    if not form.confirm_reset.data:
        flash(_("Nothing was reset: tick the box to confirm first."), "warning")
        return None
    disconnect(shop)
    flash(_("The saved connection was cleared. Enter the Channel ID and Channel secret again."), "info")
    return None


def _set_endpoint(shop, key):
    channel = shop.channel
    if channel is None:
        return redirect(step_url(shop, "credentials"))
    problem = public_url_problem()
    if problem:
        flash(describe(problem, {"url": current_app.config["PUBLIC_BASE_URL"]}), "error")
        return None
    try:
        set_endpoint(channel, replace=EndpointForm().confirm_replace.data)
    except EndpointTaken:
        flash(_("LINE has another webhook URL. Tick the box to confirm you want to replace it."), "warning")
        return None
    except LineProblem as exc:
        flash(f"{exc.message} {exc.hint}", "error")
        return None
    invalidate(shop, "webhook_url", "response_settings")
    flash(_("The webhook URL is now set in LINE."), "success")
    return None


def _test_webhook(shop, key):
    channel = shop.channel
    if channel is None:
        return redirect(step_url(shop, "credentials"))
    test, problem, wait = webhook_test.try_run(channel)
    if problem == "cooldown":
        flash(_("LINE allows only a few tests an hour. Please wait %(seconds)d seconds.", seconds=wait), "warning")
    elif problem:
        flash(describe(problem), "error")
    invalidate(shop, "webhook_url")
    return None


def _save_response(shop, key):
    _confirm(shop, "auto_response", ResponseForm().auto_response.data)
    invalidate(shop, key)
    return _next_if_done(shop, key)


ACTIONS = {
    ("prepare", "confirm"): _save_prepare,
    ("create_account", "confirm"): _save_account,
    ("credentials", "save"): _save_credentials,
    ("credentials", "reset"): _reset,
    ("webhook_url", "set_endpoint"): _set_endpoint,
    ("webhook_url", "test"): _test_webhook,
    ("response_settings", "confirm"): _save_response,
}


def _webhook_context(shop):
    channel = shop.channel
    context = {"endpoint_form": EndpointForm(formdata=None), "webhook_test": None,
               "test_wait": 0, "explain": webhook_test.explain}
    if channel is None:
        return context
    result = (channel.check_results or {})
    context["webhook_test"] = result.get("webhook_test")
    context["test_wait"] = webhook_test.seconds_until_allowed(channel)
    return context


def _friend_context(shop):
    channel = shop.channel
    if channel is None:
        return {"add_friend_url": None, "qr_svg": None, "last_event": None}
    url = channel.add_friend_url
    return {"add_friend_url": url,
            "qr_svg": segno.make(url, error="m").svg_inline(scale=5, border=2, omitsize=True, title=_("QR code to add "
                      "%(name)s as a friend", name=channel.display_name or "")) if url else None,
            "last_event": _last_event(channel)}


def _last_event(channel):
    return db.session.scalar(db.select(WebhookEvent).filter_by(channel_id=channel.id)
                             .order_by(WebhookEvent.id.desc()).limit(1))


@bp.route("/<slug>/test_friend/live")
@login_required
def friend_live(slug):
    """Polled by the test page: the first follow (and the last event of any kind) as an HTML fragment."""
    shop = shop_for(slug)
    status = evaluate(shop)
    db.session.commit()
    result = status.results["test_friend"]
    html = render_template("wizard/_friend_live.html", shop=shop, result=result,
                           last_event=_last_event(shop.channel) if shop.channel else None)
    return jsonify(done=result.state == "done", html=html, connected=status.connected)


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
    return render_template("wizard/connected.html", shop=shop, status=status, steps=STEPS, number=PAGE_COUNT,
                           page_count=PAGE_COUNT, title=CONNECTED_TITLE, channel=shop.channel,
                           step_url=lambda k: step_url(shop, k),
                           prev_url=step_url(shop, STEPS[-1].key))
