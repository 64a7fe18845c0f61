"""Secrets out of log lines: the random tokens in our own URLs, and credentials in the shapes they travel in.

A webhook URL (``/line/webhook/<token>``) is all anyone needs to post to a shop's receiver, and a customer form
link (``/form/<token>``) opens that customer's details; both are paths, and every request log prints paths
(werkzeug's dev server, gunicorn's access log, urllib3's debug lines). ``redact`` masks those segments
(``/line/webhook/****``, ``/form/****/thanks``) and, where a line carries one, a ``Bearer`` token or a
``client_secret``/``channel_secret``/``access_token`` value. The masked forms still say which route was hit.

``RedactingFilter`` applies it to a log record (its formatted message, its traceback text); ``install`` puts
one on the loggers that print request lines, so the line is masked before any handler (the console, a test's
capture, a JSON formatter) sees it. observability.py uses both for its JSON and access logs.
"""
import logging
import re

MASK = "****"
_PATTERNS = (
    # Path segments that are themselves the key: /line/webhook/<token>, /form/<token>[/thanks], /invite/<token>.
    (re.compile(r"(/line/webhook/)[^/\s?#\"'<>]+"), r"\g<1>" + MASK),
    (re.compile(r"(/form/)[^/\s?#\"'<>]+"), r"\g<1>" + MASK),
    (re.compile(r"(/invite/)[^/\s?#\"'<>]+"), r"\g<1>" + MASK),  # an invitation link signs someone up
    # Credentials as headers, form fields, query parameters or JSON keys.
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\g<1>" + MASK),
    (re.compile(r"""(\b(?:client_secret|channel_?secret|access_?token)["']?\s*[=:]\s*["']?)[^\s&"',}]+""",
                re.IGNORECASE), r"\g<1>" + MASK),
)
# Loggers whose lines carry request paths: the dev server's request log, gunicorn's error log, and urllib3's
# debug lines (the LINE sandbox delivering to a webhook URL in tests and the embedded default). gunicorn's
# access log is not among them: its records carry a dict of atoms that observability.AccessJsonFormatter
# reads (and masks) itself.
REQUEST_LOGGERS = ("werkzeug", "gunicorn.error", "urllib3.connectionpool")


def redact(text: str) -> str:
    """``text`` with every secret this module knows the shape of replaced by ``****``."""
    if not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks a record's message (formatted with its arguments) and traceback text; never drops a record."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report, not ours to break
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(names=REQUEST_LOGGERS):
    """A RedactingFilter on each named logger (once), so their lines are masked before any handler runs."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
            logger.addFilter(RedactingFilter())
