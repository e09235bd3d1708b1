"""Encoding Pillow images as the renditions Parley serves: cleaned copies and thumbnails."""

from __future__ import annotations

import io

from PIL import Image

from parley.services.attachment_processing import Rendition

THUMBNAIL_SIZES = (320, 1280)
JPEG_QUALITY = 85
CLEAN_COPY_QUALITY = 92  # a photo re-encoded to be served in its place: close to the original
_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Pillow's bilinear filter widens with the scale factor, so downscaling is antialiased; it costs
# about half of Lanczos, and at thumbnail sizes the difference does not show.
RESAMPLING = Image.Resampling.BILINEAR


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def encode(image: Image.Image, *, keep_alpha: bool, icc_profile: bytes | None = None) -> Rendition:
    """JPEG, or PNG when transparency must survive. Nothing of the source's metadata is written
    but its colour profile (which only keeps colours right)."""
    buffer = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    if keep_alpha:
        image = image.convert("RGBA") if image.mode != "RGBA" else image
        image.save(buffer, "PNG", optimize=False, **extra)
        content_type = "image/png"
    else:
        image = image.convert("RGB") if image.mode != "RGB" else image
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False, **extra)
        content_type = "image/jpeg"
    return Rendition(buffer.getvalue(), content_type, image.width, image.height)


def clean_copy(image: Image.Image, image_format: str, *, icc_profile: bytes | None = None) -> Rendition:
    """The image re-encoded in its own format (a PNG stays a lossless PNG, with its transparency),
    with no metadata but its colour profile."""
    buffer = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    if image_format == "PNG":
        image.save(buffer, "PNG", optimize=False, **extra)
    elif image_format == "WEBP":
        image.save(buffer, "WEBP", quality=CLEAN_COPY_QUALITY, **extra)
    else:
        image = image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
        image.save(buffer, "JPEG", quality=CLEAN_COPY_QUALITY, optimize=False, **extra)
        image_format = "JPEG"
    return Rendition(buffer.getvalue(), _CONTENT_TYPES[image_format], image.width, image.height)


def thumbnails(image: Image.Image, *, keep_alpha: bool, icc_profile: bytes | None = None) -> dict[int, Rendition]:
    """One thumbnail per size in THUMBNAIL_SIZES, the long side at most that size (never enlarged)."""
    made: dict[int, Rendition] = {}
    source = image
    for size in sorted(THUMBNAIL_SIZES, reverse=True):  # each smaller one from the previous: cheaper
        source = source.copy() if source is image else source
        source.thumbnail((size, size), RESAMPLING, reducing_gap=2.0)
        made[size] = encode(source, keep_alpha=keep_alpha, icc_profile=icc_profile)
    return made
