"""One way to take a row of work, hold it, retry it later and finish it: claim, lease, backoff, finish.

Events (line/worker.py), outgoing messages (outgoing/outbox.py) and customers' media (customers/content.py)
are each a table of work that several consumers on several machines may reach at once; the next one (send
plans) is too. Each row is taken with one conditional UPDATE only one consumer can win (``claim``), held for
a lease (a consumer that dies mid-work loses it when the lease runs out, and the row is due again), and
finished only while the claim still holds (``finish``): a consumer whose lease ran out while another took
the row over writes nothing, so the work counts once. Retries wait by the kind of work's ``Backoff`` (tables
in config.py ``BACKOFF``).

Two ways to hold a row: tables with ``claimed_by`` / ``claimed_until`` name the holder (``claim`` /
``finish``); a table without them (message content) holds it by pushing ``next_attempt_at`` a lease ahead,
and that time is the claim (``claim_until`` / ``finish_until``).
"""
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from .config import BACKOFF
from .extensions import db
from .models import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Seconds before each further attempt; after ``attempts`` tries the work is given up."""
    delays: tuple

    @property
    def attempts(self):
        return len(self.delays) + 1

    def exhausted(self, attempts):
        return attempts >= self.attempts

    def delay(self, attempts, asked=None):
        """Seconds to wait after the ``attempts``-th try failed (the other side's Retry-After when longer)."""
        return max(self.delays[min(attempts, len(self.delays)) - 1], asked or 0)


def backoff(kind) -> Backoff:
    return Backoff(tuple(BACKOFF[kind]))


def claim(model, where, lease: timedelta, **values):
    """Claim every row of ``model`` matching ``where`` (the caller's "due and free" condition, checked again
    by the UPDATE itself) for ``lease``, counting an attempt; commits. Returns (claim id, rows taken)."""
    holder = uuid.uuid4().hex
    taken = db.session.execute(update(model).where(where).values(
        claimed_by=holder, claimed_until=utcnow() + lease, attempts=model.attempts + 1, **values,
    ).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return holder, taken


def finish(model, row_id, holder, **values) -> bool:
    """Write a claimed row's outcome and release the claim, in the current transaction with whatever the
    work wrote, and commit, but only while the claim (``claimed_by``) is still ours. If it ran out and
    another worker holds the row, everything since our claim is rolled back: its run counts, ours not."""
    done = db.session.execute(update(model).where(model.id == row_id, model.claimed_by == holder).values(
        claimed_by=None, claimed_until=None, **values).execution_options(synchronize_session=False))
    return _committed_if_ours(model, row_id, done.rowcount)


def claim_until(model, row_id, where, lease: timedelta):
    """Claim one row of a table without a holder column by pushing its ``next_attempt_at`` a lease ahead,
    counting an attempt; commits. Returns the lease's end (the claim), or None when it was not free."""
    until = utcnow() + lease
    taken = db.session.execute(update(model).where(model.id == row_id, where).values(
        next_attempt_at=until, attempts=model.attempts + 1).execution_options(synchronize_session=False))
    db.session.commit()
    return until if taken.rowcount == 1 else None


def finish_until(model, row_id, until, **values) -> bool:
    """``finish`` for ``claim_until``: only while ``next_attempt_at`` is still the lease we set."""
    done = db.session.execute(update(model).where(model.id == row_id, model.next_attempt_at == until)
                              .values(**values).execution_options(synchronize_session=False))
    return _committed_if_ours(model, row_id, done.rowcount)


def _committed_if_ours(model, row_id, rowcount):
    if rowcount != 1:
        db.session.rollback()
        log.warning("%s %s: claim lost before it finished; left to the worker that holds it",
                    model.__tablename__, row_id)
        return False
    db.session.commit()
    return True
