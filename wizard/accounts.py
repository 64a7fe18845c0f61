"""Accounts: creating users and shops, staff API tokens, and the rules their fields follow.

Four doors make accounts: the CLI (``flask user create``, ``shop create``), the staff new-shop form, the
password change page and the dev server's demo seed. This module is the one place that knows what a valid
e-mail address, password, shop code and shop name are, so the doors cannot drift apart.

Every refusal is an ``AccountError`` naming the field it belongs to and carrying a translated ``message``; a
form puts it under that field, the CLI prints it. ``validate_*`` collect every problem of one submit, and the
``create_*`` functions add nothing to the session unless every field is right (``AccountErrors`` lists them
all), so a refused submit never leaves half an account behind. The caller commits.

Passwords: long enough to resist guessing (at least ``MIN_PASSWORD``, with ``MIN_DISTINCT`` different
characters), short enough that hashing one is not a
way to tie up the server (``MAX_PASSWORD``), not the account's own e-mail address or its part before the @,
and not one of the most common passwords (``common_passwords.txt``), also with digits or punctuation added at
the end ("password123!"), which is how most people lengthen a refused one.
"""
import functools
from datetime import timedelta
import re
import unicodedata
from pathlib import Path

from flask import current_app, has_app_context
from flask_babel import lazy_gettext

from . import audit, crypto
from sqlalchemy import or_, update

from .extensions import db
from .models import ApiToken, Invitation, Shop, User, utcnow

MIN_PASSWORD = 10
# "aaaaaaaaaa" or "ababababab" is long but guessed at once: a password needs this many different characters.
MIN_DISTINCT = 5
MAX_PASSWORD = 256
COMMON_PASSWORDS = Path(__file__).with_name("common_passwords.txt")
# What people append to a common password to make it "new": digits, punctuation, spaces.
_APPENDED = re.compile(r"[\d\W_]+$")
MAX_EMAIL = 254  # models.User.email
MAX_SHOP_NAME = 200  # models.Shop.name
# Werkzeug's scrypt: what every password is hashed with, in production always.
PASSWORD_HASH_METHOD = "scrypt"
MAX_TOKEN_NAME = 100  # models.ApiToken.name
# An API token's last use is written at most this often (seconds): not one write per API call.
TOKEN_USE_RESOLUTION = 60

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# Staff pages live beside the shops' own under /shops/<slug>/: a shop of one of these names could not be reached.
RESERVED_SLUGS = {"people", "tokens", "audit", "mail", "messages", "new", "check", "export"}
# Something, @, a domain with at least one dot; no spaces or control characters (PostgreSQL refuses NUL).
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s.\x00-\x1f\x7f]+(\.[^@\s.\x00-\x1f\x7f]+)+$")
# Chinese and Japanese input methods type 。 for a dot; IDNA reads it as one too.
IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff61": "."})


def N_(message):
    """Marks a message for extraction; it is translated when shown (``AccountError.message``)."""
    return message


MESSAGES = {
    "email_missing": N_("Enter an e-mail address."),
    "email_invalid": N_("'%(email)s' is not an e-mail address."),
    "email_too_long": N_("Use at most %(max)d characters."),
    "email_taken": N_("A user with the e-mail %(email)s already exists."),
    "password_too_short": N_("The password must have at least %(num)d characters."),
    "password_too_long": N_("The password can have at most %(num)d characters."),
    "password_too_uniform": N_("The password must use at least %(num)d different characters, not a few "
                               "repeated."),
    "password_is_email": N_("The password cannot be the account's e-mail address or its part before the @."),
    "password_common": N_("This password is one of the most common ones, which are tried first when "
                          "someone guesses. Choose one that is only yours, e.g. a few unrelated words."),
    "slug_missing": N_("Enter a shop code."),
    "slug_invalid": N_("'%(slug)s' is not a valid shop code: use lower-case letters, digits and '-'."),
    "slug_taken": N_("A shop with the code %(slug)s already exists."),
    "slug_reserved": N_("The code %(slug)s is the name of one of the CRM's own pages. Choose another."),
    "name_missing": N_("The shop needs a name."),
    "name_too_long": N_("Use at most %(max)d characters."),
    "name_invalid": N_("The shop name must be one line of text, without line breaks or control characters."),
    "owner_unknown": N_("No user has the e-mail %(email)s; create it first with 'user create'."),
    "owner_is_staff": N_("%(email)s is a staff account; a shop owner must be a normal account."),
    "owner_has_shop": N_("%(email)s already owns the shop %(slug)s."),
    "user_unknown": N_("No user has the e-mail %(email)s."),
    "user_not_staff": N_("%(email)s is not a staff user; API tokens are for staff only."),
    "user_deactivated": N_("%(email)s is deactivated; reactivate the account first."),
    "deactivate_self": N_("You cannot deactivate your own account: ask another staff member."),
    "token_name_missing": N_("Give the token a name that says where it is used, e.g. “CRM sync”."),
    "token_name_too_long": N_("Use at most %(max)d characters."),
    "token_name_invalid": N_("The name cannot contain control characters."),
    "invitation_none": N_("This shop has no invitation to send again; enter the e-mail address to invite."),
    "invitation_accepted": N_("This invitation has already been used."),
    "invitation_revoked": N_("This invitation was replaced by a newer one or withdrawn."),
    "invitations_too_many": N_("This shop has sent %(max)s invitations in the last 24 hours. Try again tomorrow."),
    "invitation_expired": N_("This invitation has expired."),
}


