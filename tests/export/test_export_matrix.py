"""The format x precision registry (export/formats.py) drives export: TFLite fp16 and dynamic
bundles from the test run's e2e pipeline, the parity rules, and caption-export over several pairs."""

import json
import logging
import subprocess
import sys

import pytest

from edgecap.edge_runtime.manifest import MODEL_ROLES
from edgecap.export import formats


@pytest.fixture(scope="module")
def bundles(e2e, tmp_path_factory):
    from edgecap.export.exporter import export_bundle

    root = tmp_path_factory.mktemp("matrix")
    result = {}
    for precision in ("fp16", "dynamic"):
        path = root / f"tflite-{precision}"
        manifest = export_bundle(e2e["run"], path, precision, parity_images=20)
        result[precision] = {"path": path, "manifest": manifest}
    return result


def test_registry_is_the_one_table():
    from edgecap.export.cli import QUANTIZE
    from edgecap.export.exporter import PRECISIONS

    assert PRECISIONS == QUANTIZE == formats.PRECISIONS
    assert PRECISIONS["tflite"][0] == "int8" and PRECISIONS["onnx"][0] == "fp32"
    names = [r.name for r in formats.RECIPES]
    assert len(set(names)) == len(names)
    table = formats.markdown_table().splitlines()
    assert len(table) == 2 + len(formats.RECIPES)
    for recipe in formats.RECIPES:
        assert any(f"| {recipe.format} | `{recipe.precision}`" in row for row in table), recipe
    int8 = formats.get("tflite", "int8")
    assert [int8.file_precision(r) for r in MODEL_ROLES] == ["int8", "dynamic", "dynamic"]
    assert formats.get("tflite", "fp32").float_only and not int8.float_only


def test_one_format_row_per_model_format_and_one_name_per_precision():
    from pathlib import Path

    from edgecap.edge_runtime.manifest import MODEL_FORMATS

    assert formats.FORMATS == tuple(MODEL_FORMATS)
    for row in formats.FORMAT_ROWS:
        assert row.suffix == MODEL_FORMATS[row.name]
        assert row.parity_backend in row.runtime_backends, row
        module = row.module()
        for function in (
            "convert_encoder", "convert_decoder_function", "checked_ops", "tensor_specs",
            "file_details",
        ):  # fmt: skip
            assert callable(getattr(module, function, None)), (row.converter, function)
        # The converter takes exactly the names the recipes give its files.
        used = {r.file_precision(role) for r in formats.RECIPES if r.format == row.name
                for role in MODEL_ROLES}  # fmt: skip
        assert used <= set(module.PRECISIONS), (row.name, used)
        decoders = {r.decoder_step for r in formats.RECIPES if r.format == row.name}
        assert decoders <= set(module.DECODER_PRECISIONS)
    from edgecap.edge_runtime.manifest import PRECISIONS

    named = {r.precision for r in formats.RECIPES}
    named |= {r.file_precision(role) for r in formats.RECIPES for role in MODEL_ROLES}
    assert named == set(PRECISIONS)  # one vocabulary: CLI, recipe, manifest label, converter
    with pytest.raises(ValueError, match="unknown model format 'coreml'; choose one of"):
        formats.format_row("coreml")
    # The docs' table is the registry's, as markdown_table() renders it.
    docs = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert formats.markdown_table().rstrip("\n") in docs


