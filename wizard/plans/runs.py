"""A send plan's runs: starting one once, sending it through the outgoing core, and counting what became of
each recipient.

``tick`` (every minute, on one consumer) starts what is due: a one-off plan whose time came, a yearly plan's
run of the day. The start first wins the plan with a conditional UPDATE (its state and ``send_at`` as read:
a second worker, or a second tick, finds nothing to win) and writes the run (unique per plan and Taipei
day), in one short transaction; a crash before its commit leaves nothing, and the next tick starts it. The
run's recipients with their outcome and their deliveries are then written slice by slice, each slice one
short transaction (plans/filling.py): batches of ≤500 for multicast (outgoing/batches.py; a broadcast only
for a service plan to all friends within the quota, as the estimate decides: ``plans.Estimate.broadcast``),
or one outbox row per contact for a personal template ({name}). Each slice moves the run's cursor in the
same transaction, so a worker that dies mid-run leaves it at a slice's end, and ``tick`` (or the consumer's
sweep) goes on from there; no slice is written twice. After a slice, its deliveries' own claims and retry
keys take over, while later slices are written.

Who gets it is decided at the start, not when it was scheduled: the audience as it is now (customers/
segments.py), never the blocked, for marketing only those whose consent holds now (withdrawn since: left out,
counted no_consent), and no more than the month's quota allows (LINE's quota and consumption): over it the
run is refused in words, or with "send only up to the quota" the first by contact id go and the rest are
recorded over_quota. (Each slice decides for its own contacts as they are when it is written, a moment
later.) A broadcast costs LINE's count of the account's friends (plans.broadcast_reach) and cannot stop at
the quota: over it, "send only up to the quota" sends by multicast to the contacts the CRM knows, up to the
quota; the friends it has no record of do not get it (the confirmation says how many).

Who gets a multicast chunk is checked once more right before LINE is asked for it (``recheck``, the batches'
Owner hook): a contact who blocked the account, or withdrew marketing consent, since the start (a paused plan
can wait days) is dropped from the chunk and counted blocked or no_consent.

Outcomes come back from the deliveries: a batch's ``Owner`` callback (sent, failed, over_quota, cancelled;
in the transaction that records it) and the outbox purpose ``send_plan``'s ``sent``; outbox rows that ended
otherwise (refused, dead) are counted by ``reconcile``. A run that is filled and has nothing pending is
finished: sent, or failed with the reason when nothing went.
"""
import logging

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select, update

from .. import queue
from ..customers import segments
from ..extensions import db
from ..models import Contact, MessageTemplate, Outbox, SendPlan, SendPlanRecipient, SendPlanRun, Shop, utcnow
from ..outgoing import batches, purposes, sender as senders
from ..statuses import OutboxStatus, PlanState, RecipientOutcome
from . import filling, plans, schedule, templates
from .filling import HELD_FOR, OWNER, PURPOSE

log = logging.getLogger(__name__)
# The reasons an outbox row of a plan is refused when it would go (its error), and the outcome each is.
REFUSED = {"send_plan:cancelled": RecipientOutcome.CANCELLED, "send_plan:no_consent": RecipientOutcome.NO_CONSENT,
           "send_plan:blocked": RecipientOutcome.BLOCKED}
# A personal message whose plan's template was deleted after the run started: failed, and the run says why.
TEMPLATE_GONE = "send_plan:no_template"
# The run's reason for such a refusal (REASONS).
REASON_OF_REFUSAL = {TEMPLATE_GONE: "template_deleted"}

REASONS = {
    "not_connected": _l("The shop's LINE account is not connected, so nothing was sent."),
    "no_template": _l("The message template was deleted, so nothing was sent."),
    "template_deleted": _l("The message template was deleted while the plan was sending: the messages not yet "
                           "sent then were not sent (counted as failed)."),
    "over_quota": _l("The month's messages would not have been enough (%(messages)d needed, %(left)d left), "
                     "so nothing was sent. Choose “send only up to the quota”, or send next month."),
    "monthly_limit": _l("LINE refused: this month's messages are used up."),
    "failed": _l("LINE refused every message."),
}


def reason_text(reason):
    """A stored reason ("code" or "code:messages:left") in the reader's words."""
    if not reason:
        return ""
    code, *numbers = reason.split(":")
    words = REASONS.get(code)
    if words is None:
        return reason
    if numbers:
        return str(words) % {"messages": int(numbers[0]), "left": int(numbers[1])}
    return str(words)


