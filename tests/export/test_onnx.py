"""ONNX bundles end to end: the e2e run -> fp32 ONNX bundle -> onnxruntime -> edge_caption.

The bundle is exported once per module from the session's e2e run (tests/conftest.py), so
these tests add the ONNX export (a few seconds) and their own checks to the suite.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cli_helpers import copy_with_half_a_file, edge_caption

from edgecap.edge_runtime.backends import ONNX_ACCELERATOR_PROVIDERS, OnnxModel, TFLiteModel
from edgecap.edge_runtime.bundle import RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import BackendError, BundleError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.manifest import MODEL_ROLES, tensor_names

ROLES = MODEL_ROLES
TENSORS = tensor_names("lstm")  # the e2e run decodes with an LSTM inject decoder


@pytest.fixture(scope="module")
def test_images(e2e, tmp_path_factory):
    """The e2e run's test split, as a folder edge_caption can read."""
    dataset = load_dataset(e2e["data"])
    folder = tmp_path_factory.mktemp("onnx-test-images")
    for image_id in dataset.splits["test"]:
        shutil.copyfile(dataset.image_path(image_id), folder / image_id)
    return folder


def test_bundle_follows_the_contract(onnx_bundle):
    import onnx
    import onnxruntime as ort

    bundle, manifest = onnx_bundle["path"], onnx_bundle["manifest"]
    assert json.loads((bundle / "manifest.json").read_text()) == manifest
    assert manifest["model_format"] == "onnx"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "decoder_init.onnx",
        "decoder_step.onnx",
        "encoder.onnx",
        "manifest.json",
        "vocab.json",
    ]
    size = manifest["preprocessing"]["input_size"]
    for role in ROLES:
        entry = manifest["models"][role]
        path = bundle / entry["file"]
        assert entry["file"] == f"{role}.onnx" and entry["bytes"] == path.stat().st_size
        assert entry["precision"] == "fp32" and "gpu_compatibility" not in entry
        assert entry["ops"] == sorted(entry["ops"]) and entry["ops"]
        for kind in ("inputs", "outputs"):
            assert [t["name"] for t in entry[kind]] == TENSORS[role][kind], (role, kind)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert sorted({n.op_type for n in model.graph.node}) == entry["ops"]
        # The graph itself carries the manifest's names, in the manifest's order.
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == TENSORS[role]["inputs"]
        assert [o.name for o in session.get_outputs()] == TENSORS[role]["outputs"]
    models = manifest["models"]
    assert models["encoder"]["inputs"][0] == {
        "name": "image",
        "shape": [1, size, size, 3],
        "dtype": "float32",
    }
    step_in = {t["name"]: t for t in models["decoder_step"]["inputs"]}
    assert step_in["token"] == {"name": "token", "shape": [-1], "dtype": "int32"}
    assert step_in["h"]["shape"][0] == -1  # dynamic batch, as in the TFLite files
    parity = manifest["parity"]
    assert parity["images"] == 20 and parity["identical_caption_rate"] == 1.0, parity
    assert parity["max_abs_diff"]["log_probs"] < 1e-4, parity


