"""The benchmark's floor: one Flask route and nothing else (no extensions, no middleware, no logging set-up).

tests/bench/webhook.py serves it with the same gunicorn worker model as the app (gthread, the same processes
and threads) beside the app itself, so "receiver / bare Flask" says what the wizard costs per request on top
of Flask and gunicorn alone, measured in the same run on the same busy machine.
"""
from flask import Flask

app = Flask(__name__)


@app.route("/healthz", methods=["GET", "POST"])
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}
