"""One message to many people (multicast in chunks of at most 500, or a broadcast to every friend), delivered
to each exactly once, whatever fails on the way.

A chunk's life (``OutgoingBatch.status``):

    queued ──claim──▶ sending ──LINE took it (or 409: it had)──▶ sent
      ▲ │                │──LINE refused it for good, or retries used up──▶ failed
      │ │                │──the month's messages are used up──▶ over_quota (and the run's chunks not yet asked)
      │ │                └──429/5xx/timeout──▶ queued again after Retry-After or the backoff (BACKOFF["batches"])
      │ └──the owner cancels before LINE was asked──▶ cancelled
      └──the worker died (sweeper: its lease ran out)

- ``add`` writes every chunk, with its recipients and its own retry key (LINE: ``X-Line-Retry-Key``), in
  the caller's transaction, before anything is sent. Every attempt at a chunk, by whichever worker, sends the
  same recipients with the same key: if LINE took an earlier try (the worker was killed, the database went
  away, the answer was lost), it answers 409 and the chunk is recorded sent; nobody gets it twice.
- ``called_at`` is committed right before LINE is asked and cleared when LINE's answer proves nothing went
  out (a 429, a refusal). While it is unset the key has not been used, so the owner may still take people
  out of the chunk (``Owner.recheck``: who blocked the account or withdrew consent since the run was
  written); once it is set the chunk's recipients never change again: whatever LINE took under the key is
  settled only by the same key with the same recipients. A chunk whose fate is open (it is set) is only
  ever settled by sending it again with its key, soon: LINE remembers a key 24 hours and the backoff ends
  well within that. So ``hold`` (pause) and ``cancel`` stop the chunks LINE has not been asked for, and let
  a chunk that may have arrived be settled.
- The month's limit (LINE's 429 "You have reached your monthly limit.") ends the chunk and every chunk of its
  run not yet asked as ``over_quota``: the owner is told who was left out.
- LINE's rate limits hold across every consumer (pace.py); a chunk whose slot is far away goes back to the
  queue until then instead of holding a thread.

Who a chunk belongs to (a send plan) is an ``Owner`` registered here by name; it hears each chunk's outcome
(``sent``, ``failed``, ``over_quota``, ``cancelled``) in the transaction that records it, and may take people
out of a multicast chunk right before LINE is first asked for it (``recheck``). Chunks are claimed
and finished through wizard/claims.py; the channel is reached through the registered sender (sender.py).
"""
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from flask import current_app
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from .. import claims, metrics, queue
from ..extensions import db
from ..models import Channel, Contact, OutgoingBatch, utcnow
from ..rows import insert_ignoring
from ..statuses import BatchStatus
from . import pace, sender as senders

log = logging.getLogger(__name__)

BACKOFF = claims.backoff("batches")
# LINE's most recipients of one multicast.
CHUNK = 500
# The longest a worker waits for its pace slot while holding a chunk; a later slot sends the chunk back to
# the queue until then.
LONGEST_PACE_WAIT = 2.0
# The sender's problem code for the month's message limit (LINE's 429 that no waiting cures).
MONTHLY_LIMIT = "monthly_limit"
FINAL = (BatchStatus.SENT, BatchStatus.FAILED, BatchStatus.OVER_QUOTA, BatchStatus.CANCELLED)
SENT, FAILED, OVER_QUOTA, CANCELLED = "sent", "failed", "over_quota", "cancelled"


@dataclass(frozen=True)
class Owner:
    """What chunks belong to (``name``, e.g. ``"send_plan"``): ``outcome(batch, outcome, count, now)`` records
    what a chunk's end means to it (``count``: its recipients; for a broadcast, the friends we know of).

    ``recheck(batch)`` (optional) is asked right before LINE is first asked for a multicast chunk, while its
    ``called_at`` is unset: the contact ids that must no longer get it (they blocked the account, withdrew
    consent); it records why in the caller's transaction, and ``send`` drops them from the chunk in the same
    commit. A chunk left with nobody ends sent without a call."""
    name: str
    outcome: Callable
    recheck: Callable | None = None


OWNERS: dict[str, Owner] = {}


def register(owner: Owner) -> Owner:
    OWNERS[owner.name] = owner
    return owner


def unregister(name: str) -> None:
    OWNERS.pop(name, None)


