"""Real media files, made by the tests themselves (Pillow and PyAV): nothing is checked in."""

from __future__ import annotations

import io
import struct
import zlib

import av
from PIL import Image
from PIL.ExifTags import IFD, Base

GPS_LATITUDE = 2  # GPSInfo tag numbers
GPS_LONGITUDE = 4


def jpeg_with_gps(width: int = 1600, height: int = 1200, *, orientation: int = 6) -> bytes:
    """A JPEG carrying EXIF: GPS coordinates, a camera model and an orientation (6: rotate 90)."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, width // 2, height // 4))  # something for orientation to move
    exif = Image.Exif()
    exif[Base.Model] = "Parley Test Camera"
    exif[Base.Orientation] = orientation
    exif[IFD.GPSInfo] = {1: "N", GPS_LATITUDE: (51.0, 30.0, 12.5), 3: "W", GPS_LONGITUDE: (0.0, 7.0, 40.1)}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=90)
    return buffer.getvalue()


def webp_with_gps(width: int = 600, height: int = 400) -> bytes:
    exif = Image.Exif()
    exif[IFD.GPSInfo] = {1: "N", GPS_LATITUDE: (48.0, 51.0, 0.0), 3: "E", GPS_LONGITUDE: (2.0, 21.0, 0.0)}
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 200)).save(buffer, "WEBP", exif=exif, quality=90)
    return buffer.getvalue()


def gps_of(data: bytes) -> dict[int, object]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.getexif().get_ifd(IFD.GPSInfo))


def png(width: int = 640, height: int = 480, *, alpha: bool = False) -> bytes:
    image = Image.new("RGBA" if alpha else "RGB", (width, height), (10, 120, 10, 128) if alpha else (10, 120, 10))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def animated_gif(width: int = 200, height: int = 100, frames: int = 4) -> bytes:
    images = []
    for n in range(frames):
        frame = Image.new("RGB", (width, height), (255, 255, 255))
        frame.paste((200, 0, 0), (n * width // frames, 0, (n + 1) * width // frames, height))  # a moving bar
        images.append(frame.convert("P"))
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


VIDEO_LOCATION = "+51.5000-000.1200/"  # ISO 6709, as phones record where a video was shot


def mp4(width: int = 320, height: int = 240, frames: int = 10, rate: int = 10) -> bytes:
    """A one-second H.264 MP4 (PyAV's wheels bundle the encoder) that says where it was shot."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        container.metadata["location"] = VIDEO_LOCATION
        container.metadata["title"] = "Parley test clip"
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for n in range(frames):
            frame = av.VideoFrame.from_image(Image.new("RGB", (width, height), (n * 20, 80, 160)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def pdf() -> bytes:
    """A minimal one-page PDF, written by hand."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def elf_executable() -> bytes:
    """The start of a 64-bit Linux executable (a valid ELF header), to be uploaded as "photo.jpg"."""
    header = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + struct.pack("<HHI", 2, 0x3E, 1) + b"\x00" * 40
    return header + b"\x90" * 4096


def windows_executable() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 52 + b"PE\x00\x00" + b"\x00" * 2000


def png_bomb(side: int = 10_000) -> bytes:
    """A PNG that declares side x side pixels (100 MP for the default) yet is a few hundred KiB:
    one compressed stream of zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one grey byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = jpeg_with_gps(800, 600, orientation=1)
    return data[: len(data) // 3]


def video_facts(data: bytes) -> tuple[dict[str, str], int]:
    """A video's container metadata and how many frames decode from it."""
    with av.open(io.BytesIO(data)) as container:
        return dict(container.metadata), sum(1 for _ in container.decode(video=0))
