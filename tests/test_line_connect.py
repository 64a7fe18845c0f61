"""``flask line connect``: checks the credentials against LINE, saves them, prints the webhook URL last."""
from wizard.extensions import db
from wizard.models import Channel


def test_connect_prints_webhook_url_last(app, runner, make_shop, sandbox):
    slug, _ = make_shop()
    channel = sandbox.control.create_channel()
    result = runner.invoke(args=["line", "connect", slug, "--channel-id", channel["channelId"],
                                 "--channel-secret", channel["channelSecret"]])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    with app.app_context():
        saved = db.session.scalar(db.select(Channel))
        assert last == f"{app.config['PUBLIC_BASE_URL']}/line/webhook/{saved.webhook_token}"
        assert saved.bot_user_id == channel["botUserId"] and saved.basic_id == channel["basicId"]
    assert channel["channelSecret"] not in result.output


def test_connect_refuses_wrong_secret_and_saves_nothing(app, runner, make_shop, sandbox):
    slug, _ = make_shop()
    channel = sandbox.control.create_channel()
    result = runner.invoke(args=["line", "connect", slug, "--channel-id", channel["channelId"],
                                 "--channel-secret", "0" * 32])
    assert result.exit_code == 1 and "wrong_secret" in result.output
    result = runner.invoke(args=["line", "connect", "no-such-shop", "--channel-id", "1",
                                 "--channel-secret", "x"])
    assert result.exit_code == 1 and "No shop" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Channel.id))) == 0


def test_reconnecting_keeps_the_webhook_url(app, runner, make_shop, sandbox):
    slug, _ = make_shop()
    channel = sandbox.control.create_channel()
    args = ["line", "connect", slug, "--channel-id", channel["channelId"],
            "--channel-secret", channel["channelSecret"]]
    first = runner.invoke(args=args).output.strip().splitlines()[-1]
    reissued = sandbox.control.update(channel["channelId"], reissue_secret=True)
    args[-1] = reissued["channelSecret"]
    second = runner.invoke(args=args).output.strip().splitlines()[-1]
    assert first == second
