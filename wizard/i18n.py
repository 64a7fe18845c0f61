"""Which language a page speaks: Traditional Chinese (Taiwan) unless the person chose English.

The choice travels as ``?lang=en`` once, then lives in the session (and on the user, when signed in).
"""
from datetime import timezone
from zoneinfo import ZoneInfo

from flask import current_app, has_request_context, request, session
from flask_babel import gettext as _
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


def zone():
    """The time zone people read times in (``BABEL_DEFAULT_TIMEZONE``, Asia/Taipei), from the system's zoneinfo."""
    return ZoneInfo(current_app.config.get("BABEL_DEFAULT_TIMEZONE") or "Asia/Taipei")


def local(value):
    """Naive UTC from the database as an aware time in ``zone()``; works without a request (mails, CSV)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(zone())


def localtime(value):
    """Naive UTC from the database, shown in the shop's time zone (Taiwan by default)."""
    if value is None:
        return ""
    return local(value).strftime("%Y-%m-%d %H:%M")


def zone_name():
    """The zone's name as people say it ("Taipei time"), for mails and files read outside the app."""
    key = str(zone())
    return str(_("Taipei time")) if key == "Asia/Taipei" else key


def localtime_zoned(value):
    """``localtime`` with the zone named: e-mails and exports are read where the page's context is missing."""
    if value is None:
        return ""
    return _("%(time)s (%(zone)s)", time=localtime(value), zone=zone_name())


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
    app.add_template_filter(localtime_zoned)
    app.before_request(remember_choice)
    @app.context_processor
    def language_context():
        from flask_babel import get_locale
        locale = str(get_locale() or app.config["BABEL_DEFAULT_LOCALE"])
        return {"html_lang": HTML_LANG.get(locale, "zh-Hant-TW"), "current_lang": locale,
                "language_names": NAMES}
