"""Contacts benchmark for a large shop: the contacts page (first, middle and last pages, a search) and the CSV
export over one shop with 50,000 friends (--contacts), server time only.

    .venv/bin/python tests/bench/contacts.py                      # SQLite in a temporary directory
    .venv/bin/python tests/bench/contacts.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/helper_contacts_bench

What it does:
1. a fresh schema (a PostgreSQL database named in the URL is created if missing, and its tables are dropped
   and created: never point it at data you keep), one shop with its owner and one channel, and in bulk
   --contacts friends (a third filled in the form), plus 200 other shops' friends around it;
2. a staff session in Flask's test client, then each page a few times (--runs) after a warm-up: p50 and
   max, the WSGI call alone (routing, SQL, templates), the big shop's first page against the small shop's (a
   page's time must not grow with the shop) and against the target of 100 ms;
3. the CSV export: the time to its first bytes (it streams: the request no longer builds the file) and to its
   last, its size, and the most memory the process grew by while it was read (tracemalloc).
"""
import argparse
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.console import ensure_database, make_app  # noqa: E402

PAGE_TARGET_MS = 100.0
PAGES = [("small shop (200 contacts), page 1", "/c/other/contacts"), ("contacts, page 1", "/c/big-shop/contacts"),
         ("contacts, page 500", "/c/big-shop/contacts?page=500"),
         ("contacts, last page", "/c/big-shop/contacts?page={last}"),
         ("contacts, search a mobile number", "/c/big-shop/contacts?q=0912000123")]


def populate(app, contacts, seed=27):
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash
    from wizard.extensions import db
    from wizard.models import Channel, Contact, Shop, User, utcnow
    rng = random.Random(seed)
    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.execute(insert(Shop), [{"id": 1, "slug": "big-shop", "name": "大商店", "created_at": now,
                                           "confirmations": {}, "line_module_enabled": True},
                                          {"id": 2, "slug": "other", "name": "別家", "created_at": now,
                                           "confirmations": {}, "line_module_enabled": True}])
        db.session.execute(insert(User), [{"id": 1, "email": "staff@example.com", "shop_id": None, "is_staff": True,
                                           "password_hash": generate_password_hash("bench password"),
                                           "created_at": now}])
        db.session.execute(insert(Channel), [{"id": n, "shop_id": n, "channel_id": str(1_600_000_000 + n),
                                              "secret_encrypted": "x", "webhook_token": f"token-{n}",
                                              "connected_at": now, "check_results": {}} for n in (1, 2)])
        rows = []
        for n in range(contacts + 200):
            followed = now - timedelta(minutes=rng.uniform(0, 60 * 24 * 700))
            filled = rng.random() < 0.33
            rows.append({"channel_id": 1 if n < contacts else 2, "line_user_id": f"U{n:032x}",
                         "display_name": f"客人 {n}", "followed_at": followed, "created_at": followed,
                         "updated_at": followed, "customer_name": f"林小美 {n}" if filled else None,
                         "phone": f"0912{n:06d}" if filled else None,
                         "email": f"guest{n}@example.com" if filled else None,
                         "form_filled_at": followed if filled else None, "marketing_consent": filled,
                         "blocked_at": followed if rng.random() < 0.05 else None})
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(Contact), rows[start:start + 5000])
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        return db.engine.dialect.name


def measure(client, url, runs):
    for _ in range(2):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, url
    return statistics.median(times), max(times)


def export(client):
    tracemalloc.start()
    start = time.perf_counter()
    response = client.get("/c/big-shop/contacts.csv")
    assert response.status_code == 200 and response.is_streamed
    chunks = iter(response.response)
    size = len(next(chunks))
    first = time.perf_counter() - start
    for chunk in chunks:
        size += len(chunk)
    total = time.perf_counter() - start
    response.close()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return first * 1000, total, size, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="contacts-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'wizard.db'}"
        ensure_database(url)
        app = make_app(url, tmp)
        started = time.perf_counter()
        dialect = populate(app, args.contacts)
        print(f"{dialect}: one shop with {args.contacts} contacts in {time.perf_counter() - started:.1f} s")
        client = app.test_client()
        response = client.post("/login?lang=en", data={"email": "staff@example.com", "password": "bench password"})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        last = (args.contacts + 49) // 50
        failed = False
        print(f"{'request':<40} {'p50 ms':>8} {'max ms':>8}")
        for label, path in PAGES:
            p50, worst = measure(client, path.format(last=last), args.runs)
            failed |= label == "contacts, page 1" and p50 > PAGE_TARGET_MS
            print(f"{label:<40} {p50:8.1f} {worst:8.1f}")
        first_ms, total, size, peak = export(client)
        print(f"CSV export: first bytes after {first_ms:.0f} ms, all {size / 1e6:.1f} MB in {total:.1f} s, "
              f"memory peak {peak / 1e6:.1f} MB while streaming")
        print(f"target: page 1 under {PAGE_TARGET_MS:.0f} ms: {'missed' if failed else 'met'}")
        with app.app_context():
            from wizard.extensions import db
            db.engine.dispose()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
