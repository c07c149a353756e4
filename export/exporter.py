"""Export a run to a bundle (manifest.json, vocab.json, three model files), in steps:

    stage_bundle    convert the models and write every file into a hidden staging folder
    measure_parity  decode with the staged bundle and with Keras (export/parity.py)
    judge_parity    hold the figures to the recipe's tolerance (formats.Tolerance)
    finish_bundle   record parity and model card in the manifest, swap the folder into place

One manifest schema serves both model formats (TFLite, ONNX); only the converter, the
tensor description and the per-file extras differ. The parity check runs the finished
files through the runtime's own Captioner, so it measures what ships, in either format.

The staging folder sits beside the target and is renamed into place only when every file
is written and checked, so a failed or killed export never leaves a folder that looks
like a complete bundle, and an older bundle at the target stays as it was.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.atomic import (
    sha256_file,
    swap_dir_into_place,
    write_bytes_atomic,
    write_json_atomic,
)
from edgecap.edge_runtime.errors import is_write_failure, write_failure
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.manifest import (
    MODEL_ROLES,
    Manifest,
    ModelEntry,
    RecipeRecord,
    config_sha256,
    model_roles,
    tensor_names,
)
from edgecap.edge_runtime.preprocess import load_pixels
from edgecap.train.decoders import DecoderStepFunctions
from edgecap.train.runs import TrainedRun, load_run

from . import formats
from .model_card import model_card
from .parity import Parity, ParityError, judge_parity, measure_parity

__all__ = ["export_bundle", "stage_bundle", "finish_bundle", "summarize", "ParityError"]

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 200  # representative training images for full-integer encoders

# Precisions per model format, default first: read from the one registry, export/formats.py.
PRECISIONS: dict[str, tuple[str, ...]] = formats.PRECISIONS


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
    max_dangling_endings: float | None = None,
) -> dict:
    """Export a run to a bundle of `model_format` at `out_dir` and return its manifest.

    `max_dangling_endings` overrides the recipe's limit on the share of greedy parity
    captions ending on a dangling word (real data only); 1.0 turns it off, for smoke-test
    models.

    `length_penalty` is recorded as the bundle's default for beam search (the value chosen
    on the dev split), so that `edge_caption --beam 3` decodes as the bundle was scored.

    The pair must be in export/formats.py's RECIPES; `precision` defaults to the format's
    first (tflite: int8, onnx: fp32). The folder appears only when every file is written
    and the parity is measured and within the recipe's tolerance: otherwise ParityError
    and no folder (a quantized bundle that names other scenes than Keras logs a WARNING).
    """
    recipe = formats.get(model_format, precision)
    tolerance = recipe.tolerance
    if max_dangling_endings is not None:
        tolerance = replace(tolerance, max_dangling_endings=max_dangling_endings)
    run = load_run(run_dir)
    out_dir = Path(out_dir)
    dataset = load_dataset(run.data_dir)
    staging = _staging_folder(out_dir)
    try:
        manifest = stage_bundle(run, recipe, staging, dataset, length_penalty)
        parity = measure_parity(run, staging, dataset, parity_images)
        judge_parity(recipe, parity, tolerance)
        manifest = finish_bundle(manifest, run, dataset, parity, out_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_write_failure(exc):
            # The staging folder is gone and the old bundle (if any) was never touched.
            raise write_failure(out_dir, exc, "rerun the same command") from exc
        raise
    return manifest.to_json()


def _staging_folder(out_dir: Path) -> Path:
    """A new hidden folder beside `out_dir`, on the same file system for the final rename."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        if is_write_failure(exc):  # nothing was written yet
            raise write_failure(out_dir, exc, "rerun the same command") from exc
        raise


