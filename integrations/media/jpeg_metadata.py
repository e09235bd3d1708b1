"""Removing a JPEG's metadata without re-encoding it: the pixels stay bit for bit, and it costs
a copy instead of a decode and an encode (the bulk of processing an upright photo).

Kept: what decoding needs, JFIF (APP0), the colour profile (APP2 ICC) and Adobe's colour transform
flag (APP14). Dropped: EXIF and XMP (APP1, where GPS coordinates live), IPTC/Photoshop (APP13),
every other application segment, and comments.
"""

from __future__ import annotations

_KEEP_APP = {0xE0, 0xE2, 0xEE}
_START_OF_SCAN = 0xDA
_COMMENT = 0xFE
# Markers that stand alone, with no length field.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class NotAJpeg(ValueError):
    pass


def strip_jpeg_metadata(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise NotAJpeg("no start-of-image marker")
    out = bytearray(b"\xff\xd8")
    position = 2
    while position < len(data):
        if data[position] != 0xFF:
            raise NotAJpeg(f"expected a marker at byte {position}")
        marker = data[position + 1] if position + 1 < len(data) else None
        if marker is None:
            raise NotAJpeg("truncated marker")
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            out += data[position : position + 2]
            position += 2
            continue
        if position + 4 > len(data):
            raise NotAJpeg("truncated segment")
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if length < 2 or end > len(data):
            raise NotAJpeg("segment runs past the end of the file")
        if marker == _START_OF_SCAN:
            out += data[position:]  # the entropy-coded data and everything after it, as it is
            return bytes(out)
        is_app = 0xE0 <= marker <= 0xEF
        if not (marker == _COMMENT or (is_app and marker not in _KEEP_APP)):
            out += data[position:end]
        position = end
    raise NotAJpeg("no image data")
