"""A webhook endpoint for tests: a tiny WSGI app served on loopback that records what LINE (the sandbox) POSTs
and answers with a chosen status, optionally slowly. ``verified(secret)`` checks every signature with the
SDK's own ``SignatureValidator``. Test modules define a ``sink`` fixture that serves one for the test."""
import json
import threading
import time

from linebot.v3.webhook import SignatureValidator

from tests.servers import Served


class Sink:
    def __init__(self, status=200, delay=0.0):
        self.status = status
        self.delay = delay
        self.requests = []
        self._lock = threading.Lock()
        self.served = Served(self)
        self.url = self.served.url + "/line/webhook"

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        with self._lock:
            self.requests.append({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                                  "headers": headers, "body": body})
        if self.delay:
            time.sleep(self.delay)
        start_response(f"{self.status} Answer", [("Content-Type", "text/plain")])
        return [b"answered"]

    @property
    def bodies(self):
        return [json.loads(request["body"]) for request in self.requests]

    @property
    def events(self):
        return [event for body in self.bodies for event in body["events"]]

    def verified(self, secret) -> bool:
        validator = SignatureValidator(secret)
        return bool(self.requests) and all(
            validator.validate(request["body"].decode("utf-8"), request["headers"]["x-line-signature"])
            for request in self.requests)

    def stop(self):
        self.served.stop()
