"""A send plan's life as the owner drives it, where it used to go wrong: a birthday plan paused in the middle of
its day's run and resumed goes on to its next day; a cancel that meets the worker starting the plan wins and
stops the run, and any refusal names the state the plan is in now; a scheduled plan edited only in its name
stays scheduled while a real change makes it a draft that the pages mark; a draft whose time has passed is
not sent at once when confirmed; the progress counts only those the plan is to be sent to; a template cannot
be deleted from under a plan, and one deleted anyway fails the messages left with a reason; LINE's numbers
of a birthday plan follow its latest runs. Every test runs on both databases (the ``app`` fixture)."""
from datetime import date, timedelta

import pytest

from tests.plan_helpers import plan_shop_fixture, taipei  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import MessageTemplate, Outbox, SendPlan, SendPlanRun, User, utcnow
from wizard.plans import plans, runs, statistics
from wizard.statuses import OutboxStatus, PlanState

OFFER = "週年慶全品項 8 折，只到週日！"
PERSONAL = "{name} 您好：週年慶全品項 8 折"
GREETING = "生日快樂！送您一杯咖啡"


def _later(hours=1):
    return (utcnow() + timedelta(hours=hours)).isoformat() + "Z"


def _token(plan_shop, path=None):
    page = plan_shop.client.get(path or f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def _api(plan_shop, plan_id, action):
    return plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/{action}", json={})


def _birthday_plan(app, plan_shop, text, day):
    """A yearly birthday plan at 10:00 whose next run is ``day`` (a Taipei date)."""
    plan = plan_shop.post(name="生日祝福", template_id=plan_shop.template(text), purpose="service",
                          audience={"all": True}, repeat="birthday", hour=10).get_json()
    with app.app_context():
        db.session.execute(db.update(SendPlan).where(SendPlan.id == plan["id"])
                           .values(send_at=taipei(f"{day} 10:00")))
        db.session.commit()
    return plan["id"]


# ---- 1. a birthday plan paused mid-run ---------------------------------------------------------------------


@pytest.mark.parametrize("text", [GREETING, "{name}，" + GREETING], ids=["multicast", "personal"])
def test_a_birthday_plan_paused_mid_run_and_resumed_finishes_and_runs_on_its_next_day(app, plan_shop, text):
    today = [plan_shop.friend(name, birthday=date(1990, 2, 27)) for name in ("阿明", "小華")]
    tomorrow = plan_shop.friend("美美", birthday=date(1985, 2, 28))
    plan_id = _birthday_plan(app, plan_shop, text, "2027-02-27")
    assert plan_shop.tick(now=taipei("2027-02-27 10:00"))  # the day's run starts …
    assert _api(plan_shop, plan_id, "pause").get_json()["state"] == "paused"  # … and is paused before it sends
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in today] == [[], []]
    resumed = _api(plan_shop, plan_id, "resume")
    # A yearly plan is scheduled between its runs: resumed, it is again, while its held run goes on.
    assert resumed.status_code == 200 and resumed.get_json()["state"] == "scheduled"
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in today] == [[text.replace("{name}", "阿明")],
                                                            [text.replace("{name}", "小華")]]
    with app.app_context():
        run = db.session.scalar(db.select(SendPlanRun).filter_by(plan_id=plan_id))
        assert run.state == PlanState.SENT and run.sent == 2
        assert runs.due(taipei("2027-02-28 09:59")) == []
        assert runs.due(taipei("2027-02-28 10:00")) == [plan_id]  # the next day's run is due on time
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "scheduled" and plan["send_at"] == "2027-02-28T02:00:00Z"
    plan_shop.send(now=taipei("2027-02-28 10:00"))
    assert plan_shop.received(tomorrow) == [text.replace("{name}", "美美")]
    assert [len(plan_shop.received(user)) for user in today] == [1, 1]


# ---- 9. a cancel racing the start ------------------------------------------------------------------------


