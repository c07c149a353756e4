"""The console scripts as a user runs them: exit codes and messages."""

import subprocess
import sys

import pytest


def run(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True
    )


def test_caption_data_synth_and_info(tmp_path):
    made = run("edgecap.train.cli_data", "synth", tmp_path / "d", "--images", 16, "--seed", 3)
    assert made.returncode == 0, made.stderr
    assert "16 images (train 12, dev 2, test 2)" in made.stdout
    info = run("edgecap.train.cli_data", "info", tmp_path / "d")
    assert info.stdout.splitlines() == [
        "train: 12 images, 60 captions",
        "dev: 2 images, 10 captions",
        "test: 2 images, 10 captions",
    ]


def test_caption_train_names_a_missing_split_file(tmp_path):
    run("edgecap.train.cli_data", "synth", tmp_path / "d", "--images", 16)
    (tmp_path / "d" / "Flickr_8k.testImages.txt").unlink()
    result = run("edgecap.train.cli_train", "--data", tmp_path / "d", "--out", tmp_path / "run")
    assert result.returncode == 2
    assert f"{tmp_path / 'd' / 'Flickr_8k.testImages.txt'}: split file not found" in result.stderr


def test_caption_export_names_an_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    result = run("edgecap.export.cli", tmp_path / "run", "--out", tmp_path / "bundle")
    assert result.returncode == 2
    assert f"{tmp_path / 'run' / 'config.json'}: not found" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_edge_caption_names_a_missing_bundle(tmp_path):
    result = run("edgecap.edge_runtime.cli", "--model", tmp_path / "nothing", "--source", tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'nothing'}: bundle folder not found" in result.stderr


def test_caption_train_extract_names_a_bad_shard(tmp_path):
    done = run("edgecap.train.cli_train", "extract", "--data", tmp_path, "--encoder",
               "mobilenet_synth", "--feature-cache", tmp_path / "cache", "--shard", "2/2")  # fmt: skip
    assert done.returncode == 2
    assert "caption-train: error: --shard '2/2': I must be in 0..N-1" in done.stderr


def test_caption_train_help_names_every_subcommand_and_data_layout():
    from edgecap.train.cli_train import SUBCOMMANDS

    shown = run("edgecap.train.cli_train", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())  # argparse wraps lines
    for name in SUBCOMMANDS:
        assert name in text
        assert run("edgecap.train.cli_train", name, "--help").returncode == 0
    assert {"scst", "extract"} <= set(SUBCOMMANDS)
    assert "Karpathy split .json file" in text and "COCO folder" in text


def test_edge_caption_refuses_accelerate_decoder_without_a_gpu(tmp_path):
    result = run("edgecap.edge_runtime.cli", "--model", tmp_path, "--source", tmp_path,
                 "--accelerate-decoder")  # fmt: skip
    assert result.returncode == 2
    assert "--accelerate-decoder needs --accelerator gpu" in result.stderr


def test_threads_help_gives_each_backends_default():
    for module in ("edgecap.edge_runtime.cli", "edgecap.benchmarks.bench"):
        text = " ".join(run(module, "--help").stdout.split())
        assert "TFLite every core this process may use" in text, module
        assert "ONNX onnxruntime's own default, one thread per physical core" in text, module


def test_install_hints_name_packages_pip_can_find(monkeypatch):
    """The package is installed from its wheel, not an index: a hint names the dependency
    itself (what the wheel's extra would have pulled), never `edge-caption[...]`."""
    from edgecap.edge_runtime import backends, capture
    from edgecap.edge_runtime.errors import BackendError, SourceError

    for module in (
        "cv2",
        "ai_edge_litert.interpreter",
        "tflite_runtime.interpreter",
        "onnxruntime",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    hints = []
    with pytest.raises(SourceError) as error:
        capture.import_cv2()
    hints.append(str(error.value))
    assert str(error.value).endswith("pip install opencv-python-headless")
    for backend in ("litert", "auto"):
        with pytest.raises(BackendError) as error:
            backends._load_interpreter_class(backend)
        assert "pip install ai-edge-litert" in str(error.value)
        hints.append(str(error.value))
    with pytest.raises(BackendError) as error:
        backends._load_onnxruntime()
    assert "pip install onnxruntime" in str(error.value)
    hints.append(str(error.value))
    assert not [h for h in hints if "edge-caption[" in h or "'.[" in h]
