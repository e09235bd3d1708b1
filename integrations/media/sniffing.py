"""What a file is, from its first bytes alone: never its name or the Content-Type a client declared.

A small signature table of our own rather than libmagic (a C library and a Debian package) or a
general-purpose sniffer: Parley accepts a short list of types, must refuse executables and scripts
outright, and needs to tell office documents (ZIP or OLE2 containers) and plain text apart. Forty
lines that say exactly that are easier to review than a database of thousands of signatures.
"""

from __future__ import annotations

from parley.models import AttachmentKind
from parley.services.attachments import SniffedType

IMAGE, VIDEO, DOCUMENT = AttachmentKind.IMAGE, AttachmentKind.VIDEO, AttachmentKind.DOCUMENT

# (prefix, content type, kind, extension, label); kind None refuses the upload.
_PREFIXES: tuple[tuple[bytes, str, AttachmentKind | None, str, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg", IMAGE, ".jpg", "JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "image/png", IMAGE, ".png", "PNG image"),
    (b"GIF87a", "image/gif", IMAGE, ".gif", "GIF image"),
    (b"GIF89a", "image/gif", IMAGE, ".gif", "GIF image"),
    (b"%PDF-", "application/pdf", DOCUMENT, ".pdf", "PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/vnd.ms-office", DOCUMENT, ".doc", "Office document"),
    (b"{\\rtf", "application/rtf", DOCUMENT, ".rtf", "RTF document"),
    (b"\x1f\x8b", "application/gzip", DOCUMENT, ".gz", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", DOCUMENT, ".7z", "7-Zip archive"),
    (b"Rar!\x1a\x07", "application/vnd.rar", DOCUMENT, ".rar", "RAR archive"),
    (b"BZh", "application/x-bzip2", DOCUMENT, ".bz2", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "application/x-xz", DOCUMENT, ".xz", "xz archive"),
    # Refused: programs a click could run.
    (b"\x7fELF", "application/x-executable", None, "", "ELF executable"),
    (b"MZ", "application/x-msdownload", None, "", "Windows executable"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary", None, "", "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary", None, "", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary", None, "", "Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary", None, "", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "application/java-vm", None, "", "Java class or Mach-O executable"),
    (b"\x00asm", "application/wasm", None, "", "WebAssembly module"),
    (b"#!", "text/x-script", None, "", "script"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "application/x-ms-shortcut", None, "", "Windows shortcut"),
)

_ZIP = b"PK\x03\x04"
_OFFICE_PARTS = (
    (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx", "Word document"),
    (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx", "Excel workbook"),
    (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation", ".pptx", "PowerPoint deck"),
)
# OpenDocument names its type in a "mimetype" entry: only these are believed, each with its
# extension. Whatever else a file writes there is just bytes (NUL, CR/LF, ...), never a content
# type Parley would store and later put in a header.
_OPENDOCUMENT_TYPES = {
    b"application/vnd.oasis.opendocument." + subtype.encode(): (extension, label)
    for subtype, extension, label in (
        ("text", ".odt", "OpenDocument text"),
        ("text-template", ".ott", "OpenDocument text template"),
        ("text-master", ".odm", "OpenDocument master document"),
        ("text-web", ".oth", "OpenDocument web page"),
        ("spreadsheet", ".ods", "OpenDocument spreadsheet"),
        ("spreadsheet-template", ".ots", "OpenDocument spreadsheet template"),
        ("presentation", ".odp", "OpenDocument presentation"),
        ("presentation-template", ".otp", "OpenDocument presentation template"),
        ("graphics", ".odg", "OpenDocument drawing"),
        ("graphics-template", ".otg", "OpenDocument drawing template"),
        ("chart", ".odc", "OpenDocument chart"),
        ("formula", ".odf", "OpenDocument formula"),
        ("database", ".odb", "OpenDocument database"),
        ("image", ".odi", "OpenDocument image"),
    )
}
# ISO base media brands (bytes 8-12 after "ftyp").
_QUICKTIME_BRANDS = {b"qt  "}
_MP4_BRANDS = {
    b"isom",
    b"iso2",
    b"iso4",
    b"iso5",
    b"iso6",
    b"mp41",
    b"mp42",
    b"avc1",
    b"dash",
    b"M4V ",
    b"MSNV",
    b"3gp4",
    b"3gp5",
}
_BINARY_CONTROL = set(range(0, 9)) | {11} | set(range(14, 32)) | {127}


def sniff(head: bytes) -> SniffedType:
    """Classify a file by its first bytes (a few KiB are plenty)."""
    for prefix, content_type, kind, extension, label in _PREFIXES:
        if head.startswith(prefix):
            return SniffedType(content_type, kind, extension, label)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return SniffedType("image/webp", IMAGE, ".webp", "WebP image")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _QUICKTIME_BRANDS:
            return SniffedType("video/quicktime", VIDEO, ".mov", "QuickTime video")
        if brand in _MP4_BRANDS:
            return SniffedType("video/mp4", VIDEO, ".mp4", "MP4 video")
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]:
        return SniffedType("video/webm", VIDEO, ".webm", "WebM video")
    if head.startswith(_ZIP):
        return _zip_kind(head)
    if _is_text(head):
        return SniffedType("text/plain", DOCUMENT, ".txt", "text")
    return SniffedType("application/octet-stream", DOCUMENT, ".bin", "binary file")


def _zip_kind(head: bytes) -> SniffedType:
    # OpenDocument stores an uncompressed "mimetype" entry first; OOXML names its parts by folder.
    if head[30:38] == b"mimetype":
        declared = head[38:120].split(b"PK", 1)[0]
        if declared in _OPENDOCUMENT_TYPES:
            extension, label = _OPENDOCUMENT_TYPES[declared]
            return SniffedType(declared.decode("ascii"), DOCUMENT, extension, label)
    for marker, content_type, extension, label in _OFFICE_PARTS:
        if marker in head and b"[Content_Types].xml" in head:
            return SniffedType(content_type, DOCUMENT, extension, label)
    return SniffedType("application/zip", DOCUMENT, ".zip", "ZIP archive")


def _is_text(head: bytes) -> bool:
    """UTF-8 without control characters (a truncated multi-byte character at the end is allowed)."""
    if not head or any(byte in _BINARY_CONTROL for byte in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True
