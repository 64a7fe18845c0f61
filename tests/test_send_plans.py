"""Send plans, end to end against the LINE sandbox: who gets a plan is decided when it starts (consent withdrawn
or a block since scheduling leaves the customer out), the month's quota is never overrun without the owner's
word, a plan can be cancelled before it starts and paused and resumed while it sends, a birthday plan runs on
the right Taipei day (29 February included), the same Idempotency-Key makes one plan, and the API gives the
plan in the shape issue 16 names. Every customer gets a plan at most once."""
from datetime import date, timedelta

import pytest

from tests.plan_helpers import plan_shop_fixture, taipei  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import SendPlan, SendPlanRecipient, SendPlanRun, utcnow
from wizard.statuses import RecipientOutcome

OFFER = "週年慶全品項 8 折，只到週日！"
PERSONAL = "{name} 您好：週年慶全品項 8 折"


def _later():
    return (utcnow() + timedelta(hours=1)).isoformat() + "Z"


def _marketing(shop, template, **more):
    plan = dict(name="週年慶", template_id=template, purpose="marketing", audience={"all": True},
                send_at=_later(), up_to_quota=False)
    plan.update(more)
    return plan


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_consent_withdrawn_between_scheduling_and_sending_leaves_the_customer_out(app, plan_shop, text):
    mei = plan_shop.friend("林小美")
    wen = plan_shop.friend("陳大文")
    never = plan_shop.friend("王小明", consent=False)
    response = plan_shop.post(**_marketing(plan_shop, plan_shop.template(text)))
    assert response.status_code == 201, response.get_data(as_text=True)
    plan = response.get_json()
    assert plan["state"] == "scheduled" and plan["cost"]["messages"] == 2
    plan_shop.change(wen, marketing_consent=False, marketing_consent_at=utcnow())  # withdrawn by the form link
    plan_shop.make_due(plan["id"])
    plan_shop.send()
    assert plan_shop.received(mei) == [text.replace("{name}", "林小美")]
    assert plan_shop.received(wen) == [] and plan_shop.received(never) == []
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "sent" and plan["recipients"] == 1 and plan["sent"] == 1
    assert plan["left_out"] == {"no_consent": 2, "blocked": 0, "over_quota": 0}
    plan_shop.send()  # a later minute sends nothing again
    assert len(plan_shop.received(mei)) == 1


def test_consent_withdrawn_after_a_personal_plan_started_still_stops_its_message(app, plan_shop):
    mei = plan_shop.friend("林小美")
    wen = plan_shop.friend("陳大文")
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(PERSONAL))).get_json()
    plan_shop.make_due(plan["id"])
    plan_shop.tick()  # started: both messages are queued
    plan_shop.change(wen, marketing_consent=False)
    plan_shop.deliver()
    assert plan_shop.received(mei) == ["林小美 您好：週年慶全品項 8 折"] and plan_shop.received(wen) == []
    plan = plan_shop.plan(plan["id"])
    assert plan["sent"] == 1 and plan["left_out"]["no_consent"] == 1 and plan["state"] == "sent"


@pytest.mark.parametrize("audience", [{"all": True}, {"all": False, "filters": {"city": ["TPE"]}}],
                         ids=["all-friends-broadcast", "segment-multicast"])
def test_a_customer_who_blocked_after_scheduling_gets_nothing(app, plan_shop, audience):
    mei = plan_shop.friend("林小美")
    wen = plan_shop.friend("陳大文")
    plan = plan_shop.post(name="公休通知", template_id=plan_shop.template("12/25 公休一天"), purpose="service",
                          audience=audience, send_at=_later()).get_json()
    plan_shop.control.unfollow(plan_shop.id, wen)
    plan_shop.change(wen, blocked_at=utcnow())  # the unfollow event as the worker records it
    plan_shop.make_due(plan["id"])
    plan_shop.send()
    assert plan_shop.received(mei) == ["12/25 公休一天"] and plan_shop.received(wen) == []
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "sent" and plan["sent"] == 1 and plan["left_out"]["blocked"] == 1


