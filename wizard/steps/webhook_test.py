"""LINE's own webhook test: run it only when a person asks, within LINE's limit, and explain its answer.

LINE allows 60 tests an hour per channel, so the wizard never polls it: a cooldown between presses and a cap of
``HOURLY_CAP`` per rolling hour (below LINE's) keep a busy owner from locking the channel out.
"""
from datetime import timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..line.client import client_for
from ..line.endpoint import webhook_url
from ..models import iso_utc, utcnow
from .registry import registry

HOURLY_CAP = 50


def _parse(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.rstrip("Z"))


def seconds_until_allowed(channel, now=None):
    """0 when a test may run now; else how long the owner must wait (shown as a cooldown)."""
    now = now or utcnow()
    history = [_parse(t) for t in (channel.check_results or {}).get("webhook_test_history", [])]
    history = [t for t in history if now - t < timedelta(hours=1)]
    waits = []
    if history:
        cooldown = timedelta(seconds=current_app.config["WEBHOOK_TEST_COOLDOWN"])
        waits.append((max(history) + cooldown - now).total_seconds())
    if len(history) >= HOURLY_CAP:
        waits.append((min(history) + timedelta(hours=1) - now).total_seconds())
    return max([0, *[int(w) + 1 for w in waits if w > 0]])


def run(channel):
    """Ask LINE to call our webhook URL. Returns the stored result dict; raises LineProblem when LINE could not
    be asked (the result is then not stored, and the attempt still counts towards the limit)."""
    now = utcnow()
    results = dict(channel.check_results or {})
    history = [t for t in results.get("webhook_test_history", []) if now - _parse(t) < timedelta(hours=1)]
    history.append(iso_utc(now))
    ours = webhook_url(channel)
    results["webhook_test_history"] = history
    channel.check_results = dict(results)
    db.session.commit()
    answer = client_for(channel).test_webhook_endpoint(ours)
    test = {"at": iso_utc(now), "endpoint": ours, "success": bool(answer.get("success")),
            "statusCode": answer.get("statusCode"), "reason": answer.get("reason"),
            "detail": answer.get("detail")}
    results["webhook_test"] = test
    channel.check_results = dict(results)
    return test


def explain(test):
    """LINE's answer in words a shop owner can act on."""
    if test.get("success"):
        return _l("LINE reached the CRM and got the right answer.")
    code = test.get("statusCode") or 0
    reason = (test.get("reason") or "").upper()
    if code == 404:
        return _l("the URL was not found (404). It is probably mistyped: copy it again, all of it, with no "
                  "space or slash added at the end.")
    if 300 <= code < 400:
        return _l("the URL answered with a redirect (%(code)s), for example from http:// to https:// or "
                  "because of a slash added at the end. Paste the URL exactly as shown.", code=code)
    if code == 400:
        return _l("the CRM refused LINE's signature (400). The Channel secret saved here is not the channel's "
                  "current one: enter it again in step %(step)d.", step=registry().number("credentials"))
    if code in (401, 403):
        return _l("access was refused (%(code)s), probably by a firewall or a login page in front of the CRM. "
                  "Ask your onboarding contact.", code=code)
    if code >= 500:
        return _l("the CRM's server had an error (%(code)s). This is on our side: tell your onboarding contact.",
                  code=code)
    if "TIMEOUT" in reason:
        return _l("the CRM did not answer within LINE's 2 seconds. Try again; if it repeats, tell your "
                  "onboarding contact.")
    if code <= 0 or "CONNECT" in reason:
        return _l("LINE could not connect to the CRM. The server's certificate (TLS) or a firewall is the usual "
                  "cause: tell your onboarding contact.")
    return _l("LINE got an unexpected answer (%(code)s %(reason)s).", code=code, reason=test.get("reason") or "")