def _owner(app, plan_shop):
    from wizard.models import Shop
    shop = db.session.scalar(db.select(Shop).filter_by(slug=plan_shop.slug))
    return db.session.scalar(db.select(User).filter_by(shop_id=shop.id))


def test_a_cancel_that_meets_the_worker_starting_the_plan_cancels_the_run(app, plan_shop):
    friends = [plan_shop.friend(f"客人{n}") for n in range(3)]
    plan = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": False, "filters": {"city": ["TPE"]}}, send_at=_later()).get_json()
    plan_shop.make_due(plan["id"])
    with app.app_context():
        read = db.session.get(SendPlan, plan["id"])
        assert read.state == PlanState.SCHEDULED  # what the owner's cancel read …
        with app.app_context():  # … when a worker, in its own session, started the plan
            assert runs.start(plan["id"]) is not None
        plans.cancel(read, _owner(app, plan_shop))
        assert db.session.get(SendPlan, plan["id"]).state == PlanState.CANCELLED
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[], [], []]
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "cancelled" and plan["sent"] == 0


def test_a_refused_change_names_the_state_the_plan_is_in_now(app, plan_shop):
    plan_shop.friend("林小美")
    plan = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": True}, send_at=_later()).get_json()
    plan_shop.make_due(plan["id"])
    with app.app_context():
        read = db.session.get(SendPlan, plan["id"])
        wanted = plans.wanted_of(read)
        wanted.name = "週年慶（改）"
        with app.app_context():
            runs.start(plan["id"])
        with pytest.raises(plans.Refused) as refused:
            plans.update_plan(read, wanted, _owner(app, plan_shop), state=PlanState.DRAFT)
        # In the owner's language (Chinese by default), the state as it is now.
        assert str(refused.value) == "此計畫已開始（「發送中」），不能再修改；發送期間可以暫停。"
        assert db.session.get(SendPlan, plan["id"]).name == "週年慶"
    # Read while sending, then cancelled by someone else: the pause says what the plan is now.
    with app.app_context():
        read = db.session.get(SendPlan, plan["id"])
        assert read.state == PlanState.SENDING
        assert _api(plan_shop, plan["id"], "cancel").status_code == 200
        with pytest.raises(plans.Refused) as refused:
            plans.pause(read, _owner(app, plan_shop))
        assert str(refused.value) == "只有發送中的計畫可以暫停；此計畫目前為「已取消」。"


# ---- 10. editing a scheduled plan ------------------------------------------------------------------------


def _edit_form(plan_shop, plan_id, **changes):
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/{plan_id}/edit")
    plan = plan_shop.plan(plan_id)
    local = (utcnow() + timedelta(hours=8, days=2)).replace(second=0, microsecond=0)
    form = {"csrf_token": token, "name": plan["name"], "template_id": plan["template_id"],
            "purpose": plan["purpose"], "audience": "filters", "city": ["TPE"], "when": "once",
            "send_at": local.strftime("%Y-%m-%dT%H:%M")}
    form.update(changes)
    return form


def test_a_scheduled_plan_edited_only_in_its_name_stays_scheduled(app, plan_shop):
    mei = plan_shop.friend("林小美")
    local = (utcnow() + timedelta(hours=8, days=2)).replace(second=0, microsecond=0)
    plan = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": False, "filters": {"city": ["TPE"]}},
                          send_at=local.strftime("%Y-%m-%dT%H:%M")).get_json()
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/{plan['id']}/edit",
                                     data=_edit_form(plan_shop, plan["id"], name="週年慶（錯字已改）"))
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/plans/{plan['id']}")
    edited = plan_shop.plan(plan["id"])
    assert edited["state"] == "scheduled" and edited["name"] == "週年慶（錯字已改）"
    assert edited["send_at"] == plan["send_at"]
    html = plan_shop.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The plan is changed and still scheduled." in html and "data-unconfirmed" not in html
    plan_shop.make_due(plan["id"])
    plan_shop.send()
    assert plan_shop.received(mei) == [OFFER]


