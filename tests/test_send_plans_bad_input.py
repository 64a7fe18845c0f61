"""Input the send plans and the audiences cannot use is refused with a message at its field, never a 500, and
nothing is written: dates outside 1900-2100 (0001-01-01 or 9999-12-31 overflowed when turned into UTC), and
ids larger than the database holds (SQLite's driver raised OverflowError for them). Pages speak Chinese by
default; the API English. Both databases (the ``app`` fixture)."""
import pytest
from werkzeug.routing import IntegerConverter

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from wizard.extensions import db
from wizard.models import SendPlan
from wizard.views import BoundedInt

HUGE = "99999999999999999999"


def _token(plan_shop, path):
    page = plan_shop.client.get(path).get_data(as_text=True)
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def _plans(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(SendPlan.id)))


@pytest.mark.parametrize("send_at", ["0001-01-01T00:00", "9999-12-31T23:00-05:00", "1899-12-31T23:59+08:00"])
def test_the_api_refuses_a_send_time_out_of_range_at_its_field(app, plan_shop, send_at):
    response = plan_shop.post(name="週年慶", template_id=plan_shop.template("8 折"), purpose="service",
                              audience={"all": True}, send_at=send_at)
    assert response.status_code == 400
    assert response.get_json()["problems"] == {"send_at": (
        f"“{send_at}” is not a time a plan can be sent at: choose a date and time within the next year.")}
    assert _plans(app) == 0


@pytest.mark.parametrize("key, value", [("friend_since_from", "0001-01-01"), ("friend_since_to", "9999-12-31"),
                                        ("friend_since_to", "2101-01-01")])
def test_the_api_refuses_a_friend_since_date_out_of_range(app, plan_shop, key, value):
    message = f"“{value}” is out of range: choose a date from 1900-01-01 to 2100-12-31."
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/audience/count",
                                     json={"filters": {key: value}})
    assert response.status_code == 400 and response.get_json()["problems"] == {key: message}
    response = plan_shop.post(name="週年慶", template_id=plan_shop.template("8 折"), purpose="service",
                              audience={"all": False, "filters": {key: value}})
    assert response.status_code == 400 and response.get_json()["problems"] == {"audience": message}
    assert _plans(app) == 0


@pytest.mark.parametrize("key, value", [("friend_since_from", "0001-01-01"), ("friend_since_to", "9999-12-31")])
def test_the_pages_refuse_a_friend_since_date_out_of_range_in_chinese(app, plan_shop, key, value):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    message = f"「{value}」超出範圍：請選擇 1900-01-01 到 2100-12-31 之間的日期。"
    contacts = plan_shop.client.get(f"/c/{plan_shop.slug}/contacts?advanced=1&{key}={value}")
    assert contacts.status_code == 400 and message in contacts.get_data(as_text=True)
    for count in (f"/c/{plan_shop.slug}/contacts/count", f"/c/{plan_shop.slug}/plans/count"):
        response = plan_shop.client.get(f"{count}?{key}={value}")
        assert response.status_code == 400 and response.get_json()["problems"] == {key: message}
    # The plan form: refused at the field, no draft written (the confirmation used to fail after it was).
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/new")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "週年慶", "template_id": plan_shop.template("8 折"), "purpose": "service",
        "audience": "filters", key: value, "when": "now"})
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert _plans(app) == 0


def test_the_plan_form_refuses_a_send_time_out_of_range_in_chinese(app, plan_shop):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/new")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "週年慶", "template_id": plan_shop.template("8 折"), "purpose": "service",
        "audience": "all", "when": "once", "send_at": "0001-01-01T00:00"})
    assert response.status_code == 400
    assert "「0001-01-01T00:00」不是計畫可以發送的時間：請選擇一年內的日期與時間。" in response.get_data(as_text=True)
    assert _plans(app) == 0


@pytest.mark.parametrize("path", [
    "/c/{slug}/plans/{huge}", "/c/{slug}/plans/{huge}/edit", "/c/{slug}/plans/{huge}/confirm",
    "/c/{slug}/templates/{huge}/edit", "/c/{slug}/templates/{huge}/delete", "/c/{slug}/segments/{huge}/delete",
    "/c/contacts/{huge}", "/api/v1/shops/{slug}/send-plans/{huge}", "/api/v1/shops/{slug}/templates/{huge}",
])
def test_an_id_larger_than_the_database_holds_is_a_404(app, plan_shop, path):
    response = plan_shop.client.get(path.format(slug=plan_shop.slug, huge=HUGE))
    assert response.status_code == 404


def test_every_int_in_a_url_has_the_ceiling(app):
    """One converter for the whole app: a route added later cannot forget it."""
    converters = [converter for rule in app.url_map.iter_rules() for converter in rule._converters.values()
                  if isinstance(converter, IntegerConverter)]
    assert converters and all(isinstance(converter, BoundedInt) for converter in converters)


@pytest.mark.parametrize("field, value, problem", [
    ("template_id", 2**70, {"template_id": "Choose one of this shop's message templates."}),
    ("segment_id", 2**70, {"audience": "There is no such saved audience in this shop."}),
    ("template_id", -(2**70), {"template_id": "Choose one of this shop's message templates."}),
])
def test_an_id_larger_than_the_database_holds_in_json_is_a_400_at_its_field(app, plan_shop, field, value, problem):
    plan = dict(name="週年慶", template_id=plan_shop.template("8 折"), purpose="service", audience={"all": True})
    plan[field] = value
    response = plan_shop.post(**plan)
    assert response.status_code == 400 and response.get_json()["problems"] == problem
    assert _plans(app) == 0
