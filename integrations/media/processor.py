"""The MediaProcessor workers use: Pillow for images, PyAV for videos, with the pixel limit set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from integrations.media.images import process_image
from integrations.media.videos import process_video
from parley.services.attachment_processing import MediaFacts


@dataclass(frozen=True)
class PillowAvProcessor:
    max_pixels: int

    def image(self, path: Path) -> MediaFacts:
        return process_image(path, self.max_pixels)

    def video(self, path: Path, content_type: str, workdir: Path) -> MediaFacts:
        return process_video(path, content_type, workdir, self.max_pixels)
