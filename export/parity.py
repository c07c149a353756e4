"""Export's parity check: how closely a staged bundle decodes like the Keras run it came
from (`measure_parity`), and whether that is close enough to ship (`judge_parity`).

Measuring and judging are apart, as in optimum's validate_model_outputs: the measurement
runs every image and every check to the end and records each failure, the judgment reads
the recipe's own tolerances (formats.Tolerance), and both report each check as passed or
failed through logging, never print: the library does not own the terminal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecap.edge_runtime.bundle import Bundle, RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import TwoWayModel
from edgecap.edge_runtime.evaluation.metrics import score_split
from edgecap.edge_runtime.evaluation.scenes import load_scenes, parse_caption
from edgecap.edge_runtime.manifest import load_manifest, tensor_names
from edgecap.edge_runtime.preprocess import load_pixels
from edgecap.edge_runtime.schema import from_json, to_json
from edgecap.edge_runtime.step_models import BACKWARD_ROLES
from edgecap.train.keras_captioner import KerasCaptioner
from edgecap.train.runs import TrainedRun

from . import formats

log = logging.getLogger(__name__)

# Whose captions the parity check scores: Keras, the bundle, and each half of the bundle
# alone (its encoder with Keras' decoder, Keras' encoder with its decoders), to say which
# file is to blame when the bundle's captions are worse than Keras'.
QUALITY_SOURCES = ("keras", "bundle", "bundle_encoder_only", "bundle_decoder_only")


@dataclass(frozen=True)
class QualityScores:
    """Greedy captions of the parity images, scored against their references."""

    bleu4: float
    cider_d: float
    dangling_endings: float = 0.0  # share ending on a dangling word; older records lack it


@dataclass(frozen=True)
class Parity:
    """A bundle against its Keras run on the first test images: manifest.json's `parity`."""

    images: int
    max_abs_diff: dict[str, float]  # per compared tensor, over every image
    identical_caption_rate: float  # greedy captions, word for word
    same_scene_rate: float | None = None  # synthetic data only: the same scene named
    quality: dict[str, QualityScores] = field(default_factory=dict)  # by QUALITY_SOURCES
    # Tensors whose shape differs from Keras' ("h: the bundle gives (1, 64), Keras (1, 128)"),
    # each once; None when every shape matched (the only case a bundle is written in).
    shape_mismatches: list[str] | None = None

    @classmethod
    def from_json(cls, obj: Any, source: str = "manifest.json parity") -> Parity:
        return from_json(cls, obj, source)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    def quality_drops(self, source: str = "bundle") -> tuple[float, float]:
        """(BLEU-4 drop, CIDEr-D drop) of `source`'s captions against Keras' on the parity images."""
        keras, other = self.quality["keras"], self.quality[source]
        return keras.bleu4 - other.bleu4, keras.cider_d - other.cider_d


class ParityError(RuntimeError):
    """A bundle misses its recipe's parity tolerance (formats.Tolerance)."""

    def __init__(self, message: str, parity: Parity):
        super().__init__(message)
        self.parity = parity


class _MaxAbsDiff:
    """The running max abs difference per tensor, and each tensor whose shape differs."""

    def __init__(self, names: list[str]) -> None:
        self.diffs = dict.fromkeys(names, 0.0)
        self.mismatches: dict[str, str] = {}

    def compare(self, name: str, expected: Any, actual: Any) -> None:
        expected, actual = np.asarray(expected), np.asarray(actual)
        if expected.shape != actual.shape:  # optimum's order: names, then shapes, then values
            self.mismatches.setdefault(
                name, f"{name}: the bundle gives shape {actual.shape}, Keras {expected.shape}"
            )
            return
        # twoway's backward_* tensors join on first sight
        self.diffs[name] = max(self.diffs.get(name, 0.0), float(np.max(np.abs(expected - actual))))


