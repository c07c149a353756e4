"""edge_caption as a Unix tool and against hand-edited or hostile bundles: a closed pipe,
file names that are not UTF-8, out-of-range flags and manifest values, broken links, a
model that fails in XNNPACK's prepare. Each ends with a message naming what is wrong and
exit 2 (1 for a bad input among good ones), never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from cli_helpers import edge_caption
from PIL import Image

from edgecap.edge_runtime import backends
from edgecap.edge_runtime.bundle import Bundle
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.capture import open_capture
from edgecap.edge_runtime.errors import BundleError, SourceError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.sources import printable

COMMAND = [sys.executable, "-m", "edgecap.edge_runtime.cli"]


@pytest.fixture(scope="module")
def photos(e2e, tmp_path_factory):
    """Six test photos in a folder, one of them with a Latin-1 (not UTF-8) name."""
    dataset = load_dataset(e2e["data"])
    folder = tmp_path_factory.mktemp("photos")
    for k, image_id in enumerate(dataset.splits["test"][:6]):
        name = f"p{k}.jpg".encode() if k != 2 else b"caf\xe9.jpg"  # \xe9: e-acute in Latin-1
        shutil.copyfile(dataset.image_path(image_id), os.path.join(os.fsencode(folder), name))
    return folder


@pytest.fixture
def bundle(e2e, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], copy)
    return copy


def _no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr, done.stderr


def test_a_closed_pipe_ends_quietly(e2e, photos):
    """The reader is gone before the first caption: the first print meets EPIPE, which
    used to end in a BrokenPipeError traceback (and "Exception ignored" at exit)."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        done = subprocess.run(
            [*COMMAND, "--model", e2e["bundle"], "--source", photos],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 141
    assert done.stderr == ""


def test_head_takes_one_line_and_nothing_else_is_said(e2e, photos):
    command = " ".join(map(str, [*COMMAND, "--model", e2e["bundle"], "--source", photos]))
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 141)
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == ""


@pytest.mark.parametrize("jsonl", [False, True], ids=["text", "jsonl"])
def test_a_latin1_file_name_is_printed_escaped_and_the_batch_goes_on(e2e, photos, jsonl):
    """Under a strict UTF-8 stdout, the Latin-1 name used to stop the text output with
    UnicodeEncodeError at that file, and the images after it were never captioned."""
    done = subprocess.run(
        [*COMMAND, "--model", e2e["bundle"], "--source", photos, *(["--jsonl"] if jsonl else [])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 6
    sources = [json.loads(x)["source"] if jsonl else x.split("\t")[0] for x in lines]
    assert sources[0] == str(photos / "caf") + "\\xe9.jpg"  # sorted: 'c' before 'p'
    assert all(s.encode("utf-8") for s in sources)  # valid Unicode, no lone surrogates


def test_printable_escapes_what_would_break_a_line_or_an_encoder():
    assert printable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert printable("a\nb\tc\x07.jpg") == "a\\nb\\tc\\x07.jpg"
    assert printable("a\nb.jpg", controls=False) == "a\nb.jpg"  # json.dumps escapes it
    assert printable("caf\u00e9.jpg") == "caf\u00e9.jpg"  # UTF-8 names are left alone


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam", "3", "--length-penalty=-300"], "--length-penalty must be a number between"),
        (["--beam", "3", "--length-penalty", "400"], "--length-penalty must be a number between"),
        (["--length-penalty", "nan"], "--length-penalty must be a number between"),
        (["--beam", "0"], "--beam must be between 1 and 100"),
        (["--beam", "1000000"], "--beam must be between 1 and 100"),
        (["--threads", "0"], "--threads must be between 1 and 1024"),
        (["--threads", "-2"], "--threads must be between 1 and 1024"),
        (["--every", "0"], "--every must be at least 1"),
        (["--max-fps", "nan"], "--max-fps must be a positive number"),
        (["--max-fps", "-1"], "--max-fps must be a positive number"),
        (["--stall-timeout", "inf"], "--stall-timeout must be a positive number"),
    ],
)
def test_out_of_range_flags_are_refused_naming_the_flag(e2e, flags, message):
    done = edge_caption("--model", e2e["bundle"], "--source", "clip.mp4", *flags)
    _no_traceback(done)
    assert done.returncode == 2
    assert message in done.stderr


def _edit(bundle, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))  # NaN and Infinity as Python's json writes them


def _set(*keys, value):
    def change(manifest):
        node = manifest
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


