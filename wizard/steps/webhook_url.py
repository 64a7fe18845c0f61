"""Step 5, the webhook URL: LINE must hold exactly our URL, and LINE's calls must pass our signature check.

Three kinds of evidence, newest first: events LINE delivered on this connection (they prove LINE calls our
URL), LINE's own webhook test (run only when someone presses Verify), and LINE's endpoint setting.
"""
from datetime import datetime

from flask import current_app, flash
from flask_babel import gettext as _, lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField

from .. import audit
from ..line.endpoint import EndpointTaken, is_damaged_copy, set_endpoint, webhook_url
from ..line.problems import LineProblem
from ..models import iso_utc
from . import confirmations, webhook_test
from .context import StepResult, problem_result, public_url_problem, signature_refusals
from .registry import Action, Step
from .state import State


class EndpointForm(FlaskForm):
    confirm_replace = BooleanField(_l("Yes, replace the URL LINE has now. The other tool will stop receiving "
                                      "messages from this account."))


def _secret_reissued(channel, blocker):
    """"The secret was reissued": LINE itself refuses our stored secret (step 4 says wrong_secret, from a fresh
    token) and deliveries arrive that our secret does not verify, with nothing accepted since. Then one refused
    delivery is enough to name the cause. Refused deliveries alone never are (anyone who knows the URL can
    send them): while LINE accepts our secret they are attention at most (health.py, ``signature_refused``)."""
    if blocker is None or blocker.reason != "wrong_secret":
        return None
    refused = signature_refusals(channel, at_least=1)
    if refused is None:
        return None
    return StepResult("webhook_url", State.ACTION, "secret_reissued", refused.detail(), fix="credentials")


def _what_differs(line_endpoint, ours):
    """(reason, detail) naming what is wrong with LINE's URL: text added after ours (a "/" or a space a phone's
    copy picked up, which our receiver does not answer), ours cut short, a copy of ours changed near its end,
    or another URL altogether."""
    detail = {"line_endpoint": line_endpoint}
    if not is_damaged_copy(line_endpoint, ours):
        return "endpoint_mismatch", detail
    if line_endpoint.startswith(ours):
        return "endpoint_extra", {**detail, "extra": line_endpoint[len(ours):]}
    if ours.startswith(line_endpoint):
        return "endpoint_incomplete", detail
    return "endpoint_miscopied", detail


def check(ctx):
    # Before anything else: no URL we could show would be accepted by LINE.
    url_problem = public_url_problem()
    if url_problem:
        return StepResult("webhook_url", State.ACTION, url_problem, {"url": current_app.config["PUBLIC_BASE_URL"]})
    blocker = ctx.unmet("credentials")
    if blocker is not None or ctx.channel is None:
        # LINE refusing our old secret and LINE's calls failing our signature check tell the same story.
        blocker = blocker or ctx.results["credentials"]
        reissued = ctx.channel is not None and _secret_reissued(ctx.channel, blocker)
        return reissued or ctx.waiting_for("webhook_url", blocker)
    ours = webhook_url(ctx.channel)
    try:
        endpoint = ctx.endpoint()
    except LineProblem as problem:
        if problem.code == "endpoint_not_set":
            return StepResult("webhook_url", State.ACTION, "endpoint_not_set")
        return problem_result("webhook_url", problem)
    line_endpoint = endpoint.get("endpoint") or ""
    if not line_endpoint:
        return StepResult("webhook_url", State.ACTION, "endpoint_not_set")
    if line_endpoint != ours:
        return StepResult("webhook_url", State.ACTION, *_what_differs(line_endpoint, ours))
    # A run of refused signatures while LINE accepts our secret (step 4 just asked, after the newest refusal:
    # status.Evidence) is not LINE's: the shop's state says so as attention (health.py), this step is fine.
    event = ctx.last_event_since_connected()
    test = (ctx.channel.check_results or {}).get("webhook_test")
    test = test if test and test.get("endpoint") == ours else None
    if event is not None and (test is None or event.received_at > datetime.fromisoformat(test["at"].rstrip("Z"))):
        # The URL is right either way; "is sending" would contradict step 6 while "Use webhook" is off.
        reason = "webhook_receiving" if endpoint.get("active", True) else "webhook_received_now_off"
        return StepResult("webhook_url", State.DONE, reason, {"at": iso_utc(event.received_at)})
    if test is not None:
        if not test.get("success"):
            # Our receiver refusing LINE's signature (400) is fixed where the secret is entered.
            return StepResult("webhook_url", State.ACTION, "webhook_test_failed", dict(test),
                              fix="credentials" if test.get("statusCode") == 400 else None)
        return StepResult("webhook_url", State.DONE, "webhook_verified", {"tested_at": test.get("at")})
    # LINE has the URL but nothing shows it works yet; the friend test (step 7) will, so this never blocks.
    return StepResult("webhook_url", State.TODO, "endpoint_matches", blocks=False)


