"""`caption-train evaluate`: decode a split with a Keras run or a bundle, through the
runtime's decoding code, and score it. The quality we measure is the quality we ship."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from edgecap.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecap.edge_runtime.decoding import beam_search, greedy_decode
from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.metrics import caption_metrics
from edgecap.edge_runtime.scenes import scene_accuracy
from edgecap.edge_runtime.text import normalize_caption

from .flickr8k import load_dataset
from .synthetic import load_scenes

log = logging.getLogger(__name__)
GREEDY_BATCH = 256  # images decoded together by greedy search on a Keras run


def _keras_predictions(
    run_dir: Path, dataset, split: str, beam: int, length_penalty: float, feature_cache
) -> dict[str, str]:
    from .decoders import KerasStepModel, StepModule
    from .encoders import get_encoder_spec
    from .features import extract_features
    from .runs import load_run

    run = load_run(run_dir)
    spec = get_encoder_spec(run.config["encoder"]["name"])
    features = extract_features(
        dataset, split, spec, feature_cache_weights(run, spec), run.encoder, feature_cache
    )
    steps = KerasStepModel(StepModule(run.decoder, run.decoder_config))
    vocab, max_length = run.vocab, run.decoder_config.max_length
    ids = dataset.splits[split]
    decoded = []
    if beam == 1:
        for start in range(0, len(ids), GREEDY_BATCH):
            batch = features[start : start + GREEDY_BATCH]  # [B, F]
            decoded += greedy_decode(steps, batch, vocab.start_id, vocab.end_id, max_length)
    else:
        for row in features:
            best = beam_search(
                steps, row[None], vocab.start_id, vocab.end_id, max_length, beam, length_penalty
            )
            decoded.append(best[0])
    return {i: vocab.decode(d.tokens) for i, d in zip(ids, decoded, strict=True)}


def feature_cache_weights(run, spec) -> str:
    """The weights the run's features were cached under, as training named them: the
    ImageNet or file weights the encoder was built from, else the run's encoder.keras. So
    evaluation reuses training's feature cache instead of extracting every image again."""
    from .encoders import resolve_weights

    try:
        weights = resolve_weights(spec, run.config["train"].get("weights"))
    except (FileNotFoundError, ValueError):
        weights = None  # the weights file moved: key on the run's own encoder file
    return str(run.path / "encoder.keras") if weights is None else weights


def _bundle_predictions(
    bundle: Path, dataset, split: str, beam: int, length_penalty: float
) -> dict[str, str]:
    from edgecap.edge_runtime.captioner import Captioner, CaptionerOptions

    options = CaptionerOptions(beam_width=beam, length_penalty=length_penalty)
    with Captioner.from_bundle(bundle, options) as captioner:
        return {i: captioner.caption(dataset.image_path(i)).text for i in dataset.splits[split]}


def evaluate(
    target: str | Path,
    data: str | Path,
    split: str = "test",
    beam: int = 1,
    out: str | Path | None = None,
    length_penalty: float = 0.0,
    feature_cache: str | None = None,
    meteor: bool = True,
) -> dict:
    """Score a run directory or a bundle on a split; writes metrics.json and predictions.jsonl."""
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
    start = time.perf_counter()
    if kind == "run":
        predictions = _keras_predictions(
            target, dataset, split, beam, length_penalty, feature_cache
        )
    else:
        predictions = _bundle_predictions(target, dataset, split, beam, length_penalty)
    seconds = time.perf_counter() - start
    references = {i: [normalize_caption(c) for c in dataset.captions[i]] for i in predictions}
    metrics: dict = {
        "target": str(target),
        "kind": kind,
        "split": split,
        "beam": beam,
        "images": len(predictions),
    }
    metrics.update({k: round(v, 6) for k, v in caption_metrics(predictions, references).items()})
    if meteor:
        from .meteor import meteor_score

        value = meteor_score(predictions, references)
        if value is not None:
            metrics["meteor"] = round(value, 6)
    scenes = load_scenes(dataset.root)
    if scenes:
        metrics["scene_accuracy"] = round(scene_accuracy(predictions, scenes), 6)
    metrics["decode_seconds"] = round(seconds, 2)

    out_dir = Path(out) if out else target / f"eval-{split}-beam{beam}"
    write_json_atomic(out_dir / "metrics.json", metrics)
    with atomic_path(out_dir / "predictions.jsonl") as tmp:
        tmp.write_text(
            "".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in predictions.items())
        )
    metrics["out"] = str(out_dir)
    metrics["examples"] = [
        {"image": i, "caption": predictions[i], "reference": references[i][0]}
        for i in list(predictions)[:5]
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
