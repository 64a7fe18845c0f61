"""Step 2, create the LINE Official Account. The owner confirms it; once the Channel ID works (step 4) the
account LINE names is shown instead. The Basic ID typed here is compared with that account in step 4, where a
wrong Channel ID would be fixed."""
import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import Optional, Regexp

from . import confirmations
from .connection import forget_results
from .context import StepResult
from .registry import Action, Step
from .state import State
from .text import clean

BASIC_ID = re.compile(r"^@?[0-9a-z._-]{3,20}$")


def clean_basic_id(value):
    return clean(value).lower()


class AccountForm(FlaskForm):
    account_created = BooleanField(_l("I have created the LINE Official Account and can open it in LINE "
                                      "Official Account Manager."))
    basic_id = StringField(_l("Basic ID of the account (optional)"), filters=[clean_basic_id], validators=[
        Optional(), Regexp(BASIC_ID, message=_l("A basic ID looks like @123abcde."))])


def check(ctx):
    credentials = ctx.results.get("credentials")
    if ctx.channel is not None and credentials is not None and credentials.done:
        return StepResult("create_account", State.DONE, "account_found",
                          {"name": ctx.channel.display_name, "basic_id": ctx.channel.basic_id})
    if confirmations.given(ctx.shop, "account_created"):
        return StepResult("create_account", State.DONE, "owner_confirmed", blocks=False)
    return StepResult("create_account", State.TODO, "not_confirmed", blocks=False)


def _context(page):
    return {"form": AccountForm(formdata=None, account_created=page.confirmed("account_created"),
                                basic_id=page.shop.claimed_basic_id or "")}


_confirm = confirmations.confirm_action(
    AccountForm, "account_created",
    _l("Not saved as done: tick the box when the LINE Official Account exists."))


def _save(page):
    form = AccountForm()
    if not form.validate():
        return page.render(status_code=422, form=form)
    basic_id = form.basic_id.data or ""
    claimed = ("@" + basic_id.lstrip("@")) if basic_id else None
    if claimed != page.shop.claimed_basic_id:
        page.shop.claimed_basic_id = claimed
        # Step 4 compares it with the account LINE names: its cached verdict is out of date now.
        forget_results(page.shop, "credentials")
    return _confirm.handler(page)


STEP = Step(
    "create_account", _l("Create the LINE Official Account"), check, depends_on=("credentials",),
    context=_context,
    actions={"confirm": Action(_save, recheck=False, advance=True)},
    reasons={
        "account_found": _l("The LINE Official Account “%(name)s” (%(basic_id)s) was found through the "
                            "Messaging API."),
    },
)
