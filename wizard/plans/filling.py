"""A send plan's run written slice by slice, each slice one short transaction: plans/runs.py writes the run
and calls ``fill``; a run left half written is resumed with ``fill`` too.

Why: a run of 100,000 written in one transaction (its recipients, read back, 200 chunks) held SQLite's one
write lock for over two seconds, and every webhook arriving meanwhile waited behind it (the send-plan
bench's p99: 1.9 s). Now the run's row comes first, ``filling``, with what each slice needs to decide on
its own: ``fill_last`` (the channel's highest contact id at the start: friends made later are not in the
run) and ``sendable`` (the month's messages left, the quota's cut; None without a limit). Then each slice
(``SEND_PLAN_SLICE`` contacts of the channel, by id) in one transaction:

1. moves the run's cursor ``filled_to`` from the value it read to the slice's last contact id, with a
   conditional UPDATE that also wants ``queued_to`` as read and the run still filling and sending or
   paused. Whoever moves it writes the slice; anyone else (a second worker, a resumed run whose first
   worker lives on) stops there. So no slice is written twice (and a recipient is unique per run anyway);
2. writes the slice's recipients as decided now: pending while the quota allows, which across slices is
   the first ``sendable`` by contact id (the run's ``recipients`` counts the pending ones so far), the rest
   over_quota; for marketing, no_consent for the audience who do not consent now. The blocked were counted
   once, at the start;
3. queues their deliveries: chunks of 500 (fewer left over wait for the next slice, so a run has no more
   chunks than one written whole; ``queued_to`` says how far), or for a personal template one outbox row
   each; held while the run is paused. A plan to all friends with nobody left out (the start's count) is a
   broadcast: its one chunk is written with the last slice. A slice that must leave someone out after all
   (consent withdrawn meanwhile) makes it a multicast, and the next slices queue the chunks of everyone
   written before;
4. raises the run's counters by what it wrote; the last slice ends ``filling``.

After each commit the slice's chunks (or messages) are woken, so the first go out while later slices are
written. A worker killed mid-run leaves the run filling at its cursor: runs.tick and the consumer's sweep
resume it. Pause and cancel (plans/runs.py) write the run's row before its deliveries, so they wait for a
slice being written and then see its chunks; a cancelled run is filled no further (``end``).
"""
import logging
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, func, insert, literal, select, update

from .. import queue
from ..extensions import db
from ..models import Contact, SendPlan, SendPlanRecipient, SendPlanRun, Shop, utcnow
from ..outgoing import batches, outbox
from ..statuses import PlanState, RecipientOutcome
from . import plans, templates

log = logging.getLogger(__name__)

OWNER = "send_plan"
PURPOSE = "send_plan"
OPEN = (PlanState.SENDING, PlanState.PAUSED)
# A personal message held while its plan is paused waits this far ahead (resume brings it back to now).
HELD_FOR = timedelta(days=3650)
RETRY_NAMESPACE = uuid.UUID("6f1d8a4e-4d0e-4d55-9a57-2f1b3c8e9a16")
PENDING, NO_CONSENT, OVER_QUOTA = RecipientOutcome.PENDING, RecipientOutcome.NO_CONSENT, RecipientOutcome.OVER_QUOTA


def retry_key(run_id, contact_id):
    return str(uuid.uuid5(RETRY_NAMESPACE, f"send_plan:{run_id}:{contact_id}"))


def slice_size():
    return max(1, int(current_app.config["SEND_PLAN_SLICE"]))


def unfilled():
    """The ids of the runs still being filled (by a worker at it now, or left by one that died)."""
    return db.session.scalars(select(SendPlanRun.id).where(SendPlanRun.filling.is_(True))
                              .order_by(SendPlanRun.id)).all()


def fill(run_id, slices=None):
    """Write the run's slices until it is filled, no longer open, or another worker moves its cursor first
    (or ``slices`` were written); each slice's deliveries are woken after its commit. Returns how many
    slices this call wrote."""
    written = 0
    while slices is None or written < slices:
        step = _slice(run_id)
        if step is None:
            return written
        written += 1
        run_key, outbox_ids, done = step
        for outbox_id in outbox_ids:
            queue.send_message.try_now(outbox_id, row=f"outbox {outbox_id}")
        if run_key is not None:
            batches.wake(OWNER, run_id, run_key)  # never raises: a lost ring is found by the batches' sweep
        if done:
            break
    return written


