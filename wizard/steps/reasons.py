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
