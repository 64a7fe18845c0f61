"""What every response tells the browser so that a page of ours cannot be turned against its own user.

A shop owner's session holds the keys to their LINE channel, so pages must not be framed (clickjacking), must
not run or style anything we did not ship (Content-Security-Policy), must not leak our addresses to other sites
(Referrer-Policy), must not be kept by a shared browser's cache once signed in (Cache-Control), and must be
reached over https only once the site is on https (HSTS). Views may set their own value of any of these
headers; this module only fills in the ones they left out.

Flask-Limiter is bound here too (it reads its ``RATELIMIT_*`` settings) for the endpoints that name a limit;
sign-in and the password change are slowed by ``throttle`` instead (growing delays, not fixed limits).
"""
import base64
import hashlib
import re
from pathlib import Path

from flask import request, session

from .extensions import limiter

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
# LINE's profile pictures (the account card, contacts) come from LINE's CDN over https; the QR code and the
# sketches are inline SVG, which needs no source; a picture chosen in the template builder is previewed from
# the owner's own disk (a blob: address) before it is uploaded.
POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:", "https:"],
    "connect-src": ["'self'"],
    "font-src": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
}
HSTS = "max-age=31536000"


def inline_style_hashes(folder=TEMPLATES):
    """The CSP hashes of the templates' fixed ``<style>`` blocks (one page has one). Computed from the
    templates themselves, so editing such a block cannot silently unstyle its page, while a style injected
    into a page still matches nothing. A block with Jinja in it would render differently and is skipped."""
    hashes = set()
    for path in sorted(folder.rglob("*.html")):
        for css in INLINE_STYLE.findall(path.read_text(encoding="utf-8")):
            if "{{" not in css and "{%" not in css:
                digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
                hashes.add(f"'sha256-{digest}'")
    return sorted(hashes)


def content_security_policy(line_api_host=None):
    images = POLICY["img-src"]
    if line_api_host and not line_api_host.startswith("https://"):
        # The sandbox (embedded default, tests) plays LINE over plain http, pictures included.
        images = images + [line_api_host.rstrip("/")]
    policy = dict(POLICY, **{"style-src": POLICY["style-src"] + inline_style_hashes(), "img-src": images})
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in policy.items())


# The only endpoints with limits. Flask-Limiter checks every request by itself (a quarter of a millisecond
# each, the webhook's included); it is asked on these alone.
THROTTLED_ENDPOINTS = frozenset({"contact_form.fill"})


def _throttled_only(hook):
    """``hook`` (an after-request or teardown function of the limiter) for throttled endpoints only."""
    def on_throttled(value=None):
        return hook(value) if request.endpoint in THROTTLED_ENDPOINTS else value
    return on_throttled


def fixed_headers(app):
    """The headers every response gets unless its view set its own: (name, value) pairs, computed once per app
    (line/fast_path.py sends them with the webhook's answer, which Flask's hooks never see)."""
    headers = app.extensions.get("wizard_security_headers")
    if headers is None:
        headers = [("Content-Security-Policy", content_security_policy(app.config["LINE_API_HOST"])),
                   ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it
                   ("X-Content-Type-Options", "nosniff"),
                   ("Referrer-Policy", "same-origin")]
        if app.config["PUBLIC_BASE_URL"].startswith("https://"):
            headers.append(("Strict-Transport-Security", HSTS))
        headers = app.extensions["wizard_security_headers"] = tuple(headers)
    return headers


def init_app(app):
    after, teardown = (len(app.after_request_funcs[None]), len(app.teardown_request_funcs[None]))
    limiter.init_app(app)
    check = limiter._check_request_limit
    hooks = app.before_request_funcs[None]
    hooks[hooks.index(check)] = lambda: check() if request.endpoint in THROTTLED_ENDPOINTS else None
    # Its response headers and per-request bookkeeping too: no other request has a limit to report or reset
    # (every request paid for them: issue 15, item 10).
    for hooks, first in ((app.after_request_funcs[None], after), (app.teardown_request_funcs[None], teardown)):
        hooks[first:] = [_throttled_only(hook) for hook in hooks[first:]]
    fixed = fixed_headers(app)
    remember_cookie = app.config["REMEMBER_COOKIE_NAME"]

    @app.after_request
    def security_headers(response):
        headers = response.headers
        for name, value in fixed:
            headers.setdefault(name, value)
        # A signed-in page (a shop's status, the masked secret, the staff list) must not be shown again
        # from the cache by the back button after signing out, on a shop's shared computer. Read from the
        # cookies, not current_user: an error page drawn while the database is down must still go out.
        if request.endpoint != "static" and (session.get("_user_id") or request.cookies.get(remember_cookie)):
            headers["Cache-Control"] = "no-store"
        return response
