"""``make run``: the app on :5000 and the LINE sandbox on :5001 in one process, with demo accounts.

This is the embedded default only (SQLite in instance/, no server to install); the queue's consumer runs as
threads of this process on its SQLite file (instance/huey.db). Production runs ``gunicorn wsgi:app`` and
``flask --app wizard worker`` instead, and never starts the sandbox.
"""
import os
import secrets
import threading

from werkzeug.serving import make_server, run_simple

from . import create_app
from .extensions import db

DEMO_OWNER = "owner@example.com"
DEMO_STAFF = "staff@example.com"


def _seed(app):
    """First run only: a staff account, a demo shop with its owner, and one sandbox channel to connect."""
    from .accounts import create_shop, create_user
    from .models import User
    from .sandbox.control import Sandbox
    password_file = os.path.join(app.instance_path, "demo-password")
    with app.app_context():
        if db.session.scalar(db.select(db.func.count(User.id))):
            return open(password_file).read().strip() if os.path.exists(password_file) else None
        password = secrets.token_urlsafe(9)
        create_user(DEMO_STAFF, password, staff=True)
        create_user(DEMO_OWNER, password)
        create_shop("demo-shop", "示範咖啡店", DEMO_OWNER)
        db.session.commit()
        with open(password_file, "w") as handle:
            handle.write(password)
        Sandbox(app.config["SANDBOX_DATABASE_URL"]).create_channel(display_name="示範咖啡店")
        return password


def main():
    app = create_app({"WORKER_IN_PROCESS": True})
    if not app.config["SANDBOX"]:
        raise SystemExit("The dev server is for the embedded default (WIZARD_SANDBOX on).")
    password = _seed(app)

    from .sandbox import create_sandbox_app
    from .sandbox.control import Sandbox
    sandbox_url = app.config["SANDBOX_URL"]
    port = int(sandbox_url.rsplit(":", 1)[1])
    sandbox_app = create_sandbox_app(app.config["SANDBOX_DATABASE_URL"])
    server = make_server("127.0.0.1", port, sandbox_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    channels = Sandbox(app.config["SANDBOX_DATABASE_URL"]).channels()
    print("\n  LINE Connect Wizard  →  http://127.0.0.1:5000")
    print(f"  LINE sandbox         →  {sandbox_url}  (play LINE's side: switches, users who follow)")
    if password:
        print(f"  Sign in as {DEMO_OWNER} (shop owner) or {DEMO_STAFF} (staff), password: {password}")
    for channel in channels[:3]:
        print(f"  Sandbox channel {channel['basicId']}: Channel ID {channel['channelId']}"
              f"  Channel secret {channel['channelSecret']}")
    print("  Ctrl+C stops it; `make reset-demo` then starts the next `make run` from scratch.")
    print()
    try:
        run_simple("127.0.0.1", 5000, app, threaded=True, use_reloader=False)
    finally:
        from .queue import stop_in_process
        stop_in_process(app)


if __name__ == "__main__":
    main()
