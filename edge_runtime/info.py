"""`edge_caption info BUNDLE`: what a bundle is, and what runs it on this machine.

Format and recipe, files and sizes, encoder and input size, vocabulary, decoder kind, the
parity and quality figures measured at export, and the model card, from the manifest;
then the runtime: the bundle opened with the default options, each model's backend and
delegate (XNNPACK or none). `--manifest-only` skips the runtime (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .builtin import resolve_bundle
from .errors import EdgeCaptionError
from .manifest import load_manifest


def runtime_facts(path: str | Path) -> dict[str, Any]:
    """The bundle opened with the default RuntimeOptions: each model's backend and delegate
    ('xnnpack', 'none', 'gpu'; None for ONNX) and onnxruntime providers. Where it cannot be
    opened here (no backend installed), {'error': why}: the manifest's facts still stand."""
    from .bundle import Bundle, RuntimeOptions

    try:
        with Bundle.open(path, RuntimeOptions(verify_hashes=False)) as opened:
            return {
                "backends": opened.backends,
                "delegates": opened.delegates,
                "providers": opened.providers,
            }
    except EdgeCaptionError as exc:
        return {"error": str(exc)}


def describe(bundle: str | None, runtime: bool = True) -> dict[str, Any]:
    """The facts `info` prints, as a JSON-ready dict (with `runtime`, the backends and
    delegates this machine runs it with, unless runtime=False). Raises BundleError for a
    bad bundle."""
    path = resolve_bundle(bundle)
    manifest = load_manifest(path, verify_hashes=True)
    files = {
        role: {
            "file": entry.file,
            "bytes": manifest.path(entry.file).stat().st_size,
            "precision": entry.precision,
        }
        for role, entry in manifest.models.items()
    }
    return {
        "bundle": str(path),
        "model_format": manifest.model_format,
        "recipe": manifest.recipe.name if manifest.recipe else None,
        "created": manifest.created,
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values())
        + manifest.path(manifest.vocab_file).stat().st_size,
        "encoder": manifest.encoder,
        "preprocessing": manifest.preprocessing.to_json(),
        "decoder": manifest.to_json()["decoder"],
        "vocab_size": manifest.vocab_size,
        "max_caption_length": manifest.max_length,
        "source": manifest.source,
        "parity": manifest.parity,
        "model_card": manifest.model_card,
        "runtime": runtime_facts(path) if runtime else None,
    }


def _mb(count: int) -> str:
    return f"{count / 1e6:.2f} MB"


def _text(info: dict[str, Any]) -> str:
    enc, dec, prep = info["encoder"], info["decoder"], info["preprocessing"]
    lines = [
        f"bundle      {info['bundle']}",
        f"format      {info['model_format']}, recipe {info['recipe']}, created {info['created']}",
        f"size        {_mb(info['total_bytes'])} in all",
    ]
    # Columns as wide as twoway's decoder_step_backward needs, else as they always were.
    roles = max(13, *(len(role) + 1 for role in info["files"]))
    names = max(22, *(len(f["file"]) + 2 for f in info["files"].values()))
    for role, f in info["files"].items():
        lines.append(
            f"  {role:<{roles}}{f['file']:<{names}}{_mb(f['bytes']):>10}  {f['precision']}"
        )
    width = f", alpha {enc['alpha']}" if enc.get("alpha") is not None else ""
    positions = enc.get("feature_positions")
    features = (
        f"{positions} positions × {enc.get('feature_dim')}" if positions else enc.get("feature_dim")
    )
    lines += [
        f"encoder     {enc.get('name')}{width}, {prep['input_size']} px input "
        f"({prep['resize']} resize, crop {prep['crop']}), {features} features",
        f"decoder     {dec.get('kind')}, {dec.get('units')} units, embedding "
        f"{dec.get('embed_dim')}; beam search length penalty {dec['length_penalty']:g}",
        f"vocabulary  {info['vocab_size']} words, captions up to {info['max_caption_length']} words",
    ]
    source = info["source"] or {}
    if "run" in source:
        lines.append(
            f"source run  {source['run']} (config sha256 {source.get('config_sha256', '')[:12]})"
        )
    elif "path" in source:  # older exports recorded the run's absolute path
        lines.append(f"source run  {source['path']}")
    parity = info["parity"]
    if parity:
        diffs = ", ".join(f"{k} {v:g}" for k, v in parity.get("max_abs_diff", {}).items())
        lines.append(
            f"parity      {parity.get('images')} images against Keras: identical captions "
            f"{parity.get('identical_caption_rate')}; max |diff| {diffs}"
        )
        quality = parity.get("quality") or {}
        for who in ("keras", "bundle"):
            if who in quality:
                scores = ", ".join(f"{k} {v}" for k, v in quality[who].items())
                lines.append(f"  {who:<10}{scores} (the parity images)")
    lines += _runtime_lines(info.get("runtime"))
    card = info["model_card"]
    if card:
        lines.append("model card")
        lines += _card_lines(card)
    else:
        lines.append("model card  none (exported before model cards; export again to add one)")
    return "\n".join(lines)


