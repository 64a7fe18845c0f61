"""The interface the outgoing core sends through; the app factory registers a channel's implementation.

LINE's is line/sender.py. A sender talks to one channel's API and reduces its answers to what the outbox
decides on, so the outbox (reply first, then push with a retry key; retry, dead letter, unknown) is written
once for every channel:

- ``reply(channel, token, messages)`` and ``push(channel, contact, messages, retry_key)`` send, and return the
  channel's ids of the messages sent (a list, possibly empty);
- both raise ``failure`` (an exception class) with ``code``, ``status``, ``detail`` and ``retry_after``
  (seconds the channel asked us to wait, or None);
- ``token_refused(problem)``: a reply token the channel refused, so nothing went out (push instead);
- ``maybe_arrived(problem)``: no answer was seen (a timeout, a server error): the message may have arrived;
- ``retryable(problem)``: worth another try later (else the message is failed for good).
"""
from typing import Protocol

_current = []


class Sender(Protocol):
    failure: type

    def reply(self, channel, token, messages) -> list: ...

    def push(self, channel, contact, messages, retry_key) -> list: ...

    def token_refused(self, problem) -> bool: ...

    def maybe_arrived(self, problem) -> bool: ...

    def retryable(self, problem) -> bool: ...


def use(sender: Sender) -> Sender:
    """The sender every outbox row goes through from now on (the app factory registers LINE's)."""
    _current[:] = [sender]
    return sender


def current() -> Sender:
    if not _current:
        raise RuntimeError("no sender registered (wizard.create_app registers LINE's)")
    return _current[0]
