"""Staff console benchmark: the console page and the list API over 10,000 shops (server time only), then one
``line check-all`` round over 1,000 sandbox shops (tests/bench/check_all.py: its time and LINE calls per shop).

    .venv/bin/python tests/bench/console.py                       # SQLite in a temporary directory
    .venv/bin/python tests/bench/console.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/helper_console_bench

What it does:
1. a fresh schema (a PostgreSQL database named in the URL is created if missing, and its tables are dropped
   and created: never point it at data you keep) and, in bulk, 10,000 shops (--shops) each with an owner,
   recorded states in every kind (broken, dormant, attention, onboarding, healthy, and some never checked),
   a connected channel with its last delivery for the shops that got that far, friends and blocks for a
   fifth of them, five staff members looking after some;
2. a staff session in Flask's test client, then each request below a few times (--runs) after a warm-up; the
   time is the WSGI call alone (routing, SQL, templates), no network and no browser;
3. p50 and max per request, against the target of 300 ms. Nothing asks LINE: the console reads the recorded
   states (``LINE_API_HOST`` points at a closed port, so a call would fail loudly);
4. check_all.py's rounds over --check-all-shops sandbox shops (0 skips them), on the same database.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET_MS = 300.0
REQUESTS = [
    ("console, first page", "/shops/"),
    ("console, state=broken", "/shops/?state=broken"),
    ("console, search", "/shops/?q=owner-0042"),
    ("console, stuck, sort by friends", "/shops/?stuck=1&sort=friends"),
    ("console, page 150", "/shops/?page=150&sort=name"),
    ("API, state=broken page 2", "/api/v1/shops?state=broken&page=2"),
    ("API, every shop page 1", "/api/v1/shops"),
]
INFORMATIONAL = [("CSV export, state=healthy (not in the target)", "/shops/export.csv?state=healthy")]
STATES = [("broken", "wrong_secret", "credentials", 0.05),
          ("dormant", "followers_without_follows", "webhook_url", 0.03),
          ("attention", "auto_response_unconfirmed", "response_settings", 0.10),
          ("onboarding", "no_credentials", "credentials", 0.25), ("healthy", "connected", None, 0.55)]


def ensure_database(url):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    target = make_url(url)
    if not target.drivername.startswith("postgresql"):
        return
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}):
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def make_app(database_url, instance):
    from cryptography.fernet import Fernet
    for name in [name for name in os.environ if name.startswith("WIZARD_")]:
        del os.environ[name]
    from wizard import create_app
    return create_app({
        "TESTING": True, "INSTANCE_PATH": instance, "DATABASE_URL": database_url, "SECRET_KEY": "bench",
        "ENCRYPTION_KEY": Fernet.generate_key().decode(), "WTF_CSRF_ENABLED": False, "SANDBOX": False,
        "LINE_API_HOST": "http://127.0.0.1:9", "LINE_TIMEOUT": 0.5,
    })


def populate(app, shops, seed=8):
    """Bulk inserts (executemany), no ORM objects per row: a few seconds for 10,000 shops."""
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash
    from wizard.extensions import db
    from wizard.models import Channel, Contact, Shop, ShopHealth, User, utcnow
    rng = random.Random(seed)
    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        password = generate_password_hash("bench password")
        staff = [{"id": n + 1, "email": f"staff-{n}@example.com", "password_hash": password, "is_staff": True,
                  "created_at": now} for n in range(5)]
        db.session.execute(insert(User), staff)
        shop_rows, health_rows, owner_rows, channel_rows, contact_rows = [], [], [], [], []
        channel_id = 0
        for n in range(1, shops + 1):
            created = now - timedelta(days=rng.uniform(0, 400))
            shop_rows.append({"id": n, "slug": f"shop-{n:05d}", "name": f"測試商店 {n:05d}", "created_at": created,
                              "confirmations": {}, "line_module_enabled": True,
                              "assigned_staff_id": rng.choice([None, None, 1, 2, 3, 4, 5])})
            owner_rows.append({"id": 100 + n, "email": f"owner-{n:04d}@example.com", "password_hash": password,
                               "is_staff": False, "shop_id": n, "created_at": created})
            if rng.random() < 0.02:
                continue  # never checked: no recorded state
            pick, acc = rng.random(), 0.0
            for picked in STATES:
                acc += picked[3]
                if pick <= acc:
                    break
            state, reason, step, _share = picked
            since = now - timedelta(hours=rng.uniform(0, 24 * 30))
            health_rows.append({"shop_id": n, "state": state, "reason": reason, "step": step, "since": since,
                                "detail": {}, "checked_at": since + timedelta(minutes=rng.uniform(0, 60)),
                                "connected_once_at": None if state == "onboarding" else since, "updated_at": since})
            if state != "onboarding":
                channel_id += 1
                channel_rows.append({"id": channel_id, "shop_id": n, "channel_id": str(1_600_000_000 + n),
                                     "secret_encrypted": "x", "webhook_token": f"token-{n:05d}",
                                     "connected_at": since, "check_results": {},
                                     "last_delivery_at": now - timedelta(minutes=rng.uniform(0, 60 * 24 * 7))})
                if rng.random() < 0.2:
                    for c in range(rng.randint(1, 60)):
                        contact_rows.append({"channel_id": channel_id, "line_user_id": f"U{n:05d}{c:03d}",
                                             "followed_at": since, "created_at": since, "updated_at": since,
                                             "blocked_at": since if rng.random() < 0.1 else None})
        for model, rows in ((Shop, shop_rows), (User, owner_rows), (ShopHealth, health_rows),
                            (Channel, channel_rows), (Contact, contact_rows)):
            for start in range(0, len(rows), 2000):
                db.session.execute(insert(model), rows[start:start + 2000])
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        return {"dialect": db.engine.dialect.name, "shops": len(shop_rows), "recorded": len(health_rows),
                "channels": len(channel_rows),
                "contacts": len(contact_rows)}


def measure(client, url, runs):
    for _ in range(2):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True)[:500])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, url
    return statistics.median(times), max(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--shops", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--check-all-shops", type=int, default=1000, help="shops in the check-all rounds (0: none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'wizard.db'}"
        ensure_database(url)
        app = make_app(url, tmp)
        started = time.perf_counter()
        made = populate(app, args.shops)
        print(f"{made['dialect']}: {made['shops']} shops "
              f"({made['recorded']} with a recorded state, {made['channels']} channels, {made['contacts']} "
              f"contacts) in {time.perf_counter() - started:.1f} s")
        client = app.test_client()
        response = client.post("/login?lang=en", data={"email": "staff-0@example.com", "password": "bench password"})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        failed = False
        print(f"{'request':<48} {'p50 ms':>8} {'max ms':>8}")
        for label, path in REQUESTS:
            p50, worst = measure(client, path, args.runs)
            failed |= p50 > TARGET_MS
            print(f"{label:<48} {p50:8.1f} {worst:8.1f}{'  over the target' if p50 > TARGET_MS else ''}")
        for label, path in INFORMATIONAL:
            p50, worst = measure(client, path, max(3, args.runs // 3))
            print(f"{label:<48} {p50:8.1f} {worst:8.1f}")
        print(f"target: p50 under {TARGET_MS:.0f} ms for every console and API request: "
              f"{'missed' if failed else 'met'}")
        with app.app_context():
            from wizard.extensions import db
            db.engine.dispose()
    if args.check_all_shops:
        from tests.bench import check_all
        print(f"line check-all over {args.check_all_shops} sandbox shops:")
        check_all.main(["--shops", str(args.check_all_shops)]
                       + (["--database-url", args.database_url] if args.database_url else []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
