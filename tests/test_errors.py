"""Error pages are the product's own, in the visitor's language, with a way back; JSON routes answer JSON."""
import pytest

from wizard.extensions import db
from wizard.models import User


def test_an_unknown_page_is_our_own_page_in_chinese_with_a_way_back(client):
    response = client.get("/no-such-page", headers={"Referer": "http://localhost/login"})
    html = response.get_data(as_text=True)

    assert response.status_code == 404
    assert "<title>找不到這個頁面 · LINE 串接精靈</title>" in html
    assert "網址可能打錯了" in html
    assert '<a class="button" href="http://localhost/login">回到上一頁</a>' in html
    assert 'href="/">前往登入</a>' in html
    assert 'href="?lang=en"' in html  # the site's header, language switch included


def test_the_error_page_speaks_english_on_request_and_never_links_back_off_site(client):
    response = client.get("/no-such-page?lang=en", headers={"Referer": "https://evil.example/"})
    html = response.get_data(as_text=True)

    assert response.status_code == 404
    assert "This page does not exist" in html and "Error code 404" in html
    assert "evil.example" not in html and "Back to the previous page" not in html


def test_an_owner_on_a_staff_page_gets_a_403_page_leading_home(client, make_shop, login):
    _, email = make_shop()
    login(email)
    response = client.get("/shops/")
    html = response.get_data(as_text=True)

    assert response.status_code == 403
    assert "您的帳號不能開啟這個頁面" in html
    assert 'href="/">前往首頁</a>' in html


def test_a_wrong_method_keeps_its_allow_header(client):
    response = client.get("/logout")

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert "無法用這種方式開啟這個頁面" in response.get_data(as_text=True)


def test_an_expired_form_says_so(app, client, make_user):
    app.config["WTF_CSRF_ENABLED"] = True
    email = make_user()
    response = client.post("/login", data={"email": email, "password": "correct horse"})

    assert response.status_code == 400
    assert "這份表單已經過期" in response.get_data(as_text=True)


def test_a_crash_shows_our_page_without_the_traceback(app, client):
    def broken():
        db.session.add(User(email="half@example.com", password_hash="x"))
        db.session.flush()
        raise RuntimeError("secret internals: database password is hunter2")
    app.add_url_rule("/broken", "broken", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = client.get("/broken")
    html = response.get_data(as_text=True)

    assert response.status_code == 500
    assert "我們這邊出了問題" in html and "LINE 串接精靈" in html
    assert "hunter2" not in html and "Traceback" not in html and "RuntimeError" not in html
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(email="half@example.com")) is None


@pytest.mark.parametrize("method, path, status", [
    ("get", "/api/v1/nothing-here", 404),
    ("post", "/api/v1/shops/x/status", 405),
])
def test_api_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)

    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["error"] == {404: "not_found", 405: "method_not_allowed"}[status]


def test_webhook_errors_are_json_with_the_receivers_shape(client):
    unknown = client.post("/line/webhook/no-such-token", data=b'{"events": []}')
    assert unknown.status_code == 404
    assert unknown.is_json and set(unknown.get_json()) == {"message"}

    wrong_method = client.get("/line/webhook/no-such-token")
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert wrong_method.is_json
