"""JSON API for staff tools and the owner's own pages: ``GET /api/v1/shops/<slug>/status``, and for staff
``GET /api/v1/shops?state=…&page=…`` (every shop's recorded state, 50 a page).

A request is let in by the session (the shop's owner, or staff) or by a staff API token sent as
``Authorization: Bearer …`` (made on /shops/tokens/, or printed by ``flask --app wizard user token EMAIL``).

The API's blueprints are exempt from the pages' CSRF check (a program with a token has no form to carry
one), so a session caller's request that changes anything (POST, PUT, DELETE) must prove it comes from our
own pages or a program, not from another site's form riding on the cookie: it sends the CSRF token as
``X-CSRFToken`` or a JSON body (``Content-Type: application/json``, which another site's page cannot send
without the browser asking us first). SameSite=Lax alone does not cover a same-site page or an old browser.
Bearer-token callers carry no cookie and are unchanged.

``problems_answer(problems, status, error)`` is the one shape of a refused request for every API blueprint:
``{"error", "message", "problems": {key: message}}``.
"""
from flask import Blueprint, jsonify, request
from flask_login import current_user
from flask_wtf.csrf import validate_csrf

from ..accounts import user_for_api_token
from ..extensions import db
from ..steps.status import evaluate
from . import shop_for

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _caller():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        # Named tokens (the staff page, the CLI) and the old single-token column; active staff only.
        return user_for_api_token(header[len("Bearer "):].strip())
    return current_user if current_user.is_authenticated else None


@bp.route("/shops")
def shops():
    """``GET /api/v1/shops?state=broken&page=N``: staff only; the console's list (watch/board.py), 50 a page,
    worst first, read from the recorded states (no shop is checked)."""
    from flask_babel import force_locale
    from ..watch.board import BadListRequest, ShopFilter, list_shops
    caller = _caller()
    if caller is None:
        return _unauthorized()
    if not caller.is_staff:
        return jsonify(error="forbidden", message="Only staff can list shops."), 403
    unknown = sorted(set(request.args) - {"state", "page", "q", "stuck", "never_started", "sort"})
    with force_locale("en"):  # the API's messages are English, whatever the session's language
        wanted = ShopFilter.from_args(request.args)
        problems = list(wanted.problems)
        if unknown:
            problems.append(f"Unknown parameter(s): {', '.join(unknown)}.")
        if not problems:
            try:
                page = list_shops(wanted, caller.id)
            except BadListRequest as exc:
                problems.append(str(exc))
    if problems:
        return jsonify(error="bad_request", message=" ".join(problems)), 400
    return jsonify(shops=[row.as_json() for row in page.rows], page=page.page, pages=page.pages, total=page.total)


@bp.route("/shops/<slug>/status")
def shop_status(slug):
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    status = evaluate(shop)
    db.session.commit()
    return jsonify(status.as_json())


def _shop_for_caller(slug):
    """(caller, shop, None) when the caller may see the shop named in the URL, else (None, None, the 401
    answer) with no caller, or the 400 of a session request that changes something without the proof of its
    origin (the module's docstring). A shop they may not see is ``shop_for``'s 404, the same as none
    (views/errors.py answers it as JSON ``not_found``), so slugs cannot be probed."""
    caller = _caller()
    if caller is None:
        return None, None, _unauthorized()
    shop = shop_for(slug, caller)  # first: another shop's owner gets its 404, whatever the request's origin
    if not _origin_proven():
        return None, None, problems_answer({"X-CSRFToken": (
            "Send a JSON object (Content-Type: application/json), or the page's CSRF token in the X-CSRFToken "
            "header: a signed-in session changes nothing through the API without one of them.")}, error="csrf")
    return caller, shop, None


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _origin_proven():
    """Does this request come from our pages or a program? Always for reading and for Bearer callers; for a
    session's POST, PUT or DELETE: a good ``X-CSRFToken`` header or a JSON Content-Type."""
    if request.method in SAFE_METHODS or request.headers.get("Authorization", "").startswith("Bearer "):
        return True
    if request.is_json:
        return True
    token = request.headers.get("X-CSRFToken")
    if not token:
        return False
    try:
        validate_csrf(token)
    except ValueError:  # flask-wtf's ValidationError: missing, expired or not this session's
        return False
    return True


def problems_answer(problems, status=400, error=None):
    """A refused API request: ``{"error", "message", "problems"}`` with a message per problem key (sorted),
    and whatever the request had begun to write undone. ``error``: bad_request (400) or conflict (409)
    unless named."""
    db.session.rollback()
    messages = {str(key): str(message) for key, message in sorted(problems.items(), key=lambda item: str(item[0]))}
    response = jsonify(error=error or ("conflict" if status == 409 else "bad_request"),
                       message=" ".join(messages.values()), problems=messages)
    response.status_code = status
    return response


def _unauthorized():
    response = jsonify(error="unauthorized", message="Sign in or send a staff API token as a Bearer header.")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@bp.route("/shops/<slug>/form", methods=["GET", "PUT"])
def shop_form(slug):
    """The shop's customer data form settings (customers/form_settings.py): ``GET`` them, or ``PUT``
    ``{"enabled": bool, "text": str, "fields": {name: "required"|"optional"|"off"}}`` (and optionally
    ``"notice"``). A PUT with any problem answers 400 with a message per problem and changes nothing."""
    from flask_babel import force_locale
    from ..customers import form_settings
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    with force_locale("en"):  # the API's messages are English, whatever the session's language
        if request.method == "GET":
            return jsonify(form_settings.get(shop).as_json())
        data = request.get_json(silent=True) if request.is_json else None
        if not isinstance(data, dict):
            return jsonify(error="bad_request", message="Send a JSON object (Content-Type: application/json) "
                           "with “enabled”, “text” and “fields”.", problems={}), 400
        settings, problems = form_settings.validate(shop, data)
        for key in ("enabled", "text", "fields"):
            if key not in data:
                problems[key] = f"“{key}” is missing."
        if problems:
            messages = {key: str(message) for key, message in sorted(problems.items())}
            return jsonify(error="bad_request", message=" ".join(messages.values()), problems=messages), 400
        form_settings.save(settings, caller)
        db.session.commit()
        return jsonify(form_settings.get(shop).as_json())


@bp.route("/shops/<slug>/contacts")
def shop_contacts(slug):
    """``GET /api/v1/shops/<slug>/contacts?page=N`` (and ``q``, the page's search): the shop's contacts, 50 a
    page, newest friend first (customers/contacts.py, the same query as the contacts page and its CSV)."""
    from flask_babel import force_locale
    from ..customers import contacts
    caller, shop, refused = _shop_for_caller(slug)
    if refused:
        return refused
    unknown = sorted(set(request.args) - {"page", "q"})
    with force_locale("en"):  # the API's messages are English, whatever the session's language
        wanted = contacts.ContactFilter.from_args(request.args)
        problems = list(wanted.problems)
        if unknown:
            problems.append(f"Unknown parameter(s): {', '.join(unknown)}.")
        if not problems:
            try:
                page = contacts.list_contacts(shop, wanted)
            except contacts.BadRequest as exc:
                problems.append(str(exc))
    if problems:
        return jsonify(error="bad_request", message=" ".join(problems)), 400
    return jsonify(contacts=[contacts.as_json(c) for c in page.rows], page=page.page, pages=page.pages,
                   total=page.total)

