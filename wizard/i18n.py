"""Which language a page speaks: Traditional Chinese (Taiwan) unless the person chose English.

The choice travels as ``?lang=en`` once, then lives in the session (and on the user, when signed in).
"""
from flask import current_app, has_request_context, request, session
from flask_login import current_user

NAMES = {"zh_Hant_TW": "中文", "en": "English"}
HTML_LANG = {"zh_Hant_TW": "zh-Hant-TW", "en": "en"}


def select_locale():
    supported = current_app.config["LANGUAGES"]
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    wanted = request.args.get("lang")
    if wanted in supported:
        return wanted
    if session.get("lang") in supported:
        return session["lang"]
    if getattr(current_user, "is_authenticated", False) and current_user.locale in supported:
        return current_user.locale
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def localtime(value):
    """Naive UTC from the database, shown in the shop's time zone (Taiwan by default)."""
    from flask_babel import format_datetime
    if value is None:
        return ""
    return format_datetime(value, "yyyy-MM-dd HH:mm")


def isotime(value):
    """A stored ISO 8601 UTC text (``…Z``, as in JSON details) shown like ``localtime``."""
    from datetime import datetime
    if not value:
        return ""
    return localtime(datetime.fromisoformat(str(value).rstrip("Z")))


def remember_choice():
    """``?lang=`` on any page (even one that only redirects) sticks for the rest of the visit."""
    wanted = request.args.get("lang")
    if wanted in current_app.config["LANGUAGES"]:
        session["lang"] = wanted


def init_app(app):
    app.add_template_filter(localtime)
    app.add_template_filter(isotime)
    app.before_request(remember_choice)
    @app.context_processor
    def language_context():
        from flask_babel import get_locale
        locale = str(get_locale() or app.config["BABEL_DEFAULT_LOCALE"])
        return {"html_lang": HTML_LANG.get(locale, "zh-Hant-TW"), "current_lang": locale,
                "language_names": NAMES}
