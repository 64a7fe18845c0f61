"""The send plan pages and the API around them, where they used to mislead: the plan form counts its audience
as the plan sends (the connected channel only, the number the confirmation and the API give); a session
changes nothing through the API without the proof that our own page or a program sent it; LINE's problems
are said in the owner's words, not as codes; a service plan does not speak of marketing consent; the form's
problems link to fields that exist; the segment builder's hint fits where it is; a plan whose saved segment
was deleted shows its own conditions; a saved segment is deleted only after a question. Both databases."""
from datetime import datetime, timedelta

import pytest

from tests.plan_helpers import plan_shop_fixture  # noqa: F401  (the fixture)
from tests.test_segments_pages import add
from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import Channel, Segment, SendPlan, utcnow
from wizard.statuses import PlanState

OFFER = "週年慶全品項 8 折，只到週日！"


def _token(plan_shop, path=None):
    page = plan_shop.client.get(path or f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def _later():
    return (utcnow() + timedelta(hours=1)).isoformat() + "Z"


def _draft(plan_shop, **fields):
    data = {"csrf_token": _token(plan_shop, f"/c/{plan_shop.slug}/plans/new"), "name": "週年慶",
            "template_id": plan_shop.template(OFFER), "purpose": "marketing", "audience": "all", "when": "now"}
    data.update(fields)
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


# ---- 8. one scope for every count ----------------------------------------------------------------------------


def test_the_plan_forms_count_is_the_plans_own_not_the_contact_lists(app, plan_shop):
    plan_shop.friend("林小美")
    plan_shop.friend("陳大文")
    old = make_channel(app, plan_shop.slug)  # the account the shop had before: its friends stay in the list
    with app.app_context():
        db.session.get(Channel, old["id"]).disconnected_at = datetime(2026, 1, 1)
        db.session.commit()
    add(app, old["id"], "舊帳號的好友", city="TPE", marketing_consent=True)
    form = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/new").get_data(as_text=True)
    assert f'data-count-url="/c/{plan_shop.slug}/plans/count"' in form
    plan_count = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/count?city=TPE").get_json()
    api_count = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/audience/count",
                                      json={"filters": {"city": ["TPE"]}}).get_json()
    assert plan_count["contacts"] == api_count["contacts"] == 2
    assert plan_count["text"] == "2 contacts match (blocked ones are always left out)"
    # The contacts list counts every channel the shop ever had (that is what it lists).
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/contacts/count?advanced=1&city=TPE").get_json()
    assert listed["contacts"] == 3
    confirm = plan_shop.client.get(_draft(plan_shop, audience="filters", city="TPE", purpose="service"))
    assert 'data-recipients="2"' in confirm.get_data(as_text=True)


def test_the_plan_forms_count_says_when_no_account_is_connected(app, plan_shop):
    with app.app_context():
        db.session.get(Channel, plan_shop.channel["id"]).disconnected_at = utcnow()
        db.session.commit()
    answer = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/count").get_json()
    assert answer == {"contacts": 0, "text": "The shop's LINE account is not connected: plans cannot send yet."}


# ---- 11. the API's state-changing routes and the session cookie ---------------------------------------------


def _scheduled(plan_shop):
    plan_shop.friend(f"客人{utcnow().microsecond}")
    return plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                          audience={"all": True}, send_at=_later()).get_json()["id"]


@pytest.mark.parametrize("how", [
    {},  # no body: what a form or an <img> on another site could send
    {"data": {"x": "1"}},  # a form post from another site
    {"data": "{}", "content_type": "text/plain"},  # fetch(…, {mode: "no-cors"}) from another site
    {"x_token": "not-the-token"},  # a token, but not this session's
])
def test_a_session_cannot_change_a_plan_through_the_api_without_proof_of_origin(app, plan_shop, how):
    plan_id = _scheduled(plan_shop)
    kwargs = {key: value for key, value in how.items() if key in ("data", "content_type")}
    headers = {"X-CSRFToken": how["x_token"]} if "x_token" in how else {}
    response = plan_shop.client.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/cancel",
                                     headers=headers, **kwargs)
    assert response.status_code == 400 and response.get_json()["error"] == "csrf"
    assert "X-CSRFToken" in response.get_json()["problems"]
    assert plan_shop.plan(plan_id)["state"] == "scheduled"
    template = plan_shop.template("留著")
    response = plan_shop.client.delete(f"/api/v1/shops/{plan_shop.slug}/templates/{template}", headers=headers,
                                       **kwargs)
    assert response.status_code == 400
    assert plan_shop.client.get(f"/api/v1/shops/{plan_shop.slug}/templates/{template}").status_code == 200


