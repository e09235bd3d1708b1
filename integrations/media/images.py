"""Images with Pillow: verify, apply orientation, strip metadata, make thumbnails, and refuse
decompression bombs and corrupt files with a reason instead of crashing the worker."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from integrations.media.jpeg_metadata import NotAJpeg, strip_jpeg_metadata
from integrations.media.renditions import THUMBNAIL_SIZES, clean_copy, has_alpha, thumbnails
from parley.services.attachment_processing import MediaFacts, MediaRejected, Rendition

ORIENTATION = 0x0112

# Formats an upload sniffed as an image may decode as; anything else Pillow knows is refused.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")


def process_image(path: Path, max_pixels: int) -> MediaFacts:
    # Pillow's own guard, in step with ours (a worker process only ever uses one limit).
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; our limit is a hard one.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=ALLOWED_FORMATS) as image:
                frames = getattr(image, "n_frames", 1)
                # Checked from the header, before a single pixel is decoded.
                if image.width * image.height * max(frames, 1) > max_pixels:
                    raise MediaRejected(
                        f"decompression bomb: {image.width}x{image.height} pixels x {frames} frames "
                        f"is more than the {max_pixels} allowed"
                    )
                return _render(path, image, animated=frames > 1)
    except MediaRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaRejected(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise MediaRejected("not a readable image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as these.
        raise MediaRejected(f"corrupt or truncated image: {exc}") from exc


def _render(path: Path, image: Image.Image, *, animated: bool) -> MediaFacts:
    icc = image.info.get("icc_profile")
    if animated:
        # An animated GIF or WebP is served as uploaded (GIF carries no EXIF or GPS block);
        # its first frame makes the thumbnails.
        image.seek(0)
        first = image.convert("RGBA")
        first.load()
        return MediaFacts(width=image.width, height=image.height, thumbnails=thumbnails(first, keep_alpha=True))
    if image.format == "JPEG" and image.getexif().get(ORIENTATION, 1) == 1:
        return _upright_jpeg(path, image, icc)
    image_format = image.format or "JPEG"
    image.load()  # decodes everything: a truncated file fails here
    upright = ImageOps.exif_transpose(image)  # rotates per the EXIF orientation, and drops that tag
    alpha = has_alpha(upright)
    cleaned = clean_copy(upright, image_format, icc_profile=icc)
    return MediaFacts(
        width=upright.width,
        height=upright.height,
        content=cleaned,
        thumbnails=thumbnails(upright, keep_alpha=alpha, icc_profile=icc),
    )


def _upright_jpeg(path: Path, image: Image.Image, icc: bytes | None) -> MediaFacts:
    """A JPEG already upright needs no re-encoding: its metadata segments are cut out losslessly,
    and only the thumbnails need pixels, which libjpeg can decode at a reduced scale."""
    width, height = image.size
    try:
        cleaned = strip_jpeg_metadata(path.read_bytes())
    except NotAJpeg as exc:
        raise MediaRejected(f"corrupt or truncated image: {exc}") from exc
    largest = max(THUMBNAIL_SIZES)
    scale = largest / max(width, height)
    if scale < 1:
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    image.load()  # a truncated file fails here
    return MediaFacts(
        width=width,
        height=height,
        content=Rendition(cleaned, "image/jpeg", width, height),
        thumbnails=thumbnails(image, keep_alpha=False, icc_profile=icc),
    )
