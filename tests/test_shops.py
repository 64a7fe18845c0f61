"""The staff new-shop form on /shops/: every error of a submit under its own field, in the page's language,
and nothing created unless every field is right."""
import re

import pytest

from wizard.extensions import db
from wizard.models import Invitation, Shop, User

GOOD = {"slug": "shop-b", "name": "乙店", "owner_email": "b@example.com"}


def field_errors(response):
    """{field name: its error text} as drawn under each field."""
    html = response.get_data(as_text=True)
    return dict(re.findall(r'<p class="field-error" id="([\w-]+)-error">(.*?)</p>', html))


def counts(app):
    with app.app_context():
        return (db.session.scalar(db.select(db.func.count(User.id))),
                db.session.scalar(db.select(db.func.count(Shop.id))))


def test_every_error_of_one_submit_stands_under_its_own_field_in_chinese(app, client, staff_zh):
    response = client.post("/shops/new", data={"slug": "Bad Slug", "name": "  ", "owner_email": "not-an-email"})

    assert response.status_code == 422
    assert field_errors(response) == {
        "slug": "「bad slug」不是有效的商店代碼：請只用小寫英文字母、數字和「-」。",
        "name": "請輸入商店名稱。",
        "owner_email": "「not-an-email」不是電子郵件地址。",
    }
    html = response.get_data(as_text=True)
    for field in ("slug", "name", "owner_email"):
        assert f'href="#{field}"' in html  # and each is in the summary at the top
    assert counts(app) == (1, 0)  # only the staff account


def test_no_password_is_asked_for_the_owner_who_is_invited_instead(app, client, staff_zh):
    """Issue 8: the owner chooses their own password from the invitation (tests/test_invitations.py)."""
    assert 'type="password"' not in client.get("/shops/new").get_data(as_text=True)
    response = client.post("/shops/new?lang=en", data=GOOD)

    assert response.status_code == 302
    assert counts(app) == (1, 1)  # the owner's account is made when they accept
    with app.app_context():
        assert db.session.scalar(db.select(Invitation.email)) == "b@example.com"


def test_a_taken_code_and_a_taken_e_mail_are_both_said_and_nothing_is_created(app, client, staff_zh, make_shop):
    make_shop("shop-a", "甲店")
    before = counts(app)
    response = client.post("/shops/new",
                           data=dict(GOOD, slug="shop-a", owner_email="owner-shop-a@example.com"))

    assert response.status_code == 422
    assert field_errors(response) == {"slug": "已經有商店使用 shop-a 這個代碼。",
                                      "owner_email": "已經有使用者用 owner-shop-a@example.com 這個電子郵件。"}
    assert counts(app) == before


def test_full_width_input_is_read_as_meant(app, client, staff_zh):
    response = client.post("/shops/new",
                           data=dict(GOOD, slug="ｓｈｏｐ－ｂ", owner_email=" Ｂ＠Example．com "))

    assert response.status_code == 302
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug="shop-b"))
        assert db.session.scalar(db.select(Invitation.email).filter_by(shop_id=shop.id)) == "b@example.com"


@pytest.mark.parametrize("name, message", [
    ("乙\x00店", "商店名稱必須是一行文字，不能有換行或控制字元。"),  # PostgreSQL refuses to store it: a 500 before
    ("店" * 201, "最多 200 個字。"),  # the column holds 200
])
def test_a_shop_name_the_database_cannot_hold_is_refused_under_the_name(app, client, staff_zh, name, message):
    response = client.post("/shops/new", data=dict(GOOD, name=name))

    assert response.status_code == 422
    assert field_errors(response) == {"name": message}
    assert counts(app) == (1, 0)