# ---- starting ----------------------------------------------------------------------------------------------


def due(now=None):
    """The ids of plans whose run is due."""
    now = now or utcnow()
    return db.session.scalars(select(SendPlan.id).where(
        SendPlan.state == PlanState.SCHEDULED,
        or_(SendPlan.send_at.is_(None), SendPlan.send_at <= now)).order_by(SendPlan.id)).all()


def tick(now=None):
    """Go on filling the runs a dead worker left half written, start every due run, count the outcomes that
    came by the outbox, finish what is done."""
    for run_id in filling.unfilled():
        resume(run_id)
    started = []
    for plan_id in due(now):
        try:
            run_id = start(plan_id, now)
        except senders.current().failure as problem:  # LINE did not tell the quota: next minute
            db.session.rollback()
            log.warning("send plan %s waits: LINE answered %s; the next tick tries again", plan_id, problem.code)
            continue
        except Exception:
            db.session.rollback()
            log.exception("send plan %s could not start; the next tick tries again", plan_id)
            continue
        if run_id is not None:
            started.append(run_id)
    reconcile()
    return started


def start(plan_id, now=None):
    """Start the plan's due run (see the module's docstring): win the plan and write the run (``begin``),
    then fill it slice by slice (``resume``). Returns the run's id, or None when there was nothing to start
    (another worker won it, or a yearly plan's day had nobody)."""
    run_id = begin(plan_id, now)
    if run_id is not None:
        resume(run_id)
    return run_id


def begin(plan_id, now=None):
    """Win the due plan and write its run, to be filled (one short transaction; see the module's docstring).
    Returns the run's id, or None when there was nothing to start."""
    now = now or utcnow()
    plan = db.session.get(SendPlan, plan_id)
    if plan is None or plan.state != PlanState.SCHEDULED or (plan.send_at is not None and plan.send_at > now):
        return None
    shop = db.session.get(Shop, plan.shop_id)
    channel = shop.channel
    day = schedule.local_day(plan.send_at or now)
    wanted = plans.wanted_of(plan)
    next_at = schedule.next_occurrence(plan.repeat, plan.hour, max(now, plan.send_at)) if plan.repeat else None
    template = templates.get(shop, plan.template_id)
    if channel is None or template is None:
        return _fail_start(plan, "not_connected" if channel is None else "no_template", next_at, now)
    found = plans.estimate(channel, wanted, now=now, with_quota=False)
    found.limit, found.used = plans.read_quota(channel)  # LINE unreachable: raises, the next tick tries again
    if found.over and not plan.up_to_quota:
        return _fail_start(plan, f"over_quota:{found.messages}:{found.left}", next_at, now)
    if plan.repeat and found.audience == 0:
        _win(plan, next_at, PlanState.SCHEDULED, now)  # nobody's birthday today: no run
        db.session.commit()
        return None
    is_personal = templates.personal(template)
    blocked = _blocked_count(channel.id, wanted, day)
    last = db.session.scalar(select(func.max(Contact.id)).where(Contact.channel_id == channel.id)) or 0
    if not _win(plan, next_at, PlanState.SCHEDULED if plan.repeat else PlanState.SENDING, now):
        db.session.rollback()
        return None
    # By broadcast only as the estimate decided (``plans.Estimate.broadcast``: a service plan to all friends,
    # the same for everyone, within the quota; marketing never, consent being each person's) and, as counted
    # now, with none of the contacts left out (a slice that must leave someone out after all makes it a
    # multicast).
    broadcast = found.broadcast and found.no_consent == 0 and found.recipients > 0
    run = SendPlanRun(plan_id=plan.id, day=day, state=PlanState.SENDING, personal=is_personal, started_at=now,
                      blocked=blocked, broadcast=broadcast, filling=True, fill_last=last, sendable=found.left)
    db.session.add(run)
    plan.cost_messages, plan.quota_left = found.messages, found.left
    if plan.started_at is None:
        plan.started_at = now
    db.session.commit()
    return run.id


def resume(run_id, slices=None):
    """Fill the run from where it is (just begun, or left half written by a worker that died; beside another
    worker filling it, whoever moves the cursor writes each slice), at most ``slices`` slices (None: to the
    end), then finish it if it is filled and nothing is pending. A failure (the database went away) leaves
    it where the last slice's commit did, for the next tick or sweep."""
    try:
        filling.fill(run_id, slices)
        _finish_if_done(run_id, utcnow())
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("send plan run %s could not be filled further now; the next tick goes on", run_id)


