"""An owner sees and changes only their own shop: signed in as shop A's owner, every route of the app that names
a shop (every rule of ``app.url_map`` with a ``<slug>``), the console, its export, its "check now" and the list
API are tried against shop B. Each answers 403 or 404 and shop B is exactly as it was.

CSRF protection is off in these tests (conftest), so a refusal here is the route's own access rule, never a
missing token: the owner is a signed-in user who could have a valid token from their own pages.
"""
import pytest

from tests.webhooks import make_channel
from wizard.extensions import db
from wizard.models import (Alert, AuditEntry, Channel, Invitation, Segment, Shop, ShopHealth, StepState, User,
                           utcnow)
from wizard.steps.registry import registry

REFUSED = {401, 403, 404}


@pytest.fixture
def two_shops(app, client, make_shop, make_user, login):
    """Shop B with a channel, a recorded broken state and an open alert; shop A's owner signed in."""
    slug_a, owner_a = make_shop("shop-a", "甲店")
    slug_b, owner_b = make_shop("shop-b", "乙店")
    make_user("staff@example.com", staff=True)
    make_channel(app, slug_b)
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug_b))
        now = utcnow()
        db.session.add(ShopHealth(shop_id=shop.id, state="broken", reason="wrong_secret", step="credentials",
                                  since=now, detail={}, connected_once_at=now, updated_at=now))
        db.session.add(StepState(shop_id=shop.id, key="credentials", state="action_needed", reason="wrong_secret",
                                 detail={}))
        db.session.add(Alert(shop_id=shop.id, state="broken", reason="wrong_secret", open_reason="wrong_secret",
                             step="credentials", opened_at=now))
        db.session.add(Segment(shop_id=shop.id, name="乙店的台北客人", filters={"city": ["TPE"]}))
        db.session.commit()
        alert_id = db.session.scalar(db.select(Alert.id))
        segment_id = db.session.scalar(db.select(Segment.id))
    login(owner_a)
    return {"a": slug_a, "b": slug_b, "alert_id": alert_id, "owner_b": owner_b, "segment_id": segment_id}


def snapshot(app, slug):
    """Everything about a shop that a page, API or form could change."""
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        health = db.session.get(ShopHealth, shop.id)
        rows = lambda model, *columns: sorted(  # noqa: E731
            tuple(str(getattr(row, c)) for c in columns)
            for row in db.session.scalars(db.select(model).filter_by(shop_id=shop.id)))
        return {
            "shop": (shop.name, shop.confirmations, shop.claimed_basic_id, shop.assigned_staff_id,
                     shop.line_module_enabled),
            "health": (health.state, health.reason, health.since, health.checked_at, health.updated_at),
            "steps": rows(StepState, "key", "state", "reason", "checked_at"),
            "channels": rows(Channel, "channel_id", "secret_encrypted", "disconnected_at", "check_results",
                             "chat_mode"),
            "alerts": rows(Alert, "closed_at", "acknowledged_at", "snoozed_until"),
            "audit": rows(AuditEntry, "id"),
            "invitations": rows(Invitation, "email", "revoked_at"),
            "owners": rows(User, "email", "password_hash", "deactivated_at"),
            "segments": rows(Segment, "name", "filters"),
        }


def _post_data(shops):
    """A form that would change something on any of the shop's pages, were it accepted."""
    return {"action": "save", "channel_id": "1234567890", "channel_secret": "f" * 32, "confirm_reset": "y",
            "line_login": "y", "account_created": "y", "auto_response": "y", "basic_id": "@123abcd",
            "confirm_replace": "y", "email": "mallory@example.com", "staff": "1", "hours": "4",
            "shop": [shops["b"]], "back": "/shops/"}


def fillers(shops):
    """How to fill each argument a rule naming a shop may have: a list of values to try."""
    steps = [step.key for step in registry()]
    return {"slug": [shops["b"]], "key": steps + ["connected"], "fmt": ["svg", "png"],
            "alert_id": [shops["alert_id"]], "segment_id": [shops["segment_id"]]}


