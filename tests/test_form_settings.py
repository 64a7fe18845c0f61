"""The customer form's settings: the wizard step before the friend test (also the shop's settings page later),
the summary's 「客戶資料回填表 已啟用/未啟用 修改」 row, and ``GET``/``PUT /api/v1/shops/<slug>/form``."""
import re

from tests.wizard_helpers import page_text, status_reason
from wizard.customers import form_settings
from wizard.extensions import db
from wizard.models import AuditEntry, FormSettings, Shop

DEFAULTS = {"name": "required", "mobile": "required", "email": "optional", "birthday": "optional",
            "gender": "off", "city": "off"}


def page_form(**change):
    data = {"action": "save", "enabled": "on", "text": "", "collector": "", "contact_email": "",
            "contact_phone": "", "retention_years": "0", "note": ""}
    data.update({f"field_{name}": mode for name, mode in DEFAULTS.items()})
    data.update(change)
    return data


def saved_row(app):
    with app.app_context():
        row = db.session.scalar(db.select(FormSettings))
        db.session.expunge_all()
        return row


def test_the_step_comes_before_the_friend_test_and_never_blocks(client, owner):
    page = client.get(f"/setup/{owner}/customer_form")
    html = page_text(page)
    assert page.status_code == 200
    assert "Step 7 of 9: Customer data form" in html
    assert status_reason(page) == ("todo", "form_not_reviewed")
    assert 'href="/setup/sunny-bakery/test_friend" rel="next"' in html
    # The defaults, shown as they are sent: on, the default text in a LINE bubble, the default fields.
    assert 'name="enabled" type="radio" value="on" checked' in html or 'checked id="enabled-0"' in html
    assert 'class="line-preview"' in html and "感謝您將晴天烘焙坊加入好友！" in html  # as most customers get it
    assert re.search(r'<option selected value="required">Required</option>', html)
    assert "never asks for a national ID number" in html
    assert "○九○ consumer and customer management and services" in html  # the notice as customers see it
    [step] = [s for s in client.get(f"/api/v1/shops/{owner}/status").get_json()["steps"]
              if s["key"] == "customer_form"]
    assert (step["state"], step["reason"], step["fix_step"]) == ("todo", "form_not_reviewed", "customer_form")


def test_saving_on_the_page_stores_the_settings_and_moves_on_to_the_friend_test(app, client, owner):
    response = client.post(f"/setup/{owner}/customer_form", data=page_form(
        enabled="off", text="歡迎！請留下資料。", field_email="required", field_city="optional",
        contact_email="Privacy@Sunny.example", retention_years="3"))

    assert response.headers["Location"].endswith(f"/setup/{owner}/test_friend")
    row = saved_row(app)
    assert (row.enabled, row.text, row.fields["email"], row.fields["city"]) == (False, "歡迎！請留下資料。",
                                                                              "required", "optional")
    assert row.notice == {"contact_email": "privacy@sunny.example", "retention_years": 3}
    assert row.updated_by == f"owner-{owner}@example.com" and row.saved_at and row.notice_version
    page = client.get(f"/setup/{owner}/customer_form")
    assert status_reason(page) == ("done", "form_off")
    html = page_text(page)
    # The bubble shows the saved text (and keeps the default for when the box is emptied while typing).
    assert '">歡迎！請留下資料。</span><br>' in html and 'data-preview-default="Thank you for adding' in html
    assert "write to privacy@sunny.example" in html
    with app.app_context():
        assert db.session.scalar(db.select(AuditEntry.action).filter_by(action="form_settings.saved"))

    # The summary's row: 未啟用 (off), and the link to change it.
    summary = page_text(client.get(f"/setup/{owner}/connected"))
    assert 'data-form-enabled="false"' in summary and "Not enabled" in summary
    assert f'href="/setup/{owner}/customer_form">Change the form settings</a>' in summary
    client.post(f"/setup/{owner}/customer_form", data=page_form())
    summary = page_text(client.get(f"/setup/{owner}/connected?lang=zh_Hant_TW"))
    assert "加入好友的客戶資料回填表" in summary and "已啟用" in summary and ">修改</a>" in summary


def test_saving_the_default_text_unchanged_keeps_it_multilingual(app, client, owner):
    default = "Thank you for adding 晴天烘焙坊 as a friend! Please take a minute to fill in our customer data " \
              "form so we can serve you better."
    client.post(f"/setup/{owner}/customer_form", data=page_form(text=default))
    assert saved_row(app).text is None
    assert status_reason(client.get(f"/setup/{owner}/customer_form")) == ("done", "form_on")


def test_mistakes_on_the_page_are_said_per_field_and_save_nothing(app, client, owner):
    response = client.post(f"/setup/{owner}/customer_form", data=page_form(
        text="長" * 1001, contact_email="not an address", contact_phone="12",
        **{f"field_{name}": "off" for name in DEFAULTS}))
    html = page_text(response)
    assert response.status_code == 422
    assert "Keep the message text to at most 1000 characters (it has 1001)." in html
    assert "Enter an e-mail address like name@example.com." in html
    assert "Enter a phone number of 8 to 15 digits" in html
    assert "Ask for at least one field, or switch the form off instead." in html
    assert 'href="#text"' in html and 'href="#contact_email"' in html
    assert saved_row(app) is None


