"""Connecting a shop to its LINE channel: checking what the owner typed, proving it against LINE, saving it.

The wizard's credentials step and ``flask line connect`` both come here, so the two can never disagree on what
counts as a valid Channel ID and secret, or on what is saved.
"""
import re
import unicodedata

from flask import current_app
from flask_babel import lazy_gettext as _l

from .. import crypto
from ..extensions import db
from ..models import Channel, StepState, utcnow
from .client import client_for, client_with
from .problems import LineProblem

CHANNEL_ID = re.compile(r"^\d{6,15}$")
CHANNEL_SECRET = re.compile(r"^[0-9a-f]{32}$")

FORMAT_MESSAGES = {
    "channel_id_missing": _l("Enter the Channel ID."),
    "channel_id_format": _l("The Channel ID is made of digits only (about 10), e.g. 1234567890."),
    "channel_secret_missing": _l("Enter the Channel secret."),
    "channel_secret_format": _l("The Channel secret is 32 characters of 0–9 and a–f. Copy it again with the "
                                "copy button next to it in LINE."),
    "channel_taken": _l("This channel is already connected to another shop in the CRM. Ask your onboarding "
                        "contact for help."),
}


class FormatProblem(ValueError):
    """What the owner typed cannot be a Channel ID or secret; ``field`` says which input to point at."""

    def __init__(self, field, code):
        super().__init__(code)
        self.field = field
        self.code = code

    @property
    def message(self):
        return str(FORMAT_MESSAGES[self.code])


def _clean(value):
    """Undo what copying on a phone does: full-width characters, spaces, zero-width marks, line breaks."""
    value = unicodedata.normalize("NFKC", value or "")
    return "".join(ch for ch in value if not ch.isspace() and unicodedata.category(ch) != "Cf")


def clean_credentials(channel_id, channel_secret):
    """Return the cleaned pair or raise FormatProblem for the first field that is wrong."""
    channel_id = _clean(channel_id)
    channel_secret = _clean(channel_secret).lower()
    if not channel_id:
        raise FormatProblem("channel_id", "channel_id_missing")
    if not CHANNEL_ID.match(channel_id):
        raise FormatProblem("channel_id", "channel_id_format")
    if not channel_secret:
        raise FormatProblem("channel_secret", "channel_secret_missing")
    if not CHANNEL_SECRET.match(channel_secret):
        raise FormatProblem("channel_secret", "channel_secret_format")
    return channel_id, channel_secret


def connect(shop, channel_id, channel_secret):
    """Prove the credentials against LINE, then save them. Raises FormatProblem or LineProblem; saves nothing
    unless LINE accepted them. Reconnecting the same Channel ID keeps its webhook URL, contacts and history."""
    channel_id, channel_secret = clean_credentials(channel_id, channel_secret)
    taken = db.session.scalar(db.select(Channel).where(
        Channel.channel_id == channel_id, Channel.disconnected_at.is_(None), Channel.shop_id != shop.id))
    if taken is not None:
        raise FormatProblem("channel_id", "channel_taken")
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
    remember_bot_info(channel, info)
    # Whatever was checked before this connection (by a page, the API or the CLI) is out of date now.
    db.session.execute(db.delete(StepState).where(StepState.shop_id == shop.id))
    db.session.flush()
    db.session.expire(shop, ["channel"])
    return channel


def remember_bot_info(channel, info):
    channel.bot_user_id = info.get("userId")
    channel.basic_id = info.get("basicId")
    channel.display_name = info.get("displayName")
    channel.picture_url = info.get("pictureUrl")
    channel.chat_mode = info.get("chatMode")
    channel.mark_as_read_mode = info.get("markAsReadMode")


def disconnect(shop):
    """The wizard's reset: forget the saved connection but keep the channel's contacts and history."""
    if shop.channel is not None:
        shop.channel.disconnected_at = utcnow()
    db.session.execute(db.delete(StepState).where(StepState.shop_id == shop.id))
    db.session.flush()
    db.session.expire(shop, ["channel", "step_states"])


class EndpointTaken(Exception):
    """LINE holds another tool's webhook URL; replacing it needs the owner's explicit consent."""

    def __init__(self, current):
        super().__init__(current)
        self.current = current


def set_endpoint(channel, replace=False):
    """Put our webhook URL into LINE. LINE keeps one URL per channel, so another tool's URL is only replaced
    with ``replace``; raises EndpointTaken or LineProblem."""
    client = client_for(channel)
    ours = webhook_url(channel)
    try:
        current = client.get_webhook_endpoint().get("endpoint") or ""
    except LineProblem as problem:
        if problem.code != "endpoint_not_set":
            raise
        current = ""
    if current and current != ours and not replace:
        raise EndpointTaken(current)
    client.set_webhook_endpoint(ours)
    return ours


def webhook_url(channel):
    """The URL the owner pastes into LINE. Built from PUBLIC_BASE_URL, never from the request's Host header."""
    return f"{current_app.config['PUBLIC_BASE_URL']}/line/webhook/{channel.webhook_token}"
