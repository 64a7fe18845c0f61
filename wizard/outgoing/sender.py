"""The interface the outgoing core sends through; the app factory registers a channel's implementation.

LINE's is line/sender.py. A sender talks to one channel's API and reduces its answers to what the outbox
decides on, so the outbox (reply first, then push with a retry key; retry, dead letter, unknown) is written
once for every channel:

- ``reply(channel, token, messages)`` and ``push(channel, contact, messages, retry_key)`` send, and return the
  channel's ids of the messages sent (a list, possibly empty);
- ``multicast(channel, user_ids, messages, retry_key, unit)`` (at most 500 users) and ``broadcast(channel,
  messages, retry_key, unit)`` (every friend) send to many and return the channel's request ID; a retry key the
  channel already accepted counts as sent and gives the first request's ID, so a repeat never sends twice;
  ``unit`` names the send for ``statistics``;
- ``validate(channel, kind, messages)`` asks whether the channel would send the messages by ``kind`` (reply,
  push, multicast, narrowcast, broadcast): ``[]`` or its details ``[{"property", "message"}]``;
- ``quota(channel)``: this month's ``{"limit": int | None (none), "used": int}``;
- ``reach(channel)``: how many friends a broadcast reaches, as the channel last counted them: ``{"friends":
  int | None, "day": date | None, "until": naive UTC datetime | None, "latest": bool}``: the count of ``day``
  (the channel's own calendar), which ended at ``until``; ``latest`` when it is the newest day the channel
  counts; ``friends`` None when the channel has no count ready;
- ``statistics(channel, unit, day_from, day_to)``: ``{"impressions", "unique_impressions", "clicks",
  "unique_clicks"}`` of the sends named ``unit`` (0 where the channel has no number yet);
- all raise ``failure`` (an exception class) with ``code``, ``status``, ``detail`` and ``retry_after``
  (seconds the channel asked us to wait, or None); for LINE the codes that matter to a bulk send are
  ``monthly_limit`` (the month's quota is used up: final), ``rate_limited`` (wait ``retry_after``) and
  ``messages_invalid`` (with ``details``);
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

    def multicast(self, channel, user_ids: list[str], messages: list[dict], retry_key: str,
                  unit: str | None = None) -> str: ...

    def broadcast(self, channel, messages: list[dict], retry_key: str, unit: str | None = None) -> str: ...

    def validate(self, channel, kind: str, messages: list[dict]) -> list[dict]: ...

    def quota(self, channel) -> dict: ...

    def reach(self, channel) -> dict: ...

    def statistics(self, channel, unit: str, day_from, day_to) -> dict: ...

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
