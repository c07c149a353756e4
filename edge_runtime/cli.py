"""`edge_caption`: caption images, folders, videos and cameras with a bundle. No TensorFlow.

edge_caption [--model BUNDLE|NAME] --source IMAGE|FOLDER|VIDEO|0
edge_caption models [--json]
edge_caption info [BUNDLE|NAME] [--json]

With no --model, the built-in Flickr8k model captions (`edge_caption models` lists it).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import closing

from .errors import EdgeCaptionError, ImageError, SourceError

ESC = 27


def _parser() -> argparse.ArgumentParser:
    from .bundle import add_runtime_options
    from .decoding import add_decode_options

    parser = argparse.ArgumentParser(
        prog="edge_caption",
        description="Caption images, videos or a camera with a bundle.",
        epilog="Video and camera: q or ESC in the --show window, or Ctrl-C, stops cleanly "
        "after the current frame (a second Ctrl-C stops at once); the camera is released "
        "and the --output file is finalized either way. `edge_caption models` lists the "
        "built-in models; `edge_caption info BUNDLE` describes a bundle.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--model",
        default=None,
        help="bundle folder written by caption-export, or a built-in model's name "
        "(default: the built-in model; `edge_caption models` lists them)",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="image file, folder of images, video file, or camera index (0)",
    )
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="print JSON lines: source, caption, ms; for video, also one line per skipped frame",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="video/camera: caption a frame only if N frames passed since the last one (default 1)",
    )
    parser.add_argument(
        "--max-fps",
        type=float,
        default=None,
        help="video/camera: caption at most this many frames per second (default: no limit)",
    )
    parser.add_argument(
        "--on-change",
        type=int,
        default=None,
        metavar="K",
        help="video/camera: print a caption only when it differs from the last one printed "
        "and has been the caption of K captioned frames in a row, so a still scene's caption "
        "does not flicker; with --jsonl, held-back frames say so (default: every caption)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="replay a video file as a live camera at its own frame rate: frames that arrive "
        "while the captioner is busy are dropped and counted (cameras are always live)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="video/camera: write the frames with the caption, captions/s and stage times "
        "drawn on them to this .mp4",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="video/camera: show the annotated frames in a window (needs a display and "
        "OpenCV with GUI support)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="live sources: seconds without a frame before giving up (default 5)",
    )
    add_runtime_options(parser)
    add_decode_options(
        parser, "the bundle's own, chosen on dev at export; `edge_caption info` shows it"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the backends' own log lines (LiteRT's INFO lines) and debug messages",
    )
    return parser


class _VersionAction(argparse.Action):
    """--version, looked up only when asked: importing importlib.metadata would slow every
    start-up (docs/benchmarks.md, "Figures behind the runtime's choices")."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("edge-caption")
        except PackageNotFoundError:
            found = "(not installed)"
        print(f"edge_caption {found}")  # stdout, as argparse's own version action
        parser.exit()


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range flags before anything loads (exit 2, naming the flag): argparse
    takes "nan" and "inf" as floats. Sets args.decode."""
    from .decoding import decode_options_from_args

    args.decode = decode_options_from_args(parser, args)
    if args.every < 1:
        parser.error(f"--every must be at least 1, got {args.every}")
    if args.max_fps is not None and not (math.isfinite(args.max_fps) and args.max_fps > 0):
        parser.error(f"--max-fps must be a positive number, got {args.max_fps}")
    if not (math.isfinite(args.stall_timeout) and args.stall_timeout > 0):
        parser.error(f"--stall-timeout must be a positive number, got {args.stall_timeout}")


SIGPIPE_STATUS = 141  # what a shell reports for a command killed by SIGPIPE (128 + 13)


def _quiet_on_closed_pipe(main):
    """`edge_caption ... | head -1`: when the reader closes the pipe, stop as a C tool
    killed by SIGPIPE would (status 141), without a BrokenPipeError traceback."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BrokenPipeError:
            # Python flushes stdout once more at exit, which would fail again (and print
            # "Exception ignored"): what is left goes to /dev/null instead.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):  # stdout is not a file (a test's capture)
                pass
            return SIGPIPE_STATUS

    return run


