"""One ``line check-all`` round over many sandbox shops: its time and its LINE calls per shop.

    .venv/bin/python tests/bench/check_all.py                   # 1,000 shops, SQLite
    .venv/bin/python tests/bench/check_all.py --shops 200 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench   # tables dropped and made

Every shop is connected to its own sandbox channel whose webhook URL is the app served on loopback, has its
owner's confirmations and one friend whose follow LINE delivered, so it is healthy as a real one would be.
Then three rounds, timed: the first after connecting (the daily checks are due: LINE's webhook test, the
friend count, the month's quota and its use: 7 calls a shop), a second straight after (3 calls a shop: token,
bot info, webhook endpoint), and a third after the sandbox changed one shop in ten (it must find exactly
those). The sandbox runs in this process on its own SQLite file, so its time is in the numbers too; LINE itself
answers in tens of ms.
"""
import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.webhook import prepare_database  # noqa: E402
from tests.servers import Served, free_port  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8, help="check-all's threads")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args(argv)

    instance = Path(tempfile.mkdtemp(prefix="wizard-check-all-"))
    database_url = args.database_url or f"sqlite:///{instance}/wizard.db"
    prepare_database(database_url)
    from cryptography.fernet import Fernet

    from wizard import create_app
    from wizard.extensions import db
    from wizard.models import Channel, Shop
    from wizard.sandbox import create_sandbox_app
    from wizard.watch.drift import check_all

    sandbox = create_sandbox_app(f"sqlite:///{instance}/sandbox.db")
    sandbox_server = Served(sandbox)
    port = free_port()
    app = create_app({
        "INSTANCE_PATH": str(instance), "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_hex(16),
        "ENCRYPTION_KEY": Fernet.generate_key().decode(), "LINE_API_HOST": sandbox_server.url, "SANDBOX": False,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "LOG_LEVEL": "WARNING", "WEBHOOK_TEST_COOLDOWN": 0,
        "QUEUE_NAME": f"bench-{secrets.token_hex(4)}",
    })
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a request line per LINE call drowns the numbers
    served = Served(app, port=port)
    control = sandbox.control
    try:
        started = time.monotonic()
        channels = _connect_shops(app, control, args.shops, served.url)
        print(f"{args.shops} shops connected to sandbox channels in {time.monotonic() - started:.1f} s")

        def round_(name):
            with app.app_context():
                results, calls, seconds = check_all(threads=args.threads)
                db.session.remove()
            states = {}
            for _slug, state, _error in results:
                states[state["state"]] = states.get(state["state"], 0) + 1
            print(f"{name:34} {seconds:7.1f} s  {len(results) / seconds:7.1f} shops/s  "
                  f"{calls / len(results):4.1f} LINE calls per shop  {states}")
            return results

        round_("round 1 (daily checks due)")
        round_("round 2 (3 calls a shop)")
        changed = channels[::10]
        for channel_id in changed:
            control.update(channel_id, chat_mode="bot")
        results = round_("round 3 (one shop in ten changed)")
        broken = sorted(slug for slug, state, _error in results if state["state"] == "broken")
        with app.app_context():
            expected = sorted(db.session.scalars(db.select(Shop.slug).join(Channel).where(
                Channel.channel_id.in_(changed))).all())
            db.session.remove()
        print(f"found {len(broken)} broken of {len(changed)} changed: "
              f"{'exactly those' if broken == expected else 'MISMATCH'}")
    finally:
        served.stop()
        sandbox_server.stop()
        control.close()


def _connect_shops(app, control, count, our_url):
    """``count`` shops, each connected, confirmed and with one delivered follow (as the wizard leaves them)."""
    from wizard import crypto
    from wizard.extensions import db
    from wizard.models import Channel, Shop, iso_utc, utcnow
    from wizard.steps.status import evaluate
    channel_ids = []
    with app.app_context():
        db.drop_all()
        db.create_all()
        confirmed = {"at": iso_utc(utcnow()), "by": "bench-owner@example.com", "staff": False}
        for number in range(count):
            made = control.create_channel(display_name=f"Bench shop {number}")
            shop = Shop(slug=f"bench-{number:05d}", name=f"Bench shop {number}")
            db.session.add(shop)
            db.session.flush()
            shop.confirmations = {"prepare": confirmed, "line_login": confirmed, "auto_response": confirmed,
                                  "webhook_redelivery": confirmed}
            channel = Channel(shop_id=shop.id, channel_id=made["channelId"], webhook_token=crypto.new_token(),
                              bot_user_id=made["botUserId"], check_results={})
            channel.secret = made["channelSecret"]
            db.session.add(channel)
            db.session.flush()
            control.update(made["channelId"], endpoint=f"{our_url}/line/webhook/{channel.webhook_token}")
            channel_ids.append(made["channelId"])
        db.session.commit()
        for channel_id in channel_ids:
            control.follow(channel_id)
        for shop in db.session.scalars(db.select(Shop)):
            evaluate(shop)
        db.session.commit()
        db.session.remove()
    return channel_ids


if __name__ == "__main__":
    os.environ.setdefault("WIZARD_LOG_LEVEL", "WARNING")
    main()