def _ring(run, queued):
    """After a commit: the deliveries are on record; wake whoever sends them (else the sweep does)."""
    for outbox_id in queued:
        queue.send_message.try_now(outbox_id, row=f"outbox {outbox_id}")
    if queued or run.personal:
        return
    batches.wake(OWNER, run.id)  # never raises: a lost ring is found by the batches' sweep


def _win(plan, next_at, state, now):
    """The claim: the plan moves on from the ``send_at`` this worker read, or another worker did first."""
    condition = (SendPlan.send_at.is_(None) if plan.send_at is None else SendPlan.send_at == plan.send_at)
    values = {"state": state, "updated_at": now}
    if plan.repeat:
        values["send_at"] = next_at
    won = db.session.execute(update(SendPlan).where(
        SendPlan.id == plan.id, SendPlan.state == PlanState.SCHEDULED, condition).values(**values)
        .execution_options(synchronize_session=False)).rowcount == 1
    if won:
        db.session.expire(plan, ["state", "send_at", "updated_at"])
    return won


def _fail_start(plan, reason, next_at, now):
    """A run that cannot start: a one-off plan fails with the reason; a yearly plan keeps its next day and
    shows the reason."""
    state = PlanState.SCHEDULED if plan.repeat else PlanState.FAILED
    if _win(plan, next_at, state, now):
        db.session.execute(update(SendPlan).where(SendPlan.id == plan.id).values(
            reason=reason, finished_at=None if plan.repeat else now).execution_options(synchronize_session=False))
    db.session.commit()
    return None


def _blocked_count(channel_id, wanted, day):
    """How many of the audience have blocked the account (never sent to): the contacts the plan's conditions
    pick but for the block (customers/segments.py's conditions without its "not blocked" one)."""
    clean, _problems = segments.check(wanted.filters if not wanted.all else {})
    not_blocked = Contact.blocked_at.is_(None)
    wheres = [where for where in segments.conditions(clean, [channel_id]) if not where.compare(not_blocked)]
    query = select(func.count(Contact.id)).where(Contact.channel_id == channel_id, Contact.blocked_at.is_not(None),
                                                 *wheres)
    if wanted.repeat:
        query = query.where(schedule.birthday_condition(wanted.repeat, day))
    return db.session.scalar(query) or 0


# ---- outcomes --------------------------------------------------------------------------------------------


def _count(run_id, contact_ids, outcome, now):
    """Record ``outcome`` for those of ``contact_ids`` still pending in the run (None: every pending one) and
    raise the run's counter by as many: an outcome told twice counts once."""
    where = [SendPlanRecipient.outcome == RecipientOutcome.PENDING]
    if contact_ids is None:
        where.append(SendPlanRecipient.run_id == run_id)
    else:
        # The rows by the run and contact index, then their outcome: asked for together, SQLite walked every
        # pending row of the run (100,000) by the outcome index to find a chunk's 500, in the chunk's commit.
        where.append(SendPlanRecipient.id.in_(select(SendPlanRecipient.id).where(
            SendPlanRecipient.run_id == run_id, SendPlanRecipient.contact_id.in_(contact_ids))))
    changed = db.session.execute(update(SendPlanRecipient).where(*where).values(outcome=outcome, at=now)
                                 .execution_options(synchronize_session=False)).rowcount
    if changed:
        column = getattr(SendPlanRun, str(outcome))
        db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id).values({column: column + changed})
                           .execution_options(synchronize_session=False))
    return changed


def batch_outcome(batch, outcome, count, now):
    """The batches' Owner callback: a chunk of a run was sent, failed, over the quota or cancelled."""
    run_id = batch.owner_id
    run = db.session.get(SendPlanRun, run_id)
    if run is None:
        return
    contact_ids = None if run.broadcast else [int(pair[0]) for pair in (batch.recipients or [])]
    _count(run_id, contact_ids, RecipientOutcome(outcome), now)
    if outcome == RecipientOutcome.OVER_QUOTA:
        db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id).values(reason="monthly_limit")
                           .execution_options(synchronize_session=False))
    _finish_if_done(run_id, now)


