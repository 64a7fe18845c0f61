"""Invitations: a person gets access to a shop by a link sent to their e-mail address, and sets their own
password there; nobody types a password for someone else.

Staff invite a new shop's owner (the new-shop form) and may send the invitation again; an owner invites a
second person for their own shop. The link holds a random token that is stored only as its digest, works
for ``INVITATION_HOURS`` and once. Sending a new invitation to the same address for the same shop revokes
the older pending one, so only the newest link works. Accepting creates the account (an owner of the
shop), so an invitation never leaves a half-made account behind: until it is accepted there is none.

Every change is in the audit log; the caller commits. The mail is sent after the invitation is saved
(``deliver``), so a mail server that is down costs a resend, never the invitation.
"""
from datetime import timedelta

from flask import current_app, has_request_context, url_for
from flask_babel import force_locale, gettext as _

from . import accounts, audit, crypto, mail
from .accounts import AccountError, AccountErrors
from .extensions import db
from .i18n import localtime_zoned
from .models import Invitation, Shop, User, utcnow


MAX_PER_SHOP_PER_DAY = 20


def _refuse(field, code, **params):
    raise AccountErrors([AccountError(field, code, **params)])


def find(token):
    """The invitation this link's token belongs to, or None (a tampered or unknown link)."""
    if not token or len(token) > 200:
        return None
    return db.session.scalar(db.select(Invitation).filter_by(token_digest=crypto.token_digest(token)))


def state(invitation, now=None):
    """"pending", "accepted", "revoked" or "expired"."""
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= (now or utcnow()):
        return "expired"
    return "pending"


def pending_for_shop(shop):
    now = utcnow()
    return db.session.scalars(db.select(Invitation).where(
        Invitation.shop_id == shop.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
        Invitation.expires_at > now).order_by(Invitation.created_at.desc())).all()


def email_errors(email, field="email"):
    """A new person's address: well formed, and nobody has an account with it yet."""
    email = accounts.normalise_email(email)
    errors = accounts.email_errors(email, field)
    if not errors and db.session.scalar(db.select(User.id).filter_by(email=email)) is not None:
        errors.append(AccountError(field, "email_taken", email=email))
    return errors


def invite(shop, email, by, field="email", reveal=True):
    """(invitation, token) for ``email`` to become an owner of ``shop``; older pending invitations of the same
    address for this shop stop working. Raises AccountErrors (``field``). Send it with ``deliver``.

    ``reveal=False`` (an owner's form): an address that already has an account is not refused, so the answer
    is the same whether anyone has an account or not; ``deliver`` then mails that person a note instead of
    a link (an account belongs to one shop), and the invitation can never be accepted."""
    errors = email_errors(email, field) if reveal else accounts.email_errors(accounts.normalise_email(email),
                                                                             field)
    if errors:
        raise AccountErrors(errors)
    email = accounts.normalise_email(email)
    now = utcnow()
    sent_today = db.session.scalar(db.select(db.func.count(Invitation.id)).where(
        Invitation.shop_id == shop.id, Invitation.created_at > now - timedelta(days=1)))
    if sent_today >= MAX_PER_SHOP_PER_DAY:
        # Each one mails someone through our server: a shop is no way to send mail to anybody, any number.
        _refuse(field, "invitations_too_many", max=MAX_PER_SHOP_PER_DAY)
    for older in db.session.scalars(db.select(Invitation).where(
            Invitation.shop_id == shop.id, Invitation.email == email,
            Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))):
        older.revoked_at = now
    token = crypto.new_token(32)
    invitation = Invitation(email=email, shop_id=shop.id, invited_by_id=by.id if by is not None else None,
                            token_digest=crypto.token_digest(token), created_at=now,
                            expires_at=now + timedelta(hours=float(current_app.config["INVITATION_HOURS"])))
    db.session.add(invitation)
    db.session.flush()
    return invitation, token


def link(token):
    """The accept page's address as the invitee opens it: on PUBLIC_BASE_URL (not the host staff typed)."""
    if has_request_context():
        path = url_for("invitations.accept", token=token)
    else:
        path = f"/invite/{token}"
    return current_app.config["PUBLIC_BASE_URL"] + path


def _body(invitation, url, inviter):
    hours = int(round(float(current_app.config["INVITATION_HOURS"])))
    parts = []
    # The invitee's language is not known yet: Chinese (Taiwan) first, English after it.
    for locale in ("zh_Hant_TW", "en"):
        with force_locale(locale):
            expires = localtime_zoned(invitation.expires_at)  # Taipei time, named in the reader's language
            parts.append("\n\n".join([
                _("Hello,"),
                _("%(inviter)s invites you to manage the LINE connection of %(shop)s in the LINE Connect "
                  "Wizard.", inviter=inviter, shop=invitation.shop.name),
                _("Open this link to choose your password and sign in:"),
                url,
                _("The link works once, for %(hours)d hours (until %(expires)s). If you did not expect this "
                  "mail, ignore it: nothing happens without the link.", hours=hours, expires=expires),
            ]))
    return ("\n\n" + "-" * 40 + "\n\n").join(parts) + "\n"


