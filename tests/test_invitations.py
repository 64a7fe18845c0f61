"""Invitations: staff create a shop with its owner's e-mail only, the owner sets their own password from the
link; an owner invites a second person; expired, used, replaced and tampered links get a page that says so
(Chinese by default) and change nothing."""
import re
from datetime import timedelta

import pytest

from tests.wizard_helpers import page_text
from wizard.extensions import db
from wizard.models import AuditEntry, Invitation, MailMessage, Shop, User, utcnow

pytest_plugins = ["tests.smtp_helpers"]  # the smtp_server and smtp_app fixtures
NEW_SHOP = {"slug": "shop-b", "name": "乙店", "owner_email": "b@example.com"}
LINK = re.compile(r"http://127\.0\.0\.1:\d+(/invite/[A-Za-z0-9_-]{43})")
PASSWORD = "a long new password"


def link_in(message):
    return LINK.search(message.get_content()).group(1)


def field_errors(response):
    return dict(re.findall(r'<p class="field-error" id="([\w-]+)-error">(.*?)</p>', page_text(response)))


def users(app):
    with app.app_context():
        return sorted(db.session.scalars(db.select(User.email)).all())


def test_staff_create_a_shop_and_its_owner_sets_their_own_password_from_the_mail(smtp_app, app, client, staff_zh,
                                                                                smtp_server):
    response = client.post("/shops/new", data=NEW_SHOP)
    assert response.status_code == 302
    assert users(app) == ["staff@example.com"]  # no account until the owner accepts
    path = link_in(smtp_server.messages[0])
    with app.app_context():  # only the digest is stored, nowhere the token itself
        invitation = db.session.scalar(db.select(Invitation))
        token = path.rsplit("/", 1)[1]
        assert invitation.token_digest != token and token not in invitation.token_digest
        assert invitation.expires_at - invitation.created_at == timedelta(hours=72)
        for entry in db.session.scalars(db.select(AuditEntry)):
            assert token not in str(entry.detail) and token not in (entry.target or "")

    owner = app.test_client()
    page = owner.get(path)
    assert page.status_code == 200
    assert "您受邀管理「乙店」" in page_text(page) and "b@example.com" in page_text(page)
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    accepted = owner.post(path, data={"password": PASSWORD, "confirm": PASSWORD})
    assert accepted.status_code == 302 and accepted.headers["Location"].endswith("/setup/shop-b/")
    assert owner.get("/setup/shop-b/prepare").status_code == 200  # signed in, on their shop
    assert users(app) == ["b@example.com", "staff@example.com"]
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(email="b@example.com"))
        assert (user.shop.slug, user.is_staff) == ("shop-b", False)
    # the password is theirs from now on
    fresh = app.test_client()
    assert fresh.post("/login", data={"email": "b@example.com", "password": PASSWORD}).status_code == 302


def test_a_password_the_rules_refuse_is_said_and_the_link_still_works(app, client, staff_zh):
    client.post("/shops/new", data=NEW_SHOP)
    path = link_from_outbox(app)
    visitor = app.test_client()

    short = visitor.post(path, data={"password": "short", "confirm": "short"})
    assert short.status_code == 422
    assert field_errors(short) == {"password": "密碼至少要 10 個字元。"}
    mismatch = visitor.post(path + "?lang=en", data={"password": PASSWORD, "confirm": PASSWORD + "x"})
    assert mismatch.status_code == 422
    assert field_errors(mismatch) == {"confirm": "The two passwords are not the same."}
    same_as_email = visitor.post(path, data={"password": "b@example.com", "confirm": "b@example.com"})
    assert same_as_email.status_code == 422 and "password" in field_errors(same_as_email)
    assert users(app) == ["staff@example.com"]
    assert visitor.post(path, data={"password": PASSWORD, "confirm": PASSWORD}).status_code == 302


def link_from_outbox(app):
    """The invitation link of the newest mail written into instance/outbox/ (no MAIL_URL)."""
    import email
    import email.policy
    from pathlib import Path
    newest = sorted((Path(app.instance_path) / "outbox").glob("*.eml"))[-1]
    return link_in(email.message_from_bytes(newest.read_bytes(), policy=email.policy.default))