def recheck(batch):
    """The batches' Owner hook, right before LINE is asked for a multicast chunk (its ``called_at`` still
    unset): the chunk's contacts who blocked the account since the start, or (marketing) no longer consent,
    counted blocked or no_consent in the caller's transaction; returns their ids, which the batches drop
    from the chunk in the same commit. A contact whose record is gone (erased) is dropped too."""
    run = db.session.get(SendPlanRun, batch.owner_id)
    if run is None or not batch.recipients:
        return []
    plan = db.session.get(SendPlan, run.plan_id)
    wanted = {int(pair[0]) for pair in batch.recipients}
    rows = db.session.execute(select(Contact.id, Contact.blocked_at, Contact.marketing_consent)
                              .where(Contact.id.in_(wanted))).all()
    blocked = [contact_id for contact_id, blocked_at, _consent in rows if blocked_at is not None]
    no_consent = [contact_id for contact_id, blocked_at, consent in rows
                  if blocked_at is None and plan.purpose == "marketing" and not consent]
    now = utcnow()
    if blocked:
        _count(run.id, blocked, RecipientOutcome.BLOCKED, now)
    if no_consent:
        _count(run.id, no_consent, RecipientOutcome.NO_CONSENT, now)
    gone = wanted - {contact_id for contact_id, _b, _c in rows}
    return sorted(set(blocked) | set(no_consent) | gone)


def _render(row, channel, contact):
    """The plan's template for this contact. ``_refuse`` ran first in the same transaction and refused a row
    whose template is gone, so the template is there."""
    run = _run_of(row)
    plan = db.session.get(SendPlan, run.plan_id)
    return templates.messages_for(db.session.get(MessageTemplate, plan.template_id), contact)


def _run_of(row):
    return db.session.scalar(select(SendPlanRun).join(SendPlanRecipient, SendPlanRecipient.run_id == SendPlanRun.id)
                             .where(SendPlanRecipient.outbox_id == row.id))


def _refuse(row, channel):
    """A personal message of a plan, checked again as it goes: cancelled, template deleted, blocked or no
    consent since. A refusal ends the outbox row (failed, with the code as its error); ``reconcile`` counts
    it."""
    run = _run_of(row)
    plan = db.session.get(SendPlan, run.plan_id) if run is not None else None
    contact = db.session.get(Contact, row.contact_id)
    if plan is None or plan.state == PlanState.CANCELLED or run.state == PlanState.CANCELLED:
        return "send_plan:cancelled"
    if plan.template_id is None or db.session.get(MessageTemplate, plan.template_id) is None:
        return TEMPLATE_GONE
    if contact.blocked:
        return "send_plan:blocked"
    if plan.purpose == "marketing" and not contact.marketing_consent:
        return "send_plan:no_consent"
    return None


def _sent(row, contact, now):
    run = _run_of(row)
    if run is not None:
        _count(run.id, [contact.id], RecipientOutcome.SENT, now)
        _finish_if_done(run.id, now)


def reconcile(now=None):
    """Count the personal messages that ended without being sent (refused, dead, unknown), and finish runs
    with nothing pending."""
    now = now or utcnow()
    rows = db.session.execute(
        select(SendPlanRecipient.run_id, SendPlanRecipient.contact_id, Outbox.status, Outbox.error)
        .join(Outbox, Outbox.id == SendPlanRecipient.outbox_id)
        .join(SendPlanRun, SendPlanRun.id == SendPlanRecipient.run_id)
        .where(SendPlanRun.state.in_((PlanState.SENDING, PlanState.PAUSED, PlanState.CANCELLED)),
               SendPlanRecipient.outcome == RecipientOutcome.PENDING,
               Outbox.status.in_((OutboxStatus.FAILED, OutboxStatus.DEAD, OutboxStatus.UNKNOWN)))).all()
    runs = set()
    for run_id, contact_id, _status, error in rows:
        _count(run_id, [contact_id], REFUSED.get(error or "", RecipientOutcome.FAILED), now)
        if error in REASON_OF_REFUSAL:
            db.session.execute(update(SendPlanRun).where(SendPlanRun.id == run_id, SendPlanRun.reason.is_(None))
                               .values(reason=REASON_OF_REFUSAL[error]).execution_options(synchronize_session=False))
        runs.add(run_id)
    for run_id in db.session.scalars(select(SendPlanRun.id).where(SendPlanRun.state == PlanState.SENDING)):
        runs.add(run_id)
    for run_id in sorted(runs):
        _finish_if_done(run_id, now)
    db.session.commit()


