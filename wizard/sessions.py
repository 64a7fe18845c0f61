"""Flask's signed-cookie session, opened for free when the request brings no session cookie.

Flask opens the session on every request, and its cookie session builds a signing serializer (keys, salt,
key derivation) before it even looks for the cookie. LINE's deliveries, load balancers' /healthz and API
clients never send one, so on the paths every request pays for (issue 15, item 10) that was work for
nothing. A request with a session cookie is opened exactly as Flask does; one without gets the same empty
session Flask would give it.
"""
from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    def open_session(self, app, request):
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)
