"""Audience benchmark: the segment builder's count (customers/segments.py) over one channel with 100,000 friends
(--contacts) and their messages, each filter alone and combined, through the API and the contacts page.

    .venv/bin/python tests/bench/segments.py                      # SQLite in a temporary directory
    .venv/bin/python tests/bench/segments.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/helper_segments_bench

What it does:
1. a fresh schema (a PostgreSQL database named in the URL is created if missing, and its tables are dropped
   and created: never point it at data you keep), one shop with one channel and --contacts friends (about a
   third filled in the form: city, gender, birthday; 5 % blocked), --messages messages over the last year
   (half from the customers), and a small shop beside it;
2. ``segments.count`` for each filter alone and for combinations, a few times (--runs) after a warm-up: p50
   and the fastest in milliseconds (on a machine shared with other work the fastest is the nearest to the
   query's own cost), the database's time and ours (no HTTP);
3. the same through ``POST /api/v1/shops/<slug>/audience/count`` and the contacts page's first page with the
   filters applied (Flask's test client, a staff session: routing, SQL, templates), against the target of
   100 ms for a count;
4. the CSV export of a few audiences, start to last byte.
"""
import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.console import ensure_database, make_app  # noqa: E402

COUNT_TARGET_MS = 100.0
CITIES = ["TPE", "NWT", "TAO", "TXG", "TNN", "KHH", "HSZ", "ILA"]
GENDERS = ["female", "male", "other", "undisclosed"]
FILTERS = [
    ("all friends", {}),
    ("city TPE, NWT", {"city": ["TPE", "NWT"]}),
    ("gender female", {"gender": ["female"]}),
    ("birthday month 3", {"birthday_month": [3]}),
    ("age 25-34", {"age_min": 25, "age_max": 34}),
    ("form filled", {"form_filled": True}),
    ("form not filled", {"form_filled": False}),
    ("friend since 2026-01-01..06-30", {"friend_since_from": "2026-01-01", "friend_since_to": "2026-06-30"}),
    ("messaged within 30 days", {"messaged_within_days": 30}),
    ("messaged within 365 days", {"messaged_within_days": 365}),
    ("TPE + filled + female + 25-34", {"city": ["TPE"], "form_filled": True, "gender": ["female"],
                                       "age_min": 25, "age_max": 34}),
    ("every filter", {"city": ["TPE", "NWT", "TAO"], "gender": ["female", "male"], "birthday_month": [1, 2, 3, 4],
                      "age_min": 20, "age_max": 60, "form_filled": True, "friend_since_from": "2025-06-01",
                      "friend_since_to": "2026-12-31", "messaged_within_days": 90}),
]


def populate(app, contacts, messages, seed=16):
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash
    from wizard.extensions import db
    from wizard.models import Channel, Contact, Message, Shop, User, utcnow
    rng = random.Random(seed)
    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.execute(insert(Shop), [{"id": n, "slug": slug, "name": slug, "created_at": now,
                                           "confirmations": {}, "line_module_enabled": True}
                                          for n, slug in ((1, "big-shop"), (2, "other"))])
        db.session.execute(insert(User), [{"id": 1, "email": "staff@example.com", "shop_id": None, "is_staff": True,
                                           "password_hash": generate_password_hash("bench password"),
                                           "created_at": now}])
        db.session.execute(insert(Channel), [{"id": n, "shop_id": n, "channel_id": str(1_600_000_000 + n),
                                              "secret_encrypted": "x", "webhook_token": f"token-{n}",
                                              "connected_at": now, "check_results": {}} for n in (1, 2)])
        rows = []
        for n in range(contacts + 500):
            followed = now - timedelta(minutes=rng.uniform(0, 60 * 24 * 700))
            filled = rng.random() < 0.33
            rows.append({"channel_id": 1 if n < contacts else 2, "line_user_id": f"U{n:032x}",
                         "display_name": f"客人 {n}", "followed_at": followed, "created_at": followed,
                         "updated_at": followed, "customer_name": f"林小美 {n}" if filled else None,
                         "form_filled_at": followed if filled else None, "marketing_consent": filled,
                         "city": rng.choice(CITIES) if filled else None,
                         "gender": rng.choice(GENDERS) if filled else None,
                         "birthday": date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 58)) if filled else None,
                         "blocked_at": followed if rng.random() < 0.05 else None})
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(Contact), rows[start:start + 5000])
        batch = []
        for n in range(messages):
            batch.append({"channel_id": 1, "contact_id": rng.randrange(1, contacts + 1),
                          "direction": "in" if n % 2 else "out", "type": "text", "text": "你好",
                          "sent_at": now - timedelta(minutes=rng.uniform(0, 60 * 24 * 365))})
            if len(batch) == 5000:
                db.session.execute(insert(Message), batch)
                batch = []
        if batch:
            db.session.execute(insert(Message), batch)
        db.session.commit()
        # As a database that has lived a while: statistics, and on PostgreSQL the visibility map that autovacuum
        # keeps (without it an index-only scan of the messages still reads every row it names).
        statement = "VACUUM ANALYZE" if db.engine.dialect.name == "postgresql" else "ANALYZE"
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(statement)
        return db.engine.dialect.name


def timed(call, runs):
    for _ in range(2):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows a previous run left in --database-url (same sizes), skip filling it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segments-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'wizard.db'}"
        ensure_database(url)
        app = make_app(url, tmp)
        started = time.perf_counter()
        if args.reuse:
            with app.app_context():
                from wizard.extensions import db
                dialect = db.engine.dialect.name
        else:
            dialect = populate(app, args.contacts, args.messages)
        print(f"{dialect}: one channel with {args.contacts} contacts and {args.messages} messages "
              f"in {time.perf_counter() - started:.1f} s")
        from wizard.customers import segments
        from wizard.extensions import db
        failed = False
        print(f"{'filters':<34} {'matching':>9} {'count p50 ms':>13} {'min ms':>8} {'API p50':>8} {'page p50':>9}")
        client = app.test_client()
        response = client.post("/login?lang=en", data={"email": "staff@example.com", "password": "bench password"})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        for label, filters in FILTERS:
            with app.app_context():
                found = segments.count(1, filters)
                p50, fastest = timed(lambda filters=filters: (segments.count(1, filters), db.session.rollback()),
                                   args.runs)

            def api(filters=filters, found=found):
                reply = client.post("/api/v1/shops/big-shop/audience/count", json={"filters": filters})
                assert reply.status_code == 200 and reply.get_json()["contacts"] == found, reply.get_data()
            api_p50, _api_min = timed(api, args.runs)
            query = {"advanced": "1", **segments.as_args(filters)}

            def page(query=query):
                reply = client.get("/c/big-shop/contacts", query_string=query)
                assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
            page_p50, _page_min = timed(page, args.runs)
            failed |= fastest > COUNT_TARGET_MS
            print(f"{label:<34} {found:>9} {p50:13.1f} {fastest:8.1f} {api_p50:8.1f} {page_p50:9.1f}")
        for label, filters in (FILTERS[0], FILTERS[8], FILTERS[9], FILTERS[10]):
            start = time.perf_counter()
            reply = client.get("/c/big-shop/contacts.csv", query_string={"advanced": "1",
                                                                         **segments.as_args(filters)})
            size = sum(len(chunk) for chunk in reply.response)
            reply.close()
            print(f"CSV export, {label}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
        print(f"target: every count under {COUNT_TARGET_MS:.0f} ms (fastest run): {'missed' if failed else 'met'}")
        with app.app_context():
            db.engine.dispose()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
