"""Pictures uploaded for templates: checked, resized to LINE's limits, stored in MEDIA_DIR with a row each
(``MediaUpload``: the shop, the name, the size, when) and served publicly at ``<PUBLIC_BASE_URL>/media/<name>``
(views/media.py), because LINE fetches an image message's picture from its URL when it delivers it, and again
whenever a customer opens it.

Each upload becomes two JPEG files with one unguessable name (24 random bytes): ``<name>.jpg``, the picture
LINE shows (``originalContentUrl``: at most 10 MB; here at most 2048 px a side), and ``<name>-preview.jpg``,
the small one in the chat (``previewImageUrl``: at most 1 MB; here at most 240 px a side). JPEG and PNG are
taken, and MPO too: what many phones (Samsung, iPhone) write for a photo is a JPEG with a second picture
after it, of which the first is the photo. PNG's transparency is laid on white, as LINE's chat would show it;
a phone's rotation (EXIF) is applied. Names cannot be listed or guessed, so a shop's pictures are public only
to whoever received them, and only a name with a row is served.

A shop's pictures are its own: a template may use only pictures of its shop that are still stored
(``problems_in``, and ``take`` when it is saved), and a shop stores at most MEDIA_SHOP_QUOTA_BYTES and
MEDIA_SHOP_MAX_PICTURES. The same file chosen again (every button of the builder posts the form with it) is
the picture stored the first time.

``clean_up`` (hourly, on one consumer: jobs.py) deletes the pictures nothing uses: not in any template, nor in
a multicast chunk or a message still to be sent (a plan's template edited while it sends), a day after their
upload, or 30 days after a template last used them (its messages may still be opened). MEDIA_DIR must be the
same folder on every web machine and consumer. A file without a row (a crash between the file and its row, a
shop deleted) is deleted a day after it was written.
"""
import hashlib
import io
import json
import logging
import os
import re
import secrets
import threading
from datetime import timedelta, timezone
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import and_, delete, func, or_, select, update

from ..extensions import db
from ..models import MediaUpload, MessageTemplate, Outbox, OutgoingBatch, utcnow
from ..statuses import BatchStatus, OutboxStatus

ORIGINAL_SIDE = 2048
PREVIEW_SIDE = 240
MAX_UPLOAD = 10 * 1024 * 1024  # LINE's limit for an image message's picture
MAX_PIXELS = 40_000_000  # a bigger picture is refused before it is decoded (a "decompression bomb")
ACCEPTED = {"JPEG", "PNG", "MPO"}  # MPO: a phone's JPEG with a second picture after the first
NAME = re.compile(r"^([A-Za-z0-9_-]{32})(?:-preview)?\.jpg$")
FILE = re.compile(r"^([A-Za-z0-9_-]{32})(?:-preview)?\.jpg(\.part)?$")
IN_TEXT = re.compile(r"/media/([A-Za-z0-9_-]{32})(?:-preview)?\.jpg")
KEEP_UNUSED = timedelta(days=1)  # an upload no template took (the owner chose another, or left)
KEEP_AFTER_USE = timedelta(days=30)  # a picture a template used: its messages may still be opened
BATCH = 200
# Pictures made at once in one process: a 40-megapixel PNG takes about 300 MB while it is made smaller (a phone's
# 12-megapixel photo about 50 MB), so a process's threads, each with such an upload, never hold more than this.
_AT_ONCE = threading.BoundedSemaphore(2)

log = logging.getLogger(__name__)


class Refused(ValueError):
    """The upload is not a picture this accepts; ``str()`` says why in the user's language."""


def folder() -> Path:
    path = Path(current_app.config.get("MEDIA_DIR") or Path(current_app.instance_path) / "media")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- storing an upload ----------------------------------------------------------------------------------

