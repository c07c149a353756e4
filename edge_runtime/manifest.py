"""The bundle manifest: the only contract between export and the device runtime.

A bundle is a folder with manifest.json, vocab.json and three model files of one format.
Everything a runtime needs is here: preprocessing, tensor names, special tokens, maximum
caption length, and a SHA-256 per file. The runtime refuses anything that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic import sha256_file
from .errors import BundleError
from .preprocess import Preprocessing
from .step_models import DECODER_KINDS, DECODER_TENSORS

BUNDLE_FORMAT = "edgecap-bundle"
FORMAT_VERSION = 1
MODEL_ROLES = ("encoder", "decoder_init", "decoder_step")
MODEL_FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}
ENCODER_TENSORS = {"inputs": ["image"], "outputs": ["features"]}


def tensor_names(decoder_kind: str) -> dict[str, dict[str, list[str]]]:
    """Input and output names of every model role, for a decoder kind.

    The exporter writes them and the runtime feeds and reads them by these names.
    """
    return {"encoder": ENCODER_TENSORS, **DECODER_TENSORS[decoder_kind]}


@dataclass(frozen=True)
class ModelEntry:
    role: str
    file: str
    sha256: str
    precision: str
    inputs: list[dict]
    outputs: list[dict]


@dataclass(frozen=True)
class Manifest:
    root: Path
    raw: dict[str, Any]
    model_format: str
    preprocessing: Preprocessing
    decoder_kind: str
    max_length: int
    prefix_length: int | None  # BLSTM only: the fixed prefix width of decoder_step
    vocab_file: str
    vocab_size: int
    start_id: int
    end_id: int
    models: dict[str, ModelEntry]

    def path(self, name: str) -> Path:
        return self.root / name


def _safe_relative(root: Path, name: Any, source: str) -> str:
    """A file name that stays inside the bundle folder; '../x' and '/etc/x' are refused."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{source}: file name must be a non-empty string, got {name!r}")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or os.path.isabs(name):
        raise BundleError(
            f"{source}: file name {name!r} escapes the bundle folder; refusing to load it"
        )
    resolved = (root / name).resolve()
    if root.resolve() not in resolved.parents:
        raise BundleError(
            f"{source}: file name {name!r} escapes the bundle folder; refusing to load it"
        )
    return name


def _require(obj: dict, key: str, kind: type | tuple, source: str) -> Any:
    if key not in obj:
        raise BundleError(f"{source}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BundleError(f"{source}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def parse_manifest(obj: Any, root: Path, source: str = "manifest.json") -> Manifest:
    """Validate a decoded manifest.json; every problem is a BundleError naming the field."""
    if not isinstance(obj, dict):
        raise BundleError(f"{source}: the manifest must be a JSON object")
    if obj.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{source}: not an edge-caption bundle manifest (format {obj.get('format')!r})"
        )
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{source}: bundle format version {version!r} is not supported by this runtime "
            f"(it reads version {FORMAT_VERSION}); re-export the bundle with a matching edge-caption"
        )
    model_format = _require(obj, "model_format", str, source)
    if model_format not in MODEL_FORMATS:
        raise BundleError(
            f"{source}: model_format must be one of {sorted(MODEL_FORMATS)}, not {model_format!r}"
        )
    prep = Preprocessing.from_json(_require(obj, "preprocessing", dict, source), source)
    decoder = _require(obj, "decoder", dict, source)
    kind = _require(decoder, "kind", str, f"{source} decoder")
    if kind not in DECODER_KINDS:
        raise BundleError(
            f"{source}: decoder kind {kind!r} is not supported by this runtime ({DECODER_KINDS})"
        )
    prefix_length = None
    if kind == "blstm":
        prefix_length = _require(decoder, "prefix_length", int, f"{source} decoder")
    names = tensor_names(kind)
    max_length = _require(obj, "max_caption_length", int, source)
    if not 1 <= max_length <= 200:
        raise BundleError(f"{source}: max_caption_length {max_length} is out of range")
    vocab = _require(obj, "vocab", dict, source)
    vocab_file = _safe_relative(
        root, _require(vocab, "file", str, f"{source} vocab"), f"{source} vocab"
    )
    vocab_size = _require(vocab, "size", int, f"{source} vocab")
    start_id = _require(vocab, "start_id", int, f"{source} vocab")
    end_id = _require(vocab, "end_id", int, f"{source} vocab")
    _require(vocab, "sha256", str, f"{source} vocab")
    if not (0 <= start_id < vocab_size and 0 <= end_id < vocab_size):
        raise BundleError(f"{source}: special token ids are outside the vocabulary of {vocab_size}")
    models_obj = _require(obj, "models", dict, source)
    models = {}
    suffix = MODEL_FORMATS[model_format]
    for role in MODEL_ROLES:
        entry = _require(models_obj, role, dict, f"{source} models")
        where = f"{source} models.{role}"
        file = _safe_relative(root, _require(entry, "file", str, where), where)
        if not file.endswith(suffix):
            raise BundleError(
                f"{where}: file {file!r} does not end in {suffix} for a {model_format} bundle"
            )
        inputs = _require(entry, "inputs", list, where)
        outputs = _require(entry, "outputs", list, where)
        for kind_name, tensors in (("inputs", inputs), ("outputs", outputs)):
            found = [t.get("name") if isinstance(t, dict) else None for t in tensors]
            if found != names[role][kind_name]:
                raise BundleError(
                    f"{where}: {kind_name} are {found}, expected {names[role][kind_name]} "
                    f"for a {kind} decoder"
                )
        models[role] = ModelEntry(
            role=role,
            file=file,
            sha256=_require(entry, "sha256", str, where),
            precision=_require(entry, "precision", str, where),
            inputs=inputs,
            outputs=outputs,
        )
    _check_shapes(models, prep, vocab_size, prefix_length, source)
    return Manifest(
        root=root,
        raw=obj,
        model_format=model_format,
        preprocessing=prep,
        decoder_kind=kind,
        max_length=max_length,
        prefix_length=prefix_length,
        vocab_file=vocab_file,
        vocab_size=vocab_size,
        start_id=start_id,
        end_id=end_id,
        models=models,
    )


