"""Queue consumers as production starts them (``flask --app wizard worker``), for tests about operations.

``consumer_env`` is the environment a consumer of the test's app needs (same database, queue, keys and LINE
host); ``Consumer`` starts one, waits for its announcement and stops it with the SIGTERM systemd would send.
"""
import os
import signal
import subprocess
import sys
import time

from tests.webhooks import ROOT


def consumer_env(app, **settings):
    """The environment of a process that serves ``app``'s deployment; ``settings`` are more WIZARD_* values."""
    env = {**os.environ, "WIZARD_DATABASE_URL": app.config["DATABASE_URL"],
           "WIZARD_INSTANCE_PATH": app.instance_path, "WIZARD_SECRET_KEY": app.config["SECRET_KEY"],
           "WIZARD_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"], "WIZARD_SANDBOX": "0",
           "WIZARD_LINE_API_HOST": app.config["LINE_API_HOST"],
           "WIZARD_PUBLIC_BASE_URL": app.config["PUBLIC_BASE_URL"], "WIZARD_QUEUE_NAME": app.config["QUEUE_NAME"],
           "WIZARD_LINE_TIMEOUT": "2"}
    env.update({f"WIZARD_{name}": str(value) for name, value in settings.items()})
    return env


class Consumer:
    ANNOUNCEMENT = "Queue consumer running"

    def __init__(self, env, log_path, threads=2):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wizard", "worker", "--threads", str(threads)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self):
        return self.log_path.read_text()

    def wait_running(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ANNOUNCEMENT in self.output():
                return
            assert self.proc.poll() is None, f"the consumer exited:\n{self.output()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"the consumer did not start within {timeout} s:\n{self.output()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
