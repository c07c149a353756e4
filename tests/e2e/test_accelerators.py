"""--accelerator gpu: LiteRT's GPU path for TFLite bundles. It either runs on a GPU or fails
saying what it tried; it never falls back to the CPU quietly. The CompiledModel code path
itself is checked here against the Interpreter with LiteRT's CPU accelerator."""

import os

import numpy as np
import pytest
from cli_helpers import edge_caption

from edgecap.edge_runtime.backends import LiteRtCompiledModel, TFLiteModel, quiet_native_logs
from edgecap.edge_runtime.bundle import RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import BackendError
from edgecap.edge_runtime.evaluation.datasets import load_dataset


def _feeds(units: int, batch: int, rng) -> dict:
    return {
        "token": rng.integers(1, 20, batch).astype(np.int32),
        "h": rng.normal(0, 0.5, (batch, units)).astype(np.float32),
        "c": rng.normal(0, 0.5, (batch, units)).astype(np.float32),
    }


def test_compiled_model_path_matches_the_interpreter(e2e):
    rng = np.random.default_rng(0)
    units = e2e["manifest"]["decoder"]["units"]
    image = rng.uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    cases = [("encoder.tflite", {"image": image})] + [
        ("decoder_step.tflite", _feeds(units, batch, rng)) for batch in (1, 3, 1)
    ]  # batch 3 then 1 again: a beam resizes the step's input, and back
    models = {}
    for name, feed in cases:
        if name not in models:
            path = e2e["bundle"] / name
            models[name] = (TFLiteModel(path), LiteRtCompiledModel(path, accelerator="cpu"))
        interpreter, compiled = models[name]
        expected, got = interpreter(**feed), compiled(**feed)
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].shape == expected[key].shape
            np.testing.assert_array_equal(got[key], expected[key])


def test_gpu_runs_on_a_gpu_or_says_what_it_tried(e2e):
    dataset = load_dataset(e2e["data"])
    image = dataset.image_path(dataset.splits["test"][0])
    done = edge_caption("--model", e2e["bundle"], "--source", image, "--accelerator", "gpu")
    if done.returncode == 0:  # a machine with a usable GPU: the encoder really runs there
        # LiteRT's GPU accelerator logs to stdout and stderr (seen on an H200): kept quiet.
        assert done.stdout.startswith(str(image)) and len(done.stdout.splitlines()) == 1
        assert not done.stderr, done.stderr
        with Captioner.open(e2e["bundle"], RuntimeOptions(accelerator="gpu")) as c:
            assert c.backends["encoder"] == "ai_edge_litert CompiledModel (GPU)"
            assert "CompiledModel" not in c.backends["decoder_step"]  # the step stays on CPU
        return
    assert done.returncode == 2 and not done.stdout
    assert "edge_caption: error: encoder.tflite: LiteRT could not compile it for the GPU" in (
        done.stderr
    )
    assert "CompiledModel with HardwareAccelerator.GPU" in done.stderr
    assert "use --accelerator cpu" in done.stderr
    # LiteRT's own reason comes first ("log above"), its INFO chatter does not
    assert done.stderr.index("ERROR") < done.stderr.index("edge_caption: error")
    assert "INFO:" not in done.stderr


def test_native_log_lines_are_kept_off_stdout_and_replayed_only_on_failure(capfd, caplog):
    caplog.set_level("DEBUG", logger="edgecap.edge_runtime.backends")
    lines = [b"INFO: Loaded OpenCL library with dlopen.\n", b"WARNING: NPU not found\n"]
    with quiet_native_logs() as native:
        os.write(1, lines[0])  # where LiteRT's GPU accelerator writes it
        os.write(2, lines[1] + b"I1204 12:00:00.000 1 delegate_webgpu.cc:751] threads = 0\n")
    assert capfd.readouterr() == ("", "")
    assert native.lines[0] == "INFO: Loaded OpenCL library with dlopen." and not native.failed
    assert "WARNING: NPU not found" in caplog.text  # --verbose shows them
    with pytest.raises(RuntimeError), quiet_native_logs() as native:
        os.write(2, b"INFO: chatter\nERROR: No adapters found\nI1204 12:00:00.1 1 x.cc:1] y\n")
        raise RuntimeError
    assert capfd.readouterr() == ("", "ERROR: No adapters found\n") and native.failed
    with quiet_native_logs(show=True):
        os.write(1, lines[0])
    assert capfd.readouterr() == ("", lines[0].decode())  # shown, but never on stdout


def test_ops_the_gpu_delegate_lacks_are_named_as_such(e2e, monkeypatch):
    # What LiteRT 2.3 did with an LSTM decoder step on an H200 (docs/cli.md).
    from ai_edge_litert.compiled_model import CompiledModel

    def from_file(path, hardware_accel):
        os.write(2, b"ERROR: Following operations are not supported by GPU delegate:\n")
        os.write(2, b"LOG_SOFTMAX: Operation is not supported.\n")
        raise RuntimeError("compilation failed")

    monkeypatch.setattr(CompiledModel, "from_file", staticmethod(from_file))
    with pytest.raises(BackendError) as error:
        LiteRtCompiledModel(e2e["bundle"] / "decoder_step.tflite", accelerator="gpu")
    assert str(error.value).startswith(
        "decoder_step.tflite: some of its operations do not run on LiteRT's GPU delegate"
    )
    assert "without --accelerate-decoder for a decoder" in str(error.value)


def test_accelerator_settings_that_cannot_work_are_refused(e2e):
    cases = [
        (RuntimeOptions(accelerator="tpu"), "unknown accelerator 'tpu'; choose one of cpu, gpu"),
        (
            RuntimeOptions(accelerator="gpu", backend="tflite-runtime"),
            "backend 'tflite-runtime' has no GPU path",
        ),
    ]
    for options, message in cases:
        with pytest.raises(BackendError, match=message):
            Captioner.open(e2e["bundle"], options)


def test_cpu_accelerator_is_the_default_and_reports_its_backends(e2e):
    with Captioner.open(e2e["bundle"]) as captioner:
        assert set(captioner.backends) == {"encoder", "decoder_init", "decoder_step"}
        assert all(
            name in ("ai_edge_litert", "tflite_runtime") for name in captioner.backends.values()
        )


def test_a_failed_open_frees_the_models_already_compiled(e2e, monkeypatch):
    # An encoder compiled for the GPU, then a decoder step the GPU cannot take: the encoder
    # is freed (quietly) before the error is reported, not when the process ends.
    from edgecap.edge_runtime import bundle as bundle_module

    closed = []

    class CompiledEncoder(LiteRtCompiledModel):
        def __init__(self):  # nothing compiled: only close() matters here
            pass

        def close(self):
            closed.append("encoder")

    def load(path, model_format, options, role):
        if role == "encoder":
            return CompiledEncoder()
        raise BackendError(f"{path.name}: not on this GPU")

    monkeypatch.setattr(bundle_module, "_load_model", load)
    monkeypatch.setattr(bundle_module, "_check_tensors", lambda model, entry: None)
    with pytest.raises(BackendError, match="decoder_init.tflite: not on this GPU"):
        Captioner.open(e2e["bundle"], RuntimeOptions(accelerator="gpu"))
    assert closed == ["encoder"]
