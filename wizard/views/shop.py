"""One shop in the staff console, /shops/<slug>/…: its page (the recorded state, open alerts, steps, step
history, the timeline with traffic per day, owners and staff) and what its buttons do: "check now",
reassigning staff, acknowledging and snoozing an alert, sending the owner's invitation again.

Every route names the shop in its address and reads it through ``shop_for`` (views/__init__.py) after
``staff_only``. The page never asks LINE by itself: it reads the shop as last checked (steps/status.py) and
its histories (watch/history.py); only "check now" asks.
"""
from datetime import timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField

from .. import accounts, audit, invitations
from ..extensions import db
from ..models import Alert, Invitation, ShopHealth, User, utcnow
from ..steps import health as shop_health
from ..steps.registry import registry
from ..steps.status import stored_status
from ..watch import alerts as watch_alerts, board, history
from . import checked_post, shop_for, staff_only
from .shops import back_to, check, has_endpoint, say_mailed

bp = Blueprint("shop", __name__, url_prefix="/shops/<slug>")

SNOOZE_HOURS = (1, 4, 24, 72)


class InviteForm(FlaskForm):
    """Resend a shop's invitation: to ``email``, or (left empty) to the address last invited."""
    email = EmailField(_l("E-mail to invite"))


staff_only(bp)


@bp.get("/")
def index(slug):
    shop = shop_for(slug)
    status = stored_status(shop)  # as last checked: this page never asks LINE by itself
    pending = db.session.scalars(db.select(Invitation).where(
        Invitation.shop_id == shop.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .order_by(Invitation.created_at.desc()).limit(1)).first()
    friends, blocks = board.friends_and_blocks(shop)
    return render_template(
        "console/shop.html", shop=shop, health=shop.health, status=status, steps=registry(),
        step_title=board.step_title, open_alerts=watch_alerts.open_alerts(shop),
        step_history=history.step_history(shop), step_history_limit=history.STEP_HISTORY,
        alert_sentence=lambda alert: watch_alerts.sentence(alert, shop), days=history.days(shop),
        owners=[user for user in shop.owners if not user.is_staff], pending=pending, staff_users=_staff_choices(),
        form=FlaskForm(), snooze_hours=SNOOZE_HOURS, friends=friends, blocks=blocks,
        has_endpoint=has_endpoint,
        labels=shop_health.LABELS, describe=board.staff_sentence, now=utcnow(),
        redelivery_advice=shop.channel is not None and not shop_health.redelivery_known(shop),
        redelivery_step=registry().number("webhook_url"))


def _staff_choices():
    return db.session.scalars(db.select(User).where(User.is_staff.is_(True), User.deactivated_at.is_(None))
                              .order_by(User.email)).all()


@bp.post("/check")
def check_one(slug):
    checked_post()
    shop = shop_for(slug)
    rows = check([shop])
    row = rows[0] if rows else db.session.get(ShopHealth, shop.id)
    flash(_("Checked %(shop)s just now. %(verdict)s", shop=shop.name, verdict=board.said(row)), "success")
    return redirect(back_to(url_for("shop.index", slug=shop.slug)))


@bp.post("/assign")
def assign(slug):
    """Give the shop to a staff member (or to nobody); recorded as "shop.assigned"."""
    checked_post()
    shop = shop_for(slug)
    raw = (request.form.get("staff") or "").strip()
    staff = None
    if raw:
        staff = db.session.get(User, int(raw)) if raw.isdecimal() and len(raw) < 10 else None
        if staff is None or not staff.is_staff or staff.deactivated_at is not None:
            flash(_("Nothing changed: only an active staff member can look after a shop."), "error")
            return redirect(url_for("shop.index", slug=shop.slug))
    previous = shop.assigned_staff
    if (previous.id if previous else None) == (staff.id if staff else None):
        flash(_("Nothing changed: that is who looks after this shop already."), "info")
        return redirect(url_for("shop.index", slug=shop.slug))
    shop.assigned_staff_id = staff.id if staff else None
    audit.record("shop.assigned", shop=shop, target=staff.email if staff else None,
                 previous=previous.email if previous else None)
    db.session.commit()
    if staff:
        flash(_("%(email)s now looks after %(shop)s.", email=staff.email, shop=shop.name), "success")
    else:
        flash(_("Nobody is assigned to %(shop)s now.", shop=shop.name), "success")
    return redirect(url_for("shop.index", slug=shop.slug))


def _alert(shop, alert_id):
    return db.first_or_404(db.select(Alert).filter_by(id=alert_id, shop_id=shop.id))


@bp.post("/alerts/<int:alert_id>/acknowledge")
def acknowledge(slug, alert_id):
    checked_post()
    shop = shop_for(slug)
    alert = _alert(shop, alert_id)
    if alert.closed_at is not None:
        flash(_("This alert has closed already: the check passes again."), "info")
    else:
        watch_alerts.acknowledge(alert, current_user._get_current_object())
        db.session.commit()
        flash(_("Alert acknowledged: no more e-mail about it. It stays open until the check passes."), "success")
    return redirect(url_for("shop.index", slug=shop.slug))


@bp.post("/alerts/<int:alert_id>/snooze")
def snooze(slug, alert_id):
    checked_post()
    shop = shop_for(slug)
    alert = _alert(shop, alert_id)
    raw = request.form.get("hours") or ""
    if not raw.isdecimal() or int(raw) not in SNOOZE_HOURS:
        flash(_("Nothing changed: choose how long to snooze the alert."), "error")
    elif alert.closed_at is not None:
        flash(_("This alert has closed already: the check passes again."), "info")
    else:
        until = utcnow() + timedelta(hours=int(raw))
        watch_alerts.snooze(alert, current_user._get_current_object(), until)
        db.session.commit()
        flash(ngettext("Alert snoozed for %(num)d hour.", "Alert snoozed for %(num)d hours.", int(raw)), "success")
    return redirect(url_for("shop.index", slug=shop.slug))


@bp.post("/invite")
def invite(slug):
    """Send the shop's invitation again (a new link; the older pending one stops working)."""
    shop = shop_for(slug)
    form = InviteForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        invitation, token = invitations.resend(shop, current_user, form.email.data)
    except accounts.AccountErrors as exc:
        db.session.rollback()
        flash(" ".join(str(error.message) for error in exc.errors), "error")
    else:
        db.session.commit()
        say_mailed(invitations.deliver(invitation, token, current_user), _("New invitation made."))
        db.session.commit()
    # Back where the button was: the shop's page sends "back", the people page does not.
    if request.form.get("back") == "shop":
        return redirect(url_for("shop.index", slug=shop.slug))
    return redirect(url_for("people.index"))