def test_over_the_quota_is_refused_then_sent_up_to_it_with_the_rest_listed(app, plan_shop):
    plan_shop.control.update(plan_shop.id, quota=2)
    friends = [plan_shop.friend(name) for name in ("客人一", "客人二", "客人三", "客人四")]
    template = plan_shop.template(OFFER)
    response = plan_shop.post(**_marketing(plan_shop, template, send_at=None))
    assert response.status_code == 409
    assert response.get_json()["problems"]["up_to_quota"] == (
        "This plan needs 4 messages and 2 are left this month: choose “send only up to the quota” (2 customers "
        "would not get it), or make the audience smaller.")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlan.id))) == 0
    # The owner's way: the confirmation names who would be left out, and refuses without the choice.
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/new").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "週年慶", "template_id": template, "purpose": "marketing", "audience": "all",
        "when": "now"})
    assert response.status_code == 302
    confirm = response.headers["Location"]
    html = plan_shop.client.get(confirm).get_data(as_text=True)
    assert 'data-messages="4"' in html and 'data-left="2"' in html
    assert "2 customers would not get it:" in html and "客人三、客人四" in html and "客人一" not in html.split(
        "would not get it:")[1][:40]
    response = plan_shop.client.post(confirm, data={"csrf_token": token})
    assert response.status_code == 409 and "2 are left this month" in response.get_data(as_text=True)
    response = plan_shop.client.post(confirm, data={"csrf_token": token, "up_to_quota": "1"})
    assert response.status_code == 302
    plan_shop.send()
    assert [len(plan_shop.received(user)) for user in friends] == [1, 1, 0, 0]
    with app.app_context():
        plan = db.session.scalar(db.select(SendPlan))
        plan_id = plan.id
        left_out = db.session.scalars(db.select(SendPlanRecipient.contact_id).filter_by(
            outcome=RecipientOutcome.OVER_QUOTA).order_by(SendPlanRecipient.contact_id)).all()
        assert len(left_out) == 2
    plan = plan_shop.plan(plan_id)
    assert plan["state"] == "sent" and plan["sent"] == 2 and plan["left_out"]["over_quota"] == 2
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan_id}").get_data(as_text=True)
    assert '<dd data-count="over_quota">2</dd>' in html and '<dd data-count="sent">2</dd>' in html


def test_a_cancelled_plan_never_starts_and_cannot_be_cancelled_twice(app, plan_shop):
    mei = plan_shop.friend("林小美")
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(OFFER))).get_json()
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan['id']}/cancel", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    plan_shop.make_due(plan["id"])
    plan_shop.send()
    assert plan_shop.received(mei) == []
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan['id']}/cancel", json={})
    assert response.status_code == 409
    assert response.get_json()["message"] == "Nothing is left to cancel: the plan is “Cancelled”."
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlanRun.id))) == 0


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_a_plan_paused_while_sending_waits_and_goes_on_when_resumed(app, plan_shop, text):
    friends = [plan_shop.friend(f"客人{n}") for n in range(3)]
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(text))).get_json()
    api = f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan['id']}"
    response = plan_shop.client.post(api + "/pause", json={})
    assert response.status_code == 409  # not sending yet: a scheduled one-off plan is cancelled or changed
    plan_shop.make_due(plan["id"])
    plan_shop.tick()
    assert plan_shop.plan(plan["id"])["state"] == "sending"
    response = plan_shop.client.post(api + "/pause", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "paused"
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[], [], []]
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "Paused" in html and ">Resume</button>" in html
    response = plan_shop.client.post(api + "/resume", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "sending"
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[text.replace("{name}", f"客人{n}")]
                                                              for n in range(3)]
    assert plan_shop.plan(plan["id"])["state"] == "sent"
    assert plan_shop.client.post(api + "/resume", json={}).status_code == 409


