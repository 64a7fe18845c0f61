"""What an outgoing message is for, and how its text is made: one registration per purpose.

The outbox (outbox.py) knows no purpose: it asks the row's ``Purpose`` whether the message may still go
(``refuse``), what to send (``render``), what to keep of it (``kept``) and what else its sending means
(``sent``). Adding a kind of message (a send plan's broadcast, a greeting) is one ``register`` call beside the
code that decides to send it; queueing one is ``outbox.add``.
"""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Purpose:
    """``render(row, channel, contact)`` returns the messages (dicts in LINE's message shape; a channel's
    sender translates when it must). Without ``render`` the messages are written with the row (a reply
    typed by staff). ``fresh`` renders on every attempt and keeps only ``kept(message)`` of each, for text
    that must exist nowhere but in the customer's chat (a personal link). ``refuse(row, channel)`` gives the
    reason a queued message must not go out any more (the row is then failed with it), or None. ``sent(row,
    contact, now)`` records what the message's arrival means (in the transaction that records it sent)."""
    name: str
    render: Callable | None = None
    fresh: bool = False
    kept: Callable = staticmethod(lambda message: message)
    refuse: Callable | None = None
    sent: Callable | None = None


PURPOSES: dict[str, Purpose] = {}


def register(purpose: Purpose) -> Purpose:
    """Register (or replace) a purpose by its name."""
    PURPOSES[purpose.name] = purpose
    return purpose


def unregister(name: str) -> None:
    PURPOSES.pop(name, None)


def of(row) -> Purpose:
    """The purpose of an outbox row; a row nobody registered a purpose for is refused loudly."""
    try:
        return PURPOSES[row.purpose]
    except KeyError:
        raise ValueError(f"unknown outbox purpose {row.purpose!r}") from None
