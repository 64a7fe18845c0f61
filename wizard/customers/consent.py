"""Evidence of each submission of the customer form (PDPA Art. 7 and 8: the shop must be able to show what
the customer was told and agreed to): the notice version, the time, the LINE user, the purposes consented
to (○九○ with the form; ○四○ only with its own ticked box), the names of the fields submitted (never their
values), the client's address and user agent. One FormSubmission per submission, corrections included."""
from flask import request

from ..models import FormSubmission, utcnow
from . import notice

MAX_USER_AGENT = 500


def record(contact, shop_id, notice_content, marketing, fields, locale=None, at=None):
    """Add the evidence of this submission to the session (the caller commits with the data); returns it."""
    from ..extensions import db
    version = notice.remember(shop_id, notice_content)
    purposes = [notice.CUSTOMER_CARE] + ([notice.MARKETING] if marketing else [])
    submission = FormSubmission(
        contact_id=contact.id, shop_id=shop_id, line_user_id=contact.line_user_id, at=at or utcnow(),
        notice_version=version, purposes=purposes, marketing=bool(marketing), fields=list(fields),
        locale=locale, address=(request.remote_addr or "")[:45] or None,
        user_agent=(request.user_agent.string or "")[:MAX_USER_AGENT] or None)
    db.session.add(submission)
    return submission


def history(contact_id):
    from ..extensions import db
    return list(db.session.scalars(db.select(FormSubmission).filter_by(contact_id=contact_id)
                                   .order_by(FormSubmission.at, FormSubmission.id)))


def describe(submission):
    """One submission as a sentence an owner reads in their language, in Taiwan's time: what the customer
    read, what they agreed to and which details they gave (never the codes or field names the record keeps)."""
    from flask_babel import gettext as _

    from ..i18n import localtime
    from .fields import FIELDS
    purposes = notice.listed(notice.PURPOSES.get(code, code) for code in submission.purposes or [])
    given = notice.listed(FIELDS[name][1] for name in FIELDS if name in (submission.fields or []))
    sentence = _("On %(time)s (Taipei time) the customer read the privacy notice (version %(version)s) and agreed "
                 "to the use of their data for %(purposes)s.", time=localtime(submission.at),
                 version=submission.notice_version, purposes=purposes)
    if not submission.marketing:
        sentence += " " + _("They did not agree to marketing messages.")
    sentence += " " + (_("Details given: %(fields)s.", fields=given) if given else _("No details were given."))
    return sentence
