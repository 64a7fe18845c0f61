"""``GET /api/v1/shops?state=…&page=…``: staff list every shop's recorded state, 50 a page; owners and
strangers are refused; a bad filter or page is a 400 that says what is wrong."""
from datetime import timedelta

import pytest

from wizard.extensions import db
from wizard.models import Shop, ShopHealth, utcnow


@pytest.fixture
def token(runner, make_user):
    staff = make_user("staff@example.com", staff=True)
    return runner.invoke(args=["user", "token", staff]).output.strip()


def get(client, query="", token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/api/v1/shops" + query, headers=headers)


def test_staff_list_broken_shops_by_page_with_state_reason_and_since(app, client, token):
    since = (utcnow() - timedelta(days=2)).replace(microsecond=0)
    with app.app_context():
        shops = [Shop(slug=f"shop-{n:02d}", name=f"店 {n:02d}") for n in range(60)]
        db.session.add_all(shops)
        db.session.flush()
        for n, shop in enumerate(shops):
            broken = n % 10 != 0  # 54 broken, 6 healthy
            db.session.add(ShopHealth(shop_id=shop.id, state="broken" if broken else "healthy",
                                      reason="wrong_secret" if broken else "connected",
                                      step="credentials" if broken else None, since=since + timedelta(minutes=n),
                                      checked_at=since, detail={}, updated_at=since))
        db.session.commit()

    first = get(client, "?state=broken", token)
    assert first.status_code == 200
    body = first.get_json()
    assert (body["page"], body["pages"], body["total"], len(body["shops"])) == (1, 2, 54, 50)
    assert body["shops"][0] == {"slug": "shop-01", "name": "店 01", "state": "broken", "reason": "wrong_secret",
                                "since": (since + timedelta(minutes=1)).isoformat() + "Z",
                                "fix_step": "credentials", "last_event_at": None,
                                "checked_at": since.isoformat() + "Z"}  # the longest broken first
    second = get(client, "?state=broken&page=2", token).get_json()
    assert [shop["slug"] for shop in second["shops"]] == ["shop-56", "shop-57", "shop-58", "shop-59"]
    assert {shop["slug"] for shop in first.get_json()["shops"] + second["shops"]}.isdisjoint(
        {f"shop-{n:02d}" for n in range(0, 60, 10)})
    everything = get(client, "", token).get_json()
    assert everything["total"] == 60 and everything["shops"][0]["state"] == "broken"


def test_a_shop_not_checked_yet_is_onboarding(app, client, token, make_shop):
    make_shop()
    assert get(client, "?state=onboarding", token).get_json()["shops"] == [{
        "slug": "sunny-bakery", "name": "晴天烘焙坊", "state": "onboarding", "reason": "not_checked",
        "since": None, "fix_step": None, "last_event_at": None, "checked_at": None}]


@pytest.mark.parametrize("query, words", [
    ("?state=sleepy", "There is no state “sleepy”: choose one of onboarding, healthy, attention, broken, dormant."),
    ("?page=0", "“0” is not a page number: pages are numbered from 1."),
    ("?page=x", "“x” is not a page number"),
    ("?page=2", "There is no page 2: the list has 1 page."),
    ("?colour=red", "Unknown parameter(s): colour."),
])
def test_bad_input_is_a_400_that_says_what_is_wrong(client, token, query, words):
    response = get(client, query, token)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert words in response.get_json()["message"]


def test_the_messages_are_english_whatever_the_session_speaks(client, make_user, login):
    login(make_user("staff@example.com", staff=True))
    client.get("/?lang=zh_Hant_TW")
    assert "There is no state" in client.get("/api/v1/shops?state=nope").get_json()["message"]
    assert client.get("/api/v1/shops").get_json()["total"] == 0


def test_owners_are_refused_and_strangers_asked_to_sign_in(client, make_shop, login):
    response = client.get("/api/v1/shops")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(client, "", "not-a-token").status_code == 401
    _slug, email = make_shop()
    login(email)
    response = client.get("/api/v1/shops?state=broken")
    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden", "message": "Only staff can list shops."}