def add(channel_id, *, owner: str, owner_id: int, run_key: str, recipients, messages, unit=None,
        held=False) -> int:
    """Write one run's chunks in the caller's transaction; returns how many chunks the run has.

    ``recipients``: ``[(contact_id, line_user_id), ...]`` (each LINE user once: a repeat is dropped), cut into
    chunks of at most 500; None for a broadcast (one chunk, every friend). Each chunk gets its retry key now.
    A run already written (same owner, owner_id and run_key) is left as it is: adding it again writes nothing.
    ``held``: written paused (as ``hold`` leaves them), for an owner whose run is paused while it adds more.
    After the commit, ``wake(owner, owner_id, run_key)`` starts the sending."""
    if owner not in OWNERS:  # refused where it is written, not when its outcome has nowhere to go
        raise ValueError(f"unknown batch owner {owner!r}")
    if not messages or len(messages) > 5:
        raise ValueError("a batch carries one to five messages")
    if recipients is None:
        chunks, kind = [None], "broadcast"
    else:
        seen, unique = set(), []
        for contact_id, line_user_id in recipients:
            if line_user_id not in seen:
                seen.add(line_user_id)
                unique.append([int(contact_id), str(line_user_id)])
        chunks, kind = [unique[start:start + CHUNK] for start in range(0, len(unique), CHUNK)], "multicast"
    now = utcnow()
    insert_ignoring(OutgoingBatch, [{
        "channel_id": channel_id, "owner": owner, "owner_id": owner_id, "run_key": run_key, "seq": seq,
        "kind": kind, "recipients": chunk, "recipient_count": len(chunk or ()), "messages": messages,
        "unit": unit, "retry_key": str(uuid.uuid4()), "status": BatchStatus.QUEUED, "attempts": 0,
        "held_at": now if held else None, "created_at": now, "updated_at": now,
    } for seq, chunk in enumerate(chunks)], ["owner", "owner_id", "run_key", "seq"])
    return db.session.scalar(select(func.count(OutgoingBatch.id)).where(_run(owner, owner_id, run_key)))


def wake(owner, owner_id, run_key=None, app=None) -> bool:
    """After the caller's commit: queue the sending of the owner's chunks that are due (one task that queues
    one per chunk), or only those of ``run_key`` (an owner adding a run piece by piece wakes each piece, not
    again every chunk queued before). A lost ring loses nothing: the sweeper finds due chunks every minute."""
    args = (owner, owner_id) if run_key is None else (owner, owner_id, run_key)
    return queue.send_batches.try_now(*args, row=f"{owner} {owner_id}", app=app)


# ---- the owner's controls (in the caller's transaction) ----------------------------------------------------


def _run(owner, owner_id, run_key=None):
    b = OutgoingBatch
    where = and_(b.owner == owner, b.owner_id == owner_id)
    return and_(where, b.run_key == run_key) if run_key is not None else where


def _not_asked():
    """Chunks LINE has not been asked for (or that LINE's answer proved were not sent): the owner's to stop."""
    b = OutgoingBatch
    return and_(b.status == BatchStatus.QUEUED, b.called_at.is_(None))


def hold(owner, owner_id, run_key=None) -> int:
    """Pause: chunks not yet asked for wait until ``release``; returns how many of the owner's chunks are
    still to go. A chunk whose fate is open is still settled with its retry key (see the module)."""
    b = OutgoingBatch
    now = utcnow()
    db.session.execute(update(b).where(_run(owner, owner_id, run_key), b.status.not_in(FINAL), b.held_at.is_(None))
                       .values(held_at=now, updated_at=now).execution_options(synchronize_session=False))
    return _pending(owner, owner_id, run_key)


def release(owner, owner_id, run_key=None) -> int:
    """Resume what ``hold`` paused; returns how many chunks are to go. Call ``wake`` after the commit."""
    b = OutgoingBatch
    db.session.execute(update(b).where(_run(owner, owner_id, run_key), b.held_at.is_not(None)).values(
        held_at=None, updated_at=utcnow()).execution_options(synchronize_session=False))
    return _pending(owner, owner_id, run_key)


def cancel(owner, owner_id, run_key=None) -> int:
    """Cancel every chunk LINE has not been asked for (each reported ``cancelled`` to its owner); a chunk in
    LINE's hands right now, or whose fate is open, ends as LINE decides (sent, or cancelled if LINE proves it
    was not). Returns how many chunks were cancelled now."""
    b = OutgoingBatch
    now = utcnow()
    db.session.execute(update(b).where(_run(owner, owner_id, run_key), b.status.not_in(FINAL)).values(
        cancelled_at=now, updated_at=now).execution_options(synchronize_session=False))
    ids = list(db.session.scalars(select(b.id).where(_run(owner, owner_id, run_key), _not_asked())))
    return _end_unasked(ids, BatchStatus.CANCELLED, CANCELLED, "cancelled by its owner", now)


