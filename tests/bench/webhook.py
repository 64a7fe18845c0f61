"""Webhook receiver benchmark: the receiver beside the app's /healthz and a bare Flask route, served as in production.

    .venv/bin/python tests/bench/webhook.py                       # SQLite, one process (gunicorn.conf.py)
    .venv/bin/python tests/bench/webhook.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench      # 2 processes
    ... --nginx                                                   # through deploy/nginx.conf over TLS

What it does, all on loopback and bounded in time:
1. a temporary instance dir, a fresh schema in the chosen database (a PostgreSQL database named in the URL is
   created if missing, and its tables are dropped and created: never point it at data you keep), one shop
   and one channel;
2. ``gunicorn wsgi:app`` with the repository's gunicorn.conf.py (gthread; processes and threads as shipped
   unless --workers/--threads say otherwise), optionally behind the shipped nginx (tests/topology.py);
   beside it, a one-file Flask app with one route and nothing else (tests/bench/bare_flask.py) under the same
   gunicorn worker model (gthread, the same processes and threads; no config file, so no access log);
3. for each of the bare Flask ``POST /healthz`` (``bare``), the app's ``POST /healthz`` (``healthz``: every
   request's middleware, no view work) and ``POST /line/webhook/<token>`` (``receiver``: one signed event with a
   unique ULID per request, as LINE sends them; the other two get a body of the same size):
   - a fixed offered rate with a small open-loop asyncio client (latency counts from when the request was
     due, so a server that falls behind is not flattered). Debian's wrk has no fixed-rate mode (that is
     wrk2), and the tools that have one (hey, h2load) send one body for every request, where each event
     must be new;
   - maximum throughput with wrk (Debian) and webhook.lua, which cycles through pre-signed unique bodies;
4. throughput, p50/p99 latency, server CPU per request (utime+stime of the serving gunicorn's processes, and
   nginx's apart, from /proc), both ratios (receiver / bare Flask, receiver / the app's /healthz) per round
   and over all, and the events stored against those acknowledged: none lost (every 200 is stored), none
   doubled. wrk stops with requests in flight, so up to one per connection may be stored unanswered.

Targets (issue 15, item 10): receiver at least 0.6x bare Flask on SQLite in one process, 0.5x on PostgreSQL
with two; p99 under 100 ms at 200 requests/s on every route.

The load generators run on the same cores as the server, so both routes pay for them alike.
"""
import argparse
import asyncio
import gc
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import topology  # noqa: E402
from tests.webhooks import encode, sign, text_event  # noqa: E402

LUA = Path(__file__).with_name("webhook.lua")


# ---- a minimal keep-alive HTTP client (the fixed-rate phase) -----------------------------------------------

class Connection:
    def __init__(self, port, tls=None):
        self.port, self.tls = port, tls
        self.reader = self.writer = None

    async def request(self, path, body, headers):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.tls)
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
    connection = pool.pop() if pool else Connection(*port)
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
    """Send ``requests`` (path, body, headers) at ``rate`` per second, whatever the answers' pace; ``port`` is
    (port, TLS context or None).

    The client's own garbage collector is kept out of the measurement: it holds every prepared request, and a
    full collection of them paused its event loop for about 200 ms, which the open-loop count (rightly, for a
    server) charged to every request due meanwhile: a p99 of 100 ms that was the client's, not the server's."""
    gc.collect()
    gc.freeze()
    try:
        return await _fixed_rate(port, requests, rate)
    finally:
        gc.unfreeze()


async def _fixed_rate(port, requests, rate):
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


def summary(results, elapsed):
    latencies = sorted(latency for _, latency in results)
    ok = sum(1 for status, _ in results if status == 200)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(results), "ok": ok, "errors": len(results) - ok, "seconds": elapsed,
            "throughput": ok / elapsed if elapsed else 0.0, "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": latencies[-1] * 1000 if latencies else 0.0}




