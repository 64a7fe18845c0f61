"""Step 3, enable the Messaging API. LINE cannot be asked whether it is on, but a working Channel ID and
secret (step 4) prove it; saved credentials that stopped working are fixed in step 4, not here."""
from flask_babel import lazy_gettext as _l

from .context import StepResult
from .registry import Step
from .state import State


def check(ctx):
    credentials = ctx.results["credentials"]
    if credentials.done:
        return StepResult("enable_messaging_api", State.DONE, "credentials_verified")
    if ctx.channel is not None:
        # The API was on when the credentials were saved: what broke since is fixed where they are entered.
        return ctx.waiting_for("enable_messaging_api", credentials)
    return StepResult("enable_messaging_api", State.TODO, "awaiting_credentials")


STEP = Step(
    "enable_messaging_api", _l("Enable the Messaging API"), check, depends_on=("credentials",),
    reasons={
        "awaiting_credentials": _l("This is confirmed automatically when the Channel ID and secret work (next "
                                   "step)."),
    },
)
