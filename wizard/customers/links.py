"""The customer's personal form link: ``/form/<token>``, signed, expiring, tied to one LINE user and shop.

A token is ``itsdangerous``-signed (SECRET_KEY, its own salt) over [contact id, shop id, a digest of the LINE
user ID, a random nonce] with the time it was made, so nobody can make one or change one, and ``resolve``
refuses it once ``FORM_LINK_DAYS`` have passed. The contact keeps the latest token only encrypted
(``Contact.form_token``) and as its digest, never in plain; logs mask ``/form/<token>`` (redact.py).

A token that is not signed but matches a contact's stored digest is a link made before links were signed
(or by a test): it works until ``FORM_LINK_DAYS`` after it was stored, then counts as expired.

The nonce makes every link new: without it two links made in the same second (the follow's form and a
"send again" pressed at once) were the same text, and the customer could not tell the new one from the old.
Links signed before the nonce (three items) still resolve.

Only the newest link works (``REPLACED`` otherwise): the contact keeps the digest of the link it was sent last,
so a link forwarded, screenshotted or left in an old chat stops opening the customer's details once a newer one
is issued; and a customer who blocks the account loses their link (customers/rules.py clears it on unfollow), so a
LINE account that changed hands, or a link kept from before, cannot read or overwrite their data.
"""
import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .. import crypto
from ..extensions import db
from ..models import Channel, Contact, utcnow

SALT = "customer-form-link"
MAX_TOKEN = 300
UNKNOWN, EXPIRED, REPLACED = "unknown", "expired", "replaced"


def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def _user_tag(line_user_id):
    return hashlib.sha256(line_user_id.encode()).hexdigest()[:16]


def _lifetime():
    return timedelta(days=float(current_app.config["FORM_LINK_DAYS"]))


def issue(contact, shop_id):
    """A new link token for ``contact`` (of shop ``shop_id``), kept on the contact; the caller commits."""
    token = _serializer().dumps([contact.id, shop_id, _user_tag(contact.line_user_id), secrets.token_hex(4)])
    contact.form_token = token
    return token


def url(token):
    return f"{current_app.config['PUBLIC_BASE_URL']}/form/{token}"


def resolve(token):
    """(contact, None) for a good link; (None, "unknown") for one that is not ours or was changed;
    (None, "expired") for one of ours that is too old; (None, "replaced") for one of ours that a newer link
    has replaced, or whose customer blocked the account since."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return None, UNKNOWN
    try:
        payload = _serializer().loads(token, max_age=_lifetime().total_seconds())
    except SignatureExpired:
        return None, EXPIRED
    except BadSignature:
        return _legacy(token)
    if not (isinstance(payload, list) and len(payload) in (3, 4)
            and all(isinstance(v, (int, str)) for v in payload)):
        return None, UNKNOWN
    contact_id, shop_id, tag = payload[:3]
    contact = db.session.get(Contact, contact_id) if isinstance(contact_id, int) else None
    if contact is None or tag != _user_tag(contact.line_user_id):
        return None, UNKNOWN
    channel = db.session.get(Channel, contact.channel_id)
    if channel is None or channel.shop_id != shop_id:
        return None, UNKNOWN
    if contact.blocked_at is not None or contact.form_token_digest != crypto.token_digest(token):
        return None, REPLACED
    return contact, None


def _legacy(token):
    contact = db.session.scalar(db.select(Contact).filter_by(form_token_digest=crypto.token_digest(token)))
    if contact is None:
        return None, UNKNOWN
    if contact.blocked_at is not None:
        return None, REPLACED
    if contact.form_link_issued_at is None or contact.form_link_issued_at + _lifetime() < utcnow():
        return None, EXPIRED
    return contact, None
