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