def test_edge_caption_onnx_agrees_with_keras_greedy(e2e, onnx_bundle, test_images):
    result = edge_caption(
        "--model", onnx_bundle["path"], "--source", test_images, "--backend", "onnx", "--jsonl"
    )
    assert result.returncode == 0, result.stderr
    captions = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        captions[record["source"].rsplit("/", 1)[1]] = record["caption"]
    keras = [
        json.loads(line) for line in (e2e["run"] / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(captions) == len(keras) == 200
    same = sum(captions[p["image"]] == p["caption"] for p in keras)
    print(f"fp32 ONNX vs Keras greedy: {same}/{len(keras)} identical captions")
    assert same >= 0.99 * len(keras)


def test_step_log_probs_match_keras_and_fp32_tflite(e2e, onnx_bundle, tmp_path):
    """Word by word, batch 3: ONNX = Keras = fp32 TFLite within 1e-4, on a shared trajectory."""
    from edgecap.export import tflite
    from edgecap.train.decoders import DecoderStepFunctions
    from edgecap.train.runs import load_run

    run = load_run(e2e["run"])
    module = DecoderStepFunctions(run.decoder, run.decoder_config)
    lite_path = tmp_path / "decoder_step.tflite"
    lite_path.write_bytes(
        tflite.convert_decoder_function(module.step, "decoder_step.tflite", "fp32")
    )
    lite_step = TFLiteModel(lite_path, backend="litert")
    onnx_init = OnnxModel(onnx_bundle["path"] / "decoder_init.onnx")
    onnx_step = OnnxModel(onnx_bundle["path"] / "decoder_step.onnx")

    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (3, run.decoder_config.feature_dim)).astype(np.float32)
    keras_init = {k: v.numpy() for k, v in module.init(features).items()}
    onnx_state = onnx_init(features=features)
    for name in ("h", "c"):
        np.testing.assert_allclose(onnx_state[name], keras_init[name], atol=1e-4)
    h, c = keras_init["h"], keras_init["c"]
    tokens = np.full(3, run.vocab.start_id, np.int32)
    for _ in range(6):
        keras = {k: v.numpy() for k, v in module.step(tokens, h, c).items()}
        onnx_out = onnx_step(token=tokens, h=h, c=c)
        lite_out = lite_step(token=tokens, h=h, c=c)
        for name in ("log_probs", "h_next", "c_next"):
            np.testing.assert_allclose(onnx_out[name], keras[name], atol=1e-4, err_msg=name)
            np.testing.assert_allclose(onnx_out[name], lite_out[name], atol=1e-4, err_msg=name)
        h, c = keras["h_next"], keras["c_next"]
        tokens = np.argmax(keras["log_probs"], axis=-1).astype(np.int32)


def test_backend_that_does_not_fit_the_bundle_is_refused(e2e, onnx_bundle):
    image = next(iter(sorted(e2e["data"].glob("Flicker8k_Dataset/*.jpg"))))
    result = edge_caption("--model", e2e["bundle"], "--source", image, "--backend", "onnx")
    assert result.returncode == 2 and not result.stdout
    assert "backend 'onnx' runs onnx bundles" in result.stderr
    assert "model_format is 'tflite'" in result.stderr
    with pytest.raises(BackendError, match="backend 'litert' runs tflite bundles"):
        Captioner.open(onnx_bundle["path"], RuntimeOptions(backend="litert"))
    with pytest.raises(BackendError, match="apply to onnxruntime only"):
        Captioner.open(e2e["bundle"], RuntimeOptions(providers=["CPUExecutionProvider"]))
    with pytest.raises(BackendError, match="has no NoSuchExecutionProvider"):
        Captioner.open(onnx_bundle["path"], RuntimeOptions(providers=["NoSuchExecutionProvider"]))


def test_truncated_onnx_file_is_refused_with_its_name(onnx_bundle, tmp_path):
    copy = copy_with_half_a_file(onnx_bundle["path"], tmp_path, "decoder_step.onnx")
    with pytest.raises(BundleError, match=r"decoder_step\.onnx: SHA-256 mismatch"):
        Captioner.open(copy)
    with pytest.raises(BundleError, match=r"decoder_step\.onnx: cannot load this ONNX model"):
        Captioner.open(copy, RuntimeOptions(verify_hashes=False))


def test_auto_backend_and_providers_run_the_onnx_bundle(e2e, onnx_bundle):
    image = next(iter(sorted(e2e["data"].glob("Flicker8k_Dataset/*.jpg"))))
    runtime = RuntimeOptions(providers=["CPUExecutionProvider"], num_threads=1)
    with Captioner.open(onnx_bundle["path"], runtime, DecodeOptions(beam_width=3)) as captioner:
        assert all(name.startswith("onnxruntime ") for name in captioner.backends.values())
        assert captioner.bundle.providers["encoder"] == ["CPUExecutionProvider"]
        beamed = captioner.caption(image)
    with Captioner.open(onnx_bundle["path"]) as captioner:
        greedy = captioner.caption(image)
    assert beamed.tokens and greedy.tokens and greedy.score <= 0


def test_dynamic_int8_step_stays_close(onnx_bundle, tmp_path):
    """The `dynamic` recipe (QInt8 weights) on the step model: valid, small, and close."""
    from edgecap.export import onnx as onnx_export

    fp32 = (onnx_bundle["path"] / "decoder_step.onnx").read_bytes()
    quantized = onnx_export.quantize_dynamic(fp32)
    onnx_export.check_model(quantized, "decoder_step.onnx")
    assert "MatMulInteger" in onnx_export.op_names(quantized)
    assert len(quantized) < len(fp32) / 2
    (tmp_path / "q.onnx").write_bytes(quantized)
    q_model = OnnxModel(tmp_path / "q.onnx")
    f_model = OnnxModel(onnx_bundle["path"] / "decoder_step.onnx")
    units = onnx_bundle["manifest"]["decoder"]["units"]
    rng = np.random.default_rng(1)
    inputs = {
        "token": rng.integers(1, 20, 8).astype(np.int32),
        "h": rng.normal(0, 0.5, (8, units)).astype(np.float32),
        "c": rng.normal(0, 0.5, (8, units)).astype(np.float32),
    }
    diff = np.abs(q_model(**inputs)["log_probs"] - f_model(**inputs)["log_probs"]).max()
    assert diff < 0.5, diff


def test_caption_export_format_flags():
    from edgecap.export.cli import QUANTIZE
    from edgecap.export.exporter import PRECISIONS

    assert QUANTIZE == PRECISIONS
    result = subprocess.run(
        [sys.executable, "-m", "edgecap.export.cli", "run", "--out", "b", "--format", "onnx"]
        + ["--quantize", "fp16"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--quantize fp16 is not available for --format onnx" in result.stderr


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Forbidden(importlib.abc.MetaPathFinder):
        BLOCKED = {blocked!r}

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in self.BLOCKED):
                raise ImportError(f"{{name}} is forbidden in this process")
            return None

    sys.meta_path.insert(0, Forbidden())
    """
)


def _run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_onnx_captions_where_tensorflow_and_onnx_cannot_be_imported(onnx_bundle, e2e):
    """The device needs onnxruntime only: not TensorFlow, tf2onnx, nor the onnx package."""
    image = next(iter(sorted(e2e["data"].glob("Flicker8k_Dataset/*.jpg"))))
    blocked = ("tensorflow", "keras", "tf2onnx", "onnx", "edgecap.train", "edgecap.export")
    result = _run_blocked(
        blocked,
        f"""
        import sys
        from edgecap.edge_runtime.cli import main
        code = main(["--model", {str(onnx_bundle["path"])!r}, "--source", {str(image)!r},
                     "--backend", "onnx"])
        assert "onnxruntime" in sys.modules
        assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnx")]
        sys.exit(code)
        """,
    )
    assert result.returncode == 0, result.stderr
    source, caption = result.stdout.strip().split("\t")
    assert source == str(image) and len(caption.split()) >= 4


def test_missing_onnxruntime_names_the_extra(onnx_bundle):
    result = _run_blocked(
        ("onnxruntime",),
        f"""
        from edgecap.edge_runtime.captioner import Captioner
        from edgecap.edge_runtime.errors import BackendError, BundleError
        try:
            Captioner.open({str(onnx_bundle["path"])!r})
        except BackendError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "needs the onnxruntime package: pip install onnxruntime (the wheel's [edge] extra"
        in result.stdout
    )


def test_gpu_accelerator_prefers_cuda_and_leaves_tensorrt_to_explicit_providers(monkeypatch):
    # onnxruntime-gpu lists TensorRT even where its libraries are missing (seen on an H200
    # host: docs/benchmarks.md), so picking it first would fail there.
    import onnxruntime

    from edgecap.edge_runtime.backends import onnx_accelerator_providers

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
    assert onnx_accelerator_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed[::2])
    with pytest.raises(
        BackendError,
        match=r"has none of CUDAExecutionProvider.*\(it has "
        r"TensorrtExecutionProvider, CPUExecutionProvider\)",
    ):
        onnx_accelerator_providers()