class AccountError(ValueError):
    """One refused field: ``field`` (the name of the form field or CLI argument), ``code``, ``message``."""

    def __init__(self, field, code, **params):
        super().__init__(field, code)
        self.field, self.code, self.params = field, code, params

    @property
    def message(self):
        return lazy_gettext(MESSAGES[self.code], **self.params)

    def __str__(self):
        return str(self.message)


class AccountErrors(ValueError):
    """Everything wrong with one submit, in field order; one message per line when printed."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = list(errors)

    def by_field(self):
        fields = {}
        for error in self.errors:
            fields.setdefault(error.field, []).append(error)
        return fields

    def __str__(self):
        return "\n".join(str(error) for error in self.errors)


def normalise_email(value):
    """As stored: full-width letters, ＠ and ．made ASCII (NFKC), 。 made a dot, trimmed, lower case."""
    return unicodedata.normalize("NFKC", value or "").translate(IDEOGRAPHIC_DOTS).strip().lower()


def normalise_slug(value):
    return unicodedata.normalize("NFKC", value or "").strip().lower()


def email_errors(email, field="email"):
    """Problems with an e-mail address already normalised; shape and length only (no database)."""
    if not email:
        return [AccountError(field, "email_missing")]
    if len(email) > MAX_EMAIL:
        return [AccountError(field, "email_too_long", max=MAX_EMAIL)]
    if not EMAIL.match(email):
        return [AccountError(field, "email_invalid", email=email)]
    return []


@functools.cache
def common_passwords():
    """The refused list, lower case; read once per process."""
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def is_common(password):
    lowered = password.lower()
    base = _APPENDED.sub("", lowered)
    # The base alone must be a real word of the list, not "1" left from "1234567890".
    return lowered in common_passwords() or (len(base) >= 4 and base in common_passwords())


def password_errors(password, field="password", email=None):
    """The password rules, shared by new accounts and the password change page. ``email``: the account's
    (as typed or stored); its whole and its part before the @ are refused, whatever the letter case."""
    password = password or ""
    if len(password) < MIN_PASSWORD:
        return [AccountError(field, "password_too_short", num=MIN_PASSWORD)]
    if len(password) > MAX_PASSWORD:
        return [AccountError(field, "password_too_long", num=MAX_PASSWORD)]
    typed = unicodedata.normalize("NFKC", password).strip().lower()
    if len(set(typed)) < MIN_DISTINCT:
        return [AccountError(field, "password_too_uniform", num=MIN_DISTINCT)]
    email = normalise_email(email)
    if email and typed in {email, email.partition("@")[0]}:
        return [AccountError(field, "password_is_email")]
    if is_common(password):
        return [AccountError(field, "password_common")]
    return []


def user_by_email(email):
    """The user with this e-mail address as typed (normalised first), or None."""
    email = normalise_email(email)
    if email_errors(email):
        return None
    return db.session.scalar(db.select(User).filter_by(email=email))


def validate_user(email, password, email_field="email", password_field="password"):
    email = normalise_email(email)
    errors = email_errors(email, email_field)
    if not errors and db.session.scalar(db.select(User.id).filter_by(email=email)) is not None:
        errors.append(AccountError(email_field, "email_taken", email=email))
    return errors + password_errors(password, password_field, email=email)


def validate_shop(slug, name):
    slug, name = normalise_slug(slug), (name or "").strip()
    errors = []
    if not slug:
        errors.append(AccountError("slug", "slug_missing"))
    elif not SLUG.match(slug):
        errors.append(AccountError("slug", "slug_invalid", slug=slug))
    elif slug in RESERVED_SLUGS:
        errors.append(AccountError("slug", "slug_reserved", slug=slug))
    elif db.session.scalar(db.select(Shop.id).filter_by(slug=slug)) is not None:
        errors.append(AccountError("slug", "slug_taken", slug=slug))
    if not name:
        errors.append(AccountError("name", "name_missing"))
    elif len(name) > MAX_SHOP_NAME:
        errors.append(AccountError("name", "name_too_long", max=MAX_SHOP_NAME))
    elif not is_one_line(name):
        errors.append(AccountError("name", "name_invalid"))
    return errors


# Control characters (Cc: tab, CR, LF …), line and paragraph separators (Zl, Zp: U+2028, U+2029), and
# characters that are no text at all (surrogates, private use, unassigned). A shop name goes into mail
# subjects, page titles and CSV cells: each of these breaks one of them. Format characters (Cf) stay: the
# zero-width joiner is part of many emoji; only the bidi overrides, which can disguise a name, are refused.
NOT_ONE_LINE = {"Cc", "Zl", "Zp", "Cs", "Co", "Cn"}
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_one_line(text):
    return not any(unicodedata.category(char) in NOT_ONE_LINE or char in BIDI_CONTROLS for char in text)


def _owner_errors(owner, typed_email, field="owner"):
    if owner is None:
        return [AccountError(field, "owner_unknown", email=typed_email)]
    if owner.is_staff:
        return [AccountError(field, "owner_is_staff", email=owner.email)]
    if owner.shop_id is not None:
        return [AccountError(field, "owner_has_shop", email=owner.email, slug=owner.shop.slug)]
    return []


def _raise_if(errors):
    if errors:
        raise AccountErrors(errors)


def password_hash_method():
    """The hash for a new password: scrypt, unless TESTING is on and ``PASSWORD_HASH_METHOD`` names a cheaper
    one. The suite makes hundreds of accounts, and scrypt is slow on purpose (about 0.2 s each on two cores);
    outside TESTING the setting is ignored, so a stray value in a deployment's configuration changes nothing.
    A hash names its own method, so checking a password never depends on this setting."""
    if has_app_context() and current_app.config.get("TESTING") and current_app.config.get("PASSWORD_HASH_METHOD"):
        return current_app.config["PASSWORD_HASH_METHOD"]
    return PASSWORD_HASH_METHOD


def _new_user(email, password, staff):
    user = User(email=normalise_email(email), is_staff=staff)
    user.set_password(password, password_hash_method())
    db.session.add(user)
    return user


def _new_shop(slug, name):
    shop = Shop(slug=normalise_slug(slug), name=name.strip())
    db.session.add(shop)
    db.session.flush()
    return shop


def create_user(email, password, staff=False):
    """A staff or owner account; raises AccountErrors (fields ``email``, ``password``)."""
    _raise_if(validate_user(email, password))
    user = _new_user(email, password, staff)
    audit.record("account.created", target=user.email, staff=staff)
    return user


def create_shop(slug, name, owner_email):
    """A shop owned by an existing owner account; raises AccountErrors (``slug``, ``name``, ``owner``)."""
    owner = user_by_email(owner_email)
    _raise_if(validate_shop(slug, name) + _owner_errors(owner, normalise_email(owner_email)))
    shop = _new_shop(slug, name)
    owner.shop_id = shop.id
    audit.record("shop.created", shop=shop, target=shop.slug, owner=owner.email)
    return shop


def create_shop_with_owner(slug, name, owner_email, owner_password):
    """The staff form: a shop and its new owner account, or neither.

    Raises AccountErrors whose fields are the form's: ``slug``, ``name``, ``owner_email``, ``owner_password``.
    """
    _raise_if(validate_shop(slug, name)
              + validate_user(owner_email, owner_password, "owner_email", "owner_password"))
    shop = _new_shop(slug, name)
    owner = _new_user(owner_email, owner_password, staff=False)
    owner.shop_id = shop.id
    return shop


def set_password(user, password):
    """Change a password under the same rules as a new account; raises AccountErrors (``password``)."""
    _raise_if(password_errors(password, email=user.email))
    user.set_password(password, password_hash_method())
    audit.record("account.password_changed", shop=user.shop_id, target=user.email)


def new_api_token(email):
    """The CLI's token for a staff user: a new ApiToken named "cli"; the user's earlier "cli" tokens (and the
    token of the old single-token column) stop working. Raises AccountErrors (``email``)."""
    user = user_by_email(email)
    if user is None:
        raise AccountErrors([AccountError("email", "user_unknown", email=email.strip())])
    for row in db.session.scalars(db.select(ApiToken).filter_by(user_id=user.id, name="cli", revoked_at=None)):
        revoke_api_token(row)
    user.api_token_digest = None
    _row, token = create_api_token(user, "cli")
    return token


def validate_token_name(name, field="name"):
    name = (name or "").strip()
    if not name:
        return [AccountError(field, "token_name_missing")]
    if len(name) > MAX_TOKEN_NAME:
        return [AccountError(field, "token_name_too_long", max=MAX_TOKEN_NAME)]
    if any(unicodedata.category(char) == "Cc" for char in name):
        return [AccountError(field, "token_name_invalid")]
    return []


def create_api_token(user, name, field="name"):
    """(row, token): a named API token for an active staff user. The token itself is returned once and never
    stored (only its digest and last 4 characters). Raises AccountErrors (``field``, or ``email``)."""
    if not user.is_staff:
        raise AccountErrors([AccountError("email", "user_not_staff", email=user.email)])
    if not user.is_active:
        raise AccountErrors([AccountError("email", "user_deactivated", email=user.email)])
    _raise_if(validate_token_name(name, field))
    token = crypto.new_token(32)
    row = ApiToken(user_id=user.id, name=name.strip(), digest=crypto.token_digest(token), tail=token[-4:])
    db.session.add(row)
    db.session.flush()
    audit.record("token.created", target=row.name, user=user.email, id=row.id)
    return row, token


def revoke_api_token(row):
    """Stop one token working; revoking a revoked one changes nothing. Returns whether it changed."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    audit.record("token.revoked", target=row.name, user=row.user.email, id=row.id)
    return True