class RedeliveryForm(FlaskForm):
    webhook_redelivery = BooleanField(_l("In LINE Developers Console, “Use webhook redelivery” is on."))


def _context(page):
    channel = page.channel
    return {"endpoint_form": EndpointForm(formdata=None),
            "redelivery_form": RedeliveryForm(formdata=None,
                                              webhook_redelivery=page.confirmed("webhook_redelivery")),
            "test_wait": webhook_test.seconds_until_allowed(channel) if channel else 0}


def _set_endpoint(page):
    channel = page.channel
    if channel is None:
        return page.redirect("credentials")
    problem = public_url_problem()
    if problem:
        flash(page.describe(problem, {"url": current_app.config["PUBLIC_BASE_URL"]}), "error")
        return False
    try:
        set_endpoint(channel, replace=EndpointForm().confirm_replace.data)
    except EndpointTaken:
        flash(_("LINE has another webhook URL. Tick the box to confirm you want to replace it."), "warning")
        return False
    except LineProblem as exc:
        page.flash_problem(exc)
        return False
    # The URL itself holds the webhook token: the entry names the channel, never the URL.
    audit.record("webhook_url.set", shop=page.shop, target=channel.channel_id,
                 replaced=bool(EndpointForm().confirm_replace.data))
    return None


def _test(page):
    channel = page.channel
    if channel is None:
        return page.redirect("credentials")
    wait = webhook_test.seconds_until_allowed(channel)
    if wait:
        flash(_("LINE allows only a few tests an hour. Please wait %(seconds)d seconds.", seconds=wait),
              "warning")
        return False
    try:
        webhook_test.run(channel)
    except LineProblem as exc:
        page.flash_problem(exc)
        return False
    return None


def _test_failed(detail):
    return _("LINE's test call to the webhook URL failed: %(explanation)s",
             explanation=webhook_test.explain(detail))


STEP = Step(
    "webhook_url", _l("Webhook URL"), check, live=True, depends_on=("credentials",), context=_context,
    actions={"set_endpoint": Action(_set_endpoint), "test": Action(_test),
             # LINE cannot tell us whether it redelivers; the staff console recommends it until it is confirmed
             # or a redelivered event shows it (health.redelivery_known). It never holds a shop out of healthy.
             "confirm_redelivery": confirmations.confirm_action(
                 RedeliveryForm, "webhook_redelivery",
                 _l("Webhook redelivery is not confirmed: tick the box once it is on in LINE Developers "
                    "Console."), recheck=False)},
    reasons={
        "public_url_not_https": _l("The CRM's address (%(url)s) does not start with https://, so LINE will "
                                   "refuse it. The onboarding contact must fix the server address first."),
        "public_url_not_public": _l("The CRM's address (%(url)s) cannot be reached from the internet, so LINE "
                                    "cannot call it. The onboarding contact must fix the server address first."),
        "endpoint_mismatch": _l("LINE has a different webhook URL: %(line_endpoint)s. Replace it with this "
                                "shop's URL."),
        "endpoint_extra": _l("LINE has this shop's webhook URL with “%(extra)s” added at its end: %(line_endpoint)s. "
                             "LINE would call that address, which the CRM does not answer. Remove what was added, "
                             "or press “Set it for me”."),
        "endpoint_miscopied": _l("LINE has a copy of this shop's webhook URL with its end changed: "
                                 "%(line_endpoint)s. Copy the URL again, all of it, or press “Set it for me”."),
        "endpoint_incomplete": _l("LINE has an incomplete copy of this shop's webhook URL: %(line_endpoint)s. "
                                  "Copy the URL again, all of it, or press “Set it for me”."),
        "secret_reissued": _l("LINE is calling us, but with a signature made from another Channel secret: every "
                              "delivery since %(first_at_local)s was refused (%(count)s in all). The secret was "
                              "probably reissued: enter the new one in step %(fix_number)s."),
        "webhook_test_failed": _test_failed,
        "endpoint_matches": _l("LINE has the webhook URL. Press “Verify” to have LINE test it now."),
        "webhook_verified": _l("LINE has the webhook URL and its test call reached the CRM."),
        "webhook_receiving": _l("LINE has the webhook URL and is sending events to the CRM (the last one at "
                                "%(at_local)s)."),
        "webhook_received_now_off": _l("LINE has the right webhook URL, but “Use webhook” is off now, so LINE "
                                       "sends nothing (see the response settings step). The last event arrived "
                                       "at %(at_local)s."),
    },
)
