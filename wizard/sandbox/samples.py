"""Small generated content for what sandbox users send: real (tiny) files of each kind, made without libraries.

LINE hands out image, video, audio and file content at ``GET /v2/bot/message/{messageId}/content``; the sandbox
serves these bytes there with the Content-Type below. Each is a valid file of its kind, a few hundred bytes at
most, so whatever the app does with content (store it, show it, check its type) has something real to work on.
"""
import mimetypes
import struct
import zlib

CONTENT_TYPES = {"image": "image/png", "video": "video/mp4", "audio": "audio/x-m4a"}
DEFAULT_FILE_NAME = "訂購單.pdf"


def png(width: int = 2, height: int = 2, rgb=(6, 122, 58)) -> bytes:
    """A solid-colour PNG (8-bit RGB)."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4(brand: bytes = b"mp42") -> bytes:
    """An ISO base media file: an ``ftyp`` box and an empty ``mdat`` (what a file reader checks first)."""
    return _box(b"ftyp", brand + b"\x00\x00\x00\x00" + brand + b"isom") + _box(b"mdat", b"")


def m4a() -> bytes:
    return mp4(b"M4A ")


def pdf() -> bytes:
    return (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


def content_for(message_type: str, file_name: str | None = None, size: int | None = None) -> tuple[bytes, str]:
    """(bytes, Content-Type) for a message of ``message_type``; a file of ``size`` bytes when asked."""
    if message_type == "image":
        return png(), CONTENT_TYPES["image"]
    if message_type == "video":
        return mp4(), CONTENT_TYPES["video"]
    if message_type == "audio":
        return m4a(), CONTENT_TYPES["audio"]
    name = file_name or DEFAULT_FILE_NAME
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    data = pdf() if content_type == "application/pdf" else f"{name}\n".encode()
    if size is not None:
        data = (data * (size // max(len(data), 1) + 1))[:size]
    return data, content_type
