"""One Markdown table from evaluation outputs (`caption-train evaluate ... --out DIR`).

    python -m edgecap.train.eval_table artifacts/synth-results/*/metrics.json
    python -m edgecap.train.eval_table [METRICS...] --record docs/results/flickr8k.json

Each row names the run's encoder, decoder, training (cross-entropy "XE", then maybe
fine-tuning of the encoder "FT" and self-critical "SCST") and training time, the beam
width, and the scores; cells a metric file lacks are left empty rather than guessed.
A row is read from what training wrote (the run's config.json and checkpoint history,
evaluate's predictions.jsonl), so it is made here; so is the table
(evaluation_markdown), which `caption-bench render flickr8k` puts into the README.

With --record, the rows are kept in a JSON file that is committed with the docs: rows from
the given metrics files replace the record's rows of the same run, model and beam, and
the table shows every row of the record. Trained models and their evaluations live under
artifacts/, which a new machine does not have, and `make flickr8k` takes longer than one
sitting; the record lets a partial rerun update its own rows without losing the others'.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgecap.benchmarks.tables import markdown_table
from edgecap.edge_runtime.atomic import sha256_file, write_json_atomic, write_text_atomic
from edgecap.edge_runtime.manifest import find_source_run, load_manifest

from .checkpoint import HISTORY, read_history
from .gallery import read_predictions
from .runs import RunConfig, read_run_config

# The stages after cross-entropy ("XE") a run's config.json can record, in training order.
STAGES = (("finetune", "FT"), ("scst", "SCST"))


# The columns that say what was evaluated (each a row's key, titled by it), then the scores.
IDENTITY = ("encoder", "decoder", "training", "model", "beam")
COLUMNS = (
    ("BLEU-1", "bleu1"),
    ("BLEU-2", "bleu2"),
    ("BLEU-3", "bleu3"),
    ("BLEU-4", "bleu4"),
    ("ROUGE-L", "rouge_l"),
    ("CIDEr-D", "cider_d"),
    ("METEOR", "meteor"),
    ("sent. BLEU-1", "bleu1_sentence_mean"),
    ("scene acc.", "scene_accuracy"),
    # Captions ending on "a", "of", "with" ...: what the n-gram scores do not see.
    ("dangling endings", "dangling_endings"),
)
# A bundle's row against the Keras run it came from, at the same beam width.
VERSUS_KERAS = (
    ("Δ BLEU-4", "d_bleu4"),
    ("Δ CIDEr-D", "d_cider_d"),
    ("identical to Keras", "identical_to_keras"),
)


def _cell(key: str, value: float) -> str:
    return f"{value:.1%}" if key == "dangling_endings" else f"{value:.3f}"


def evaluation_markdown(evaluations: list[dict]) -> str:
    """The table of evaluation rows: the columns any row has, the Keras deltas where known."""
    present = [(title, key) for title, key in COLUMNS if any(key in r for r in evaluations)]
    versus = [(t, k) for t, k in VERSUS_KERAS if any(k in r for r in evaluations)]
    header = [*IDENTITY, *(t for t, _ in present + versus), "train time"]
    table = []
    for r in evaluations:
        cells = [str(r[k]) for k in IDENTITY]
        cells += [_cell(k, r[k]) if k in r else "" for _, k in present]
        cells += [
            f"{r[k]:+.3f}" if k.startswith("d_") and k in r else f"{r[k]:.3f}" if k in r else ""
            for _, k in versus
        ]
        seconds = r.get("train_seconds")
        cells.append(f"{seconds / 60:.1f} min" if seconds is not None else "")
        table.append(cells)
    return markdown_table(header, table, text_columns=len(IDENTITY))


def _run_of(target: Path) -> Path:
    """The run directory behind an evaluated run or bundle."""
    if (target / "manifest.json").is_file():
        return find_source_run(target, load_manifest(target, verify_hashes=False).source) or target
    return target


def _config(run: Path) -> RunConfig | None:
    """The run's typed config.json (train/runs.py); None where the folder has none."""
    return read_run_config(run)[0] if (run / "config.json").is_file() else None


def train_seconds(run: Path) -> float | None:
    """Training time of a run over all its sessions (its history's epochs), its parents'
    (the runs its SCST or fine-tuning started from) included; None when it records none."""
    checkpoints = run / "checkpoints"
    if (checkpoints / HISTORY).is_file():
        history = read_history(checkpoints)
    elif (checkpoints / "state.json").is_file():  # runs trained before history.jsonl
        history = json.loads((checkpoints / "state.json").read_text())["history"]
    else:
        return None
    seconds = sum(h.get("seconds", 0.0) for h in history)
    config = _config(run)
    # The last stage's parent: an SCST run's config keeps its fine-tuned parent's entry.
    stage = config and (config.scst or config.finetune)
    if stage and stage.parent:
        seconds += train_seconds(Path(stage.parent)) or 0.0
    return seconds


