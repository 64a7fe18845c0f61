"""Webhook receiver benchmark: the app under gunicorn, the receiver beside a bare 200 route of the same app.

    .venv/bin/python tests/bench/webhook.py                       # SQLite in a temporary instance dir
    .venv/bin/python tests/bench/webhook.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench

What it does, all on loopback and bounded in time:
1. a temporary instance dir, a fresh schema in the chosen database (a PostgreSQL database named in the URL is
   created if missing, and its tables are dropped and created: never point it at data you keep), one shop
   and one channel;
2. gunicorn (gthread) serving ``wsgi:app``;
3. for each of ``POST /healthz`` (bare) and ``POST /line/webhook/<token>`` (one signed event with a unique
   ULID per request, as LINE sends them; the bare route gets a body of the same size): a fixed offered rate
   (open loop: latency counts from when the request was due, so a server that falls behind is not
   flattered), then maximum throughput with N connections in a closed loop;
4. throughput, p50/p99 latency, and the events stored compared with the events acknowledged, which must be
   equal: none lost, none doubled.

The load generator is a small asyncio HTTP/1.1 client with keep-alive (no third-party client), and runs on
the same two cores as the server, so both routes pay for it alike.
"""
import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.webhooks import encode, sign, text_event  # noqa: E402


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- a minimal keep-alive HTTP client ---------------------------------------------------------------------

class Connection:
    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def request(self, path, body, headers):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            await self.reader.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            raise
        if close:
            self.close()
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _one(pool, port, path, body, headers, due, results):
    connection = pool.pop() if pool else Connection(port)
    try:
        try:
            status = await connection.request(path, body, headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            # A keep-alive connection the server closed meanwhile: one fresh retry, as HTTP clients do.
            status = await connection.request(path, body, headers)
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        status = 0
    results.append((status, time.perf_counter() - due))
    pool.append(connection)


async def fixed_rate(port, requests, rate):
    """Send ``requests`` (path, body, headers) at ``rate`` per second, whatever the answers' pace."""
    pool, results, tasks = [], [], []
    start = time.perf_counter() + 0.05
    for index, (path, body, headers) in enumerate(requests):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(pool, port, path, body, headers, due, results)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in pool:
        connection.close()
    return results, elapsed


async def max_throughput(port, make_request, concurrency, duration):
    results = []
    stop_at = time.perf_counter() + duration

    async def client():
        connection = Connection(port)
        while time.perf_counter() < stop_at:
            path, body, headers = make_request()
            due = time.perf_counter()
            try:
                status = await connection.request(path, body, headers)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                status = 0
            results.append((status, time.perf_counter() - due))
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def summary(results, elapsed):
    latencies = sorted(latency for _, latency in results)
    ok = sum(1 for status, _ in results if status == 200)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(results), "ok": ok, "errors": len(results) - ok, "seconds": elapsed,
            "throughput": ok / elapsed if elapsed else 0.0, "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": latencies[-1] * 1000 if latencies else 0.0}


# ---- the server under test --------------------------------------------------------------------------------

def prepare_database(url):
    """Create the PostgreSQL database named in ``url`` if missing (SQLite files create themselves)."""
    if not url.startswith("postgresql"):
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}):
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def setup_app(env):
    """Fresh tables, a shop and its channel; returns (webhook path, channel secret, bot user id)."""
    for key, value in env.items():
        os.environ[key] = value
    from wizard import create_app, crypto
    from wizard.accounts import create_shop, create_user
    from wizard.extensions import db
    from wizard.models import Channel
    app = create_app()
    with app.app_context():
        db.drop_all()
        db.create_all()
        create_user("bench-owner@example.com", "bench-password")
        shop = create_shop("bench-shop", "Bench Shop", "bench-owner@example.com")
        channel = Channel(shop_id=shop.id, channel_id="1656000000", webhook_token=crypto.new_token(),
                          bot_user_id="U" + secrets.token_hex(16))
        channel.secret = secrets.token_hex(16)
        db.session.add(channel)
        db.session.commit()
        facts = (f"/line/webhook/{channel.webhook_token}", channel.secret, channel.bot_user_id)
        db.engine.dispose()
    return app, facts


def stored_counts(app):
    from wizard.extensions import db
    from wizard.models import WebhookEvent
    with app.app_context():
        total = db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent))
        distinct = db.session.scalar(db.select(db.func.count(db.distinct(WebhookEvent.webhook_event_id))))
        db.session.remove()
        return total, distinct