def _shape(entry: ModelEntry, kind: str, name: str, source: str) -> list[int]:
    """The manifest's shape of one tensor: a list of ints, -1 for a dynamic dimension."""
    tensor = next(t for t in getattr(entry, kind) if t.get("name") == name)
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
    ):
        raise BundleError(
            f"{source} models.{entry.role}: {kind[:-1]} {name!r} needs a shape (a list of "
            f"ints, -1 for a dynamic dimension), got {shape!r}"
        )
    return shape


def _check_shapes(
    models: dict[str, ModelEntry],
    prep: Preprocessing,
    vocab_size: int,
    prefix_length: int | None,
    source: str,
) -> None:
    """The tensor shapes the manifest declares must fit together and fit the rest of it.

    The runtime feeds one model's output to the next by name and sizes its buffers from
    these numbers, so a manifest that disagrees with itself (edited by hand, or stitched
    from two exports) is refused here, before any model is loaded, rather than failing
    with a backend's shape error in the middle of a caption.
    """

    def refuse(role: str, kind: str, name: str, shape: list[int], expected: str) -> None:
        raise BundleError(
            f"{source} models.{role}: {kind} {name!r} has shape {shape}, but {expected}; "
            "the manifest disagrees with itself, re-export the bundle"
        )

    encoder, init, step = models["encoder"], models["decoder_init"], models["decoder_step"]
    image = _shape(encoder, "inputs", "image", source)
    size = prep.input_size
    if len(image) != 4 or image[0] not in (-1, 1) or image[1:] != [size, size, 3]:
        refuse("encoder", "input", "image", image, f"preprocessing makes [1, {size}, {size}, 3]")
    features = _shape(encoder, "outputs", "features", source)[-1]
    init_features = _shape(init, "inputs", "features", source)
    if init_features[-1] != features:
        refuse("decoder_init", "input", "features", init_features, f"the encoder gives {features}")
    log_probs = _shape(step, "outputs", "log_probs", source)
    if log_probs[-1] != vocab_size:
        refuse("decoder_step", "output", "log_probs", log_probs, f"the vocabulary has {vocab_size}")
    for output in init.outputs:  # state and image embedding: decoder_init -> decoder_step
        name = output.get("name")
        given = _shape(init, "outputs", name, source)
        taken = _shape(step, "inputs", name, source)
        if taken[1:] != given[1:]:
            refuse("decoder_step", "input", name, taken, f"decoder_init gives {given}")
        if any(t.get("name") == f"{name}_next" for t in step.outputs):
            carried = _shape(step, "outputs", f"{name}_next", source)
            if carried[1:] != taken[1:]:
                refuse("decoder_step", "output", f"{name}_next", carried, f"{name} is {taken}")
    if prefix_length is not None:
        prefix = _shape(step, "inputs", "prefix", source)
        if prefix[-1] != prefix_length:
            refuse("decoder_step", "input", "prefix", prefix, f"prefix_length is {prefix_length}")


def load_manifest(bundle_dir: str | os.PathLike, verify_hashes: bool = True) -> Manifest:
    """Read and validate BUNDLE/manifest.json; with verify_hashes, check every file's SHA-256."""
    root = Path(bundle_dir)
    path = root / "manifest.json"
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    if not path.is_file():
        raise BundleError(
            f"{path}: manifest not found; is {root} a bundle written by caption-export?"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers longer than Python's digit
        # limit; RecursionError a hostile "[[[[...". Both are a bad file, not a crash.
        raise BundleError(
            f"{path}: manifest is not valid JSON ({exc}); re-export the bundle"
        ) from None
    manifest = parse_manifest(obj, root, str(path))
    if verify_hashes:
        files = [(manifest.vocab_file, obj["vocab"]["sha256"])]
        files += [(m.file, m.sha256) for m in manifest.models.values()]
        for name, expected in files:
            file_path = root / name
            if not file_path.is_file():
                raise BundleError(
                    f"{file_path}: file listed in the manifest is missing; re-export the bundle"
                )
            actual = sha256_file(file_path)
            if actual != expected:
                raise BundleError(
                    f"{file_path}: SHA-256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                    "the file is truncated or was changed after export. Re-export or re-copy the bundle"
                )
    return manifest


def config_sha256(config: dict[str, Any]) -> str:
    """The hash a bundle records of its training run's config.json (canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_source_run(bundle_dir: str | os.PathLike, raw: dict[str, Any]) -> Path | None:
    """The training run a bundle was exported from, if it is still where export left it.

    A bundle records its run's folder name and config hash, not a workstation path: the
    run is looked for beside the bundle and accepted only if its config still hashes the
    same. Bundles of older exports recorded an absolute `source_run`, used if it exists.
    """
    source = raw.get("source")
    if isinstance(source, dict) and isinstance(source.get("run"), str):
        candidate = Path(bundle_dir).resolve().parent / source["run"]
        try:
            config = json.loads((candidate / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return candidate if config_sha256(config) == source.get("config_sha256") else None
    legacy = raw.get("source_run")
    if isinstance(legacy, str) and (Path(legacy) / "config.json").is_file():
        return Path(legacy)
    return None