def test_cuda_libraries_are_preloaded_once_and_failures_reported(monkeypatch):
    from types import SimpleNamespace

    from edgecap.edge_runtime import backends

    calls = []

    def preload_dlls():  # what onnxruntime-gpu prints when a library is missing
        calls.append(1)
        print("Failed to load libcudart.so.13: cannot open shared object file")
        print("Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.")

    monkeypatch.setattr(backends, "_preload_report", [])
    fake_ort = SimpleNamespace(preload_dlls=preload_dlls)
    expected = (
        "Failed to load libcudart.so.13: cannot open shared object file Please follow "
        "https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA."
    )
    assert backends._preload_cuda_libraries(fake_ort) == expected
    assert backends._preload_cuda_libraries(fake_ort) == expected
    assert calls == [1]
    monkeypatch.setattr(backends, "_preload_report", [])
    assert backends._preload_cuda_libraries(SimpleNamespace()) == ""  # CPU builds lack it


def test_gpu_accelerator_picks_a_gpu_provider_or_says_what_it_tried(e2e, onnx_bundle):
    import onnxruntime

    available = onnxruntime.get_available_providers()
    options = RuntimeOptions(accelerator="gpu")
    if any(p in available for p in ONNX_ACCELERATOR_PROVIDERS):
        with Captioner.open(onnx_bundle["path"], options) as captioner:
            assert captioner.bundle.providers["encoder"][0] in ONNX_ACCELERATOR_PROVIDERS
            assert captioner.bundle.providers["decoder_step"] == ["CPUExecutionProvider"]
        return
    with pytest.raises(BackendError) as error:
        Captioner.open(onnx_bundle["path"], options)
    message = str(error.value)
    assert message.startswith(
        f"accelerator 'gpu': onnxruntime {onnxruntime.__version__} on this machine has none of "
        "CUDAExecutionProvider, ROCMExecutionProvider"
    )
    assert f"(it has {', '.join(available)})" in message
    with pytest.raises(BackendError, match="choose either an accelerator or a list of providers"):
        Captioner.open(
            onnx_bundle["path"],
            RuntimeOptions(accelerator="gpu", providers=["CPUExecutionProvider"]),
        )


