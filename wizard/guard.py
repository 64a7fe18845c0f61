"""Bad input is answered as bad input: a NUL byte or a broken request body gets a 4xx, never a 500.

PostgreSQL refuses a NUL byte in any text it is given, so a ``%00`` in a link (``/form/%00``) or a form field
turned a harmless typo or a scanner's probe into a database error and a traceback. Every view would have to
remember it; one check here, before any view runs, answers the same way everywhere: 404 for a NUL in the
path (no page has one in its address), 400 for a NUL in the query string or a form field.

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
# Bodies the guard looks into: the ones werkzeug parses into request.form. The webhook receiver reads its
# raw body itself (it must verify the signature over exactly those bytes), so its stream is left unread.
_RAW_BODY_PATHS = ("/line/webhook/",)


class BrokenBody(BadRequest):
    description = "The request body could not be read: it was cut off or is not valid chunked encoding."

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("Connection", "close")]


class _GuardedInput:
    """The server's ``wsgi.input``, with every read failure reported as ``BrokenBody``.

    Only ``read``/``readline``/``readlines`` and iteration are offered (what PEP 3333 promises), so werkzeug
    reads through ``read`` and never reaches the server's stream another way."""

    def __init__(self, stream):
        self._stream = stream

    def _guarded(self, method, *args):
        try:
            return method(*args)
        except HTTPException:
            raise
        except Exception as error:  # whatever the server raises, it means the client's bytes were bad
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


def refuse_nul():
    """``before_request``: 404 for a NUL in the path, 400 for one in the query string or a form field."""
    if NUL in request.path:
        abort(404)
    if _has_nul(request.args):
        abort(400)
    if request.path.startswith(_RAW_BODY_PATHS):
        return
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") and _has_nul(request.form):
        abort(400)


def _has_nul(values):
    return any(NUL in key or NUL in value for key, value in values.items(multi=True))


def init_app(app):
    app.wsgi_app = InputGuard(app.wsgi_app)
    # First of all before_request functions: nothing else may see a NUL (session, sign-in, throttling).
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_nul)
