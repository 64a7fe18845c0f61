"""Replace the running gunicorn with the code on disk, without a moment in which nobody answers LINE.

    .venv/bin/python -m wizard.restart            # the pidfile from WIZARD_PIDFILE, or --pidfile PATH

Why a command (issue 14, item 19): gunicorn's own ``kill -USR2`` starts a second master (its pid in
``<pidfile>.2``, not ``<pidfile>.oldbin``; gunicorn/arbiter.py), and the workers it forks log "Booting worker"
long before they have imported the app (7 s idle, 20–50 s under load). Stopping the old master at that line
left nobody able to answer and lost deliveries to LINE's 2 s limit. This command:

1. sends USR2 to the master in the pidfile and waits for the new master's pid in ``<pidfile>.2``;
2. waits until every worker of the new master has passed a readiness check *inside that worker*: gunicorn's
   ``post_worker_init`` hook (gunicorn.conf.py → ``worker_ready``) sends GET /readyz through the worker's own
   loaded app, repeating until it answers 200 (database, queue, keys), then leaves a marker file;
3. under systemd, tells systemd the new master is the service's main process (``MAINPID=``; the unit says
   ``NotifyAccess=all``), so that the old master's exit does not stop the service;
4. sends TERM to the old master: its workers finish the requests they hold (``graceful_timeout``) and exit,
   and gunicorn promotes the new master, which renames ``<pidfile>.2`` to ``<pidfile>``.

If the new workers are not all ready within ``--timeout`` seconds (a broken deploy, a wrong key, a database
that does not answer them), the new master is stopped instead and the old one keeps serving: the command
exits 1 and says why. Markers live in ``<pidfile>.d/`` (``<master>.workers`` holds the number of workers a
master starts, ``<master>.<worker>.ready`` one worker's verdict); each process removes its own on exit.
"""
import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
READY_PATH = "/readyz"


def _marker_dir(pidfile):
    return Path(f"{pidfile}.d")


# --- gunicorn hooks (gunicorn.conf.py) -------------------------------------------------------------------------

def master_ready(server):
    """``when_ready``: record how many workers this master starts, for the restart command to count."""
    if server.cfg.pidfile:
        directory = _marker_dir(server.cfg.pidfile)
        directory.mkdir(mode=0o700, exist_ok=True)
        (directory / f"{server.pid}.workers").write_text(str(server.num_workers))


def worker_ready(worker, interval=0.5, warm_up=None):
    """``post_worker_init``: once the loaded app answers GET /readyz with 200, leave this worker's marker.

    The check runs on a thread so the worker starts accepting at once; it goes through the whole WSGI stack
    the worker serves with, so a marker means this worker's app answers, not only that the process exists.
    ``warm_up`` (gunicorn.conf.py: the receiver's, wizard/line/receiver.py) runs first, once it succeeds: the
    old workers are stopped only when the new ones can store LINE's deliveries as fast as they did, not after
    each new worker's first deliveries have paid for its connections and statements while LINE waited."""
    if not worker.cfg.pidfile and warm_up is None:
        return
    marker = _marker_dir(worker.cfg.pidfile) / f"{worker.ppid}.{worker.pid}.ready" if worker.cfg.pidfile else None

    def check():
        from werkzeug.test import EnvironBuilder, run_wsgi_app
        warm = warm_up
        while worker.alive:
            try:
                if warm is not None:
                    warm()
                    warm = None
                if marker is None:
                    return
                environ = EnvironBuilder(path=READY_PATH, base_url="http://127.0.0.1/").get_environ()
                body, status, _ = run_wsgi_app(worker.wsgi, environ, buffered=True)
                answer = b"".join(body)
                if status.startswith("200"):
                    marker.parent.mkdir(mode=0o700, exist_ok=True)
                    marker.write_text("ready")
                    return
                log.warning("worker %s not ready yet: %s %s", worker.pid, status, answer[:200].decode(errors="replace"))
            except Exception as exc:  # keep trying: the restart command decides how long to wait
                log.warning("worker %s readiness check failed: %s", worker.pid, type(exc).__name__)
            time.sleep(interval)

    threading.Thread(target=check, name="wizard-ready", daemon=True).start()


