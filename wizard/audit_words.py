"""How an audit entry (audit.py) reads for people: the action, its target and details as one sentence in the
reader's language, times in Taipei time, and "the system" or "the command line" for entries no person made.

The stored entry keeps its codes (``alert.snoozed``, ``until=…Z``, a reason like ``webhook_inactive``) for
machines and searches; the staff pages (the audit log, a shop's timeline) show only what this module makes of
them. Every action's label is here, not beside the page that records it, so the words of the log are in one
place and this module, which the templates and the console's timeline (watch/history.py) use, imports no view.
"""
from datetime import datetime

from flask_babel import gettext as _, lazy_gettext as _l

from .i18n import localtime
from .steps.reasons import headline

# Every action the audit log records (audit.record), as people read it. The codes stay in the entries.
ACTIONS = {
    # Accounts, invitations, API tokens and the connection (the people pages, the wizard, the CLI).
    "account.created": _l("Account created"),
    "account.deactivated": _l("Account deactivated"),
    "account.reactivated": _l("Account reactivated"),
    "shop.created": _l("Shop created"),
    "invitation.sent": _l("Invitation sent"),
    "invitation.revoked": _l("Invitation withdrawn"),
    "invitation.accepted": _l("Invitation accepted"),
    "token.created": _l("API token created"),
    "token.revoked": _l("API token revoked"),
    "credentials.saved": _l("Channel ID and secret saved"),
    "credentials.removed": _l("Connection removed (reset)"),
    "webhook_url.set": _l("Webhook URL set in LINE"),
    "confirmation.set": _l("Confirmation changed"),
    "account.password_changed": _l("Password changed"),
    "account.sign_in_delay_lifted": _l("Sign-in delay lifted"),
    "address.sign_in_delay_lifted": _l("Sign-in delay of an address lifted"),
    "alert.emailed": _l("Alert e-mailed"),
    "contacts.exported": _l("Contacts exported (CSV)"),
    "contact.form_sent": _l("Customer form sent again"),
    "segment.saved": _l("Segment saved"),
    "segment.renamed": _l("Segment renamed"),
    "segment.deleted": _l("Segment deleted"),
    # The console and the watch's alerts.
    "shop.assigned": _l("Staff assigned"),
    "shop.checked": _l("Checked now by staff"),
    "alert.opened": _l("Alert opened"),
    "alert.acknowledged": _l("Alert acknowledged"),
    "alert.snoozed": _l("Alert snoozed"),
    "alert.closed": _l("Alert closed"),
    # The customers' side.
    "form_settings.saved": _l("Customer data form settings saved"),
    "contact.message_sent_again": _l("Message of unknown fate sent to the customer again"),
    # Message templates (issue 16).
    "message_template.created": _l("Message template created"),
    "message_template.saved": _l("Message template changed"),
    "message_template.deleted": _l("Message template deleted"),
    # Send plans (plans/plans.py).
    "send_plan.created": _l("Send plan created"),
    "send_plan.edited": _l("Send plan changed"),
    "send_plan.cancelled": _l("Send plan cancelled"),
    "send_plan.paused": _l("Send plan paused"),
    "send_plan.resumed": _l("Send plan resumed"),
}
# What an owner (or staff for the shop) confirmed by ticking a box (steps/confirmations.py).
CONFIRMATIONS = {
    "line_login": _l("can sign in to LINE"),
    "account_created": _l("the LINE Official Account exists"),
    "auto_response": _l("auto-response is on"),
    "webhook_redelivery": _l("“Use webhook redelivery” is on"),
}
ACTORS = {
    "system": _l("the system (automatic)"),
    "cli": _l("the command line"),
}
# Details every entry of an action carries for machines only.
HIDDEN = {"id", "notice_version", "purpose", "was_running"}


def actor(label):
    """Who made the entry: an e-mail address as it is, the system or the command line in words."""
    return str(ACTORS[label]) if label in ACTORS else (label or "")


def _when(value):
    try:
        return localtime(datetime.fromisoformat(str(value).rstrip("Z")))
    except ValueError:
        return str(value)


def _yes_no(value):
    return _("yes") if value else _("no")


def _detail(action, key, value):
    """One detail as words, or None when it says nothing a person needs."""
    if key in HIDDEN or value is None:
        return None
    if key == "until":
        return _("until %(time)s", time=_when(value))
    if key == "expires_at":
        return _("valid until %(time)s", time=_when(value))
    if key == "mailed":
        return _("the e-mail went out") if value else _("the e-mail could not be sent")
    if key == "recipients":
        return _("sent to %(num)s people", num=value)
    if key == "state":
        from .steps.health import LABELS
        return _("state: %(state)s", state=LABELS.get(value, value))
    if key == "previous":
        return _("before: %(who)s", who=value)
    if key == "replaced":
        return _("replaced the URL LINE had") if value else None
    if key == "basic_id":
        return _("LINE account %(id)s", id=value)
    if key == "owner":
        return _("owner: %(email)s", email=value)
    if key == "user":
        return _("for %(email)s", email=value)
    if key == "staff":
        return _("a staff account") if value else _("a shop owner's account")
    if key == "search":
        return _("search: %(text)s", text=value)
    if key == "enabled":
        return _("the form is on") if value else _("the form is off")
    if key == "changed":
        return None if value else _("nothing changed")
    if key == "value" and action == "confirmation.set":
        return None  # said by the sentence itself
    if isinstance(value, bool):
        value = _yes_no(value)
    elif isinstance(value, str) and value.endswith("Z") and value[:4].isdigit():
        value = _when(value)
    elif isinstance(value, list):
        value = ", ".join(str(item) for item in value)
    return _("%(name)s: %(value)s", name=key.replace("_", " "), value=value)


def target(entry):
    """What the entry was about, in words: a reason as its phrase, a confirmation as what was confirmed."""
    action, value = entry.action, entry.target
    if action.startswith("alert."):
        return headline(value)
    if action == "confirmation.set":
        what = CONFIRMATIONS.get(value, value)
        if (entry.detail or {}).get("value"):
            return _("confirmed that %(what)s", what=what)
        return _("withdrew the confirmation that %(what)s", what=what)
    if action == "form_settings.saved":
        return ""
    return value or ""


def details(entry):
    """The entry's details as a list of short phrases."""
    out = []
    for key, value in (entry.detail or {}).items():
        phrase = _detail(entry.action, key, value)
        if phrase:
            out.append(str(phrase))
    return out


def sentence(entry):
    """The whole entry as one line: "Alert snoozed: “Use webhook” is off in LINE (until 2026-12-07 14:00)"."""
    text = str(ACTIONS.get(entry.action, entry.action))
    about = target(entry)
    if about:
        text = _("%(action)s: %(about)s", action=text, about=about)
    more = details(entry)
    if more:
        text = _("%(text)s (%(details)s)", text=text, details=_(", ").join(more))
    return text


def init_app(app):
    """Templates read an entry as ``entry|audit_sentence`` and its actor as ``entry.actor|actor_words``."""
    app.add_template_filter(sentence, "audit_sentence")
    app.add_template_filter(actor, "actor_words")
