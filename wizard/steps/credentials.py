"""Step 4, the Channel ID and Channel secret: typed by the owner, proven against LINE, saved encrypted.

Its check is the root of the others: a working pair proves the Messaging API is on (step 3) and names the
account (step 2); the Basic ID the owner typed in step 2 is compared here, since a wrong Channel ID is fixed
here.

The Channel secret is a password: a refused save shows every reason but never the secret itself, neither in
its field (a PasswordField is drawn empty) nor in the Channel ID field when the two were swapped, so a page
left open or kept in a browser's history does not give it away.
"""
from flask import flash
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField

from .. import crypto
from ..crypto import SecretUnreadable
from ..line.problems import LineProblem
from .connection import FormatProblem, connect, disconnect
from .context import StepResult, problem_result
from .status import evaluate
from .registry import Action, Step
from .state import State
from .text import clean

MAX_CHANNEL_ID = 15  # connection.CHANNEL_ID


class CredentialsForm(FlaskForm):
    channel_id = StringField(_l("Channel ID"))
    channel_secret = PasswordField(_l("Channel secret"))  # never drawn with its value


class ResetForm(FlaskForm):
    confirm_reset = BooleanField(_l("Yes, forget the saved Channel ID and Channel secret."))


def check(ctx):
    if ctx.channel is None:
        return StepResult("credentials", State.TODO, "no_credentials")
    try:
        info = ctx.bot_info()
    except SecretUnreadable:
        return StepResult("credentials", State.ACTION, "secret_unreadable")
    except LineProblem as problem:
        return problem_result("credentials", problem)
    ctx.channel.remember_bot_info(info)
    claimed = (ctx.shop.claimed_basic_id or "").lstrip("@").lower()
    actual = (info.get("basicId") or "").lstrip("@").lower()
    if claimed and actual and claimed != actual:
        return StepResult("credentials", State.ACTION, "basic_id_mismatch",
                          {"claimed": "@" + claimed, "actual": info.get("basicId"), "name": info.get("displayName")})
    return StepResult("credentials", State.DONE, "credentials_verified",
                      {"name": info.get("displayName"), "basic_id": info.get("basicId")})


def masked_secret(channel):
    if channel is None:
        return ""
    try:
        return crypto.mask(channel.secret)
    except crypto.SecretUnreadable:
        return "••••••••"


def _context(page):
    channel = page.channel
    return {"form": CredentialsForm(formdata=None, channel_id=channel.channel_id if channel else ""),
            "reset_form": ResetForm(formdata=None), "masked_secret": masked_secret(channel),
            "waiting": _waiting(channel)}


def _waiting(channel):
    """How many refused deliveries are kept for the next secret (line/quarantine.py): before the owner enters
    it, the page says these are most likely new friends waiting, so the new secret is worth entering now."""
    if channel is None:
        return 0
    from ..line import quarantine
    return quarantine.count(channel.id)


def _save(page):
    form = CredentialsForm()
    problem = None
    try:
        channel = connect(page.shop, form.channel_id.data, form.channel_secret.data)
    except FormatProblem as wrong:
        for name in wrong.errors:
            getattr(form, name).errors = [wrong.message_for(name)]
    except LineProblem as refused:
        problem = refused
        if refused.code in ("wrong_secret", "unknown_channel"):
            field = form.channel_id if refused.code == "unknown_channel" else form.channel_secret
            field.errors = [f"{refused.message} {refused.hint}"]
    else:
        # connect() forgot the cached results; this evaluation checks afresh (and the page reuses it). The
        # pair works, but the verdict may still be "needs action" (an account other than step 2's).
        result = evaluate(page.shop).results["credentials"]
        if result.done:
            flash(_("LINE accepted the Channel ID and Channel secret. They are saved."), "success")
        else:
            flash(_("The Channel ID and Channel secret are saved, but: %(message)s", message=result.message),
                  "warning")
        welcomed = channel.released.welcomed
        if welcomed:
            flash(ngettext("%(num)d friend who added you while it was broken has now been welcomed.",
                           "%(num)d friends who added you while it was broken have now been welcomed.",
                           welcomed), "success")
        return None
    page.rollback()
    if len(clean(form.channel_id.data)) > MAX_CHANNEL_ID:
        # Longer than any Channel ID: most likely the secret (or a token) pasted into the wrong box.
        form.channel_id.data = ""
    # With nothing saved, the error summary is the page's one verdict: a status box saying "not entered yet"
    # under "LINE did not accept this secret" would contradict it. With a working pair saved, that pair's
    # verdict stays, and the summary says the typed values were not saved.
    return page.render(status_code=422, stored=True, form=form, line_problem=problem,
                       hide_status=page.channel is None)


def _reset(page):
    if not ResetForm().confirm_reset.data:
        flash(_("Nothing was reset: tick the box to confirm first."), "warning")
        return False
    disconnect(page.shop)
    flash(_("The saved connection was cleared. Enter the Channel ID and Channel secret again."), "info")
    return False


STEP = Step(
    "credentials", _l("Channel ID and Channel secret"), check, live=True, context=_context,
    actions={"save": Action(_save, recheck=False), "reset": Action(_reset, recheck=False)},
    reasons={
        "credentials_verified": _l("LINE accepted the Channel ID and Channel secret."),
        "secret_unreadable": _l("The saved Channel secret can no longer be read by the CRM. Enter it again."),
        "basic_id_mismatch": _l("In step 2 the account was given as %(claimed)s, but this Channel ID belongs to "
                                "%(actual)s (“%(name)s”). If %(actual)s is not the shop's account, enter the "
                                "Channel ID of %(claimed)s here. If it is, correct the Basic ID in step 2."),
    },
)