def stage_bundle(
    run: TrainedRun, recipe: formats.Recipe, staging: Path, dataset: Any, length_penalty: float
) -> Manifest:
    """Convert the run's three models as `recipe` says and write the whole bundle (models,
    vocab.json, manifest.json without parity or card) into `staging`; return its manifest."""
    row = formats.format_row(recipe.format)
    calibration = None
    if "int8" in map(recipe.file_precision, MODEL_ROLES):
        ids = dataset.splits["train"][:CALIBRATION_IMAGES]
        calibration = [load_pixels(dataset.image_path(i), run.preprocessing) for i in ids]
    step_module = DecoderStepFunctions(run.decoder, run.decoder_config)
    run.vocab.save(staging / "vocab.json")
    entries = {}
    for role in model_roles(run.decoder_config.kind):  # twoway: two decoder pairs
        start = time.perf_counter()
        precision = recipe.file_precision(role)
        data, ops = _convert_model(row, role, run, step_module, precision, calibration)
        seconds = time.perf_counter() - start
        name = f"{role}{row.suffix}"
        log.info("%-13s %8.1f KB in %5.1f s, ops: %s", name, len(data) / 1024, seconds,
                 ", ".join(ops))  # fmt: skip
        entries[role] = _write_model(row, role, name, data, ops, precision, seconds, run, staging)
    manifest = _manifest(run, recipe, staging, entries, length_penalty)
    write_json_atomic(staging / "manifest.json", manifest.to_json())
    return manifest


def _write_model(
    row: formats.Format,
    role: str,
    name: str,
    data: bytes,
    ops: list[str],
    precision: str,
    seconds: float,
    run: TrainedRun,
    staging: Path,
) -> ModelEntry:
    """Write one model file into the staging folder and describe it for the manifest."""
    converter = row.module()
    write_bytes_atomic(staging / name, data)
    inputs, outputs = converter.tensor_specs(data, tensor_names(run.decoder_config.kind)[role])
    return ModelEntry(
        role=role,
        file=name,
        sha256=sha256_file(staging / name),
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        bytes=len(data),
        ops=ops,
        details={**converter.file_details(data), "export_seconds": round(seconds, 2)},
    )


def _manifest(
    run: TrainedRun,
    recipe: formats.Recipe,
    staging: Path,
    entries: dict[str, ModelEntry],
    length_penalty: float,
) -> Manifest:
    """The staged bundle's manifest: what a device needs to run it, and where it came from."""
    cfg, vocab, prep = run.decoder_config, run.vocab, run.preprocessing
    return Manifest(
        root=staging,
        model_format=recipe.format,
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
        recipe=RecipeRecord(recipe.name, recipe.format, recipe.precision),
        length_penalty=length_penalty,
        encoder={
            "name": run.config.encoder.name,
            "alpha": run.config.encoder.alpha,
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
            "run": run.path.resolve().name,
            "config_sha256": config_sha256(run.config_json),
        },
    )


def finish_bundle(
    manifest: Manifest, run: TrainedRun, dataset: Any, parity: Parity, out_dir: Path
) -> Manifest:
    """Record the judged parity and the model card in the staged manifest, then swap the
    staging folder into place at `out_dir` (one rename; an older bundle there goes only then)."""
    card = model_card(run, run.path, dataset, parity)
    manifest = replace(manifest, parity=parity.to_json(), model_card=card)
    write_json_atomic(manifest.root / "manifest.json", manifest.to_json())
    swap_dir_into_place(manifest.root, out_dir)
    return replace(manifest, root=out_dir)


def summarize(manifest: dict) -> str:
    # twoway's decoder_step_backward.tflite is 27 characters: the column fits the longest
    width = max(20, *(len(e["file"]) + 2 for e in manifest["models"].values()))
    rows = [f"{'file':<{width}}{'precision':<14}{'KB':>10}"]
    for entry in manifest["models"].values():
        rows.append(
            f"{entry['file']:<{width}}{entry['precision']:<14}{entry['bytes'] / 1024:>10.1f}"
        )
    return "\n".join(rows)
