"""tests/platforms/'s comparison and summary (the Debian-root targets' own logic; the roots
themselves run in `make test-debian13` and `make test-arm64`, not here)."""

import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "platforms"))
import compare_captions  # noqa: E402
import summary  # noqa: E402


def _rows(captions: dict[str, str]) -> dict[str, dict]:
    return {
        image: {"image": image, "caption": text, "tokens": text.split(), "score": -1.0}
        for image, text in captions.items()
    }


def test_compare_counts_identical_captions_per_folder_and_says_where_they_part():
    a = _rows(
        {"data/check/cat.jpg": "a cat", "data/f8k/1.jpg": "a dog runs left", "data/f8k/2.jpg": "x"}
    )
    b = _rows(
        {"data/check/cat.jpg": "a cat", "data/f8k/1.jpg": "a dog runs right", "data/f8k/2.jpg": "x"}
    )
    result = compare_captions.compare(a, b, references=None)
    assert result["groups"]["check"]["identical"] == 1
    f8k = result["groups"]["f8k"]
    assert (f8k["identical"], f8k["images"], f8k["identical_rate"]) == (1, 2, 0.5)
    assert f8k["differ"] == [
        {
            "image": "data/f8k/1.jpg",
            "a": "a dog runs left",
            "b": "a dog runs right",
            "first_different_word": 3,
        }
    ]
    assert compare_captions.first_difference("a b", "a b c") == 2


def test_compare_scores_both_sides_on_the_images_with_references():
    a = _rows({"f8k/1.jpg": "a dog runs on the grass", "f8k/2.jpg": "a man rides a bike"})
    b = _rows({"f8k/1.jpg": "a dog runs on the grass", "f8k/2.jpg": "a cat"})
    refs = {"1.jpg": ["a dog runs on the grass"], "2.jpg": ["a man rides a bike"]}
    group = compare_captions.compare(a, b, refs)["groups"]["f8k"]
    assert group["scores_a"]["images"] == 2
    assert group["scores_a"]["bleu4"] > group["scores_b"]["bleu4"]