def test_a_used_link_says_so_in_chinese_and_changes_nothing(app, client, staff_zh):
    client.post("/shops/new", data=NEW_SHOP)
    path = link_from_outbox(app)
    app.test_client().post(path, data={"password": PASSWORD, "confirm": PASSWORD})

    again = app.test_client()
    page = again.get(path)
    assert page.status_code == 410
    assert "這個邀請已經使用過了" in page_text(page) and 'lang="zh-Hant-TW"' in page_text(page)
    post = again.post(path, data={"password": "another long password", "confirm": "another long password"})
    assert post.status_code == 410
    assert again.get("/setup/shop-b/prepare").status_code == 302  # not signed in
    fresh = app.test_client()  # the password set first still holds
    assert fresh.post("/login", data={"email": "b@example.com", "password": PASSWORD}).status_code == 302


def test_an_expired_link_says_so_and_creates_nothing(app, client, staff_zh):
    client.post("/shops/new", data=NEW_SHOP)
    path = link_from_outbox(app)
    with app.app_context():
        invitation = db.session.scalar(db.select(Invitation))
        invitation.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    visitor = app.test_client()
    assert "這個邀請已經過期" in page_text(visitor.get(path))
    response = visitor.post(path + "?lang=en", data={"password": PASSWORD, "confirm": PASSWORD})
    assert response.status_code == 410
    assert "This invitation has expired" in page_text(response)
    assert users(app) == ["staff@example.com"]


@pytest.mark.parametrize("token", ["x" * 43, "abc", "%00", "x" * 5000, "a.b~c!'", "ｘ" * 43, "../login"])
def test_a_tampered_or_unknown_link_gets_a_friendly_page_never_a_500(app, client, staff_zh, token):
    client.post("/shops/new", data=NEW_SHOP)
    path = link_from_outbox(app)
    for probe in (path[:-1], f"/invite/{token}"):
        response = app.test_client().get(probe)
        assert response.status_code == 404, probe
        # A NUL byte is refused before any view (wizard/guard.py), a slash is another path: the site's own
        # 404 page then.
        reaches_view = probe == path[:-1] or token not in ("%00", "../login")
        assert ("這個邀請連結無法使用" if reaches_view else "找不到這個頁面") in page_text(response)
        posted = app.test_client().post(probe, data={"password": PASSWORD, "confirm": PASSWORD})
        assert posted.status_code == 404
    assert users(app) == ["staff@example.com"]


def test_sending_again_replaces_the_older_link(smtp_app, app, client, staff_zh, smtp_server):
    client.post("/shops/new", data=NEW_SHOP)
    first = link_in(smtp_server.messages[0])
    people = page_text(client.get("/shops/people/?lang=en"))
    assert "b@example.com" in people and "Send the invitation again" in people

    response = client.post("/shops/shop-b/invite", data={"email": ""}, follow_redirects=True)
    assert "New invitation made. An invitation was sent to b@example.com." in page_text(response)
    second = link_in(smtp_server.messages[1])
    assert second != first
    old = app.test_client().get(first)
    assert old.status_code == 410 and "This invitation no longer works" in page_text(
        app.test_client().get(first + "?lang=en"))
    assert app.test_client().post(second, data={"password": PASSWORD, "confirm": PASSWORD}).status_code == 302


def test_the_new_shop_form_says_every_mistake_under_its_field_and_sends_nothing(app, client, staff_zh, make_user):
    make_user("taken@example.com")
    response = client.post("/shops/new", data={"slug": "Bad Slug", "name": " ", "owner_email": "nope"})
    assert response.status_code == 422
    assert field_errors(response) == {
        "slug": "「bad slug」不是有效的商店代碼：請只用小寫英文字母、數字和「-」。",
        "name": "請輸入商店名稱。",
        "owner_email": "「nope」不是電子郵件地址。",
    }
    taken = client.post("/shops/new", data=dict(NEW_SHOP, owner_email="Taken@Example.com"))
    assert field_errors(taken) == {"owner_email": "已經有使用者用 taken@example.com 這個電子郵件。"}
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Shop.id))) == 0
        assert db.session.scalar(db.select(db.func.count(Invitation.id))) == 0
        assert db.session.scalar(db.select(db.func.count(MailMessage.id))) == 0