def server_cpu_seconds(master_pid):
    """User + system CPU of gunicorn's master and workers so far (Linux /proc), to compare routes by cost."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [master_pid] + _children(master_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children(pid):
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start_gunicorn(env, port, workers, threads):
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    process = subprocess.Popen(
        [gunicorn, "-w", str(workers), "-k", "gthread", "--threads", str(threads), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "wsgi:app"],
        cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process
        except OSError:
            time.sleep(0.1)
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {process.returncode}")
    process.terminate()
    raise SystemExit("gunicorn did not answer within 30 s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in the temporary instance dir")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds at the fixed rate")
    parser.add_argument("--max-duration", type=float, default=8.0, help="seconds at maximum throughput")
    parser.add_argument("--concurrency", type=int, default=64, help="connections at maximum throughput")
    parser.add_argument("--worker-in-process", action="store_true",
                        help="also run the event worker thread in each gunicorn process")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)

    instance = tempfile.mkdtemp(prefix="wizard-bench-")
    database_url = args.database_url or f"sqlite:///{instance}/wizard.db"
    prepare_database(database_url)
    from cryptography.fernet import Fernet
    env = {
        "WIZARD_INSTANCE_PATH": instance, "WIZARD_DATABASE_URL": database_url,
        "WIZARD_SECRET_KEY": secrets.token_hex(32), "WIZARD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": "http://127.0.0.1:9",  # nothing here may call LINE
        "WIZARD_WORKER_IN_PROCESS": "1" if args.worker_in_process else "0",
    }
    app, (path, secret, bot_user_id) = setup_app(env)
    port = free_port()
    server = start_gunicorn(env, port, args.workers, args.threads)
    sent_ids = []

    def receiver_request():
        event = text_event("U" + secrets.token_hex(16), "bench " + secrets.token_hex(4))
        sent_ids.append(event["webhookEventId"])
        body = encode({"destination": bot_user_id, "events": [event]})
        return path, body, {"Content-Type": "application/json; charset=utf-8",
                            "x-line-signature": sign(secret, body)}

    sample_size = len(receiver_request()[1])
    sent_ids.clear()
    bare_body = b"{" + b" " * (sample_size - 2) + b"}"

    def bare_request():
        return "/healthz", bare_body, {"Content-Type": "application/json; charset=utf-8",
                                       "x-line-signature": "x" * 44}

    try:
        count = int(args.rate * args.duration)
        # Warm both routes (imports, connection pools, first queries) outside the measurement.
        asyncio.run(fixed_rate(port, [bare_request() for _ in range(100)], 100))
        warm_results, _ = asyncio.run(fixed_rate(port, [receiver_request() for _ in range(100)], 100))
        phases = {}

        def measure(name, run):
            cpu = server_cpu_seconds(server.pid)
            phases[name] = summary(*asyncio.run(run))
            phases[name]["server_cpu_ms_per_request"] = (
                (server_cpu_seconds(server.pid) - cpu) * 1000 / max(1, phases[name]["requests"]))

        measure("bare_fixed", fixed_rate(port, [bare_request() for _ in range(count)], args.rate))
        measure("receiver_fixed", fixed_rate(port, [receiver_request() for _ in range(count)], args.rate))
        measure("bare_max", max_throughput(port, bare_request, args.concurrency, args.max_duration))
        measure("receiver_max", max_throughput(port, receiver_request, args.concurrency, args.max_duration))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    warm_ok = sum(1 for status, _ in warm_results if status == 200)
    acknowledged = warm_ok + phases["receiver_fixed"]["ok"] + phases["receiver_max"]["ok"]
    stored, distinct = stored_counts(app)
    result = {
        "database": "postgresql" if database_url.startswith("postgresql") else "sqlite",
        "gunicorn": f"{args.workers} workers x {args.threads} threads (gthread)",
        "phases": phases,
        "events_sent": len(sent_ids), "events_acknowledged": acknowledged, "events_stored": stored,
        "events_stored_distinct": distinct,
        "receiver_vs_bare_max_throughput":
            phases["receiver_max"]["throughput"] / phases["bare_max"]["throughput"],
    }
    result["none_lost_or_doubled"] = stored == distinct == acknowledged
    result["targets_met"] = (result["receiver_vs_bare_max_throughput"] >= 0.5
                             and phases["receiver_fixed"]["p99_ms"] < 100
                             and phases["receiver_fixed"]["errors"] == 0 and result["none_lost_or_doubled"])
    shutil.rmtree(instance, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"database: {result['database']}; gunicorn {result['gunicorn']}; "
              f"fixed rate {args.rate:g}/s for {args.duration:g} s; max with {args.concurrency} connections")
        print(f"{'phase':16} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8} {'cpu ms/req':>10}")
        for name, p in phases.items():
            print(f"{name:16} {p['requests']:8d} {p['errors']:6d} {p['throughput']:8.1f} {p['p50_ms']:8.2f} "
                  f"{p['p99_ms']:8.2f} {p['max_ms']:8.2f} {p['server_cpu_ms_per_request']:10.3f}")
        print(f"events sent {result['events_sent']}, acknowledged {acknowledged}, stored {stored} "
              f"({distinct} distinct): "
              f"{'none lost or doubled' if result['none_lost_or_doubled'] else 'MISMATCH'}")
        print(f"receiver/bare max throughput: {result['receiver_vs_bare_max_throughput']:.2f}; "
              f"targets {'met' if result['targets_met'] else 'NOT met'}")
    return 0 if result["none_lost_or_doubled"] else 1


if __name__ == "__main__":
    sys.exit(main())
