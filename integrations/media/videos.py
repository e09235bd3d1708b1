"""Videos with PyAV (its wheels bundle FFmpeg): probe duration, size and codec, make thumbnails from
a poster frame, and rewrite the container without its metadata.

Phones write where a video was shot into its container (QuickTime's location tags, MP4's udta), so
the served copy is remuxed: the same audio and video packets, not re-encoded, in a fresh container
with no metadata and without the data tracks (timecode, location) that can carry it. An MP4 also
gets its index at the front (faststart), so browsers start playing before the whole file arrives.
"""

from __future__ import annotations

from pathlib import Path

import av

from integrations.media.renditions import thumbnails
from parley.services.attachment_processing import MediaFacts, MediaRejected, Rendition

_OUTPUT_FORMATS = {
    "video/mp4": ("mp4", {"movflags": "+faststart"}),
    "video/quicktime": ("mov", {"movflags": "+faststart"}),
    "video/webm": ("webm", {}),
}


def process_video(path: Path, content_type: str, workdir: Path, max_pixels: int) -> MediaFacts:
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
        cleaned = _without_metadata(path, content_type, workdir / "content")
    except MediaRejected:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaRejected(f"corrupt or unreadable video: {exc}") from exc
    return MediaFacts(
        width=width,
        height=height,
        duration_seconds=duration,
        codec=codec,
        content=Rendition(b"", content_type, width, height, path=cleaned),
        thumbnails=thumbnails(poster, keep_alpha=False),
    )


def _without_metadata(source: Path, content_type: str, target: Path) -> Path:
    output_format, options = _OUTPUT_FORMATS[content_type]
    with (
        av.open(str(source), mode="r", metadata_errors="ignore") as reader,
        av.open(str(target), mode="w", format=output_format, options=options) as writer,
    ):
        kept = [s for s in reader.streams if s.type in ("video", "audio")]
        copies = {s.index: writer.add_stream_from_template(s) for s in kept}
        for copy in copies.values():
            copy.metadata.clear()  # handler names and the like: nothing of the source's
        for packet in reader.demux(*kept):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = copies[packet.stream.index]
            writer.mux(packet)
    return target


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    if container.duration is not None:
        return round(container.duration / av.time_base, 3)
    return None