def test_a_birthday_plan_edited_only_in_its_name_stays_scheduled_and_a_new_hour_needs_confirming(app, plan_shop):
    plan = plan_shop.post(name="生日祝福", template_id=plan_shop.template(GREETING), purpose="service",
                          audience={"all": True}, repeat="birthday", hour=10).get_json()
    edit = f"/c/{plan_shop.slug}/plans/{plan['id']}/edit"
    form = _edit_form(plan_shop, plan["id"], name="生日快樂", audience="all", when="birthday", hour="10")
    assert plan_shop.client.post(edit, data=form).headers["Location"].endswith(f"/plans/{plan['id']}")
    edited = plan_shop.plan(plan["id"])
    assert edited["state"] == "scheduled" and edited["name"] == "生日快樂" and edited["send_at"] == plan["send_at"]
    form = _edit_form(plan_shop, plan["id"], name="生日快樂", audience="all", when="birthday", hour="11")
    assert plan_shop.client.post(edit, data=form).headers["Location"].endswith("/confirm")
    assert plan_shop.plan(plan["id"])["state"] == "draft"


def test_a_scheduled_plan_whose_audience_changed_is_a_draft_the_pages_mark(app, plan_shop):
    plan_shop.friend("林小美")
    local = (utcnow() + timedelta(hours=8, days=2)).replace(second=0, microsecond=0)
    plan = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": False, "filters": {"city": ["TPE"]}},
                          send_at=local.strftime("%Y-%m-%dT%H:%M")).get_json()
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/{plan['id']}/edit",
                                     data=_edit_form(plan_shop, plan["id"], city=["TPE", "NWT"]))
    assert response.status_code == 302 and response.headers["Location"].endswith("/confirm")
    confirm = plan_shop.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Not scheduled any more: your changes need confirming before the plan sends." in confirm
    # The owner leaves the confirmation: the plan's page and the list say it will not send.
    assert plan_shop.plan(plan["id"])["state"] == "draft"
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert 'data-unconfirmed="edited"' in page and "Not scheduled any more: confirm it to send." in page
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
    assert "not scheduled any more: confirm it to send" in listed
    # Confirmed, it is scheduled again and the mark is gone.
    token = _token(plan_shop)
    assert plan_shop.client.post(response.headers["Location"], data={"csrf_token": token}).status_code == 302
    assert plan_shop.plan(plan["id"])["state"] == "scheduled"
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "data-unconfirmed" not in page


def test_the_pages_mark_the_mark_in_chinese(app, plan_shop):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/new")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "草稿", "template_id": plan_shop.template(OFFER), "purpose": "service",
        "audience": "all", "when": "now"})
    assert response.status_code == 302
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
    assert "尚未排程：確認後才會發送" in listed


# ---- 7. a draft whose time has passed ----------------------------------------------------------------------


def test_a_draft_whose_time_has_passed_is_not_sent_when_confirmed(app, plan_shop):
    mei = plan_shop.friend("林小美")
    local = (utcnow() + timedelta(hours=9)).replace(second=0, microsecond=0)  # an hour ahead in Taipei
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/new")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "晚間特賣", "template_id": plan_shop.template(OFFER), "purpose": "marketing",
        "audience": "all", "when": "once", "send_at": local.strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 302
    confirm = response.headers["Location"]
    plan_id = int(confirm.split("/plans/")[1].split("/")[0])
    with app.app_context():  # the owner comes back to the draft two hours later
        db.session.execute(db.update(SendPlan).where(SendPlan.id == plan_id)
                           .values(send_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
    html = plan_shop.client.get(confirm).get_data(as_text=True)
    assert 'id="plan-blocked"' in html and "has passed: choose a new time with “Change the plan”." in html
    assert "Goes out at" not in html and "Confirm and schedule" not in html and "Confirm and send" not in html
    response = plan_shop.client.post(confirm, data={"csrf_token": token})
    assert response.status_code == 409 and "has passed" in response.get_data(as_text=True)
    assert plan_shop.plan(plan_id)["state"] == "draft"
    plan_shop.send()
    assert plan_shop.received(mei) == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlanRun.id))) == 0


