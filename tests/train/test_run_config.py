"""train/runs.py's RunConfig: every run folder's config.json read once, typed; old runs
(no format_version, weights under train only, stages with fewer settings) still load."""

import json

import pytest

from edgecap.train.decoders import DecoderConfig
from edgecap.train.runs import RunConfig, RunError, read_run_config

PREPROCESSING = {"input_size": 96, "scale": 0.0078, "offset": -1.0, "channel_order": "RGB",
                 "resize": "bilinear", "crop": "none"}  # fmt: skip
CURRENT = {
    "format_version": 1,
    "train": {"data": "/d", "encoder": "mobilenet_synth", "weights": "default",
              "decoder": {"kind": "lstm", "units": 64}, "epochs": 3, "keep": "last"},
    "decoder": {"kind": "lstm", "vocab_size": 40, "feature_dim": 128, "units": 64},
    "encoder": {"name": "mobilenet_synth", "alpha": 1.0, "input_size": 96,
                "weights": "/w/encoder.h5", "preprocessing": PREPROCESSING},
    "data": "/d",
    "scst": {"epochs": 2, "learning_rate": 5e-5, "parent": "/runs/xe"},
}  # fmt: skip


def _write(tmp_path, config) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))


def test_a_current_run_config_is_typed(tmp_path):
    _write(tmp_path, CURRENT)
    config, raw = read_run_config(tmp_path)
    assert isinstance(config, RunConfig) and raw == CURRENT
    assert config.decoder == DecoderConfig(kind="lstm", vocab_size=40, feature_dim=128, units=64)
    assert config.train.decoder.units == 64 and config.train.keep == "last"
    assert config.encoder.name == "mobilenet_synth" and config.weights == "/w/encoder.h5"
    assert config.scst.parent == "/runs/xe"
    # A stage's settings stay as written: an old run lacks the settings added since.
    assert config.scst.settings == {"epochs": 2, "learning_rate": 5e-5}
    assert config.finetune is None and not config.encoder_trained


def test_an_older_run_config_still_loads(tmp_path):
    old = {k: v for k, v in CURRENT.items() if k not in ("format_version", "scst")}
    old["encoder"] = {k: v for k, v in old["encoder"].items() if k != "weights"}
    old["finetune"] = {"epochs": 1, "parent": "/runs/xe"}
    _write(tmp_path, old)
    config, _ = read_run_config(tmp_path)
    assert config.format_version == 1
    assert config.weights == "default"  # recorded under train only
    assert config.encoder_trained


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("data"), "missing field 'data'"),
        (lambda c: c["encoder"].update(name=3), "encoder.name: expected a string, got 3"),
        (lambda c: c["decoder"].update(units="64"), 'decoder.units: expected an integer, got "64"'),
        (lambda c: c["train"].update(epochs=None), "train.epochs: expected an integer, got null"),
    ],
)
def test_a_bad_run_config_names_the_file_and_the_field(tmp_path, change, message):
    config = json.loads(json.dumps(CURRENT))
    change(config)
    _write(tmp_path, config)
    with pytest.raises(RunError) as caught:
        read_run_config(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'config.json'}: {message}"


def test_an_unreadable_run_config_is_a_run_error(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(RunError, match=r"config\.json: not a readable run config \("):
        read_run_config(tmp_path)
