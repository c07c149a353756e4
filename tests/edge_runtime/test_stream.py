"""Video files and cameras: running modes, skipped and dropped frames, the annotated video,
clean stops, and cameras that fail. Cameras are faked with objects that behave like
cv2.VideoCapture; video files are made here and read through OpenCV's real capture."""

import json
import math
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version

import cv2
import numpy as np
import pytest
from cli_helpers import edge_caption
from PIL import Image

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import SourceError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.overlay import overlay_size
from edgecap.edge_runtime.stream import ChangeFilter, StreamOptions, StreamStats, caption_video

SIZE = 96


def _write_video(path, frames: int, fps: float = 30.0, images=None, fourcc: str = "mp4v") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (SIZE, SIZE))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        if images is not None:
            frame = images[i % len(images)]
        else:
            frame = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        writer.write(frame)
    writer.release()


def _read_back(path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, (frame.shape[1], frame.shape[0])
    capture.release()
    return count, size


@pytest.fixture(scope="module")
def scene_frames(e2e):
    """BGR frames of four real test images, so captions are meaningful."""
    dataset = load_dataset(e2e["data"])
    return [
        np.asarray(Image.open(dataset.image_path(i)).convert("RGB").resize((SIZE, SIZE)))[
            ..., ::-1
        ].copy()  # RGB -> BGR
        for i in dataset.splits["test"][:4]
    ]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, scene_frames):
    """1 s at 30 fps, each of four scenes held for 8 frames."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    _write_video(path, 30, images=[f for f in scene_frames for _ in range(8)])
    return path


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_video_mode_reports_every_frame_and_writes_an_annotated_mp4(e2e, clip, tmp_path):
    output = tmp_path / "annotated.mp4"
    done = edge_caption(
        "--model", e2e["bundle"], "--source", clip, "--every", 5, "--jsonl", "--output", output
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    assert [r["frame"] for r in lines] == list(range(30))  # each frame once, in order
    captioned = [r["frame"] for r in lines if "caption" in r]
    assert captioned == [0, 5, 10, 15, 20, 25]
    assert {r["skipped"] for r in lines if "caption" not in r} == {"every"}
    assert all(r["caption"] and r["ms"] > 0 for r in lines if "caption" in r)
    assert set(lines[0]["timings_ms"]) == {"preprocess", "encoder", "decoder", "total"}
    # Frames 0 and 25 are different scenes; a caption describes its frame.
    assert lines[0]["caption"] != lines[25]["caption"]
    assert "30 frames" in done.stderr and "6 captioned, skipped: 24 every" in done.stderr
    assert _read_back(output) == (30, overlay_size(SIZE, SIZE))
    assert not list(tmp_path.glob(".*partial*"))  # the temp file was renamed into place


def test_max_fps_counts_source_time(e2e, clip):
    done = edge_caption("--model", e2e["bundle"], "--source", clip, "--max-fps", 10, "--jsonl")
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    assert [r["frame"] for r in lines if "caption" in r] == list(range(0, 30, 3))
    assert {r.get("skipped") for r in lines if "caption" not in r} == {"max-fps"}


def test_realtime_replay_keeps_up_and_accounts_for_every_frame(e2e, clip, tmp_path):
    output = tmp_path / "live.mp4"
    done = edge_caption(
        "--model", e2e["bundle"], "--source", clip, "--realtime", "--jsonl", "--output", output
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    # Captioned or dropped ("busy"), every frame appears once: nothing is lost silently.
    assert sorted(r["frame"] for r in lines) == list(range(30))
    assert {r.get("skipped") for r in lines} <= {None, "busy"}
    assert all(r["latency_ms"] >= r["ms"] for r in lines if "caption" in r)
    # Dropped frames repeat the last annotated frame, so the file keeps the source's length.
    assert _read_back(output)[0] == 30
    assert "frame-to-caption latency" in done.stderr


def test_frames_dropped_before_the_first_caption_are_written_too(
    e2e, scene_frames, tmp_path, monkeypatch
):
    """A live source's grabber can be ahead of the first caption, so the stream may begin
    with dropped frames; the annotated file still has one frame per source frame (it wrote
    28 of 30 once under load, when those leading frames were skipped)."""
    from edgecap.edge_runtime import cli, stream
    from edgecap.edge_runtime.captioner import CaptionResult

    def caption_video(captioner, source, options):
        result = CaptionResult("a dog runs", [4, 5, 6], -1.0, {"total": 1.0})
        for index in range(6):
            if index in (0, 1, 4):  # dropped: two before the first caption, one after
                yield stream.StreamEvent(f"{source}#frame={index}", index, math.nan, None,
                                         skipped="busy", source_fps=30.0)  # fmt: skip
            else:
                frame = scene_frames[index % len(scene_frames)]
                yield stream.StreamEvent(f"{source}#frame={index}", index, index / 30, frame,
                                         result, latency_ms=2.0, source_fps=30.0)  # fmt: skip

    monkeypatch.setattr(stream, "caption_video", caption_video)
    output = tmp_path / "live.mp4"
    argv = ["--model", str(e2e["bundle"]), "--source", "cam.mp4", "--realtime", "--jsonl"]
    assert cli.main([*argv, "--output", str(output)]) == 0
    assert _read_back(output) == (6, overlay_size(SIZE, SIZE))


def test_options_are_checked():
    with pytest.raises(ValueError, match="every must be at least 1"):
        StreamOptions(every=0)
    with pytest.raises(ValueError, match="max_fps must be positive"):
        StreamOptions(max_fps=0)
    with pytest.raises(ValueError, match="on_change must be at least 1"):
        StreamOptions(on_change=0)


def test_change_filter_emits_a_caption_once_it_is_new_and_steady():
    change = ChangeFilter(3)
    captions = ["a", "a", "a", "a", "b", "b", "a", "a", "c", "c", "c", "c", "a", "a", "a"]
    reasons = [change.hold_reason(text) for text in captions]
    assert reasons == [
        "unsteady", "unsteady", None, "unchanged",  # "a" after 3 in a row, then not again
        "unsteady", "unsteady",  # a two-frame wobble to "b" never shows
        "unchanged", "unchanged",  # back to "a", which is what was shown
        "unsteady", "unsteady", None, "unchanged",  # "c" after 3 in a row
        "unsteady", "unsteady", None,  # "a" again: new relative to "c"
    ]  # fmt: skip
    every_change = ChangeFilter(1)
    emitted = [t for t in "aabba" if every_change.hold_reason(t) is None]
    assert emitted == ["a", "b", "a"]


@pytest.fixture(scope="module")
def distinct_scenes(e2e, tmp_path_factory):
    """Three BGR frames whose captions differ, as they come back out of an MJPG file.

    MJPG codes each frame alone, so equal frames decode to equal pixels: a held scene has
    one caption, and a change of caption is a change of scene.
    """
    dataset = load_dataset(e2e["data"])
    candidates = [
        np.asarray(Image.open(dataset.image_path(i)).convert("RGB").resize((SIZE, SIZE)))[
            ..., ::-1
        ].copy()
        for i in dataset.splits["test"][:16]
    ]
    probe = tmp_path_factory.mktemp("probe") / "probe.avi"
    _write_video(probe, len(candidates), images=candidates, fourcc="MJPG")
    chosen, captions = [], []
    with Captioner.open(e2e["bundle"]) as captioner:
        for event in caption_video(captioner, str(probe)):
            if event.result.text not in captions and len(chosen) < 3:
                chosen.append(candidates[event.index])
                captions.append(event.result.text)
    assert len(chosen) == 3, f"the test images give fewer than 3 captions: {captions}"
    return chosen, captions


def test_on_change_prints_a_scene_once_it_is_steady_and_jsonl_shows_the_held(
    e2e, distinct_scenes, tmp_path
):
    (a, b, c), (text_a, text_b, text_c) = distinct_scenes
    # Scene A for 6 frames, a 2-frame cut to B (shorter than K), A for 4, then C for 6.
    scenes = [a] * 6 + [b] * 2 + [a] * 4 + [c] * 6
    video = tmp_path / "scenes.avi"
    _write_video(video, len(scenes), images=scenes, fourcc="MJPG")

    done = edge_caption("--model", e2e["bundle"], "--source", video, "--on-change", 3, "--jsonl")
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    assert [r["frame"] for r in lines] == list(range(18))  # every frame still accounted for
    emitted = [(r["frame"], r["caption"]) for r in lines if "caption" in r]
    assert emitted == [(2, text_a), (14, text_c)]
    held = {r["frame"]: (r["held"], r["candidate"]) for r in lines if "held" in r}
    assert held == {
        0: ("unsteady", text_a), 1: ("unsteady", text_a),
        3: ("unchanged", text_a), 4: ("unchanged", text_a), 5: ("unchanged", text_a),
        6: ("unsteady", text_b), 7: ("unsteady", text_b),
        8: ("unchanged", text_a), 9: ("unchanged", text_a),
        10: ("unchanged", text_a), 11: ("unchanged", text_a),
        12: ("unsteady", text_c), 13: ("unsteady", text_c),
        15: ("unchanged", text_c), 16: ("unchanged", text_c), 17: ("unchanged", text_c),
    }  # fmt: skip
    assert all(r["ms"] > 0 for r in lines)  # held frames were captioned all the same
    assert "18 captioned, skipped: none; 2 captions emitted, 16 held back" in done.stderr

    # Plain output prints only the emitted captions; K=1 prints every change at once.
    done = edge_caption("--model", e2e["bundle"], "--source", video, "--on-change", 1)
    assert done.returncode == 0, done.stderr
    printed = [line.split("\t") for line in done.stdout.splitlines()]
    assert printed == [
        [f"{video}#frame={i}", text]
        for i, text in [(0, text_a), (6, text_b), (8, text_a), (12, text_c)]
    ]


@pytest.mark.parametrize("k", ["0", "-2"])
def test_on_change_below_one_is_refused(e2e, clip, k):
    done = edge_caption("--model", e2e["bundle"], "--source", clip, "--on-change", k)
    assert done.returncode == 2
    assert "--on-change must be at least 1" in done.stderr


@pytest.mark.parametrize(
    "flag",
    [["--output", "x.mp4"], ["--show"], ["--realtime"], ["--max-fps", "5"], ["--on-change", "2"]],
)
def test_video_flags_on_an_image_folder_are_refused(e2e, flag):
    done = edge_caption("--model", e2e["bundle"], "--source", e2e["data"], *flag)
    assert done.returncode == 2
    assert f"{flag[0]} applies to video files and cameras" in done.stderr


def test_show_without_a_gui_opencv_says_what_to_install(e2e, clip):
    try:
        version("opencv-python-headless")
    except PackageNotFoundError:
        pytest.skip("this OpenCV may have a GUI")
    done = edge_caption("--model", e2e["bundle"], "--source", clip, "--show")
    assert done.returncode == 2
    assert "--show needs OpenCV with GUI support and a display" in done.stderr
    assert "Install opencv-python instead" in done.stderr


def test_a_missing_or_undecodable_video_is_a_clear_error(e2e, tmp_path):
    done = edge_caption("--model", e2e["bundle"], "--source", tmp_path / "nope.mp4")
    assert done.returncode == 2
    assert f"edge_caption: error: {tmp_path / 'nope.mp4'}: video file not found" in done.stderr
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    done = edge_caption("--model", e2e["bundle"], "--source", fake)
    assert done.returncode == 2
    assert str(fake) in done.stderr
    assert "cannot open it with OpenCV" in done.stderr or "no frame could be read" in done.stderr


def test_ctrl_c_stops_cleanly_and_keeps_a_playable_video(e2e, tmp_path):
    video, output = tmp_path / "long.mp4", tmp_path / "out.mp4"
    _write_video(video, 600)  # 20 s at 30 fps, replayed in real time
    command = [
        sys.executable,
        "-m",
        "edgecap.edge_runtime.cli",
        "--model",
        str(e2e["bundle"]),
        "--source",
        str(video),
        "--realtime",
        "--jsonl",
        "--output",
        str(output),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # the first frame was captioned
    assert json.loads(first)["frame"] == 0
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    frames_seen = 1 + len(stdout.splitlines())
    assert 1 <= frames_seen < 600  # it stopped early
    written, _ = _read_back(output)
    assert written >= 1  # what was written before Ctrl-C is a readable mp4
    assert f"wrote {written} frames to {output}" in stderr


def test_caption_stream_matches_caption(e2e, scene_frames):
    with Captioner.open(e2e["bundle"]) as captioner:
        one_by_one = [captioner.caption(f, bgr=True).text for f in scene_frames]
        streamed = [r.text for r in captioner.caption_stream(scene_frames, bgr=True)]
    assert streamed == one_by_one


class FakeCamera:
    """cv2.VideoCapture's surface; gives `frames` frames, then fails like an unplugged camera."""

    def __init__(self, frames: int, frame: np.ndarray, opened: bool = True, block_s: float = 0.0):
        self.left, self.frame, self.opened, self.block_s = frames, frame, opened, block_s
        self.released = False

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        if self.block_s:
            time.sleep(self.block_s)  # a stalled driver
        if self.released or self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.002)
        return True, self.frame.copy()

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