def test_only_the_decoder_steps_threads_spin(onnx_bundle):
    # Spinning pools of idle sessions steal the busy one's cores; the step, called a dozen
    # times in a row, pays more to wake its threads than it computes (backends.OnnxModel).
    with Captioner.open(onnx_bundle["path"]) as captioner:
        spinning = {
            role: model._session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning"
            )
            for role, model in captioner.bundle._models.items()
        }
    assert spinning == {"encoder": "0", "decoder_init": "0", "decoder_step": "1"}


def test_static_int8_encoder_keeps_its_first_conv_float():
    """The int8 ONNX encoder quantizes every Conv but the first (export/onnx.py says why)."""
    import keras
    import onnx

    from edgecap.export.onnx import convert_encoder

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu6")(image)
    x = keras.layers.Conv2D(6, 3, activation="relu6")(x)
    encoder = keras.Model(image, keras.layers.GlobalAveragePooling2D()(x))
    calibration = list(np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32))
    graph = onnx.load_from_string(convert_encoder(encoder, 16, "int8", calibration)).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    weight_source = [produced_by.get(conv.input[1], "initializer") for conv in convs]
    assert weight_source == ["initializer", "DequantizeLinear"], weight_source


def test_static_int8_encoder_runs_as_integer_kernels_in_onnxruntime(tmp_path):
    """A MobileNetV2-like block (depthwise Conv + BatchNorm, residual Add): after export,
    onnxruntime's CPU graph runs every Conv but the first and the Add as integer kernels.
    The real encoder's Convs ran in float between Q/DQ pairs before the recipe folded the
    BatchNorms and switched to uint8 activations (docs/flickr8k.md)."""
    import collections

    import keras
    import onnx
    import onnxruntime as ort

    from edgecap.export.onnx import convert_encoder

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    first = keras.layers.Conv2D(8, 3, padding="same", activation="relu6")(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(first)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 1)(x))
    x = keras.layers.Add()([first, x])
    encoder = keras.Model(image, keras.layers.GlobalAveragePooling2D()(x))
    calibration = list(np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32))
    model = convert_encoder(encoder, 16, "int8", calibration)
    exported = collections.Counter(n.op_type for n in onnx.load_from_string(model).graph.node)
    assert exported["Mul"] == 0, exported  # tf2onnx's BatchNorm Mul, folded into its Conv
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert ops["Conv"] == 1 and ops["QLinearConv"] == 2, ops  # the first Conv stays float
    assert ops["QLinearAdd"] == 1 and ops["Add"] == 0 and ops["Mul"] == 0, ops


def test_info_describes_an_onnx_bundle(onnx_bundle, capsys):
    from edgecap.edge_runtime import cli

    assert cli.main(["info", str(onnx_bundle["path"])]) == 0
    out = capsys.readouterr().out
    assert "format      onnx, recipe onnx-fp32" in out
    assert "encoder.onnx" in out and "decoder_step.onnx" in out
    assert "model card" in out and "model card  none" not in out
