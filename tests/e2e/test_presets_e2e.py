"""Every seed preset trains, exports to TFLite and captions through edge_caption, at tiny
scale and with `--weights none` (ImageNet weights cannot be downloaded here)."""

import json
import subprocess
import sys

import pytest

from edgecap.train.configs import config_names, load_config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from edgecap.train.synthetic import generate

    root = tmp_path_factory.mktemp("presets")
    generate(root / "data", 24, seed=9, image_size=64, progress=False)
    return root


# InceptionV3 at 299 px costs a minute or more per preset here: both Inception presets run
# in `make test-all`; the fast suite keeps the MobileNet ones (the LSTM and the BLSTM), and
# test_encoders.py builds InceptionV3 itself.
HEAVIEST = ("seed-inception-blstm", "seed-inception-lstm")


@pytest.mark.parametrize(
    "preset",
    [
        pytest.param(p, marks=pytest.mark.slow) if p in HEAVIEST else p
        for p in config_names("seed-")
    ],
)
def test_preset_trains_exports_and_captions(preset, tiny_data, tmp_path):
    from edgecap.export.exporter import export_bundle
    from edgecap.train.cli_train import _train_parser, build_config
    from edgecap.train.training import train

    flags = [
        "--data",
        tiny_data / "data",
        "--out",
        tmp_path / "run",
        "--preset",
        preset,
        "--weights",
        "none",
    ]
    flags += [
        "--epochs",
        "1",
        "--units",
        "16",
        "--embed-dim",
        "8",
        "--feature-cache",
        tmp_path / "cache",
    ]
    config = build_config(_train_parser().parse_args([str(f) for f in flags]))
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["images"] == 3

    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", "fp32", parity_images=2)
    assert manifest["decoder"]["kind"] == load_config(preset)["train"]["decoder"]["kind"]
    assert manifest["preprocessing"]["input_size"] == (299 if "inception" in preset else 224)
    assert manifest["parity"]["identical_caption_rate"] == 1.0  # fp32 decodes like Keras

    image = next((tiny_data / "data" / "Flicker8k_Dataset").iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "edgecap.edge_runtime.cli", "--model", str(tmp_path / "bundle"), "--source", str(image), "--jsonl"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = json.loads(result.stdout)
    assert record["source"] == str(image) and isinstance(record["caption"], str)