def test_the_api_refuses_a_one_off_time_that_has_passed_and_sends_now_for_null(app, plan_shop):
    mei = plan_shop.friend("林小美")
    template = plan_shop.template(OFFER)
    past = (utcnow() - timedelta(hours=1)).isoformat() + "Z"
    response = plan_shop.post(name="晚間特賣", template_id=template, purpose="marketing", audience={"all": True},
                              send_at=past)
    assert response.status_code == 400
    assert response.get_json()["problems"] == {"send_at": "That time has passed: choose a later one, or send now."}
    response = plan_shop.post(name="晚間特賣", template_id=template, purpose="marketing", audience={"all": True},
                              send_at=None)
    assert response.status_code == 201 and response.get_json()["send_at"] is None
    plan_shop.send()
    assert plan_shop.received(mei) == [OFFER]


# ---- 5. progress -------------------------------------------------------------------------------------------


def test_the_progress_counts_only_those_the_plan_is_sent_to(app, plan_shop):
    plan_shop.control.update(plan_shop.id, quota=2)
    friends = [plan_shop.friend(name) for name in ("客人一", "客人二", "客人三", "客人四")]
    plan = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": True}, send_at=_later(), up_to_quota=True).get_json()
    plan_shop.make_due(plan["id"])
    plan_shop.tick()  # started: 2 to send, 2 left out over the quota, nothing sent yet
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "Sending: 0 of 2 done." in page and 'data-progress="0/2"' in page
    assert "2 more left out: over the month's quota." in page
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
    assert "sending 0 of 2" in listed
    plan_shop.deliver()
    assert [len(plan_shop.received(user)) for user in friends] == [1, 1, 0, 0]
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "sent" and plan["sent"] == 2 and plan["left_out"]["over_quota"] == 2


# ---- 2. a template deleted while a plan uses it ---------------------------------------------------------------


def test_a_template_deleted_while_a_personal_plan_sends_fails_the_rest_with_a_reason(app, plan_shop):
    friends = [plan_shop.friend(name) for name in ("林小美", "陳大文")]
    template = plan_shop.template(PERSONAL)
    plan = plan_shop.post(name="週年慶", template_id=template, purpose="marketing", audience={"all": True},
                          send_at=_later()).get_json()
    plan_shop.make_due(plan["id"])
    plan_shop.tick()  # two personal messages queued
    with app.app_context():  # deleted in the same moment (the pages and the API refuse it now)
        db.session.delete(db.session.get(MessageTemplate, template))
        db.session.commit()
    plan_shop.deliver()
    plan_shop.deliver()  # a second sweep finds nothing stuck
    assert [plan_shop.received(user) for user in friends] == [[], []]
    with app.app_context():
        rows = db.session.scalars(db.select(Outbox).filter_by(purpose="send_plan")).all()
        assert [(row.status, row.error) for row in rows] == [(OutboxStatus.FAILED, "send_plan:no_template")] * 2
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "failed" and plan["failed"] == 2 and plan["sent"] == 0
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "The message template was deleted while the plan was sending" in page