def _has_account_body(invitation, inviter):
    """For an address that has an account already: what happened, and no link (it could not be used)."""
    parts = []
    for locale in ("zh_Hant_TW", "en"):
        with force_locale(locale):
            parts.append("\n\n".join([
                _("Hello,"),
                _("%(inviter)s wanted to give you access to %(shop)s in the LINE Connect Wizard, but this "
                  "e-mail address already has an account, and an account belongs to one shop.",
                  inviter=inviter, shop=invitation.shop.name),
                _("If you need access to %(shop)s, ask %(inviter)s or your onboarding contact. If you did not "
                  "expect this mail, ignore it: nothing has changed.", inviter=inviter, shop=invitation.shop.name),
            ]))
    return ("\n\n" + "-" * 40 + "\n\n").join(parts) + "\n"


def deliver(invitation, token, by=None):
    """Mail the invitation now and note it in the audit log; returns the ``MailMessage`` (``error`` set when
    it did not go out). The caller commits. An address that has an account already gets a note instead."""
    url = link(token)
    inviter = by.email if by is not None else _("The onboarding team")
    if db.session.scalar(db.select(User.id).filter_by(email=invitation.email)) is not None:
        body = _has_account_body(invitation, inviter)
    else:
        body = _body(invitation, url, inviter)
    with force_locale("zh_Hant_TW"):
        subject_zh = _("Invitation to %(shop)s on the LINE Connect Wizard", shop=invitation.shop.name)
    with force_locale("en"):
        subject_en = _("Invitation to %(shop)s on the LINE Connect Wizard", shop=invitation.shop.name)
    message = mail.send(invitation.email, f"{subject_zh} / {subject_en}", body,
                        kind="invitation", shop=invitation.shop, hide=[url])
    audit.record("invitation.sent", shop=invitation.shop, actor=by, target=invitation.email,
                 expires_at=invitation.expires_at.isoformat() + "Z", mailed=message.error is None)
    return message


def resend(shop, by, email=None):
    """Invite again (the newest link only works): ``email``, or the address of the shop's latest invitation
    that was not accepted. Raises AccountErrors (``email``)."""
    if not email:
        latest = db.session.scalar(db.select(Invitation).where(
            Invitation.shop_id == shop.id, Invitation.accepted_at.is_(None))
            .order_by(Invitation.created_at.desc(), Invitation.id.desc()))
        if latest is None:
            _refuse("email", "invitation_none")
        email = latest.email
    return invite(shop, email, by)


def revoke(invitation, by):
    if state(invitation) != "pending":
        return False
    invitation.revoked_at = utcnow()
    audit.record("invitation.revoked", shop=invitation.shop_id, actor=by, target=invitation.email)
    return True


def accept(invitation, password, field="password"):
    """Create the invitee's account (an owner of the shop) with their password. The invitation must be
    pending; raises AccountErrors (``field``, or ``invitation`` when the address was taken meanwhile)."""
    if state(invitation) != "pending":
        _refuse("invitation", "invitation_" + state(invitation))
    if invitation.invited_by is not None and not invitation.invited_by.is_active:
        _refuse("invitation", "invitation_revoked")  # whoever invited has been closed since
    if db.session.scalar(db.select(User.id).filter_by(email=invitation.email)) is not None:
        _refuse("invitation", "email_taken", email=invitation.email)
    errors = accounts.password_errors(password, field, email=invitation.email)
    if errors:
        raise AccountErrors(errors)
    user = User(email=invitation.email, is_staff=False, shop_id=invitation.shop_id)
    user.set_password(password)
    db.session.add(user)
    invitation.accepted_at = utcnow()
    db.session.flush()
    audit.record("invitation.accepted", shop=invitation.shop_id, actor=user, target=user.email)
    return user


def create_shop(slug, name, owner_email, by):
    """The staff form: a new shop and the invitation of its owner, or neither. (shop, invitation, token);
    raises AccountErrors whose fields are the form's: ``slug``, ``name``, ``owner_email``."""
    errors = accounts.validate_shop(slug, name) + email_errors(owner_email, "owner_email")
    if errors:
        raise AccountErrors(errors)
    shop = Shop(slug=accounts.normalise_slug(slug), name=name.strip())
    db.session.add(shop)
    db.session.flush()
    audit.record("shop.created", shop=shop, actor=by, target=shop.slug)
    invitation, token = invite(shop, owner_email, by, "owner_email")
    return shop, invitation, token
