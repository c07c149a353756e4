"""OpenCV capture for video files and cameras: opening with clear errors, and a grabber
thread that keeps only the newest frame of a live source.

A live source (a camera, or a video file replayed at its own frame rate) produces frames
whether or not the captioner is ready. Queueing them would grow a backlog and the latency
with it, so the grabber holds one slot: a new frame replaces an unread one, and the frames
replaced are counted so that the caller can report them as dropped, not lose them silently.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import SourceError
from .sources import is_camera


class Capture(Protocol):
    """What we use of cv2.VideoCapture (tests pass fakes with the same methods)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


CaptureOpener = Callable[[str | int], Capture]


def import_cv2():
    """OpenCV, imported on first use (every backend extra installs it, but a device may
    have replaced or removed it; the message says what to put back)."""
    try:
        import cv2
    except ImportError:
        raise SourceError(
            "video and camera sources need OpenCV, which the [edge] and [pi-legacy] extras "
            "install but is not installed here: pip install opencv-python-headless"
        ) from None
    return cv2


def default_opener(target: str | int) -> Capture:
    return import_cv2().VideoCapture(target)


def describe(source: str) -> str:
    return f"camera {source}" if is_camera(source) else source


def open_capture(
    source: str,
    opener: CaptureOpener | None = None,
    attempts: int = 1,
    wait_s: float = 0.5,
) -> Capture:
    """Open a video file or camera index, trying `attempts` times `wait_s` apart.

    A camera can be busy for a moment (another process closing it, a USB re-enumeration),
    so cameras are worth a retry; a file that does not open will not open a second later.
    """
    opener = opener or default_opener
    camera = is_camera(source)
    if not camera and not os.path.isfile(source):
        raise SourceError(f"{source}: video file not found")
    for attempt in range(1, attempts + 1):
        capture = opener(int(source) if camera else source)
        if capture.isOpened():
            return capture
        capture.release()
        if attempt < attempts:
            time.sleep(wait_s)
    hint = (
        "is it connected, and not in use by another program? (on Linux: ls /dev/video*)"
        if camera
        else "is it a video OpenCV can decode? If it was cut short (an interrupted copy or "
        "download), it may be truncated: an MP4 or MOV whose index is at the end cannot be "
        "opened without it"
    )
    tries = f" after {attempts} tries" if attempts > 1 else ""
    raise SourceError(f"{describe(source)}: cannot open it with OpenCV{tries}; {hint}")


def capture_fps(capture: Capture, default: float = 30.0) -> float:
    """The source's frame rate, or `default` where it reports none (many webcams report 0)."""
    fps = float(capture.get(import_cv2().CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 1000.0 else default


def capture_frame_count(capture: Capture) -> int:
    """Frames the container says it holds (0 for cameras and some files)."""
    return max(0, int(capture.get(import_cv2().CAP_PROP_FRAME_COUNT) or 0))


@dataclass
class Grabbed:
    index: int  # frame number in the source, from 0
    frame: np.ndarray  # BGR uint8 [H, W, 3]
    captured_at: float  # time.perf_counter() when the frame was read


class LatestFrameGrabber:
    """Reads a live source on a thread, keeping only the newest frame.

    `pace_fps` replays a video file at that rate (a camera paces itself). A camera that
    stops giving frames is reopened up to `reconnect_attempts` times; after that, or at the
    end of a file, `next()` reports the end or raises the error. The thread releases the
    capture in `finally`, so a stop from any side (end, error, Ctrl-C in the caller) frees
    the camera.
    """

    def __init__(
        self,
        source: str,
        capture: Capture,
        opener: CaptureOpener | None = None,
        pace_fps: float | None = None,
        reconnect_attempts: int = 3,
        reconnect_wait_s: float = 0.5,
    ):
        self.source, self._capture, self._opener = source, capture, opener
        self._pace_fps = pace_fps
        self._reconnect_attempts, self._reconnect_wait_s = reconnect_attempts, reconnect_wait_s
        self._condition = threading.Condition()
        self._latest: Grabbed | None = None
        self._ended = False
        self._error: SourceError | None = None
        self._stop = threading.Event()
        self.frames_read = 0
        self.released = threading.Event()
        # A daemon thread: if a driver hangs inside read(), the process can still exit.
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)
        self._thread.start()

    def _reconnect(self) -> bool:
        if not is_camera(self.source):
            return False  # a file that stops giving frames has ended
        for _ in range(self._reconnect_attempts):
            if self._stop.wait(self._reconnect_wait_s):
                return False
            self._capture.release()
            self._capture = (self._opener or default_opener)(int(self.source))
            if self._capture.isOpened():
                ok, frame = self._capture.read()
                if ok and frame is not None:
                    self._publish(frame)
                    return True
        self._error = SourceError(
            f"{describe(self.source)}: disconnected after {self.frames_read} frames; reopening "
            f"failed {self._reconnect_attempts} times, {self._reconnect_wait_s:g} s apart. "
            "Check the cable and that no other program holds the camera, then rerun"
        )
        return False

    def _publish(self, frame: np.ndarray) -> None:
        with self._condition:
            self._latest = Grabbed(self.frames_read, frame, time.perf_counter())
            self.frames_read += 1
            self._condition.notify_all()

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            while not self._stop.is_set():
                if self._pace_fps:
                    due = start + self.frames_read / self._pace_fps
                    if self._stop.wait(max(0.0, due - time.perf_counter())):
                        break
                ok, frame = self._capture.read()
                if not ok or frame is None:
                    if self.frames_read == 0 and not is_camera(self.source):
                        self._error = SourceError(
                            f"{self.source}: opened, but no frame could be read"
                        )
                        break
                    if not self._reconnect():
                        break
                    continue
                self._publish(frame)
        except Exception as exc:  # a driver error must reach the caller, not die here
            self._error = SourceError(f"{describe(self.source)}: capture failed: {exc}")
        finally:
            self._capture.release()
            self.released.set()
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def next(self, after: int, timeout_s: float) -> Grabbed | None:
        """The newest frame with index > `after`; None at the end of the source.

        Waits at most `timeout_s` for it: a source that gives nothing for that long has
        stalled, which is an error rather than a hang.
        """
        deadline = time.perf_counter() + timeout_s
        with self._condition:
            while True:
                if self._latest is not None and self._latest.index > after:
                    return self._latest
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return None
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise SourceError(
                        f"{describe(self.source)}: no frame for {timeout_s:g} s, the stream "
                        "has stalled; check the source (raise --stall-timeout for slow ones)"
                    )
                self._condition.wait(remaining)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop reading and wait (bounded) for the thread to release the capture."""
        self._stop.set()
        self._thread.join(timeout_s)

    def __enter__(self) -> LatestFrameGrabber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
