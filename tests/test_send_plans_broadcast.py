"""Who a plan to all friends reaches, and what it costs: a marketing plan goes only to the customers who
consented, by multicast, never to a friend the CRM has no record of; a service plan goes by broadcast, which
LINE sends to every friend of the account, and it costs LINE's own count of them (the follower insight), not
the customers the CRM knows. Over the quota a broadcast cannot stop short: "send only up to the quota" sends
by multicast to the known customers instead, and says who is left out. When LINE has not counted yesterday's
friends yet, the cost is the larger of the customers known and LINE's last count, and the page says so."""
from datetime import timedelta

import pytest

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import Channel, iso_utc, utcnow

NOTICE = "12/25 公休一天"
OFFER = "週年慶全品項 8 折"


def _service(shop, **more):
    plan = dict(name="公休通知", template_id=shop.template(NOTICE), purpose="service", audience={"all": True},
                send_at=(utcnow() + timedelta(hours=1)).isoformat() + "Z")
    plan.update(more)
    return plan


def _kinds(shop):
    return {sent["kind"] for sent in shop.control.sent_messages(shop.id)}


def _confirm_page(shop, template, purpose="service", up_to_quota=False):
    """The owner's way to the confirmation page of a plan to all friends, sent now: its HTML and URL."""
    page = shop.client.get(f"/c/{shop.slug}/plans/new").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = shop.client.post(f"/c/{shop.slug}/plans/new", data={
        "csrf_token": token, "name": "公休通知", "template_id": template, "purpose": purpose, "audience": "all",
        "when": "now"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return shop.client.get(response.headers["Location"]).get_data(as_text=True), response.headers["Location"], token


def test_a_marketing_plan_to_all_friends_never_reaches_a_friend_the_crm_has_no_record_of(app, plan_shop):
    """The review's case: one consenting customer and one friend from before the webhook. A broadcast would
    have reached both, and cost 2."""
    mei = plan_shop.friend("林小美", days_ago=3)
    stranger = plan_shop.stranger("早期好友", days_ago=3)
    response = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                              audience={"all": True})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["cost"]["messages"] == 1
    plan_shop.send()
    assert plan_shop.received(mei) == [OFFER]
    assert plan_shop.control.sent_messages(plan_shop.id, stranger) == []
    assert _kinds(plan_shop) == {"multicast"}
    assert plan_shop.control.quota(plan_shop.id)["totalUsage"] == 1


def test_a_service_plan_to_all_friends_goes_by_broadcast_and_costs_what_line_counts(app, plan_shop):
    """LINE counted 3 friends yesterday (two customers and a friend the CRM does not know); one customer became
    a friend today. The broadcast reaches and costs 4, the API and the page say 4, LINE counts 4."""
    known = [plan_shop.friend("林小美", days_ago=3), plan_shop.friend("陳大文", days_ago=3)]
    stranger = plan_shop.stranger("早期好友", days_ago=3)
    today = plan_shop.friend("新朋友")
    response = plan_shop.post(**_service(plan_shop))
    assert response.status_code == 201, response.get_data(as_text=True)
    plan = response.get_json()
    assert plan["cost"]["messages"] == 4

    html, _url, _token = _confirm_page(plan_shop, plan["template_id"])
    assert 'data-messages="4"' in html and 'data-recipients="3"' in html
    assert 'data-reach="4"' in html and 'data-unknown="1"' in html and 'data-reach-latest="yes"' in html
    assert "LINE counted 3 friends who can receive it on " in html

    plan_shop.make_due(plan["id"])
    plan_shop.send()
    for user in [*known, stranger, today]:
        assert plan_shop.received(user) == [NOTICE]
    assert _kinds(plan_shop) == {"broadcast"}
    assert plan_shop.control.quota(plan_shop.id)["totalUsage"] == 4
    plan = plan_shop.plan(plan["id"])
    assert plan["state"] == "sent" and plan["cost"]["messages"] == 4 and plan["sent"] == 3  # the known ones


@pytest.mark.parametrize("quota, sent, over_quota", [(3, 2, 0), (1, 1, 1)],
                         ids=["known-fit", "known-cut-too"])
def test_a_broadcast_over_the_quota_is_refused_then_goes_to_known_customers_up_to_it(
        app, plan_shop, quota, sent, over_quota):
    """Two customers and two friends the CRM does not know: the broadcast needs 4. LINE would refuse it whole
    (nobody gets it), so it is refused here; with "send only up to the quota" it goes by multicast to the
    known customers, as many as fit, and the two unknown friends do not get it."""
    plan_shop.control.update(plan_shop.id, quota=quota)
    known = [plan_shop.friend("客人一", days_ago=3), plan_shop.friend("客人二", days_ago=3)]
    strangers = [plan_shop.stranger("早期好友一", days_ago=3), plan_shop.stranger("早期好友二", days_ago=3)]
    plan = _service(plan_shop, send_at=None)
    response = plan_shop.post(**plan)
    assert response.status_code == 409
    left_out = 4 - sent
    assert response.get_json()["problems"]["up_to_quota"] == (
        f"This plan goes to every friend by broadcast: 4 messages, and {quota} are left this month. A broadcast "
        "cannot stop at the quota: choose “send only up to the quota” and it goes only to the customers the CRM "
        f"knows, as many as the quota allows ({left_out} friends would not get it), or make the audience "
        "smaller.")

    html, _url, _token = _confirm_page(plan_shop, plan["template_id"])
    assert 'data-messages="4"' in html and f'data-left="{quota}"' in html
    assert f"{left_out} customers would not get it:" in html and 'data-unknown-left-out="2"' in html
    assert "2 friends the CRM has no record of would not get it." in html

    response = plan_shop.post(**dict(plan, up_to_quota=True))
    assert response.status_code == 201, response.get_data(as_text=True)
    plan_shop.send()
    assert [len(plan_shop.received(user)) for user in known] == [1] * sent + [0] * over_quota
    assert all(plan_shop.control.sent_messages(plan_shop.id, user) == [] for user in strangers)
    assert _kinds(plan_shop) == {"multicast"}
    assert plan_shop.control.quota(plan_shop.id)["totalUsage"] == sent
    plan = plan_shop.plan(response.get_json()["id"])
    assert plan["state"] == "sent" and plan["sent"] == sent and plan["left_out"]["over_quota"] == over_quota


def test_when_line_has_not_counted_yesterday_the_cost_is_the_larger_of_the_known_and_the_last_count(
        app, plan_shop):
    """LINE counts a day some hours after it ends (``unready`` until then). The day before's count, then the
    daily checks' last reading, then the known customers: the larger of that and the customers known, and the
    page says it is an estimate."""
    plan_shop.friend("林小美", days_ago=3)
    plan_shop.stranger("早期好友一", days_ago=3)
    plan_shop.stranger("早期好友二", days_ago=3)
    template = plan_shop.template(NOTICE)

    plan_shop.control.update(plan_shop.id, insight_lag=86400)  # yesterday unready, the day before counted
    assert plan_shop.post(**_service(plan_shop, template_id=template)).get_json()["cost"]["messages"] == 3
    html, _url, _token = _confirm_page(plan_shop, template)
    assert 'data-messages="3"' in html and 'data-reach-latest="no"' in html
    assert "LINE has not counted yesterday's friends yet, so this is an estimate" in html

    plan_shop.control.update(plan_shop.id, insight_lag=5 * 86400)  # no day counted: the known customer only
    assert plan_shop.post(**_service(plan_shop, template_id=template)).get_json()["cost"]["messages"] == 1
    html, _url, _token = _confirm_page(plan_shop, template)
    assert 'data-messages="1"' in html
    assert "LINE has no count of the account's friends yet, so this is an estimate" in html

    with app.app_context():  # the daily checks (the watch) kept LINE's count of two days ago: 5, 1 blocking
        channel = db.session.get(Channel, plan_shop.channel["id"])
        end = utcnow() - timedelta(days=2)
        channel.check_results = dict(channel.check_results or {}, followers={
            "date": (end - timedelta(hours=1)).date().isoformat(), "at": iso_utc(end), "followers": 5, "blocks": 1})
        db.session.commit()
    assert plan_shop.post(**_service(plan_shop, template_id=template)).get_json()["cost"]["messages"] == 4