def run_wrk(url, lines_file, connections, threads, duration):
    """wrk against ``url`` with webhook.lua cycling through ``lines_file``; returns its JSON summary."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: `make servers` installs it (Debian's wrk)")
    output = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
                             "-s", str(LUA), url, "--", str(lines_file), str(threads)],
                            capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    match = re.search(r"^WRK (\{.*\})$", output, re.M)
    if match is None:
        raise SystemExit(f"wrk printed no summary:\n{output}")
    result = json.loads(match.group(1))
    result["throughput"] = result["ok"] / result["seconds"]
    result["errors"] = result["requests"] - result["ok"]
    return result


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


def cpu_seconds(pid):
    """User + system CPU of a process and its children so far (Linux /proc): gunicorn's master and workers,
    or nginx's."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in [pid] + _children(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children(pid):
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Servers:
    """gunicorn (gunicorn.conf.py), and the shipped nginx in front of it when ``nginx`` is set."""

    def __init__(self, env, instance, args):
        self.gunicorn_port = topology.free_port()
        options = []
        if args.workers:
            options += ["-w", str(args.workers)]
        if args.threads:
            options += ["--threads", str(args.threads)]
        self.gunicorn = topology.start_gunicorn(env, self.gunicorn_port, options)
        self.nginx, self.port, self.tls, self.scheme = None, self.gunicorn_port, None, "http"
        if args.nginx:
            directory = Path(instance) / "nginx"
            directory.mkdir()
            self.port = topology.free_port()
            certificate, key = topology.self_signed_certificate(directory)
            conf = topology.render_nginx_conf(directory, http_port=topology.free_port(), tls_port=self.port,
                                              upstream=f"127.0.0.1:{self.gunicorn_port}",
                                              certificate=certificate, key=key)
            self.nginx = topology.start_nginx(conf, self.port)
            self.tls = ssl.create_default_context(cafile=str(certificate))
            self.scheme = "https"
        self.workers = len(_children(self.gunicorn.pid))

    def cpu(self):
        return (cpu_seconds(self.gunicorn.pid), cpu_seconds(self.nginx.pid) if self.nginx else 0.0)

    def stop(self):
        if self.nginx:
            topology.stop(self.nginx)
        topology.stop(self.gunicorn)