def measure_parity(run: TrainedRun, bundle: Path, dataset: Any, n_images: int) -> Parity:
    """Compare the bundle with the Keras run on test images: per-output max abs diff, then captions.

    Both sides have the one captioner face: the bundle is opened as a device opens it
    (Bundle.open, with the backend a device would pick for its format) and the run as a
    KerasCaptioner, so the figures describe the files that ship, whatever their format.
    """
    ids = dataset.splits["test"][:n_images]
    keras = KerasCaptioner.open(run)
    init_outputs = tensor_names(run.decoder_config.kind)["decoder_init"]["outputs"]
    diffs = _MaxAbsDiff(["features", *init_outputs, "log_probs"])
    identical = same_scene = 0
    captions: dict[str, dict[str, str]] = {k: {} for k in QUALITY_SOURCES}
    model_format = load_manifest(bundle, verify_hashes=False).model_format
    runtime = RuntimeOptions(backend=formats.format_row(model_format).parity_backend)
    with Bundle.open(bundle, runtime) as opened:
        device = Captioner(opened)
        start = np.array([run.vocab.start_id], np.int32)
        for image_id in ids:
            path = dataset.image_path(image_id)
            pixels = load_pixels(path, run.preprocessing)[None]  # [1, S, S, 3]
            keras_features = keras.encode_pixels(pixels)  # [1, F]: the same file read once
            bundle_features = opened.encode_pixels(pixels)  # [1, F]
            diffs.compare("features", keras_features, bundle_features)
            # Decoder parity on the same (Keras) features isolates the decoder's own error.
            for prefix, init_role, keras_init_fn, keras_steps, bundle_steps in _decoder_pairs(
                keras, device
            ):
                keras_init = keras_init_fn(keras_features)  # the raw tensors, by name
                bundle_init = opened.run_model(init_role, features=keras_features)
                for name in init_outputs:
                    diffs.compare(prefix + name, keras_init[name], bundle_init[name])
                keras_state = keras_steps.init(keras_features)
                keras_lp, _ = keras_steps.step(start, keras_state)
                bundle_lp, _ = bundle_steps.step(start, keras_state)
                # One figure for both directions of a twoway bundle: the fp32 gate holds each.
                diffs.compare("log_probs", keras_lp, bundle_lp)
            keras_text = keras.texts(keras_features)[0]
            bundle_text = device.caption(path).text
            captions["keras"][image_id] = keras_text
            captions["bundle"][image_id] = bundle_text
            captions["bundle_encoder_only"][image_id] = keras.texts(bundle_features)[0]
            captions["bundle_decoder_only"][image_id] = opened.vocab.decode(
                device.caption_features(keras_features)[0].tokens
            )
            identical += keras_text == bundle_text
            # Paraphrases differ in words but not in meaning; on synthetic data, count meaning.
            same_scene += parse_caption(keras_text) == parse_caption(bundle_text)
    count = max(len(ids), 1)
    parity = Parity(
        images=len(ids),
        max_abs_diff={k: round(v, 6) for k, v in diffs.diffs.items()},
        identical_caption_rate=round(identical / count, 4),
        same_scene_rate=round(same_scene / count, 4) if load_scenes(dataset.root) else None,
        quality={source: _scores(dataset, texts) for source, texts in captions.items()},
        shape_mismatches=list(diffs.mismatches.values()) or None,
    )
    report_parity(parity, model_format)
    return parity


def _decoder_pairs(keras: KerasCaptioner, device: Captioner) -> list[tuple]:
    """(diff name prefix, init role, Keras' init function, Keras' and the bundle's step
    models) per decoder pair: one, or for twoway the forward and the backward one."""
    module, keras_steps, bundle_steps = keras.step_module, keras.step_model, device.step_model
    if isinstance(keras_steps, TwoWayModel) and isinstance(bundle_steps, TwoWayModel):
        backward_init = BACKWARD_ROLES["decoder_init"]
        return [
            ("", "decoder_init", module.left_to_right.init, keras_steps.forward,
             bundle_steps.forward),
            ("backward_", backward_init, module.right_to_left.init, keras_steps.backward,
             bundle_steps.backward),
        ]  # fmt: skip
    return [("", "decoder_init", module.init, keras_steps, bundle_steps)]


def _scores(dataset: Any, texts: dict[str, str]) -> QualityScores:
    scores = score_split(dataset, "test", texts).to_json()  # rounded, as the manifest keeps them
    return QualityScores(scores["bleu4"], scores["cider_d"], scores["dangling_endings"])


def report_parity(parity: Parity, model_format: str) -> None:
    """Log what was measured, one line per figure (INFO): what a reader of the export sees."""
    log.info("parity of the %s bundle vs Keras on %d test images:", model_format, parity.images)
    # Names were checked when Bundle.open loaded the files against the manifest.
    log.info(
        "  [pass] tensor names match the manifest (%s compared)", ", ".join(parity.max_abs_diff)
    )
    for mismatch in parity.shape_mismatches or []:
        log.error("  [FAIL] shape of %s", mismatch)
    if not parity.shape_mismatches:
        log.info("  [pass] shapes match Keras for every compared output")
    for name, value in parity.max_abs_diff.items():
        log.info("  %-16s max abs diff %.6f", name, value)
    n = parity.images
    log.info("  identical captions: %d/%d (%.1f%%)", round(parity.identical_caption_rate * n), n,
             100 * parity.identical_caption_rate)  # fmt: skip
    if parity.same_scene_rate is not None:
        log.info("  same scene named:   %d/%d (%.1f%%)", round(parity.same_scene_rate * n), n,
                 100 * parity.same_scene_rate)  # fmt: skip
    for source, q in parity.quality.items():
        log.info("  %-20s greedy BLEU-4 %.4f  CIDEr-D %.4f  dangling endings %.1f%%",
                 source, q.bleu4, q.cider_d, 100 * q.dangling_endings)  # fmt: skip


