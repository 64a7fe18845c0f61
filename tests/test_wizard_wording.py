"""What the wizard's steps say agrees between steps and with LINE: a page never says the webhook is delivering
while another says "Use webhook" is off."""
from tests.test_console import connect_fully
from tests.wizard_helpers import page_text


def test_step_5_does_not_claim_deliveries_while_step_6_says_use_webhook_is_off(
        client, staff, make_shop, sandbox, live_app):  # noqa: F811
    slug, _email = make_shop()
    channel = connect_fully(client, slug, sandbox.control, live_app)
    assert "持續把事件送到 CRM" in page_text(client.get(f"/setup/{slug}/webhook_url?lang=zh_Hant_TW"))
    sandbox.control.update(channel["channelId"], webhook_active=False)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "recheck"})  # LINE asked afresh, no webhook test
    for step in ("webhook_url", "response_settings", "connected"):
        text = page_text(client.get(f"/setup/{slug}/{step}?lang=zh_Hant_TW"))
        assert "持續把事件送到 CRM" not in text, step
    step5 = page_text(client.get(f"/setup/{slug}/webhook_url?lang=en"))
    assert "“Use webhook” is off now" in step5
    assert "“Use webhook” is off in LINE" in page_text(client.get(f"/setup/{slug}/response_settings"))


def test_our_url_with_an_extra_slash_is_called_what_it_is_not_an_incomplete_copy(
        client, app, make_shop, login, sandbox, live_app):
    from tests.wizard_helpers import connect
    from wizard.extensions import db
    from wizard.models import Channel
    slug, email = make_shop()
    login(email)
    channel = sandbox.control.create_channel()
    connect(client, slug, channel)
    with app.app_context():
        token = db.session.scalar(db.select(Channel)).webhook_token
    ours = f"{app.config['PUBLIC_BASE_URL']}/line/webhook/{token}"
    sandbox.control.update(channel["channelId"], endpoint=ours + "/")
    client.post(f"/setup/{slug}/webhook_url", data={"action": "recheck"})
    text = page_text(client.get(f"/setup/{slug}/webhook_url?lang=en"))
    assert 'data-reason="endpoint_extra"' in text
    assert "with “/” added at its end" in text and "incomplete" not in text
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})  # "Set it for me" fixes it
    assert sandbox.control.channel(channel["channelId"])["endpoint"] == ours


def test_the_friend_test_names_the_tester_by_their_line_name(client, owner, sandbox, live_app):
    """Even before the worker has fetched the new friend's profile, the verdict names them as LINE does."""
    from tests.wizard_helpers import connect
    slug, line = owner, sandbox.control
    channel = line.create_channel()
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    user_id = line.follow(channel["channelId"], name="林小美")["event"]["source"]["userId"]
    live = client.get(f"/setup/{slug}/test_friend/live?lang=en").get_json()
    assert live["done"] is True
    assert "林小美 added the account as a friend" in live["html"]
    assert user_id[:5] not in live["html"]
    assert "林小美" in page_text(client.get(f"/setup/{slug}/connected"))  # the kept verdict keeps the name


def test_before_the_new_secret_is_entered_the_owner_learns_new_friends_are_waiting(
        client, owner, sandbox, live_app):
    from tests.wizard_helpers import connect
    slug, line = owner, sandbox.control
    channel = line.create_channel()
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    assert "waiting-friends" not in page_text(client.get(f"/setup/{slug}/credentials"))
    line.update(channel["channelId"], reissue_secret=True)  # someone pressed "Issue" in LINE
    for name in ("林小美", "陳大文"):
        assert line.follow(channel["channelId"], name=name)["delivery"]["statusCode"] == 400  # refused, kept
    text = page_text(client.get(f"/setup/{slug}/credentials?lang=zh_Hant_TW"))
    assert "LINE 傳來 2 則用 CRM 還沒有的 Channel secret 簽署的通知" in text
    assert "很可能是正在等待的新好友" in text


def test_the_testers_name_is_asked_of_line_once_not_at_every_check(client, owner, sandbox, live_app):
    """The watch checks every 15 minutes: the profile is asked for once per tester, then the name is kept."""
    from tests.wizard_helpers import connect
    from wizard.metrics import LINE_CALLS

    def profile_calls():
        return sum(sample.value for metric in LINE_CALLS.collect() for sample in metric.samples
                   if sample.name.endswith("_total") and "profile" in str(sample.labels))
    slug, line = owner, sandbox.control
    channel = line.create_channel()
    connect(client, slug, channel)
    client.post(f"/setup/{slug}/webhook_url", data={"action": "set_endpoint"})
    line.follow(channel["channelId"], name="林小美")
    client.get(f"/setup/{slug}/test_friend/live")
    asked = profile_calls()
    for _ in range(3):
        client.post(f"/setup/{slug}/test_friend", data={"action": "recheck"})
    assert profile_calls() == asked
    assert "林小美" in page_text(client.get(f"/setup/{slug}/connected"))
