"""`caption-export`: a trained run -> TFLite and/or ONNX bundles for the device.

One pair (`--format F --quantize P`): `--out` is the bundle folder. Several (`all` or a
comma list on either side): `--out` is a parent folder, each bundle goes to
`OUT/<format>-<precision>`, a failed pair does not stop the others, and the exit status
is non-zero if any failed. Either way a summary table ends the output.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgecap.edge_runtime.errors import EdgeCaptionError, interrupted

from . import formats

if TYPE_CHECKING:
    from .parity import Parity

# Precisions per --format, default first, from the registry (which imports no TensorFlow,
# so --help stays fast); tests/export/test_onnx.py checks it agrees with export.exporter's.
QUANTIZE: dict[str, tuple[str, ...]] = formats.PRECISIONS

log = logging.getLogger("edgecap.export.cli")


@dataclass
class Outcome:
    recipe: formats.Recipe
    out: Path
    error: str | None = None
    manifest: dict | None = None
    parity: Parity | None = None
    seconds: float = 0.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caption-export",
        description="Export a trained run to one bundle, or to several (one per format and "
        "precision pair).",
        epilog="pairs:\n" + "\n".join(f"  {r.name:<16}{r.description}" for r in formats.RECIPES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="run directory written by caption-train")
    parser.add_argument(
        "--format",
        default="tflite",
        help=f"model format: {', '.join(formats.FORMATS)}, a comma list, or all (default tflite)",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        help="precision: "
        + "; ".join(f"{f}: {', '.join(p)}" for f, p in formats.PRECISIONS.items())
        + " (the first is the default); a comma list, or all",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="one pair: the bundle folder (replaced atomically if it exists); several: the "
        "parent folder of OUT/<format>-<precision>",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=0.0,
        help="beam search's default length penalty for this bundle, recorded in its manifest: "
        "the value chosen on dev (caption-train evaluate --split dev --beam 3 "
        "--length-penalty P); default 0",
    )
    parser.add_argument(
        "--parity-images",
        type=int,
        default=100,
        help="test images for the parity check (default 100)",
    )
    parser.add_argument(
        "--max-dangling-endings",
        type=float,
        default=None,
        help="on real data, fail a bundle when more than this share of its greedy parity "
        "captions end on 'a', 'of', 'with' ... (default 0.02; 1 turns the check off, for "
        "smoke-test models)",
    )
    return parser


def _export_one(
    run: str,
    recipe: formats.Recipe,
    out: Path,
    parity_images: int,
    length_penalty: float,
    max_dangling_endings: float | None = None,
) -> Outcome:
    from .exporter import export_bundle
    from .onnx import OnnxExportError
    from .parity import Parity, ParityError
    from .tflite import UnsupportedOpsError

    outcome = Outcome(recipe, out)
    start = time.perf_counter()
    try:
        manifest = export_bundle(
            run, out, recipe.precision, parity_images, recipe.format, length_penalty,
            max_dangling_endings,
        )  # fmt: skip
        outcome.manifest, outcome.parity = manifest, Parity.from_json(manifest["parity"])
    except ParityError as exc:
        outcome.error, outcome.parity = str(exc), exc.parity
    except (
        EdgeCaptionError,
        UnsupportedOpsError,
        OnnxExportError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        outcome.error = str(exc)
    except Exception as exc:  # one pair's converter bug must not stop the other pairs
        log.exception("%s: export failed", recipe.name)
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - start
    return outcome


def summary_table(outcomes: list[Outcome]) -> str:
    """One line per pair: format, precision, status, size, parity, export seconds."""
    header = (
        f"{'format':<8}{'precision':<11}{'status':<10}{'KB':>9}{'identical':>11}"
        f"{'same scene':>12}{'max|dlogp|':>12}{'dBLEU-4':>9}{'dCIDEr-D':>10}{'seconds':>9}"
    )
    rows = [header]
    for o in outcomes:
        kb = "-"
        if o.manifest is not None:
            kb = f"{sum(m['bytes'] for m in o.manifest['models'].values()) / 1024:.1f}"
        identical = scene = logp = d_bleu = d_cider = "-"
        if o.parity and o.parity.quality:
            bleu, cider = o.parity.quality_drops()
            # Signed change of the bundle's greedy scores against Keras' on the parity images.
            d_bleu, d_cider = f"{0.0 - bleu:+.4f}", f"{0.0 - cider:+.4f}"
        if o.parity:
            identical = f"{o.parity.identical_caption_rate:.3f}"
            if o.parity.same_scene_rate is not None:
                scene = f"{o.parity.same_scene_rate:.3f}"
            logp = f"{o.parity.max_abs_diff['log_probs']:.2e}"
        status = "ok" if o.error is None else "failed"
        rows.append(
            f"{o.recipe.format:<8}{o.recipe.precision:<11}{status:<10}{kb:>9}{identical:>11}"
            f"{scene:>12}{logp:>12}{d_bleu:>9}{d_cider:>10}{o.seconds:>9.1f}"
        )
        if o.error is not None:
            rows.append(f"    failed: {o.error}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        recipes = formats.select(args.format, args.quantize)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_dangling_endings is not None and not 0 <= args.max_dangling_endings <= 1:
        parser.error("--max-dangling-endings is a share between 0 and 1")
    several = len(recipes) > 1 or "all" in (args.format, args.quantize) or "," in args.format
    several = several or "," in (args.quantize or "")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = Path(args.out)
    if importlib.util.find_spec("tensorflow") is None:
        from edgecap.train import no_tensorflow

        return no_tensorflow("caption-export")

    outcomes, target = [], out
    try:
        for recipe in recipes:
            target = out / recipe.name if several else out
            log.info("exporting %s (%s) to %s", recipe.name, recipe.description, target)
            outcome = _export_one(args.run, recipe, target, args.parity_images,
                                  args.length_penalty, args.max_dangling_endings)  # fmt: skip
            if outcome.error is None:
                from .exporter import summarize

                print(summarize(outcome.manifest))
                print(f"wrote {target} in {outcome.seconds:.1f} s")
            else:
                which = f"{recipe.name}: " if several else ""
                print(f"caption-export: error: {which}{outcome.error}", file=sys.stderr)
            outcomes.append(outcome)
    except KeyboardInterrupt:
        # Each bundle is built in a staging folder, which export_bundle removes on the way out.
        done = ", ".join(o.recipe.name for o in outcomes if o.error is None) or "none"
        return interrupted(
            f"caption-export: interrupted; {target} was not written (an older bundle there "
            f"is kept). Finished: {done}. Rerun the command to export it"
        )
    print(summary_table(outcomes))
    return 2 if any(o.error is not None for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