def _blame(parity: Parity, model_format: str, tolerance: formats.Tolerance) -> str:
    """Which file(s) the quality loss comes from, by swapping one half at a time."""
    suffix = formats.format_row(model_format).suffix
    halves = {
        f"encoder{suffix}": parity.quality_drops("bundle_encoder_only"),
        f"decoder_init{suffix} + decoder_step{suffix}": parity.quality_drops("bundle_decoder_only"),
    }
    guilty = [
        name
        for name, (bleu, cider) in halves.items()
        if bleu > tolerance.max_bleu4_drop / 2 or cider > tolerance.max_cider_d_drop / 2
    ]
    described = "; ".join(
        f"{name} alone loses BLEU-4 {bleu:+.4f}, CIDEr-D {cider:+.4f}"
        for name, (bleu, cider) in halves.items()
    )
    culprit = " and ".join(guilty) if guilty else "neither file alone (their errors add up)"
    return f"to blame: {culprit} ({described})"


def _check(passed: bool, what: str) -> bool:
    """Log one check of the gate as passed (INFO) or failed (ERROR); return `passed`."""
    if passed:
        log.info("  [pass] %s", what)
    else:
        log.error("  [FAIL] %s", what)
    return passed


def judge_parity(
    recipe: formats.Recipe, parity: Parity, tolerance: formats.Tolerance | None = None
) -> None:
    """Hold `parity` to the recipe's tolerance (or `tolerance`, e.g. with a caller's dangling
    limit): raise one ParityError naming every check it fails (shapes; on real data the
    bundle's caption scores and dangling endings; for an all-float bundle, identical
    captions and log_probs); WARN for a quantized one off scene on synthetic data."""
    tol = tolerance or recipe.tolerance
    failures = [f"{recipe.name} bundle gives other shapes than Keras: {m}"
                for m in parity.shape_mismatches or []]  # fmt: skip
    if parity.same_scene_rate is None and parity.quality:
        failures += _quality_failures(recipe, parity, tol)
    problems = []
    identical, log_probs = parity.identical_caption_rate, parity.max_abs_diff["log_probs"]
    if tol.min_identical_rate is not None and not _check(
        identical >= tol.min_identical_rate,
        f"identical-caption rate {identical:.3f} >= {tol.min_identical_rate}",
    ):
        problems.append(f"identical-caption rate {identical:.3f} < {tol.min_identical_rate}")
    if tol.max_log_probs_diff is not None and not _check(
        log_probs <= tol.max_log_probs_diff,
        f"log_probs max abs diff {log_probs:.2e} <= {tol.max_log_probs_diff:.0e}",
    ):
        problems.append(f"log_probs max abs diff {log_probs:.2e} > {tol.max_log_probs_diff:.0e}")
    if problems:
        failures.append(f"{recipe.name} bundle misses its parity tolerance: {'; '.join(problems)}")
    if failures:
        raise ParityError("; ".join(failures), parity)
    same_scene = parity.same_scene_rate
    if (
        tol.min_identical_rate is None
        and same_scene is not None
        and same_scene < 1.0 - tol.max_same_scene_drop
    ):
        log.warning(
            "!!! %s bundle names the same scene as Keras on only %.1f%% of %d test images "
            "(%.1f points below 100%%); check its captions before shipping it",
            recipe.name,
            100 * same_scene,
            parity.images,
            100 * (1.0 - same_scene),
        )


def _quality_failures(recipe: formats.Recipe, parity: Parity, tol: formats.Tolerance) -> list[str]:
    """Real data: the bundle's greedy captions must score about as well as Keras' and
    rarely end dangling."""
    failures = []
    bleu, cider = parity.quality_drops()
    keras, bundle = parity.quality["keras"], parity.quality["bundle"]
    if not _check(
        bleu <= tol.max_bleu4_drop and cider <= tol.max_cider_d_drop,
        f"greedy BLEU-4 drop {bleu:.4f} <= {tol.max_bleu4_drop}, "
        f"CIDEr-D drop {cider:.4f} <= {tol.max_cider_d_drop}",
    ):
        failures.append(
            f"{recipe.name} bundle captions the {parity.images} parity images worse "
            f"than Keras: greedy BLEU-4 {bundle.bleu4:.4f} vs {keras.bleu4:.4f} "
            f"(drop {bleu:.4f} > {tol.max_bleu4_drop}), CIDEr-D {bundle.cider_d:.4f} vs "
            f"{keras.cider_d:.4f} (drop {cider:.4f}, limit {tol.max_cider_d_drop}); "
            f"{_blame(parity, recipe.format, tol)}"
        )
    dangling = bundle.dangling_endings
    if not _check(
        dangling <= tol.max_dangling_endings,
        f"dangling endings {dangling:.1%} <= {tol.max_dangling_endings:.0%}",
    ):
        failures.append(
            f"{recipe.name} bundle ends {dangling:.1%} of its greedy captions of the "
            f"{parity.images} parity images on a word no caption ends on (limit "
            f"{tol.max_dangling_endings:.0%}; Keras: {keras.dangling_endings:.1%}), e.g. "
            "'... of a'. Retrain the model (a self-critical run: its reward must see the end token)"
        )
    return failures
