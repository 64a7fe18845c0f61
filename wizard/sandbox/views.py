"""The control page at ``/``: plain forms that play the LINE side (channels, switches, friends who talk).

Each form posts, does one ``Sandbox`` action, flashes what happened (including what the webhook endpoint
answered) and redirects back. Also serves the generated profile pictures the platform hands out.
"""
import hashlib
from datetime import datetime

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from markupsafe import escape

from .control import SandboxError

bp = Blueprint("sandbox_views", __name__)


def sandbox():
    return current_app.extensions["sandbox"]


@bp.app_template_filter("when")
def _when(epoch):
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""


@bp.errorhandler(SandboxError)
def _refused(exc):
    flash(str(exc), "error")
    return redirect(request.referrer or url_for(".index"))


def _report(result):
    """Say in one line whether the user's action reached the webhook endpoint, and what it answered."""
    user = result["user"]
    who = f"{user['displayName']} ({user['userId']})"
    what = {"follow": "followed", "unfollow": "blocked the account", "message": "sent a message"}
    action = what.get(result["event"]["type"], result["event"]["type"])
    delivery = result["delivery"]
    if delivery is None:
        flash(f"{who} {action}. No webhook sent: {result['skipped']}.", "warning")
    else:
        flash(f"{who} {action}. Webhook: {delivery['reason']} {delivery['detail']}.",
              "ok" if delivery["success"] else "error")


@bp.get("/")
def index():
    return render_template("sandbox/index.html", channels=sandbox().channels(), friends=sandbox().counts())


@bp.post("/_sandbox/channels")
def create_channel():
    channel = sandbox().create_channel(display_name=request.form.get("display_name", "").strip() or None,
                                       endpoint=request.form.get("endpoint", "").strip() or None)
    flash(f"Created channel {channel['channelId']}.", "ok")
    return redirect(url_for(".channel", channel_id=channel["channelId"]))


@bp.get("/_sandbox/channels/<channel_id>")
def channel(channel_id):
    try:
        found = sandbox().channel(channel_id)
    except SandboxError as exc:
        return render_template("sandbox/index.html", channels=sandbox().channels(),
                               friends=sandbox().counts(), missing=str(exc)), 404
    return render_template("sandbox/channel.html", channel=found, users=sandbox().users(channel_id),
                           messages=sandbox().sent_messages(channel_id)[-50:][::-1],
                           deliveries=sandbox().deliveries(channel_id, 20))


@bp.post("/_sandbox/channels/<channel_id>/settings")
def settings(channel_id):
    form = request.form
    sandbox().update(channel_id, endpoint=form.get("endpoint", "").strip(),
                     webhook_active=form.get("webhook_active") == "on", chat_mode=form.get("chat_mode"),
                     display_name=form.get("display_name", "").strip() or None)
    flash("Settings saved.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/reissue")
def reissue(channel_id):
    sandbox().update(channel_id, reissue_secret=True)
    flash("A new Channel secret was issued; the old one no longer works.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/verify")
def verify(channel_id):
    outcome = sandbox().verify(channel_id)
    flash(f"Verify: {outcome['reason']} {outcome['detail']}.", "ok" if outcome["success"] else "error")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/follow")
def follow(channel_id):
    form = request.form
    _report(sandbox().follow(channel_id, form.get("user_id", "").strip() or None,
                             form.get("name", "").strip() or None))
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/unfollow")
def unfollow(channel_id):
    _report(sandbox().unfollow(channel_id, request.form.get("user_id", "").strip()))
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/say")
def say(channel_id):
    _report(sandbox().say(channel_id, request.form.get("user_id", "").strip() or None,
                          request.form.get("text", "").strip()))
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/failure")
def failure(channel_id):
    form = request.form
    status = form.get("status", "").strip()
    times = form.get("times", "").strip()
    try:
        sandbox().fail(channel_id, int(status) if status else None, times=int(times) if times else None,
                       delay=float(form.get("delay", "").strip() or 0))
    except ValueError:
        raise SandboxError("status, times and delay are numbers") from None
    flash("Failure settings saved." if status or form.get("delay") else "LINE answers normally again.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.get("/_sandbox/picture/<owner_id>.svg")
def picture(owner_id):
    """A round placeholder avatar whose colour comes from the ID, so each account and user looks distinct."""
    hue = int(hashlib.sha256(owner_id.encode()).hexdigest()[:4], 16) % 360
    letter = escape(owner_id[1:2].upper() or "?")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200" viewBox="0 0 200 200">'
           f'<circle cx="100" cy="100" r="100" fill="hsl({hue},55%,45%)"/>'
           f'<text x="100" y="128" font-size="84" text-anchor="middle" fill="#fff" '
           f'font-family="sans-serif">{letter}</text></svg>')
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
