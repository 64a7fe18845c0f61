"""Step 1, before you start: the shop's LINE module is on and the owner's LINE login has an e-mail and password.

Only the owner knows the second, so it is a confirmation; it never keeps the shop from counting as connected.
"""
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField

from . import confirmations
from .context import StepResult
from .registry import Step
from .state import State


class PrepareForm(FlaskForm):
    line_login = BooleanField(_l("I have a LINE account with an e-mail address and a password set "
                                 "(LINE app → Settings → Account)."))


def check(ctx):
    if not ctx.shop.line_module_enabled:
        return StepResult("prepare", State.ACTION, "module_disabled")
    if confirmations.given(ctx.shop, "line_login"):
        return StepResult("prepare", State.DONE, "owner_confirmed", blocks=False)
    return StepResult("prepare", State.TODO, "not_confirmed", blocks=False)


STEP = Step(
    "prepare", _l("Before you start"), check,
    context=lambda page: {"form": PrepareForm(formdata=None, line_login=page.confirmed("line_login"))},
    actions={"confirm": confirmations.confirm_action(
        PrepareForm, "line_login",
        _l("Not saved as done: tick the box when your LINE account has an e-mail address and a password."))},
    reasons={
        "module_disabled": _l("The LINE integration module is not enabled for this shop yet. Ask your "
                              "onboarding contact to enable it."),
    },
)
