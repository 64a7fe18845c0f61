"""What the owner (or staff acting for the shop) confirmed by ticking a box: facts LINE cannot tell us.

Each confirmation is kept as ``{"at": iso time, "by": e-mail, "staff": bool}`` under its name in
``Shop.confirmations``, so staff and the owner can both see who confirmed what, and when.
"""
from flask import flash
from flask_login import current_user

from .. import audit
from ..models import iso_utc, utcnow
from .registry import Action


def get(shop, what):
    """The record of a confirmation, or None. Older records were a bare time string."""
    value = (shop.confirmations or {}).get(what)
    if isinstance(value, str):
        return {"at": value, "by": None, "staff": False}
    return value or None


def given(shop, what):
    return get(shop, what) is not None


def record(shop, what, value, user=None):
    user = user if user is not None else current_user
    confirmations = dict(shop.confirmations or {})
    if value:
        if what not in confirmations:
            confirmations[what] = {"at": iso_utc(utcnow()), "by": getattr(user, "email", None),
                                   "staff": bool(getattr(user, "is_staff", False))}
    else:
        confirmations.pop(what, None)
    if (what in confirmations) != (what in (shop.confirmations or {})):
        audit.record("confirmation.set", shop=shop, actor=user, target=what, value=bool(value))
    shop.confirmations = confirmations


def confirm_action(form_class, what, missing, recheck=False):
    """The action behind a step's "Save and continue": record the box, and say what is missing when it was
    left unticked (saving an unticked box used to do nothing visible). Ticked, the wizard moves on."""

    def handler(page):
        ticked = bool(getattr(form_class(), what).data)
        record(page.shop, what, ticked)
        if not ticked:
            flash(missing, "warning")
        return None

    return Action(handler, recheck=recheck, advance=True)
