"""Captioning a video file or a camera, frame by frame, in one of two running modes.

- VIDEO: a file decoded in order. Nothing is dropped; frames not captioned because of
  `every` or `max_fps` are reported as skipped, each one.
- LIVE_STREAM: a camera, or a file replayed at its own frame rate (`realtime`). A grabber
  thread keeps only the newest frame, so latency stays bounded; frames that arrived while
  the captioner was busy are reported as dropped ("busy"), each one.

Either way every frame of the source appears in the event stream exactly once, captioned
or skipped with a reason, so a caller can prove that it kept up. With `on_change`, a
captioned frame whose caption is not worth showing is marked `held` (see ChangeFilter).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .captioner import Captioner, CaptionResult
from .capture import (
    CaptureOpener,
    LatestFrameGrabber,
    capture_fps,
    capture_frame_count,
    describe,
    open_capture,
)
from .errors import SourceError
from .sources import is_camera

log = logging.getLogger(__name__)


class RunningMode(str, Enum):
    VIDEO = "video"  # a video file decoded in order: nothing dropped
    LIVE_STREAM = "live_stream"  # newest frame only: a camera, or a file in real time


@dataclass
class StreamOptions:
    """How a video or camera is read and which frames are captioned."""

    every: int = 1
    """Caption a frame only if at least this many frames passed since the last captioned
    one (1: every frame the captioner can take)."""

    max_fps: float | None = None
    """Caption at most this many frames per second: of source time for a video file, of
    wall time for a live stream. None: no limit."""

    realtime: bool = False
    """Replay a video file as a live stream at its own frame rate, dropping frames that
    arrive while the captioner is busy, as a camera would. Cameras are always live."""

    stall_timeout_s: float = 5.0
    """A live source that gives no frame for this long has stalled: an error, not a hang."""

    reconnect_attempts: int = 3
    """Times a camera that stops giving frames (or does not open) is reopened."""

    reconnect_wait_s: float = 0.5
    """Pause before each reopening."""

    opener: CaptureOpener | None = None
    """Makes the capture from a path or camera index; None uses cv2.VideoCapture."""

    on_change: int | None = None
    """Emit a caption only when it differs from the last one emitted and has been the
    caption of this many consecutive captioned frames; the others are marked `held`.
    None: every caption is emitted."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError("every must be at least 1")
        if self.max_fps is not None and not self.max_fps > 0:
            raise ValueError("max_fps must be positive")
        if self.on_change is not None and self.on_change < 1:
            raise ValueError("on_change must be at least 1")


@dataclass
class StreamEvent:
    """One frame of the source: captioned (`result`) or not (`skipped` says why)."""

    source: str  # "clip.mp4#frame=12" or "camera 0#frame=12"
    index: int  # frame number in the source, from 0
    timestamp_s: float  # source time for VIDEO, wall time since start for LIVE_STREAM
    frame: np.ndarray | None  # BGR uint8 [H, W, 3]; None for frames dropped unseen
    result: CaptionResult | None = None
    skipped: str | None = None  # "every", "max-fps" or "busy"
    latency_ms: float | None = None  # LIVE_STREAM: frame read -> caption ready
    source_fps: float = math.nan  # the source's frame rate (30 where a camera reports none)
    held: str | None = None  # captioned, not emitted (on_change): "unchanged" or "unsteady"


def running_mode(source: str, realtime: bool = False) -> RunningMode:
    if is_camera(source) or realtime:
        return RunningMode.LIVE_STREAM
    return RunningMode.VIDEO


class _FrameSelector:
    """Decides from `every` and `max_fps` whether a frame is captioned."""

    def __init__(self, options: StreamOptions):
        self.every = options.every
        # A hair under the period, so that 30 fps frames pass a max_fps of 30 despite rounding.
        self.period_s = (1.0 / options.max_fps) * (1 - 1e-6) if options.max_fps else 0.0
        self.last_index: int | None = None
        self.last_time = -math.inf

    def skip_reason(self, index: int, timestamp_s: float) -> str | None:
        if self.last_index is not None and index - self.last_index < self.every:
            return "every"
        if timestamp_s - self.last_time < self.period_s:
            return "max-fps"
        self.last_index, self.last_time = index, timestamp_s
        return None


class ChangeFilter:
    """Keeps a still scene's caption from flickering: a caption is emitted only when it
    differs from the last one emitted and has been the caption of `frames` consecutive
    captioned frames. A one-word wobble for fewer frames than that is never shown.

    `hold_reason(text)` is called once per captioned frame, in order, and says why that
    frame's caption is held back: "unchanged" (it is the caption already emitted) or
    "unsteady" (a new caption, not yet seen `frames` times in a row); None emits it.
    """

    def __init__(self, frames: int):
        if frames < 1:
            raise ValueError("on_change must be at least 1")
        self.frames = frames
        self.emitted: str | None = None
        self._candidate: str | None = None
        self._run = 0

    def hold_reason(self, text: str) -> str | None:
        if text == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = text, 1
        if text == self.emitted:
            return "unchanged"
        if self._run < self.frames:
            return "unsteady"
        self.emitted = text
        return None


def _name(source: str, index: int) -> str:
    prefix = describe(source)  # "camera 0", as in every other message
    return f"{prefix}#frame={index}"


