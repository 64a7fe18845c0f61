"""Staff page: every e-mail the app sent or tried to send, newest first, with the text as it went out (one-time
links masked) and, for a mail that did not go out, what the mail server or the network said."""
from flask import Blueprint, current_app, render_template
from flask_babel import lazy_gettext as _l

from .. import mail
from ..extensions import db
from . import staff_only
from ..models import MailMessage

bp = Blueprint("mail", __name__, url_prefix="/shops/mail")

KINDS = {"invitation": _l("Invitation"), "alert": _l("Alert")}
TRANSPORTS = {"smtp": _l("Mail server"), "file": _l("File in instance/outbox/")}


staff_only(bp)


@bp.get("/")
def index():
    rows = db.session.scalars(db.select(MailMessage).order_by(MailMessage.sent_at.desc(), MailMessage.id.desc())
                              .limit(200)).all()
    return render_template("mail/index.html", rows=rows, kinds=KINDS, transports=TRANSPORTS,
                           transport=mail.transport_name(), outbox=str(mail.outbox_dir()),
                           mail_from=current_app.config["MAIL_FROM"])
