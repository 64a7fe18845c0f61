"""The audit log: every change to credentials, the webhook URL, confirmations, accounts, invitations and tokens
is recorded with who did it, for which shop; nothing secret is ever stored; staff read it on /shops/audit/."""
import json
import re


from tests.wizard_helpers import connect, page_text
from wizard import audit
from wizard.extensions import db
from wizard.models import AuditEntry, Channel, Shop


def entries(app, after=0, **filters):
    """The entries (``after`` an id: those made since then), oldest first."""
    with app.app_context():
        found = db.session.scalars(db.select(AuditEntry).filter_by(**filters).where(AuditEntry.id > after)
                                   .order_by(AuditEntry.id)).all()
        db.session.expunge_all()
        return found


def last_id(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.max(AuditEntry.id))) or 0


def everything_stored(app):
    """Every audit entry as text, to look for secrets in."""
    return json.dumps([[e.actor, e.action, e.target, e.detail] for e in entries(app)], ensure_ascii=False)


def test_the_owners_wizard_changes_are_recorded_without_any_secret(app, client, owner, sandbox):
    start = last_id(app)  # after the fixture's account and shop
    channel = sandbox.control.create_channel()
    client.post(f"/setup/{owner}/prepare", data={"action": "confirm", "line_login": "y"})
    connect(client, owner, channel)
    client.post(f"/setup/{owner}/webhook_url", data={"action": "set_endpoint"})
    client.post(f"/setup/{owner}/credentials", data={"action": "reset", "confirm_reset": "y"})

    actions = [(e.action, e.target) for e in entries(app, start)]
    assert actions == [("confirmation.set", "line_login"), ("credentials.saved", channel["channelId"]),
                       ("webhook_url.set", channel["channelId"]), ("credentials.removed", channel["channelId"])]
    with app.app_context():
        shop_id = db.session.scalar(db.select(Shop.id).filter_by(slug=owner))
        webhook_token = db.session.scalar(db.select(Channel.webhook_token))
    assert {(e.actor, e.shop_id) for e in entries(app, start)} == {(f"owner-{owner}@example.com", shop_id)}
    stored = everything_stored(app)
    assert channel["channelSecret"] not in stored and webhook_token not in stored


def test_an_unchanged_confirmation_is_not_recorded_again(app, client, owner):
    start = last_id(app)
    for _ in range(2):
        client.post(f"/setup/{owner}/prepare", data={"action": "confirm", "line_login": "y"})
    client.post(f"/setup/{owner}/prepare", data={"action": "confirm"})  # unticked: withdrawn
    assert [(e.action, e.detail["value"]) for e in entries(app, start)] == [("confirmation.set", True),
                                                                   ("confirmation.set", False)]


def test_cli_changes_are_recorded_as_the_cli(app, runner, sandbox):
    runner.invoke(args=["user", "create", "o@example.com", "--password", "a long password"])
    result = runner.invoke(args=["shop", "create", "shop-a", "--name", "甲店", "--owner", "o@example.com"])
    assert result.exit_code == 0, result.output
    channel = sandbox.control.create_channel()
    result = runner.invoke(args=["line", "connect", "shop-a", "--channel-id", channel["channelId"],
                                 "--channel-secret", channel["channelSecret"]])
    assert result.exit_code == 0, result.output
    assert [(e.action, e.actor) for e in entries(app)] == [
        ("account.created", "cli"), ("shop.created", "cli"), ("credentials.saved", "cli")]
    assert channel["channelSecret"] not in everything_stored(app)


def test_record_drops_secret_details_and_masks_secret_looking_values(app):
    secret = "0123456789abcdef0123456789abcdef"
    access_token = "Aa1" * 60
    with app.app_context():
        audit.record("test.secrets", target=f"token {secret}", channel_secret=secret, password="hunter2 long",
                     access_token=access_token, note=f"was {access_token}", email="someone-long-name@example.com",
                     nested={"api_key": "k", "ok": [secret, 1, None]})
        db.session.commit()
    (entry,) = entries(app)
    assert entry.detail == {"note": "was ****", "email": "someone-long-name@example.com",
                            "nested": {"ok": ["****", 1, None]}}
    assert entry.target == "token ****" and entry.actor == "system"


