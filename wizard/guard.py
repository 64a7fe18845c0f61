"""Bad input is answered as bad input: a NUL byte or a broken request body gets a 4xx, never a 500.

PostgreSQL refuses a NUL byte in any text it is given, so a ``%00`` in a link (``/form/%00``,
``/line/webhook/%00``) turned a scanner's probe into a database error and a traceback. Every view would have
to remember it; one check here, before any view runs, answers the same way everywhere: 404 for a NUL in the
path (no page has one in its address), 400 for one in the query string. Form fields are not refused here:
each form checks its own fields and says under the field what is wrong ("without control characters", "not
an e-mail address"), which a bare 400 page would hide; tests/test_fuzz.py holds every public form to it.

A body can also be broken on the wire: a chunked upload with a chunk size that is not a number, one cut off
in the middle, one without its final chunk. The server only notices when the application reads the body,
and says so with its own exception (werkzeug's dev server an ``OSError``, gunicorn a ``ParseException`` or
``NoMoreData``), which Flask would answer with a 500. ``InputGuard`` wraps the server's input stream so any
failure to read the client's bytes becomes ``BrokenBody``, a 400 with ``Connection: close`` (what is left on
the connection cannot be trusted to start the next request), drawn by views/errors.py like any other error.
"""
from flask import abort, request
from werkzeug.exceptions import BadRequest, HTTPException

NUL = "\x00"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# The webhook receiver reads its raw body itself (the signature is over exactly those bytes): not parsed here.
_RAW_BODY_PATHS = ("/line/webhook/",)


class BrokenBody(BadRequest):
    description = "The request body could not be read: it was cut off or is not valid chunked encoding."

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("Connection", "close")]


class _GuardedInput:
    """The server's ``wsgi.input``, with every read failure reported as ``BrokenBody``.

    Only ``read``/``readline``/``readlines`` and iteration are offered (what PEP 3333 promises), so werkzeug
    reads through ``read`` and never reaches the server's stream another way. Once broken, it stays broken:
    a caller that swallowed the first failure (a rate limiter's key function reading the form, say) must not
    read on and take the bytes left over for a whole, shorter body."""

    def __init__(self, stream):
        self._stream = stream
        self._broken = None

    def _guarded(self, method, *args):
        if self._broken is not None:
            raise BrokenBody() from self._broken
        try:
            return method(*args)
        except HTTPException:
            raise
        except Exception as error:  # whatever the server raises, it means the client's bytes were bad
            self._broken = error
            raise BrokenBody() from error

    def read(self, *args):
        return self._guarded(self._stream.read, *args)

    def readline(self, *args):
        return self._guarded(self._stream.readline, *args)

    def readlines(self, *args):
        return self._guarded(self._stream.readlines, *args)

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class InputGuard:
    """WSGI middleware: wraps ``wsgi.input`` (see the module's docstring)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        stream = environ.get("wsgi.input")
        if stream is not None and not isinstance(stream, _GuardedInput):
            environ["wsgi.input"] = _GuardedInput(stream)
        return self.wsgi_app(environ, start_response)


def check_request():
    """``before_request``: 404 for a NUL in the path, 400 for one in the query string (names or values), and
    a form body read now, so a broken one is a 400 here, before anything (the sign-in throttle's key reads
    the form) could meet the failure and log it as its own error."""
    if NUL in request.path:
        abort(404)
    query = request.query_string
    # Only a query with a NUL byte or its escape (%00) can hold one once parsed: the rest are not parsed here.
    if (b"%00" in query or b"\x00" in query) and any(
            NUL in key or NUL in value for key, value in request.args.items(multi=True)):
        abort(400)
    if request.mimetype in _FORM_TYPES and not request.path.startswith(_RAW_BODY_PATHS):
        request.form  # noqa: B018  (parsed once and cached for the view)


def init_app(app):
    app.wsgi_app = InputGuard(app.wsgi_app)
    # First of all before_request functions: nothing else may see a NUL (sign-in, throttling, the views).
    app.before_request_funcs.setdefault(None, []).insert(0, check_request)
