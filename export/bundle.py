"""Write a bundle (manifest.json, vocab.json, three model files) and check its parity.

One manifest schema serves both model formats (TFLite, ONNX); only the converter, the
tensor description and the per-file extras differ. The parity check runs the finished
files through the runtime's own Captioner, so it measures what ships, in either format.

The bundle is built in a hidden staging folder beside the target and renamed into place
only when every file is written and checked, so a failed or killed export never leaves a
folder that looks like a complete bundle.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import (
    sha256_file,
    swap_dir_into_place,
    write_bytes_atomic,
    write_json_atomic,
)
from edgecap.edge_runtime.bundle import Bundle, RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import TwoWayModel
from edgecap.edge_runtime.errors import is_write_failure, write_failure
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import score_split
from edgecap.edge_runtime.evaluation.scenes import load_scenes, parse_caption
from edgecap.edge_runtime.manifest import (
    MODEL_ROLES,
    Manifest,
    ModelEntry,
    Recipe,
    config_sha256,
    load_manifest,
    model_roles,
    tensor_names,
)
from edgecap.edge_runtime.preprocess import load_pixels
from edgecap.edge_runtime.step_models import BACKWARD_ROLES
from edgecap.train.decoders import StepModule
from edgecap.train.keras_captioner import KerasCaptioner
from edgecap.train.runs import TrainedRun, load_run

from . import formats
from .model_card import model_card

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """An all-float bundle does not decode like the Keras run it came from."""

    def __init__(self, message: str, parity: dict):
        super().__init__(message)
        self.parity = parity


CALIBRATION_IMAGES = 200  # representative training images for full-integer encoders

# Precisions per model format, default first: read from the one registry, export/formats.py.
PRECISIONS: dict[str, tuple[str, ...]] = formats.PRECISIONS
# Parity an all-float bundle must reach, or the export fails and leaves no bundle behind.
FP32_MIN_IDENTICAL_RATE = 0.99
FP32_MAX_LOG_PROBS_DIFF = 1e-3
# A quantized bundle whose same-scene rate falls more than this below 1.0 gets a WARNING.
QUANTIZED_SAME_SCENE_DROP = 0.02
# On real data (no scenes.json) a bundle fails when its greedy captions of the parity images
# score this much below Keras' captions of the same images (absolute, corpus scores against
# the references). On 100 Flickr8k images two Keras runs of different seeds differ by about
# 0.01 BLEU-4 and 0.04 CIDEr-D; a broken quantization loses several times that.
MAX_BLEU4_DROP = 0.03
MAX_CIDER_D_DROP = 0.10
# ... and when more of its greedy captions than this end on a word no caption ends on
# ("... in front of a"; text.DANGLING_WORDS), whatever Keras does: the n-gram scores above
# barely notice such captions, a reader does at once. References end so 0.08% of the time.
MAX_DANGLING_ENDINGS = 0.02


def _convert_model(
    row: formats.Format, role: str, run: TrainedRun, step_module, precision: str, calibration
) -> tuple[bytes, list[str]]:
    """One model file's bytes and its sorted op names, checked for the device's runtime.

    `precision` is the file's own precision from the recipe (fp32, fp16, dynamic, int8).
    """
    converter = row.module()
    name = f"{role}{row.suffix}"
    if role == "encoder":
        size = run.preprocessing.input_size
        data = converter.convert_encoder(run.encoder, size, precision, calibration)
    else:
        data = converter.convert_decoder_function(step_module.functions[role], name, precision)
    return data, converter.checked_ops(data, name)


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    precision: str | None = None,
    parity_images: int = 100,
    model_format: str = "tflite",
    length_penalty: float = 0.0,
    max_dangling_endings: float = MAX_DANGLING_ENDINGS,
) -> dict:
    """Export a run to a bundle of `model_format` at `out_dir` and return its manifest.

    `max_dangling_endings` is the export gate's limit on the share of greedy parity captions
    ending on a dangling word (real data only); 1.0 turns it off, for smoke-test models.

    `length_penalty` is recorded as the bundle's default for beam search (the value chosen
    on the dev split), so that `edge_caption --beam 3` decodes as the bundle was scored.

    The pair must be in export/formats.py's RECIPES; `precision` defaults to the format's
    first (tflite: int8, onnx: fp32). The folder appears only when every file is written
    and the parity is measured and acceptable: an all-float bundle that does not decode
    like Keras raises ParityError and leaves no folder; a quantized one that names other
    scenes than Keras logs a WARNING.
    """
    recipe = formats.get(model_format, precision)
    precision = recipe.precision
    run = load_run(run_dir)
    out_dir = Path(out_dir)
    dataset = load_dataset(run.data_dir)
    prep = run.preprocessing
    step_module = StepModule(run.decoder, run.decoder_config)

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        if is_write_failure(exc):  # nothing was written yet
            raise write_failure(out_dir, exc, "rerun the same command") from exc
        raise
    try:
        files: dict[str, bytes] = {}
        timings: dict[str, float] = {}
        calibration = None
        ops: dict[str, list[str]] = {}
        row = formats.format_row(model_format)
        converter, suffix = row.module(), row.suffix
        names = tensor_names(run.decoder_config.kind)
        if "int8" in map(recipe.file_precision, MODEL_ROLES):
            ids = dataset.splits["train"][:CALIBRATION_IMAGES]
            calibration = [load_pixels(dataset.image_path(i), prep) for i in ids]
        for role in model_roles(run.decoder_config.kind):  # twoway: two decoder pairs
            start = time.perf_counter()
            files[role], ops[role] = _convert_model(
                row, role, run, step_module, recipe.file_precision(role), calibration
            )
            timings[role] = time.perf_counter() - start
            log.info(
                "%-13s %8.1f KB in %5.1f s, ops: %s",
                f"{role}{suffix}",
                len(files[role]) / 1024,
                timings[role],
                ", ".join(ops[role]),
            )

        run.vocab.save(staging / "vocab.json")
        entries = {}
        for role, data in files.items():
            name = f"{role}{suffix}"
            write_bytes_atomic(staging / name, data)
            inputs, outputs = converter.tensor_specs(data, names[role])
            details = {**converter.file_details(data), "export_seconds": round(timings[role], 2)}
            entries[role] = ModelEntry(
                role=role,
                file=name,
                sha256=sha256_file(staging / name),
                precision=recipe.file_precision(role),
                inputs=inputs,
                outputs=outputs,
                bytes=len(data),
                ops=ops[role],
                details=details,
            )
        cfg, vocab = run.decoder_config, run.vocab
        manifest = Manifest(
            root=staging,
            model_format=model_format,
            preprocessing=prep,
            decoder_kind=cfg.kind,
            max_length=cfg.max_length,
            # decoder_step reads a fixed-width prefix; the runtime sizes its buffer from this.
            prefix_length=cfg.prefix_length if cfg.kind == "blstm" else None,
            vocab_file="vocab.json",
            vocab_size=len(vocab),
            start_id=vocab.start_id,
            end_id=vocab.end_id,
            models=entries,
            vocab_sha256=sha256_file(staging / "vocab.json"),
            pad_id=vocab.pad_id,
            unk_id=vocab.unk_id,
            # The pair this bundle was made with, so that nothing has to infer it from files.
            recipe=Recipe(recipe.name, recipe.format, recipe.precision),
            length_penalty=length_penalty,
            encoder={
                "name": run.config["encoder"]["name"],
                "alpha": run.config["encoder"].get("alpha"),
                "input_size": prep.input_size,
                "feature_dim": cfg.feature_dim,
                # attend: the encoder gives a map of this many positions, [1, P, F]
                **({"feature_positions": cfg.feature_positions} if cfg.feature_positions else {}),
            },
            decoder_units=cfg.units,
            decoder_embed_dim=cfg.embed_dim,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # The run's name and config hash, not a workstation path (find_source_run).
            source={
                "run": Path(run_dir).resolve().name,
                "config_sha256": config_sha256(run.config),
            },
        )
        write_json_atomic(staging / "manifest.json", manifest.to_json())

        parity = check_parity(run, staging, dataset, parity_images)
        judge_parity(recipe, parity, max_dangling_endings)
        card = model_card(run, Path(run_dir), dataset, parity)
        manifest = replace(manifest, parity=parity, model_card=card)
        write_json_atomic(staging / "manifest.json", manifest.to_json())

        swap_dir_into_place(staging, out_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_write_failure(exc):
            # The staging folder is gone and the old bundle (if any) was never touched.
            raise write_failure(out_dir, exc, "rerun the same command") from exc
        raise
    return manifest.to_json()


def check_parity(run: TrainedRun, bundle: Path, dataset, n_images: int) -> dict:
    """Compare the bundle with the Keras run on test images: per-output max abs diff, then captions.

    Both sides have the one captioner face: the bundle is opened as a device opens it
    (Bundle.open, with the backend a device would pick for its format) and the run as a
    KerasCaptioner, so the figures describe the files that ship, whatever their format.
    """
    ids = dataset.splits["test"][:n_images]
    cfg = run.decoder_config
    keras = KerasCaptioner.open(run)
    init_outputs = tensor_names(cfg.kind)["decoder_init"]["outputs"]
    diffs = dict.fromkeys(["features", *init_outputs, "log_probs"], 0.0)  # twoway adds backward_*
    identical = same_scene = 0
    scenes = load_scenes(dataset.root)
    # Greedy captions per source: Keras, the bundle, and each half of the bundle alone
    # (its encoder with Keras' decoder, Keras' encoder with its decoder), to say which
    # file is to blame when the bundle's captions are worse than Keras'.
    captions: dict[str, dict[str, str]] = {k: {} for k in QUALITY_SOURCES}

    def track(name: str, expected, actual) -> None:
        expected, actual = np.asarray(expected), np.asarray(actual)
        if expected.shape != actual.shape:  # optimum's order: names, then shapes, then values
            raise ParityError(
                f"{name}: the bundle gives shape {actual.shape}, Keras {expected.shape}"
            )
        diffs[name] = max(diffs.get(name, 0.0), float(np.max(np.abs(expected - actual))))

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
            track("features", keras_features, bundle_features)
            # Decoder parity on the same (Keras) features isolates the decoder's own error.
            for prefix, init_role, keras_init_fn, keras_steps, bundle_steps in _decoder_pairs(
                keras, device
            ):
                keras_init = keras_init_fn(keras_features)
                bundle_init = opened.run_model(init_role, features=keras_features)
                for name in init_outputs:
                    track(prefix + name, keras_init[name], bundle_init[name])
                keras_state = keras_steps.init(keras_features)
                keras_lp, _ = keras_steps.step(start, keras_state)
                bundle_lp, _ = bundle_steps.step(start, keras_state)
                # One figure for both directions of a twoway bundle: the fp32 gate holds each.
                track("log_probs", keras_lp, bundle_lp)
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
    result = {
        "images": len(ids),
        "max_abs_diff": {k: round(v, 6) for k, v in diffs.items()},
        "identical_caption_rate": round(identical / max(len(ids), 1), 4),
    }
    if scenes:
        result["same_scene_rate"] = round(same_scene / max(len(ids), 1), 4)
    result["quality"] = {}
    for source, texts in captions.items():
        scores = score_split(dataset, "test", texts).to_json()
        result["quality"][source] = {
            "bleu4": scores["bleu4"],
            "cider_d": scores["cider_d"],
            "dangling_endings": scores["dangling_endings"],
        }
    print(f"parity of the {model_format} bundle vs Keras on {len(ids)} test images:")
    # Names were checked when Bundle.open loaded the files against the manifest.
    print(f"  tensor names     match the manifest ({', '.join(diffs)} compared)")
    print("  shapes           match Keras for every compared output")
    for name, value in result["max_abs_diff"].items():
        print(f"  {name:<16} max abs diff {value:.6f}")
    print(f"  identical captions: {identical}/{len(ids)} ({result['identical_caption_rate']:.1%})")
    if scenes:
        print(f"  same scene named:   {same_scene}/{len(ids)} ({result['same_scene_rate']:.1%})")
    for source, q in result["quality"].items():
        print(f"  {source:<20} greedy BLEU-4 {q['bleu4']:.4f}  CIDEr-D {q['cider_d']:.4f}  "
              f"dangling endings {q['dangling_endings']:.1%}")  # fmt: skip
    return result


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


# Whose captions the parity check scores (see check_parity).
QUALITY_SOURCES = ("keras", "bundle", "bundle_encoder_only", "bundle_decoder_only")


def quality_drops(parity: dict, source: str = "bundle") -> tuple[float, float]:
    """(BLEU-4 drop, CIDEr-D drop) of `source`'s captions against Keras' on the parity images."""
    keras, other = parity["quality"]["keras"], parity["quality"][source]
    return keras["bleu4"] - other["bleu4"], keras["cider_d"] - other["cider_d"]


def _blame(parity: dict, model_format: str) -> str:
    """Which file(s) the quality loss comes from, by swapping one half at a time."""
    suffix = formats.format_row(model_format).suffix
    halves = {
        f"encoder{suffix}": quality_drops(parity, "bundle_encoder_only"),
        f"decoder_init{suffix} + decoder_step{suffix}": quality_drops(
            parity, "bundle_decoder_only"
        ),
    }
    guilty = [
        name
        for name, (bleu, cider) in halves.items()
        if bleu > MAX_BLEU4_DROP / 2 or cider > MAX_CIDER_D_DROP / 2
    ]
    described = "; ".join(
        f"{name} alone loses BLEU-4 {bleu:+.4f}, CIDEr-D {cider:+.4f}"
        for name, (bleu, cider) in halves.items()
    )
    culprit = " and ".join(guilty) if guilty else "neither file alone (their errors add up)"
    return f"to blame: {culprit} ({described})"


def judge_parity(
    recipe: formats.Recipe, parity: dict, max_dangling_endings: float = MAX_DANGLING_ENDINGS
) -> None:
    """Raise ParityError for an all-float bundle off Keras, or for any bundle whose captions
    score clearly worse than Keras' or end dangling on real data; WARN for a quantized one
    off scene."""
    if "same_scene_rate" not in parity and "quality" in parity:
        bleu, cider = quality_drops(parity)
        if bleu > MAX_BLEU4_DROP or cider > MAX_CIDER_D_DROP:
            q = parity["quality"]
            raise ParityError(
                f"{recipe.name} bundle captions the {parity['images']} parity images worse "
                f"than Keras: greedy BLEU-4 {q['bundle']['bleu4']:.4f} vs {q['keras']['bleu4']:.4f} "
                f"(drop {bleu:.4f} > {MAX_BLEU4_DROP}), CIDEr-D {q['bundle']['cider_d']:.4f} vs "
                f"{q['keras']['cider_d']:.4f} (drop {cider:.4f}, limit {MAX_CIDER_D_DROP}); "
                f"{_blame(parity, recipe.format)}",
                parity,
            )
        dangling = parity["quality"]["bundle"].get("dangling_endings", 0.0)
        if dangling > max_dangling_endings:
            raise ParityError(
                f"{recipe.name} bundle ends {dangling:.1%} of its greedy captions of the "
                f"{parity['images']} parity images on a word no caption ends on (limit "
                f"{max_dangling_endings:.0%}; Keras: "
                f"{parity['quality']['keras'].get('dangling_endings', 0.0):.1%}), e.g. '... of "
                "a'. Retrain the model (a self-critical run: its reward must see the end token)",
                parity,
            )
    identical = parity["identical_caption_rate"]
    log_probs = parity["max_abs_diff"]["log_probs"]
    if recipe.float_only:
        problems = []
        if identical < FP32_MIN_IDENTICAL_RATE:
            problems.append(f"identical-caption rate {identical:.3f} < {FP32_MIN_IDENTICAL_RATE}")
        if log_probs > FP32_MAX_LOG_PROBS_DIFF:
            problems.append(
                f"log_probs max abs diff {log_probs:.2e} > {FP32_MAX_LOG_PROBS_DIFF:.0e}"
            )
        if problems:
            raise ParityError(
                f"{recipe.name} bundle misses its parity tolerance: {'; '.join(problems)}",
                parity,
            )
        return
    same_scene = parity.get("same_scene_rate")
    if same_scene is not None and same_scene < 1.0 - QUANTIZED_SAME_SCENE_DROP:
        log.warning(
            "!!! %s bundle names the same scene as Keras on only %.1f%% of %d test images "
            "(%.1f points below 100%%); check its captions before shipping it",
            recipe.name,
            100 * same_scene,
            parity["images"],
            100 * (1.0 - same_scene),
        )


def summarize(manifest: dict) -> str:
    # twoway's decoder_step_backward.tflite is 27 characters: the column fits the longest
    width = max(20, *(len(e["file"]) + 2 for e in manifest["models"].values()))
    rows = [f"{'file':<{width}}{'precision':<14}{'KB':>10}"]
    for entry in manifest["models"].values():
        rows.append(
            f"{entry['file']:<{width}}{entry['precision']:<14}{entry['bytes'] / 1024:>10.1f}"
        )
    return "\n".join(rows)
