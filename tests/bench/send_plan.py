"""Send plan benchmark: one message to 100,000 contacts through the outgoing core's batches, by the real queue
consumer against the LINE sandbox, while LINE's webhooks keep arriving at 200 a second.

    .venv/bin/python tests/bench/send_plan.py                              # 100,000 contacts, SQLite
    .venv/bin/python tests/bench/send_plan.py --contacts 20000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench   # dropped and created

What it does, all on loopback, each part in its own process as in production: a temporary instance dir and
fresh tables; the sandbox playing LINE (its HTTP server) with ``--contacts`` friends made at once (its bulk
call, no webhooks) and the same people written straight into our ``contacts`` table (bulk INSERTs, as a shop
that collected them); ``gunicorn wsgi:app`` (gunicorn.conf.py) receiving webhooks; one ``flask --app wizard
worker`` (``--threads``) running the queue. Then:

1. the run is written: ``batches.add`` cuts the recipients into chunks of 500, each with its retry key, in one
   transaction ("write"), and ``batches.wake`` queues them;
2. first the webhook load alone for ``--min-load`` seconds (the machine's baseline, nothing to send); then,
   from the wake, the consumer sends the chunks (multicast, paced at LINE's 200 requests a second) while a
   fixed-rate open-loop client (tests/bench/webhook.py's) posts signed text events from those friends to the
   webhook at ``--rate`` a second, until the last chunk is accepted (at least ``--min-load`` seconds);
3. it reports the time from the wake to the last chunk the sandbox accepted, the consumer's peak memory (RSS
   high-water mark, /proc VmHWM), the webhook's p50/p99 meanwhile (target: p99 under 100 ms at 200/s), and
   checks that every friend received the message exactly once.

TODO(issue 16, helper D): go through the send-plan layer (a plan to "all consenting friends", started now)
once wizard/plans/ exists, instead of calling ``batches.add`` directly; the chunks, the consumer and what is
measured stay the same.

The load generator, the sandbox, gunicorn and the consumer share the machine's cores: the numbers are upper
bounds.
"""
import argparse
import asyncio
import gc
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.webhook import _one, prepare_database  # noqa: E402
from tests.servers import free_port  # noqa: E402