def _camera_options(opener, **kwargs) -> StreamOptions:
    defaults = dict(reconnect_attempts=2, reconnect_wait_s=0.05, stall_timeout_s=2.0)
    return StreamOptions(opener=opener, **{**defaults, **kwargs})


def test_camera_that_disconnects_is_retried_then_a_clear_error(e2e, scene_frames):
    cameras = []

    def opener(index):
        assert index == 0
        # The first open works; every reopening finds no camera.
        camera = FakeCamera(5, scene_frames[0], opened=not cameras)
        cameras.append(camera)
        return camera

    stats = StreamStats()
    with Captioner.open(e2e["bundle"]) as captioner:
        events = caption_video(captioner, "0", _camera_options(opener))
        with pytest.raises(SourceError) as error:
            for event in events:
                stats.add(event)
    assert str(error.value) == (
        "camera 0: disconnected after 5 frames; reopening failed 2 times, 0.05 s apart. "
        "Check the cable and that no other program holds the camera, then rerun"
    )
    assert len(cameras) == 3  # the first open, then two reopenings
    assert all(c.released for c in cameras)
    assert stats.frames == 5 and stats.captioned >= 1  # frames before the fault were captioned


def test_camera_that_comes_back_goes_on(e2e, scene_frames):
    cameras = []

    def opener(index):
        # The first camera and one reopening work; after that the camera is gone.
        camera = FakeCamera(3, scene_frames[len(cameras) % 4], opened=len(cameras) < 2)
        cameras.append(camera)
        return camera

    with Captioner.open(e2e["bundle"]) as captioner:
        events = caption_video(captioner, "0", _camera_options(opener, reconnect_attempts=1))
        # Each camera gives 3 frames then drops out; the first reopening succeeds.
        seen = []
        with pytest.raises(SourceError, match="disconnected after 6 frames"):
            for event in events:
                seen.append(event.index)
    assert sorted(seen) == list(range(6))  # indices go on across the reconnection
    assert len(cameras) == 3


