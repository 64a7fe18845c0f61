"""A one-off plan goes at its time, to the second: confirming it queues its start for that moment, so it does
not wait for the next round of the consumer's minute job (which stays the safety net for a lost start)."""
import time
from datetime import timedelta

from sqlalchemy import select

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from wizard import queue
from wizard.extensions import db
from wizard.models import SendPlan, SendPlanRun, utcnow

AHEAD = timedelta(seconds=8)


def test_a_plan_for_a_time_starts_at_that_time_not_at_the_consumers_next_minute(app, plan_shop):
    mei = plan_shop.friend("林小美")
    template_id = plan_shop.template("今晚八點前下單，明天到貨。")
    queue.start_in_process(app, threads=2)  # its minute job runs now, then once every 60 s from now
    started = time.monotonic()
    try:
        send_at = utcnow() + AHEAD
        plan = plan_shop.post(name="到貨通知", template_id=template_id, purpose="service",
                              audience={"all": False, "filters": {"city": ["TPE"]}},
                              send_at=send_at.isoformat() + "Z").get_json()
        assert plan["state"] == "scheduled", plan
        # The minute job's next round is 60 s after the consumer started: look until well before it.
        deadline = started + 50
        while not plan_shop.received(mei) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert plan_shop.received(mei) == ["今晚八點前下單，明天到貨。"], \
            "the plan was not sent at its time (only the consumer's next minute would have started it)"
    finally:
        queue.stop_in_process(app)
    with app.app_context():
        run = db.session.scalar(select(SendPlanRun).where(SendPlanRun.plan_id == plan["id"]))
        stored_at = db.session.get(SendPlan, plan["id"]).send_at if run is None else None
        assert run is not None, stored_at
        assert run.started_at >= send_at.replace(microsecond=0), "the plan started before its time"