def caption_video(
    captioner: Captioner, source: str, options: StreamOptions | None = None
) -> Iterator[StreamEvent]:
    """Every frame of a video file or camera as a StreamEvent (see the module docstring).

    The capture is released when the generator ends, raises or is closed.
    """
    options = options or StreamOptions()
    if running_mode(source, options.realtime) is RunningMode.LIVE_STREAM:
        events = _live(captioner, source, options)
    else:
        events = _video(captioner, source, options)
    if options.on_change is None:
        yield from events
        return
    change = ChangeFilter(options.on_change)
    # `closing` passes a close() of this generator on to the capture's generator at once.
    with closing(events):
        for event in events:
            if event.result is not None:
                event.held = change.hold_reason(event.result.text)
            yield event


def _video(captioner: Captioner, source: str, options: StreamOptions) -> Iterator[StreamEvent]:
    capture = open_capture(source, options.opener)
    try:
        fps, expected = capture_fps(capture), capture_frame_count(capture)
        selector = _FrameSelector(options)
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            timestamp = index / fps
            reason = selector.skip_reason(index, timestamp)
            result = None if reason else captioner.caption(frame, bgr=True)
            yield StreamEvent(
                _name(source, index), index, timestamp, frame, result, reason, source_fps=fps
            )
            index += 1
        if index == 0:
            raise SourceError(f"{source}: opened, but no frame could be read")
        # Containers round their frame count, so only a clear shortfall is worth a warning.
        if expected and index < expected - 1:
            log.warning(
                "%s: ended at frame %d of the %d it declares; the file may be truncated",
                source,
                index,
                expected,
            )
    finally:
        capture.release()


def _dropped(source: str, index: int, fps: float) -> StreamEvent:
    """A frame the grabber replaced before the captioner was free to take it."""
    return StreamEvent(_name(source, index), index, math.nan, None, skipped="busy", source_fps=fps)


def _live(captioner: Captioner, source: str, options: StreamOptions) -> Iterator[StreamEvent]:
    camera = is_camera(source)
    capture = open_capture(
        source,
        options.opener,
        attempts=options.reconnect_attempts if camera else 1,
        wait_s=options.reconnect_wait_s,
    )
    fps = capture_fps(capture)
    # A file is paced at its own rate; a camera paces itself.
    pace = None if camera else fps
    grabber = LatestFrameGrabber(
        source,
        capture,
        options.opener,
        pace_fps=pace,
        reconnect_attempts=options.reconnect_attempts,
        reconnect_wait_s=options.reconnect_wait_s,
    )
    start = time.perf_counter()
    selector = _FrameSelector(options)
    last = -1
    try:
        while True:
            grabbed = grabber.next(last, options.stall_timeout_s)
            if grabbed is None:
                break
            for dropped in range(last + 1, grabbed.index):
                yield _dropped(source, dropped, fps)
            last = grabbed.index
            timestamp = grabbed.captured_at - start
            reason = selector.skip_reason(grabbed.index, timestamp)
            result, latency = None, None
            if reason is None:
                result = captioner.caption(grabbed.frame, bgr=True)
                latency = (time.perf_counter() - grabbed.captured_at) * 1e3
            yield StreamEvent(
                _name(source, last), last, timestamp, grabbed.frame, result, reason, latency, fps
            )
        # Frames read after the last one we took, while we were busy with it.
        for dropped in range(last + 1, grabber.frames_read):
            yield _dropped(source, dropped, fps)
    finally:
        grabber.close()
        if not grabber.released.is_set():
            log.warning("%s: the capture thread is stuck in the driver", describe(source))


@dataclass
class StreamStats:
    """Counts and times over a stream's events, for the closing summary."""

    frames: int = 0
    captioned: int = 0
    held: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    caption_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, event: StreamEvent) -> None:
        self.frames += 1
        if event.result is not None:
            self.captioned += 1
            self.held += event.held is not None
            self.caption_ms.append(event.result.timings_ms["total"])
            if event.latency_ms is not None:
                self.latency_ms.append(event.latency_ms)
        else:
            self.skipped[event.skipped or "?"] = self.skipped.get(event.skipped or "?", 0) + 1

    def to_json(self) -> dict:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 2) if values else None

        wall = time.perf_counter() - self.started
        return {
            "frames": self.frames,
            "captioned": self.captioned,
            "held": self.held,
            "skipped": dict(sorted(self.skipped.items())),
            "wall_s": round(wall, 2),
            "frames_per_s": round(self.frames / wall, 1) if wall > 0 else None,
            "caption_ms_p50": pct(self.caption_ms, 50),
            "caption_ms_p99": pct(self.caption_ms, 99),
            "latency_ms_p50": pct(self.latency_ms, 50),
            "latency_ms_max": round(max(self.latency_ms), 2) if self.latency_ms else None,
        }

    def summary(self, source: str) -> str:
        s = self.to_json()
        skipped = ", ".join(f"{n} {reason}" for reason, n in s["skipped"].items()) or "none"
        line = (
            f"{source}: {s['frames']} frames in {s['wall_s']:.1f} s ({s['frames_per_s']} frames/s): "
            f"{s['captioned']} captioned, skipped: {skipped}"
        )
        if s["held"]:
            line += f"; {s['captioned'] - s['held']} captions emitted, {s['held']} held back"
        if s["caption_ms_p50"] is not None:
            line += f"; caption p50 {s['caption_ms_p50']} ms, p99 {s['caption_ms_p99']} ms"
        if s["latency_ms_p50"] is not None:
            line += (
                f"; frame-to-caption latency p50 {s['latency_ms_p50']} ms, "
                f"max {s['latency_ms_max']} ms"
            )
        return line
