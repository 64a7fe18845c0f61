"""The worker's event-handler registry: which handler runs a stored webhook event of each ``type``.

line/ stores what LINE sent and runs it through whatever is registered here; what an event *means* (a follow
makes a contact and maybe sends the form, a message joins a conversation, an unfollow blocks) is the CRM's,
registered from customers/rules.py when the app starts. Every type without a handler is kept and left alone.

The worker calls ``handle(event, effects)`` for one claimed ``WebhookEvent`` at a time and commits whatever
the handler wrote together with the event's new status (worker.py), so a handler never commits and never
calls LINE. What needs the queue is left in ``effects`` (``effects.later(queue.send_message, outbox_id)``),
queued once the commit is done.

- A signed event a handler cannot act on (a timestamp no calendar holds, ``message`` not an object, a reply
  token that is not a string) raises ``Unprocessable``: it is marked so with the reason and never retried.
- An event of a channel the shop disconnected before it happened is stored only: no handler speaks for the
  shop until it connects the channel again.
"""
import logging

from ..extensions import db
from ..models import Channel
from . import store

log = logging.getLogger(__name__)

HANDLERS = {}


class Unprocessable(ValueError):
    """A signed event that is not something we can act on; the message is the reason staff see."""


class Effects:
    """What a handler leaves for after its commit: jobs to queue (wizard/queue.py), each with its arguments."""

    __slots__ = ("jobs",)

    def __init__(self):
        self.jobs = []

    def later(self, job, *args):
        self.jobs.append((job, args))

    def __iter__(self):
        return iter(self.jobs)


def handles(kind):
    """Register the handler for one event ``type``; the last registration wins."""
    def register(func):
        HANDLERS[kind] = func
        return func
    return register


def unregister(kind, handler=None):
    """Remove the handler of ``kind`` (only if it is ``handler``, when given)."""
    if handler is None or HANDLERS.get(kind) is handler:
        HANDLERS.pop(kind, None)


def handle(event, effects=None):
    """Run the event's handler, if its type has one. Returns a note for the event record, or None."""
    effects = effects if effects is not None else Effects()
    handler = HANDLERS.get(event.type)
    if handler is None:
        return None  # stored and marked processed: unknown types are kept, not dropped
    at = event_time(event)
    channel = db.session.get(Channel, event.channel_id)
    if channel.disconnected_at is not None and channel.disconnected_at < at:
        # The shop reset this connection: keep what LINE sent, but speak for the shop no more (no contact
        # made, no form sent) until it connects the channel again.
        return "channel disconnected by the shop: stored only"
    return handler(event, effects)


def event_time(event):
    """The event's LINE time, or ``Unprocessable`` when no calendar holds it."""
    try:
        return store.event_time(event.timestamp)
    except (OverflowError, OSError, ValueError):
        raise Unprocessable(f"timestamp {event.timestamp} is out of range") from None


def one_to_one_user(event):
    """The LINE user of a one-to-one event (``source.type == "user"``), else None: a message in a group or
    room comes from someone who may not be the shop's friend."""
    if event.source_type == "user" and event.source_user_id:
        return event.source_user_id
    return None


_welcome = []


def welcome_rule(func):
    """Register the CRM's answer to "would a follow by this contact be answered now?" (the last one wins)."""
    _welcome[:] = [func]
    return func


def welcomes(contact) -> bool:
    """Would a follow by ``contact`` be answered now (the registered rule; yes when none is)? The quarantine
    asks, to tell an owner how many released follows get an answer."""
    return not _welcome or bool(_welcome[0](contact))
