"""Named problems: every way a call to LINE can fail, reduced to a code a page can explain.

Pages, the CLI and the status JSON use ``code``; people read ``message`` (translated) and ``hint``.
"""
from datetime import datetime, timezone

from flask_babel import lazy_gettext as _l

MESSAGES = {
    "wrong_secret": (
        _l("LINE did not accept this Channel secret."),
        _l("Copy the Channel secret again from the Messaging API settings. If someone pressed “Issue” "
           "(重新發行) there, the old secret stopped working."),
    ),
    "unknown_channel": (
        _l("LINE does not know this Channel ID."),
        _l("Copy the Channel ID again from Settings → Messaging API; it is a number of about 10 digits."),
    ),
    "line_unreachable": (
        _l("We could not reach LINE."),
        _l("This is usually brief. Try again in a minute; nothing you entered is lost."),
    ),
    "timeout": (
        _l("LINE took too long to answer."),
        _l("Try again in a minute; nothing you entered is lost."),
    ),
    "rate_limited": (
        _l("LINE asked us to slow down."),
        _l("Too many checks in a short time. Wait a few minutes, then check again."),
    ),
    "url_not_https": (
        _l("LINE only accepts a webhook URL that starts with https://."),
        _l("The CRM's public address must use HTTPS. Ask your onboarding contact to fix the server address."),
    ),
    "invalid_url": (
        _l("LINE did not accept this webhook URL."),
        _l("Check that the address is complete and at most 500 characters long."),
    ),
    "endpoint_not_set": (
        _l("No webhook URL is set in LINE yet."),
        _l("Paste the webhook URL in Messaging API → Webhook URL and save, or let us set it for you."),
    ),
    "invalid_token": (
        _l("LINE refused our access token."),
        _l("Check the channel again; if it keeps failing, enter the Channel secret again."),
    ),
    "not_found": (
        _l("LINE could not find what we asked for."),
        _l("The user may have blocked the account or the channel may have changed."),
    ),
    "forbidden": (
        _l("This channel is not allowed to do that."),
        _l("Check the channel's plan and permissions in LINE Official Account Manager."),
    ),
    "invalid_reply_token": (
        _l("The reply token was already used or has expired."),
        _l("A reply must follow the customer's action within about a minute; send a push message instead."),
    ),
    "monthly_limit": (
        _l("This month's message limit of the LINE Official Account is used up."),
        _l("LINE sends no more push messages this month. Raise the limit or change the plan in LINE Official "
           "Account Manager; replies to customers still go out."),
    ),
    "messages_invalid": (
        _l("LINE did not accept these messages."),
        _l("Correct the fields LINE named, then try again."),
    ),
    "content_not_ready": (
        _l("LINE is still preparing this video or audio."),
        _l("Try again in a little while."),
    ),
    "content_too_large": (
        _l("This file is too large to download."),
        _l("Ask the customer to send a smaller file, or open it in LINE Official Account Manager."),
    ),
    "invalid_read_token": (
        _l("LINE did not accept this read mark."),
        _l("The message may belong to another channel; nothing needs to be done."),
    ),
    "line_error": (
        _l("LINE answered with an error."),
        _l("Try again later. If it keeps happening, give your onboarding contact the reference shown here."),
    ),
}


def reference(code: str, status, at: datetime) -> str:
    """A short reference for a problem that a shop owner can read out and staff can find in the logs:
    the problem's code, LINE's HTTP status and the time (UTC), e.g. ``line_error-500-20261201T121503Z``
    (``timeout-20261201T121503Z`` without a status)."""
    return f"{code}-{status}-{at:%Y%m%dT%H%M%S}Z" if status else f"{code}-{at:%Y%m%dT%H%M%S}Z"


class LineProblem(Exception):
    """A failed call to LINE. ``status`` and ``detail`` are LINE's own words, kept for staff and logs."""

    def __init__(self, code: str, status: int | None = None, detail: str | None = None,
                 retry_after: float | None = None, details: list[dict] | None = None):
        assert code in MESSAGES, code
        super().__init__(f"{code} (status={status}): {detail or ''}")
        self.code = code
        self.status = status
        self.detail = detail
        # Seconds LINE asked us to wait (its Retry-After header on 429 or 503), if it said.
        self.retry_after = retry_after
        # LINE's ``details`` of a 400 (``[{"property", "message"}]``): which field of which message it refused.
        self.details = list(details or [])
        self.at = datetime.now(timezone.utc).replace(tzinfo=None)

    @property
    def reference(self) -> str:
        return reference(self.code, self.status, self.at)

    @property
    def message(self) -> str:
        return str(MESSAGES[self.code][0])

    @property
    def hint(self) -> str:
        return str(MESSAGES[self.code][1])


# Worth another try later: LINE or the network is struggling (``rate_limited``: after ``retry_after``), or our
# credentials are being fixed. Anything else (400 unknown user or invalid messages, 403 not allowed, 404, the
# month's message limit …) would fail the same way again.
_RETRYABLE = {"line_unreachable", "timeout", "rate_limited", "wrong_secret", "unknown_channel",
              "invalid_token"}


def retryable(problem) -> bool:
    return problem.code in _RETRYABLE or (problem.status or 0) >= 500
