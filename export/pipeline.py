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

# Settings shared by every model: chosen on the dev split (see README "Flickr8k").
COMMON = ["--min-count", "5", "--dropout", "0.3", "--batch-size", "128"]


@dataclass(frozen=True)
class Model:
    name: str  # run folder under --out
    encoder: str  # registry name (train/encoders.py), width included
    weights: str  # file name in --weights-dir
    decoder: str
    flags: tuple[str, ...] = ()  # caption-train flags beyond COMMON
    # Bundles to export and evaluate, as (format, precision).
    bundles: tuple[tuple[str, str], ...] = (("tflite", "int8"),)
    beams: tuple[int, ...] = (1, 3)
    # Beam ranking score / (words + 1) ** length_penalty, chosen on the dev split: 0.5 beat
    # 0 and 1.0 for the MobileNetV2 LSTM at beam 3 (docs/flickr8k.md).
    length_penalty: float = 0.5
    # Stages after cross-entropy, each from the one before: `caption-train finetune` flags
    # (the encoder's last blocks train with the decoder, train/finetune.py), then
    # `caption-train scst` flags (self-critical training on CIDEr-D, train/scst.py). The
    # last stage writes NAME; the ones before it NAME-xe and NAME-ft.
    finetune: tuple[str, ...] | None = None
    scst: tuple[str, ...] | None = None
    notes: str = field(default="", compare=False)


V2 = "mobilenet_v2_1.0_224_imagenet_bnfolded_no_top.h5"
EVERY_BUNDLE = (
    ("tflite", "fp32"),
    ("tflite", "fp16"),
    ("tflite", "dynamic"),
    ("tflite", "int8"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
)
MODELS = (
    Model(
        "mobilenet_v2-lstm",
        "mobilenet_v2",
        V2,
        "lstm",
        # r3 of the dev sweep: a wider embedding, a lower peak rate and a longer cosine
        # schedule beat r1's (embedding 256, 3e-3, 12 epochs) on dev (docs/flickr8k.md).
        ("--units", "512", "--embed-dim", "512", "--learning-rate", "2e-3", "--epochs", "20"),
        bundles=EVERY_BUNDLE,
        # Then 16 epochs of SCST from the cross-entropy run's best epoch, rewarding CIDEr-D
        # + 1.0 x the sample's BLEU-4 and keeping the best dev epoch (docs/flickr8k.md
        # "Self-critical training"): on dev at beam 3 the reward beat CIDEr-D alone (6
        # epochs: CIDEr-D 0.4559 vs 0.4545, BLEU-4 0.1971 vs 0.1866), and 16 epochs
        # (kept: 14) beat 6, 8 and 12 (CIDEr-D 0.4888 vs 0.4559, 0.4746, 0.4736).
        scst=(
            "--epochs",
            "16",
            "--learning-rate",
            "2e-4",
            "--images-per-batch",
            "32",
            "--bleu4-weight",
            "1.0",
        ),  # fmt: skip
        # Chosen on dev CIDEr-D at beam 3 for the end-aware SCST model (docs/flickr8k.md):
        # 2.0 (0.4875) beat 0.5, 0.85, 1.0, 1.5 and 3.0.
        length_penalty=2.0,
        notes="the recommended edge model",
    ),
    Model(
        "mobilenet_v2-blstm",
        "mobilenet_v2",
        V2,
        "blstm",
        (
            "--units",
            "256",
            "--embed-dim",
            "256",
            "--epochs",
            "6",
            "--epoch-fraction",
            "0.2",
            "--batch-size",
            "512",
        ),  # fmt: skip
        # One pair per word: 360,000 an epoch. A fresh fifth of them per epoch keeps an
        # epoch near one caption per image; not yet run on the real data (docs/flickr8k.md).
        notes="the seed's bidirectional variant",
    ),
    Model(
        "mobilenet_025-merge",
        "mobilenet_025",
        "mobilenet_2_5_224_tf_no_top.h5",
        "merge",
        ("--units", "256", "--embed-dim", "256", "--epochs", "12"),
        notes="the seed's MobileNet family, the smallest",
    ),
    Model(
        "mobilenet_v2_035-lstm",
        "mobilenet_v2_035",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
        "lstm",
        ("--units", "512", "--embed-dim", "256", "--epochs", "12"),
    ),
)


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
    stages = [(name, flags) for name, flags in (("ft", model.finetune), ("scst", model.scst))
              if flags is not None]  # fmt: skip
    folder = run if not stages else out / f"{model.name}-xe"
    train = [_bin("caption-train"), "--data", str(data), "--encoder", model.encoder,
             "--weights", weights, "--decoder", model.decoder, *COMMON, *model.flags,
             "--feature-cache", str(out / "features"), "--final-split", "none",
             "--out", str(folder)]  # fmt: skip
    _step(folder / "decoder.keras", train, log)
    for number, (stage, flags) in enumerate(stages, 1):
        parent, folder = folder, run if number == len(stages) else out / f"{model.name}-{stage}"
        command = [_bin("caption-train"), "finetune" if stage == "ft" else "scst", str(parent),
                   *flags, *(["--final-split", "none"] if stage == "ft" else []),
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
    table = [sys.executable, "-m", "edgecap.benchmarks.results", *map(str, metrics),
             "--out", str(out / "table.md")]  # fmt: skip
    subprocess.run(table, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