def _runtime_lines(runtime: dict[str, Any] | None) -> list[str]:
    if runtime is None:
        return []
    if "error" in runtime:
        return [f"runtime     cannot open it here: {runtime['error']}"]
    lines = ["runtime     (this machine, default options)"]
    roles = max(13, *(len(role) + 1 for role in runtime["backends"]))
    for role, backend in runtime["backends"].items():
        delegate = runtime["delegates"].get(role)
        providers = runtime["providers"].get(role)
        on = f"delegate {delegate}" if delegate else f"providers {', '.join(providers or [])}"
        lines.append(f"  {role:<{roles}}{backend}, {on}")
    return lines


def _card_lines(card: dict[str, Any], indent: str = "  ") -> list[str]:
    lines = []
    for key, value in card.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(f"{indent}{label}:")
            lines += _card_lines(value, indent + "  ")
        elif isinstance(value, list):
            lines.append(f"{indent}{label}:")
            lines += [f"{indent}  - {item}" for item in value]
        else:
            lines.append(f"{indent}{label}: {value}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge_caption info",
        description="Describe a bundle: format, recipe, files, encoder, vocabulary, decoder, "
        "the parity and quality measured at export, and its model card.",
    )
    parser.add_argument(
        "bundle",
        nargs="?",
        default=None,
        help="bundle folder written by caption-export, or a built-in model's name "
        "(default: the built-in model)",
    )
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    parser.add_argument(
        "--manifest-only",
        action="store_true",
        help="the manifest's facts alone: do not open the models to report the backend and "
        "delegate (XNNPACK or none) each runs with here",
    )
    args = parser.parse_args(argv)
    # The runtime's warnings (a model without XNNPACK) as one line each, named.
    logging.basicConfig(level=logging.WARNING, format="edge_caption info: %(message)s")
    try:
        info = describe(args.bundle, runtime=not args.manifest_only)
    except (EdgeCaptionError, OSError) as exc:
        print(f"edge_caption info: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0


def _test_scores(card: dict[str, Any]) -> str:
    tests = card.get("test_metrics") or {}
    parts = []
    for label, key in (("greedy", "greedy"), ("beam 3", "beam3")):
        scores = tests.get(key)
        if scores:
            parts.append(f"{label} BLEU-4 {scores['bleu4']:.3f} CIDEr-D {scores['cider_d']:.3f}")
    if not parts:
        return "not scored"
    return f"{tests.get('dataset', 'test split')}: " + "; ".join(parts)


def models_main(argv: list[str] | None = None) -> int:
    """`edge_caption models`: the bundles that ship inside the package."""
    from .builtin import MODELS_DIR, builtin_models

    parser = argparse.ArgumentParser(
        prog="edge_caption models",
        description="List the built-in models: name, size, recipe, test scores and licences. "
        "Use one with `edge_caption --model NAME` (the default needs no --model) or "
        "`Captioner.open(NAME)`; `edge_caption info NAME` shows its whole model card.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    args = parser.parse_args(argv)
    try:
        models = builtin_models()
    except EdgeCaptionError as exc:
        print(f"edge_caption models: error: {exc}", file=sys.stderr)
        return 2
    if not models:
        print(
            f"edge_caption models: no built-in model in this install ({MODELS_DIR})",
            file=sys.stderr,
        )
        return 1
    for model in models:
        card = model.model_card
        licenses = card.get("licenses") or {}
        if args.json:
            record = {
                "name": model.name,
                "default": model.default,
                "path": str(model.path),
                "bytes": model.bytes,
                "recipe": model.recipe,
                "test_metrics": card.get("test_metrics"),
                "licenses": licenses,
            }
            print(json.dumps(record))
            continue
        flag = " (default)" if model.default else ""
        print(f"{model.name}{flag}")
        print(f"  size      {_mb(model.bytes)}, recipe {model.recipe}")
        print(f"  trained   {(card.get('training_data') or {}).get('dataset', 'unknown')}")
        print(f"  scores    {_test_scores(card)}")
        print(f"  licences  weights: {licenses.get('weights', 'unknown')}; data: "
              f"{licenses.get('data', 'unknown')}")  # fmt: skip
    return 0