def test_camera_that_never_opens_is_tried_then_refused(e2e):
    opened = []

    def opener(index):
        opened.append(index)
        return FakeCamera(0, np.zeros((SIZE, SIZE, 3), np.uint8), opened=False)

    with Captioner.open(e2e["bundle"]) as captioner:
        with pytest.raises(SourceError) as error:
            list(caption_video(captioner, "0", _camera_options(opener, reconnect_attempts=3)))
    assert str(error.value) == (
        "camera 0: cannot open it with OpenCV after 3 tries; is it connected, and not in use "
        "by another program? (on Linux: ls /dev/video*)"
    )
    assert opened == [0, 0, 0]


def test_stalled_camera_is_an_error_after_a_bounded_wait(e2e, scene_frames):
    camera = FakeCamera(100, scene_frames[0], block_s=30.0)
    with Captioner.open(e2e["bundle"]) as captioner:
        start = time.perf_counter()
        with pytest.raises(SourceError) as error:
            list(
                caption_video(
                    captioner, "0", _camera_options(lambda i: camera, stall_timeout_s=0.3)
                )
            )
        waited = time.perf_counter() - start
    assert str(error.value) == (
        "camera 0: no frame for 0.3 s, the stream has stalled; check the source "
        "(raise --stall-timeout for slow ones)"
    )
    assert waited < 5  # bounded: the close waits at most 2 s for the stuck driver


def test_stopping_a_live_stream_releases_the_camera(e2e, scene_frames):
    camera = FakeCamera(10_000, scene_frames[1])
    grabbers_before = _grabber_threads()
    with Captioner.open(e2e["bundle"]) as captioner:
        events = caption_video(captioner, "0", _camera_options(lambda i: camera))
        for event in events:
            if event.result is not None:
                break  # what a `q` key or Ctrl-C does to the loop
        events.close()
    deadline = time.perf_counter() + 5
    while not camera.released and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert camera.released
    assert _grabber_threads() <= grabbers_before  # its thread ended


def _grabber_threads() -> int:
    # The stalled-camera test leaves its thread asleep in the fake driver, as a real stuck
    # driver would; count rather than demand none.
    return sum(t.name == "frame-grabber" for t in threading.enumerate())
