"""The LINE sandbox: a small separate WSGI app that imitates the LINE Platform over real HTTP.

``create_sandbox_app(database_url)`` serves LINE's API paths (``platform``, with ``sending`` to friends and the
per-unit ``statistics``), a control page at ``/``
(``views``) and a JSON control API under ``/_sandbox/api`` (``api``). Its state lives in its own database
(``store``) so the ``flask sandbox …`` commands (``commands``) and a running sandbox see the same channels.
``control.Sandbox`` is the LINE side's Python interface; ``deliver`` signs and posts webhooks.

It differs from LINE on purpose in one way: webhook URLs may be plain ``http`` on loopback hosts (LINE demands
https), so a developer machine and the tests need no certificate. It is a development and test tool:
production never mounts it.
"""
import secrets
from pathlib import Path

from flask import Flask, jsonify, request

from .control import Sandbox, SandboxError

__all__ = ["create_sandbox_app", "Sandbox", "SandboxError"]

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"
_API_PREFIXES = ("/v2/", "/oauth2/", "/_sandbox/api/")


def create_sandbox_app(database_url: str, **options) -> Flask:
    """``options`` go to ``Sandbox`` (``token_ttl``, ``reply_token_ttl``, ``webhook_timeout``)."""
    app = Flask("wizard.sandbox", template_folder=str(TEMPLATES), static_folder=None)
    app.config["SANDBOX_DATABASE_URL"] = database_url
    # Only flash messages live in the session: a fresh key per process is enough.
    app.secret_key = secrets.token_hex(32)
    # Its own cookie name: a browser sends cookies by host, not port, so a cookie named like the app's
    # ("session") would replace the owner's session in the app next door (its forms then read "expired").
    app.config["SESSION_COOKIE_NAME"] = "line_sandbox_session"
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.control = app.extensions["sandbox"] = Sandbox(database_url, **options)

    # sending and statistics add their routes to LINE's blueprint (platform.bp) when imported.
    from . import api, platform, sending, statistics, views  # noqa: F401
    app.register_blueprint(platform.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)

    @app.before_request
    def _same_origin_only():
        # The control side changes state on POST; a page on another origin must not drive it from a browser.
        origin = request.headers.get("Origin")
        changes = request.method not in ("GET", "HEAD", "OPTIONS")
        if changes and origin and origin != request.host_url.rstrip("/"):
            return jsonify(message="Cross-origin requests are not accepted"), 403
        return None

    @app.errorhandler(404)
    @app.errorhandler(405)
    def _not_here(exc):
        if request.path.startswith(_API_PREFIXES):
            return jsonify(message="Not found" if exc.code == 404 else "Method not allowed"), exc.code
        return exc

    return app
