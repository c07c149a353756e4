"""`make flickr8k`: train, export and evaluate the real Flickr8k models, resumably.

    python -m edgecap.export.pipeline --data DATA [--weights-dir DIR] --out artifacts/flickr8k

DATA is any dataset layout caption-train reads: a Flickr8k-layout folder, or Karpathy's
dataset_flickr8k.json with the images in Flicker8k_Dataset/ beside it. Without
--weights-dir (IMAGENET_WEIGHTS), each encoder starts from Keras' own published ImageNet
weights (`--weights imagenet`, downloaded once on first use) instead of the files named
in MODELS.

Every step is a `caption-train` / `caption-export` / `caption-train evaluate` command in
its own process, and a step whose output is already complete is skipped, so a rerun after
a kill (or a reboot) goes on from the first unfinished step; the commands themselves
resume from their last checkpoint or feature shard. The recipes are the ones chosen on
the dev split (README "Flickr8k"); the test split is scored only here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecap.train.configs import config_names, config_path, load_config, pipeline_entry

STAGE_SUFFIX = {"finetune": "ft", "scst": "scst"}  # a stage's run folder, when not the last


@dataclass(frozen=True)
class Model:
    """A model `make flickr8k` makes: a recipe of train/configs/ with a "pipeline" section."""

    name: str  # run folder under --out
    config: Path  # the recipe's file: every stage reads its section from it
    encoder: str  # registry name (train/encoders.py), width included
    weights: str  # the ImageNet weights' file name in --weights-dir
    decoder: str
    bundles: tuple[tuple[str, str], ...]  # (format, precision) pairs to export and evaluate
    beams: tuple[int, ...]
    length_penalty: float
    # Stages after cross-entropy, each from the one before: `caption-train finetune` (the
    # encoder's last blocks train with the decoder), then `caption-train scst`
    # (self-critical training). The last stage writes NAME; those before it NAME-xe, NAME-ft.
    stages: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)
    order: int = field(default=0, compare=False)  # place in the run and the table

    @classmethod
    def from_config(cls, name: str) -> Model:
        recipe = load_config(name)
        entry = pipeline_entry(recipe)
        return cls(name=entry.name, config=config_path(name), encoder=recipe["train"]["encoder"],
                   weights=entry.weights_file, decoder=recipe["train"]["decoder"]["kind"],
                   bundles=entry.bundles, beams=entry.beams, length_penalty=entry.length_penalty,
                   stages=tuple(s for s in ("finetune", "scst") if s in recipe),
                   notes=recipe.get("description", ""), order=entry.order)  # fmt: skip


MODELS = tuple(sorted((Model.from_config(n) for n in config_names("flickr8k-")),
                     key=lambda m: m.order))  # fmt: skip


def _bin(name: str) -> str:
    """The console script beside this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def _step(done: Path, command: list[str], log: Path) -> None:
    """Run `command` unless `done` exists; its output goes to the terminal and to `log`."""
    if done.exists():
        print(f"skip  {done} (done)")
        return
    print(f"run   {shlex.join(command)}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(
            f"make flickr8k: step failed (exit {result.returncode}); see {log}. "
            "Fix the cause and rerun: finished steps are skipped."
        )
    print(f"done  {done} in {time.perf_counter() - start:.0f} s", flush=True)


def model_weights(model: Model, weights_dir: Path | None) -> str:
    """caption-train's --weights for `model`: its file in `weights_dir`, or without one
    Keras' published ImageNet weights (downloaded on first use)."""
    if weights_dir is None:
        return "imagenet"
    weights = weights_dir / model.weights
    if not weights.is_file():
        raise SystemExit(
            f"make flickr8k: {weights}: weights file not found; pass IMAGENET_WEIGHTS=DIR "
            f"(a folder with {model.weights}), or leave IMAGENET_WEIGHTS unset for Keras' "
            "ImageNet weights"
        )
    return str(weights)