def test_resend_for_an_unknown_shop_or_without_any_invitation_is_said(app, client, staff_zh, make_shop):
    assert client.post("/shops/nope/invite", data={"email": ""}).status_code == 404
    make_shop("shop-a", "甲店")  # made by the CLI's way: its owner never had an invitation
    response = client.post("/shops/shop-a/invite?lang=en", data={"email": ""}, follow_redirects=True)
    assert "This shop has no invitation to send again" in page_text(response)
    assert client.post("/shops/shop-a/invite", data={"email": "bad"}, follow_redirects=True).status_code == 200


def test_an_owner_invites_a_second_person_who_then_sees_only_that_shop(smtp_app, app, client, owner, make_shop,
                                                                       smtp_server):
    make_shop("other-shop", "別家店")
    page = page_text(client.get("/account/people"))
    assert "owner-sunny-bakery@example.com" in page and "No invitation is waiting." in page

    response = client.post("/account/people", data={"email": "helper@example.com"}, follow_redirects=True)
    assert "An invitation was sent to helper@example.com. The link works for 72 hours." in page_text(response)
    assert 'data-pending="helper@example.com"' in page_text(response)
    (message,) = smtp_server.messages
    assert "owner-sunny-bakery@example.com" in message.get_content()  # says who invites

    helper = app.test_client()
    assert helper.post(link_in(message), data={"password": PASSWORD, "confirm": PASSWORD}).status_code == 302
    assert helper.get(f"/setup/{owner}/prepare").status_code == 200
    assert helper.get("/setup/other-shop/prepare").status_code == 404
    listed = page_text(client.get("/account/people"))
    assert 'data-person="helper@example.com"' in listed and "data-pending" not in listed


def test_an_owners_invitation_answers_the_same_whether_the_address_has_an_account(
        smtp_app, app, client, owner, make_shop, smtp_server):
    other, other_email = make_shop("other-shop", "別家店")
    answers = {}
    for email in (other_email, "nobody-yet@example.com"):
        response = client.post("/account/people?lang=en", data={"email": email})
        page = client.get(response.headers["Location"])
        alerts = re.findall(r'<p class="flash flash-(\w+)">(.*?)</p>', page_text(page), re.S)
        answers[email] = (response.status_code, response.headers["Location"],
                          [(kind, text.replace(email, "EMAIL")) for kind, text in alerts])
        assert f'data-pending="{email}"' in page_text(page)
    assert answers[other_email] == answers["nobody-yet@example.com"]
    assert answers[other_email][2] == [("success", "An invitation was sent to EMAIL. The link works for 72 hours.")]
    # Only the account holder learns, in their own mailbox, that nothing can come of it; no link is sent.
    taken, fresh = sorted(smtp_server.messages, key=lambda message: message["To"] != other_email)
    assert "already has an account" in taken.get_content() and "/invite/" not in taken.get_content()
    assert "/invite/" in fresh.get_content()
    with app.app_context():
        assert db.session.scalar(db.select(User.shop_id).filter_by(email=other_email)) is not None
        assert db.session.scalar(db.select(db.func.count(User.id))) == 2  # nobody was added or moved


def test_an_owner_can_withdraw_an_invitation(app, client, owner, make_shop):
    bad = client.post("/account/people", data={"email": "not an address"})
    assert bad.status_code == 422 and "email" in field_errors(bad)

    client.post("/account/people", data={"email": "helper@example.com"})
    path = link_from_outbox(app)
    with app.app_context():
        invitation_id = db.session.scalar(db.select(Invitation.id))
    withdrawn = client.post(f"/account/people/invitations/{invitation_id}/withdraw", follow_redirects=True)
    assert "The invitation to helper@example.com is withdrawn" in page_text(withdrawn)
    assert app.test_client().get(path).status_code == 410
    with app.app_context():
        assert db.session.scalar(db.select(AuditEntry.action).order_by(AuditEntry.id.desc())) == \
            "invitation.revoked"


