"""Our webhook URL and LINE's webhook endpoint setting for a channel.

LINE keeps one URL per channel, so ``set_endpoint`` never silently replaces another tool's URL; an incomplete
or mistyped copy of ours is recognised as ours (replacing it stops nobody).
"""
from flask import current_app

from .client import client_for
from .problems import LineProblem

WEBHOOK_PATH = "/line/webhook/"


def webhook_url(channel):
    """The URL the owner pastes into LINE. Built from PUBLIC_BASE_URL, never from the request's Host header."""
    return f"{current_app.config['PUBLIC_BASE_URL']}{WEBHOOK_PATH}{channel.webhook_token}"


def is_damaged_copy(endpoint, ours):
    """True when ``endpoint`` is our URL cut short, or with something added or changed at its end (a space,
    a slash, a missing or extra character): what a copy from a phone gives. Another shop's URL on this CRM
    has a different token of full length and is not a damaged copy."""
    endpoint = (endpoint or "").strip()
    if not endpoint or endpoint == ours:
        return False
    if ours.startswith(endpoint):
        return True  # cut short
    base = ours[: ours.index(WEBHOOK_PATH) + len(WEBHOOK_PATH)]
    if not endpoint.lower().startswith(base.lower()):
        return False
    token, theirs = ours[len(base):], endpoint[len(base):]
    shared = 0
    while shared < min(len(token), len(theirs)) and token[shared] == theirs[shared]:
        shared += 1
    # Most of our token is there, the difference is at its end.
    return shared >= len(token) // 2


class EndpointTaken(Exception):
    """LINE holds another tool's webhook URL; replacing it needs the owner's explicit consent."""

    def __init__(self, current):
        super().__init__(current)
        self.current = current


def set_endpoint(channel, replace=False):
    """Put our webhook URL into LINE. Another tool's URL is only replaced with ``replace``; a damaged copy of
    ours always is. Raises EndpointTaken or LineProblem."""
    client = client_for(channel)
    ours = webhook_url(channel)
    try:
        current = client.get_webhook_endpoint().get("endpoint") or ""
    except LineProblem as problem:
        if problem.code != "endpoint_not_set":
            raise
        current = ""
    if current and current != ours and not replace and not is_damaged_copy(current, ours):
        raise EndpointTaken(current)
    client.set_webhook_endpoint(ours)
    return ours
