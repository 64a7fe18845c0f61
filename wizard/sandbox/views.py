"""The control page at ``/``: plain forms that play the LINE side (channels, switches, friends who talk).

Each form posts, does one ``Sandbox`` action, flashes what happened (including what the webhook endpoint
answered) and redirects back. Also serves the generated profile pictures the platform hands out.

The page speaks English only (it plays LINE's English console for developers; the sandbox has no catalog) and
shows times in Taipei time, as the app does (its ``BABEL_DEFAULT_TIMEZONE``).
"""
import hashlib
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from .control import PLANS, USER_MESSAGE_TYPES, SandboxError

bp = Blueprint("sandbox_views", __name__)


def sandbox():
    return current_app.extensions["sandbox"]


TIMEZONE = ZoneInfo("Asia/Taipei")
# The channel page lists this many users and messages (a bench account has 100,000 friends).
LISTED = 50
PLAN_LABELS = [("free", "Free (輕用量): 200 messages a month"), ("3000", "中用量: 3,000 messages a month"),
               ("6000", "高用量: 6,000 messages a month"), ("none", "No limit")]
TIMEZONE_LABEL = "Taipei time, UTC+8"
# An http(s) URL in a message text, up to the first space or character that cannot be part of one here:
# quotes, angle brackets and the full-width punctuation of Chinese text. Trailing ASCII punctuation is
# given back.
_URL = re.compile(r"""https?://[^\s<>"'\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'"


@bp.app_template_filter("when")
def _when(epoch):
    """A sandbox timestamp (epoch seconds) in Taipei time; ``datetime`` holds it with its UTC offset."""
    if not epoch:
        return ""
    at = datetime.fromtimestamp(epoch, TIMEZONE)
    return Markup('<time datetime="{}">{}</time>').format(at.isoformat(timespec="seconds"),
                                                          at.strftime("%Y-%m-%d %H:%M:%S"))


@bp.app_template_global("timezone_label")
def _timezone_label():
    return TIMEZONE_LABEL


@bp.app_template_filter("linkify")
def linkify(text):
    """Escape ``text`` and make each http(s) URL in it a link; nothing else of the text becomes markup."""
    text = "" if text is None else str(text)
    parts, last = [], 0
    for match in _URL.finditer(text):
        url = match.group(0)
        while url and url[-1] in _TRAILING:
            url = url[:-1]
        if not url.split("://", 1)[1]:
            continue
        parts.append(escape(text[last:match.start()]))
        parts.append(Markup('<a href="{0}" rel="noopener noreferrer">{0}</a>').format(url))
        last = match.start() + len(url)
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


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
    if result["event"]["type"] == "message" and result["event"]["message"]["type"] != "text":
        action = f"sent a {result['event']['message']['type']} message"
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
    users = sandbox().users(channel_id, LISTED)
    return render_template("sandbox/channel.html", channel=found, users=users,
                           names={user["userId"]: user["displayName"] for user in users},
                           user_count=sandbox().user_count(channel_id),
                           friend_count=sandbox().friend_count(channel_id),
                           received_counts=sandbox().received_counts(channel_id, [u["userId"] for u in users]),
                           sends=sandbox().sends(channel_id, 20), plans=PLAN_LABELS, plan_limits=PLANS,
                           messages=sandbox().sent_messages(channel_id, limit=LISTED)[::-1],
                           deliveries=sandbox().deliveries(channel_id, 20),
                           quota=sandbox().quota(channel_id), message_types=USER_MESSAGE_TYPES,
                           read_marks=sandbox().read_marks(channel_id)[-20:][::-1],
                           contents=sandbox().contents(channel_id))


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
    """Issue a new Channel secret, only with the form's "yes" ticked: the old secret stops working at once."""
    sandbox().channel(channel_id)
    if request.form.get("confirm") != "yes":
        flash("Nothing changed: tick “Yes, issue a new Channel secret” to confirm. The current secret still "
              "works.", "error")
        return redirect(url_for(".channel", channel_id=channel_id))
    sandbox().update(channel_id, reissue_secret=True)
    flash("A new Channel secret was issued (shown under Basic settings). The old secret no longer works: "
          "LINE refuses it, and webhooks are now signed with the new one, so the app rejects them until it "
          "has it. Enter the new secret in the wizard's step 4, “Channel ID and Channel secret”.", "ok")
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


# The send form's fields, by message type: form name → LINE's field name (the rest get sample values).
_SEND_FIELDS = {"text": {"text": "text"}, "sticker": {"package_id": "packageId", "sticker_id": "stickerId"},
                "file": {"file_name": "fileName"}, "location": {"title": "title", "address": "address",
                                                                "latitude": "latitude", "longitude": "longitude"}}


@bp.post("/_sandbox/channels/<channel_id>/send")
def send(channel_id):
    """A friend sends a message of the chosen type; empty fields get sample values."""
    form = request.form
    message_type = form.get("type", "text")
    if message_type not in USER_MESSAGE_TYPES:
        raise SandboxError(f"a LINE user sends one of: {', '.join(USER_MESSAGE_TYPES)}")
    fields = {}
    for name, field in _SEND_FIELDS.get(message_type, {}).items():
        value = form.get(name, "").strip()
        if value:
            fields[field] = value
    _report(sandbox().send(channel_id, form.get("user_id", "").strip() or None, message_type,
                           ready=form.get("processing") != "on", **fields))
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/transcoding/<message_id>")
def transcoding(channel_id, message_id):
    status = request.form.get("status", "succeeded")
    sandbox().finish_transcoding(channel_id, message_id, status)
    flash(f"Message {message_id}: transcoding {status}.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/quota")
def quota(channel_id):
    """The monthly message limit: a number, or empty for no target limit."""
    value = request.form.get("quota", "").strip()
    if value and not value.isdecimal():
        raise SandboxError("the monthly limit is a whole number of messages, or empty for no limit")
    sandbox().update(channel_id, quota=int(value) if value else None)
    flash(f"Monthly limit: {value + ' messages' if value else 'none'}.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/plan")
def plan(channel_id):
    """The account's plan: the free plan's 200 messages a month, 3,000, 6,000, or no limit."""
    chosen = request.form.get("plan", "")
    sandbox().set_plan(channel_id, chosen)
    limit = PLANS[chosen]
    flash(f"Plan changed: {f'{limit} messages a month' if limit is not None else 'no limit'}.", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.post("/_sandbox/channels/<channel_id>/friends")
def make_friends(channel_id):
    """Many users add the account at once (no webhooks are sent for them)."""
    count = request.form.get("count", "").strip()
    if not count.isdecimal():
        raise SandboxError("how many friends? A whole number from 1 to 1000000")
    made = sandbox().make_friends(channel_id, int(count))
    flash(f"{len(made)} users added the account (no webhooks sent).", "ok")
    return redirect(url_for(".channel", channel_id=channel_id))


@bp.get("/_sandbox/channels/<channel_id>/user")
def find_user(channel_id):
    return redirect(url_for(".user", channel_id=channel_id, user_id=request.args.get("user_id", "").strip()))


@bp.get("/_sandbox/channels/<channel_id>/users/<user_id>")
def user(channel_id, user_id):
    """What one user received from the account."""
    found = sandbox().channel(channel_id)
    return render_template("sandbox/user.html", channel=found, user=sandbox().user(channel_id, user_id),
                           received=sandbox().received(channel_id, user_id))


@bp.app_template_filter("flex_parts")
def flex_parts(bubble):
    """What a user sees of a Flex bubble, in order: texts, images and buttons (label and where it leads)."""
    parts = []

    def walk(node):
        if isinstance(node, list):
            for child in node:
                walk(child)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "text" and (node.get("text") or node.get("contents")):
            text = node.get("text") or "".join(span.get("text", "") for span in node["contents"]
                                               if isinstance(span, dict))
            parts.append({"kind": "text", "text": text})
        elif kind == "image" and node.get("url"):
            parts.append({"kind": "image", "url": node["url"]})
        elif kind == "button" and isinstance(node.get("action"), dict):
            action = node["action"]
            parts.append({"kind": "button", "label": action.get("label") or action.get("type"),
                          "target": action.get("uri") or action.get("text") or action.get("data")})
        else:
            for block in ("header", "hero", "body", "footer", "contents"):
                if block in node:
                    walk(node[block])
    walk(bubble)
    return parts


@bp.post("/_sandbox/channels/<channel_id>/failure")
def failure(channel_id):
    form = request.form
    status = form.get("status", "").strip()
    times = form.get("times", "").strip()
    retry_after = form.get("retry_after", "").strip()
    try:
        sandbox().fail(channel_id, int(status) if status else None, times=int(times) if times else None,
                       delay=float(form.get("delay", "").strip() or 0),
                       retry_after=int(retry_after) if retry_after else None)
    except ValueError:
        raise SandboxError("status, times, delay and Retry-After are numbers") from None
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
