"""The audit log: who changed what, when, for which shop (``AuditEntry``).

``record`` adds one entry to the current session; the caller's transaction commits it with the change it
describes (or rolls both back), so the log never claims a change that did not happen. The actor is the
signed-in user unless one is given; without a request it is the CLI (inside a ``flask`` command) or the
system (the queue).

Nothing secret is ever stored: a detail whose name says secret, token, password, key or digest is dropped,
and anything in a value or the target that looks like a credential (a run of 24 or more token characters
mixing letters and digits: channel secrets, access tokens, invitation and webhook tokens) is replaced by
``****``. The Channel ID (digits, shorter) and e-mail addresses stay readable.
"""
import logging
import re

from flask import has_request_context
from flask_login import current_user

from .extensions import db
from .models import AuditEntry, Shop, User

log = logging.getLogger(__name__)

SECRET_NAME = re.compile(r"secret|token|password|passwd|key|digest|credential", re.IGNORECASE)
# Long random values mix letters and digits; a long slug or e-mail name of words alone is left readable.
_RUN = r"[A-Za-z0-9+/=_-]"
SECRET_VALUE = re.compile(rf"(?={_RUN}*\d)(?={_RUN}*[A-Za-z]){_RUN}{{24,}}")
MASK = "****"
MAX_TARGET = 254  # AuditEntry.target


def scrub(value):
    """``value`` (str, number, list, dict …) with every secret-looking part masked or dropped."""
    if isinstance(value, str):
        return SECRET_VALUE.sub(MASK, value)
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items() if not SECRET_NAME.search(str(k))}
    if isinstance(value, (list, tuple, set)):
        return [scrub(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub(str(value))


def _actor(actor):
    """(user id or None, label)."""
    if isinstance(actor, User):
        return actor.id, actor.email
    if isinstance(actor, str):
        return None, actor
    if has_request_context() and getattr(current_user, "is_authenticated", False):
        return current_user.id, current_user.email
    import click
    return None, "cli" if click.get_current_context(silent=True) is not None else "system"


def record(action, *, shop=None, actor=None, target=None, **detail):
    """Add one entry (``action`` like "credentials.saved") to the session; the caller commits.

    ``shop``: a Shop or its id. ``actor``: a User, a label ("cli", "system"), or None for whoever is signed in.
    ``target``: what was changed, in words (an e-mail address, a token's name). ``detail``: more, as JSON."""
    dropped = sorted(name for name in detail if SECRET_NAME.search(name))
    if dropped:
        log.warning("audit %s: details %s look secret and were not stored", action, ", ".join(dropped))
    actor_id, label = _actor(actor)
    entry = AuditEntry(
        action=action, actor_id=actor_id, actor=label[:254],
        shop_id=shop.id if isinstance(shop, Shop) else shop,
        target=scrub(str(target))[:MAX_TARGET] if target is not None else None,
        detail=scrub(detail),
    )
    db.session.add(entry)
    return entry


def for_shop(shop, limit=50):
    """The shop's entries, newest first (the shop's timeline)."""
    shop_id = shop.id if isinstance(shop, Shop) else shop
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.shop_id == shop_id)
                              .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)).all()


def recent(limit=200, shop=None, action=None):
    """The newest entries for the staff page, optionally of one shop and/or actions starting with ``action``."""
    query = db.select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if shop is not None:
        query = query.where(AuditEntry.shop_id == (shop.id if isinstance(shop, Shop) else shop))
    if action:
        query = query.where(AuditEntry.action.startswith(action))
    return db.session.scalars(query).all()
