"""Step 6, response settings: "Use webhook" on and Chat on, i.e. the response mode 「手動聊天＋自動回應訊息」
(manual chat + auto-response). LINE lets us read the first two; auto-response only the owner can confirm."""
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField

from ..line.problems import LineProblem
from . import confirmations
from .context import StepResult, problem_result
from .registry import Step
from .state import State


class ResponseForm(FlaskForm):
    auto_response = BooleanField(_l("In Response settings, auto-response messages are on."))


def check(ctx):
    blocker = ctx.unmet("credentials")
    if blocker is not None or ctx.channel is None:
        return ctx.waiting_for("response_settings", blocker or ctx.results["credentials"])
    try:
        active = bool(ctx.endpoint().get("active"))
    except LineProblem as problem:
        if problem.code != "endpoint_not_set":
            return problem_result("response_settings", problem)
        active = False
    if not active:
        return StepResult("response_settings", State.ACTION, "webhook_inactive")
    if ctx.channel.chat_mode == "bot":
        return StepResult("response_settings", State.ACTION, "chat_mode_bot")
    if not confirmations.given(ctx.shop, "auto_response"):
        return StepResult("response_settings", State.UNVERIFIABLE, "auto_response_unconfirmed", blocks=False)
    return StepResult("response_settings", State.DONE, "settings_ok")


STEP = Step(
    "response_settings", _l("Response settings"), check, live=True, depends_on=("credentials",),
    context=lambda page: {"form": ResponseForm(formdata=None, auto_response=page.confirmed("auto_response"))},
    # Saving asks LINE again: the owner has usually just changed something there.
    actions={"confirm": confirmations.confirm_action(
        ResponseForm, "auto_response",
        _l("Auto-response is not confirmed yet: tick the box when auto-response messages are on in LINE."),
        recheck=True)},
    reasons={
        "webhook_inactive": _l("“Use webhook” is off in LINE, so LINE does not send us anything. Turn it on."),
        "chat_mode_bot": _l("Chat is off (bot mode) in LINE. Turn Chat on so the response mode is "
                            "“manual chat + auto-response”."),
        "auto_response_unconfirmed": _l("Webhook and chat are right. Please confirm that auto-response is on; "
                                        "LINE does not let us read it."),
        "settings_ok": _l("Webhook is on and the response mode is “manual chat + auto-response”."),
    },
)
