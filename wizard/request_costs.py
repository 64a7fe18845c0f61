"""What every request pays for before and after its view, kept small (issue 15, item 10).

A profile of the app's ``/healthz`` against a bare Flask app showed the framework's own per-request work, not
any one extension, adding up: this module removes two pieces of it without changing what a request does.

- Flask asks, for every hook of every request (a dozen), whether the function is a coroutine
  (``ensure_sync``): the answer never changes, so it is remembered per function.
- Flask's signed-cookie session builds a signing serializer (keys, salt, key derivation) before it even looks
  for the cookie. LINE's deliveries, load balancers' ``/healthz`` and API clients never send one; a request
  without a session cookie gets the same empty session Flask would give it, at once.
"""
from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    def open_session(self, app, request):
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app):
    app.session_interface = CookieSessionInterface()
    ensure_sync, known = app.ensure_sync, {}

    def remembered(func):
        try:
            return known[func]
        except KeyError:
            return known.setdefault(func, ensure_sync(func))
        except TypeError:  # not hashable: asked each time, as Flask does
            return ensure_sync(func)
    app.ensure_sync = remembered
