"""XNNPACK, the TFLite CPU delegate: which models run on it, and one warning when a bundle
runs without it (slower, and captions may differ from machines where it runs).

Runtime-only (no Keras): tests/e2e/test_pi_legacy.py runs this module with tflite_runtime 2.14
too, and the Debian roots run it on arm64, so nothing here assumes one backend's choices
beyond what the graph itself shows.
"""

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import edge_caption

from edgecap.edge_runtime import backends
from edgecap.edge_runtime.backends import (
    NO_DELEGATE,
    XNNPACK,
    NativeLog,
    TFLiteModel,
    _delegate_of,
    no_xnnpack_reason,
    no_xnnpack_warning,
    quiet_native_logs,
)
from edgecap.edge_runtime.bundle import Bundle, RuntimeOptions
from edgecap.edge_runtime.evaluation import load_dataset

FILES = ("encoder.tflite", "decoder_init.tflite", "decoder_step.tflite")
ROLES = tuple(name.removesuffix(".tflite") for name in FILES)
WARNING = "the fast CPU path is off"


def _feeds(model: TFLiteModel, rng) -> dict[str, np.ndarray]:
    """Inputs of the file's own shapes (batch 1): token ids, or floats in [-1, 1]."""
    inputs, _ = model.tensor_shapes()
    feeds = {}
    for name, shape in inputs.items():
        shape = [1 if d < 0 else d for d in shape]
        if name == "token":
            feeds[name] = rng.integers(1, 20, shape).astype(np.int32)
        else:
            feeds[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


@pytest.mark.parametrize("name", FILES)
def test_the_delegate_is_read_from_the_graph_with_xnnpack_on_and_off(e2e, name):
    path = e2e["bundle"] / name
    on, off = TFLiteModel(path), TFLiteModel(path, default_delegates=False)
    assert off.delegate == NO_DELEGATE  # BUILTIN_WITHOUT_DEFAULT_DELEGATES
    # LiteRT applies XNNPACK to every model; older TFLite builds (tflite_runtime 2.14) only
    # to those with float tensors, and the int8 encoder has none.
    applies = on.backend_name == "ai_edge_litert" or on.has_float_tensors
    assert on.delegate == (XNNPACK if applies else NO_DELEGATE)
    # Either way the model computes the same function; int8 kernels may round a step apart.
    feeds = _feeds(on, np.random.default_rng(0))
    got_on, got_off = on(**feeds), off(**feeds)
    assert set(got_on) == set(got_off)
    for key, value in got_on.items():
        assert value.shape == got_off[key].shape
        assert np.allclose(value, got_off[key], atol=0.05 * (1 + np.abs(value).max())), key


def test_a_bundle_without_xnnpack_warns_once_naming_its_files_and_why(e2e, caplog):
    caplog.set_level(logging.WARNING)
    with Bundle.open(e2e["bundle"], RuntimeOptions(xnnpack=False)) as bundle:
        assert set(bundle.delegates.values()) == {NO_DELEGATE}
    (warning,) = _warnings(caplog)  # one line for the three models
    assert "\n" not in warning and warning.startswith("warning: ")
    for name in FILES:
        assert name in warning
    assert "slower" in warning and "may differ slightly" in warning
    assert "--no-xnnpack" in warning  # why: it was asked for


def test_a_default_open_warns_exactly_when_a_model_lacks_xnnpack(e2e, caplog):
    caplog.set_level(logging.WARNING)
    with Bundle.open(e2e["bundle"]) as bundle:
        delegates = bundle.delegates
    assert set(delegates) == set(ROLES) and set(delegates.values()) <= {XNNPACK, NO_DELEGATE}
    without = [role for role, d in delegates.items() if d == NO_DELEGATE]
    warnings = _warnings(caplog)
    assert len(warnings) == (1 if without else 0)
    for role in without:
        assert f"{role}.tflite" in warnings[0]
    for role in set(delegates) - set(without):
        assert f"{role}.tflite" not in "".join(warnings)


def test_edge_caption_no_xnnpack_prints_one_warning_line_and_the_captions(e2e):
    dataset = load_dataset(e2e["data"])
    image = dataset.image_path(dataset.splits["test"][0])
    off = edge_caption("--model", e2e["bundle"], "--source", image, "--no-xnnpack", check=True)
    plain = edge_caption("--model", e2e["bundle"], "--source", image, check=True)
    lines = [line for line in off.stderr.splitlines() if WARNING in line]
    assert len(lines) == 1, off.stderr
    assert lines[0].startswith("edge_caption: warning: the fast CPU path is off")
    assert off.stdout.startswith(f"{image}\t") and len(off.stdout.splitlines()) == 1
    with Bundle.open(e2e["bundle"]) as bundle:
        all_xnnpack = set(bundle.delegates.values()) == {XNNPACK}
    assert (WARNING in plain.stderr) != all_xnnpack, plain.stderr


def test_info_reports_each_models_backend_and_delegate(e2e):
    done = edge_caption("info", e2e["bundle"], "--json", check=True)
    runtime = json.loads(done.stdout)["runtime"]
    with Bundle.open(e2e["bundle"]) as bundle:
        assert runtime == {
            "backends": bundle.backends,
            "delegates": bundle.delegates,
            "providers": bundle.providers,
        }
    text = edge_caption("info", e2e["bundle"], check=True).stdout
    runtime_lines = text[text.index("runtime ") :].splitlines()[1:4]
    for line, (role, delegate) in zip(runtime_lines, runtime["delegates"].items(), strict=True):
        assert line.split()[0] == role and line.endswith(f"delegate {delegate}")
    manifest_only = edge_caption("info", e2e["bundle"], "--json", "--manifest-only", check=True)
    assert json.loads(manifest_only.stdout)["runtime"] is None


def _encoder_without_a_delegate(backend: str, has_float_tensors: bool) -> SimpleNamespace:
    """What no_xnnpack_reason reads of a loaded TFLite encoder that runs without XNNPACK."""
    return SimpleNamespace(
        default_delegates=True,
        backend_name=backend,
        has_float_tensors=has_float_tensors,
        delegate=NO_DELEGATE,
        path=Path("b/encoder.tflite"),
    )


def test_cpuinfo_complaints_are_caught_kept_and_given_as_the_reason(monkeypatch, capfd):
    """In a root without /sys, XNNPACK's CPU detection (cpuinfo) fails with these lines and
    LiteRT runs without the delegate (seen under QEMU arm64): the lines stay off the
    terminal and the warning names /sys."""
    monkeypatch.setattr(backends, "_CPUINFO_COMPLAINTS", [])
    complaint = (
        "Error in cpuinfo: failed to parse the list of possible processors in "
        "/sys/devices/system/cpu/possible"
    )
    with quiet_native_logs():
        os.write(2, f"{complaint}\nINFO: Initialized TensorFlow Lite runtime.\n".encode())
    assert capfd.readouterr() == ("", "")
    assert backends._CPUINFO_COMPLAINTS == [complaint]
    model = _encoder_without_a_delegate("ai_edge_litert", has_float_tensors=True)
    reason = no_xnnpack_reason(model)
    assert complaint in reason and "/sys" in reason
    warning = no_xnnpack_warning({"encoder": model})
    assert (
        warning is not None and "encoder.tflite: the CPU detection XNNPACK needs failed" in warning
    )
    assert no_xnnpack_warning({"encoder": SimpleNamespace(delegate=XNNPACK)}) is None


def test_tflite_runtime_int8_models_are_told_apart_from_a_failed_detection(monkeypatch):
    monkeypatch.setattr(backends, "_CPUINFO_COMPLAINTS", [])
    model = _encoder_without_a_delegate("tflite_runtime", has_float_tensors=False)
    assert "only to models with float tensors" in no_xnnpack_reason(model)
    assert "[edge]" in no_xnnpack_reason(model)
    model.has_float_tensors = True  # a float model without XNNPACK: the generic checks
    assert "/sys/devices/system/cpu is readable" in no_xnnpack_reason(model)


def test_the_log_line_is_the_fallback_where_the_graph_cannot_be_read():
    created = NativeLog(lines=["INFO: Created TensorFlow Lite XNNPACK delegate for CPU."])
    assert _delegate_of(None, created) == XNNPACK
    assert _delegate_of(None, NativeLog()) == NO_DELEGATE
    assert _delegate_of(True, NativeLog()) == XNNPACK  # the graph wins over a missing line
    assert _delegate_of(False, created) == NO_DELEGATE
