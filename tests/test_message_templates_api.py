"""``/api/v1/shops/<slug>/templates``: the shop's owners (session) and staff (session or Bearer token) read,
create, change and delete message templates as LINE message objects; LINE's validate endpoint (the sandbox,
over HTTP) checks each before it is saved; a refused request answers 400 (409 for a taken name) with a message
per problem and changes nothing; another shop's templates are 404."""
import pytest

from wizard.extensions import db
from wizard.models import AuditEntry, MessageTemplate

OWNER = "owner-sunny-bakery@example.com"
API = "/api/v1/shops/sunny-bakery/templates"
CARD = {"type": "flex", "altText": "春季新品", "contents": {
    "type": "bubble", "body": {"type": "box", "layout": "vertical",
                               "contents": [{"type": "text", "text": "春季新品", "weight": "bold"}]}}}


def names(app):
    with app.app_context():
        return db.session.scalars(db.select(MessageTemplate.name).order_by(MessageTemplate.id)).all()


@pytest.fixture
def signed_in(line, client, login):
    """The owner of a shop connected to a sandbox channel, signed in; returns the Line helper."""
    login(OWNER)
    return line


def test_the_owner_creates_reads_changes_and_deletes_a_template(app, client, signed_in):
    messages = [{"type": "text", "text": "{name}您好"}, CARD]
    created = client.post(API, json={"name": "春季", "messages": messages})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["name"] == "春季" and body["messages"] == messages
    path = f"{API}/{body['id']}"
    assert client.get(API).get_json() == {"templates": [body]}
    assert client.get(path).get_json() == body
    changed = client.put(path, json={"name": "夏季", "messages": [{"type": "text", "text": "夏天到了"}]})
    assert changed.status_code == 200 and changed.get_json()["messages"] == [{"type": "text", "text": "夏天到了"}]
    assert client.get(path).get_json()["name"] == "夏季"
    assert client.delete(path, json={}).status_code == 204
    assert client.get(path).status_code == 404 and names(app) == []
    with app.app_context():
        actions = db.session.scalars(db.select(AuditEntry.action).filter(AuditEntry.action.like("message_template.%"))
                                     .order_by(AuditEntry.id)).all()
    assert actions == ["message_template.created", "message_template.saved", "message_template.deleted"]


def test_a_taken_name_is_a_409_and_nothing_changes(app, client, signed_in):
    first = client.post(API, json={"name": "春季", "messages": [{"type": "text", "text": "一"}]}).get_json()
    other = client.post(API, json={"name": "夏季", "messages": [{"type": "text", "text": "二"}]}).get_json()
    again = client.post(API, json={"name": "春季", "messages": [{"type": "text", "text": "三"}]})
    assert again.status_code == 409 and again.get_json()["error"] == "conflict"
    assert again.get_json()["problems"] == {"name": "Another template of this shop is called “春季”."}
    renamed = client.put(f"{API}/{other['id']}", json={"name": "春季", "messages": [{"type": "text", "text": "四"}]})
    assert renamed.status_code == 409
    assert names(app) == ["春季", "夏季"]
    assert client.get(f"{API}/{first['id']}").get_json()["messages"] == [{"type": "text", "text": "一"}]
    assert client.get(f"{API}/{other['id']}").get_json()["messages"] == [{"type": "text", "text": "二"}]


def test_lines_refusal_is_a_400_per_property_and_nothing_changes(app, client, signed_in):
    created = client.post(API, json={"name": "春季", "messages": [{"type": "text", "text": "一"}]}).get_json()
    too_long = [{"type": "text", "text": "好"}, {"type": "text", "text": "字" * 5001}]
    refused = client.post(API, json={"name": "長", "messages": too_long})
    assert refused.status_code == 400
    assert refused.get_json()["problems"] == {"messages[1].text": "LINE takes at most 5000 characters here."}
    refused = client.put(f"{API}/{created['id']}", json={"name": "改名", "messages": too_long})
    assert refused.status_code == 400 and "messages[1].text" in refused.get_json()["problems"]
    assert names(app) == ["春季"]
    assert client.get(f"{API}/{created['id']}").get_json()["messages"] == [{"type": "text", "text": "一"}]


@pytest.mark.parametrize("body, problems", [
    ("not json", {"request": "Send a JSON object (Content-Type: application/json) with “name” and “messages”."}),
    ({"messages": [{"type": "text", "text": "x"}]}, {"name": "“name” is missing."}),
    ({"name": "x", "messages": [], "colour": "red"}, {"request": "Unknown field(s): colour."}),
    ({"name": "x", "messages": []}, {"messages": "Add at least one message."}),
    ({"name": "x", "messages": [{"type": "text", "text": "x"}] * 6},
     {"messages": "A template has at most 5 messages."}),
    ({"name": " ", "messages": ["hello"]}, {"name": "Give the template a name.",
                                            "messages[0]": "Each message is a LINE message object with a “type”."}),
    ({"name": "x", "messages": [CARD, {"type": "image", "originalContentUrl": "https://x/{name}.jpg",
                                       "previewImageUrl": "https://x/p.jpg"}]},
     {"messages[1]": "{name} can only be used in a text message."}),
])
def test_a_malformed_request_is_a_400_with_a_message_per_problem(app, client, owner, body, problems):
    # A session sending no JSON shows it comes from our page by the CSRF token (views/api.py).
    page = client.get(f"/c/{owner}/templates").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = (client.post(API, data=body, content_type="text/plain", headers={"X-CSRFToken": token})
                if isinstance(body, str) else client.post(API, json=body))
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request" and response.get_json()["problems"] == problems
    assert names(app) == []


def test_without_a_connected_line_account_nothing_is_saved(app, client, owner):
    response = client.post(API, json={"name": "x", "messages": [{"type": "text", "text": "x"}]})
    assert response.status_code == 400 and response.get_json()["problems"] == {
        "messages": "Connect the shop's LINE account first: LINE checks every template before it is saved."}
    assert names(app) == []


def test_staff_by_bearer_token_and_nobody_else(app, client, line, make_shop, make_user, login, runner):
    staff = make_user("staff@example.com", staff=True)
    token = runner.invoke(args=["user", "token", staff]).output.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get(API).status_code == 401
    created = client.post(API, json={"name": "秘密", "messages": [{"type": "text", "text": "秘密"}]}, headers=bearer)
    assert created.status_code == 201
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="message_template.created"))
        assert entry.actor == "staff@example.com" and entry.target == "秘密"
    path = f"{API}/{created.get_json()['id']}"
    assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    _other, other_owner = make_shop("calm-tea", "平靜茶坊")
    login(other_owner)
    for response in (client.get(API), client.get(path), client.put(path, json={"name": "x", "messages": []}),
                     client.delete(path, json={}), client.post(API, json={"name": "x", "messages": []})):
        assert response.status_code == 404 and "秘密" not in response.get_data(as_text=True)
    # The other shop's own address does not reach this shop's template either.
    assert client.get(f"/api/v1/shops/calm-tea/templates/{created.get_json()['id']}").status_code == 404
    assert client.get("/api/v1/shops/calm-tea/templates").get_json() == {"templates": []}
    assert names(app) == ["秘密"]
