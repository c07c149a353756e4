"""Recipes as data (train/configs/): every recipe loads and builds its configs, a bad key
or value names the file and the key, and flags win over a recipe."""

import json

import pytest

from edgecap.train.cli_train import _train_parser, build_config
from edgecap.train.configs import config_names, load_config


@pytest.mark.parametrize("name", config_names())
def test_every_recipe_loads_and_builds_its_configs(name):
    from edgecap.train.finetune import FinetuneConfig
    from edgecap.train.scst import ScstConfig

    recipe = load_config(name)
    config = build_config(
        _train_parser().parse_args(["--data", "d", "--out", "o", "--config", name])
    )
    for key, value in recipe["train"].items():
        if key != "decoder":
            assert getattr(config, key) == value, key
    for key, value in recipe["train"].get("decoder", {}).items():
        assert getattr(config.decoder, key) == value, key
    if "scst" in recipe:
        ScstConfig(**recipe["scst"])
    if "finetune" in recipe:
        FinetuneConfig(**recipe["finetune"]).check()


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"train": {"epochs": 2, "unitz": 3}},
            r"train\.unitz is not a setting; choose from .*epochs",
        ),
        (
            {"train": {"decoder": {"units": "big"}}},
            r"train\.decoder\.units is 'big'; it takes a int",
        ),
        ({"train": {"decoder": {"vocab_size": 9}}}, r"train\.decoder\.vocab_size is not a setting"),
        ({"train": {"epochs": 2.5}}, r"train\.epochs is 2\.5; it takes a int"),
        ({"train": {"data": "x"}}, r"train\.data is not a setting"),
        ({"train": {}, "scst": {"flip": True}}, r"scst\.flip is not a setting"),
        ({"train": {}, "extra": {}}, r"extra is not a section"),
        ({"scst": {}}, r"a recipe is an object with at least a \"train\" section"),
    ],
)
def test_a_bad_recipe_names_its_file_and_key(tmp_path, recipe, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=rf"{path}: {message}"):
        load_config(path)


def test_an_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"nope: no such recipe; .*seed-mobilenet-lstm"):
        load_config("nope")


def test_flags_win_over_the_recipe_in_every_command(tmp_path, monkeypatch):
    from edgecap.train import cli_train

    args = ["--data", "d", "--out", "o", "--config", "flickr8k-mobilenet_v2-lstm", "--epochs", "3",
            "--units", "64"]  # fmt: skip
    config = build_config(_train_parser().parse_args(args))
    assert (config.epochs, config.decoder.units, config.decoder.embed_dim) == (3, 64, 512)
    with pytest.raises(ValueError, match="pass one of them"):
        build_config(_train_parser().parse_args(
            ["--data", "d", "--out", "o", "--config", "synth-lstm", "--preset", "seed-mobilenet-lstm"]
        ))  # fmt: skip

    seen = {}
    monkeypatch.setattr("edgecap.train.scst.scst",
                        lambda run, out, config, cache: seen.setdefault("scst", config) and {"history": []})  # fmt: skip
    assert cli_train.main(["scst", "parent", "--out", str(tmp_path / "s"), "--config",
                           "flickr8k-mobilenet_v2-lstm", "--learning-rate", "1e-3"]) == 0  # fmt: skip
    scst = seen["scst"]
    recipe = load_config("flickr8k-mobilenet_v2-lstm")["scst"]
    for key in ("epochs", "images_per_batch", "bleu4_weight", "ema_decay", "dangling_penalty"):
        assert getattr(scst, key) == recipe[key], key  # the recipe's
    assert (scst.ema_decay, scst.dangling_penalty) != (0.0, 0.0)  # not merely the defaults
    assert scst.learning_rate == 1e-3 != recipe["learning_rate"]  # the flag's
    with pytest.raises(SystemExit):  # a recipe without a finetune section
        cli_train.main(["finetune", "parent", "--out", "o", "--config", "synth-lstm"])


def test_scst_switches_turn_off_what_defaults_on_and_on_what_defaults_off(tmp_path, monkeypatch):
    from edgecap.train import cli_train

    seen = []
    monkeypatch.setattr("edgecap.train.scst.scst",
                        lambda run, out, config, cache: seen.append(config) or {"history": []})  # fmt: skip
    base = ["scst", "parent", "--out", str(tmp_path / "s"), "--train-blocks", "8"]
    for extra in ([], ["--augment", "--no-end-aware"]):
        assert cli_train.main([*base, *extra]) == 0
    plain, switched = seen
    assert (plain.train_blocks, plain.augment, plain.end_aware) == (8, False, True)
    assert (switched.augment, switched.end_aware) == (True, False)