@_quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `edge_caption --source S` has no subcommand word, which argparse's subparsers cannot
    # express; `info` and `models` are picked off first.
    if argv and argv[0] == "info":
        from .info import main as info_main

        return info_main(argv[1:])
    if argv and argv[0] == "models":
        from .info import models_main

        return models_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    _check_numbers(parser, args)
    if args.on_change is not None and args.on_change < 1:
        parser.error("--on-change must be at least 1 (1: print each change at once)")
    from .bundle import RuntimeOptions

    try:
        runtime = RuntimeOptions.from_args(args, show_backend_logs=args.verbose)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="edge_caption: %(message)s",
    )

    from .captioner import Captioner
    from .sources import source_kind

    kind = source_kind(args.source)
    if kind in ("image", "folder"):
        for flag in ("output", "show", "realtime", "max_fps", "on_change"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} applies to video files and cameras")
    try:
        with Captioner.open(args.model, runtime, args.decode) as captioner:
            if kind in ("image", "folder"):
                return _caption_files(captioner, args)
            return _caption_video(captioner, args)
    except EdgeCaptionError as exc:
        print(f"edge_caption: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _caption_files(captioner, args) -> int:
    from .sources import iter_frames, printable

    failures = 0
    with closing(iter_frames(args.source)) as frames:
        for frame in frames:
            try:
                result = captioner.caption(frame.image)
            except ImageError as exc:
                failures += 1
                print(f"edge_caption: skipped: {exc}", file=sys.stderr)
                continue
            if args.jsonl:
                record = {
                    "source": printable(frame.source, controls=False),
                    "caption": result.text,
                    "ms": round(result.timings_ms["total"], 2),
                }
                print(json.dumps(record))
            else:
                # A name that is not UTF-8 printed as is stopped the batch at that file.
                print(f"{printable(frame.source)}\t{result.text}")
            sys.stdout.flush()
    if failures:
        print(f"edge_caption: {failures} input(s) could not be captioned", file=sys.stderr)
        return 1
    return 0


class _RateMeter:
    """Captions per second, smoothed over the last few captions."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing, self.rate, self._last = smoothing, None, None

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self.rate = (
                instant
                if self.rate is None
                else self.smoothing * self.rate + (1 - self.smoothing) * instant
            )
        self._last = now


class _CtrlC:
    """The first Ctrl-C asks the video loop to stop after the current frame, so that the
    annotated file and the counts stay whole; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _open_window() -> None:
    from .capture import import_cv2

    cv2 = import_cv2()
    try:
        cv2.namedWindow("edge_caption", cv2.WINDOW_NORMAL)
    except cv2.error:
        raise SourceError(
            "--show needs OpenCV with GUI support and a display; this OpenCV has none "
            "(opencv-python-headless). Install opencv-python instead, or drop --show and "
            "use --output"
        ) from None


def _caption_video(captioner, args) -> int:
    from .capture import import_cv2
    from .overlay import AnnotatedVideoWriter, draw_overlay, overlay_size
    from .stream import StreamOptions, StreamStats, caption_video

    options = StreamOptions(
        every=args.every,
        max_fps=args.max_fps,
        realtime=args.realtime,
        stall_timeout_s=args.stall_timeout,
        on_change=args.on_change,
    )
    if args.show:
        _open_window()
    stats, meter = StreamStats(), _RateMeter()
    writer, last_result, last_canvas = None, None, None
    # Frames dropped before any frame was drawn (a live source's grabber can be ahead of the
    # first caption): written with the first canvas, so the file keeps the source's length.
    owed_frames = 0
    interrupted, failed = False, None
    try:
        with _CtrlC() as ctrl_c, closing(caption_video(captioner, args.source, options)) as events:
            for event in events:
                if ctrl_c.requested:
                    interrupted = True
                    break
                stats.add(event)
                if event.result is not None:
                    meter.tick()
                    if event.held is None:  # the overlay shows what was printed
                        last_result = event.result
                _print_event(event, args.jsonl)
                if not (args.output or args.show):
                    continue
                if event.frame is not None:
                    last_canvas = draw_overlay(
                        event.frame,
                        last_result.text if last_result else "",
                        meter.rate,
                        last_result.timings_ms if last_result else None,
                    )
                if last_canvas is None:
                    owed_frames += 1
                    continue
                if args.output:
                    if writer is None:
                        height, width = event.frame.shape[:2]
                        fps = event.source_fps if math.isfinite(event.source_fps) else 30.0
                        writer = AnnotatedVideoWriter(args.output, fps, overlay_size(width, height))
                    # A dropped frame repeats the last canvas, so the file keeps real time.
                    for _ in range(owed_frames + 1):
                        writer.write(last_canvas)
                    owed_frames = 0
                if args.show and event.frame is not None:
                    cv2 = import_cv2()
                    cv2.imshow("edge_caption", last_canvas)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), ESC):
                        break
    except KeyboardInterrupt:
        interrupted = True
    except SourceError as exc:
        failed = exc
    finally:
        if writer is not None:
            # What was written is a playable video even when the stream stopped early.
            writer.close(keep=True)
        if args.show:
            import_cv2().destroyAllWindows()
    print(f"edge_caption: {stats.summary(args.source)}", file=sys.stderr)
    if writer is not None:
        print(f"edge_caption: wrote {writer.frames} frames to {args.output}", file=sys.stderr)
    if failed is not None:
        print(f"edge_caption: error: {failed}", file=sys.stderr)
        return 2
    return 130 if interrupted else 0


def _print_event(event, jsonl: bool) -> None:
    from .sources import printable

    result = event.result
    if jsonl:
        record = {"source": printable(event.source, controls=False), "frame": event.index}
        if result is not None:
            if event.held is not None:
                # Captioned but not emitted: `caption` stays the key of emitted captions.
                record["held"] = event.held
            record.update(
                {"candidate" if event.held else "caption": result.text},
                ms=round(result.timings_ms["total"], 2),
                timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
            )
            if event.latency_ms is not None:
                record["latency_ms"] = round(event.latency_ms, 2)
        else:
            record["skipped"] = event.skipped
        print(json.dumps(record))
    elif result is not None and event.held is None:
        print(f"{printable(event.source)}\t{result.text}")
    else:
        return
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