def test_a_birthday_plan_runs_on_the_right_taipei_day_including_29_february(app, plan_shop):
    leap = plan_shop.friend("小華", birthday=date(2000, 2, 29))
    feb28 = plan_shop.friend("阿明", birthday=date(1990, 2, 28))
    march = plan_shop.friend("美美", birthday=date(1985, 3, 1))
    plan = plan_shop.post(name="生日祝福", template_id=plan_shop.template("生日快樂！送您一杯咖啡"),
                          purpose="service", audience={"all": True}, repeat="birthday", hour=10).get_json()
    assert plan["state"] == "scheduled" and plan["repeat"] == "birthday"
    with app.app_context():
        db.session.execute(db.update(SendPlan).values(send_at=taipei("2027-02-28 10:00")))
        db.session.commit()
    plan_shop.send(now=taipei("2027-02-28 09:59"))  # not yet: 10:00 in Taipei
    assert plan_shop.received(feb28) == []
    plan_shop.send(now=taipei("2027-02-28 10:00"))  # 2027 has no 29 February: 小華 is greeted today
    plan_shop.send(now=taipei("2027-02-28 10:01"))
    greeting = ["生日快樂！送您一杯咖啡"]
    assert plan_shop.received(leap) == greeting and plan_shop.received(feb28) == greeting
    assert plan_shop.received(march) == []
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "scheduled" and plan["send_at"] == "2027-03-01T02:00:00Z"
    plan_shop.send(now=taipei("2027-03-01 10:00"))
    assert plan_shop.received(march) == ["生日快樂！送您一杯咖啡"] and len(plan_shop.received(leap)) == 1
    with app.app_context():
        days = db.session.scalars(db.select(SendPlanRun.day).order_by(SendPlanRun.day)).all()
    assert days == [date(2027, 2, 28), date(2027, 3, 1)]
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "Someone born on 29 February is greeted on 28 February in a year without one." in html


def test_the_same_idempotency_key_twice_makes_one_plan(app, plan_shop):
    mei = plan_shop.friend("林小美")
    template = plan_shop.template(OFFER)
    first = plan_shop.post(key="order-2026-12-07-1", **_marketing(plan_shop, template, send_at=None))
    again = plan_shop.post(key="order-2026-12-07-1", **_marketing(plan_shop, template, send_at=None))
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    other = plan_shop.post(key="order-2026-12-07-2", **_marketing(plan_shop, template))
    assert other.status_code == 201 and other.get_json()["id"] != first.get_json()["id"]
    plan_shop.send()
    assert plan_shop.received(mei) == [OFFER]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlan.id))) == 2


def test_the_api_gives_a_plan_in_the_issues_shape(app, plan_shop):
    plan_shop.friend("林小美", city="TPE")
    plan_shop.friend("陳大文", city="KHH")
    template = plan_shop.template(OFFER)
    day = (utcnow() + timedelta(days=30)).date()
    response = plan_shop.post(name="台北門市開幕", template_id=template, purpose="marketing",
                              audience={"all": False, "filters": {"city": ["TPE"], "form_filled": True}},
                              send_at=f"{day}T18:00:00+08:00", repeat=None, up_to_quota=False)
    assert response.status_code == 201
    plan = response.get_json()
    assert plan == {
        "id": plan["id"], "name": "台北門市開幕", "template_id": template, "purpose": "marketing",
        "audience": {"all": False, "filters": {"city": ["TPE"], "form_filled": True}},
        "send_at": f"{day}T10:00:00Z", "repeat": None, "up_to_quota": False, "state": "scheduled",
        "recipients": 0, "sent": 0, "left_out": {"no_consent": 0, "blocked": 0, "over_quota": 0}, "failed": 0,
        "cost": {"messages": 1, "quota_left": plan["cost"]["quota_left"]},
    }
    assert isinstance(plan["cost"]["quota_left"], int)
    listed = plan_shop.client.get(f"/api/v1/shops/{plan_shop.slug}/send-plans").get_json()
    assert listed == {"send_plans": [plan]}


def test_lines_statistics_of_the_plan_show_on_its_page_with_their_time(app, plan_shop):
    from wizard.plans import statistics
    friends = [plan_shop.friend(f"客人{n}") for n in range(10)]
    plan_shop.friend("不要廣告", consent=False)  # a marketing plan goes by multicast to the 10 who agreed
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(OFFER), send_at=None)).get_json()
    plan_shop.send()
    assert all(plan_shop.received(user) == [OFFER] for user in friends)
    page = f"/c/{plan_shop.slug}/plans/{plan['id']}"
    assert "appear here the day after the plan sends" in plan_shop.client.get(page).get_data(as_text=True)
    tomorrow = utcnow() + timedelta(days=1)
    with app.app_context():
        assert statistics.refresh_due(tomorrow) == 1
        assert statistics.refresh_due(tomorrow + timedelta(hours=1)) == 0  # once a day
        stats = db.session.get(SendPlan, plan["id"]).stats
        assert statistics.due(tomorrow + timedelta(days=15)) == []  # 14 days after the send, no more
    # The requests carried the plan's unit: LINE counts opens among the 10 who got it.
    assert 0 < stats["unique_impressions"] <= 10 and stats["impressions"] >= stats["unique_impressions"]
    html = plan_shop.client.get(page).get_data(as_text=True)
    assert f'<dd data-stat="unique_impressions">{stats["unique_impressions"]}</dd>' in html
    assert "As LINE counted them at " in html


