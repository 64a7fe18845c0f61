"""What the wizard's steps say agrees between steps and with LINE: a page never says the webhook is delivering
while another says "Use webhook" is off."""
from tests.test_console import connect_fully, staff  # noqa: F401  (the fixture)
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
