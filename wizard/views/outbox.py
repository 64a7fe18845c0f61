"""Staff page: messages to LINE that need a person (dead after every retry, refused, or of unknown fate).

Everything else in the outbox takes care of itself (queued rows are retried, sent rows are done). A dead or
refused message can be sent again from here: it goes back to the queue as a push with its own retry key, so
pressing the button twice, or a retry LINE had already taken, still delivers it once. An "unknown" reply
(a worker died while LINE was being asked) is shown, never re-sent from here: the customer may have it.
"""
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_wtf import FlaskForm

from .. import queue
from ..extensions import db
from . import staff_only
from ..outgoing import outbox
from ..models import Outbox
from ..statuses import OutboxStatus

bp = Blueprint("outbox", __name__, url_prefix="/shops/messages")

NEEDS_A_PERSON = (OutboxStatus.DEAD, OutboxStatus.FAILED, OutboxStatus.UNKNOWN)
STATUS_LABELS = {
    OutboxStatus.QUEUED: _l("Waiting to be sent"),
    OutboxStatus.SENDING: _l("Being sent"),
    OutboxStatus.SENT: _l("Sent"),
    OutboxStatus.FAILED: _l("Refused by LINE"),
    OutboxStatus.DEAD: _l("Gave up after every retry"),
    OutboxStatus.UNKNOWN: _l("Fate unknown (not re-sent)"),
}
PURPOSES = {"form": _l("Customer data form"), "typed": _l("Message typed in the CRM")}


staff_only(bp)


@bp.get("/")
def index():
    rows = db.session.scalars(db.select(Outbox).where(Outbox.status.in_(NEEDS_A_PERSON))
                              .order_by(Outbox.updated_at.desc()).limit(200)).all()
    return render_template("shops/messages.html", rows=rows, counts=outbox.counts(), labels=STATUS_LABELS,
                           purposes=PURPOSES, form=FlaskForm(), retryable=outbox.RETRYABLE)


@bp.post("/<int:outbox_id>/retry")
def retry(outbox_id):
    if not FlaskForm().validate_on_submit():
        abort(400)
    if outbox.retry(outbox_id):
        queue.send_message(outbox_id)
        flash(_("The message is queued again; it goes out as a push within a few seconds."), "success")
    else:
        flash(_("This message cannot be sent again from here (it was sent, is on its way, or its fate is "
                "unknown)."), "error")
    return redirect(url_for("outbox.index"))