def test_a_plan_to_every_friend_goes_by_broadcast_and_says_line_has_no_plan_statistics_for_it(app, plan_shop):
    from wizard.plans import statistics
    friends = [plan_shop.friend(f"客人{n}") for n in range(3)]
    plan = plan_shop.post(name="公休通知", template_id=plan_shop.template("12/25 公休一天"), purpose="service",
                          audience={"all": True}).get_json()
    plan_shop.send()
    assert [plan_shop.received(user) for user in friends] == [["12/25 公休一天"]] * 3
    assert {sent["kind"] for sent in plan_shop.control.sent_messages(plan_shop.id)} == {"broadcast"}
    with app.app_context():
        assert statistics.due(utcnow() + timedelta(days=1)) == []
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "LINE does not count opens and clicks per plan for a message to every friend" in html


def test_staff_acting_for_a_shop_see_the_banner_and_their_plans_are_audited(app, plan_shop, make_user):
    from wizard.models import AuditEntry
    plan_shop.friend("林小美")
    template = plan_shop.template(OFFER)
    staff = app.test_client()
    email = make_user("helper@example.com", staff=True)
    assert staff.post("/login", data={"email": email, "password": "correct horse"}).status_code == 302
    page = staff.get(f"/c/{plan_shop.slug}/plans?lang=en")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Acting for 晴天烘焙坊 as staff (helper@example.com)" in html
    # The free plan's 200 messages at a glance.
    assert "0 of 200 messages used this month: 200 left." in html and "The free plan" in html
    response = staff.post(f"/api/v1/shops/{plan_shop.slug}/send-plans", json=_marketing(plan_shop, template))
    assert response.status_code == 201
    plan_id = response.get_json()["id"]
    assert staff.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/cancel", json={}).status_code == 200
    with app.app_context():
        entries = db.session.execute(db.select(AuditEntry.action, AuditEntry.actor)
                                     .where(AuditEntry.action.like("send_plan.%")).order_by(AuditEntry.id)).all()
    assert entries == [("send_plan.created", "helper@example.com"), ("send_plan.cancelled", "helper@example.com")]


def test_a_scheduled_plan_can_be_changed_until_it_starts_and_not_after(app, plan_shop):
    mei = plan_shop.friend("林小美")
    template = plan_shop.template(OFFER)
    plan = plan_shop.post(**_marketing(plan_shop, template)).get_json()
    edit = f"/c/{plan_shop.slug}/plans/{plan['id']}/edit"
    html = plan_shop.client.get(edit).get_data(as_text=True)
    assert 'value="週年慶"' in html
    token = html.split('name="csrf_token" value="')[1].split('"')[0]
    local = (utcnow() + timedelta(hours=8, days=2)).replace(second=0, microsecond=0)
    form = {"csrf_token": token, "name": "週年慶（延期）", "template_id": template, "purpose": "marketing",
            "audience": "all", "when": "once", "send_at": local.strftime("%Y-%m-%dT%H:%M")}
    response = plan_shop.client.post(edit, data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith("/confirm")
    assert plan_shop.plan(plan["id"])["state"] == "draft"  # changed: to be confirmed again
    html = plan_shop.client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Goes out at {local:%Y-%m-%d %H:%M} (Taipei time)." in html
    plan_shop.client.post(response.headers["Location"], data={"csrf_token": token})
    changed = plan_shop.plan(plan["id"])
    assert changed["state"] == "scheduled" and changed["name"] == "週年慶（延期）"
    assert changed["send_at"] == (local - timedelta(hours=8)).isoformat() + "Z"
    plan_shop.make_due(plan["id"])
    plan_shop.send()
    assert plan_shop.received(mei) == [OFFER]
    response = plan_shop.client.post(edit, data=dict(form, name="太遲了"), follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "This plan has started (“Sent”): it can no longer be changed" in html
    assert plan_shop.plan(plan["id"])["name"] == "週年慶（延期）"


def test_two_workers_starting_the_same_plan_at_once_start_it_once(app, plan_shop):
    import threading
    from wizard.plans import runs
    friends = [plan_shop.friend(f"客人{n}") for n in range(5)]
    plan_shop.friend("不要廣告", consent=False)
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(OFFER))).get_json()
    plan_shop.make_due(plan["id"])
    ready = threading.Barrier(2)
    started, errors = [], []

    def worker():
        with app.app_context():
            ready.wait(timeout=10)
            try:
                started.append(runs.start(plan["id"]))
            except Exception as exc:  # a busy database: that worker's minute is lost, the work is not
                errors.append(type(exc).__name__)
                db.session.rollback()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len([run for run in started if run is not None]) == 1, (started, errors)
    plan_shop.send()  # and a later minute finds nothing to start either
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 5
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlanRun.id))) == 1
        assert db.session.scalar(db.select(db.func.count(SendPlanRecipient.id))) == 6


