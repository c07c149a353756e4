"""caption-train --preset and caption-train evaluate."""

import json
from pathlib import Path

import pytest

from edgecap.train.cli_train import _train_parser, build_config
from edgecap.train.configs import config_names, load_config


def test_presets_are_the_seed_configurations():
    assert config_names("seed-") == [
        "seed-inception-blstm",
        "seed-inception-lstm",
        "seed-mobilenet-blstm",
        "seed-mobilenet-lstm",
    ]
    for name in config_names("seed-"):
        train = load_config(name)["train"]
        assert train["encoder"] == ("inception_v3" if "inception" in name else "mobilenet")
        assert train["decoder"]["kind"] == ("blstm" if name.endswith("blstm") else "merge")
        assert train["weights"] == "imagenet"


def test_flags_override_the_preset():
    args = _train_parser().parse_args(
        [
            "--data",
            "d",
            "--out",
            "o",
            "--preset",
            "seed-mobilenet-blstm",
            "--weights",
            "none",
            "--units",
            "32",
        ]
    )
    config = build_config(args)
    assert (config.encoder, config.weights, config.decoder.kind) == ("mobilenet", "none", "blstm")
    assert (config.decoder.units, config.decoder.embed_dim, config.decoder.dropout) == (
        32,
        256,
        0.5,
    )
    plain = build_config(_train_parser().parse_args(["--data", "d", "--out", "o"]))
    assert (plain.encoder, plain.decoder.kind, plain.weights) == (
        "mobilenet_synth",
        "lstm",
        "default",
    )


@pytest.fixture(scope="module")
def run_eval(e2e, tmp_path_factory):
    from edgecap.train.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    return {
        "greedy": evaluate(e2e["run"], e2e["data"], out=out / "greedy", meteor=False),
        "beam": evaluate(e2e["run"], e2e["data"], beam=3, out=out / "beam", meteor=False),
        "bundle": evaluate(e2e["bundle"], e2e["data"], out=out / "bundle", meteor=False),
    }


def test_evaluate_writes_metrics_and_predictions(run_eval):
    greedy = run_eval["greedy"]
    for key in ("bleu1", "bleu4", "rouge_l", "cider_d", "scene_accuracy"):
        assert 0 <= greedy[key] <= 10, key
    metrics = json.loads((Path(greedy["out"]) / "metrics.json").read_text())
    assert metrics["images"] == 200 and metrics["kind"] == "run" and metrics["beam"] == 1


def test_evaluating_a_run_decodes_like_training_did(run_eval, e2e):
    """Training's own test evaluation and `evaluate` share the decoding code: same captions."""
    from_training = (e2e["run"] / "predictions.jsonl").read_text()
    from_evaluate = (Path(run_eval["greedy"]["out"]) / "predictions.jsonl").read_text()
    assert from_evaluate == from_training


def test_bundle_and_beam_evaluations(run_eval):
    assert run_eval["bundle"]["kind"] == "bundle"
    # The int8 bundle names about as many scenes as the Keras run it came from.
    assert run_eval["bundle"]["scene_accuracy"] >= run_eval["greedy"]["scene_accuracy"] - 0.1
    assert run_eval["beam"]["beam"] == 3 and run_eval["beam"]["images"] == 200


def test_results_table_from_evaluations(run_eval, tmp_path):
    from edgecap.train.eval_table import main

    files = [Path(run_eval[k]["out"]) / "metrics.json" for k in ("greedy", "beam", "bundle")]
    out = tmp_path / "table.md"
    assert main([str(f) for f in files] + ["--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| encoder | decoder | training | model | beam | BLEU-1 |")
    assert len(lines) == 2 + 3
    assert "| mobilenet_synth | lstm | XE | Keras run | 3 |" in lines[3]
    assert "| mobilenet_synth | lstm | XE | tflite-int8 | 1 |" in lines[4]  # the manifest's recipe
    assert lines[2].endswith(" min |")  # training time comes from the run's epochs
    # The bundle's row against the Keras run at the same beam (the greedy row, lines[2]).
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    bundle_row = [c.strip() for c in lines[4].strip("|").split("|")]
    keras_row = [c.strip() for c in lines[2].strip("|").split("|")]
    column = header.index("Δ BLEU-4")
    bleu4 = header.index("BLEU-4")
    expected = float(bundle_row[bleu4]) - float(keras_row[bleu4])
    assert abs(float(bundle_row[column]) - expected) <= 0.0015
    identical = float(bundle_row[header.index("identical to Keras")])
    assert 0.5 <= identical <= 1.0  # int8 of the e2e run: mostly the same words
    assert keras_row[column] == ""  # Keras rows are the reference


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam", "0"], "--beam must be between 1 and 100, got 0"),
        (["--beam", "3", "--length-penalty", "nan"], "--length-penalty must be a number between"),
        (["--beam", "3", "--length-penalty", "400"], "--length-penalty must be a number between"),
    ],
)
def test_evaluate_refuses_out_of_range_decoding_flags_before_loading(flags, message, capsys):
    """The same checks as edge_caption's (one declaration of the flags): exit 2, naming the
    flag, before the target (which does not exist here) is opened."""
    from edgecap.train.cli_train import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "no-such-run", "--data", "no-such-data", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
