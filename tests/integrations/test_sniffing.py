"""Types come from content alone: the signature table, and the names files are stored under."""

from __future__ import annotations

import io
import random
import re
import zipfile

import pytest
from PIL import Image

from integrations.media.sniffing import sniff
from parley.services.uploads import sanitize_name
from tests import media_samples


def _zip(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, "WEBP")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "content_type", "kind"),
    [
        (media_samples.jpeg_with_gps(64, 48), "image/jpeg", "image"),
        (media_samples.png(), "image/png", "image"),
        (media_samples.animated_gif(), "image/gif", "image"),
        (_webp(), "image/webp", "image"),
        (media_samples.mp4(), "video/mp4", "video"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "video/quicktime", "video"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm", "video"),
        (media_samples.pdf(), "application/pdf", "document"),
        (
            _zip(["[Content_Types].xml", "word/document.xml"]),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "document",
        ),
        (
            _zip(["[Content_Types].xml", "xl/workbook.xml"]),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "document",
        ),
        (_zip(["notes.txt"]), "application/zip", "document"),
        ("Grüße, plain text\n".encode(), "text/plain", "document"),
        (bytes(range(256)), "application/octet-stream", "document"),
    ],
)
def test_accepted_types_are_known_by_their_bytes(data: bytes, content_type: str, kind: str) -> None:
    sniffed = sniff(data[:8192])
    assert (sniffed.content_type, sniffed.kind) == (content_type, kind)


@pytest.mark.parametrize(
    "data",
    [
        media_samples.elf_executable(),
        media_samples.windows_executable(),
        b"#!/usr/bin/env python\nprint(1)\n",
        b"\xcf\xfa\xed\xfe\x07\x00\x00\x01",
        b"\x00asm\x01\x00\x00\x00",
    ],
)
def test_executables_and_scripts_are_refused(data: bytes) -> None:
    assert sniff(data).kind is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("../../etc/passwd", "passwd"),
        ("a\x00b\x1f\u202ec.txt", "abc.txt"),
        ("  spaced\tout  name.pdf ", "spaced out name.pdf"),
        ("...", "file.png"),
        ("", "file.png"),
        (None, "file.png"),
    ],
)
def test_names_are_sanitised(raw: str | None, expected: str) -> None:
    assert sanitize_name(raw, ".png") == expected


def test_long_names_keep_their_extension() -> None:
    name = sanitize_name("é" * 300 + ".docx", ".bin")
    assert len(name) == 200 and name.endswith(".docx")


def _opendocument(declared: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), declared, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", "<office:document-content/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("declared", "content_type", "extension"),
    [
        (b"application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.text", ".odt"),
        (b"application/vnd.oasis.opendocument.spreadsheet", "application/vnd.oasis.opendocument.spreadsheet", ".ods"),
        (b"application/vnd.oasis.opendocument.presentation", "application/vnd.oasis.opendocument.presentation", ".odp"),
        (b"application/vnd.oasis.opendocument.text\x00evil", "application/zip", ".zip"),
        (b"application/vnd.oasis.opendocument.text\r\nSet-Cookie: a=b", "application/zip", ".zip"),
        (b"application/vnd.oasis.opendocument.\xff\xfe", "application/zip", ".zip"),
        (b"application/vnd.oasis.opendocument.", "application/zip", ".zip"),
        (b"application/vnd.oasis.opendocument.text " + b"x" * 60, "application/zip", ".zip"),
    ],
)
def test_an_opendocument_type_comes_from_a_known_list_never_from_the_file(
    declared: bytes, content_type: str, extension: str
) -> None:
    sniffed = sniff(_opendocument(declared)[:8192])
    assert (sniffed.content_type, sniffed.extension, sniffed.kind) == (content_type, extension, "document")


@pytest.mark.parametrize("seed", range(50))
def test_every_sniffed_type_is_a_plain_token(seed: int) -> None:
    """Whatever the bytes, the type is printable ASCII `type/subtype`: safe in a header."""
    rng = random.Random(seed)
    prefixes = [
        b"PK\x03\x04" + bytes(26) + b"mimetypeapplication/vnd.oasis.opendocument.",
        b"PK\x03\x04" + bytes(26) + b"mimetype",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"\x00\x00\x00\x14ftyp",
        b"",
    ]
    head = rng.choice(prefixes) + bytes(rng.randrange(256) for _ in range(rng.randrange(100)))
    assert re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", sniff(head).content_type), head
