"""Where images come from: a file, a folder, a video file, or a camera index.

Video files and cameras are read frame by frame in edge_runtime.stream."""

from __future__ import annotations

import re
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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(name: str, controls: bool = True) -> str:
    """A file name as valid Unicode on one line, for output that other tools read.

    Bytes that are not UTF-8 (a Latin-1 name: Python holds them as lone surrogates, which
    a strict UTF-8 stdout refuses to write) become \\xNN; with `controls`, so do control
    characters (a newline or tab in a name would break the one-line-per-image output;
    \\n, \\t and \\r by name). JSON output escapes control characters itself.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the name's own bytes
    except UnicodeEncodeError:  # a surrogate no file system produced (an API caller's str)
        raw = name.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    if controls:
        text = _CONTROL.sub(lambda m: _CONTROL_NAMES.get(m[0], f"\\x{ord(m[0]):02x}"), text)
    return text


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
    """The folder's image files by name, links included even when their target is missing
    or loops: such a link is then named as an input that could not be read, never dropped
    from the batch without a word."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
    )


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
