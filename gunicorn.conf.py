"""gunicorn's configuration, read from the working directory, so that ``gunicorn wsgi:app`` is the whole command.

Why these choices (measurements in deploy/README.md):
- ``gthread`` workers: a request may wait on LINE for seconds (a live check, the webhook test), and the
  webhook test only succeeds if LINE's call to our webhook is answered *while* the owner's request still
  waits for LINE's verdict. Threads give every process many requests in flight; the database driver and
  the receiver's group commit (wizard/line/group_commit.py) are thread-based, so no monkey-patching.
- One process per core (the GIL lets one thread run Python at a time per process), one process on SQLite
  (it has one writer: more processes only queue on its lock).
- Served behind deploy/nginx.conf, which buffers whole requests: a gthread thread reads a request
  blockingly once its first byte has come, so 50 clients sending a byte a second would hold every thread.
  nginx holds such clients in its event loop and passes on only complete requests; hence ``bind`` is
  loopback and the app trusts one proxy's X-Forwarded-For/Proto (``WIZARD_TRUSTED_PROXIES``).
- Timeouts: ``timeout`` above the slowest page (LINE_TIMEOUT 8 s for a few calls to LINE), nginx's
  ``proxy_read_timeout`` a little above it; ``keepalive`` above nginx's upstream keepalive_timeout (60 s),
  so nginx never sends a request on a connection gunicorn is closing.
- Graceful restart on deploy: ``python -m wizard.restart`` (wizard/restart.py) sends USR2 (a second master with
  the new code beside the old one, its pid in ``<pidfile>.2``), waits until every new worker's own app answers
  GET /readyz (the hooks below leave a marker per worker, after the receiver's warm-up: its database
  connection, statement and recently active channels ready), and only then TERMs the old master, whose workers
  finish their requests (at most ``graceful_timeout``). "Booting worker" in the log is not that moment: the
  app is imported after it (7 s idle, 20–50 s under load). ``HUP`` stops the old workers at once and leaves
  nobody accepting while the new ones import the app, longer than LINE's 2 s; for the same reason no
  ``max_requests`` recycling. USR2 re-executes gunicorn with the environment it was first started with: a
  changed variable reaches no new worker that way (keys change through WIZARD_ENCRYPTION_KEY_FILE).

Environment (all optional): WIZARD_BIND (127.0.0.1:8000), WEB_CONCURRENCY (worker processes), WIZARD_THREADS
(threads per process), WIZARD_TRUSTED_PROXIES (proxies in front whose X-Forwarded-* headers count; 1),
WIZARD_PIDFILE (the master's pid, for the restart above; markers in ``<file>.d/``).
"""
import multiprocessing
import os
import sys

# The wizard beside this file, as `wsgi:app` will be (gunicorn puts its working directory on the path only
# after reading this file).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wizard import observability  # noqa: E402  (after the path above)
PROMETHEUS_DIR = observability.prepare_multiprocess_env()
logconfig_dict = observability.gunicorn_logconfig()
logger_class = "wizard.access_log.AccessLogger"  # the same JSON access line, without gunicorn's every-atom dict
def on_starting(server): observability.on_starting(server)
def child_exit(server, worker): observability.child_exit(server, worker)
from wizard import restart  # noqa: E402  (the readiness markers wizard/restart.py waits for)
def when_ready(server): restart.master_ready(server)
def post_worker_init(worker):
    from wizard import heap
    from wizard.line import receiver  # in the worker, its app loaded: the receiver's writer and channels, warm
    heap.freeze_loaded_app()  # the loaded app out of the collector's full passes (wizard/heap.py says why)
    restart.worker_ready(worker, warm_up=lambda: receiver.warm_up(worker.wsgi))
def worker_exit(server, worker): restart.worker_gone(server, worker)
def on_exit(server): restart.master_gone(server)


def _on_sqlite():
    url = os.environ.get("WIZARD_DATABASE_URL", "")
    return not url or url.startswith("sqlite")


bind = os.environ.get("WIZARD_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY") or (1 if _on_sqlite() else multiprocessing.cpu_count()))
# On PostgreSQL 32: a webhook's thread waits for its group commit (one WAL flush, about 5 ms here, whatever the
# batch holds), so a process stores at most (threads / commit time) deliveries a second, and more threads make
# larger batches, not more commits: the receiver went from 0.46 to 0.58 of bare Flask's rate with 32 (README,
# Benchmark), bare Flask's own rate unchanged. On SQLite 16 (8 measured no better; one writer).
threads = int(os.environ.get("WIZARD_THREADS") or (16 if _on_sqlite() else 32))
# Requests in flight plus kept-alive connections from nginx, per process.
worker_connections = 1000
timeout = 30
graceful_timeout = 30
keepalive = 75
# Not preloaded: each worker builds its own app after the fork (database pools, the group commit's thread,
# WIZARD_WORKER_IN_PROCESS's event thread do not survive a fork).
preload_app = False
# The heartbeat file on tmpfs: a slow disk must not make the master think a worker hangs.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Only the local proxy may tell gunicorn the request came over https.
forwarded_allow_ips = "127.0.0.1,::1"
proc_name = "line-connect-wizard"
pidfile = os.environ.get("WIZARD_PIDFILE") or None
# Graceful restart and stop go by signal (USR2, TERM). gunicorn's control socket has one default path per user,
# which two servers on one machine would fight over.
control_socket_disable = True
os.environ.setdefault("WIZARD_TRUSTED_PROXIES", "1")
