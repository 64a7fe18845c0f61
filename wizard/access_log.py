"""gunicorn's access log without its per-request cost: only the atoms the JSON access line shows.

gunicorn builds, for every request, a dict of every atom it knows (each request header, response header and
WSGI environ entry under its own key), wraps it in a dict that escapes every value, and only then hands it to
the access formatter, which reads eleven of them. Profiling the app's ``/healthz`` under load (issue 15,
item 10) put that at a quarter of the request's CPU. ``AccessLogger`` (gunicorn.conf.py's ``logger_class``)
builds just those eleven, under the same keys, and logs them exactly as before: the same logger
(``gunicorn.access``), handler, level (``WIZARD_ACCESS_LOG``) and ``observability.AccessJsonFormatter``, so the
line an operator reads is unchanged.
"""
import logging
import os
import traceback

from gunicorn.glogging import Logger

from .observability import REQUEST_ID_HEADER, SHOP_ENVIRON

_REQUEST_ID_ATOM = "{%s}" % REQUEST_ID_HEADER.lower()
_SHOP_ATOM = "{%s}e" % SHOP_ENVIRON
_REQUEST_ID_UPPER = REQUEST_ID_HEADER.upper()


def _header(headers, name):
    """The value of header ``name`` in gunicorn's list of (name, value) pairs (case as given), or None."""
    for key, value in headers:
        if len(key) == len(name) and key.upper() == name:
            return value
    return None


class _Atoms(dict):
    """An atom the line does not show reads as "-" (as in gunicorn), should a format ask for one."""

    def __missing__(self, key):
        return "-"


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        atoms = _Atoms({
            "h": environ.get("REMOTE_ADDR", "-"),
            "s": status,
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "B": getattr(resp, "sent", None),
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
            "D": request_time.seconds * 1_000_000 + request_time.microseconds,
            _REQUEST_ID_ATOM + "o": _header(resp.headers, _REQUEST_ID_UPPER),
            _REQUEST_ID_ATOM + "i": environ.get("HTTP_X_REQUEST_ID"),
        })
        shop = environ.get(SHOP_ENVIRON)
        if shop:
            atoms[_SHOP_ATOM] = shop
        return atoms

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled or not self.access_log.isEnabledFor(logging.INFO):
            return
        try:
            # No escaping wrapper: the JSON formatter escapes what it writes itself.
            self._emit(self.atoms(resp, req, environ, request_time))
        except Exception:
            self.error(traceback.format_exc())

    def _emit(self, atoms):
        """The record as logging would write it, but a stream handler's line goes out in one ``os.write`` (one
        line, appended whole) without its handler's lock: with every request thread of a busy process waiting
        on that one lock, handing it over cost more than the line itself. Anything else is handled as usual."""
        log = self.access_log
        record = log.makeRecord(log.name, logging.INFO, "(access)", 0, self.cfg.access_log_format, (atoms,), None)
        if log.propagate or not log.filter(record):
            if log.propagate:
                log.handle(record)
            return
        for handler in log.handlers:
            fileno = _fileno(handler)
            if fileno is None or record.levelno < handler.level or handler.filters:
                handler.handle(record)
            else:
                line = (handler.format(record) + handler.terminator).encode("utf-8")
                while line:  # a blocking write takes it whole, unless a signal cuts it short
                    line = line[os.write(fileno, line):]


def _fileno(handler):
    """The file descriptor a plain stream handler writes to, or None."""
    if type(handler) is not logging.StreamHandler:
        return None
    try:
        return handler.stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
