"""`caption-train evaluate`: decode a split with a Keras run or a bundle, through the
runtime's decoding code, and score it with the one scorer. The quality we measure is the
quality we ship."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from edgecap.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import caption_split, references_for, score_split

log = logging.getLogger(__name__)


def evaluate(
    target: str | Path,
    data: str | Path,
    split: str = "test",
    beam: int = 1,
    out: str | Path | None = None,
    length_penalty: float | None = None,
    feature_cache: str | None = None,
    meteor: bool = True,
) -> dict:
    """Score a run directory or a bundle on a split; writes metrics.json and predictions.jsonl.

    `length_penalty` None decodes with the target's own: a bundle's manifest value, 0 for a run.
    """
    target = Path(target)
    dataset = load_dataset(data)
    if split not in dataset.splits:
        raise EdgeCaptionError(f"unknown split {split!r}; choose one of {sorted(dataset.splits)}")
    if (target / "manifest.json").is_file():
        kind = "bundle"
    elif (target / "config.json").is_file():
        kind = "run"
    else:
        raise EdgeCaptionError(
            f"{target}: neither a run (config.json) nor a bundle (manifest.json)"
        )
    decode = DecodeOptions(beam_width=beam, length_penalty=length_penalty)
    ids = dataset.splits[split]
    start = time.perf_counter()
    if kind == "run":
        from .features import default_cache_dir
        from .keras_captioner import KerasCaptioner

        cache = feature_cache or default_cache_dir()  # reuse what training extracted
        predictions = caption_split(
            KerasCaptioner.open(target, feature_cache=cache), dataset, ids, decode
        )
    else:
        from edgecap.edge_runtime.captioner import Captioner

        with Captioner.open(target) as captioner:
            predictions = caption_split(captioner, dataset, ids, decode)
            if length_penalty is None:
                length_penalty = captioner.manifest.length_penalty
    seconds = time.perf_counter() - start
    metrics: dict = {
        "target": str(target),
        "kind": kind,
        "split": split,
        "beam": beam,
        "length_penalty": length_penalty or 0.0,
        **score_split(dataset, split, predictions, meteor=meteor).to_json(),
        "decode_seconds": round(seconds, 2),
    }

    out_dir = Path(out) if out else target / f"eval-{split}-beam{beam}"
    write_json_atomic(out_dir / "metrics.json", metrics)
    with atomic_path(out_dir / "predictions.jsonl") as tmp:
        tmp.write_text(
            "".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in predictions.items())
        )
    metrics["out"] = str(out_dir)
    references = references_for(dataset, list(predictions)[:5])  # the examples' only
    metrics["examples"] = [
        {"image": i, "caption": predictions[i], "reference": references[i][0]} for i in references
    ]
    return metrics


def format_table(metrics: dict) -> str:
    names = ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d", "meteor", "scene_accuracy"]
    present = [n for n in names if n in metrics]
    lines = [
        f"{metrics['kind']} {metrics['target']} on {metrics['split']} ({metrics['images']} images, beam {metrics['beam']})",
        " | ".join(f"{n:>14}" for n in present),
        " | ".join(f"{metrics[n]:>14.4f}" for n in present),
        "examples:",
    ]
    lines += [
        f"  {e['image']}: {e['caption']!r}  (ref: {e['reference']!r})" for e in metrics["examples"]
    ]
    lines.append(f"wrote {metrics['out']}/metrics.json and predictions.jsonl")
    return "\n".join(lines)
