"""The product's own error pages (400, 403, 404, 405, 413, 500, 503, an expired form), in the visitor's
language. A 413 on the template builder says what the limit for a picture is.

Werkzeug's default pages are bare English and lead nowhere; a shop owner who follows an old link or leaves a
form open too long gets a page of this site that says what happened in plain words and offers a way back.
Machines read the JSON routes, so those keep answering JSON with the shape their blueprint uses: the status
API (``/api/``) ``{"error", "message"}``, the webhook receiver (``/line/webhook/``) ``{"message"}``; the
status code and headers (``Allow`` on a 405, ``Retry-After`` on a 503) stay Werkzeug's. SQLite's "database is
locked" (another writer past the busy timeout) is a 503, never a 500. Blueprint handlers (the customer form's own
"this link does not work") still come first, and a 500 never shows what went wrong inside.
"""
import logging
import sqlite3
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, render_template, request, session
from flask_babel import force_locale, gettext as _, lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from ..extensions import db

bp = Blueprint("errors", __name__)
log = logging.getLogger(__name__)

JSON_PATHS = ("/api/", "/line/webhook/")

PAGES = {
    400: (_l("This request could not be understood"),
          _l("Something in what your browser sent was not right. Go back and try again.")),
    403: (_l("This page is not for your account"),
          _l("Your account cannot open this page. If you think it should, ask the onboarding staff.")),
    404: (_l("This page does not exist"),
          _l("The address may be mistyped, or the page has moved or been removed.")),
    405: (_l("This page cannot be opened this way"),
          _l("Please open it from a link or a button on this site.")),
    413: (_l("What was sent is too large"),
          _l("Please send something smaller and try again.")),
    503: (_l("Busy for a moment"),
          _l("Too many changes are being saved at this moment. Please try again in a few seconds.")),
    500: (_l("Something went wrong on our side"),
          _l("This is not your fault. Please try again in a moment; if it keeps happening, tell the "
             "onboarding staff.")),
}
# A 413 on the template builder (a picture over the request limit, MAX_CONTENT_LENGTH, or nginx's on its way:
# deploy/nginx.conf sends its own 413 to ``/too-large``, so the owner gets this page, not nginx's English one).
PICTURE_TOO_LARGE = (_l("This picture is too large"),
                     _l("A picture may be at most 10 MB (LINE's limit). Choose a smaller one, or save it at a "
                        "lower resolution, and try again. Nothing was saved."))
PICTURE_PAGES = ("message_templates.", "errors.too_large")
EXPIRED_FORM = (_l("This form has expired"),
                _l("The page was open for a long time, or you signed in or out meanwhile. Go back, reload "
                   "the page and send the form again."))


@bp.app_errorhandler(HTTPException)
def http_error(error):
    if error.code is None or error.code < 400 or error.response is not None:
        return error  # redirects and ready-made responses go out as they are
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    if request.path.startswith(JSON_PATHS):
        return _json(error), error.code, headers
    if error.code >= 500:
        db.session.rollback()  # the failed request may have left the transaction unusable for the page
    try:
        return _page(error), error.code, headers
    except Exception:  # the page itself failed (the database is down): still no traceback, still our words
        log.exception("the error page for %s could not be drawn", error.code)
        # In the language chosen for the visit, without asking the database for the account's own.
        with force_locale(_visit_locale()):
            words = _("Something went wrong on our side")
        return words, error.code, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/too-large")
def too_large():
    """nginx's ``error_page 413`` for the builder's pages (deploy/nginx.conf): the 413 page in the visitor's
    language (their session comes along), with the way back to the page they came from."""
    abort(413)


def _visit_locale():
    supported = current_app.config["LANGUAGES"]
    for wanted in (request.args.get("lang"), session.get("lang")):
        if wanted in supported:
            return wanted
    return current_app.config["BABEL_DEFAULT_LOCALE"]


# Seconds a client is asked to wait when the SQLite database stayed locked for the whole busy timeout.
LOCKED_RETRY_AFTER = 2


@bp.app_errorhandler(OperationalError)
@bp.app_errorhandler(sqlite3.OperationalError)  # the receiver writes through sqlite3's cursor itself
def database_busy(error):
    """SQLite's "database is locked": another writer kept the one write lock past the busy timeout. That is
    "busy, try again" (503 with Retry-After; LINE delivers a webhook again), never a 500. Anything else
    goes on as the 500 it is (re-raised, so Flask logs it and the 500 page answers)."""
    if not is_database_locked(error):
        raise error
    db.session.rollback()
    log.warning("the database stayed locked past the busy timeout; answered 503 for %s", request.path)
    return http_error(ServiceUnavailable("The database is busy. Try again in a few seconds.",
                                         retry_after=LOCKED_RETRY_AFTER))


def is_database_locked(error):
    """SQLite's "database is locked" (or "database table is locked"), as SQLAlchemy wraps it."""
    orig = getattr(error, "orig", error)
    return isinstance(orig, sqlite3.OperationalError) and "is locked" in str(orig)


def _json(error):
    if request.path.startswith("/api/"):
        return {"error": error.name.lower().replace(" ", "_"), "message": error.description}
    return {"message": error.description}


def _page(error):
    if isinstance(error, CSRFError):
        title, text = EXPIRED_FORM
    elif error.code == 413 and (request.endpoint or "").startswith(PICTURE_PAGES):
        title, text = PICTURE_TOO_LARGE
    else:
        title, text = PAGES.get(error.code, (_l("This request could not be completed"),
                                             _l("Please go back and try again.")))
    return render_template("errors/error.html", code=error.code, title=title, text=text, back=_back_url())


def _back_url():
    """The page the visitor came from, when it is on this site and is not this same address."""
    referrer = request.referrer
    if not referrer:
        return None
    parts = urlsplit(referrer)
    if parts.scheme not in ("http", "https") or parts.netloc != request.host or referrer == request.url:
        return None
    return referrer
