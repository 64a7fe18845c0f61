"""``/media/<name>``: the pictures of message templates (plans/media.py), public because LINE fetches them
when it delivers a message and whenever a customer opens it. A name is 24 random bytes, so nothing can be
listed or guessed; only a name of that shape with a row of the uploads table and its file is served (never a
path: the shape has no ``/`` or ``.`` to climb with), always as a JPEG that the browser may not sniff as
anything else. A file never changes under its name, so it may be cached for a year."""
from flask import Blueprint, abort, send_file

from ..plans import media

bp = Blueprint("media", __name__, url_prefix="/media")


@bp.get("/<name>")
def serve(name):
    path = media.path_of(name)
    if path is None:
        abort(404)
    response = send_file(path, mimetype="image/jpeg", max_age=365 * 24 * 3600, conditional=True)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Robots-Tag"] = "noindex"
    return response