@pytest.mark.parametrize("state", ["scheduled", "sending", "paused"])
def test_a_template_a_live_plan_uses_cannot_be_deleted(app, plan_shop, state):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    plan_shop.friend("林小美")
    template = plan_shop.template(OFFER, name="週年慶範本")
    plan = plan_shop.post(name="週年慶通知", template_id=template, purpose="marketing", audience={"all": True},
                          send_at=_later()).get_json()
    if state != "scheduled":
        plan_shop.make_due(plan["id"])
        plan_shop.tick()
    if state == "paused":
        _api(plan_shop, plan["id"], "pause")
    assert plan_shop.plan(plan["id"])["state"] == state
    api = f"/api/v1/shops/{plan_shop.slug}/templates/{template}"
    response = plan_shop.client.delete(api, json={})
    assert response.status_code == 409
    assert response.get_json()["problems"] == {"template": (
        "Send plans that have not finished use this template: “週年慶通知”. Cancel them, or wait until they have "
        "sent (a scheduled plan can be changed to another template); then delete it.")}
    page = f"/c/{plan_shop.slug}/templates/{template}/delete"
    html = plan_shop.client.get(page).get_data(as_text=True)
    assert "尚未結束的發送計畫正在使用這個範本：「週年慶通知」" in html
    assert 'class="button danger"' not in html  # no delete button, only the way back
    response = plan_shop.client.post(page, data={"csrf_token": _token(plan_shop, page)})
    assert response.status_code == 409 and "週年慶通知" in response.get_data(as_text=True)
    assert plan_shop.client.get(api).status_code == 200
    # Once the plan is over, the template can go.
    assert _api(plan_shop, plan["id"], "cancel").status_code == 200
    assert plan_shop.client.delete(api, json={}).status_code == 204


# ---- 6. LINE's numbers of a birthday plan ----------------------------------------------------------------------


def test_a_birthday_plans_statistics_follow_its_latest_run_a_year_after_the_first(app, plan_shop):
    today = (utcnow() + timedelta(hours=8)).date()  # Taipei
    year_ago = today - timedelta(days=370)  # about a year before, on another day of the year
    first = [plan_shop.friend(f"去年壽星{n}", birthday=date(2000, year_ago.month, year_ago.day)) for n in range(3)]
    second = [plan_shop.friend(f"今年壽星{n}", birthday=date(2000, today.month, today.day)) for n in range(4)]
    plan_id = _birthday_plan(app, plan_shop, GREETING, year_ago.isoformat())
    plan_shop.send(now=taipei(f"{year_ago} 10:00"))  # the first run, a year ago
    with app.app_context():  # the next run is today's (the days between had nobody)
        db.session.execute(db.update(SendPlan).where(SendPlan.id == plan_id)
                           .values(send_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    plan_shop.send()
    assert [plan_shop.received(user) for user in first + second] == [[GREETING]] * 7
    tomorrow = utcnow() + timedelta(days=1)
    with app.app_context():
        assert [run.day for run in db.session.get(SendPlan, plan_id).runs] == [year_ago, today]
        assert [plan.id for plan in statistics.due(tomorrow)] == [plan_id]
        assert statistics.refresh_due(tomorrow) == 1
        stats = db.session.get(SendPlan, plan_id).stats
        assert statistics.due(tomorrow + timedelta(days=15)) == []  # 14 days after the latest run
    assert 0 < stats["unique_impressions"] <= 7


def test_each_run_of_a_birthday_plan_is_read_for_its_own_14_days(app, plan_shop):
    today = (utcnow() + timedelta(hours=8)).date()
    year_ago = today - timedelta(days=370)  # about a year before, on another day of the year
    plan_shop.friend("去年壽星", birthday=date(2000, year_ago.month, year_ago.day))
    plan_shop.friend("今年壽星", birthday=date(2000, today.month, today.day))
    plan_id = _birthday_plan(app, plan_shop, GREETING, year_ago.isoformat())
    first_run = taipei(f"{year_ago} 10:00")
    plan_shop.send(now=first_run)
    with app.app_context():
        db.session.execute(db.update(SendPlan).where(SendPlan.id == plan_id)
                           .values(send_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    plan_shop.send()
    with app.app_context():
        assert [p.id for p in statistics.due(first_run + timedelta(days=1))] == [plan_id]
        assert statistics.due(first_run + timedelta(days=15)) == []  # the first run's 14 days are over …
        assert statistics.due(first_run + timedelta(days=200)) == []  # … and the next run is not yet
        assert [p.id for p in statistics.due(utcnow() + timedelta(days=13))] == [plan_id]  # the latest run's
