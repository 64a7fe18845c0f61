"""Staff API tokens on /shops/tokens/: shown once in full, masked after, stored as a digest only, revocable;
the CLI's ``user token`` makes one named "cli"; tokens of the old single-token column still work."""
import re

import pytest

from tests.wizard_helpers import page_text
from wizard import crypto
from wizard.extensions import db
from wizard.models import ApiToken, User

TOKEN = re.compile(r"<p class=\"big-url mono\" data-token[^>]*>([A-Za-z0-9_-]{43})</p>")


def status(client, slug, token):
    return client.get(f"/api/v1/shops/{slug}/status", headers={"Authorization": f"Bearer {token}"})


def test_a_token_made_on_the_page_is_shown_once_works_and_is_kept_only_as_a_digest(app, client, staff,
                                                                                   make_shop):
    slug, _ = make_shop()
    response = client.post("/shops/tokens/", data={"name": "CRM sync"})
    assert response.status_code == 200
    token = TOKEN.search(page_text(response)).group(1)
    assert 'Token “CRM sync” created' in page_text(response)

    answer = status(app.test_client(), slug, token)
    assert answer.status_code == 200 and answer.get_json()["shop"] == slug
    later = page_text(client.get("/shops/tokens/"))
    assert token not in later and "CRM sync" in later
    assert "••••••••" + token[-4:] in later  # masked: the last four only
    with app.app_context():
        row = db.session.scalar(db.select(ApiToken))
        assert row.digest == crypto.token_digest(token) and row.last_used_at is not None
        assert (row.name, row.user.email) == ("CRM sync", staff)


def test_a_token_that_only_lists_shops_shows_when_it_was_last_used(app, client, staff, make_shop):
    make_shop()
    token = TOKEN.search(page_text(client.post("/shops/tokens/", data={"name": "dashboard"}))).group(1)
    assert "never" in page_text(client.get("/shops/tokens/")).split("dashboard", 1)[1].split("</tr>", 1)[0]
    answer = app.test_client().get("/api/v1/shops", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.get_json()["total"] == 1
    row = page_text(client.get("/shops/tokens/")).split("dashboard", 1)[1].split("</tr>", 1)[0]
    assert "never" not in row and "<time datetime=" in row, row
    with app.app_context():
        first = db.session.scalar(db.select(ApiToken.last_used_at))
    # Within the minute, more calls write nothing: the time stays that of the first.
    for _ in range(3):
        app.test_client().get("/api/v1/shops", headers={"Authorization": f"Bearer {token}"})
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.last_used_at)) == first


def test_a_revoked_token_stops_working(app, client, staff, make_shop):
    slug, _ = make_shop()
    token = TOKEN.search(page_text(client.post("/shops/tokens/", data={"name": "script"}))).group(1)
    with app.app_context():
        token_id = db.session.scalar(db.select(ApiToken.id))
    response = client.post(f"/shops/tokens/{token_id}/revoke", follow_redirects=True)
    assert "The token “script” is revoked: it no longer works." in page_text(response)
    assert status(app.test_client(), slug, token).status_code == 401
    assert "Revoked" in page_text(client.get("/shops/tokens/"))


@pytest.mark.parametrize("name, message", [
    ("   ", "Give the token a name that says where it is used, e.g. “CRM sync”."),
    ("x" * 101, "Use at most 100 characters."),
    ("a\x07b", "The name cannot contain control characters."),
])
def test_a_bad_name_is_said_under_the_field_and_no_token_is_made(app, client, staff, name, message):
    response = client.post("/shops/tokens/", data={"name": name})
    assert response.status_code == 422
    assert f'<p class="field-error" id="name-error">{message}</p>' in page_text(response)
    assert TOKEN.search(page_text(response)) is None
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ApiToken.id))) == 0


def test_the_cli_token_is_named_cli_and_a_new_one_replaces_it(app, client, runner, make_user, make_shop):
    slug, _ = make_shop()
    staff = make_user("staff@example.com", staff=True)
    first = runner.invoke(args=["user", "token", staff]).output.strip()
    second = runner.invoke(args=["user", "token", staff]).output.strip()
    assert status(client, slug, first).status_code == 401
    assert status(client, slug, second).status_code == 200
    with app.app_context():
        rows = db.session.scalars(db.select(ApiToken).order_by(ApiToken.id)).all()
        assert [(row.name, row.revoked_at is None) for row in rows] == [("cli", False), ("cli", True)]


def test_a_token_of_the_old_column_still_works_for_active_staff_only(app, client, make_user, make_shop):
    slug, owner_email = make_shop()
    staff = make_user("staff@example.com", staff=True)
    token = crypto.new_token(32)
    with app.app_context():
        db.session.scalar(db.select(User).filter_by(email=staff)).api_token_digest = crypto.token_digest(token)
        owner_token = crypto.new_token(32)
        db.session.scalar(db.select(User).filter_by(email=owner_email)).api_token_digest = \
            crypto.token_digest(owner_token)
        db.session.commit()
    assert status(client, slug, token).status_code == 200
    assert status(client, slug, owner_token).status_code == 401  # owners never get in by token


def test_owners_cannot_make_tokens(app, client, owner):
    assert client.get("/shops/tokens/").status_code == 403
    assert client.post("/shops/tokens/", data={"name": "mine"}).status_code == 403
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ApiToken.id))) == 0
