"""Send plans belong to their shop: another shop's owner can neither see nor act on them, through any page or
the API (a 404, the same as for a plan that does not exist), and a refused request says what is wrong with
each field and writes nothing."""
from datetime import datetime

import pytest

from wizard.extensions import db
from wizard.models import AuditEntry, MessageTemplate, SendPlan, Shop
from wizard.statuses import PlanState


def _plan(app, slug, state=PlanState.SCHEDULED):
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        template = MessageTemplate(shop_id=shop.id, name="週年慶", messages=[{"type": "text", "text": "週年慶 8 折"}])
        db.session.add(template)
        db.session.flush()
        plan = SendPlan(shop_id=shop.id, name="週年慶通知", template_id=template.id, purpose="marketing",
                        audience={"all": True, "filters": {}}, send_at=datetime(2030, 1, 1, 2, 0), state=state)
        db.session.add(plan)
        db.session.commit()
        return plan.id, template.id


@pytest.fixture
def other_shops_plan(app, make_shop, owner):
    """A plan of another shop (``rainy-cafe``) while the owner of ``sunny-bakery`` is signed in."""
    make_shop("rainy-cafe", "雨天咖啡")
    plan_id, _template = _plan(app, "rainy-cafe")
    return plan_id


@pytest.mark.parametrize("method, path", [
    ("get", "/c/rainy-cafe/plans"),
    ("get", "/c/rainy-cafe/plans/new"),
    ("get", "/c/rainy-cafe/plans/{id}"),
    ("get", "/c/sunny-bakery/plans/{id}"),
    ("get", "/c/rainy-cafe/plans/{id}/edit"),
    ("get", "/c/sunny-bakery/plans/{id}/edit"),
    ("get", "/c/rainy-cafe/plans/{id}/confirm"),
    ("post", "/c/rainy-cafe/plans/{id}/cancel"),
    ("post", "/c/sunny-bakery/plans/{id}/cancel"),
    ("post", "/c/sunny-bakery/plans/{id}/pause"),
    ("post", "/c/sunny-bakery/plans/{id}/resume"),
    ("get", "/api/v1/shops/rainy-cafe/send-plans"),
    ("post", "/api/v1/shops/rainy-cafe/send-plans"),
    ("get", "/api/v1/shops/rainy-cafe/send-plans/{id}"),
    ("get", "/api/v1/shops/sunny-bakery/send-plans/{id}"),
    ("post", "/api/v1/shops/rainy-cafe/send-plans/{id}/cancel"),
    ("post", "/api/v1/shops/sunny-bakery/send-plans/{id}/cancel"),
    ("post", "/api/v1/shops/rainy-cafe/send-plans/{id}/pause"),
    ("post", "/api/v1/shops/rainy-cafe/send-plans/{id}/resume"),
])
def test_another_shops_owner_can_neither_see_nor_act_on_its_plans(app, client, other_shops_plan, method, path):
    response = getattr(client, method)(path.format(id=other_shops_plan), json={} if "api" in path else None)
    assert response.status_code == 404
    assert "週年慶" not in response.get_data(as_text=True)
    with app.app_context():
        plan = db.session.get(SendPlan, other_shops_plan)
        assert plan.state == PlanState.SCHEDULED and db.session.scalar(db.select(db.func.count(SendPlan.id))) == 1


def test_the_api_without_a_session_or_token_is_401(app, make_shop):
    make_shop()
    response = app.test_client().get("/api/v1/shops/sunny-bakery/send-plans")
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"


def test_a_refused_plan_says_what_is_wrong_with_each_field_and_writes_nothing(app, client, owner, make_shop):
    make_shop("rainy-cafe", "雨天咖啡")
    _other_plan, other_template = _plan(app, "rainy-cafe")
    response = client.post(f"/api/v1/shops/{owner}/send-plans", json={
        "name": " ", "template_id": other_template, "purpose": "spam", "audience": "everyone",
        "send_at": "2020-01-01T10:00:00+08:00", "up_to_quota": "yes", "colour": "red"})
    assert response.status_code == 400
    problems = response.get_json()["problems"]
    assert problems == {
        "audience": "Choose who gets it: all friends, or friends matching the conditions.",
        "colour": "“colour” is not a field of a send plan.",
        "name": "Give the plan a name, so you can find it in the list.",
        "purpose": "Choose the purpose: marketing (only to customers who agreed to receive it) or service.",
        "send_at": "That time has passed: choose a later one, or send now.",
        "template_id": "Choose one of this shop's message templates.",
        "up_to_quota": "“up_to_quota” is true or false.",
    }
    response = client.post(f"/api/v1/shops/{owner}/send-plans", json={
        "name": "生日快樂", "template_id": other_template, "purpose": "service", "audience": {"all": True},
        "repeat": "weekly", "send_at": "tomorrow"})
    assert response.status_code == 400
    problems = response.get_json()["problems"]
    assert problems["repeat"].startswith("Choose when: now, once at a time")
    response = client.post(f"/api/v1/shops/{owner}/send-plans", json={
        "name": "生日快樂", "template_id": other_template, "purpose": "service", "audience": {"all": True},
        "repeat": "birthday", "hour": 24})
    assert response.get_json()["problems"]["hour"] == "Choose the hour (0 to 23, Taipei time) the greetings go out."
    response = client.post(f"/api/v1/shops/{owner}/send-plans", json={
        "name": "x", "template_id": other_template, "purpose": "service", "audience": {"all": True},
        "send_at": "next friday"})
    assert response.get_json()["problems"]["send_at"] == ("“next friday” is not a date and time: write it like "
                                                          "2026-12-24 18:00.")
    response = client.post(f"/api/v1/shops/{owner}/send-plans", data="not json", content_type="text/plain")
    assert response.status_code == 400 and "Send a JSON object" in response.get_json()["message"]
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=owner))
        assert db.session.scalar(db.select(db.func.count(SendPlan.id)).filter_by(shop_id=shop.id)) == 0
        assert db.session.scalar(db.select(db.func.count(AuditEntry.id))
                                 .where(AuditEntry.action.like("send_plan.%"))) == 0


def test_the_new_plan_page_shows_each_problem_beside_its_field_in_chinese(app, client, owner):
    client.get("/?lang=zh_Hant_TW")
    page = client.get(f"/c/{owner}/plans/new")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'lang="zh-Hant-TW"' in html and 'name="csrf_token"' in html
    token = html.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(f"/c/{owner}/plans/new", data={"csrf_token": token, "name": "", "purpose": "marketing",
                                                          "audience": "filters", "when": "once", "send_at": ""})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="name-error"' in html and 'aria-invalid="true"' in html and 'role="alert"' in html
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(SendPlan.id))) == 0