NAN, INF = float("nan"), float("inf")
HOSTILE_MANIFESTS = {
    "name-too-long": (_set("vocab", "file", value="v" * 300 + ".json"), "305 bytes long"),
    "name-with-nul": (_set("vocab", "file", value="vocab\x00.json"), "control character"),
    "name-lone-surrogate": (_set("vocab", "file", value="voc\ud800.json"), "lone surrogate"),
    "name-with-separator": (
        _set("models", "encoder", "file", value="sub/encoder.tflite"),
        "models.encoder: file name 'sub/encoder.tflite' must name a file directly",
    ),
    "name-with-backslash": (
        _set("models", "encoder", "file", value="sub\\encoder.tflite"),
        "without '/' or '\\'",
    ),
    "input-size-infinity": (
        _set("preprocessing", "input_size", value=INF),
        "preprocessing: field 'input_size' must be an integer, got inf",
    ),
    "input-size-float": (
        _set("preprocessing", "input_size", value=96.5),
        "field 'input_size' must be an integer",
    ),
    "input-size-huge": (
        _set("preprocessing", "input_size", value=10**9),
        "field 'input_size' is 1000000000, outside 8..4096",
    ),
    "scale-nan": (_set("preprocessing", "scale", value=NAN), "field 'scale' must be a finite"),
    "scale-infinity": (_set("preprocessing", "scale", value=INF), "field 'scale' must be a finite"),
    "scale-zero": (_set("preprocessing", "scale", value=0), "field 'scale' must be a finite"),
    "offset-minus-infinity": (
        _set("preprocessing", "offset", value=-INF),
        "field 'offset' must be a finite",
    ),
    "offset-nan": (_set("preprocessing", "offset", value=NAN), "field 'offset' must be a finite"),
    "offset-string": (
        _set("preprocessing", "offset", value="-1"),
        "field 'offset' must be a number",
    ),
    "reducing-gap-infinity": (
        _set("preprocessing", "reducing_gap", value=INF),
        "field 'reducing_gap' must be a finite",
    ),
    "length-penalty-400": (
        _set("decoder", "length_penalty", value=400),
        "decoder: field 'length_penalty' must be between -10 and 10, got 400",
    ),
    "length-penalty-minus-300": (
        _set("decoder", "length_penalty", value=-300),
        "field 'length_penalty' must be between -10 and 10",
    ),
    "length-penalty-nan": (
        _set("decoder", "length_penalty", value=NAN),
        "field 'length_penalty' must be between -10 and 10",
    ),
    "vocab-size-negative": (_set("vocab", "size", value=-5), "field 'size' is -5, outside"),
    "unk-id-outside": (_set("vocab", "unk_id", value=10**6), "field 'unk_id' is 1000000"),
}


@pytest.mark.parametrize("case", HOSTILE_MANIFESTS)
def test_hostile_manifest_values_are_refused_naming_the_field(bundle, case):
    change, message = HOSTILE_MANIFESTS[case]
    _edit(bundle, change)
    with pytest.raises(BundleError) as raised:
        Bundle.open(bundle)
    assert message in str(raised.value)
    assert str(raised.value).startswith(str(bundle / "manifest.json"))


@pytest.mark.parametrize("case", ["name-with-nul", "input-size-infinity", "length-penalty-400"])
def test_hostile_manifest_through_edge_caption(bundle, photos, case):
    _edit(bundle, HOSTILE_MANIFESTS[case][0])
    done = edge_caption("--model", bundle, "--source", photos, "--beam", "3")
    _no_traceback(done)
    assert done.returncode == 2
    assert done.stderr.startswith(f"edge_caption: error: {bundle / 'manifest.json'}")


def test_a_link_that_points_out_of_the_bundle_or_loops_is_refused(bundle):
    (bundle / "vocab.json").rename(bundle / "real-vocab.json")
    (bundle / "vocab.json").symlink_to(bundle / "vocab.json")  # a link to itself
    with pytest.raises(BundleError, match=r"vocab: file name 'vocab\.json' cannot be resolved"):
        Bundle.open(bundle)


def test_broken_links_in_a_folder_are_named_and_the_batch_goes_on(e2e, photos, tmp_path):
    """A dangling or looping link used to vanish from the batch without a word."""
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copyfile(photos / "p0.jpg", folder / "good.jpg")
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    done = edge_caption("--model", e2e["bundle"], "--source", folder)
    _no_traceback(done)
    assert done.returncode == 1
    assert done.stdout.startswith(f"{folder / 'good.jpg'}\t")
    assert f"skipped: {folder / 'dangling.jpg'}: image file not found: it is a link to" in (
        done.stderr
    )
    assert f"skipped: {folder / 'loop.jpg'}: cannot read image file" in done.stderr
    assert "2 input(s) could not be captioned" in done.stderr


def test_exif_orientation_applies_to_a_pil_image_as_to_a_path(e2e, photos, tmp_path):
    with Image.open(photos / "p1.jpg") as img:
        wide = img.convert("RGB").resize((96, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    wide.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    with Captioner.open(e2e["bundle"]) as captioner, Image.open(path) as opened:
        from_path = captioner.encode(path)
        from_pil = captioner.encode(opened)
        unturned = captioner.encode(np.asarray(opened.convert("RGB")))  # arrays: no EXIF
    np.testing.assert_array_equal(from_pil, from_path)
    assert not np.array_equal(from_pil, unturned)


def test_a_truncated_mp4_says_it_may_be_truncated(tmp_path):
    """OpenCV's MP4 writer puts the index (moov) at the end: a cut file does not open."""
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.release()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SourceError, match="may be truncated: an MP4 or MOV whose index"):
        open_capture(str(path)).release()


class _PrepareFails:
    """LiteRT's Interpreter whose allocate_tensors (XNNPACK's prepare) or invoke fails as it
    does on a damaged table that both verifiers passed."""

    def __init__(self, real, where: str):
        self.real, self.where = real, where

    def __call__(self, *args, **kwargs):
        interpreter = self.real(*args, **kwargs)
        where = self.where

        class Failing(type(interpreter)):
            pass

        def fail(*_args, **_kwargs):
            raise RuntimeError("failed to create XNNPACK runtime")

        interpreter.__class__ = Failing
        setattr(Failing, where, fail)
        return interpreter


@pytest.mark.parametrize("where", ["allocate_tensors", "invoke"])
def test_a_model_that_fails_in_prepare_or_first_run_is_a_bundle_error(e2e, monkeypatch, where):
    real, name = backends._load_interpreter_class("auto")
    monkeypatch.setattr(
        backends, "_load_interpreter_class", lambda backend: (_PrepareFails(real, where), name)
    )
    with pytest.raises(BundleError, match=r"encoder\.tflite: .*failed to create XNNPACK runtime"):
        with Captioner.open(e2e["bundle"]) as captioner:
            captioner.caption(np.zeros((64, 64, 3), np.uint8))