def test_a_session_changes_a_plan_through_the_api_with_the_pages_token_or_json(app, plan_shop):
    by_token, by_json = _scheduled(plan_shop), _scheduled(plan_shop)
    api = f"/api/v1/shops/{plan_shop.slug}/send-plans"
    response = plan_shop.client.post(f"{api}/{by_token}/cancel", headers={"X-CSRFToken": _token(plan_shop)})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    response = plan_shop.client.post(f"{api}/{by_json}/cancel", json={})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    assert plan_shop.client.get(api).status_code == 200  # reading needs neither


def test_a_bearer_token_caller_needs_no_csrf_proof(app, plan_shop, make_user, runner):
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip().splitlines()[-1]
    plan_id = _scheduled(plan_shop)
    caller = app.test_client()  # no cookie at all
    response = caller.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/pause",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 409  # let in (a scheduled one-off plan is not sending: refused by its state)
    response = caller.post(f"/api/v1/shops/{plan_shop.slug}/send-plans/{plan_id}/cancel",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"


def test_the_pages_own_buttons_still_act_on_a_plan(app, plan_shop):
    """The plan page's buttons post forms with the CSRF token to the pages (not the API): unchanged."""
    plan_id = _scheduled(plan_shop)
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/{plan_id}/cancel",
                                     data={"csrf_token": _token(plan_shop)})
    assert response.status_code == 302 and plan_shop.plan(plan_id)["state"] == "cancelled"


# ---- 12. LINE's problems in words -----------------------------------------------------------------------------


def test_line_not_telling_the_quota_is_said_in_chinese_not_as_a_code(app, plan_shop):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    plan_shop.friend("林小美")
    confirm = _draft(plan_shop)
    plan_shop.control.fail(plan_shop.id, 429)
    try:
        listed = plan_shop.client.get(f"/c/{plan_shop.slug}/plans").get_data(as_text=True)
        page = plan_shop.client.get(confirm).get_data(as_text=True)
    finally:
        plan_shop.control.heal(plan_shop.id)
    assert "LINE 剛才沒有告訴我們本月的訊息則數：LINE 請我們放慢速度。" in listed
    assert "LINE 剛才沒有回覆：LINE 請我們放慢速度。" in page
    assert "rate_limited" not in listed and "rate_limited" not in page


# ---- 13. the smaller things -----------------------------------------------------------------------------------


def test_a_service_plans_page_does_not_speak_of_marketing_consent(app, plan_shop):
    plan_shop.friend("林小美")
    plan_shop.friend("不要廣告", consent=False)
    service = plan_shop.post(name="公休通知", template_id=plan_shop.template("12/25 公休"), purpose="service",
                             audience={"all": False, "filters": {"city": ["TPE"]}}, send_at=None).get_json()
    marketing = plan_shop.post(name="週年慶", template_id=plan_shop.template(OFFER), purpose="marketing",
                               audience={"all": False, "filters": {"city": ["TPE"]}}, send_at=None).get_json()
    plan_shop.send()
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{service['id']}").get_data(as_text=True)
    assert '<dd data-count="sent">2</dd>' in page and "marketing consent" not in page
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{marketing['id']}").get_data(as_text=True)
    assert "Left out: no marketing consent" in page and '<dd data-count="no_consent">1</dd>' in page


def test_every_problem_of_the_plan_form_links_to_a_field_that_exists(app, plan_shop):
    token = _token(plan_shop, f"/c/{plan_shop.slug}/plans/new")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/plans/new", data={
        "csrf_token": token, "name": "", "template_id": "", "purpose": "spam", "audience": "filters",
        "when": "weekly"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    summary = html.split('class="error-summary"')[1].split("</ul>")[0]
    targets = [part.split('"')[0] for part in summary.split('href="#')[1:]]
    assert set(targets) >= {"name", "template_id", "purpose", "audience", "send_at"}
    assert all(f'id="{target}"' in html for target in targets)


def test_the_builders_hint_fits_the_page_it_is_on(app, plan_shop):
    form = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/new").get_data(as_text=True)
    assert "Choose at least one condition (for every friend, choose “All friends” above)." in form
    assert "Choose nothing to include every friend" not in form
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/contacts?advanced=1").get_data(as_text=True)
    assert "Choose nothing to include every friend. Blocked friends are always left out." in listed
    assert "(not the search text)" in listed  # what "save these filters" keeps


