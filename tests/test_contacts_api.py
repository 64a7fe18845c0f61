"""``GET /api/v1/shops/<slug>/contacts?page=N``: the shop's owners (session) and staff (session or Bearer
token) read its contacts 50 a page; anyone else gets 404 (or 401 unsigned); a bad page is a 400 in JSON."""
from datetime import datetime

import pytest

from tests.test_contacts import add_contacts
from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import User


@pytest.fixture
def shop(app, owner):
    channel = make_channel(app, owner)
    add_contacts(app, channel["id"], [
        {"display_name": "Mei", "customer_name": "林小美", "phone": "0912345678", "email": "mei@example.com",
         "form_filled_at": datetime(2026, 3, 2), "marketing_consent": True},
    ] + [{"display_name": f"客人 {n:02d}", "blocked_at": datetime(2026, 3, 3) if n == 0 else None} for n in range(60)])
    return owner


def test_the_owner_reads_the_contacts_page_by_page(client, shop):
    first = client.get(f"/api/v1/shops/{shop}/contacts")
    assert first.status_code == 200
    body = first.get_json()
    assert (body["page"], body["pages"], body["total"], len(body["contacts"])) == (1, 2, 61, 50)
    assert set(body["contacts"][0]) == {"line_user_id", "name", "phone", "email", "blocked", "form_filled",
                                        "marketing_consent"}
    second = client.get(f"/api/v1/shops/{shop}/contacts?page=2").get_json()
    assert len(second["contacts"]) == 11
    mei = next(c for c in second["contacts"] + body["contacts"] if c["name"] == "林小美")
    assert mei["phone"] == "0912345678" and mei["email"] == "mei@example.com"
    assert mei["form_filled"] is True and mei["marketing_consent"] is True and mei["blocked"] is False
    assert mei["line_user_id"].startswith("U") and len(mei["line_user_id"]) == 33
    blocked = next(c for c in second["contacts"] + body["contacts"] if c["name"] == "客人 00")
    assert blocked["blocked"] is True and blocked["form_filled"] is False and blocked["phone"] is None


@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=abc", "page=3", "colour=red"])
def test_a_bad_request_is_a_400_in_json(client, shop, query):
    response = client.get(f"/api/v1/shops/{shop}/contacts?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request" and body["message"]


def test_staff_by_bearer_token_and_nobody_else(app, client, shop, make_shop, make_user, login, runner):
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip().splitlines()[-1]
    client.post("/logout")
    anonymous = client.get(f"/api/v1/shops/{shop}/contacts")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    by_token = client.get(f"/api/v1/shops/{shop}/contacts", headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 200 and by_token.get_json()["total"] == 61
    wrong = client.get(f"/api/v1/shops/{shop}/contacts", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    _other, other_owner = make_shop("calm-tea", "平靜茶坊")
    login(other_owner)
    refused = client.get(f"/api/v1/shops/{shop}/contacts")
    assert refused.status_code == 404 and "林小美" not in refused.get_data(as_text=True)
    assert client.get("/api/v1/shops/calm-tea/contacts").get_json()["total"] == 0
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(email=other_owner)).shop_id is not None
