"""What a long-lived process made while loading the app, kept out of the garbage collector's full passes: the
web workers (gunicorn.conf.py ``post_worker_init``) and the queue's consumer (``flask worker``).

Why: CPython collects its oldest generation by walking every object in it, and a loaded app (Flask,
SQLAlchemy, Babel, the LINE SDK, our models and templates) holds hundreds of thousands that live as long as
the process. In the send-plan bench (tests/bench/send_plan.py) the web worker stopped for 90 to 450 ms at a
time for such passes, every webhook in flight waiting with it, and the consumer for up to 500 ms, sometimes
while it held SQLite's write lock. Frozen once the app is loaded (``gc.freeze``), those objects are never
walked again; what the process makes afterwards is collected as before. Tests and ``make run`` do not freeze:
they make many apps in one process, and what is frozen is never freed.
"""
import gc


def freeze_loaded_app():
    """Collect what loading left over, then move every object alive now out of the collector's passes."""
    gc.collect()
    gc.freeze()
