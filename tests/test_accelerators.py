"""--accelerator gpu: LiteRT's GPU path for TFLite bundles. It either runs on a GPU or fails
saying what it tried; it never falls back to the CPU quietly. The CompiledModel code path
itself is checked here against the Interpreter with LiteRT's CPU accelerator."""

import numpy as np
import pytest
from cli_helpers import edge_caption

from edgecap.edge_runtime.backends import LiteRtCompiledModel, TFLiteModel
from edgecap.edge_runtime.bundle import RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.datasets import load_dataset
from edgecap.edge_runtime.errors import BackendError


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