def _save_segment(plan_shop, name, **filters):
    token = _token(plan_shop, f"/c/{plan_shop.slug}/contacts")
    response = plan_shop.client.post(f"/c/{plan_shop.slug}/segments",
                                     data={"csrf_token": token, "name": name, "advanced": "1", **filters})
    assert response.status_code == 302
    with plan_shop.app.app_context():
        return db.session.scalar(db.select(Segment.id).filter_by(name=name))


def test_a_plan_whose_saved_segment_was_deleted_shows_its_own_conditions(app, plan_shop):
    plan_shop.friend("林小美")
    taipei = _save_segment(plan_shop, "台北的客人", city="TPE", form_filled="yes")
    _save_segment(plan_shop, "高雄的客人", city="KHH")
    confirm = _draft(plan_shop, audience="segment", segment_id=str(taipei))
    plan_id = int(confirm.split("/plans/")[1].split("/")[0])
    delete = f"/c/{plan_shop.slug}/segments/{taipei}/delete"
    assert plan_shop.client.post(delete, data={"csrf_token": _token(plan_shop)}).status_code == 302
    html = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan_id}/edit").get_data(as_text=True)
    assert "The saved audience this plan was made with has been deleted" in html
    assert 'name="audience" value="filters" checked' in html
    assert 'name="audience" value="segment" checked' not in html and " selected>高雄的客人" not in html
    assert 'value="TPE" checked' in html and 'value="yes" checked' in html
    with app.app_context():
        assert db.session.get(SendPlan, plan_id).state == PlanState.DRAFT


def test_a_saved_segment_is_deleted_only_after_a_question(app, plan_shop):
    plan_shop.client.get("/?lang=zh_Hant_TW")
    segment = _save_segment(plan_shop, "台北的客人", city="TPE")
    listed = plan_shop.client.get(f"/c/{plan_shop.slug}/contacts").get_data(as_text=True)
    delete = f"/c/{plan_shop.slug}/segments/{segment}/delete"
    assert f'href="{delete}"' in listed  # the list links to the question, it deletes nothing itself
    question = plan_shop.client.get(delete)
    html = question.get_data(as_text=True)
    assert question.status_code == 200 and "要刪除客群「台北的客人」嗎？" in html
    assert "用它建立的發送計畫會保留原本的條件" in html
    with app.app_context():  # still there until the question is answered
        assert db.session.get(Segment, segment) is not None
    assert plan_shop.client.post(delete, data={"csrf_token": _token(plan_shop)}).status_code == 302
    with app.app_context():
        assert db.session.get(Segment, segment) is None


def test_a_draft_whose_template_was_deleted_asks_for_another_before_it_is_confirmed(app, plan_shop):
    plan_shop.friend("林小美")
    confirm = _draft(plan_shop)
    plan_id = int(confirm.split("/plans/")[1].split("/")[0])
    template = plan_shop.plan(plan_id)["template_id"]
    # A draft does not keep its template from being deleted (only a plan that will send does).
    assert plan_shop.client.delete(f"/api/v1/shops/{plan_shop.slug}/templates/{template}", json={}).status_code == 204
    html = plan_shop.client.get(confirm).get_data(as_text=True)
    assert "message template was deleted: choose another one with “Change the plan”." in html
    response = plan_shop.client.post(confirm, data={"csrf_token": _token(plan_shop)})
    assert response.status_code == 409 and plan_shop.plan(plan_id)["state"] == "draft"


def test_a_plan_for_now_reads_as_starting_until_a_consumer_starts_it_then_as_sending(app, plan_shop):
    """Confirmed for "now", a plan is scheduled for a moment until the queue starts it: its page says it is
    starting, never "scheduled" beside a note that it is on its way."""
    plan_shop.friend("林小美")
    plan = plan_shop.post(name="今日公休", template_id=plan_shop.template("今天臨時公休，明天見！"), purpose="service",
                          audience={"all": False, "filters": {"city": ["TPE"]}}).get_json()
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert 'data-starting="1"' in page and "Starting now" in page
    plan_shop.send()
    page = plan_shop.client.get(f"/c/{plan_shop.slug}/plans/{plan['id']}").get_data(as_text=True)
    assert "data-starting" not in page and 'data-state="sent"' in page
