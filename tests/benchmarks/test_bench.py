"""caption-bench: statistics on hand-made numbers, then one small real run on the e2e bundle
(results JSON, Markdown, PNG, baselines), merge across two devices, and the gate.

Nothing here asserts on speed: the machines that run the tests are shared and slow."""

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from edgecap.benchmarks import bench
from edgecap.benchmarks.bench_result import (
    SCHEMA_VERSION,
    SchemaError,
    portable,
    schema_version_message,
    validate,
)
from edgecap.benchmarks.fingerprint import cpu_model
from edgecap.benchmarks.measure import bundle_recipe
from edgecap.edge_runtime.evaluation.timing import summarize, time_calls, tukey_fences
from edgecap.edge_runtime.schema import to_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---- statistics --------------------------------------------------------------------------


def test_percentiles_keep_the_tail_and_mean_drops_outliers():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    # numpy's linear interpolation over all five samples, the outlier included
    assert stats.p50 == 3.0
    assert stats.p90 == pytest.approx(4 + 0.6 * 96)  # rank 3.6 between 4 and 100
    assert stats.p99 == pytest.approx(4 + 0.96 * 96)
    # Q1 = 2, Q3 = 4, IQR = 2: fences [-1, 7]; 100 is dropped from mean and std only
    assert tukey_fences(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == (-1.0, 7.0)
    assert stats.outliers == 1
    assert stats.mean == pytest.approx(2.5)
    assert stats.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert (stats.min, stats.max, stats.n) == (1.0, 100.0, 5)


def test_constant_and_single_samples():
    constant = summarize([5.0] * 10)
    assert (constant.p50, constant.p99, constant.mean, constant.std) == (5.0, 5.0, 5.0, 0.0)
    assert constant.outliers == 0
    one = summarize([7.0])
    assert (one.p50, one.mean, one.std, one.outliers) == (7.0, 7.0, 0.0, 0)
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            summarize(bad)


def test_low_outliers_are_clipped_too():
    stats = summarize([0.01, 10.0, 10.0, 11.0, 11.0, 12.0])
    assert stats.outliers == 1 and stats.mean == pytest.approx(10.8)
    assert stats.min == 0.01  # still reported


def test_time_calls_warms_up_then_respects_min_samples():
    calls = []
    samples = time_calls(calls.append, budget_s=0.0, warmup=3, min_samples=4)
    assert len(samples) == 4 and all(s >= 0 for s in samples)
    assert calls == [0, 1, 2, 3, 4, 5, 6]  # three unrecorded warm-up calls, then four timed
    with pytest.raises(ValueError):
        time_calls(calls.append, budget_s=-1)


# ---- fingerprint and schema --------------------------------------------------------------


def test_cpu_model_from_cpuinfo():
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    assert cpu_model(x86) == "Intel(R) Xeon(R) Processor"
    pi = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model(pi) == "Raspberry Pi 4 Model B Rev 1.4"


def test_fingerprint_never_imports_tensorflow():
    code = (
        "import sys; from edgecap.benchmarks.fingerprint import fingerprint; fp = fingerprint(); "
        "assert 'tensorflow' not in sys.modules, 'imported TF'; "
        "assert fp.runtimes['numpy'] and fp.cores_logical >= 1; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_fingerprint_names_the_distribution_python_imports(tmp_path, monkeypatch):
    # onnxruntime-gpu installed ahead of a CPU onnxruntime elsewhere on sys.path (seen on
    # the H200 host): the version reported is the one that runs, not the first name found.
    from edgecap.benchmarks import fingerprint as fp_module

    for folder, dist, version in (("first", "fakert_gpu", "2.0"), ("second", "fakert", "1.0")):
        site = tmp_path / folder
        (site / "fakert").mkdir(parents=True)
        (site / "fakert" / "__init__.py").write_text("")
        info = site / f"{dist}-{version}.dist-info"
        info.mkdir()
        name = dist.replace("_", "-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "second"))
    monkeypatch.syspath_prepend(str(tmp_path / "first"))
    monkeypatch.setattr(
        fp_module, "RUNTIME_DISTRIBUTIONS", {"fakert": ("fakert", ("fakert", "fakert-gpu"))}
    )
    assert fp_module.runtime_versions() == {"fakert": "2.0"}
    monkeypatch.setattr(fp_module, "RUNTIME_DISTRIBUTIONS", {"x": ("fakert", ("fakert",))})
    assert fp_module.runtime_versions() == {"x": "1.0"}  # only one installed: that one


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_portable_takes_the_machines_folders_out_of_results():
    result = {
        "argv": ["caption-bench", "/tmp/pay/bundles/onnx-int8", "--out=/srv/res", "rel/b"],
        "path": "/work/repo/artifacts/demo/bundle-int8",
        "run": "/home/me/runs/lstm",
        "command": ["/opt/venv/bin/python3", "-m", "edgecap.edge_runtime.cli"],
        "rss_method": "VmHWM (/proc/self/status)",
        "n": 3,
    }
    assert portable(result, cwd="/work/repo", home="/home/me") == {
        "argv": ["caption-bench", ".../onnx-int8", "--out=.../res", "rel/b"],
        "path": "artifacts/demo/bundle-int8",
        "run": "~/runs/lstm",
        "command": ["python", "-m", "edgecap.edge_runtime.cli"],
        "rss_method": "VmHWM (/proc/self/status)",  # prose, not a path
        "n": 3,
    }


@pytest.mark.parametrize("name", ["onnx-cuda", "onnx-cpu", "litert-gpu", "litert-cpu"])
def test_committed_results_carry_no_machine_paths(name):
    committed = Path(__file__).resolve().parents[2] / "docs" / "results" / "h200" / f"{name}.json"
    result = json.loads(committed.read_text())
    assert portable(result) == result


def test_validate_refuses_another_schema_version():
    with pytest.raises(SchemaError) as info:
        validate({"schema": "edgecap-bench", "schema_version": 0}, "old.json")
    assert str(info.value) == schema_version_message("old.json", 0)
    with pytest.raises(SchemaError, match="not a caption-bench results file"):
        validate({"schema_version": SCHEMA_VERSION}, "x.json")


def test_validate_names_the_field_that_is_wrong():
    committed = Path(__file__).resolve().parents[2] / "docs" / "results" / "h200" / "onnx-cuda.json"
    result = json.loads(committed.read_text())
    assert validate(result, "x.json").bundles[1].latency_p50("caption_greedy") > 0
    del result["bundles"][1]["latency_ms"]
    with pytest.raises(SchemaError, match=r"^x\.json: bundles\[1\]: missing field 'latency_ms'$"):
        validate(result, "x.json")


# ---- a real run on the e2e bundle --------------------------------------------------------

TINY = ["--budget-s", "0.05", "--warmup", "1", "--quality-images", "8", "--cold-repeats", "1"]


@pytest.fixture(scope="module")
def bench_run(e2e, tmp_path_factory):
    """One caption-bench run with baselines, shared by the tests that read its results."""
    out = tmp_path_factory.mktemp("bench")
    # No --keras-run: the baselines must find the run through the bundle's manifest.
    argv = [str(e2e["bundle"]), "--data", str(e2e["data"]), "--out", str(out), *TINY]
    argv += ["--seed-images", "1", "--device", "device-a"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = bench.main(argv)
    return {"out": out, "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_run_writes_results_markdown_and_plot(e2e, bench_run):
    out, printed = bench_run["out"], bench_run["stdout"]
    assert bench_run["code"] == 0, bench_run["stderr"]
    result = json.loads((out / "results.json").read_text())
    assert result["schema"] == "edgecap-bench" and result["schema_version"] == SCHEMA_VERSION
    fp = result["fingerprint"]
    for field in ("device", "cpu_model", "cores_logical", "arch", "os", "python", "runtimes"):
        assert fp[field], field
    assert fp["device"] == "device-a" and fp["runtimes"]["ai_edge_litert"]
    assert result["settings"]["threads"] is None and result["settings"]["backend"] == "auto"

    (entry,) = result["bundles"]
    assert entry["status"] == "ok" and entry["variant"] == "tflite-int8"
    assert entry["backend"] == "ai_edge_litert"
    # LiteRT applies XNNPACK to every model of the int8 bundle on this x86 machine
    assert entry["delegate"] == "xnnpack" and set(entry["delegates"].values()) == {"xnnpack"}
    assert entry["size"]["total_bytes"] == sum(entry["size"]["files"].values()) > 0
    assert entry["init_ms"] > 0 and entry["first_caption_ms"] > 0 and entry["peak_rss_mb"] > 0
    for name in ("encoder", "decoder_step", "caption_greedy", "caption_beam3"):
        stats = entry["latency_ms"][name]
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"], name
        assert stats["n"] >= 5 and stats["std"] >= 0
    for mode in ("greedy", "beam3"):
        quality = entry["quality"][mode]
        assert quality["images"] == 8
        assert 0 <= quality["bleu4"] <= 1 and 0 <= quality["scene_accuracy"] <= 1
        assert quality["cider_d"] >= 0
    assert entry["cold_start"]["status"] == "ok" and entry["cold_start"]["median_s"] > 0

    baselines = result["baselines"]
    assert baselines["status"] == "ok", baselines["status"]
    assert baselines["run"] == ".../run"  # the run found, without this machine's folders
    seed = baselines["seed_style"]
    assert seed["images"] == 1 and seed["same_caption_as_stepwise"] == 1
    assert seed["predict_calls_per_caption"] >= 2  # the encoder, then one per word at least
    assert baselines["tf_cold_start"]["median_s"] > 0
    speedup = entry["speedup"]
    assert speedup["caption_vs_seed_style"] > 0 and speedup["cold_start_vs_tf"] > 0
    assert speedup["baseline_is_source_run"] is True

    # Nothing of the measuring machine's folders is written (the file is committed).
    assert entry["path"] == ".../bundle-int8" and result["argv"][1] == ".../bundle-int8"
    assert entry["cold_start"]["command"][0] == "python"
    assert not [text for text in _strings(result) if text.startswith("/")]

    # The typed result writes the file back as it is: every key, in order, nulls included.
    assert json.dumps(to_json(validate(result, "results.json"))) == json.dumps(result)

    markdown = (out / "results.md").read_text()
    assert (
        "| variant | status | size (MB) |" in markdown
        and "`tflite-int8` (bundle-int8) | ✅" in markdown
    )
    assert "Keras, seed-style (predict per word)" in markdown
    assert (out / "latency_quality.png").read_bytes()[:8] == PNG_MAGIC
    assert "tflite-int8 greedy caption:" in printed and "seed-style Keras" in printed
    assert "tflite-int8 cold start:" in printed and "import TF + load Keras" in printed


def test_merge_two_devices(bench_run, tmp_path, capsys):
    out = bench_run["out"]
    result = json.loads((out / "results.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(result))
    result["fingerprint"].update(device="device-b", cpu_model="Cortex-A76", arch="aarch64")
    (tmp_path / "b.json").write_text(json.dumps(result))
    merged = tmp_path / "merged"
    assert (
        bench.main(
            ["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(merged)]
        )
        == 0
    )
    table = (merged / "merged.md").read_text()
    assert "| variant | device-a | device-b |" in table
    assert "Cortex-A76" in table and "`tflite-int8` |" in table
    # Each device's latency table names the backend (and provider) that really ran.
    backend = next(b["backend"] for b in result["bundles"] if b["variant"] == "tflite-int8")
    rows = [r for r in table.splitlines() if r.startswith("| `tflite-int8`")]
    assert len([r for r in rows if f" | {backend} | " in r]) == 2  # one per device
    assert [
        r["fingerprint"]["device"]
        for r in json.loads((merged / "merged.json").read_text())["results"]
    ] == [
        "device-a",
        "device-b",
    ]
    for png in ("merged_latency_quality.png", "merged_devices.png"):
        assert (merged / png).read_bytes()[:8] == PNG_MAGIC
    assert "device-b" in capsys.readouterr().out


def test_merge_refuses_another_schema_version(bench_run, tmp_path, capsys):
    out = bench_run["out"]
    result = json.loads((out / "results.json").read_text())
    result["schema_version"] = SCHEMA_VERSION + 1
    old = tmp_path / "other.json"
    old.write_text(json.dumps(result))
    code = bench.main(["merge", str(out / "results.json"), str(old), "--out", str(tmp_path / "m")])
    assert code == 2
    expected = schema_version_message(str(old), SCHEMA_VERSION + 1)
    assert capsys.readouterr().err.strip() == f"caption-bench merge: error: {expected}"
    assert not (tmp_path / "m").exists()


def test_gate_and_a_broken_bundle(e2e, tmp_path, capsys):
    broken = tmp_path / "not-a-bundle"
    broken.mkdir()
    out = tmp_path / "gate"
    argv = [str(e2e["bundle"]), str(broken), "--data", str(e2e["data"]), "--out", str(out)]
    code = bench.main([*argv, *TINY, "--no-baselines", "--min-scene-accuracy", "1.01"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"gate failed: {e2e['bundle']}: scene accuracy" in err and "< 1.01" in err
    assert f"gate failed: {broken}: no scene accuracy (failed: " in err
    result = json.loads((out / "results.json").read_text())
    by_name = {e["name"]: e for e in result["bundles"]}
    assert (
        by_name["not-a-bundle"]["status"].startswith("failed: ")
        and "manifest" in by_name["not-a-bundle"]["status"]
    )
    assert result["baselines"]["status"] == "skipped: --no-baselines"
    assert "❌ failed: " in (out / "results.md").read_text()
    assert bundle_recipe(e2e["bundle"]) == ("tflite-int8", "tflite", "int8")


def test_accelerator_gpu_is_measured_or_its_row_says_why(e2e, tmp_path, capsys):
    out = tmp_path / "gpu"
    argv = [str(e2e["bundle"]), "--out", str(out), *TINY, "--no-baselines"]
    code = bench.main([*argv, "--accelerator", "gpu"])
    (entry,) = json.loads((out / "results.json").read_text())["bundles"]
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["accelerator"] == "gpu" and settings["accelerate_decoder"] is False
    if code == 0:  # a machine with a usable GPU: the encoder there, the decoder on the CPU
        assert entry["backends"]["encoder"] == "ai_edge_litert CompiledModel (GPU)"
        assert entry["backends"]["decoder_step"] == "ai_edge_litert"
        assert entry["cold_start"]["status"] == "ok"
        return
    assert code == 2  # the row says what edge_caption --accelerator gpu would say
    assert entry["status"].startswith(
        "failed: encoder.tflite: LiteRT could not compile it for the GPU"
    ), entry["status"]
    with pytest.raises(SystemExit):
        bench.main([*argv, "--accelerate-decoder"])
    assert "--accelerate-decoder needs --accelerator gpu" in capsys.readouterr().err


def test_a_broken_bundle_without_gate_exits_2(tmp_path, capsys):
    code = bench.main(
        [str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *TINY, "--no-baselines"]
    )
    assert code == 2
    assert "bundle folder not found" in capsys.readouterr().err
