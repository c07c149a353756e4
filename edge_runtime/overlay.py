"""Drawing the caption, frame rate and per-stage times on a frame, and writing annotated
video atomically."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from .capture import import_cv2
from .errors import SourceError

# Frames narrower than this are scaled up before drawing: 8-pixel text on a 96-pixel
# synthetic frame would be unreadable.
MIN_OVERLAY_WIDTH = 480


def overlay_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the annotated frame for a source frame of that size."""
    scale = max(1, -(-MIN_OVERLAY_WIDTH // width))  # integer upscale, ceil
    return width * scale, height * scale


def draw_overlay(
    frame: np.ndarray,
    caption: str,
    fps: float | None,
    timings_ms: dict[str, float] | None,
    status: str = "",
) -> np.ndarray:
    """A copy of a BGR frame with the caption at the bottom and speed figures at the top."""
    cv2 = import_cv2()
    height, width = frame.shape[:2]
    size = overlay_size(width, height)
    canvas = (
        cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
        if size != (width, height)
        else frame.copy()
    )
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    line_height = 20

    def band(lines: list[str], top: int) -> None:
        if not lines:
            return
        bottom = top + line_height * len(lines) + 6
        # Darken behind the text, so it reads on any image.
        canvas[top:bottom] = (canvas[top:bottom] * 0.35).astype(np.uint8)
        for i, line in enumerate(lines):
            y = top + line_height * (i + 1) - 4
            cv2.putText(canvas, line, (8, y), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)

    header = []
    if fps is not None:
        header.append(f"{fps:5.1f} captions/s" + (f"  {status}" if status else ""))
    if timings_ms:
        stages = ("preprocess", "encoder", "decoder")
        header.append(
            "  ".join(f"{s[:3]} {timings_ms[s]:.1f}" for s in stages if s in timings_ms) + " ms"
        )
    band(header, 0)
    chars_per_line = max(20, size[0] // 10)
    lines = textwrap.wrap(caption, chars_per_line)[:3] if caption else []
    band(lines, size[1] - line_height * len(lines) - 6)
    return canvas


class AnnotatedVideoWriter:
    """An mp4 (mp4v) writer that renames its file into place only when closed cleanly.

    A run stopped with Ctrl-C still closes the writer, so the frames written so far form a
    playable file; an error leaves no half-written file under the requested name.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        cv2 = import_cv2()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # OpenCV picks the container from the suffix, so the temp file keeps ".mp4".
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise SourceError(
                f"{self.path}: OpenCV cannot write mp4v video here; use a .mp4 name in a "
                "writable folder"
            )
        self.size = size
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = import_cv2().resize(frame, self.size)
        self._writer.write(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        self._writer.release()
        if keep and self.frames:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
