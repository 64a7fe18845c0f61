"""Connecting a shop to its LINE channel: checking what the owner typed, proving it against LINE, saving it,
and forgetting the step results checked before.

The wizard's credentials step and ``flask line connect`` both come here, so the two can never disagree on what
counts as a valid Channel ID and secret, or on what is saved. This is the wizard's business, not LINE's:
``wizard/line/`` only talks to LINE.
"""
import re

from flask_babel import lazy_gettext as _l

from .. import audit, crypto
from ..extensions import db
from ..line import quarantine
from ..line.client import client_with
from ..models import Channel, StepState, utcnow
from .text import clean

CHANNEL_ID = re.compile(r"^\d{6,15}$")
CHANNEL_SECRET = re.compile(r"^[0-9a-f]{32}$")
# A long-lived channel access token: about 170 characters of base64 (letters, digits, + / =).
ACCESS_TOKEN = re.compile(r"^[A-Za-z0-9+/=]{100,}$")

FORMAT_MESSAGES = {
    "channel_id_missing": _l("Enter the Channel ID."),
    "channel_id_format": _l("The Channel ID is made of digits only (about 10), e.g. 1234567890."),
    "channel_secret_missing": _l("Enter the Channel secret."),
    "channel_secret_format": _l("The Channel secret has 32 letters and digits (you entered %(count)d). Copy it "
                                "again with the copy button next to it in LINE."),
    "channel_secret_is_token": _l("This is a channel access token, not the Channel secret. The Channel secret is "
                                  "shorter (32 letters and digits) and is shown under the Channel ID."),
    "channel_id_swapped": _l("This looks like the Channel secret: the two values seem swapped. The Channel ID "
                             "is the number of about 10 digits."),
    "channel_secret_swapped": _l("This looks like the Channel ID: the two values seem swapped. The Channel "
                                 "secret has 32 letters and digits."),
    "channel_taken": _l("This channel is already connected to another shop in the CRM. Ask your onboarding "
                        "contact for help."),
}


class FormatProblem(ValueError):
    """What was typed cannot be a Channel ID or secret. ``errors`` maps each wrong field to its code (every
    field is checked, so one submit shows every mistake)."""

    def __init__(self, errors, counts=None):
        super().__init__(", ".join(errors.values()))
        self.errors = dict(errors)
        self.counts = counts or {}

    def message_for(self, field):
        return str(FORMAT_MESSAGES[self.errors[field]] % {"count": self.counts.get(field, 0)})

    @property
    def codes(self):
        return list(self.errors.values())


def clean_credentials(channel_id, channel_secret):
    """Return the cleaned pair or raise FormatProblem naming every field that is wrong."""
    channel_id, raw_secret = clean(channel_id), clean(channel_secret)
    secret = raw_secret.lower()
    if CHANNEL_SECRET.match(channel_id.lower()) and CHANNEL_ID.match(secret):
        raise FormatProblem({"channel_id": "channel_id_swapped", "channel_secret": "channel_secret_swapped"})
    errors = {}
    if not channel_id:
        errors["channel_id"] = "channel_id_missing"
    elif not CHANNEL_ID.match(channel_id):
        errors["channel_id"] = "channel_id_format"
    if not secret:
        errors["channel_secret"] = "channel_secret_missing"
    elif ACCESS_TOKEN.match(raw_secret):
        errors["channel_secret"] = "channel_secret_is_token"
    elif not CHANNEL_SECRET.match(secret):
        errors["channel_secret"] = "channel_secret_format"
    if errors:
        raise FormatProblem(errors, {"channel_secret": len(secret)})
    return channel_id, secret


def connect(shop, channel_id, channel_secret):
    """Prove the credentials against LINE, then save them. Raises FormatProblem or LineProblem; saves nothing
    unless LINE accepted them. Reconnecting the same Channel ID keeps its webhook URL, contacts and history."""
    channel_id, channel_secret = clean_credentials(channel_id, channel_secret)
    taken = db.session.scalar(db.select(Channel).where(
        Channel.channel_id == channel_id, Channel.disconnected_at.is_(None), Channel.shop_id != shop.id))
    if taken is not None:
        raise FormatProblem({"channel_id": "channel_taken"})
    info = client_with(channel_id, channel_secret).verify_credentials()

    channel = db.session.scalar(db.select(Channel).where(
        Channel.shop_id == shop.id, Channel.channel_id == channel_id).order_by(Channel.id.desc()))
    for other in shop.channels:
        if other is not channel and other.disconnected_at is None:
            other.disconnected_at = utcnow()
    if channel is None:
        channel = Channel(shop_id=shop.id, channel_id=channel_id, webhook_token=crypto.new_token(),
                          check_results={})
        db.session.add(channel)
    channel.secret = channel_secret
    channel.disconnected_at = None
    channel.connected_at = utcnow()
    # A test LINE ran with the old credentials says nothing about the new ones (the rate history stays).
    channel.check_results = {k: v for k, v in (channel.check_results or {}).items() if k != "webhook_test"}
    channel.remember_bot_info(info)
    forget_results(shop)
    # Deliveries refused while another secret was saved: those LINE signed with this one are stored now, in
    # this transaction, the rest deleted. Callers tell the owner ``channel.released.welcomed`` (a count).
    channel.released = quarantine.release(channel, channel_secret)
    db.session.expire(shop, ["channel"])
    audit.record("credentials.saved", shop=shop, target=channel_id, basic_id=channel.basic_id)
    return channel


def disconnect(shop):
    """The wizard's reset: forget the saved connection but keep the channel's contacts and history."""
    if shop.channel is not None:
        audit.record("credentials.removed", shop=shop, target=shop.channel.channel_id)
        shop.channel.disconnected_at = utcnow()
    forget_results(shop)
    db.session.expire(shop, ["channel", "step_states"])


def forget_results(shop, *keys):
    """Forget cached step results (all, or ``keys``) so the next evaluation asks LINE again: whatever was
    checked before a change (by a page, the API or the CLI) is out of date."""
    query = db.delete(StepState).where(StepState.shop_id == shop.id)
    if keys:
        query = query.where(StepState.key.in_(keys))
    db.session.execute(query)
    db.session.flush()
