"""Pictures uploaded for templates: checked, resized to LINE's limits, stored under the instance folder and
served publicly at ``<PUBLIC_BASE_URL>/media/<name>`` (views/media.py), because LINE fetches an image
message's picture from its URL when it delivers it, and again whenever a customer opens it.

Each upload becomes two JPEG files with one unguessable name (24 random bytes): ``<name>.jpg``, the picture
LINE shows (``originalContentUrl``: at most 10 MB; here at most 2048 px a side), and ``<name>-preview.jpg``,
the small one in the chat (``previewImageUrl``: at most 1 MB; here at most 240 px a side). PNG's
transparency is laid on white, as LINE's chat would show it; a phone's rotation (EXIF) is applied. Names
cannot be listed or guessed, so a shop's pictures are public only to whoever received them.
"""
import io
import os
import re
import secrets
from pathlib import Path

from flask import current_app

ORIGINAL_SIDE = 2048
PREVIEW_SIDE = 240
MAX_UPLOAD = 10 * 1024 * 1024  # LINE's limit for an image message's picture
MAX_PIXELS = 40_000_000  # a bigger picture is refused before it is decoded (a "decompression bomb")
ACCEPTED = {"JPEG", "PNG"}
NAME = re.compile(r"^[A-Za-z0-9_-]{32}(?:-preview)?\.jpg$")


class Refused(ValueError):
    """The upload is not a picture this accepts; ``str()`` says why in the user's language."""


def folder() -> Path:
    path = Path(current_app.config.get("MEDIA_DIR") or Path(current_app.instance_path) / "media")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(stream) -> dict:
    """Check, resize and store an uploaded picture (a file-like object); returns ``{"url", "preview"}``, the
    public addresses LINE fetches. Raises ``Refused`` for anything but a JPEG or PNG picture of sane size."""
    from flask_babel import gettext as _
    from PIL import Image, ImageOps, UnidentifiedImageError
    data = stream.read(MAX_UPLOAD + 1)
    if not data:
        raise Refused(_("Choose a picture (JPEG or PNG) to upload."))
    if len(data) > MAX_UPLOAD:
        raise Refused(_("The picture is larger than 10 MB: LINE does not take it. Choose a smaller one."))
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED:
                raise Refused(_("LINE takes JPEG and PNG pictures only; this file is %(kind)s.",
                                kind=probe.format or "?"))
            if probe.width * probe.height > MAX_PIXELS:
                raise Refused(_("The picture has too many pixels; choose one of at most 40 megapixels."))
            probe.load()
            picture = ImageOps.exif_transpose(probe)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, Refused):
            raise
        raise Refused(_("This file is not a picture that can be read (JPEG or PNG).")) from None
    picture = _on_white(picture)
    name = secrets.token_urlsafe(24)
    target = folder()
    _write(_fit(picture, ORIGINAL_SIDE), target / f"{name}.jpg", quality=88)
    _write(_fit(picture, PREVIEW_SIDE), target / f"{name}-preview.jpg", quality=80)
    return {"url": url(f"{name}.jpg"), "preview": url(f"{name}-preview.jpg")}


def _on_white(picture):
    from PIL import Image
    if picture.mode in ("RGBA", "LA") or (picture.mode == "P" and "transparency" in picture.info):
        picture = picture.convert("RGBA")
        ground = Image.new("RGB", picture.size, "white")
        ground.paste(picture, mask=picture.getchannel("A"))
        return ground
    return picture.convert("RGB")


def _fit(picture, side):
    if max(picture.size) <= side:
        return picture
    from PIL import Image
    copy = picture.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def _write(picture, path, quality):
    """Written to a temporary name and renamed: a half-written file is never served."""
    temporary = path.with_name(path.name + ".part")
    picture.save(temporary, "JPEG", quality=quality, optimize=True)
    os.replace(temporary, path)


def url(name: str) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL']}/media/{name}"


def name_of(address: str) -> str | None:
    """The stored file's name when ``address`` is one of our pictures' public addresses, else None."""
    prefix = f"{current_app.config['PUBLIC_BASE_URL']}/media/"
    if not isinstance(address, str) or not address.startswith(prefix):
        return None
    name = address[len(prefix):]
    return name if NAME.match(name) else None


def preview_of(address: str) -> str | None:
    """The preview's public address for one of our pictures' addresses (None for any other address)."""
    name = name_of(address)
    if name is None or name.endswith("-preview.jpg"):
        return None
    return url(name[:-len(".jpg")] + "-preview.jpg")


def path_of(name: str) -> Path | None:
    """The file to serve for ``name``, or None (a name of another shape, or no such file)."""
    if not NAME.match(name):
        return None
    path = folder() / name
    return path if path.is_file() else None
