"""A send plan's run written by a real queue consumer (``flask --app wizard worker``, as production starts it)
that is killed with -9 in the middle of writing it, slice by slice (plans/filling.py): the next consumer goes on
from the run's cursor, and every consenting friend receives the plan exactly once, the others nothing.

The first consumer has one thread, so the run's chunks wait while it writes the slices: what the kill
interrupts is the writing, not a chunk in LINE's hands (tests/test_batches_faults.py is about those)."""
import time

import pytest
from sqlalchemy import func, insert, select

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from tests.processes import Consumer, consumer_env
from wizard import queue
from wizard.extensions import db
from wizard.models import Contact, OutgoingBatch, SendPlan, SendPlanRecipient, SendPlanRun, utcnow

pytestmark = pytest.mark.system  # consumers of their own: not in `make check`
FRIENDS = 3000
WITHOUT_CONSENT = 100
SLICE = 20  # 156 slices: the kill lands while they are written
SETTLE_SECONDS = 300


def _contacts(app, channel_id, users, consenting):
    with app.app_context():
        now = utcnow()
        db.session.execute(insert(Contact), [
            {"channel_id": channel_id, "line_user_id": user, "display_name": f"好友{n}", "followed_at": now,
             "created_at": now, "updated_at": now, "marketing_consent": user in consenting}
            for n, user in enumerate(users)])
        db.session.commit()


def _run_row(app):
    with app.app_context():
        row = db.session.execute(select(SendPlanRun.filling, SendPlanRun.filled_to, SendPlanRun.fill_last)).first()
        db.session.remove()
        return row


def _plan_state(app, plan_id):
    with app.app_context():
        state = db.session.scalar(select(SendPlan.state).where(SendPlan.id == plan_id))
        db.session.remove()
        return state


def test_a_consumer_killed_while_writing_a_run_leaves_it_to_the_next_and_each_friend_gets_it_once(
        app, plan_shop, tmp_path):
    control = plan_shop.control
    control.update(plan_shop.id, quota=None)
    users = control.make_friends(plan_shop.id, FRIENDS + WITHOUT_CONSENT)
    consenting = set(users[:FRIENDS])
    _contacts(app, plan_shop.channel["id"], users, consenting)
    template = plan_shop.template("週年慶全品項 8 折")
    response = plan_shop.post(name="週年慶", template_id=template, purpose="marketing", audience={"all": True},
                              send_at=None, up_to_quota=False)
    assert response.status_code == 201, response.get_data(as_text=True)
    plan_id = response.get_json()["id"]

    env = consumer_env(app, SEND_PLAN_SLICE=SLICE, WORKER_POLL_SECONDS=0.2)
    first = Consumer(env, tmp_path / "consumer-1.log", threads=1)
    second = None
    try:
        first.wait_running()
        with app.app_context():
            queue.start_plan(plan_id)  # the API queued it too, before any consumer ran: one of them wins it
        deadline = time.monotonic() + 120
        while True:
            row = _run_row(app)
            if row is not None and row.filled_to > 0:
                break
            assert time.monotonic() < deadline, f"the run was never started:\n{first.output()[-3000:]}"
            time.sleep(0.01)
        first.proc.kill()  # SIGKILL, mid-run
        first.proc.wait()
        row = _run_row(app)
        assert row.filling and 0 < row.filled_to < row.fill_last, f"the kill did not land mid-run: {row}"

        second = Consumer(env, tmp_path / "consumer-2.log", threads=2)  # its start-up sweep finds the run
        second.wait_running()
        deadline = time.monotonic() + SETTLE_SECONDS
        while _plan_state(app, plan_id) != "sent":
            assert time.monotonic() < deadline, (f"the plan was not sent {SETTLE_SECONDS} s after the kill "
                                                 f"({_plan_state(app, plan_id)}):\n{second.output()[-3000:]}")
            time.sleep(0.5)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    received = {}
    for message in control.sent_messages(plan_shop.id):
        if message["delivered"]:
            received[message["to"]] = received.get(message["to"], 0) + 1
    assert received == {user: 1 for user in consenting}
    with app.app_context():
        assert db.session.scalar(select(func.count(SendPlanRecipient.id))) == FRIENDS + WITHOUT_CONSENT
        keys = db.session.scalars(select(OutgoingBatch.retry_key)).all()
        run = db.session.scalar(select(SendPlanRun))
        assert not run.filling and run.sent == FRIENDS and run.no_consent == WITHOUT_CONSENT
    assert len(keys) == FRIENDS // 500  # every chunk full: the kill cost no chunk its 500
    accepted = control.sends(plan_shop.id, limit=100)
    assert sorted(send["retryKey"] for send in accepted) == sorted(keys)  # one accepted request per chunk
