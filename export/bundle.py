"""Write a bundle (manifest.json, vocab.json, three model files) and check its parity.

The bundle is built in a hidden staging folder beside the target and renamed into place
only when every file is written and checked, so a failed or killed export never leaves a
folder that looks like a complete bundle.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import sha256_file, write_bytes_atomic, write_json_atomic
from edgecap.edge_runtime.captioner import Captioner, CaptionerOptions
from edgecap.edge_runtime.decoding import greedy_decode
from edgecap.edge_runtime.manifest import BUNDLE_FORMAT, FORMAT_VERSION, TENSORS
from edgecap.edge_runtime.preprocess import load_image, preprocess
from edgecap.edge_runtime.scenes import parse_caption
from edgecap.train.decoders import KerasStepModel, LstmStepModule
from edgecap.train.flickr8k import load_dataset
from edgecap.train.synthetic import load_scenes

from . import tflite
from .run import TrainedRun, load_run

log = logging.getLogger(__name__)
CALIBRATION_IMAGES = 200  # representative training images for full-integer encoders


def _tensor_specs(model_bytes: bytes, role: str) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes).get_signature_runner("serving_default")

    def describe(details: dict, order: list[str]) -> list[dict]:
        out = []
        for name in order:
            d = details[name]
            spec = {
                "name": name,
                "shape": [int(v) for v in d["shape_signature"]],
                "dtype": np.dtype(d["dtype"]).name,
            }
            scale, zero_point = d["quantization"]
            if scale:
                spec["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
            out.append(spec)
        return out

    return (
        describe(runner.get_input_details(), TENSORS[role]["inputs"]),
        describe(runner.get_output_details(), TENSORS[role]["outputs"]),
    )


def export_bundle(
    run_dir: str | Path, out_dir: str | Path, precision: str = "int8", parity_images: int = 100
) -> dict:
    """Export a run to a TFLite bundle at `out_dir` and return its manifest."""
    if precision not in tflite.PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {tflite.PRECISIONS}")
    run = load_run(run_dir)
    out_dir = Path(out_dir)
    dataset = load_dataset(run.data_dir)
    prep = run.preprocessing
    step_module = LstmStepModule(run.decoder, run.decoder_config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        files: dict[str, bytes] = {}
        timings: dict[str, float] = {}
        calibration = None
        if precision == "int8":
            ids = dataset.splits["train"][:CALIBRATION_IMAGES]
            calibration = [preprocess(load_image(dataset.image_path(i)), prep) for i in ids]
        for role in ("encoder", "decoder_init", "decoder_step"):
            start = time.perf_counter()
            if role == "encoder":
                files[role] = tflite.convert_encoder(
                    run.encoder, prep.input_size, precision, calibration
                )
            else:
                function = step_module.init if role == "decoder_init" else step_module.step
                files[role] = tflite.convert_decoder_function(function, precision)
            ops = tflite.check_builtin_only(files[role], f"{role}.tflite")
            timings[role] = time.perf_counter() - start
            log.info(
                "%-13s %8.1f KB in %5.1f s, ops: %s",
                f"{role}.tflite",
                len(files[role]) / 1024,
                timings[role],
                ", ".join(ops),
            )

        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "model_format": "tflite",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_run": str(Path(run_dir).resolve()),
            "encoder": {
                "name": run.config["encoder"]["name"],
                "feature_dim": run.decoder_config.feature_dim,
            },
            "preprocessing": prep.to_json(),
            "decoder": {
                "kind": run.decoder_config.kind,
                "units": run.decoder_config.units,
                "embed_dim": run.decoder_config.embed_dim,
            },
            "max_caption_length": run.decoder_config.max_length,
            "vocab": {
                "file": "vocab.json",
                "size": len(run.vocab),
                "pad_id": run.vocab.pad_id,
                "start_id": run.vocab.start_id,
                "end_id": run.vocab.end_id,
                "unk_id": run.vocab.unk_id,
            },
            "models": {},
        }
        run.vocab.save(staging / "vocab.json")
        manifest["vocab"]["sha256"] = sha256_file(staging / "vocab.json")
        for role, data in files.items():
            name = f"{role}.tflite"
            write_bytes_atomic(staging / name, data)
            inputs, outputs = _tensor_specs(data, role)
            manifest["models"][role] = {
                "file": name,
                "sha256": sha256_file(staging / name),
                "bytes": len(data),
                "precision": ("int8" if role == "encoder" else "dynamic-int8")
                if precision == "int8"
                else "fp32",
                "ops": tflite.op_names(data),
                "gpu_compatibility": tflite.gpu_compatibility(data),
                "export_seconds": round(timings[role], 2),
                "inputs": inputs,
                "outputs": outputs,
            }
        write_json_atomic(staging / "manifest.json", manifest)

        manifest["parity"] = check_parity(run, staging, dataset, parity_images)
        write_json_atomic(staging / "manifest.json", manifest)

        if out_dir.exists():
            # Swap, so that a crash between the two renames leaves the old bundle aside, not a mix.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            old.rmdir()
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def check_parity(run: TrainedRun, bundle: Path, dataset, n_images: int) -> dict:
    """Compare the bundle with the Keras run on test images: per-output max abs diff, then captions."""
    ids = dataset.splits["test"][:n_images]
    keras_steps = KerasStepModel(LstmStepModule(run.decoder, run.decoder_config))
    diffs = {"features": 0.0, "h": 0.0, "c": 0.0, "log_probs": 0.0}
    identical = same_scene = 0
    scenes = load_scenes(dataset.root)
    vocab, cfg = run.vocab, run.decoder_config
    with Captioner.from_bundle(bundle, CaptionerOptions(backend="litert")) as captioner:
        for image_id in ids:
            image = load_image(dataset.image_path(image_id))
            pixels = preprocess(image, run.preprocessing)[None]  # [1, S, S, 3]
            keras_features = np.asarray(run.encoder(pixels, training=False))
            lite_features = captioner.models["encoder"](image=pixels)["features"]
            diffs["features"] = max(
                diffs["features"], float(np.max(np.abs(keras_features - lite_features)))
            )
            # Decoder parity on the same (Keras) features isolates the decoder's own error.
            keras_state = keras_steps.init(keras_features)
            lite_state = captioner._step_model.init(keras_features)
            diffs["h"] = max(diffs["h"], float(np.max(np.abs(keras_state[0] - lite_state[0]))))
            diffs["c"] = max(diffs["c"], float(np.max(np.abs(keras_state[1] - lite_state[1]))))
            start = np.array([vocab.start_id], np.int32)
            keras_lp, _ = keras_steps.step(start, keras_state)
            lite_lp, _ = captioner._step_model.step(start, keras_state)
            diffs["log_probs"] = max(diffs["log_probs"], float(np.max(np.abs(keras_lp - lite_lp))))
            keras_caption = greedy_decode(
                keras_steps, keras_features, vocab.start_id, vocab.end_id, cfg.max_length
            )[0]
            keras_text = vocab.decode(keras_caption.tokens)
            lite_text = captioner.caption(dataset.image_path(image_id)).text
            identical += keras_text == lite_text
            # Paraphrases differ in words but not in meaning; on synthetic data, count meaning.
            same_scene += parse_caption(keras_text) == parse_caption(lite_text)
    result = {
        "images": len(ids),
        "max_abs_diff": {k: round(v, 6) for k, v in diffs.items()},
        "identical_caption_rate": round(identical / max(len(ids), 1), 4),
    }
    if scenes:
        result["same_scene_rate"] = round(same_scene / max(len(ids), 1), 4)
    print(f"parity vs Keras on {len(ids)} test images:")
    for name, value in result["max_abs_diff"].items():
        print(f"  {name:<10} max abs diff {value:.6f}")
    print(f"  identical captions: {identical}/{len(ids)} ({result['identical_caption_rate']:.1%})")
    if scenes:
        print(f"  same scene named:   {same_scene}/{len(ids)} ({result['same_scene_rate']:.1%})")
    return result


def summarize(manifest: dict) -> str:
    rows = [f"{'file':<20}{'precision':<14}{'KB':>10}"]
    for entry in manifest["models"].values():
        rows.append(f"{entry['file']:<20}{entry['precision']:<14}{entry['bytes'] / 1024:>10.1f}")
    return "\n".join(rows)