def user_for_api_token(token):
    """The active staff user an API token (``Authorization: Bearer``) belongs to, or None. Named tokens
    (``ApiToken``) and the old single-token column both count; a revoked token never does.

    The token's last use is written and committed here, whatever the request does next (a read-only call
    such as the shops list commits nothing of its own): at most once per ``TOKEN_USE_RESOLUTION`` seconds,
    by one conditional UPDATE, so concurrent calls write it once and most calls write nothing."""
    if not token:
        return None
    digest = crypto.token_digest(token)
    row = db.session.scalar(db.select(ApiToken).filter_by(digest=digest, revoked_at=None))
    if row is not None:
        user = row.user
        now = utcnow()
        stale = now - timedelta(seconds=TOKEN_USE_RESOLUTION)
        if row.last_used_at is None or row.last_used_at <= stale:
            db.session.execute(update(ApiToken).where(
                ApiToken.id == row.id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale))
                .values(last_used_at=now).execution_options(synchronize_session=False))
            db.session.commit()
    else:
        user = db.session.scalar(db.select(User).filter_by(api_token_digest=digest))
    return user if user is not None and user.is_staff and user.is_active else None


def deactivate(user, by):
    """Staff close an account: it cannot sign in, and every session and remember cookie of it ends now.
    Raises AccountErrors (``user``) for one's own account. Returns whether anything changed."""
    if by is not None and user.id == by.id:
        raise AccountErrors([AccountError("user", "deactivate_self")])
    if user.deactivated_at is not None:
        return False
    now = utcnow()
    user.deactivated_at = now
    user.session_version = (user.session_version or 0) + 1
    # What the account handed out ends with it: its pending invitations (a closed account must not let someone
    # in), and its API tokens (reactivating it must not bring old tokens back).
    db.session.execute(update(Invitation).where(
        Invitation.invited_by_id == user.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=now).execution_options(synchronize_session="fetch"))
    db.session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=now).execution_options(synchronize_session="fetch"))
    user.api_token_digest = None
    audit.record("account.deactivated", shop=user.shop_id, actor=by, target=user.email)
    return True


def reactivate(user, by):
    """The account may sign in again (with its old password); old sessions stay ended."""
    if user.deactivated_at is None:
        return False
    user.deactivated_at = None
    audit.record("account.reactivated", shop=user.shop_id, actor=by, target=user.email)
    return True
