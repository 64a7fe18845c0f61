"""Send plan benchmark: a plan to 100,000 contacts made through the product's own API, started and sent by the
real queue consumer against the LINE sandbox, while LINE's webhooks keep arriving at 200 a second.

    .venv/bin/python tests/bench/send_plan.py                              # 100,000 contacts, SQLite
    .venv/bin/python tests/bench/send_plan.py --contacts 20000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench   # dropped and created

What it does, all on loopback, each part in its own process as in production: a temporary instance dir and
fresh tables; the sandbox playing LINE (its HTTP server) with ``--contacts`` consenting friends and
``--without-consent`` more who did not tick the marketing consent, made at once (its bulk call, no webhooks),
and the same people written straight into our ``contacts`` table (bulk INSERTs, as a shop that collected
them); ``gunicorn wsgi:app`` (gunicorn.conf.py) receiving webhooks and serving the API; one ``flask --app
wizard worker`` (``--threads``) running the queue, as README's production section runs it. Then:

1. the webhook load alone for ``--min-load`` seconds (nothing to send: the machine's baseline), from a
   fixed-rate open-loop client (tests/bench/webhook.py's) posting signed text events from those friends at
   ``--rate`` a second; the load goes on without a break through step 2 until the last chunk is accepted;
2. a staff API token (as ``flask user token`` prints) creates a text template (``POST …/templates``, checked
   by the sandbox's validate endpoint) and a marketing send plan to all friends, for now (``POST
   …/send-plans``); the consumer starts it (plans/runs.py, plans/filling.py: the recipients, by consent, and
   the chunks of 500 with their retry keys, a slice of contacts per transaction) and sends the chunks as their
   slices come in (multicast, paced at LINE's rate). Those
   without consent make it a multicast, not a broadcast, and must receive nothing;
3. it reports the time from the POST to the first and to the last chunk the sandbox accepted and to the plan
   shown "sent" by the API, the consumer's peak memory (RSS high-water mark, /proc VmHWM), the webhook's
   p50/p99 before and during the send (target: p99 under 100 ms at 200/s), and checks with the sandbox's
   record that every consenting friend received the message exactly once and the others nothing.

The load generator, the sandbox, gunicorn and the consumer share the machine's cores: the numbers are upper
bounds.
"""
import argparse
import asyncio
import json
import gc
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.webhook import _one, prepare_database  # noqa: E402
from tests.servers import free_port  # noqa: E402

INSERT_BATCH = 5000
REQUEST_TIMEOUT = 30.0
MESSAGES = [{"type": "text", "text": "週年慶：全館八折，只到這個週末。"}]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def peak_rss_mb(pid):
    """The process's resident memory high-water mark (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _bounded(pool, port, path, body, headers, due, results):
    """One request, given up after ``REQUEST_TIMEOUT`` (counted as an error: status 0): on a machine too busy to
    answer, the bench ends with its numbers instead of waiting for ever. Appends (due, status, seconds): the
    due time (perf_counter) tells the phase the request belongs to."""
    one = []
    try:
        await asyncio.wait_for(_one(pool, (port, None), path, body, headers, due, one), REQUEST_TIMEOUT)
    except asyncio.TimeoutError:
        one = [(0, time.perf_counter() - due)]
    results.append((due, *one[0]))


async def webhook_load(port, make_request, rate, stop, results):
    """Open-loop requests at ``rate`` a second until ``stop`` is set, each appended to ``results`` as (due,
    status, seconds); a latency counts from when its request was due."""
    pool, tasks = [], []
    start = time.perf_counter() + 0.05
    index = 0
    while not stop.is_set():
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        path, body, headers = make_request()
        tasks.append(asyncio.create_task(_bounded(pool, port, path, body, headers, due, results)))
        index += 1
    await asyncio.gather(*tasks)
    for connection in pool:
        connection.close()


def api(port, token, method, path, data=None):
    """One call to our JSON API as a staff tool makes it: (status, JSON answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if data is None else json.dumps(data).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


STARTED = []  # the processes this bench started, stopped however it ends


def _stop_started():
    from tests import topology
    for process in reversed(STARTED):
        topology.stop(process, seconds=10)
    STARTED.clear()


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))  # `timeout` or Ctrl+C: stop what we started
    try:
        return _main(argv)
    finally:
        _stop_started()


