"""Where images come from: a file, a folder, a video file, or a camera index.

Video files and cameras are read frame by frame in edge_runtime.stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    source: str  # what the output line names
    image: Path


def is_camera(source: str) -> bool:
    """A camera index ("0", "1", ...) rather than a path: the one rule every module uses."""
    return source.isdigit()


def source_kind(source: str) -> str:
    """'camera', 'folder', 'video' or 'image'."""
    if is_camera(source):
        return "camera"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_frames(source: str) -> Iterator[Frame]:
    """The images of an image file or a folder, in name order.

    Video files and cameras go through edge_runtime.stream.caption_video, which knows
    about frame rates, skipping and dropped frames.
    """
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
        raise ValueError(f"{source} is a {kind}; use edge_runtime.stream.caption_video")
