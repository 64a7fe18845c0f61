"""Serve a WSGI app over real HTTP on a loopback port, in a thread, for the length of a test; and the local
servers a test shares with the machine (Redis), divided between pytest-xdist workers so they never meet."""
import os
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, wsgi_app, port=None):
        self.server = make_server("127.0.0.1", port or 0, wsgi_app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for it, and every test that serves something stops it.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
