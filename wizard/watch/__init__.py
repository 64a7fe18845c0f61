"""Staying connected: drift checks on the queue (drift.py) and the alerts they open (alerts.py).

The shop's state itself is derived in steps/health.py; this package only listens to its changes and asks
LINE on a schedule, so the state is the same whoever computed it (a page, the status API, the watch).
"""


def init_app(app):
    """Alerts follow every change of a shop's state, from whichever evaluation noticed it."""
    from . import alerts
    alerts.connect()