def shop_rules(app):
    return [rule for rule in app.url_map.iter_rules() if "slug" in rule.arguments]


def _urls(app, rule, values):
    with app.test_request_context():
        from flask import url_for
        names = sorted(rule.arguments)
        combos = [{}]
        for name in names:
            combos = [dict(c, **{name: v}) for c in combos for v in values[name]]
        return [url_for(rule.endpoint, **combo) for combo in combos]


def _actions(key):
    if key not in registry():
        return ["recheck"]
    return ["recheck", *registry().get(key).actions]


def test_every_route_naming_a_shop_refuses_another_shops_owner_and_changes_nothing(app, client, two_shops):
    before = snapshot(app, two_shops["b"])
    values = fillers(two_shops)
    tried = set()
    for rule in shop_rules(app):
        for url in _urls(app, rule, values):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                if method == "GET":
                    responses = [client.get(url)]
                else:
                    key = url.rstrip("/").rsplit("/", 1)[-1]
                    responses = [client.open(url, method=method, data=dict(_post_data(two_shops), action=action))
                                 for action in _actions(key)]
                for response in responses:
                    assert response.status_code in REFUSED, (method, url, response.status_code)
                    assert "乙店" not in response.get_data(as_text=True), (method, url)
                tried.add(rule.rule)
    assert tried == {rule.rule for rule in shop_rules(app)}
    assert snapshot(app, two_shops["b"]) == before


@pytest.mark.parametrize("method, url", [
    ("get", "/shops/"),
    ("get", "/shops/?q=shop-b"),
    ("get", "/shops/export.csv"),
    ("get", "/shops/export.csv?q=shop-b"),
    ("post", "/shops/check"),
    ("post", "/shops/new"),
    ("get", "/api/v1/shops"),
    ("get", "/api/v1/shops?state=broken"),
    ("get", "/shops/audit/?shop=shop-b"),
])
def test_the_console_its_export_check_now_and_the_list_api_refuse_owners(app, client, two_shops, method, url):
    before = snapshot(app, two_shops["b"])
    response = getattr(client, method)(url, data=_post_data(two_shops) if method == "post" else None)
    assert response.status_code == 403, response.status_code
    assert "乙店" not in response.get_data(as_text=True) and "shop-b" not in response.get_data(as_text=True)
    assert snapshot(app, two_shops["b"]) == before


def test_every_staff_route_refuses_owners(app, client, two_shops):
    """Every page under /shops/ (the console and the staff pages beside it) is staff only, whatever it names."""
    values = dict(fillers(two_shops), user_id=[1], token_id=[1], outbox_id=[1])
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/shops/"):
            continue
        for url in _urls(app, rule, values):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = client.open(url, method=method, data=_post_data(two_shops))
                assert response.status_code == 403, (method, url, response.status_code)


def test_the_walk_knows_how_to_fill_every_rule_naming_a_shop(app, two_shops):
    """A new route with an argument the walk cannot fill fails here, instead of being skipped silently."""
    known = set(fillers(two_shops))
    rules = shop_rules(app)
    for rule in rules:
        assert rule.arguments <= known, f"{rule.rule}: tell tests/test_isolation.py how to fill " \
                                        f"{sorted(rule.arguments - known)}"
    # The walk is not vacuous: the wizard, the console's shop pages and the status API are among its rules.
    assert {"/setup/<slug>/<key>", "/shops/<slug>/", "/shops/<slug>/check", "/shops/<slug>/assign",
            "/shops/<slug>/alerts/<int:alert_id>/acknowledge", "/shops/<slug>/invite",
            "/api/v1/shops/<slug>/status"} <= {rule.rule for rule in rules}


def test_the_owner_still_reaches_their_own_shop(client, two_shops):
    """The refusals above are about shop B, not a broken sign-in: A's own pages answer."""
    assert client.get(f"/setup/{two_shops['a']}/prepare").status_code == 200
    assert client.get(f"/api/v1/shops/{two_shops['a']}/status").status_code == 200
