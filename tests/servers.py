"""Serve a WSGI app over real HTTP on a loopback port, in a thread, for the length of a test; and the local
servers a test shares with the machine (Redis), divided between pytest-xdist workers so they never meet."""
import itertools
import os
import random
import socket
import threading

from werkzeug.serving import make_server


# "gw0", "gw1" … under pytest-xdist; None in a plain run.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
WORKER_INDEX = int(WORKER[2:]) if WORKER else 0


def redis_url(slot, host="127.0.0.1:6379"):
    """A Redis database of this worker's own on the machine's Redis: ``slot`` 0, 1 or 2 (three per worker, in
    databases 1–15), so two workers never flush or count in each other's database."""
    return f"redis://{host}/{1 + (3 * WORKER_INDEX + slot) % 15}"


# free_port hands out ports below Linux's ephemeral range (32768-60999), from a block of this worker's own: a
# port picked from the ephemeral range is free when picked, but before the test binds it an outgoing connection
# (thousands, in the fault and queue tests) may take it as its local port, and the server then fails to start.
PORT_BLOCK = 1500
_ports = itertools.count(random.randrange(PORT_BLOCK))


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts later (gunicorn, the live app)."""
    first = 20000 + PORT_BLOCK * (WORKER_INDEX % 8)
    for _ in range(PORT_BLOCK):
        port = first + next(_ports) % PORT_BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {first}-{first + PORT_BLOCK - 1}")


class Served:
    def __init__(self, wsgi_app, port=None):
        try:
            self.server = make_server("127.0.0.1", port or 0, wsgi_app, threaded=True)
        except SystemExit:  # werkzeug's answer to a port in use, which would stop pytest's own fixture machinery
            raise OSError(f"port {port} is in use: the server could not start") from None
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for it, and every test that serves something stops it.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
