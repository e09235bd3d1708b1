"""Videos with PyAV (its wheels bundle FFmpeg): probe duration, size and codec, and make thumbnails
from a poster frame. The video itself is served as uploaded."""

from __future__ import annotations

from pathlib import Path

import av

from integrations.media.renditions import thumbnails
from parley.services.attachment_processing import MediaFacts, MediaRejected


def process_video(path: Path, max_pixels: int) -> MediaFacts:
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaRejected("no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                raise MediaRejected("the video stream has no frame size")
            if width * height > max_pixels:
                raise MediaRejected(f"video frames of {width}x{height} pixels are more than the {max_pixels} allowed")
            duration = _duration(container, stream)
            codec = stream.codec_context.name
            poster = next((frame.to_image() for frame in container.decode(stream)), None)
            if poster is None:
                raise MediaRejected("no decodable video frame")
    except MediaRejected:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaRejected(f"corrupt or unreadable video: {exc}") from exc
    return MediaFacts(
        width=width, height=height, duration_seconds=duration, codec=codec,
        thumbnails=thumbnails(poster, keep_alpha=False),
    )


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    if container.duration is not None:
        return round(container.duration / av.time_base, 3)
    return None