def _main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="consenting friends: the plan's recipients")
    parser.add_argument("--without-consent", type=int, default=1000,
                        help="friends more who did not consent to marketing: left out (and a multicast)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--threads", type=int, default=4, help="queue consumer threads (WORKER_THREADS)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="webhook requests per second meanwhile (0: none, the send alone)")
    parser.add_argument("--min-load", type=float, default=10.0, help="seconds of webhook load before the plan")
    parser.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the last chunk")
    args = parser.parse_args(argv)

    for name in [n for n in os.environ if n.startswith("WIZARD_")]:
        del os.environ[name]
    workdir = Path(tempfile.mkdtemp(prefix="send-plan-"))
    instance = workdir / "instance"
    instance.mkdir()
    database_url = args.database_url or f"sqlite:///{instance / 'wizard.db'}"
    prepare_database(database_url)

    import logging
    from cryptography.fernet import Fernet
    from sqlalchemy import insert
    from tests import topology
    from tests.webhooks import encode, make_channel, sign, text_event
    from wizard.sandbox.control import Sandbox

    logging.disable(logging.WARNING)
    sandbox_url = f"sqlite:///{instance / 'sandbox.db'}"
    control = Sandbox(sandbox_url)
    sandbox_port, port = free_port(), free_port()
    python = sys.executable
    sandbox = subprocess.Popen(
        [python, "-c", "import sys, logging; from werkzeug.serving import run_simple; "
         "from wizard.sandbox import create_sandbox_app; logging.disable(logging.WARNING); "
         "run_simple('127.0.0.1', int(sys.argv[1]), create_sandbox_app(sys.argv[2]), threaded=True)",
         str(sandbox_port), sandbox_url], cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    STARTED.append(sandbox)
    env = {"WIZARD_INSTANCE_PATH": str(instance), "WIZARD_DATABASE_URL": database_url,
           "WIZARD_SECRET_KEY": "bench", "WIZARD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": f"http://127.0.0.1:{sandbox_port}",
           "WIZARD_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "WIZARD_WORKER_THREADS": str(args.threads),
           "WIZARD_QUEUE_NAME": f"bench-{os.getpid()}", "WIZARD_LOG_LEVEL": "ERROR"}
    os.environ.update(env)
    from wizard import create_app
    from wizard.accounts import create_shop, create_user, new_api_token
    from wizard.extensions import db
    from wizard.models import Contact, utcnow
    app = create_app()
    with app.app_context():
        db.drop_all()
        db.create_all()
        create_user("bench-owner@example.com", "bench-password")
        create_user("bench-staff@example.com", "bench-password", staff=True)
        create_shop("bench-shop", "Bench Shop", "bench-owner@example.com")
        token = new_api_token("bench-staff@example.com")
        db.session.commit()
    created = control.create_channel(display_name="Bench Shop")
    channel_id = created["channelId"]
    channel = make_channel(app, "bench-shop", channel_id=channel_id, secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    control.update(channel_id, endpoint=f"http://127.0.0.1:{port}{channel['path']}", quota=None)

    started = time.perf_counter()
    friends = control.make_friends(channel_id, args.contacts + args.without_consent)
    consenting = set(friends[:args.contacts])
    with app.app_context():
        now = utcnow()
        for start in range(0, len(friends), INSERT_BATCH):
            db.session.execute(insert(Contact), [
                {"channel_id": channel["id"], "line_user_id": user_id, "display_name": f"好友{start + n + 1}",
                 "followed_at": now, "created_at": now, "updated_at": now,
                 "marketing_consent": user_id in consenting}
                for n, user_id in enumerate(friends[start:start + INSERT_BATCH])])
        db.session.commit()
        db.engine.dispose()
    made = time.perf_counter() - started

    server = topology.start_gunicorn(env, port, log=open(workdir / "gunicorn.log", "w"))
    STARTED.append(server)
    flask = str(Path(python).parent / "flask")
    consumer_log = open(workdir / "consumer.log", "w")
    consumer = subprocess.Popen([flask, "--app", "wizard", "worker", "--threads", str(args.threads)], cwd=ROOT,
                                start_new_session=True, env=os.environ.copy(), stdout=consumer_log,
                                stderr=subprocess.STDOUT)
    STARTED.append(consumer)
    deadline = time.monotonic() + 60
    while "Queue consumer running" not in (workdir / "consumer.log").read_text():
        if time.monotonic() > deadline or consumer.poll() is not None:
            raise SystemExit(f"the consumer did not start:\n{(workdir / 'consumer.log').read_text()[-2000:]}")
        time.sleep(0.2)

    status, template = api(port, token, "POST", "/api/v1/shops/bench-shop/templates",
                           {"name": "週年慶", "messages": MESSAGES})
    if status != 201:
        raise SystemExit(f"the template was refused ({status}): {template}")

    rng = random.Random(16)

    def webhook_request():
        event = text_event(rng.choice(friends), "請問週年慶到哪天？")
        body = encode({"destination": created["botUserId"], "events": [event]})
        return channel["path"], body, {"Content-Type": "application/json; charset=utf-8",
                                       "x-line-signature": sign(created["channelSecret"], body)}

    stop, results = threading.Event(), []

    def load():
        gc.collect()
        gc.freeze()  # the client's own collector out of the measurement (tests/bench/webhook.py says why)
        try:
            asyncio.run(webhook_load(port, webhook_request, args.rate, stop, results))
        finally:
            gc.unfreeze()

    loader = threading.Thread(target=load, daemon=True)
    if args.rate:
        loader.start()
    time.sleep(args.min_load)  # the same load with nothing to send first: the machine's own p99

    db_kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"{args.contacts} consenting contacts and {args.without_consent} without consent on {db_kind} (made "
          f"in {made:.1f} s); 1 consumer of {args.threads} threads; webhooks at {args.rate:g}/s", file=sys.stderr)
    chunks = -(-args.contacts // 500)
    posted_perf, posted_at = time.perf_counter(), time.time()
    status, plan = api(port, token, "POST", "/api/v1/shops/bench-shop/send-plans", {
        "name": "週年慶 100k", "template_id": template["id"], "purpose": "marketing",
        "audience": {"all": True, "filters": {}}, "send_at": None, "up_to_quota": False})
    post_seconds = time.perf_counter() - posted_perf
    if status != 201:
        stop.set()
        raise SystemExit(f"the plan was refused ({status}): {plan}")
    unit = f"plan_{plan['id']}"

    accepted, shown = [], {}
    until = time.monotonic() + args.wait
    while time.monotonic() < until:
        sends = [s for s in control.sends(channel_id, limit=chunks + 10) if s["unit"] == unit]
        if len(sends) >= chunks:
            accepted[:] = sends
            break
        time.sleep(0.2)
    last_perf = time.perf_counter()
    stop.set()
    if args.rate:
        loader.join()
    peak = peak_rss_mb(consumer.pid)
    while time.monotonic() < until:  # the plan's own count catches up (the chunks' outcomes are written)
        _status, shown = api(port, token, "GET", f"/api/v1/shops/bench-shop/send-plans/{plan['id']}")
        if shown.get("state") == "sent":
            break
        time.sleep(0.5)
    shown_at = time.time()

    _stop_started()
    received = {}
    for message in control.sent_messages(channel_id):
        if message["delivered"]:
            received[message["to"]] = received.get(message["to"], 0) + 1
    control.close()

    before = [seconds for due, status, seconds in results if due < posted_perf and status == 200]
    during_all = [(status, seconds) for due, status, seconds in results if posted_perf <= due <= last_perf]
    during = [seconds for status, seconds in during_all if status == 200]
    errors = sum(1 for due, status, _ in results if status != 200)
    first = min((send["at"] for send in accepted), default=float("nan")) - posted_at
    first_perf = posted_perf + first  # the sandbox's clock is this machine's: the run's start ends about here
    starting = [seconds for due, status, seconds in results if posted_perf <= due < first_perf and status == 200]
    sending = [seconds for due, status, seconds in results if first_perf <= due <= last_perf and status == 200]
    last = max((send["at"] for send in accepted), default=float("nan")) - posted_at
    once = (set(received) == consenting and set(received.values()) == {1})
    p99 = percentile(during, 99) * 1000
    print(f"plan {plan['id']}: POST answered in {post_seconds:.2f} s (state {plan['state']!r}; the consumer "
          "starts the run)")
    print(f"POST -> first chunk accepted by the sandbox: {first:.1f} s; -> last ({len(accepted)} of {chunks}): "
          f"{last:.1f} s ({args.contacts / last:.0f} recipients/s); -> API shows "
          f"{shown.get('state')!r} with sent {shown.get('sent')}, no_consent "
          f"{(shown.get('left_out') or {}).get('no_consent')}: {shown_at - posted_at:.1f} s")
    print(f"consumer peak RSS: {peak:.0f} MB")
    print(f"webhook before the plan: {len(before)} answered, p50 {percentile(before, 50) * 1000:.1f} ms, p99 "
          f"{percentile(before, 99) * 1000:.1f} ms; during the send: {len(during_all)} requests, p50 "
          f"{percentile(during, 50) * 1000:.1f} ms, p99 {p99:.1f} ms (target < 100 ms); errors {errors}; "
          f"load average {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"  of which while the run starts (POST to first chunk): {len(starting)}, p50 "
          f"{percentile(starting, 50) * 1000:.1f} ms, p99 {percentile(starting, 99) * 1000:.1f} ms; while the "
          f"chunks go: {len(sending)}, p50 {percentile(sending, 50) * 1000:.1f} ms, p99 "
          f"{percentile(sending, 99) * 1000:.1f} ms")
    print(f"every consenting friend received it exactly once, the others nothing: {'yes' if once else 'NO'} "
          f"({len(received)} received of {len(consenting)}; most to one: {max(received.values(), default=0)}; "
          f"without consent who received: {len(set(received) - consenting)})")
    ok = (once and len(accepted) == chunks and errors == 0 and (p99 < 100 or not args.rate)
          and shown.get("state") == "sent" and shown.get("sent") == args.contacts)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