def _slice(run_id):
    """Read what the next slice is, then write it in one transaction. Returns (run_key of its chunks,
    outbox ids to wake, whether the run is filled), or None when there was nothing for this worker to write."""
    run = db.session.get(SendPlanRun, run_id, populate_existing=True)
    if run is None or not run.filling:
        db.session.commit()
        return None
    plan = db.session.get(SendPlan, run.plan_id)
    shop = db.session.get(Shop, plan.shop_id)
    channel, template = shop.channel, templates.get(shop, plan.template_id)
    if run.state not in OPEN or channel is None or template is None:
        reason = None if run.state not in OPEN else "not_connected" if channel is None else "no_template"
        end(run_id, RecipientOutcome.CANCELLED if reason is None else RecipientOutcome.FAILED, reason=reason)
        db.session.commit()
        return None
    low, queued, last = run.filled_to, run.queued_to, run.fill_last or 0
    high = last
    if low < last:
        high = db.session.scalar(select(Contact.id).where(
            Contact.channel_id == channel.id, Contact.id > low, Contact.id <= last)
            .order_by(Contact.id).offset(slice_size() - 1).limit(1)) or last
    wanted, day, sendable, personal = plans.wanted_of(plan), run.day, run.sendable, run.personal
    messages = None if personal else templates.messages_for_all(template)
    unit, channel_id = plan.unit, channel.id
    db.session.commit()  # the reads end here: the slice's transaction below holds its writes only

    now = utcnow()
    won = db.session.execute(update(SendPlanRun).where(
        SendPlanRun.id == run_id, SendPlanRun.filling.is_(True), SendPlanRun.filled_to == low,
        SendPlanRun.queued_to == queued, SendPlanRun.state.in_(OPEN)).values(filled_to=high)
        .returning(SendPlanRun.state, SendPlanRun.recipients, SendPlanRun.broadcast)
        .execution_options(synchronize_session=False)).first()
    if won is None:
        db.session.rollback()
        return None  # another worker wrote this slice, or the run was cancelled meanwhile
    state, pending_before, broadcast = won
    counts = _write_recipients(run_id, channel_id, wanted, day, (low, high), pending_before, sendable, now)
    pending = pending_before + counts.get(PENDING, 0)
    if broadcast and (counts.get(NO_CONSENT) or counts.get(OVER_QUOTA)):
        broadcast = False  # someone is left out after all: a multicast, whose chunks start from the first
    held, ends = state == PlanState.PAUSED, high >= last
    run_key, outbox_ids, queued_to = None, [], queued
    if broadcast:
        if ends and pending:
            run_key = f"run-{run_id}"
            batches.add(channel_id, owner=OWNER, owner_id=run_id, run_key=run_key, recipients=None,
                        messages=messages, unit=unit, held=held)
        broadcast = broadcast and (pending > 0 or not ends)
        queued_to = last if ends else queued
    else:
        queued_to, run_key, outbox_ids = _queue(run_id, channel_id, queued, high, ends, messages, unit, held,
                                                personal)
    done = ends and queued_to >= last
    db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id).values(
        recipients=SendPlanRun.recipients + counts.get(PENDING, 0),
        over_quota=SendPlanRun.over_quota + counts.get(OVER_QUOTA, 0),
        no_consent=SendPlanRun.no_consent + counts.get(NO_CONSENT, 0),
        broadcast=broadcast, queued_to=queued_to, filling=not done).execution_options(synchronize_session=False))
    db.session.commit()
    return run_key, ([] if held else outbox_ids), done


def _write_recipients(run_id, channel_id, wanted, day, between, pending_before, sendable, now):
    """The slice's recipients with their outcome (see the module); returns {outcome: rows written}."""
    if between[1] <= between[0]:
        return {}
    recipients = plans.recipient_ids(channel_id, wanted, day, between)
    if sendable is None:
        _record(run_id, recipients, PENDING, now)
    else:
        room = max(sendable - pending_before, 0)
        _record(run_id, recipients.limit(room), PENDING, now)
        _record(run_id, recipients.offset(room), OVER_QUOTA, now)
    _record(run_id, select(Contact.id).where(
        Contact.id.in_(plans.audience_ids(channel_id, wanted, day, between)), Contact.blocked_at.is_(None),
        Contact.id.not_in(recipients.order_by(None))), NO_CONSENT, now)
    return dict(db.session.execute(select(SendPlanRecipient.outcome, func.count(SendPlanRecipient.id)).where(
        SendPlanRecipient.run_id == run_id, SendPlanRecipient.contact_id > between[0],
        SendPlanRecipient.contact_id <= between[1]).group_by(SendPlanRecipient.outcome)).all())