@pytest.mark.parametrize("status", [429, 500])
def test_a_line_429_or_500_mid_plan_is_retried_and_everyone_gets_it_once(app, plan_shop, status):
    from wizard.models import OutgoingBatch
    friends = [plan_shop.friend(f"客人{n}") for n in range(3)]
    plan_shop.friend("不要廣告", consent=False)
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(OFFER))).get_json()
    plan_shop.make_due(plan["id"])
    retry_after = 1 if status == 429 else None
    plan_shop.control.fail(plan_shop.id, status, times=1, retry_after=retry_after)
    plan_shop.tick()  # LINE did not tell the quota: the plan waits for the next minute
    assert plan_shop.plan(plan["id"])["state"] == "scheduled"
    plan_shop.tick()
    plan_shop.control.fail(plan_shop.id, status, times=1, retry_after=retry_after)
    plan_shop.deliver()  # the multicast meets LINE's refusal
    assert [plan_shop.received(user) for user in friends] == [[], [], []]
    assert plan_shop.plan(plan["id"])["state"] == "sending"
    with app.app_context():  # the Retry-After or the backoff has passed
        db.session.execute(db.update(OutgoingBatch).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[OFFER]] * 3
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "sent" and plan["sent"] == 3 and plan["failed"] == 0


@pytest.mark.parametrize("text", [OFFER, PERSONAL], ids=["multicast", "personal"])
def test_a_plan_cancelled_while_sending_sends_nothing_more(app, plan_shop, text):
    friends = [plan_shop.friend(f"客人{n}") for n in range(3)]
    plan_shop.friend("不要廣告", consent=False)
    plan = plan_shop.post(**_marketing(plan_shop, plan_shop.template(text))).get_json()
    plan_shop.make_due(plan["id"])
    plan_shop.tick()
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan['id']}/cancel", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    plan_shop.deliver()
    assert [plan_shop.received(user) for user in friends] == [[], [], []]
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "cancelled" and plan["sent"] == 0 and plan["recipients"] == 3
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert '<dd data-count="cancelled">3</dd>' in html


def test_a_plan_for_next_month_is_not_refused_for_this_months_used_up_quota(app, plan_shop):
    """LINE's quota is per calendar month (Japan time): with this month's messages used up, a plan for a day of
    next month is accepted and costed against that month's full quota; this month's plans are still refused."""
    plan_shop.control.update(plan_shop.id, quota=2)
    for name in ("客人一", "客人二"):
        plan_shop.friend(name)
    template = plan_shop.template(OFFER)
    assert plan_shop.post(**_marketing(plan_shop, template, send_at=None)).status_code == 201
    plan_shop.send()  # this month's two messages are used
    now = utcnow()
    next_month = (now.replace(day=1) + timedelta(days=40)).replace(day=10, hour=3, minute=0, second=0,
                                                                    microsecond=0)
    later = plan_shop.post(**_marketing(plan_shop, template, send_at=next_month.isoformat() + "Z"))
    assert later.status_code == 201, later.get_data(as_text=True)
    assert later.get_json()["state"] == "scheduled" and later.get_json()["cost"] == {"messages": 2, "quota_left": 2}
    again = plan_shop.post(**_marketing(plan_shop, template, send_at=None))
    assert again.status_code == 409 and "0 are left this month" in again.get_json()["problems"]["up_to_quota"]
