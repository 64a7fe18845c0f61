"""Staff deactivate and reactivate accounts on /shops/people/: a deactivated account cannot sign in and its
open sessions stop working at once; staff cannot deactivate themselves."""

from tests.wizard_helpers import page_text
from wizard.extensions import db
from wizard.models import AuditEntry, User


def user_id(app, email):
    with app.app_context():
        return db.session.scalar(db.select(User.id).filter_by(email=email))


def test_a_deactivated_owner_is_signed_out_at_once_and_cannot_sign_in_until_reactivated(app, client, staff,
                                                                                         make_shop):
    slug, email = make_shop()
    owner = app.test_client()
    assert owner.post("/login", data={"email": email, "password": "correct horse"}).status_code == 302
    assert owner.get(f"/setup/{slug}/prepare").status_code == 200

    response = client.post(f"/shops/people/{user_id(app, email)}/deactivate", follow_redirects=True)
    assert f"{email} is deactivated: they cannot sign in, and their sessions have ended." in page_text(response)
    # The owner's open session (and its remember cookie) no longer gets in.
    assert owner.get(f"/setup/{slug}/prepare").headers["Location"].startswith("/login")
    refused = app.test_client().post("/login?lang=en", data={"email": email, "password": "correct horse"})
    assert refused.status_code == 200
    assert "This account has been deactivated." in page_text(refused)
    wrong = app.test_client().post("/login?lang=en", data={"email": email, "password": "not the password"})
    assert "deactivated" not in page_text(wrong)  # only someone with the password learns it

    client.post(f"/shops/people/{user_id(app, email)}/reactivate")
    assert app.test_client().post("/login", data={"email": email, "password": "correct horse"}).status_code == 302
    with app.app_context():
        actions = db.session.scalars(db.select(AuditEntry.action).where(AuditEntry.target == email)
                                     .order_by(AuditEntry.id)).all()
        assert actions[-2:] == ["account.deactivated", "account.reactivated"]
        assert db.session.scalar(db.select(AuditEntry.actor).filter_by(action="account.deactivated")) == staff


def test_the_people_page_lists_role_shop_and_last_sign_in(app, client, staff, make_shop):
    slug, email = make_shop()
    app.test_client().post("/login", data={"email": email, "password": "correct horse"})
    page = page_text(client.get("/shops/people/"))
    row = page[page.index(f'data-user="{email}"'):]
    row = row[:row.index("</tr>")]
    assert "Shop owner" in row and "晴天烘焙坊" in row and "<time" in row and "Deactivate" in row
    mine = page[page.index(f'data-user="{staff}"'):]
    mine = mine[:mine.index("</tr>")]
    assert "Staff" in mine and "(you)" in mine and "Deactivate" not in mine


def test_staff_cannot_deactivate_themselves(app, client, staff):
    response = client.post(f"/shops/people/{user_id(app, staff)}/deactivate", follow_redirects=True)
    assert "You cannot deactivate your own account: ask another staff member." in page_text(response)
    assert client.get("/shops/people/").status_code == 200  # still signed in
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(email=staff)).deactivated_at is None


def test_a_deactivated_staff_members_api_token_stops_working(app, client, runner, staff, make_user, make_shop):
    slug, _ = make_shop()
    other = make_user("other-staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", other]).output.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/shops/{slug}/status", headers=headers).status_code == 200
    client.post(f"/shops/people/{user_id(app, other)}/deactivate")
    assert client.get(f"/api/v1/shops/{slug}/status", headers=headers).status_code == 401


def test_owners_cannot_use_the_people_pages(app, client, owner, make_user):
    other = make_user("someone@example.com")
    assert client.get("/shops/people/").status_code == 403
    assert client.post(f"/shops/people/{user_id(app, other)}/deactivate").status_code == 403
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(email=other)).deactivated_at is None


def test_an_unknown_account_is_a_404_and_deactivating_twice_changes_nothing(app, client, staff, make_user):
    assert client.post("/shops/people/99999/deactivate").status_code == 404
    other = make_user("someone@example.com")
    client.post(f"/shops/people/{user_id(app, other)}/deactivate")
    again = client.post(f"/shops/people/{user_id(app, other)}/deactivate", follow_redirects=True)
    assert "someone@example.com was already deactivated." in page_text(again)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AuditEntry.id))
                                 .filter_by(action="account.deactivated")) == 1


def test_deactivating_staff_revokes_their_api_tokens_for_good(app, client, staff, make_user, runner):
    other = make_user("other-staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", other]).output.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/api/v1/shops", headers=bearer).status_code == 200
    client.post(f"/shops/people/{user_id(app, other)}/deactivate")
    assert app.test_client().get("/api/v1/shops", headers=bearer).status_code == 401
    client.post(f"/shops/people/{user_id(app, other)}/reactivate")
    assert app.test_client().get("/api/v1/shops", headers=bearer).status_code == 401  # a new token is needed