def _record(run_id, contact_ids, outcome, now):
    """Write recipients ``contact_ids`` (a Select of contact ids) with ``outcome`` in one INSERT … SELECT: the
    rows never travel through Python (drivers do not always tell its row count: the caller counts them)."""
    chosen = contact_ids.subquery()
    table = SendPlanRecipient.__table__
    db.session.execute(insert(SendPlanRecipient).from_select(
        ["run_id", "contact_id", "outcome", "at"],
        select(literal(run_id, table.c.run_id.type), chosen.c.id, literal(outcome, table.c.outcome.type),
               literal(now, table.c.at.type))))


def _queue(run_id, channel_id, queued, high, ends, messages, unit, held, personal):
    """The deliveries of the pending recipients after contact ``queued`` up to ``high``: whole chunks of 500
    (all of them with the run's last slice), or an outbox row each. Returns (how far they are queued now,
    the chunks' run_key or None, the outbox ids)."""
    size = slice_size()
    chunk = batches.CHUNK
    most = size if personal else chunk * (-(-size // chunk) + 1)  # a slice's and what the last one left
    rows = db.session.execute(select(SendPlanRecipient.contact_id, Contact.line_user_id)
                              .join(Contact, Contact.id == SendPlanRecipient.contact_id)
                              .where(SendPlanRecipient.run_id == run_id, SendPlanRecipient.outcome == PENDING,
                                     SendPlanRecipient.contact_id > queued, SendPlanRecipient.contact_id <= high)
                              .order_by(SendPlanRecipient.contact_id).limit(most + 1)).all()
    every = len(rows) <= most  # every pending one up to ``high`` is here
    rows = rows[:most]
    if not personal and not (ends and every):
        rows = rows[:len(rows) // chunk * chunk]  # whole chunks only: the rest waits for the next slice
    reached = high if every and (personal or ends) else (rows[-1][0] if rows else queued)
    if not rows:
        return reached, None, []
    if personal:
        keyed = [(contact_id, retry_key(run_id, contact_id)) for contact_id, _user in rows]
        ids = outbox.add_pushes(channel_id, PURPOSE, keyed, not_before=utcnow() + HELD_FOR if held else None)
        table = SendPlanRecipient.__table__
        db.session.execute(update(table).where(table.c.run_id == run_id, table.c.contact_id == bindparam("contact"))
                           .values(outbox_id=bindparam("outbox")),
                           [{"contact": contact_id, "outbox": ids[key]} for contact_id, key in keyed])
        return reached, None, [ids[key] for _contact, key in keyed]
    run_key = f"run-{run_id}-{rows[0][0]}"
    batches.add(channel_id, owner=OWNER, owner_id=run_id, run_key=run_key, recipients=[tuple(r) for r in rows],
                messages=messages, unit=unit, held=held)
    return reached, run_key, []


def end(run_id, outcome, reason=None, now=None):
    """The run is filled no further (cancelled, or its channel or template went): its recipients written but
    not yet given a delivery get ``outcome``, counted, in the caller's transaction. The run's row is written
    first, so a slice being written meanwhile commits before and its deliveries count as queued. Returns how
    many recipients got ``outcome``."""
    now = now or utcnow()
    values = {"filling": False} if reason is None else {"filling": False, "reason": reason}
    ended = db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id, SendPlanRun.filling.is_(True))
                               .values(values).returning(SendPlanRun.queued_to)
                               .execution_options(synchronize_session=False)).first()
    if ended is None:
        return 0
    changed = db.session.execute(update(SendPlanRecipient).where(
        SendPlanRecipient.run_id == run_id, SendPlanRecipient.outcome == PENDING,
        SendPlanRecipient.contact_id > ended.queued_to).values(outcome=outcome, at=now)
        .execution_options(synchronize_session=False)).rowcount
    if changed:
        column = getattr(SendPlanRun, str(outcome))
        db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id).values({column: column + changed})
                           .execution_options(synchronize_session=False))
        log.info("send plan run %s filled no further: %s recipients without a delivery are %s", run_id, changed,
                 outcome)
    return changed