def test_compare_refuses_files_of_different_images(tmp_path):
    with pytest.raises(SystemExit, match="different images"):
        compare_captions.compare(_rows({"a/1.jpg": "x"}), _rows({"a/2.jpg": "x"}), None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(SystemExit, match="bad.jsonl:1"):
        compare_captions.read_jsonl(bad)


def test_summary_row_names_the_emulated_core_and_a_reused_venv(tmp_path, capsys):
    group = {"images": 200, "identical": 199, "scores_a": {"bleu4": 0.1, "cider_d": 0.2}}
    group["scores_b"] = group["scores_a"]
    result = {
        "root": "debian13-arm64",
        "extra": "edge",
        "venv": "reused",
        "seconds": 300,
        "facts": {"python": "3.13.5", "machine": "aarch64", "emulated_cpu": "cortex-a76"},
        "tests": {"passed": 54, "failed": 0, "skipped": 0},
        "install": {"seconds": 500.0, "download_bytes": 100_500_000},
        "captions": {"backends": {"encoder": "ai_edge_litert"}},
        "compare": {
            "groups": {"imagenet_check": {"images": 7, "identical": 7}, "Flicker8k_Dataset": group}
        },
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))
    assert summary.main([str(tmp_path / "run"), str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out
    assert "| debian13-arm64 | 3.13.5 | aarch64 (QEMU cortex-a76) | edge | ai_edge_litert |" in out
    assert "| 7/7 | 199/200 | 0.1000 / 0.1000 |" in out
    assert "100.5 MB | 300 s (venv reused) |" in out
    assert "(no result in" in out


import matrix  # noqa: E402


def _result(root: str, extra: str, **changes) -> dict:
    group = {"images": 200, "identical": 196}
    result = {
        "root": root,
        "extra": extra,
        "seconds": 900,
        "facts": {
            "python": "3.11.2",
            "machine": "aarch64",
            "glibc": "glibc-2.36",
            "emulated_cpu": "cortex-a76",
        },
        "tests": {"passed": 90, "failed": 0, "skipped": 1},
        "install": {
            "ok": True,
            "seconds": 321.4,
            "download_bytes": 98_765_432,
            "command": f"pip install --only-binary=:all: 'e.whl[{extra}]'",
            "backtracked": {},
        },
        "captions": {
            "backends": {"encoder": "ai_edge_litert", "decoder_step": "ai_edge_litert"},
            "delegates": {"encoder": "xnnpack", "decoder_step": "xnnpack"},
            "versions": {"ai-edge-litert": "2.3.0", "numpy": "2.4.6"},
        },
        "compare": {"groups": {"Flicker8k_Dataset": group}},
        "compare_demo": {"groups": {"Flicker8k_Dataset": {"images": 200, "identical": 200}}},
    }
    result.update(changes)
    return result


def test_matrix_verdicts_come_from_what_was_measured():
    works = matrix.row(_result("debian12-arm64", "edge"))
    assert works["verdict"] == "works" and works["image"] == "Raspberry Pi OS 64-bit Bookworm"
    assert works["backend"] == "ai_edge_litert 2.3.0" and works["delegate"] == "xnnpack"
    assert works["builtin"] == {"identical": 196, "images": 200}
    differ = _result("debian12-arm64", "pi-legacy")
    differ["compare"]["groups"]["Flicker8k_Dataset"]["identical"] = 162
    assert matrix.row(differ)["verdict"] == "runs; captions differ from x86's"
    # The full-size photos (resized on the device) are a set of their own: 224 px photos
    # that all agree do not hide full-size ones that do not.
    full_size = _result("debian12-arm64", "edge")
    full_size["compare"]["groups"]["flickr8k-originals"] = {"images": 60, "identical": 59}
    assert matrix.row(full_size)["builtin_full_size"] == {"identical": 59, "images": 60}
    assert matrix.row(full_size)["verdict"] == "works"
    full_size["compare"]["groups"]["flickr8k-originals"]["identical"] = 56
    assert matrix.row(full_size)["verdict"] == "runs; captions differ from x86's"
    full_size["compare"]["groups"]["flickr8k-originals"]["identical"] = 60
    full_size["compare_demo"]["groups"]["flickr8k-originals"] = {"images": 60, "identical": 55}
    assert matrix.row(full_size)["demo_full_size"] == {"identical": 55, "images": 60}
    assert matrix.row(full_size)["verdict"] == "runs; captions differ from x86's"
    assert works["builtin_full_size"] is None  # measured before the set existed
    failing = _result("debian13-arm64", "edge", tests={"passed": 80, "failed": 2, "skipped": 0})
    assert matrix.row(failing)["verdict"] == "fails: 2 runtime tests fail"
    old_python = {
        "root": "debian11-arm64",
        "extra": "edge",
        "facts": {"python": "3.9.2", "machine": "aarch64", "glibc": "glibc-2.31"},
        "install": {
            "ok": False,
            "command": "pip install --only-binary=:all: 'e.whl[edge]'",
            "errors": [
                "ERROR: Package 'edge-caption' requires a different Python: 3.9.2 not in '>=3.10'"
            ],
        },
    }
    row = matrix.row(old_python)
    assert not row["installs"] and row["verdict"] == "not supported: Python 3.9.2 is not >=3.10"
    no_wheel = dict(old_python, root="debian12-armhf")
    no_wheel["install"] = dict(
        old_python["install"],
        errors=['ERROR: No matching distribution found for onnxruntime<2,>=1.20; extra == "edge"'],
    )
    assert matrix.row(no_wheel)["reason"] == (
        "no wheel of onnxruntime<2,>=1.20 for this Python and machine"
    )
    old_pip = dict(old_python)
    old_pip["install"] = dict(
        old_python["install"],
        errors=[
            "ERROR: Could not find a version that satisfies the requirement edge-caption[core]; "
            'extra == "edge" (from edge-caption[edge])',
            'ERROR: No matching distribution found for edge-caption[core]; extra == "edge"',
        ],
    )
    assert matrix.row(old_pip)["verdict"] == (
        "not supported: this pip cannot resolve the wheel's own extra [core] "
        "(it looks for edge-caption on the index)"
    )


def test_matrix_report_keeps_rows_not_rerun_and_renders_between_markers(tmp_path, capsys):
    record = tmp_path / "pi-matrix.json"
    for root, extra in (("debian13-arm64", "edge"), ("debian12-arm64", "edge")):
        folder = tmp_path / f"{root}-{extra}"
        folder.mkdir()
        result = _result(root, extra)
        if root == "debian12-arm64":
            result["compare"]["groups"]["flickr8k-originals"] = {"images": 60, "identical": 59}
            result["compare_demo"]["groups"]["flickr8k-originals"] = {"images": 60, "identical": 60}
        (folder / "result.json").write_text(json.dumps(result))
        assert matrix.main(["report", str(folder), "--record", str(record)]) == 0
    rows = json.loads(record.read_text())
    assert [r["root"] for r in rows] == ["debian12-arm64", "debian13-arm64"]  # ROWS order
    assert matrix.main(["report", str(tmp_path / "nothing"), "--record", str(record)]) == 1
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN pi-matrix -->\nold\n<!-- END pi-matrix -->\nrest\n")
    assert matrix.main(["render", "--record", str(record), "--into", str(doc)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| Raspberry Pi OS 64-bit Trixie | debian13-arm64 (aarch64, QEMU cortex-a76) " in text
    assert (
        "| 321 s | 99 MB | ai_edge_litert 2.3.0 (xnnpack) | 90 passed, 0 failed | 196/200; 59/60 "
        in text
    )
    assert "| 196/200; 59/60 | 200/200; 60/60 | **works** |" in text
    assert "| 90 passed, 0 failed | 196/200 | 200/200 |" in text  # Trixie: no full-size set
    assert "| 200/200 | **works** |" in text
    bad = tmp_path / "bad.md"
    bad.write_text("no markers\n")
    assert matrix.main(["render", "--record", str(record), "--into", str(bad)]) == 2
    assert "needs exactly one <!-- BEGIN pi-matrix -->" in capsys.readouterr().err


def test_the_committed_pi_matrix_record_renders_the_docs_table(tmp_path):
    """docs/raspberry-pi.md's table is the record's (make docs-tables), and every row the
    docs call supported works there."""
    record = REPO / "docs" / "results" / "pi-matrix.json"
    doc = REPO / "docs" / "raspberry-pi.md"
    copy = tmp_path / "raspberry-pi.md"
    copy.write_text(doc.read_text())
    assert matrix.main(["render", "--record", str(record), "--into", str(copy)]) == 0
    assert copy.read_text() == doc.read_text(), "run 'make docs-tables'"
    rows = {(r["root"], r["extra"]): r for r in json.loads(record.read_text())}
    assert set(rows) == {(root, e) for _, root, e in matrix.ROWS}
    # What the docs and pyproject.toml's extras say: [edge] works on 64-bit Bookworm and
    # Trixie, [pi-legacy] runs on 64-bit Bookworm, Bullseye and the 32-bit images do not install.
    for root in ("debian12-arm64", "debian13-arm64"):
        assert rows[root, "edge"]["verdict"] == "works"
    assert rows["debian12-arm64", "pi-legacy"]["tests"]["failed"] == 0
    for root in ("debian11-arm64", "debian12-armhf"):
        for extra in ("edge", "pi-legacy"):
            assert rows[root, extra]["verdict"].startswith("not supported"), (root, extra)