def _end_unasked(ids, status, outcome, error, now):
    """End chunks nobody holds and LINE was not asked for (each checked again by its UPDATE), telling owners."""
    b = OutgoingBatch
    ended = 0
    for batch_id in ids:
        done = db.session.execute(update(b).where(b.id == batch_id, _not_asked(), b.claimed_by.is_(None)).values(
            status=status, error=error, updated_at=now).execution_options(synchronize_session=False))
        if done.rowcount == 1:
            ended += 1
            _tell(db.session.get(b, batch_id, populate_existing=True), outcome, now)
    return ended


def _pending(owner, owner_id, run_key=None):
    b = OutgoingBatch
    return db.session.scalar(select(func.count(b.id)).where(_run(owner, owner_id, run_key), b.status.not_in(FINAL)))


def progress(owner, owner_id, run_key=None) -> dict:
    """Chunks and recipients by outcome, over every run of the owner (or one run). ``pending`` chunks are to
    go (``held`` of them paused; ``sending`` in a worker's hands now); a broadcast's recipients count 0."""
    b = OutgoingBatch
    rows = db.session.execute(select(b.status, func.count(b.id), func.coalesce(func.sum(b.recipient_count), 0),
                                     func.count(b.held_at))
                              .where(_run(owner, owner_id, run_key)).group_by(b.status)).all()
    chunks = {status: (number, people, held) for status, number, people, held in rows}
    result = {"chunks": sum(n for n, _, _ in chunks.values()), "recipients": sum(p for _, p, _ in chunks.values())}
    for status in (BatchStatus.SENT, BatchStatus.FAILED, BatchStatus.OVER_QUOTA, BatchStatus.CANCELLED):
        number, people, _ = chunks.get(status, (0, 0, 0))
        result[str(status)] = number
        result[f"recipients_{status}"] = people
    waiting = [chunks.get(s, (0, 0, 0)) for s in (BatchStatus.QUEUED, BatchStatus.SENDING)]
    result["pending"] = sum(n for n, _, _ in waiting)
    result["recipients_pending"] = sum(p for _, p, _ in waiting)
    result["held"] = sum(h for _, _, h in waiting)
    result["sending"] = chunks.get(BatchStatus.SENDING, (0, 0, 0))[0]
    return result


# ---- sending ----------------------------------------------------------------------------------------------


class Outcome:
    SENT, FAILED, OVER_QUOTA, CANCELLED = SENT, FAILED, OVER_QUOTA, CANCELLED
    RETRY, WAIT, SKIPPED = "retry", "wait", "skipped"


def _due(now):
    b = OutgoingBatch
    return and_(b.status == BatchStatus.QUEUED, or_(b.next_attempt_at.is_(None), b.next_attempt_at <= now),
                or_(b.called_at.is_not(None), and_(b.held_at.is_(None), b.cancelled_at.is_(None))))


def in_flight_seconds():
    """How long a sending chunk is reserved: a worker that has not finished by then is taken to be dead (the
    sweeper gives the chunk to another, with the same key). Never shorter than one send can take: the pace
    wait, a token and the call itself, each call up to LINE_TIMEOUT."""
    cfg = current_app.config
    return max(float(cfg["WORKER_LEASE_SECONDS"]), 2 * float(cfg["LINE_TIMEOUT"]) + LONGEST_PACE_WAIT + 5)


