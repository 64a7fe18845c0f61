"""Follow to form: how long from LINE's follow webhook to the customer data form reaching the LINE user.

    .venv/bin/python tests/bench/follow_to_form.py                     # 500 follows, 10 a second, SQLite
    .venv/bin/python tests/bench/follow_to_form.py --follows 200 --rate 50 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/wizard_bench    # dropped and created

What it does, all on loopback: a temporary instance dir, fresh tables, one shop connected to a channel of the
LINE sandbox, each in its own process as in production: the sandbox playing LINE (its HTTP server),
``gunicorn wsgi:app`` (gunicorn.conf.py) receiving the webhooks, and ``flask --app wizard worker`` running the
queue (drain the events, send the forms through the outbox). Then ``--follows`` new users follow at a fixed
offered rate, each from its own thread, as LINE would deliver them. Each follow's time runs from the follow
event's own timestamp (set by the sandbox right before it signs and POSTs the webhook) to the moment the
sandbox recorded the form message (reply or push) for that user. Every form must arrive, once; the script
prints p50, p99 and max and exits 1 when p99 is 2 s or more (``--p99``).

The load generator, the sandbox and the app share the machine's cores, so the numbers are an upper bound.
"""
import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.webhook import prepare_database  # noqa: E402
from tests.servers import free_port  # noqa: E402


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--follows", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="follows per second offered")
    parser.add_argument("--threads", type=int, default=4, help="queue consumer threads (WORKER_THREADS)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--p99", type=float, default=2.0, help="seconds p99 must stay under")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the last forms")
    args = parser.parse_args(argv)

    for name in [n for n in os.environ if n.startswith("WIZARD_")]:
        del os.environ[name]
    workdir = Path(tempfile.mkdtemp(prefix="follow-to-form-"))
    instance = workdir / "instance"
    instance.mkdir()
    database_url = args.database_url or f"sqlite:///{instance / 'wizard.db'}"
    prepare_database(database_url)

    import logging
    import subprocess
    from cryptography.fernet import Fernet
    from tests import topology
    from tests.webhooks import make_channel
    from wizard.sandbox.control import Sandbox

    logging.disable(logging.WARNING)
    sandbox_url = f"sqlite:///{instance / 'sandbox.db'}"
    control = Sandbox(sandbox_url)  # the same sandbox the server process plays LINE with
    sandbox_port, port = free_port(), free_port()
    python = sys.executable
    sandbox = subprocess.Popen(
        [python, "-c", "import sys, logging; from werkzeug.serving import run_simple; "
         "from wizard.sandbox import create_sandbox_app; logging.disable(logging.WARNING); "
         "run_simple('127.0.0.1', int(sys.argv[1]), create_sandbox_app(sys.argv[2]), threaded=True)",
         str(sandbox_port), sandbox_url], cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    env = {"WIZARD_INSTANCE_PATH": str(instance), "WIZARD_DATABASE_URL": database_url,
           "WIZARD_SECRET_KEY": "bench", "WIZARD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "WIZARD_SANDBOX": "0", "WIZARD_LINE_API_HOST": f"http://127.0.0.1:{sandbox_port}",
           "WIZARD_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "WIZARD_WORKER_THREADS": str(args.threads),
           "WIZARD_QUEUE_NAME": f"bench-{os.getpid()}", "WIZARD_LOG_LEVEL": "ERROR"}
    os.environ.update(env)
    from wizard import create_app
    from wizard.accounts import create_shop, create_user
    from wizard.extensions import db
    app = create_app()
    with app.app_context():
        db.drop_all()
        db.create_all()
        create_user("bench-owner@example.com", "bench-password")
        create_shop("bench-shop", "Bench Shop", "bench-owner@example.com")
        db.session.commit()
    created = control.create_channel(display_name="Bench Shop")
    channel = make_channel(app, "bench-shop", channel_id=created["channelId"], secret=created["channelSecret"],
                           bot_user_id=created["botUserId"])
    with app.app_context():
        db.engine.dispose()
    control.update(created["channelId"], endpoint=f"http://127.0.0.1:{port}{channel['path']}", quota=None)
    server = topology.start_gunicorn(env, port, log=open(workdir / "gunicorn.log", "w"))
    flask = str(Path(python).parent / "flask")
    consumer = subprocess.Popen([flask, "--app", "wizard", "worker", "--threads", str(args.threads)], cwd=ROOT,
                                start_new_session=True, env=os.environ.copy(), stderr=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
    time.sleep(3)  # the consumer imports the app and sweeps once before it takes tasks

    followed = {}  # user id -> event time (epoch seconds)
    refused = []
    lock = threading.Lock()

    def follow():
        result = control.follow(created["channelId"])
        with lock:
            if (result.get("delivery") or {}).get("statusCode") == 200:
                followed[result["user"]["userId"]] = result["event"]["timestamp"] / 1000
            else:
                refused.append(result.get("delivery"))

    print(f"{args.follows} follows at {args.rate:g}/s, gunicorn + 1 consumer of {args.threads} threads, "
          f"{'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'}", file=sys.stderr)
    threads = []
    start = time.perf_counter()
    for index in range(args.follows):
        delay = start + index / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    offered = time.perf_counter() - start

    deadline = time.monotonic() + args.wait
    forms = {}
    while time.monotonic() < deadline:
        forms = {}
        for message in control.sent_messages(created["channelId"]):
            forms.setdefault(message["to"], []).append(message)
        if all(user in forms for user in followed):
            break
        time.sleep(0.5)

    for process in (consumer, server, sandbox):
        topology.stop(process)
    control.close()

    latencies = [forms[user][0]["at"] - at for user, at in followed.items() if user in forms]
    missing = [user for user in followed if user not in forms]
    doubled = [user for user, got in forms.items() if len(got) > 1]
    kinds = {}
    for got in forms.values():
        kinds[got[0]["kind"]] = kinds.get(got[0]["kind"], 0) + 1
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"follows acknowledged: {len(followed)} (refused {len(refused)}) in {offered:.1f} s")
    print(f"forms received: {len(latencies)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), "
          f"missing {len(missing)}, sent twice {len(doubled)}")
    print(f"follow webhook -> form at the sandbox: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {max(latencies, default=float('nan')) * 1000:.0f} ms")
    ok = not refused and not missing and not doubled and p99 < args.p99
    print("OK" if ok else f"FAILED (p99 must be under {args.p99:g} s, every form delivered once)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