def test_for_shop_is_the_shops_timeline_newest_first(app, make_shop):
    slug_a, _ = make_shop("shop-a", "甲店")
    make_shop("shop-b", "乙店")
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug_a))
        audit.record("test.first", shop=shop)
        audit.record("test.second", shop=shop)
        db.session.commit()
        timeline = audit.for_shop(shop, limit=10)
        assert [e.action for e in timeline] == ["test.second", "test.first", "shop.created"]
        assert [e.action for e in audit.for_shop(shop, limit=1)] == ["test.second"]


def test_a_rolled_back_change_leaves_no_entry(app, make_shop):
    slug, _ = make_shop()
    with app.app_context():
        audit.record("test.never", shop=db.session.scalar(db.select(Shop).filter_by(slug=slug)))
        db.session.rollback()
    assert entries(app, action="test.never") == []


def test_staff_read_the_log_filtered_by_shop(app, client, staff, make_shop):
    make_shop("shop-a", "甲店")
    make_shop("shop-b", "乙店")
    page = page_text(client.get("/shops/audit/"))
    assert page.count('data-action="shop.created"') == 2 and "Shop created" in page
    only_a = page_text(client.get("/shops/audit/?shop=shop-a"))
    assert only_a.count('data-action="shop.created"') == 1 and "Shop created: shop-a" in only_a
    unknown = client.get("/shops/audit/?shop=%E2%80%AEnope")
    assert unknown.status_code == 200 and "There is no shop with the code" in page_text(unknown)
    assert 'data-action=' not in page_text(unknown)


def test_the_log_reads_as_sentences_in_the_readers_language_and_taipei_time(app, client, make_user, login,
                                                                          make_shop):
    """Staff read what happened, not codes: no "alert.snoozed", "value=True", "until=…Z" nor "system"."""
    from datetime import datetime
    slug, _owner = make_shop("shop-a", "甲店")
    with app.app_context():
        shop = db.session.scalar(db.select(Shop).filter_by(slug=slug))
        audit.record("alert.snoozed", shop=shop, actor="helper@example.com", target="webhook_inactive",
                     until="2026-12-06T22:30:00Z")
        audit.record("confirmation.set", shop=shop, actor="helper@example.com", target="webhook_redelivery",
                     value=True)
        audit.record("alert.opened", shop=shop, actor="system", target="secret_reissued", state="broken")
        audit.record("form_settings.saved", shop=shop, actor="owner@example.com", target="customer form",
                     enabled=True, changed=True, notice_version=3)
        db.session.commit()
    login(make_user("staff@example.com", staff=True))
    page = page_text(client.get("/shops/audit/?lang=zh_Hant_TW"))
    shown = re.sub(r'data-action="[^"]*"', "", page.split("<tbody", 1)[1])
    for code in ("alert.snoozed", "webhook_inactive", "value=", "until=", "2026-12-06T22:30", "webhook_redelivery",
                 "secret_reissued", "customer form", "notice_version", ">system<"):
        assert code not in shown, code
    # 22:30 UTC is 06:30 in Taipei
    assert "警示暫停提醒：LINE 的「使用Webhook」已關閉（到 2026-12-07 06:30 為止）" in page
    assert "變更確認項目：已確認「Use webhook redelivery」（Webhook 重新傳送）已開啟" in page
    assert "警示開啟：LINE 的 Channel secret 已重新發行（狀態：已中斷）" in page
    assert "客戶資料回填表設定已儲存（表單已開啟）" in page
    assert "系統（自動）" in page
    assert datetime(2026, 12, 6, 22, 30).isoformat() not in page


def test_owners_cannot_read_the_log(client, owner):
    assert client.get("/shops/audit/").status_code == 403


def test_a_password_change_is_in_the_audit_log_without_the_password(app, client, make_shop, login):
    slug, email = make_shop()
    login(email)
    new = "a much longer new password"
    response = client.post("/account/password", data={"current": "correct horse", "new": new, "confirm": new})
    assert response.status_code == 302
    with app.app_context():
        entry = db.session.scalar(db.select(AuditEntry).filter_by(action="account.password_changed"))
        assert (entry.actor, entry.target) == (email, email)
        assert new not in str(entry.detail) and "correct horse" not in str(entry.detail)
