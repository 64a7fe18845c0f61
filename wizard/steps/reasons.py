"""Every reason code a step can report, with the plain sentence a shop owner reads for it.

Codes are a contract (status JSON, ``line doctor``); sentences are translated and may use ``detail`` values.
"""
from flask_babel import lazy_gettext as _l

from ..line.problems import MESSAGES as LINE_MESSAGES

REASONS = {
    "not_checked": _l("Not checked yet."),
    # prepare / create_account
    "not_confirmed": _l("Not confirmed yet. Tick the boxes below when you have done this."),
    "owner_confirmed": _l("You confirmed this step."),
    "module_disabled": _l("The LINE integration module is not enabled for this shop yet. Ask your onboarding "
                          "contact to enable it."),
    "account_found": _l("Your LINE Official Account “%(name)s” (%(basic_id)s) was found through the Messaging API."),
    "basic_id_mismatch": _l("You said your account is %(claimed)s, but the Channel ID you entered belongs to "
                            "%(actual)s. Check that you copied the Channel ID of the right account."),
    # enable_messaging_api / credentials
    "awaiting_credentials": _l("This is confirmed automatically when the Channel ID and secret work (next step)."),
    "credentials_verified": _l("LINE accepted the Channel ID and Channel secret."),
    "no_credentials": _l("The Channel ID and Channel secret have not been entered yet."),
    "credentials_failing": _l("LINE does not accept the saved Channel ID and Channel secret right now. Fix them "
                              "in step 4 first."),
    "secret_unreadable": _l("The saved Channel secret can no longer be read by the CRM. Enter it again."),
    # webhook_url
    "public_url_not_https": _l("The CRM's address (%(url)s) does not start with https://, so LINE will refuse "
                               "it. Your onboarding contact must fix the server address first."),
    "public_url_not_public": _l("The CRM's address (%(url)s) cannot be reached from the internet, so LINE "
                                "cannot call it. Your onboarding contact must fix the server address first."),
    "endpoint_mismatch": _l("LINE has a different webhook URL: %(line_endpoint)s. Replace it with yours."),
    "secret_reissued": _l("LINE is calling us, but with a signature made from another Channel secret. The "
                          "secret was probably reissued: enter the new one in step 4."),
    "webhook_test_failed": _l("LINE's test call to the webhook URL failed: %(explanation)s"),
    "endpoint_matches": _l("LINE has your webhook URL. Press “Verify” to have LINE test it."),
    "webhook_verified": _l("LINE has your webhook URL and its test call reached the CRM."),
    # response_settings
    "webhook_inactive": _l("“Use webhook” is off in LINE, so LINE does not send us anything. Turn it on."),
    "chat_mode_bot": _l("Chat is off (bot mode) in LINE. Turn Chat on so the response mode is "
                        "“manual chat + auto-response”."),
    "auto_response_unconfirmed": _l("Webhook and chat are right. Please confirm that auto-response is on; LINE "
                                    "does not let us read it."),
    "settings_ok": _l("Webhook is on and the response mode is “manual chat + auto-response”."),
    # test_friend
    "no_follow_yet": _l("Waiting for someone to add your account as a friend."),
    "follow_received": _l("%(name)s added your account as a friend at %(when)s. It works!"),
}
REASONS.update({code: message for code, (message, _hint) in LINE_MESSAGES.items()})


def describe(reason, detail=None):
    """The sentence for a reason; missing ``detail`` values show as “?” rather than breaking the page."""
    template = REASONS.get(reason)
    if template is None:
        return reason
    values = _Lenient(detail or {})
    try:
        return str(template) % values
    except (TypeError, ValueError):
        return str(template)


class _Lenient(dict):
    def __missing__(self, key):
        return "?"
