"""`caption-bench inputs`: every input kind through both preprocessing paths, each in a
process of its own, and the fidelity of the fast path, on a few real photos."""

import json
import shutil

import pytest

from edgecap.benchmarks import bench
from edgecap.benchmarks.input_kinds import KINDS


def test_inputs_measures_every_kind_and_the_fast_paths_fidelity(e2e, flickr8k_originals, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted(flickr8k_originals.glob("*.jpg"))[:3]:
        shutil.copy(photo, photos / photo.name)
    out = tmp_path / "inputs"
    args = [str(e2e["bundle"]), "--photos", str(photos), "--out", str(out)]
    assert bench.main(["inputs", *args, "--repeats", "2", "--large", "1"]) == 0

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
        bench.main(["inputs", *args])