def send(batch_id):
    """One attempt at one chunk. Returns (outcome, seconds until it should be tried again, or None)."""
    now = utcnow()
    claim, taken = claims.claim(OutgoingBatch, and_(OutgoingBatch.id == batch_id, _due(now)),
                                timedelta(seconds=in_flight_seconds()), status=BatchStatus.SENDING, updated_at=now)
    if taken != 1:
        return Outcome.SKIPPED, None  # not due, held, finished, or another worker has it
    row = db.session.get(OutgoingBatch, batch_id, populate_existing=True)
    channel = db.session.get(Channel, row.channel_id)
    if channel.disconnected_at is not None and row.called_at is None:
        _settle(row, claim, BatchStatus.FAILED, FAILED, error="the shop disconnected this channel")
        return Outcome.FAILED, None
    taken, wait, _ = pace.reserve(channel.id, row.kind, LONGEST_PACE_WAIT)
    if not taken:  # the channel's next slot is far off: back to the queue until then, this try not counted
        claims.finish(OutgoingBatch, row.id, claim, status=BatchStatus.QUEUED, attempts=row.attempts - 1,
                      next_attempt_at=utcnow() + timedelta(seconds=wait), updated_at=utcnow())
        return Outcome.WAIT, wait
    if wait > 0:
        time.sleep(wait)
    opened = row.called_at  # an earlier try whose fate is open: whatever LINE says now, it may have arrived
    if opened is None and not _recheck(row, claim):
        return Outcome.SKIPPED, None  # the claim was lost meanwhile: nothing dropped, nothing sent
    if not row.recipients and row.kind == "multicast":  # everyone was dropped: nothing to ask LINE
        _settle(row, claim, BatchStatus.SENT, SENT, error="nobody left to send to")
        return Outcome.SENT, None
    if not _calling(row, claim):
        return _stopped(row, claim)
    sender = senders.current()
    try:
        if row.kind == "multicast":
            request_id = sender.multicast(channel, [user_id for _, user_id in row.recipients], row.messages,
                                          retry_key=row.retry_key, unit=row.unit)
        else:
            request_id = sender.broadcast(channel, row.messages, retry_key=row.retry_key, unit=row.unit)
    except sender.failure as problem:
        return _failed(sender, row, claim, problem, opened)
    if _settle(row, claim, BatchStatus.SENT, SENT, sent=True, request_id=(request_id or None) and str(request_id)[:64],
               error=None):
        return Outcome.SENT, None
    return Outcome.SKIPPED, None


