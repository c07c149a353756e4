"""The input-kinds study (export/studies/input_kinds.py): every input kind through both
preprocessing paths, each in a process of its own, and the fidelity of the fast path, on a
few real photos; then `caption-bench render` of its results."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.benchmarks import bench

STUDY = Path(__file__).resolve().parents[2] / "export" / "studies" / "input_kinds.py"


def _study():
    """The study as a module: a script of the checkout, not part of the installed package."""
    spec = importlib.util.spec_from_file_location("input_kinds_study", STUDY)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inputs_measures_every_kind_and_the_fast_paths_fidelity(e2e, flickr8k_originals, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted(flickr8k_originals.glob("*.jpg"))[:3]:
        shutil.copy(photo, photos / photo.name)
    out = tmp_path / "inputs"
    args = [str(e2e["bundle"]), "--photos", str(photos), "--out", str(out)]
    study = _study()
    assert study.main([*args, "--repeats", "2", "--large", "1"]) == 0
    KINDS = study.KINDS

    result = json.loads((out / "inputs.json").read_text())
    rows = {(r["kind"], r["path"]): r for r in result["rows"]}
    # Every kind has a fast row, every still kind an exact one too, and each was measured.
    assert {kind for kind, _ in rows} == set(KINDS)
    assert len(rows) == 2 * len(KINDS) - 1
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for (kind, _), row in rows.items():
        if kind.endswith("every frame"):
            assert row["captions"] > 0 and row["captions_per_s"] > 0
        else:
            ms = row["median_ms"]
            assert ms["total"] >= ms["encoder"] > 0 and row["peak_rss_mb"] > 0
    fidelity = result["fidelity"]
    assert fidelity["photos as they came"]["images"] == 3
    assert fidelity["12 MP JPEGs"]["images"] == 1
    for frames in ("720p frames", "1080p frames", "720p frames moved 1 px (both exact)"):
        assert fidelity[frames]["images"] == 1
        assert fidelity[frames]["feature_max_abs_diff"] > 0  # both shrink, then filter
    assert all(0.0 <= f["identical_caption_rate"] <= 1.0 for f in fidelity.values())
    table = (out / "inputs.md").read_text()
    assert (
        "| input | path | decode | preprocess | encoder | decoder | total | peak RSS (MB) |"
        in table
    )
    assert "| fast path vs exact | images | feature max abs diff | identical captions |" in table

    # make docs-tables: the README's before/after table, from the same file, between markers.
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN inputs -->\nold\n<!-- END inputs -->\nrest\n")
    render = ["render", "inputs-before-after", str(out / "inputs.json"), "--into", str(readme)]
    assert bench.main(render) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    header = "| bundle | input | exact path (ms) | fast path (ms) | fast: preprocess | encoder |"
    assert header in text
    large = rows[("12 MP JPEG file", "fast")]
    exact_total = rows[("12 MP JPEG file", "exact")]["median_ms"]["total"]
    assert f"| 12 MP JPEG file | {exact_total:.2f} | " in text
    assert f"| **{large['median_ms']['total']:.2f}** |" in text
    assert f"captions/s |  |  | {rows[(KINDS[-1], 'fast')]['peak_rss_mb']:.0f} |" in text


def test_inputs_without_photos_says_which_folder_and_what_to_pass(e2e, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [str(e2e["bundle"]), "--photos", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    with pytest.raises(
        SystemExit, match=r"no \.jpg photos in .*empty; pass --photos with a folder"
    ):
        _study().main(args)


def test_the_study_runs_as_a_script_and_the_fast_path_holds_less_memory(
    e2e, flickr8k_originals, tmp_path
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted(flickr8k_originals.glob("*.jpg"))[:2]:
        (photos / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "inputs"
    done = subprocess.run(
        [sys.executable, str(STUDY), str(e2e["bundle"]),
         "--photos", str(photos), "--out", str(out), "--repeats", "2", "--large", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "inputs.json").read_text())
    rows = {(r["kind"], r["path"]): r for r in result["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert set(rows) == {
        *((kind, path) for kind in ("photo file", "12 MP JPEG file", "720p frame", "1080p frame")
          for path in ("exact", "fast")),
        ("720p video, every frame", "fast"),
    }  # fmt: skip
    large_fast, large_exact = rows[("12 MP JPEG file", "fast")], rows[("12 MP JPEG file", "exact")]
    # The reduced decode holds an eighth of the pixels in each direction: far less memory.
    assert large_fast["peak_rss_mb"] < large_exact["peak_rss_mb"]
    assert rows[("720p video, every frame", "fast")]["captions"] == 60
    fidelity = result["fidelity"]
    assert fidelity["photos as they came"]["images"] == 2
    assert fidelity["12 MP JPEGs"]["images"] == 1
    assert "| 12 MP JPEG file | fast |" in (out / "inputs.md").read_text()