def save(stream, shop) -> dict:
    """Check, resize and store an uploaded picture (a file-like object) of ``shop``, its row committed; returns
    ``{"url", "preview"}``, the public addresses LINE fetches. Raises ``Refused`` for anything but a JPEG, PNG
    or MPO picture of sane size, or when the shop's pictures are at their limit (nothing is stored then)."""
    data = stream.read(MAX_UPLOAD + 1)
    if not data:
        raise Refused(_("The file is empty. Choose a picture (JPEG or PNG) to upload."))
    if len(data) > MAX_UPLOAD:
        raise Refused(_("The picture is larger than 10 MB: LINE does not take it. Choose a smaller one."))
    digest = hashlib.sha256(data).hexdigest()
    name = _again(shop, digest)
    if name is None:
        # Made smaller first, then laid on white (resampling keeps transparent edges right), and the preview
        # from that: a 40-megapixel picture is held whole in memory once, never copied at full size.
        with _AT_ONCE:
            picture = _on_white(_fit(_decode(data), ORIGINAL_SIDE))
            original = _jpeg(picture, quality=88)
            preview = _jpeg(_fit(picture, PREVIEW_SIDE), quality=80)
        _check_room(shop, len(original) + len(preview))
        name = secrets.token_urlsafe(24)
        paths = [folder() / f"{name}.jpg", folder() / f"{name}-preview.jpg"]
        try:
            for content, path in zip((original, preview), paths, strict=True):
                _write(content, path)
            db.session.add(MediaUpload(shop_id=shop.id, name=name, size=len(original) + len(preview),
                                       digest=digest))
            db.session.commit()
        except BaseException:
            db.session.rollback()
            for path in paths:
                path.unlink(missing_ok=True)
            raise
    return {"url": url(f"{name}.jpg"), "preview": url(f"{name}-preview.jpg")}


