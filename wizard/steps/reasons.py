"""Every reason code a step can report, with the plain sentence people read for it.

Codes are a contract (status JSON, ``line doctor``); sentences are translated and may use ``detail`` values.
Each step keeps its own sentences (``Step.reasons``); the few shared by several steps are here, and LINE's
problems come from ``line/problems.py``. Sentences speak of "the account" and "the shop", not "you", since
staff acting for a shop read them too.
"""
from datetime import datetime

from flask_babel import lazy_gettext as _l

from ..i18n import localtime
from ..line.problems import MESSAGES as LINE_MESSAGES

SHARED = {
    "not_checked": _l("Not checked yet."),
    "not_confirmed": _l("Not confirmed yet. Tick the box below when this is done."),
    "owner_confirmed": _l("Confirmed in this step."),
    "no_credentials": _l("The Channel ID and Channel secret have not been entered yet."),
    "fix_step_first": _l("This step waits for step %(fix_number)s (%(fix_title)s): fix that step first."),
}


# A short phrase per reason, for lines that name a reason without its details (step history, timeline, audit
# log, e-mail subjects): the full sentences above quote values (a URL, a time, a count) only the live result has.
# A reason without one here reads as its sentence.
HEADLINES = {
    "not_checked": _l("not checked yet"),
    "not_confirmed": _l("not confirmed yet"),
    "owner_confirmed": _l("confirmed by the shop"),
    "no_credentials": _l("Channel ID and secret not entered yet"),
    "fix_step_first": _l("waits for an earlier step to be fixed"),
    "connected": _l("connected"),
    "quota_nearly_used": _l("this month's message quota is nearly used"),
    "redelivery_unconfirmed": _l("webhook redelivery not confirmed"),
    "silent_while_friends_grow": _l("nothing arrives from LINE while new friends are added"),
    "followers_without_follows": _l("new friends are not reaching the CRM"),
    "account_found": _l("the LINE account was found"),
    "basic_id_mismatch": _l("the Channel ID belongs to another LINE account"),
    "public_url_not_https": _l("the CRM's address does not start with https://"),
    "public_url_not_public": _l("the CRM cannot be reached from the internet"),
    "endpoint_mismatch": _l("LINE has a different webhook URL"),
    "endpoint_incomplete": _l("LINE has only part of the webhook URL"),
    "endpoint_extra": _l("LINE's webhook URL has something added at its end"),
    "endpoint_miscopied": _l("LINE's copy of the webhook URL is changed at its end"),
    "secret_reissued": _l("the Channel secret was reissued in LINE"),
    "signature_refused": _l("deliveries with a wrong signature are arriving"),
    "webhook_test_failed": _l("LINE's test of the webhook URL failed"),
    "webhook_receiving": _l("LINE is sending events"),
    "webhook_received_now_off": _l("webhook URL right, but “Use webhook” is off"),
    "webhook_inactive": _l("“Use webhook” is off in LINE"),
    "chat_mode_bot": _l("Chat is off in LINE"),
    "auto_response_unconfirmed": _l("auto-response not confirmed"),
    "form_not_reviewed": _l("customer data form not checked yet"),
    "form_on": _l("customer data form on"),
    "form_off": _l("customer data form off"),
    "no_follow_yet": _l("waiting for a first friend"),
    "follow_received": _l("a friend was added: it works"),
    "friend_message_received": _l("a friend's message arrived: it works"),
    "reconnected_unproven": _l("connection entered again, not proven yet"),
}


def headline(reason):
    """The reason as a short phrase in the reader's language; a code nobody knows shows as it is."""
    if not reason:
        return ""
    if reason in HEADLINES:
        return str(HEADLINES[reason])
    return describe(reason)


def all_reasons():
    from .health import REASONS as STATE_REASONS
    from .registry import registry
    return {**SHARED, **STATE_REASONS, **{code: message for code, (message, _hint) in LINE_MESSAGES.items()},
            **registry().reasons()}


def describe(reason, detail=None, fix=None):
    """The sentence for a reason; missing ``detail`` values show as “?” rather than breaking the page."""
    template = all_reasons().get(reason)
    if template is None:
        return reason
    values = _Lenient(_with_derived(detail or {}, fix))
    if callable(template):
        return str(template(values))
    try:
        return str(template) % values
    except (TypeError, ValueError):
        return str(template)


def _with_derived(detail, fix):
    """Detail plus what sentences show but the database does not keep: the fixing step's number and title in
    the reader's language, and every ``…at`` time in the shop's time zone."""
    values = dict(detail)
    if fix:
        from .registry import registry
        steps = registry()
        if fix in steps:
            values.setdefault("fix_number", steps.number(fix))
            values.setdefault("fix_title", str(steps.title(fix)))
    for key, value in detail.items():
        if key.endswith("at") and isinstance(value, str) and value.endswith("Z"):
            try:
                values[f"{key}_local"] = localtime(datetime.fromisoformat(value[:-1]))
            except ValueError:
                pass
    return values


class _Lenient(dict):
    def __missing__(self, key):
        return "?"