OWNER = "bench_plan"
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
    answer, the bench ends with its numbers instead of waiting for ever."""
    try:
        await asyncio.wait_for(_one(pool, (port, None), path, body, headers, due, results), REQUEST_TIMEOUT)
    except asyncio.TimeoutError:
        results.append((0, time.perf_counter() - due))


async def webhook_load(port, make_request, rate, stop, min_seconds):
    """Open-loop requests at ``rate`` a second until ``stop`` is set (and at least ``min_seconds``); each
    latency counts from when its request was due. Returns [(status, seconds)]."""
    pool, results, tasks = [], [], []
    start = time.perf_counter() + 0.05
    index = 0
    while not stop.is_set() or index < rate * min_seconds:
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
    return results


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
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--threads", type=int, default=4, help="queue consumer threads (WORKER_THREADS)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="webhook requests per second meanwhile (0: none, the send alone)")
    parser.add_argument("--min-load", type=float, default=10.0, help="seconds of webhook load at least")
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
    from sqlalchemy import insert, select
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
    from wizard.accounts import create_shop, create_user
    from wizard.extensions import db
    from wizard.models import Contact, utcnow
    from wizard.outgoing import batches
    app = create_app()
    with app.app_context():
        db.drop_all()
        db.create_all()
        create_user("bench-owner@example.com", "bench-password")
        create_shop("bench-shop", "Bench Shop", "bench-owner@example.com")
        db.session.commit()
    created = control.create_channel(display_name="Bench Shop")
    channel_id = created["channelId"]
    channel = make_channel(app, "bench-shop", channel_id=channel_id, secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    control.update(channel_id, endpoint=f"http://127.0.0.1:{port}{channel['path']}", quota=None)

    started = time.perf_counter()
    friends = control.make_friends(channel_id, args.contacts)
    with app.app_context():
        now = utcnow()
        for start in range(0, len(friends), INSERT_BATCH):
            db.session.execute(insert(Contact), [
                {"channel_id": channel["id"], "line_user_id": user_id, "display_name": f"好友{start + n + 1}",
                 "followed_at": now, "created_at": now, "updated_at": now, "marketing_consent": True}
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

    rng = random.Random(16)

    def webhook_request():
        event = text_event(rng.choice(friends), "請問週年慶到哪天？")
        body = encode({"destination": created["botUserId"], "events": [event]})
        return channel["path"], body, {"Content-Type": "application/json; charset=utf-8",
                                       "x-line-signature": sign(created["channelSecret"], body)}

    def load(stop, min_seconds):
        if not args.rate:  # --rate 0: no webhooks, the send alone
            stop.wait()
            return []
        gc.collect()
        gc.freeze()
        try:
            return asyncio.run(webhook_load(port, webhook_request, args.rate, stop, min_seconds))
        finally:
            gc.unfreeze()

    # The same load with nothing to send first: the machine's own p99 (other work on it shows here too).
    idle = threading.Event()
    idle.set()
    baseline = load(idle, args.min_load)

    batches.register(batches.Owner(OWNER, lambda *args: None))  # the consumer knows no such owner: it logs
    db_kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"{args.contacts} contacts on {db_kind} (made in {made:.1f} s); 1 consumer of {args.threads} threads; "
          f"webhooks at {args.rate:g}/s meanwhile", file=sys.stderr)
    with app.app_context():
        written_from = time.perf_counter()
        recipients = db.session.execute(select(Contact.id, Contact.line_user_id)
                                        .where(Contact.channel_id == channel["id"]).order_by(Contact.id)).all()
        chunks = batches.add(channel["id"], owner=OWNER, owner_id=1, run_key="now", recipients=recipients,
                             messages=MESSAGES, unit="bench_plan")
        db.session.commit()
        written = time.perf_counter() - written_from
        woken_at = time.time()
        batches.wake(OWNER, 1)
        db.session.remove()

    stop = threading.Event()
    accepted = []

    def watch():
        until = time.monotonic() + args.wait
        while time.monotonic() < until:
            sends = control.sends(channel_id, limit=chunks + 10)
            if len(sends) >= chunks:
                accepted[:] = sends
                break
            time.sleep(0.2)
        stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = load(stop, args.min_load)
    watcher.join()
    peak = peak_rss_mb(consumer.pid)

    _stop_started()
    received = {}
    for message in control.sent_messages(channel_id):
        if message["delivered"] and message["kind"] == "multicast":
            received[message["to"]] = received.get(message["to"], 0) + 1
    control.close()

    latencies = [seconds for status, seconds in results if status == 200]
    errors = sum(1 for status, _ in results if status != 200)
    before = [seconds for status, seconds in baseline if status == 200]
    last = max((send["at"] for send in accepted), default=float("nan")) - woken_at
    once = len(received) == len(friends) and set(received.values()) == {1}
    p99 = percentile(latencies, 99) * 1000
    print(f"chunks: {chunks} of up to 500, written in {written:.2f} s")
    print(f"wake -> last chunk accepted by the sandbox: {last:.1f} s "
          f"({len(accepted)} of {chunks} accepted; {args.contacts / last:.0f} recipients/s)")
    print(f"consumer peak RSS: {peak:.0f} MB")
    print(f"webhook during the send: {len(results)} requests, {errors} errors, p50 "
          f"{percentile(latencies, 50) * 1000:.1f} ms, p99 {p99:.1f} ms (target < 100 ms); before it, nothing "
          f"to send: p50 {percentile(before, 50) * 1000:.1f} ms, p99 {percentile(before, 99) * 1000:.1f} ms; "
          f"load average {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"every friend received it exactly once: {'yes' if once else 'NO'} "
          f"({len(received)} of {len(friends)} friends; most to one: {max(received.values(), default=0)})")
    ok = once and len(accepted) == chunks and errors == 0 and (p99 < 100 or not args.rate)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