# ---- the API --------------------------------------------------------------------------------------------------

def test_the_api_reads_the_defaults_and_saves_a_valid_change(app, client, owner):
    got = client.get(f"/api/v1/shops/{owner}/form").get_json()
    assert (got["enabled"], got["fields"], got["text_is_default"], got["saved_at"]) == (True, DEFAULTS, True, None)
    assert got["text"].startswith("感謝您將晴天烘焙坊加入好友")  # the shop's language

    change = {"enabled": True, "text": "  歡迎加入！  ", "fields": {"gender": "optional", "email": "off"},
              "notice": {"collector": "晴天烘焙坊有限公司"}}
    response = client.put(f"/api/v1/shops/{owner}/form", json=change)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["text"], body["fields"]["gender"], body["fields"]["email"]) == ("歡迎加入！", "optional", "off")
    assert body["notice"] == {"collector": "晴天烘焙坊有限公司"} and body["saved_at"]
    assert client.get(f"/api/v1/shops/{owner}/form").get_json() == body
    assert status_reason(client.get(f"/setup/{owner}/customer_form")) == ("done", "form_on")


def test_what_get_answers_can_be_put_back_with_one_value_changed(app, client, owner):
    """A staff script reads the settings, switches the form off and writes the same body back."""
    body = client.get(f"/api/v1/shops/{owner}/form").get_json()
    body["enabled"] = False
    response = client.put(f"/api/v1/shops/{owner}/form", json=body)
    assert response.status_code == 200, response.get_json()
    assert client.get(f"/api/v1/shops/{owner}/form").get_json()["enabled"] is False


def test_a_bad_put_answers_400_with_a_message_per_problem_and_changes_nothing(app, client, owner):
    client.put(f"/api/v1/shops/{owner}/form", json={"enabled": True, "text": "原本的", "fields": {}})
    before = client.get(f"/api/v1/shops/{owner}/form").get_json()

    response = client.put(f"/api/v1/shops/{owner}/form", json={
        "enabled": "yes", "text": 5, "fields": {"national_id": "required", "name": "maybe"}, "colour": "red"})

    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request"
    assert body["problems"] == {
        "colour": "Unknown setting “colour”: use enabled, text, fields or notice.",
        "enabled": "“enabled” must be true or false.",
        "fields.name": "Field “name” must be “required”, “optional” or “off”.",
        "fields.national_id": "The form has no field “national_id”; it can ask: name, mobile, email, birthday, "
                              "gender, city.",
        "text": "The message text must be text.",
    }
    assert "“enabled” must be true or false." in body["message"]
    assert client.get(f"/api/v1/shops/{owner}/form").get_json() == before

    missing = client.put(f"/api/v1/shops/{owner}/form", json={"enabled": False})
    assert missing.status_code == 400
    assert missing.get_json()["problems"] == {"fields": "“fields” is missing.", "text": "“text” is missing."}
    for body in ("enabled=false", "[1, 2]"):
        refused = client.put(f"/api/v1/shops/{owner}/form", data=body,
                             content_type="application/json" if body.startswith("[") else "text/plain")
        assert refused.status_code == 400 and "Send a JSON object" in refused.get_json()["message"]
    everything_off = client.put(f"/api/v1/shops/{owner}/form", json={
        "enabled": True, "text": "", "fields": {name: "off" for name in DEFAULTS}})
    assert everything_off.get_json()["problems"] == {
        "fields": "Ask for at least one field, or switch the form off instead."}
    assert client.get(f"/api/v1/shops/{owner}/form").get_json() == before


def test_who_may_read_and_change_the_settings(app, client, runner, make_shop, make_user, login):
    slug, email = make_shop()
    other, other_email = make_shop("other-shop", "雨天咖啡")
    change = {"enabled": False, "text": "", "fields": {}}
    assert client.get(f"/api/v1/shops/{slug}/form").status_code == 401
    assert client.put(f"/api/v1/shops/{slug}/form", json=change).status_code == 401
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.put(f"/api/v1/shops/{slug}/form", json=change, headers=bearer).status_code == 200
    assert client.get(f"/api/v1/shops/{slug}/form", headers=bearer).get_json()["updated_by"] == staff
    assert client.get(f"/api/v1/shops/{slug}/form", headers={"Authorization": "Bearer nope"}).status_code == 401

    login(other_email)  # an owner of another shop sees nothing of this one
    assert client.get(f"/api/v1/shops/{slug}/form").status_code == 404
    assert client.put(f"/api/v1/shops/{slug}/form", json={**change, "enabled": True}).status_code == 404
    assert client.get(f"/setup/{slug}/customer_form").status_code == 404
    assert client.get(f"/api/v1/shops/{other}/form").status_code == 200
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        assert form_settings.get(shop).enabled is False