def run_model(
    model: Model,
    data: Path,
    weights_dir: Path | None,
    out: Path,
    only: set[str] | None = None,
) -> list[Path]:
    """Train, export and evaluate one model; returns its metrics.json files. `only`: the
    bundles (e.g. {"tflite-int8"}) to export and evaluate, of the model's own; None: all."""
    run = out / model.name
    weights = model_weights(model, weights_dir)
    log = out / "logs" / f"{model.name}.log"
    folder = run if not model.stages else out / f"{model.name}-xe"
    train = [_bin("caption-train"), "--config", str(model.config), "--data", str(data),
             "--weights", weights, "--feature-cache", str(out / "features"),
             "--final-split", "none", "--out", str(folder)]  # fmt: skip
    _step(folder / "decoder.keras", train, log)
    for number, stage in enumerate(model.stages, 1):
        parent = folder
        folder = run if number == len(model.stages) else out / f"{model.name}-{STAGE_SUFFIX[stage]}"
        command = [_bin("caption-train"), stage, str(parent), "--config", str(model.config),
                   *(["--final-split", "none"] if stage == "finetune" else []),
                   "--feature-cache", str(out / "features"), "--out", str(folder)]  # fmt: skip
        _step(folder / "decoder.keras", command, log)
    targets = [(run, "keras")]
    for model_format, precision in model.bundles:
        if only is not None and f"{model_format}-{precision}" not in only:
            continue
        bundle = out / f"{model.name}-{model_format}-{precision}"
        export = [_bin("caption-export"), str(run), "--format", model_format,
                  "--quantize", precision, "--length-penalty", str(model.length_penalty),
                  "--out", str(bundle)]  # fmt: skip
        _step(bundle / "manifest.json", export, log)
        targets.append((bundle, f"{model_format}-{precision}"))
    results = []
    for target, label in targets:
        for beam in model.beams:
            evaluation = out / "eval" / f"{model.name}-{label}-beam{beam}"
            command = [_bin("caption-train"), "evaluate", str(target), "--data", str(data),
                       "--beam", str(beam), "--length-penalty", str(model.length_penalty if beam > 1 else 0.0),
                       "--feature-cache", str(out / "features"),
                       "--out", str(evaluation)]  # fmt: skip
            _step(evaluation / "metrics.json", command, log)
            results.append(evaluation / "metrics.json")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecap.export.pipeline", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("FLICKR8K", ""),
        help="Flickr8k with its images: a Flickr8k-layout folder, or Karpathy's "
        "dataset_flickr8k.json with Flicker8k_Dataset/ beside it",
    )
    parser.add_argument(
        "--weights-dir",
        default=os.environ.get("IMAGENET_WEIGHTS", ""),
        help="folder of the ImageNet weight files MODELS names (default: Keras' published "
        "ImageNet weights, downloaded on first use)",
    )
    parser.add_argument(
        "--out", default="artifacts/flickr8k", help="output folder (default artifacts/flickr8k)"
    )
    parser.add_argument(
        "--models",
        default="all",
        help=f"comma list of {', '.join(m.name for m in MODELS)} (default all)",
    )
    parser.add_argument(
        "--bundles",
        default="all",
        help="comma list of the bundles to export and evaluate, e.g. tflite-int8 (default: "
        "each model's own list)",
    )
    args = parser.parse_args(argv)
    if not args.data or not Path(args.data).exists():
        parser.error(
            f"no Flickr8k dataset ({args.data or 'FLICKR8K unset'}); pass FLICKR8K=PATH: a "
            "Flickr8k-layout folder (images in PATH/Flicker8k_Dataset), or Karpathy's "
            "dataset_flickr8k.json with Flicker8k_Dataset/ beside it"
        )
    weights_dir = Path(args.weights_dir) if args.weights_dir else None
    if weights_dir is not None and not weights_dir.is_dir():
        parser.error(
            f"{weights_dir}: no such weights folder; pass IMAGENET_WEIGHTS=DIR, a folder of "
            "keras.applications .h5 files, or leave it unset for Keras' ImageNet weights"
        )
    if weights_dir is None:
        print("make flickr8k: no IMAGENET_WEIGHTS; the encoders start from Keras' ImageNet "
              "weights (--weights imagenet), downloaded on first use", flush=True)  # fmt: skip
    chosen = (
        MODELS if args.models == "all" else [m for m in MODELS if m.name in args.models.split(",")]
    )
    out = Path(args.out)
    metrics = []
    for model in chosen:
        only = None if args.bundles == "all" else set(args.bundles.split(","))
        metrics += run_model(model, Path(args.data), weights_dir, out, only)
    table = [sys.executable, "-m", "edgecap.train.eval_table", *map(str, metrics),
             "--out", str(out / "table.md")]  # fmt: skip
    subprocess.run(table, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
