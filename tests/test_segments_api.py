"""``POST /api/v1/shops/<slug>/audience/count``: how many friends of the shop's connected channel the filters
pick, for the shop's owner (session) and staff (session or Bearer token); refused filters are a 400 with a
message per key; another shop's owner gets the 404 of a shop that does not exist; nobody signed in a 401."""
from datetime import date, datetime

import pytest

from tests.test_segments_pages import add
from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import Channel, Shop


@pytest.fixture
def shop(app, owner):
    channel_id = make_channel(app, owner)["id"]
    add(app, channel_id, "林小美", city="TPE", gender="female", birthday=date(1990, 3, 15),
        form_filled_at=datetime(2026, 3, 2), wrote_days_ago=1)
    add(app, channel_id, "陳大文", city="TPE", gender="male", form_filled_at=datetime(2026, 3, 2),
        blocked_at=datetime(2026, 3, 3))
    add(app, channel_id, "王阿明", city="NWT", gender="male", form_filled_at=datetime(2026, 3, 4))
    add(app, channel_id, "路過的人")
    return owner


def count(client, slug, body, **kwargs):
    return client.post(f"/api/v1/shops/{slug}/audience/count", json=body, **kwargs)


@pytest.mark.parametrize("filters, contacts", [
    ({}, 3),  # every friend; the blocked one never
    ({"city": ["TPE"]}, 1),
    ({"city": ["TPE", "NWT"], "form_filled": True}, 2),
    ({"gender": ["male"], "city": ["TPE"]}, 0),
    ({"form_filled": False}, 1),
    ({"birthday_month": [3], "age_min": 30, "age_max": 50}, 1),
    ({"friend_since_from": "2026-03-01", "friend_since_to": "2026-03-01"}, 3),
    ({"messaged_within_days": 7}, 1),
    ({"city": None, "gender": []}, 3),  # nothing chosen narrows nothing
])
def test_the_owner_counts_an_audience(client, shop, filters, contacts):
    response = count(client, shop, {"filters": filters})
    assert response.status_code == 200
    assert response.get_json() == {"contacts": contacts}


def test_refused_filters_answer_400_with_a_message_per_key(client, shop):
    client.get("/?lang=zh_Hant_TW")  # the API speaks English whatever the session's language
    response = count(client, shop, {"filters": {"city": ["Taipei"], "age_min": "20", "birthday_month": [0],
                                                "friend_since_to": "yesterday", "colour": "red"}})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request"
    assert body["problems"] == {
        "age_min": "The youngest age must be a whole number of years from 0 to 150.",
        "birthday_month": "“0” is not a month: months are numbers from 1 to 12.",
        "city": "“Taipei” is not a city or county: choose them from the list (codes such as TPE for Taipei City).",
        "colour": "“colour” is not a filter. The filters are: city, gender, birthday_month, age_min, age_max, "
                  "form_filled, friend_since_from, friend_since_to, messaged_within_days.",
        "friend_since_to": "“yesterday” is not a date: write it as 2026-03-01.",
    }
    assert body["message"] == " ".join(body["problems"].values())


@pytest.mark.parametrize("body, key", [
    ({}, "filters"),
    ({"filters": ["city"]}, "filters"),
    ({"filters": {}, "audience": "all"}, "audience"),
])
def test_a_body_without_filters_is_refused(client, shop, body, key):
    response = count(client, shop, body)
    assert response.status_code == 400 and list(response.get_json()["problems"]) == [key]


def test_a_body_that_is_not_json_is_refused(client, shop):
    page = client.get(f"/c/{shop}/contacts").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(f"/api/v1/shops/{shop}/audience/count", data="filters=city",
                           content_type="application/x-www-form-urlencoded", headers={"X-CSRFToken": token})
    assert response.status_code == 400
    assert response.get_json()["problems"] == {
        "body": "Send a JSON object (Content-Type: application/json) with “filters”."}


def test_a_shop_without_a_connected_channel_has_no_audience(app, client, shop):
    with app.app_context():
        channel = db.session.scalar(db.select(Channel).join(Shop).where(Shop.slug == shop))
        channel.disconnected_at = datetime(2026, 4, 1)
        db.session.commit()
    assert count(client, shop, {"filters": {}}).get_json() == {"contacts": 0}


def test_staff_by_token_and_nobody_else(app, client, shop, make_shop, make_user, login, runner):
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip().splitlines()[-1]
    client.post("/logout")
    anonymous = count(client, shop, {"filters": {}})
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    by_token = count(client, shop, {"filters": {"city": ["TPE"]}}, headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 200 and by_token.get_json() == {"contacts": 1}
    assert count(client, shop, {"filters": {}}, headers={"Authorization": "Bearer nope"}).status_code == 401
    _other, other_owner = make_shop("calm-tea", "平靜茶坊")
    make_channel(app, "calm-tea")
    login(other_owner)
    refused = count(client, shop, {"filters": {}})
    assert refused.status_code == 404 and refused.get_json()["error"] == "not_found"
    assert "contacts" not in refused.get_json()
    assert count(client, "calm-tea", {"filters": {}}).get_json() == {"contacts": 0}  # their own: nobody yet
    assert client.get(f"/api/v1/shops/{shop}/audience/count").status_code == 405