def test_an_owner_cannot_withdraw_another_shops_invitation(app, client, staff_zh, make_shop, login):
    client.post("/shops/new", data=NEW_SHOP)
    with app.app_context():
        invitation_id = db.session.scalar(db.select(Invitation.id))
    slug, email = make_shop("shop-a", "甲店")
    login(email)
    assert client.post(f"/account/people/invitations/{invitation_id}/withdraw").status_code == 404
    assert app.test_client().get(link_from_outbox(app)).status_code == 200  # still works


def test_staff_have_no_own_people_page(client, staff_zh):
    assert client.get("/account/people").status_code == 404


def test_a_shop_sends_at_most_twenty_invitations_a_day(app, client, owner):
    """Each invitation mails someone through our server: an owner's page is no way to mail anybody, any number."""
    for number in range(20):
        assert client.post("/account/people", data={"email": f"helper{number}@example.com"}).status_code == 302
    refused = client.post("/account/people", data={"email": "one-more@example.com"})
    assert refused.status_code == 422
    assert field_errors(refused) == {"email": "This shop has sent 20 invitations in the last 24 hours. "
                                              "Try again tomorrow."}
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Invitation.id))) == 20


def test_a_deactivated_owners_invitation_lets_nobody_in(app, client, owner, make_user, login):
    client.post("/account/people", data={"email": "helper@example.com"})
    path = link_from_outbox(app)
    staff = app.test_client()
    staff_email = make_user("staff@example.com", staff=True)
    assert staff.post("/login", data={"email": staff_email, "password": "correct horse"}).status_code == 302
    with app.app_context():
        owner_id = db.session.scalar(db.select(User.id).filter_by(email=f"owner-{owner}@example.com"))
    staff.post(f"/shops/people/{owner_id}/deactivate")
    assert app.test_client().post(path, data={"password": PASSWORD, "confirm": PASSWORD}).status_code == 410
    assert "helper@example.com" not in users(app)


@pytest.mark.parametrize("name", ["乙店\u2028分店", "乙店\u2029二館", "乙店\t分店", "乙店\u202e店", "乙店\r\n二館"])
def test_a_shop_name_on_more_than_one_line_is_refused_with_a_clear_message(app, client, staff_zh, name):
    response = client.post("/shops/new", data=dict(NEW_SHOP, name=name))
    assert response.status_code == 422
    assert field_errors(response) == {"name": "商店名稱必須是一行文字，不能有換行或控制字元。"}
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Shop.id))) == 0


def test_a_shop_name_stored_with_a_line_separator_does_not_stop_its_mail(smtp_app, app, client, staff_zh,
                                                                        smtp_server):
    """A name stored before names were checked: its invitations still go out, the subject on one line."""
    with app.app_context():
        db.session.add(Shop(slug="old-shop", name="舊店\u2028二館"))
        db.session.commit()
    response = client.post("/shops/old-shop/invite?lang=en", data={"email": "owner@example.com"},
                           follow_redirects=True)
    assert response.status_code == 200
    (message,) = smtp_server.messages
    assert "舊店 二館" in message["Subject"] and "\u2028" not in message["Subject"]
    with app.app_context():
        row = db.session.scalar(db.select(MailMessage))
        assert row.error is None and "舊店 二館" in row.subject
def test_the_invitation_says_until_when_in_taipei_time_in_both_languages(smtp_app, app, client, staff_zh,
                                                                         smtp_server):
    from wizard.i18n import localtime
    assert client.post("/shops/new", data=NEW_SHOP).status_code == 302
    body = smtp_server.messages[0].get_content()
    with app.app_context():
        until = localtime(db.session.scalar(db.select(Invitation)).expires_at)
    assert f"到 {until}（台北時間）" in body
    assert f"until {until} (Taipei time)" in body
    assert "UTC" not in body