def _again(shop, digest):
    """The name of the shop's picture made from this very file, when it is still stored (its time renewed,
    so the cleanup keeps it); else None."""
    row = db.session.execute(select(MediaUpload.id, MediaUpload.name)
                             .where(MediaUpload.shop_id == shop.id, MediaUpload.digest == digest)
                             .order_by(MediaUpload.id.desc()).limit(1)).first()
    if row is None or not _files_exist(row.name):
        return None
    # A conditional write: if the cleanup deleted the row meanwhile, nothing matches and a new picture is made.
    renewed = db.session.execute(update(MediaUpload).where(MediaUpload.id == row.id).values(touched_at=utcnow())
                                 .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return row.name if renewed else None


def _decode(data):
    """The picture in ``data`` (its first frame, its EXIF rotation applied), or ``Refused``."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    too_many = _("The picture has too many pixels; choose one of at most 40 megapixels.")
    try:
        probe = Image.open(io.BytesIO(data))  # in memory: nothing to close
        if probe.format not in ACCEPTED:
            raise Refused(_("LINE takes JPEG and PNG pictures only; this file is %(kind)s.",
                            kind=probe.format or "?"))
        if probe.width * probe.height > MAX_PIXELS:
            raise Refused(too_many)
        if probe.format in ("JPEG", "MPO"):
            # The decoder scales by 1/2, 1/4 or 1/8 while it reads, as far as the result stays at least as
            # large as what is kept: a 40-megapixel photo never sits in memory whole.
            scale = ORIGINAL_SIDE / max(probe.size)
            if scale < 1:
                probe.draft("RGB", (int(probe.width * scale), int(probe.height * scale)))
        probe.load()  # an MPO's first frame: the photo
        ImageOps.exif_transpose(probe, in_place=True)
        return probe
    except Refused:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, met before ours when the header says more
        raise Refused(too_many) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise Refused(_("This file is not a picture that can be read (JPEG or PNG).")) from None


def _on_white(picture):
    from PIL import Image
    if picture.mode in ("RGBA", "LA") or (picture.mode == "P" and "transparency" in picture.info):
        picture = picture.convert("RGBA")
        ground = Image.new("RGB", picture.size, "white")
        ground.paste(picture, mask=picture.getchannel("A"))
        return ground
    return picture.convert("RGB")


def _fit(picture, side):
    """``picture`` at most ``side`` px a side (a new image; the same one when it is small enough)."""
    if max(picture.size) <= side:
        return picture
    from PIL import ImageOps
    return ImageOps.contain(picture, (side, side), ImageOps.Image.Resampling.LANCZOS)


def _jpeg(picture, quality) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _write(content, path):
    """Written to a temporary name and renamed: a half-written file is never served."""
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def _check_room(shop, size):
    """``Refused`` when ``size`` more bytes, or one more picture, would pass the shop's limits. Two uploads at
    the same moment may both pass: the limits are generous, and an overshoot is one picture."""
    config = current_app.config
    quota, most = int(config["MEDIA_SHOP_QUOTA_BYTES"]), int(config["MEDIA_SHOP_MAX_PICTURES"])
    stored, count = db.session.execute(select(func.coalesce(func.sum(MediaUpload.size), 0), func.count())
                                       .where(MediaUpload.shop_id == shop.id)).one()
    if stored + size > quota or count + 1 > most:
        raise Refused(_("This shop's pictures have reached their limit (%(megabytes)d MB or %(pictures)d "
                        "pictures). Pictures no template uses are removed by themselves: a day after their "
                        "upload, or 30 days after a template last used them. Delete the templates you no "
                        "longer need, or try again later.",
                        megabytes=quota // (1024 * 1024), pictures=most))


# ---- addresses and ownership ----------------------------------------------------------------------------

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


def _files_exist(base) -> bool:
    target = folder()
    return (target / f"{base}.jpg").is_file() and (target / f"{base}-preview.jpg").is_file()


def owned(shop, address) -> bool:
    """Is ``address`` one of ``shop``'s pictures, still stored?"""
    name = name_of(address)
    if name is None:
        return False
    base = NAME.match(name).group(1)
    found = db.session.scalar(select(MediaUpload.id).where(MediaUpload.shop_id == shop.id,
                                                           MediaUpload.name == base))
    return found is not None and _files_exist(base)


def _ours(value):
    """Every text in a message (any depth) that points at our /media/: the addresses to check."""
    if isinstance(value, str):
        if value.startswith(f"{current_app.config['PUBLIC_BASE_URL']}/media/"):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _ours(item)
    elif isinstance(value, list):
        for item in value:
            yield from _ours(item)


def _bases_per_message(messages):
    """{n: the base names message n points at (None for an address of ours that names no picture)}."""
    found = {}
    for n, message in enumerate(messages if isinstance(messages, list) else []):
        for address in _ours(message):
            name = name_of(address)
            found.setdefault(n, set()).add(NAME.match(name).group(1) if name else None)
    return found


def _not_yours(found, present):
    return {f"messages[{n}]": _("This picture is not one of this shop's uploaded pictures, or it has been "
                                "removed. Upload it again in the template builder.")
            for n, bases in found.items() if any(base not in present for base in bases)}


def problems_in(shop, messages) -> dict:
    """Our pictures in ``messages`` that are not ``shop``'s stored pictures: {"messages[n]": why}."""
    found = _bases_per_message(messages)
    wanted = {base for bases in found.values() for base in bases if base}
    present = set(db.session.scalars(select(MediaUpload.name).where(
        MediaUpload.shop_id == shop.id, MediaUpload.name.in_(wanted)))) if wanted else set()
    return _not_yours(found, {base for base in present if _files_exist(base)})


def take(shop, messages) -> dict:
    """Mark ``shop``'s pictures in ``messages`` used now, in the caller's transaction (the template's save),
    and return the problems of any that is gone (as ``problems_in``). The cleanup deletes a picture only if
    it was not touched since it looked, so once this has written, the picture stays."""
    found = _bases_per_message(messages)
    wanted = {base for bases in found.values() for base in bases if base}
    if not wanted and not found:
        return {}
    present = set()
    if wanted:
        db.session.execute(update(MediaUpload).where(MediaUpload.shop_id == shop.id, MediaUpload.name.in_(wanted))
                           .values(touched_at=utcnow(), used=True).execution_options(synchronize_session=False))
        present = set(db.session.scalars(select(MediaUpload.name).where(
            MediaUpload.shop_id == shop.id, MediaUpload.name.in_(wanted))))
    return _not_yours(found, present)


def path_of(name: str) -> Path | None:
    """The file to serve for ``name``, or None (a name of another shape, a picture with no row, no file)."""
    found = NAME.match(name or "")
    if not found:
        return None
    if db.session.scalar(select(MediaUpload.id).where(MediaUpload.name == found.group(1))) is None:
        return None
    path = folder() / name
    return path if path.is_file() else None


# ---- the cleanup ----------------------------------------------------------------------------------------

def names_in(messages) -> set:
    """The base names of our pictures anywhere in ``messages`` (whatever PUBLIC_BASE_URL was when written)."""
    return set(IN_TEXT.findall(json.dumps(messages))) if messages else set()


def in_use() -> set:
    """Every picture something may still send: in a template, in a chunk not yet sent, in a message whose text
    is written and not yet sent."""
    used = set()
    queries = [select(MessageTemplate.messages),
               select(OutgoingBatch.messages).where(OutgoingBatch.status.in_((BatchStatus.QUEUED,
                                                                              BatchStatus.SENDING))),
               select(Outbox.messages).where(Outbox.messages.is_not(None),
                                             Outbox.status.in_((OutboxStatus.QUEUED, OutboxStatus.SENDING)))]
    for query in queries:
        for messages in db.session.scalars(query.execution_options(yield_per=500)):
            used |= names_in(messages)
    return used


def _expired(now):
    return or_(and_(MediaUpload.used.is_(False), MediaUpload.touched_at < now - KEEP_UNUSED),
               MediaUpload.touched_at < now - KEEP_AFTER_USE)


def clean_up(now=None) -> dict:
    """Delete the pictures nothing uses any more (their rows, then their files) and files that have no row;
    returns ``{"pictures", "files"}``, how many went. Safe to run at any time, by any number of consumers."""
    now = now or utcnow()
    used = sorted(in_use())
    # Each read ends before the writes that follow it (SQLite refuses a write in a transaction whose reads
    # another writer has overtaken): the writes carry their own conditions instead.
    db.session.rollback()
    for start in range(0, len(used), 500):  # in use now: kept at least as long again as from now
        db.session.execute(update(MediaUpload).where(MediaUpload.name.in_(used[start:start + 500]))
                           .values(touched_at=now, used=True).execution_options(synchronize_session=False))
        db.session.commit()
    pictures, last = 0, 0
    while True:
        rows = db.session.execute(select(MediaUpload.id, MediaUpload.name)
                                  .where(MediaUpload.id > last, _expired(now))
                                  .order_by(MediaUpload.id).limit(BATCH)).all()
        db.session.rollback()
        if not rows:
            break
        last, gone = rows[-1].id, []
        for row in rows:
            # The condition again, in the delete: a template saved since the look above has touched it (on
            # PostgreSQL the delete waits for that save's commit, then sees its touch).
            if db.session.execute(delete(MediaUpload).where(MediaUpload.id == row.id, _expired(now))
                                  .execution_options(synchronize_session=False)).rowcount:
                gone.append(row.name)
        db.session.commit()
        for base in gone:  # after the commit: a crash here leaves files without a row, which go below later
            for suffix in (".jpg", "-preview.jpg"):
                (folder() / f"{base}{suffix}").unlink(missing_ok=True)
        pictures += len(gone)
    counts = {"pictures": pictures, "files": _without_rows(now)}
    if any(counts.values()):
        log.info("templates' pictures nothing uses: %(pictures)d deleted, and %(files)d files without a row",
                 counts)
    return counts


def _without_rows(now) -> int:
    """Delete files over a day old that have no row (or are a write's leftover ``.part``)."""
    cutoff = (now - KEEP_UNUSED).replace(tzinfo=timezone.utc).timestamp()
    candidates = {}
    with os.scandir(folder()) as entries:
        for entry in entries:
            found = FILE.match(entry.name)
            if found and entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                candidates.setdefault(found.group(1), []).append((entry.path, bool(found.group(2))))
    removed, bases = 0, sorted(candidates)
    for start in range(0, len(bases), 500):
        chunk = bases[start:start + 500]
        known = set(db.session.scalars(select(MediaUpload.name).where(MediaUpload.name.in_(chunk))))
        for base in chunk:
            for path, partial in candidates[base]:
                if partial or base not in known:
                    Path(path).unlink(missing_ok=True)
                    removed += 1
    db.session.rollback()  # only read: end the transaction
    return removed