def _recheck(row, claim):
    """Before the first call (``called_at`` unset, so the retry key is unused): drop from a multicast chunk
    those its owner says must not get it now (``Owner.recheck``), and commit that with the owner's record of
    why, only while the claim is ours and LINE has not been asked. False: the claim was lost (nothing kept)."""
    owner = OWNERS.get(row.owner)
    if row.kind != "multicast" or owner is None or owner.recheck is None:
        return True
    drop = {int(contact_id) for contact_id in owner.recheck(row) or ()}
    if not drop:
        db.session.commit()
        return True
    keep = [pair for pair in row.recipients if int(pair[0]) not in drop]
    b = OutgoingBatch
    done = db.session.execute(update(b).where(b.id == row.id, b.claimed_by == claim, b.called_at.is_(None)).values(
        recipients=keep, recipient_count=len(keep), updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if done != 1:
        db.session.rollback()
        return False
    db.session.commit()
    set_committed_value(row, "recipients", keep)
    set_committed_value(row, "recipient_count", len(keep))
    log.info("batch %s of %s %s: %s recipients dropped before the call", row.id, row.owner, row.owner_id,
             len(drop))
    return True


def _calling(row, claim):
    """Record (and commit) that LINE is about to be asked, unless the owner paused or cancelled the chunk
    since it was claimed (a chunk whose fate is open goes on: only its key settles it). After this commit
    the chunk is only ever sent again with its key."""
    b = OutgoingBatch
    now = utcnow()
    done = db.session.execute(update(b).where(
        b.id == row.id, b.claimed_by == claim,
        or_(b.called_at.is_not(None), and_(b.held_at.is_(None), b.cancelled_at.is_(None)))).values(
        called_at=now).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if done == 1:
        set_committed_value(row, "called_at", now)  # as written: nothing left for the session to flush
    return done == 1


def _stopped(row, claim):
    """The owner paused or cancelled the chunk between its claim and the call: nothing was sent."""
    db.session.refresh(row)
    if row.cancelled_at is not None:
        _settle(row, claim, BatchStatus.CANCELLED, CANCELLED, error="cancelled by its owner")
        return Outcome.CANCELLED, None
    claims.finish(OutgoingBatch, row.id, claim, status=BatchStatus.QUEUED, attempts=row.attempts - 1,
                  updated_at=utcnow())
    return Outcome.SKIPPED, None


def _failed(sender, row, claim, problem, opened=None):
    """LINE said no or could not be asked: over the month's quota, refused for good, or try again later.
    ``opened``: an earlier try's call time when its fate was open before this try."""
    error = f"{problem.code} (status {problem.status}): {problem.detail or ''}"[:2000]
    # No answer seen (a timeout, LINE's 5xx), now or before: it may have gone out, and only the key resends.
    called_at = row.called_at if sender.maybe_arrived(problem) else opened
    if problem.code == MONTHLY_LIMIT:
        now = utcnow()
        rest = list(db.session.scalars(select(OutgoingBatch.id).where(
            _run(row.owner, row.owner_id, row.run_key), OutgoingBatch.id != row.id, _not_asked())))
        _end_unasked(rest, BatchStatus.OVER_QUOTA, OVER_QUOTA, "the month's message limit was reached", now)
        _settle(row, claim, BatchStatus.OVER_QUOTA, OVER_QUOTA, error=error, called_at=None)
        log.warning("batch %s of %s %s: monthly limit; %s more chunks left out", row.id, row.owner, row.owner_id,
                    len(rest))
        return Outcome.OVER_QUOTA, None
    if not sender.retryable(problem):
        _settle(row, claim, BatchStatus.FAILED, FAILED, error=error, called_at=called_at)
        return Outcome.FAILED, None
    cancelled = db.session.scalar(select(OutgoingBatch.cancelled_at).where(OutgoingBatch.id == row.id))
    if called_at is None and cancelled is not None:  # LINE did not take it, and its owner cancelled it
        _settle(row, claim, BatchStatus.CANCELLED, CANCELLED, error="cancelled by its owner", called_at=None)
        return Outcome.CANCELLED, None
    if BACKOFF.exhausted(row.attempts):
        _settle(row, claim, BatchStatus.FAILED, FAILED, error=error, called_at=called_at)
        metrics.TASKS_DEAD.labels(task="send_batch").inc()
        log.warning("batch %s failed after %s attempts: %s", row.id, row.attempts, problem.code)
        return Outcome.FAILED, None
    delay = BACKOFF.delay(row.attempts, problem.retry_after)
    if problem.retry_after:
        pace.defer(row.channel_id, row.kind, problem.retry_after)  # every consumer waits, not just this chunk
    claims.finish(OutgoingBatch, row.id, claim, status=BatchStatus.QUEUED, error=error, called_at=called_at,
                  next_attempt_at=utcnow() + timedelta(seconds=delay), updated_at=utcnow())
    metrics.TASKS_RETRIED.labels(task="send_batch").inc()
    return Outcome.RETRY, delay


def _settle(row, claim, status, outcome, sent=False, **values):
    """A chunk's end, told to its owner in the same transaction, committed only while the claim is ours."""
    now = utcnow()
    _tell(row, outcome, now)
    return claims.finish(OutgoingBatch, row.id, claim, status=status, updated_at=now,
                         sent_at=now if sent else None, **values)


def _tell(row, outcome, now):
    owner = OWNERS.get(row.owner)
    if owner is None:
        log.warning("batch %s: no owner %r registered to hear it ended %s", row.id, row.owner, outcome)
        return
    count = row.recipient_count
    if row.kind == "broadcast":  # LINE does not say how many; the friends we know of (not blocked)
        count = db.session.scalar(select(func.count(Contact.id)).where(
            Contact.channel_id == row.channel_id, Contact.blocked_at.is_(None)))
    owner.outcome(row, outcome, count, now)


def send_due(limit=None):
    """Send every chunk that is due now, in this process (tests, ``worker --once``); returns how many."""
    count = 0
    for batch_id in due_ids(limit=limit):
        send(batch_id)
        count += 1
    return count


def due_ids(owner=None, owner_id=None, limit=None, run_key=None):
    query = select(OutgoingBatch.id).where(_due(utcnow())).order_by(OutgoingBatch.id)
    if owner is not None:
        query = query.where(_run(owner, owner_id, run_key))
    if limit:
        query = query.limit(limit)
    return list(db.session.scalars(query))


def recover_in_flight():
    """Chunks whose worker died (their lease ran out): queued again at once, to be sent with the same key
    (LINE answers 409 if it took them). Returns their ids."""
    b = OutgoingBatch
    now = utcnow()
    stale = and_(b.status == BatchStatus.SENDING, b.claimed_until < now)
    again = list(db.session.scalars(select(b.id).where(stale)))
    if again:
        db.session.execute(update(b).where(b.id.in_(again), stale).values(
            status=BatchStatus.QUEUED, claimed_by=None, claimed_until=None, next_attempt_at=None, updated_at=now,
        ).execution_options(synchronize_session=False))
    db.session.commit()
    return again