def evaluation_row(metrics_file: Path) -> dict:
    metrics = json.loads(metrics_file.read_text())
    target = Path(metrics["target"])
    run = _run_of(target)
    config = _config(run)
    if metrics["kind"] == "run":
        model = "Keras run"
    else:
        manifest = load_manifest(target, verify_hashes=False)
        model = manifest.recipe.name if manifest.recipe else manifest.model_format
    return {
        "run_dir": str(run.resolve()),
        "run": run.name,
        "measured": time.strftime("%Y-%m-%d", time.gmtime(metrics_file.stat().st_mtime)),
        "encoder": config.encoder.name if config else "?",
        "decoder": config.decoder.kind if config else "?",
        "training": " + ".join(
            ["XE", *(name for key, name in STAGES if config and getattr(config, key))]
        ),
        "model": model,
        "beam": metrics["beam"],
        "train_seconds": train_seconds(run),
        # Which training of the run: rows of an earlier training of the same run are of
        # another model, and a new evaluation replaces all of them (update_record).
        **(
            {"decoder_sha256": sha256_file(run / "decoder.keras")[:16]}
            if (run / "decoder.keras").is_file()
            else {}
        ),  # fmt: skip
        **metrics,
    }


def _predictions(metrics_file: Path) -> dict[str, str]:
    path = metrics_file.with_name("predictions.jsonl")
    return read_predictions(path) if path.is_file() else {}


def compare_with_keras(evaluations: list[dict], files: list[Path]) -> None:
    """Adds to each bundle's row its change against the Keras run of the same run and beam:
    BLEU-4 and CIDEr-D points, and the share of images captioned exactly like Keras."""
    keras = {
        (r["run_dir"], r["beam"]): (r, f)
        for r, f in zip(evaluations, files, strict=True)
        if r["kind"] == "run"
    }
    for r, f in zip(evaluations, files, strict=True):
        match = keras.get((r["run_dir"], r["beam"]))
        if r["kind"] == "run" or match is None:
            continue
        base, base_file = match
        r["d_bleu4"] = r["bleu4"] - base["bleu4"]
        r["d_cider_d"] = r["cider_d"] - base["cider_d"]
        ours, theirs = _predictions(f), _predictions(base_file)
        common = [i for i in ours if i in theirs]
        if common:
            r["identical_to_keras"] = sum(ours[i] == theirs[i] for i in common) / len(common)


# What identifies a row of the record: a later evaluation of the same replaces it.
RECORD_KEY = ("run", "model", "beam")
# Workstation paths stay out of the committed record.
UNRECORDED = ("run_dir", "target")


def update_record(path: Path, evaluations: list[dict]) -> list[dict]:
    """Merge `evaluations` into the record at `path` (created if absent) and return all its rows,
    in the table's order (run, Keras first, then model, then beam). A row replaces the
    record's row of the same run, model and beam; a run trained again (another
    decoder_sha256) replaces every row of that run."""
    kept = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.is_file() else []
    new = [{k: v for k, v in r.items() if k not in UNRECORDED} for r in evaluations]
    keys = {tuple(r[k] for k in RECORD_KEY) for r in new}
    retrained = {r["run"]: r["decoder_sha256"] for r in new if r.get("decoder_sha256")}

    def stale(r: dict) -> bool:
        """A row of the run as it was trained before: its bundles are of another model."""
        return r["run"] in retrained and r.get("decoder_sha256") != retrained[r["run"]]

    merged = [r for r in kept if tuple(r[k] for k in RECORD_KEY) not in keys and not stale(r)]
    merged += new
    merged.sort(key=lambda r: (r["run"], r["model"] != "Keras run", r["model"], r["beam"]))
    write_json_atomic(path, {"rows": merged})
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecap.train.eval_table", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "metrics", nargs="*", type=Path, help="metrics.json files written by caption-train evaluate"
    )
    parser.add_argument(
        "--record",
        type=Path,
        help="JSON record of rows to update with these files; the table shows all its rows",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    missing = [p for p in args.metrics if not p.is_file()]
    if missing:
        print(f"results: {missing[0]}: not found", file=sys.stderr)
        return 2
    if not args.metrics and not args.record:
        parser.error("give metrics.json files, or --record FILE to render its rows")
    evaluations = [evaluation_row(p) for p in args.metrics]
    compare_with_keras(evaluations, args.metrics)
    if args.record:
        evaluations = update_record(args.record, evaluations)
    table = evaluation_markdown(evaluations)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