def _finish_if_done(run_id, now):
    """Finish the run if it is filled and nothing of it is pending. Whether one is pending is asked of the
    run and outcome index (one row found is enough): counting them all cost each chunk's commit a walk over
    the run's pending rows."""
    pending = db.session.scalar(select(SendPlanRecipient.id).where(
        SendPlanRecipient.run_id == run_id, SendPlanRecipient.outcome == RecipientOutcome.PENDING).limit(1))
    if pending is None:
        _finish(db.session.get(SendPlanRun, run_id), now)


def _finish(run, now):
    """A filled run with nothing pending: sent (some went), or failed with its reason (none went)."""
    db.session.refresh(run)
    if run.state not in (PlanState.SENDING, PlanState.PAUSED) or run.filling:
        return
    state = PlanState.FAILED if run.sent == 0 and (run.failed or run.over_quota) else PlanState.SENT
    reason = run.reason or (("failed" if run.failed else "monthly_limit") if state == PlanState.FAILED else None)
    run.state, run.reason, run.finished_at = state, reason, now
    plan = db.session.get(SendPlan, run.plan_id)
    if not plan.repeat and plan.state in (PlanState.SENDING, PlanState.PAUSED):
        plan.state, plan.reason, plan.finished_at = state, reason, now


# ---- pause, resume, cancel of a run -------------------------------------------------------------------------


def _outbox_of(run):
    return select(SendPlanRecipient.outbox_id).where(SendPlanRecipient.run_id == run.id,
                                                     SendPlanRecipient.outbox_id.is_not(None))


def _write_state(run, state, **values):
    """The run's new state, written first in the transaction: a slice being written (plans/filling.py) holds
    the run's row, so this waits for its commit, and what follows (the deliveries held, released or
    cancelled) sees that slice's chunks; the slices after it read the new state."""
    for name, value in dict(values, state=state).items():
        setattr(run, name, value)
    db.session.flush()


def hold(run):
    """Pause: what is not yet with LINE waits (batches held; personal messages moved far ahead; slices still
    to be written come held)."""
    _write_state(run, PlanState.PAUSED)
    if run.personal:
        db.session.execute(update(Outbox).where(Outbox.id.in_(_outbox_of(run)), Outbox.status == OutboxStatus.QUEUED)
                           .values(next_attempt_at=utcnow() + HELD_FOR).execution_options(synchronize_session=False))
    else:
        batches.hold(OWNER, run.id)


def release(run):
    _write_state(run, PlanState.SENDING)
    if run.personal:
        db.session.execute(update(Outbox).where(Outbox.id.in_(_outbox_of(run)), Outbox.status == OutboxStatus.QUEUED)
                           .values(next_attempt_at=utcnow()).execution_options(synchronize_session=False))
    else:
        batches.release(OWNER, run.id)


def after_release(plan):
    """After a resume's commit: wake the senders of the plan's open runs."""
    for run in plan.runs:
        if run.state == PlanState.SENDING:
            queued = db.session.scalars(_outbox_of(run)).all() if run.personal else []
            _ring(run, [i for i in queued if db.session.get(Outbox, i).status == OutboxStatus.QUEUED])


def stop(run):
    """Cancel: what is not yet with LINE does not go (queued personal messages are refused now, chunks
    cancelled by the batches); what is in flight or accepted stays sent. Their outcomes are counted as they
    come (``reconcile``, the batches' callback). A run still being filled is filled no further: who was
    written but not yet queued is cancelled with the rest."""
    now = utcnow()
    _write_state(run, PlanState.CANCELLED, finished_at=now)
    filling.end(run.id, RecipientOutcome.CANCELLED, now=now)
    if run.personal:
        db.session.execute(update(Outbox).where(Outbox.id.in_(_outbox_of(run)), Outbox.status == OutboxStatus.QUEUED)
                           .values(status=OutboxStatus.FAILED, error="send_plan:cancelled", updated_at=now)
                           .execution_options(synchronize_session=False))
    else:
        batches.cancel(OWNER, run.id)


def register():
    """The plans' registrations in the outgoing core (the app factory calls this)."""
    purposes.register(purposes.Purpose(PURPOSE, render=_render, refuse=_refuse, sent=_sent))
    batches.register(batches.Owner(OWNER, batch_outcome, recheck=recheck))

