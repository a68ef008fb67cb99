"""Start-up image verification without decoding pixels.

A run that does not cache its images decodes every image in every epoch anyway, so decoding
them all once more at start-up only to see whether they open doubles the decode work of the
first epoch and delays the start. `check_image` instead checks the file's structure:

* PNG: the signature, then every chunk's length and CRC-32 (which covers the compressed pixel
  data), IHDR first and IEND last: a truncated or bit-flipped file fails;
* JPEG: the start-of-image marker first and an end-of-image marker at the end (a truncated
  file fails);
* any other format, or a PNG/JPEG that fails these checks: a full decode (`imread`), so a file
  OpenCV can read is never refused, and one it cannot read fails with imread's error.

A PNG whose CRCs are right but whose compressed stream is wrong (written broken, not damaged
later) passes here and fails when it is first loaded, with the same error line.
"""
from __future__ import annotations

import os
import struct
import zlib

from aicore.data.io import imread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_ok(buf: bytes) -> bool:
    if not buf.startswith(PNG_SIGNATURE):
        return False
    pos, first, n = len(PNG_SIGNATURE), True, len(buf)
    while pos + 12 <= n:
        length, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > n or (first and kind != b"IHDR"):
            return False
        crc = struct.unpack(">I", buf[end:end + 4])[0]
        if zlib.crc32(buf[pos + 4:end]) & 0xFFFFFFFF != crc:
            return False
        if kind == b"IEND":
            return True
        pos, first = end + 4, False
    return False


def jpeg_ok(buf: bytes) -> bool:
    return buf.startswith(b"\xff\xd8\xff") and b"\xff\xd9" in buf[-32:]


def check_image(path: str | os.PathLike, in_channels: int = 3) -> None:
    """Raise DataError (imread's message) if `path` is not a readable image; see module doc."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError:
        buf = b""
    suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
    if (suffix == "png" and png_ok(buf)) or (suffix in ("jpg", "jpeg") and jpeg_ok(buf)):
        return
    imread(path, in_channels)  # other formats, or a failed check: decode; raises if unreadable