def worker_gone(server, worker):
    """``worker_exit``: its marker goes with it."""
    if server.cfg.pidfile:
        (_marker_dir(server.cfg.pidfile) / f"{worker.ppid}.{worker.pid}.ready").unlink(missing_ok=True)


def master_gone(server):
    """``on_exit``: the master's own marker goes with it."""
    if server.cfg.pidfile:
        (_marker_dir(server.cfg.pidfile) / f"{server.pid}.workers").unlink(missing_ok=True)


# --- the command ---------------------------------------------------------------------------------------------

class RestartFailed(Exception):
    pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path):
    try:
        return int(Path(path).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc: gunicorn's workers of one master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait(what, check, deadline, interval=0.1):
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise RestartFailed(f"timed out waiting for {what}")


def _ready_workers(directory, master):
    """The new master's workers that passed their check, once all of them have; else None."""
    expected = _read_pid(directory / f"{master}.workers")  # a count, read like a pid
    if not expected:
        return None
    ready = [pid for pid in _children(master) if (directory / f"{master}.{pid}.ready").exists()]
    return ready if len(ready) >= expected else None


def notify_systemd(message):
    """Send ``message`` to systemd's notification socket when there is one (sd_notify's protocol)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def restart(pidfile, timeout=120.0, stop_timeout=60.0, say=print):
    """The four steps in the module's docstring; returns the new master's pid or raises RestartFailed."""
    old = _read_pid(pidfile)
    if not old or not _alive(old):
        raise RestartFailed(f"no running gunicorn master in {pidfile}")
    directory = _marker_dir(pidfile)
    pending = _read_pid(f"{pidfile}.2")
    if pending and _alive(pending) and not _zombie(pending):
        raise RestartFailed(f"a restart is already under way (new master {pending} in {pidfile}.2)")
    Path(f"{pidfile}.2").unlink(missing_ok=True)  # left by a new master that was killed
    deadline = time.monotonic() + timeout
    os.kill(old, signal.SIGUSR2)
    say(f"USR2 sent to gunicorn master {old}; waiting for the new master ({pidfile}.2)")
    new = _wait("the new master's pidfile", lambda: (pid := _read_pid(f"{pidfile}.2")) and pid != old and pid,
                deadline)
    try:
        workers = _wait("every new worker to answer GET /readyz", lambda: _ready_workers(directory, new)
                        if _alive(new) else _gone(new), deadline, interval=0.2)
    except RestartFailed as exc:
        if _alive(new):
            os.kill(new, signal.SIGTERM)  # back out: the old master never stopped serving
        raise RestartFailed(f"{exc}; the new master {new} was stopped, {old} keeps serving "
                            "(its log says why the new workers were not ready)") from None
    say(f"new master {new}: {len(workers)} worker(s) answer {READY_PATH}")
    if notify_systemd(f"MAINPID={new}"):
        say(f"systemd told that {new} is the main process")
    os.kill(old, signal.SIGTERM)
    say(f"TERM sent to the old master {old}; its workers finish their requests")
    _wait(f"the old master {old} to exit", lambda: not _alive(old) or _zombie(old), time.monotonic() + stop_timeout)
    _wait("the new master to take over the pidfile", lambda: _read_pid(pidfile) == new,
          time.monotonic() + stop_timeout)
    say(f"restarted: gunicorn master {new}")
    return new


def _gone(pid):
    raise RestartFailed(f"the new master {pid} exited (its log says why)")


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wizard.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pidfile", default=os.environ.get("WIZARD_PIDFILE"),
                        help="gunicorn's pidfile (default: WIZARD_PIDFILE)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds the new workers get to answer before the restart is backed out (120)")
    args = parser.parse_args(argv)
    if not args.pidfile:
        parser.error("no pidfile: start gunicorn with WIZARD_PIDFILE set and give the same path here")
    try:
        restart(args.pidfile, timeout=args.timeout)
    except RestartFailed as exc:
        print(f"restart failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
