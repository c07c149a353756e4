"""`make release-model`: copy a bundle that `make flickr8k` produced into the package as a
built-in model (edge_runtime/builtin.py), with its provenance and test scores.

    python -m edgecap.export.release artifacts/flickr8k/mobilenet_v2-lstm-tflite-int8 \\
        --data ../shared/data/flickr8k-224 [--name mobilenet_v2-lstm]

The bundle is checked first (every file's hash, the parity record and the export gate's
verdict on it, a model card that names the data and the weights), then captioned on the
whole test split, greedy and at beam 3 with the bundle's own length penalty, by the one
scorer. Those scores, what made the bundle (the pipeline's model and flags, the run's
config hash) and the date go into its model card; the folder is swapped in atomically.
tests/e2e/test_builtin_model.py re-scores the shipped files and holds them to the card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.atomic import swap_dir_into_place, write_json_atomic
from edgecap.edge_runtime.builtin import DEFAULT_MODEL, MODELS_DIR
from edgecap.edge_runtime.bundle import Bundle
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import BundleError, EdgeCaptionError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import caption_split, score_split
from edgecap.edge_runtime.manifest import load_manifest

from . import formats
from .pipeline import MODELS, STAGE_SUFFIX

log = logging.getLogger(__name__)
# The decodings a built-in model's card records and the honesty test re-scores.
DECODINGS = {"greedy": 1, "beam3": 3}
CITATION = (
    "Micah Hodosh, Peter Young and Julia Hockenmaier (2013). Framing Image Description as "
    "a Ranking Task: Data, Models and Evaluation Metrics. Journal of Artificial "
    "Intelligence Research 47, 853-899."
)


class ReleaseError(Exception):
    pass


def score_test_split(bundle: Path, data: Path, progress: bool = True) -> dict[str, Any]:
    """The bundle's scores on the whole test split of `data`, per DECODINGS (beam search
    with the bundle's own length penalty), as its card records them."""
    dataset = load_dataset(data)
    ids = dataset.splits["test"]
    # The 224 px copy's figures are labelled as such wherever they are quoted.
    name = "Flickr8k (224 px copy)" if data.name == "flickr8k-224" else f"Flickr8k ({data.name})"
    result: dict[str, Any] = {"dataset": f"{name}, test split", "images": len(ids)}
    with Captioner.open(bundle) as captioner:
        for label, beam in DECODINGS.items():
            if progress:
                print(f"release: captioning {len(ids)} test images, {label}", flush=True)
            predictions = caption_split(captioner, dataset, ids, DecodeOptions(beam_width=beam))
            scores = score_split(dataset, "test", predictions).to_json()
            scores.pop("images")
            if beam > 1:
                scores["length_penalty"] = captioner.manifest.length_penalty
            result[label] = scores
    return result


def _check(bundle: Path) -> None:
    """Refuse a bundle that is damaged, was never judged, or does not say what it is."""
    from .parity import Parity, ParityError, judge_parity

    with Bundle.open(bundle):  # every hash, tensor name and shape, and that it loads
        pass
    manifest = load_manifest(bundle)
    try:
        parity = Parity.from_json(manifest.parity or {}, f"{bundle / 'manifest.json'} parity")
    except BundleError:  # none, or one from an export older than the parity record's fields
        parity = None
    if parity is None or not parity.quality:
        raise ReleaseError(f"{bundle}: no parity record on real images; export it again")
    if manifest.recipe is None:
        raise ReleaseError(f"{bundle}: the manifest names no recipe; export it again")
    try:
        judge_parity(formats.get(manifest.recipe.format, manifest.recipe.precision), parity)
    except ParityError as exc:
        raise ReleaseError(f"{bundle}: fails the export gate: {exc}") from None
    card = manifest.model_card or {}
    for field in ("training_data", "encoder_weights", "licenses", "limitations"):
        if not card.get(field):
            raise ReleaseError(f"{bundle}: the model card has no {field}; export it again")


def _pipeline_recipe(run_name: str) -> dict[str, Any]:
    """How `make flickr8k` makes the run: its recipe (train/configs/), as the pipeline's
    stages use it (a NAME-xe or NAME-ft run is an earlier stage of the model NAME)."""
    from edgecap.train.configs import load_config

    stage_of = {"xe": "train", **{suffix: stage for stage, suffix in STAGE_SUFFIX.items()}}
    model_name, _, suffix = run_name.rpartition("-")
    if suffix not in stage_of:
        model_name, suffix = run_name, ""
    model = next((m for m in MODELS if m.name == model_name), None)
    if model is None:
        return {"command": "unknown: not a model of export/pipeline.py"}
    recipe = load_config(model.config)
    stages = ["train", *model.stages]
    last = stages.index(stage_of[suffix]) if suffix else len(stages) - 1
    made: dict[str, Any] = {"command": f"make flickr8k F8K_MODELS={model.name}",
                            "recipe": model.config.name}  # fmt: skip
    for stage in stages[: last + 1]:
        made[stage] = recipe[stage]
    if suffix:
        made["stage"] = f"{run_name}, the {stage_of[suffix]} stage of {model.name}"
    made["caption-export"] = ["--length-penalty", str(model.length_penalty)]
    return made


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def release(bundle: Path, data: Path, name: str, progress: bool = True) -> Path:
    """Check, score and copy `bundle` into the package as built-in model `name`."""
    _check(bundle)
    manifest = load_manifest(bundle)
    source = manifest.source or {}
    run_name = source.get("run", "")
    scores = score_test_split(bundle, data, progress)
    card = dict(manifest.model_card or {})
    card["training_data"] = {**card["training_data"], "cite": CITATION}
    card["test_metrics"] = scores
    card["provenance"] = {
        "released": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "by": "make release-model (export/release.py)",
        "source_run": run_name,
        "run_config_sha256": source.get("config_sha256"),
        "recipe": manifest.recipe.name if manifest.recipe else None,
        "pipeline": _pipeline_recipe(run_name),
        "code_commit": _git_commit(),
        "data": f"{data.name} (test scores above)",
    }
    target = MODELS_DIR / name
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=MODELS_DIR))
    try:
        for item in bundle.iterdir():
            if item.is_file() and item.name != "manifest.json":
                shutil.copyfile(item, staging / item.name)
        staged = replace(manifest, root=staging, model_card=card)
        write_json_atomic(staging / "manifest.json", staged.to_json())
        with Bundle.open(staging):  # the copy, as a device will open it
            pass
        swap_dir_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecap.export.release", description=__doc__.split("\n")[0]
    )
    parser.add_argument("bundle", help="a bundle folder written by make flickr8k / caption-export")
    parser.add_argument("--data", required=True, help="the Flickr8k folder it was trained on")
    parser.add_argument(
        "--name", default=DEFAULT_MODEL, help=f"built-in name (default {DEFAULT_MODEL})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        target = release(Path(args.bundle), Path(args.data), args.name)
    except (ReleaseError, EdgeCaptionError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 2
    card = load_manifest(target, verify_hashes=False).model_card or {}
    print(json.dumps({"released": str(target), "test_metrics": card.get("test_metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
