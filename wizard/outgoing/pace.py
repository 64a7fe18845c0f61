"""LINE's rate limits, kept by every consumer together: one row per channel and kind of call in the database.

LINE counts requests per channel (multicast 200 a second; broadcast and narrowcast 60 an hour), however
many consumers on however many machines send them. A limit kept in one process's memory would let two
consumers send twice as fast, so the next free moment of each (channel, kind) is a row of ``outgoing_pace``
that every consumer moves forward with a conditional UPDATE (the value it read must still be there): only
one consumer takes each slot, on SQLite and PostgreSQL alike, and nothing but a row is needed.

A slot is taken only when it comes soon enough for the caller to wait for it (``reserve``'s ``longest``);
a caller told to wait longer gives its work back and comes again then, holding no thread meanwhile (a
broadcast waits a minute for its slot). LINE's own "slow down" (429 with Retry-After) moves the channel's
next free moment for everyone (``defer``). Times are the machines' wall clocks (kept in step by NTP).
"""
import time
from typing import NamedTuple

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from ..extensions import db
from ..models import OutgoingPace
from ..rows import insert_ignoring

KINDS = ("multicast", "broadcast", "narrowcast")
# A slot is retried this often when other consumers keep taking it first (each retry reads it again).
ATTEMPTS = 50


def interval(kind) -> float:
    """Seconds between two calls of ``kind`` on one channel (config.py: LINE_MULTICAST_PER_SECOND,
    LINE_BROADCAST_PER_HOUR, which narrowcast shares)."""
    config = current_app.config
    if kind == "multicast":
        return 1.0 / float(config["LINE_MULTICAST_PER_SECOND"])
    if kind in ("broadcast", "narrowcast"):
        return 3600.0 / float(config["LINE_BROADCAST_PER_HOUR"])
    raise ValueError(f"no rate limit known for {kind!r}")


def _key(channel_id, kind):
    return f"{kind}:{channel_id}"


def _now_us():
    return int(time.time() * 1_000_000)


class Slot(NamedTuple):
    """``taken``: the slot is the caller's, who waits ``wait`` seconds and then calls; otherwise the next free
    slot is ``wait`` seconds away and nothing was taken. ``at_us``: the slot's time (µs since the epoch)."""
    taken: bool
    wait: float
    at_us: int


def reserve(channel_id, kind, longest) -> Slot:
    """Take the channel's next slot for one call of ``kind`` if it comes within ``longest`` seconds; commits."""
    key, step = _key(channel_id, kind), int(interval(kind) * 1_000_000)
    insert_ignoring(OutgoingPace, [{"key": key, "free_at_us": 0}], ["key"])
    db.session.commit()
    for _ in range(ATTEMPTS):
        free_at = db.session.scalar(select(OutgoingPace.free_at_us).where(OutgoingPace.key == key))
        now = _now_us()
        start = max(free_at, now)
        wait = (start - now) / 1_000_000
        if wait > longest:
            db.session.commit()  # ends the read's transaction: nothing is held while the caller waits
            return Slot(False, wait, start)
        try:
            taken = db.session.execute(update(OutgoingPace).where(
                OutgoingPace.key == key, OutgoingPace.free_at_us == free_at).values(free_at_us=start + step)
                .execution_options(synchronize_session=False)).rowcount
            db.session.commit()
        except OperationalError:
            # SQLite: another consumer wrote since this transaction read, so it may not write now ("database
            # is locked" at once, whatever the busy timeout). Nothing was taken: read again, like a lost race.
            db.session.rollback()
            taken = 0
        if taken == 1:
            return Slot(True, wait, start)
    return Slot(False, interval(kind), _now_us() + step)  # crowded out every time: come back after one interval


def defer(channel_id, kind, seconds) -> None:
    """LINE asked us to wait ``seconds`` (Retry-After): no consumer calls ``kind`` on the channel before then.
    In the caller's transaction."""
    key, until = _key(channel_id, kind), _now_us() + int(float(seconds) * 1_000_000)
    insert_ignoring(OutgoingPace, [{"key": key, "free_at_us": 0}], ["key"])
    db.session.execute(update(OutgoingPace).where(OutgoingPace.key == key, OutgoingPace.free_at_us < until)
                       .values(free_at_us=until).execution_options(synchronize_session=False))
