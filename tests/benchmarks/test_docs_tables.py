"""`make docs-tables`: the README's tables come from result files, rendered between markers."""

import json

import pytest

from edgecap.benchmarks.bench import main as bench_main


def test_the_demo_table_is_rendered_from_report_json_between_its_markers(tmp_path):
    report = {
        "test_images": 500,
        "measured_through": "edge_caption (ai_edge_litert) on the int8 bundle",
        "bundle_bytes": 966120,
        "scene_accuracy": 0.988,
        "bleu4": 0.99612,
        "cider_d": 7.91,
        "caption_ms_median": 0.861,
        "video_frames": 300,
        "video_frames_captioned": 290,
        "video_scene_accuracy": 1.0,
        "keras_test_metrics": {"scene_accuracy": 0.988, "bleu4": 0.997, "cider_d": 7.93},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN demo -->\nold table\n<!-- END demo -->\nafter\n")
    args = [str(tmp_path / "report.json"), "--into", str(readme)]
    assert bench_main(["render", "demo", *args]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert (
        "| **TFLite int8 bundle** | **966,120 B** | **0.988** | **0.996** | **7.910** | **0.86** |"
        in text
    )
    assert "| Keras run (TensorFlow, for reference) | — | 0.988 | 0.997 | 7.930 | — |" in text
    assert "300-frame test video: 290 frames captioned, scene accuracy 1.000." in text
    assert bench_main(["render", "demo", *args]) == 0 and readme.read_text() == text  # idempotent


def test_rendering_a_missing_report_says_which_file_and_what_to_run(tmp_path):
    with pytest.raises(
        SystemExit, match=r"nope\.json: cannot read the demo report .*; run make demo"
    ):
        bench_main(
            ["render", "demo", str(tmp_path / "nope.json"), "--into", str(tmp_path / "README.md")]
        )


def test_the_training_memory_table_shows_the_cases_that_finished(tmp_path):
    rows = [
        {"case": "Flickr8k LSTM, warm cache (1 epoch)", "captions": 30000, "peak_rss_gb": 1.234,
         "seconds": 251.4, "exit_code": 0},
        {"case": "synthetic, 100,000 captions (1 epoch)", "captions": 100030, "peak_rss_gb": 9.9,
         "seconds": 3.0, "exit_code": 1},
    ]  # fmt: skip
    (tmp_path / "training-memory.json").write_text(json.dumps({"machine": {}, "rows": rows}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN training-memory -->\n<!-- END training-memory -->\n")
    args = [
        "render",
        "training-memory",
        str(tmp_path / "training-memory.json"),
        "--into",
        str(readme),
    ]
    assert bench_main(args) == 0
    text = readme.read_text()
    assert "| Flickr8k LSTM, warm cache (1 epoch) | 30,000 | 1.23 GB | 251 |" in text
    assert "100,000" not in text  # a case that failed has no figures to show


def test_the_flickr8k_record_keeps_rows_a_partial_rerun_did_not_touch(tmp_path):
    """`make docs-tables` merges new evaluations into the committed record by (run, model,
    beam): a rerun of one model replaces its rows and keeps every other model's."""
    from edgecap.train import eval_table

    def record_row(run, model, beam, bleu4):
        return {"run": run, "encoder": "e", "decoder": "lstm", "training": "XE", "model": model,
                "beam": beam, "kind": "run", "bleu4": bleu4, "train_seconds": 60.0}  # fmt: skip

    record = tmp_path / "flickr8k.json"
    old = [record_row("small", "Keras run", 1, 0.1), record_row("big", "Keras run", 1, 0.2)]
    record.write_text(json.dumps({"rows": old}))
    rerun = {**record_row("big", "Keras run", 1, 0.3), "run_dir": "/home/me/big", "target": "/x"}
    rows = eval_table.update_record(record, [rerun, record_row("big", "tflite-int8", 1, 0.29)])
    assert [(r["run"], r["model"], r["bleu4"]) for r in rows] == [
        ("big", "Keras run", 0.3), ("big", "tflite-int8", 0.29), ("small", "Keras run", 0.1),
    ]  # fmt: skip
    saved = json.loads(record.read_text())["rows"]
    assert saved == rows and not any("run_dir" in r or "target" in r for r in saved)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN flickr8k -->\n<!-- END flickr8k -->\n")
    assert eval_table.main(["--record", str(record)]) == 0  # no metrics files: the record alone
    assert bench_main(["render", "flickr8k", str(record), "--into", str(readme)]) == 0
    table = readme.read_text()
    assert table.count("| e | lstm | XE |") == 3 and "| 0.300 |" in table and "| 0.100 |" in table


def test_the_committed_flickr8k_record_renders_the_readme_table():
    """README's Flickr8k table is docs/results/flickr8k.json rendered, nothing typed."""
    from pathlib import Path

    from edgecap.train import eval_table as results

    root = Path(__file__).resolve().parents[2]
    rows = json.loads((root / "docs/results/flickr8k.json").read_text())["rows"]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- BEGIN flickr8k -->\n")[1].split("\n<!-- END flickr8k -->")[0]
    assert block == results.evaluation_markdown(rows)


def test_a_retrained_run_replaces_every_row_of_its_earlier_training(tmp_path):
    """Rows carry the hash of the run's decoder: once a run is trained again, its old rows
    (other bundles of the old model) leave the record, even those not evaluated again."""
    from edgecap.train import eval_table

    def record_row(model, beam, bleu4, decoder=None):
        return {"run": "big", "encoder": "e", "decoder": "lstm", "training": "XE",
                "model": model, "beam": beam, "kind": "run", "bleu4": bleu4,
                **({"decoder_sha256": decoder} if decoder else {})}  # fmt: skip

    record = tmp_path / "flickr8k.json"
    old = [record_row("Keras run", 1, 0.2, "aaaa"), record_row("onnx-fp32", 1, 0.2, "aaaa"),
           record_row("tflite-int8", 3, 0.21, "aaaa")]  # fmt: skip
    record.write_text(json.dumps({"rows": old}))
    partial = eval_table.update_record(record, [record_row("tflite-int8", 1, 0.19, "aaaa")])
    assert len(partial) == 4  # the same training: a partial rerun keeps the other rows
    rows = eval_table.update_record(record, [record_row("Keras run", 1, 0.22, "bbbb")])
    assert [(r["model"], r["bleu4"]) for r in rows] == [("Keras run", 0.22)]
    # Rows recorded before the hash existed count as another training.
    record.write_text(json.dumps({"rows": [record_row("onnx-fp32", 1, 0.2)]}))
    rows = eval_table.update_record(record, [record_row("Keras run", 1, 0.22, "bbbb")])
    assert [(r["model"], r["bleu4"]) for r in rows] == [("Keras run", 0.22)]


def test_a_run_made_in_stages_names_them_and_counts_every_stages_training_time(tmp_path):
    """XE -> FT (caption-train finetune) -> SCST: the row says "XE + FT + SCST" and its
    training time adds the three runs' epochs, each counted once."""
    from edgecap.edge_runtime.schema import to_json
    from edgecap.train import eval_table
    from edgecap.train.decoders import DecoderConfig
    from edgecap.train.runs import RunConfig, RunEncoder, RunStage
    from edgecap.train.training import TrainConfig

    def make_run(name, seconds, **stages):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        history = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(seconds)]
        (run / "checkpoints" / "state.json").write_text(json.dumps({"history": history}))
        config = RunConfig(train=TrainConfig(), decoder=DecoderConfig(),
                           encoder=RunEncoder(name="e", preprocessing={}), data=str(tmp_path),
                           **{k: RunStage(parent=v) for k, v in stages.items()})  # fmt: skip
        (run / "config.json").write_text(json.dumps(to_json(config)))
        return run

    xe = make_run("xe", [100.0, 100.0])
    ft = make_run("ft", [50.0], finetune=str(xe))
    # An SCST run keeps its parent's config, the finetune entry included.
    scst = make_run("scst", [10.0, 10.0], finetune=str(xe), scst=str(ft))
    assert eval_table.train_seconds(scst) == 270.0
    assert eval_table.train_seconds(ft) == 250.0
    metrics = tmp_path / "eval" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"target": str(scst), "kind": "run", "beam": 1, "bleu4": 0.2}))
    assert eval_table.evaluation_row(metrics)["training"] == "XE + FT + SCST"
