"""Where images come from: a file, a folder, a video file, or a camera index."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    source: str  # what the output line names: a path, or "video.mp4#frame=12"
    image: Path | np.ndarray  # a path for image files; a BGR uint8 array for video frames
    bgr: bool = False


def source_kind(source: str) -> str:
    """'camera', 'folder', 'video' or 'image'."""
    if source.isdigit():
        return "camera"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_frames(source: str, every: int = 1) -> Iterator[Frame]:
    """Frames of a source; for videos and cameras only every `every`-th frame is yielded."""
    kind = source_kind(source)
    if kind == "image":
        yield Frame(source, Path(source))
    elif kind == "folder":
        files = image_files(Path(source))
        if not files:
            raise SourceError(
                f"{source}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        for path in files:
            yield Frame(str(path), path)
    else:
        yield from _capture_frames(source, kind, every)


def _capture_frames(source: str, kind: str, every: int) -> Iterator[Frame]:
    try:
        import cv2
    except ImportError:
        raise SourceError(
            "video and camera sources need OpenCV: pip install 'edge-caption[edge]'"
        ) from None
    if kind == "video" and not os.path.isfile(source):
        raise SourceError(f"{source}: video file not found")
    capture = cv2.VideoCapture(int(source) if kind == "camera" else source)
    try:
        if not capture.isOpened():
            what = f"camera {source}" if kind == "camera" else source
            raise SourceError(
                f"{what}: cannot open it with OpenCV (is it connected / a readable video?)"
            )
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                if index == 0:
                    raise SourceError(f"{source}: opened, but no frame could be read")
                return
            if index % every == 0:
                name = (
                    f"camera{source}#frame={index}"
                    if kind == "camera"
                    else f"{source}#frame={index}"
                )
                yield Frame(name, frame, bgr=True)
            index += 1
    finally:
        capture.release()