def test_select_skips_missing_pairs_only_for_all():
    assert [r.name for r in formats.select("all", "fp16")] == ["tflite-fp16"]
    assert len(formats.select("all", "all")) == len(formats.RECIPES)
    assert [r.name for r in formats.select("onnx", "all")] == [
        "onnx-fp32",
        "onnx-dynamic",
        "onnx-int8",
    ]
    assert [r.name for r in formats.select("tflite", None)] == ["tflite-int8"]
    with pytest.raises(ValueError, match="--quantize fp16 is not available for --format onnx"):
        formats.select("onnx", "fp32,fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        formats.select("tflite", "fp8")


def test_parity_rules(caplog):
    from edgecap.export.parity import Parity, ParityError, judge_parity

    good = {"images": 20, "identical_caption_rate": 1.0, "max_abs_diff": {"log_probs": 1e-6}}
    judge_parity(formats.get("tflite", "fp32"), Parity.from_json(good))
    for bad in ({"identical_caption_rate": 0.95}, {"max_abs_diff": {"log_probs": 2e-3}}):
        with pytest.raises(ParityError, match="misses its parity tolerance"):
            judge_parity(formats.get("onnx", "fp32"), Parity.from_json({**good, **bad}))
    # Every check runs: both misses are named in the one error.
    both = {**good, "identical_caption_rate": 0.95, "max_abs_diff": {"log_probs": 2e-3},
            "shape_mismatches": ["h: the bundle gives shape (1, 8), Keras (1, 16)"]}  # fmt: skip
    with pytest.raises(ParityError) as caught:
        judge_parity(formats.get("onnx", "fp32"), Parity.from_json(both))
    assert str(caught.value) == (
        "onnx-fp32 bundle gives other shapes than Keras: h: the bundle gives shape (1, 8), "
        "Keras (1, 16); onnx-fp32 bundle misses its parity tolerance: identical-caption rate "
        "0.950 < 0.99; log_probs max abs diff 2.00e-03 > 1e-03"
    )
    off_scene = {**good, "identical_caption_rate": 0.8, "same_scene_rate": 0.95}
    with caplog.at_level(logging.WARNING, logger="edgecap.export.parity"):
        judge_parity(formats.get("tflite", "dynamic"), Parity.from_json(off_scene))  # warns
        judge_parity(
            formats.get("tflite", "fp16"), Parity.from_json({**off_scene, "same_scene_rate": 0.99})
        )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tflite-dynamic" in warnings[0].getMessage()


def test_tolerances_are_on_the_recipe_rows():
    """All-float recipes must decode like Keras; the others are held to caption quality."""
    for recipe in formats.RECIPES:
        strict = recipe.tolerance.min_identical_rate is not None
        assert strict == recipe.float_only == (recipe.tolerance == formats.FLOAT), recipe.name
        assert (recipe.tolerance.max_log_probs_diff is not None) == recipe.float_only


def test_parity_is_typed_and_written_as_it_was_read(e2e):
    from edgecap.export.parity import Parity

    raw = e2e["manifest"]["parity"]
    parity = Parity.from_json(raw)
    assert parity.to_json() == raw and json.dumps(parity.to_json()) == json.dumps(raw)
    assert parity.shape_mismatches is None and set(parity.quality) >= {"keras", "bundle"}


def test_parity_measurement_records_every_shape_mismatch_once():
    import numpy as np

    from edgecap.export.parity import _MaxAbsDiff

    diffs = _MaxAbsDiff(["features", "h", "log_probs"])
    for _ in range(3):  # three images: each mismatch is named once
        diffs.compare("features", np.zeros((1, 4)), np.ones((1, 4)))
        diffs.compare("h", np.zeros((1, 16)), np.zeros((1, 8)))
        diffs.compare("log_probs", np.zeros((1, 5)), np.zeros((2, 5)))
    assert diffs.diffs == {"features": 1.0, "h": 0.0, "log_probs": 0.0}
    assert list(diffs.mismatches.values()) == [
        "h: the bundle gives shape (1, 8), Keras (1, 16)",
        "log_probs: the bundle gives shape (2, 5), Keras (1, 5)",
    ]


def test_judging_logs_each_check_as_passed_or_failed(caplog):
    from edgecap.export.parity import Parity, ParityError, judge_parity

    parity = Parity(images=20, identical_caption_rate=0.95, max_abs_diff={"log_probs": 1e-6})
    with caplog.at_level(logging.INFO, logger="edgecap.export.parity"):
        with pytest.raises(ParityError):
            judge_parity(formats.get("tflite", "fp32"), parity)
    lines = [(r.levelname, r.getMessage().strip()) for r in caplog.records]
    assert lines == [
        ("ERROR", "[FAIL] identical-caption rate 0.950 >= 0.99"),
        ("INFO", "[pass] log_probs max abs diff 1.00e-06 <= 1e-03"),
    ]


@pytest.mark.parametrize("precision", ["fp16", "dynamic"])
def test_quantized_bundle_files(bundles, precision):
    from edgecap.export.tflite import checked_ops

    bundle, manifest = bundles[precision]["path"], bundles[precision]["manifest"]
    assert json.loads((bundle / "manifest.json").read_text()) == manifest
    label = {"fp16": "fp16", "dynamic": "dynamic"}[precision]
    recipe = formats.get("tflite", precision)
    for role in MODEL_ROLES:
        entry = manifest["models"][role]
        assert entry["precision"] == label == recipe.file_precision(role)
        data = (bundle / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data)
        checked_ops(data, entry["file"])
    # Weight-only recipes keep float input and output.
    assert manifest["models"]["encoder"]["inputs"][0]["dtype"] == "float32"
    assert manifest["parity"]["images"] == 20


def test_sizes_and_fp16_parity(e2e, bundles):
    fp16, dynamic = bundles["fp16"]["manifest"], bundles["dynamic"]["manifest"]
    size = {name: {r: m["models"][r]["bytes"] for r in MODEL_ROLES} for name, m in
            (("fp16", fp16), ("dynamic", dynamic), ("int8", e2e["manifest"]))}  # fmt: skip
    assert size["dynamic"]["decoder_step"] < size["fp16"]["decoder_step"]
    assert size["dynamic"]["encoder"] < size["fp16"]["encoder"]
    assert size["int8"]["encoder"] < size["fp16"]["encoder"]
    print("tflite sizes (bytes):", size)
    print("parity fp16:", fp16["parity"], "dynamic:", dynamic["parity"])
    assert fp16["parity"]["identical_caption_rate"] >= 0.95, fp16["parity"]
    assert fp16["parity"]["max_abs_diff"]["log_probs"] < 1e-2, fp16["parity"]


def test_caption_export_all_pairs(e2e, tmp_path):
    """--format all --quantize all: one folder per registry pair under --out, one summary
    table at the end (its time: docs/benchmarks.md, "Figures behind the runtime's choices")."""
    out = tmp_path / "exports"
    result = subprocess.run(
        [sys.executable, "-m", "edgecap.export.cli", str(e2e["run"]), "--format", "all"]
        + ["--quantize", "all", "--out", str(out), "--parity-images", "10"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(r.name for r in formats.RECIPES)
    lines = result.stdout.splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("format "))
    assert lines[header].split() == [
        "format", "precision", "status", "KB", "identical", "same", "scene", "max|dlogp|",
        "dBLEU-4", "dCIDEr-D", "seconds",
    ]  # fmt: skip
    rows = [line.split() for line in lines[header + 1 :]]
    expected = [[r.format, r.precision, "ok"] for r in formats.RECIPES]
    assert [row[:3] for row in rows] == expected, result.stdout
    for row in rows:
        if row[1] == "fp32":  # decodes like Keras
            assert float(row[4]) == 1.0 and float(row[6]) < 1e-3, row
    kb = {(row[0], row[1]): float(row[3]) for row in rows}
    # ONNX int8: a statically quantized (QDQ) encoder with float input, dynamic decoders.
    onnx_int8 = json.loads((out / "onnx-int8" / "manifest.json").read_text())["models"]
    assert (
        "QuantizeLinear" in onnx_int8["encoder"]["ops"]
        and onnx_int8["encoder"]["precision"] == "int8"
    )
    assert onnx_int8["encoder"]["inputs"][0]["dtype"] == "float32"
    assert onnx_int8["decoder_step"]["precision"] == "dynamic"
    assert kb["onnx", "int8"] < kb["onnx", "fp32"] / 2
    assert (
        kb["tflite", "fp16"] < kb["tflite", "fp32"] and kb["onnx", "dynamic"] < kb["onnx", "fp32"]
    )
    encoder = {
        p: json.loads((out / f"tflite-{p}" / "manifest.json").read_text())["models"]["encoder"]
        for p in ("fp32", "fp16")
    }
    # float16 weights: about half the bytes of the float32 encoder.
    ratio = encoder["fp16"]["bytes"] / encoder["fp32"]["bytes"]
    assert 0.4 < ratio < 0.65, ratio


def test_failed_fp32_parity_leaves_no_bundle(e2e, tmp_path, monkeypatch, capsys):
    from edgecap.export import cli, exporter
    from edgecap.export.parity import Parity

    def poor_parity(run, staging, dataset, n_images):
        return Parity(images=1, identical_caption_rate=0.5, max_abs_diff={"log_probs": 0.1})

    monkeypatch.setattr(exporter, "measure_parity", poor_parity)
    out = tmp_path / "bundle"
    code = cli.main([str(e2e["run"]), "--format", "onnx", "--quantize", "fp32", "--out", str(out)])
    assert code != 0
    assert not out.exists() and not list(tmp_path.iterdir())
    captured = capsys.readouterr()
    assert "misses its parity tolerance" in captured.err
    assert any(line.split()[:3] == ["onnx", "fp32", "failed"] for line in captured.out.splitlines())