class BareServer:
    """tests/bench/bare_flask.py under gunicorn's gthread workers, as many processes and threads as the app's
    gunicorn has, and none of gunicorn.conf.py (no access log, no hooks): the floor every request stands on."""

    def __init__(self, workers, threads):
        self.port = topology.free_port()
        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        self.process = subprocess.Popen(
            [gunicorn, "--config", "/dev/null", "-k", "gthread", "-w", str(workers), "--threads", str(threads),
             "--bind", f"127.0.0.1:{self.port}", "--chdir", str(Path(__file__).parent), "bare_flask:app"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        topology._wait_until(lambda: topology._answers(self.port), self.process, "bare gunicorn")
        self.gunicorn = self.process

    def cpu(self):
        return (cpu_seconds(self.process.pid), 0.0)

    def stop(self):
        topology.stop(self.process)


def _app_threads(args, database_url):
    """The threads per process the app's gunicorn runs: --threads, else gunicorn.conf.py's (WIZARD_THREADS, else
    16 on SQLite and 32 on PostgreSQL)."""
    return args.threads or int(os.environ.get("WIZARD_THREADS") or (32 if database_url.startswith("postgresql")
                                                                      else 16))


def _combined(rounds):
    """wrk rounds of one route as one phase: totals, throughput over their time, the worst round's p99."""
    total = {key: sum(r[key] for r in rounds) for key in ("requests", "ok", "errors", "seconds", "wrapped")}
    total["throughput"] = total["ok"] / total["seconds"]
    for key in ("p50_ms", "p99_ms", "max_ms"):
        total[key] = max(r[key] for r in rounds)
    for key in ("server_cpu_ms_per_request", "nginx_cpu_ms_per_request"):
        total[key] = sum(r[key] * r["requests"] for r in rounds) / max(1, total["requests"])
    return total


def _write_lines(path, requests):
    with open(path, "w", encoding="utf-8") as out:
        for request_path, body, headers in requests:
            out.write(f"{request_path}\t{headers['x-line-signature']}\t{body.decode('utf-8')}\n")


ROUTES = ("bare", "healthz", "receiver")


def _print(result, args):
    print(f"database: {result['database']}; gunicorn {result['gunicorn']}; {result['served']}; fixed rate "
          f"{args.rate:g}/s for {args.duration:g} s; wrk {args.connections} connections, {args.rounds} rounds of "
          f"{args.max_duration:g} s")
    print(f"{'phase':18} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'cpu ms/req':>10} {'nginx':>6}")
    for name, p in result["phases"].items():
        print(f"{name:18} {p['requests']:8d} {p['errors']:6d} {p['throughput']:8.1f} {p['p50_ms']:8.2f} "
              f"{p['p99_ms']:8.2f} {p['max_ms']:8.2f} {p['server_cpu_ms_per_request']:10.3f} "
              f"{p['nginx_cpu_ms_per_request']:6.3f}")
    print(f"events acknowledged {result['events_acknowledged']}, stored {result['events_stored']} "
          f"({result['events_stored_distinct']} distinct, at most {result['in_flight_at_wrk_stop']} unanswered "
          f"when wrk stopped): {'none lost or doubled' if result['none_lost_or_doubled'] else 'MISMATCH'}")
    for key, label in (("receiver_vs_bare", "receiver / bare Flask"),
                       ("receiver_vs_healthz", "receiver / app /healthz"),
                       ("healthz_vs_bare", "app /healthz / bare Flask")):
        print(f"{label:26} {result[key]:.2f}  (per round: "
              + ", ".join(f"{ratio:.2f}" for ratio in result[key + "_per_round"]) + ")")
    print(f"target: receiver / bare Flask >= {result['target_ratio']}, p99 < 100 ms at {args.rate:g}/s; "
          f"targets {'met' if result['targets_met'] else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in the temporary instance dir")
    parser.add_argument("--workers", type=int, help="gunicorn processes (default: gunicorn.conf.py's choice)")
    parser.add_argument("--threads", type=int, help="threads per process (default: gunicorn.conf.py's)")
    parser.add_argument("--nginx", action="store_true", help="through deploy/nginx.conf (TLS) as shipped")
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds at the fixed rate")
    parser.add_argument("--max-duration", type=int, default=4, help="seconds of each wrk round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="wrk rounds, the three routes taking turns (others' load drifts; turns share it)")
    parser.add_argument("--connections", type=int, default=64, help="wrk's connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
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
        "WIZARD_LOG_LEVEL": "WARNING",
    }
    app, (path, secret, bot_user_id) = setup_app(env)

    def receiver_request():
        event = text_event("U" + secrets.token_hex(16), "bench " + secrets.token_hex(4))
        body = encode({"destination": bot_user_id, "events": [event]})
        return path, body, {"Content-Type": "application/json; charset=utf-8",
                            "x-line-signature": sign(secret, body)}

    other_body = b"{" + b" " * (len(receiver_request()[1]) - 2) + b"}"

    def healthz_request():
        return "/healthz", other_body, {"Content-Type": "application/json; charset=utf-8",
                                        "x-line-signature": "x" * 44}

    # Per round, enough unique events that wrk never sends one twice (checked: "wrapped"); /healthz ones repeat.
    receiver_lines = [Path(instance) / f"receiver-{round_}.lines" for round_ in range(args.rounds)]
    for lines in receiver_lines:
        _write_lines(lines, (receiver_request() for _ in range(int(args.max_duration * 6000))))
    healthz_lines = Path(instance) / "healthz.lines"
    _write_lines(healthz_lines, (healthz_request() for _ in range(100)))

    servers = Servers(env, instance, args)
    bare = None
    phases = {}
    try:
        bare = BareServer(servers.workers, _app_threads(args, database_url))
        # route -> (server, its (port, TLS) for the fixed-rate client, its base URL for wrk)
        served = {"bare": (bare, (bare.port, None), f"http://127.0.0.1:{bare.port}"),
                  "healthz": (servers, (servers.port, servers.tls), f"{servers.scheme}://127.0.0.1:{servers.port}"),
                  "receiver": (servers, (servers.port, servers.tls), f"{servers.scheme}://127.0.0.1:{servers.port}")}
        make = {"bare": healthz_request, "healthz": healthz_request, "receiver": receiver_request}
        count = int(args.rate * args.duration)
        # Warm every route (imports, connection pools, first queries) outside the measurement.
        acknowledged = 0
        for route in ROUTES:
            warm, _ = asyncio.run(fixed_rate(served[route][1], [make[route]() for _ in range(100)], 100))
            if route == "receiver":
                acknowledged = sum(1 for status, _ in warm if status == 200)

        def measure(name, route, run):
            server = served[route][0]
            before = server.cpu()
            phases[name] = run()
            after = server.cpu()
            for key, spent in (("server", after[0] - before[0]), ("nginx", after[1] - before[1])):
                phases[name][f"{key}_cpu_ms_per_request"] = spent * 1000 / max(1, phases[name]["requests"])

        for route in ROUTES:
            measure(f"{route}_fixed", route, lambda route=route: summary(*asyncio.run(
                fixed_rate(served[route][1], [make[route]() for _ in range(count)], args.rate))))
        acknowledged += phases["receiver_fixed"]["ok"]
        stored_before_wrk = stored_counts(app)[0]
        exact = stored_before_wrk == acknowledged
        for round_ in range(args.rounds):
            for route in ROUTES:
                target = path if route == "receiver" else "/healthz"
                lines = receiver_lines[round_] if route == "receiver" else healthz_lines
                measure(f"{route}_max_{round_ + 1}", route, lambda route=route, target=target, lines=lines: run_wrk(
                    served[route][2] + target, lines, args.connections, args.wrk_threads, args.max_duration))
        time.sleep(1)  # requests wrk left in flight finish storing
    finally:
        if bare is not None:
            bare.stop()
        servers.stop()

    stored, distinct = stored_counts(app)
    for route in ROUTES:
        phases[f"{route}_max"] = _combined([phases[f"{route}_max_{n + 1}"] for n in range(args.rounds)])
    wrk_ok = phases["receiver_max"]["ok"]
    acknowledged += wrk_ok
    in_wrk = stored - stored_before_wrk
    sqlite = not database_url.startswith("postgresql")
    result = {
        "database": "sqlite" if sqlite else "postgresql",
        "gunicorn": (f"{servers.workers} workers x {_app_threads(args, database_url)} threads "
                     "(gthread, gunicorn.conf.py)"),
        "served": "through nginx (TLS)" if args.nginx else "gunicorn directly",
        "phases": phases,
        "events_acknowledged": acknowledged, "events_stored": stored, "events_stored_distinct": distinct,
        "in_flight_at_wrk_stop": args.connections * args.rounds,
        "target_ratio": 0.6 if sqlite else 0.5,
    }
    for route, base in (("receiver", "bare"), ("receiver", "healthz"), ("healthz", "bare")):
        result[f"{route}_vs_{base}"] = phases[f"{route}_max"]["throughput"] / phases[f"{base}_max"]["throughput"]
        result[f"{route}_vs_{base}_per_round"] = [
            phases[f"{route}_max_{n + 1}"]["throughput"] / phases[f"{base}_max_{n + 1}"]["throughput"]
            for n in range(args.rounds)]
    result["none_lost_or_doubled"] = (exact and stored == distinct and not phases["receiver_max"]["wrapped"]
                                      and wrk_ok <= in_wrk <= wrk_ok + args.connections * args.rounds)
    result["targets_met"] = (result["receiver_vs_bare"] >= result["target_ratio"]
                             and all(phases[f"{route}_fixed"]["p99_ms"] < 100 for route in ROUTES)
                             and phases["receiver_fixed"]["errors"] == 0 and result["none_lost_or_doubled"])
    shutil.rmtree(instance, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result, args)
    return 0 if result["none_lost_or_doubled"] else 1


if __name__ == "__main__":
    sys.exit(main())
