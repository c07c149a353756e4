"""The bundle manifest: the only contract between export and the device runtime.

A bundle is a folder with manifest.json, vocab.json and three model files of one format.
Everything a runtime needs is here: preprocessing, tensor names, special tokens, maximum
caption length, and a SHA-256 per file. The runtime refuses anything that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic import sha256_file
from .decoding import check_length_penalty
from .errors import BundleError
from .preprocess import Preprocessing
from .step_models import BACKWARD_ROLES, DECODER_KINDS, DECODER_TENSORS, decoder_roles

BUNDLE_FORMAT = "edgecap-bundle"
FORMAT_VERSION = 1
MODEL_ROLES = ("encoder", "decoder_init", "decoder_step")  # every kind's; twoway adds two


def model_roles(decoder_kind: str) -> tuple[str, ...]:
    """The model files' roles of a bundle of this decoder kind, in the manifest's order:
    MODEL_ROLES, and for twoway decoder_init_backward and decoder_step_backward after them."""
    return ("encoder", *decoder_roles(decoder_kind))


MODEL_FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}
# The one name of each per-file precision (export/formats.py says what each means), in the
# order tables list them: the smallest files first, then float32 as the reference.
PRECISIONS = ("int8", "fp32", "fp16", "dynamic")
ENCODER_TENSORS = {"inputs": ["image"], "outputs": ["features"]}
MAX_CAPTION_LENGTH = 200  # words; beam search's length penalty limit is sized for it
MAX_VOCAB_SIZE = 10_000_000  # a log_probs row of 40 MB: far past any caption vocabulary


def tensor_names(decoder_kind: str) -> dict[str, dict[str, list[str]]]:
    """Input and output names of every model role, for a decoder kind.

    The exporter writes them and the runtime feeds and reads them by these names.
    """
    return {"encoder": ENCODER_TENSORS, **DECODER_TENSORS[decoder_kind]}


@dataclass(frozen=True)
class ModelEntry:
    """One model file of a bundle, as manifest.json's models.<role> holds it."""

    role: str  # encoder, decoder_init or decoder_step
    file: str  # relative to the bundle folder
    sha256: str
    precision: (
        str  # how this file's weights are stored: fp32, fp16, dynamic, int8 (export/formats.py)
    )
    inputs: list[dict]  # [{"name", "shape", ...}] in the file's order; -1 is a dynamic size
    outputs: list[dict]
    bytes: int | None = None
    ops: list[str] | None = None  # the operators the file uses, for a device's support table
    # What one format alone has (TFLite: gpu_compatibility; ONNX: opset) and export_seconds.
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "sha256": self.sha256}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        out["precision"] = self.precision
        if self.ops is not None:
            out["ops"] = self.ops
        return {**out, **self.details, "inputs": self.inputs, "outputs": self.outputs}


@dataclass(frozen=True)
class Recipe:
    """The (format, precision) pair a bundle was exported with, by the name caption-export
    and caption-bench use (e.g. 'tflite-int8'); recorded so that nothing infers it."""

    name: str
    format: str
    precision: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "format": self.format, "precision": self.precision}


@dataclass(frozen=True)
class Manifest:
    """manifest.json, typed: the exporter builds one and writes to_json(); the runtime
    reads it back with from_json() (load_manifest), which refuses anything inconsistent."""

    root: Path  # the bundle folder (not written: a bundle can be moved)
    model_format: str  # tflite or onnx
    preprocessing: Preprocessing
    decoder_kind: str
    max_length: int  # longest caption in words, end token excluded
    prefix_length: int | None  # BLSTM only: the fixed prefix width of decoder_step
    vocab_file: str
    vocab_size: int
    start_id: int
    end_id: int
    models: dict[str, ModelEntry]
    vocab_sha256: str = ""
    pad_id: int | None = None
    unk_id: int | None = None
    recipe: Recipe | None = None  # None only in bundles exported before it was recorded
    encoder: dict[str, Any] = field(default_factory=dict)  # name, alpha, input_size, feature_dim
    decoder_units: int | None = None
    decoder_embed_dim: int | None = None
    # Beam search's default length penalty for this bundle (DecodeOptions.length_penalty).
    length_penalty: float = 0.0
    created: str | None = None  # ISO 8601, UTC
    # The training run, by folder name and config hash (find_source_run); older bundles
    # recorded an absolute path instead, kept as {"path": ...}.
    source: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None  # export's comparison with Keras (check_parity)
    model_card: dict[str, Any] | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def to_json(self) -> dict[str, Any]:
        """manifest.json's content, in the order a reader expects to find things."""
        decoder: dict[str, Any] = {"kind": self.decoder_kind}
        if self.decoder_units is not None:
            decoder["units"] = self.decoder_units
        if self.decoder_embed_dim is not None:
            decoder["embed_dim"] = self.decoder_embed_dim
        if self.prefix_length is not None:
            decoder["prefix_length"] = self.prefix_length
        decoder["length_penalty"] = self.length_penalty
        vocab: dict[str, Any] = {"file": self.vocab_file, "size": self.vocab_size}
        for key, value in (("pad_id", self.pad_id), ("start_id", self.start_id),
                           ("end_id", self.end_id), ("unk_id", self.unk_id)):  # fmt: skip
            if value is not None:
                vocab[key] = value
        vocab["sha256"] = self.vocab_sha256
        out: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "model_format": self.model_format,
        }
        if self.recipe is not None:
            out["recipe"] = self.recipe.to_json()
        if self.created is not None:
            out["created"] = self.created
        if self.source is not None:
            legacy = set(self.source) == {"path"}
            out["source_run" if legacy else "source"] = (
                self.source["path"] if legacy else self.source
            )
        if self.encoder:
            out["encoder"] = self.encoder
        out.update(
            preprocessing=self.preprocessing.to_json(),
            decoder=decoder,
            max_caption_length=self.max_length,
            vocab=vocab,
            models={role: entry.to_json() for role, entry in self.models.items()},
        )
        if self.parity is not None:
            out["parity"] = self.parity
        if self.model_card is not None:
            out["model_card"] = self.model_card
        return out

    @classmethod
    def from_json(
        cls, obj: Any, root: str | os.PathLike, source: str = "manifest.json"
    ) -> Manifest:
        """Validate a decoded manifest.json; every problem is a BundleError naming the field."""
        return parse_manifest(obj, Path(root), source)


MAX_NAME_BYTES = 255  # the longest file name ext4, XFS, APFS and NTFS allow


def _safe_relative(root: Path, name: Any, source: str) -> str:
    """A plain file name inside the bundle folder; everything else is refused before the
    file system sees it ('../x', '/etc/x', 'a/b', NUL, lone surrogates, overlong names:
    those used to reach is_file() or resolve() and raise OSError or ValueError there)."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{source}: file name must be a non-empty string, got {name!r}")
    if any("\ud800" <= c <= "\udfff" for c in name):
        raise BundleError(
            f"{source}: file name {name!r} is not valid Unicode (it holds a lone surrogate); "
            "re-export the bundle"
        )
    if any(c < " " or c == "\x7f" for c in name):
        raise BundleError(
            f"{source}: file name {name!r} holds a control character (e.g. NUL); "
            "re-export the bundle"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise BundleError(
            f"{source}: file name {name[:40]!r}... is {size} bytes long, more than the "
            f"{MAX_NAME_BYTES} a file system allows; re-export the bundle"
        )
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or os.path.isabs(name) or name == ".":
        raise BundleError(
            f"{source}: file name {name!r} escapes the bundle folder; refusing to load it"
        )
    if "/" in name or "\\" in name:
        raise BundleError(
            f"{source}: file name {name!r} must name a file directly in the bundle folder, "
            "without '/' or '\\'; re-export the bundle"
        )
    try:
        resolved = (root / name).resolve()  # a link that points out of the folder
        inside = root.resolve() in resolved.parents
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a link loop (3.11)
        raise BundleError(f"{source}: file name {name!r} cannot be resolved ({exc})") from None
    if not inside:
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


def _optional(obj: dict, key: str, kind: type | tuple, source: str) -> Any:
    """obj[key] if present (checked as _require does), else None."""
    return _require(obj, key, kind, source) if key in obj else None


def _in_range(value: int | None, low: int, high: int, field: str, source: str) -> None:
    """Refuse an integer field outside [low, high] (None: the field is absent)."""
    if value is not None and not low <= value <= high:
        raise BundleError(
            f"{source}: field {field!r} is {value}, outside {low}..{high}; re-export the bundle"
        )


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
    names = tensor_names(kind)
    max_length = _require(obj, "max_caption_length", int, source)
    if not 1 <= max_length <= MAX_CAPTION_LENGTH:
        raise BundleError(f"{source}: max_caption_length {max_length} is out of range")
    prefix_length = None
    if kind == "blstm":
        # The step fills one prefix slot per word, <start> first: max_length + 1 at least.
        prefix_length = _require(decoder, "prefix_length", int, f"{source} decoder")
        _in_range(prefix_length, max_length + 1, MAX_CAPTION_LENGTH + 1, "prefix_length",
                  f"{source} decoder")  # fmt: skip
    vocab = _require(obj, "vocab", dict, source)
    vocab_file = _safe_relative(
        root, _require(vocab, "file", str, f"{source} vocab"), f"{source} vocab"
    )
    vocab_size = _require(vocab, "size", int, f"{source} vocab")
    _in_range(vocab_size, 5, MAX_VOCAB_SIZE, "size", f"{source} vocab")  # 4 special tokens + 1
    start_id = _require(vocab, "start_id", int, f"{source} vocab")
    end_id = _require(vocab, "end_id", int, f"{source} vocab")
    _require(vocab, "sha256", str, f"{source} vocab")
    if not (0 <= start_id < vocab_size and 0 <= end_id < vocab_size):
        raise BundleError(f"{source}: special token ids are outside the vocabulary of {vocab_size}")
    for key in ("pad_id", "unk_id"):
        _in_range(_optional(vocab, key, int, f"{source} vocab"), 0, vocab_size - 1, key,
                  f"{source} vocab")  # fmt: skip
    models_obj = _require(obj, "models", dict, source)
    models = {}
    suffix = MODEL_FORMATS[model_format]
    for role in model_roles(kind):
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
        _in_range(_optional(entry, "bytes", int, where), 0, 2**40, "bytes", where)
        models[role] = ModelEntry(
            role=role,
            file=file,
            sha256=_require(entry, "sha256", str, where),
            precision=_require(entry, "precision", str, where),
            inputs=inputs,
            outputs=outputs,
            bytes=_optional(entry, "bytes", int, where),
            ops=_optional(entry, "ops", list, where),
            details={k: v for k, v in entry.items() if k not in _MODEL_ENTRY_KEYS},
        )
    _check_shapes(models, prep, vocab_size, prefix_length, source)
    recipe = _optional(obj, "recipe", dict, source)
    if recipe is not None:
        where = f"{source} recipe"
        recipe = Recipe(
            _require(recipe, "name", str, where),
            _require(recipe, "format", str, where),
            _require(recipe, "precision", str, where),
        )
        if recipe.format != model_format:
            raise BundleError(
                f"{where}: format {recipe.format!r} is not the model_format {model_format!r}"
            )
    origin = _optional(obj, "source", dict, source)
    legacy = _optional(obj, "source_run", str, source)
    if origin is None and legacy is not None:
        origin = {"path": legacy}
    return Manifest(
        root=root,
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
        vocab_sha256=vocab["sha256"],
        pad_id=_optional(vocab, "pad_id", int, f"{source} vocab"),
        unk_id=_optional(vocab, "unk_id", int, f"{source} vocab"),
        recipe=recipe,
        encoder=_optional(obj, "encoder", dict, source) or {},
        decoder_units=_optional(decoder, "units", int, f"{source} decoder"),
        decoder_embed_dim=_optional(decoder, "embed_dim", int, f"{source} decoder"),
        length_penalty=_length_penalty(decoder, f"{source} decoder"),
        created=_optional(obj, "created", str, source),
        source=origin,
        parity=_optional(obj, "parity", dict, source),
        model_card=_optional(obj, "model_card", dict, source),
    )


def _length_penalty(decoder: dict, source: str) -> float:
    """decoder.length_penalty, finite and within decoding's limit (a hand-edited 400 made
    beam search overflow); bundles exported before it was recorded shipped with 0."""
    value = _optional(decoder, "length_penalty", (int, float), source)
    if value is None:
        return 0.0
    try:
        return check_length_penalty(value, "field 'length_penalty'")
    except ValueError as exc:
        raise BundleError(f"{source}: {exc}; re-export the bundle") from None


# Keys of models.<role> that ModelEntry has fields for; any other goes to its details.
_MODEL_ENTRY_KEYS = {"file", "sha256", "bytes", "precision", "ops", "inputs", "outputs"}


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

    encoder = models["encoder"]
    image = _shape(encoder, "inputs", "image", source)
    size = prep.input_size
    if len(image) != 4 or image[0] not in (-1, 1) or image[1:] != [size, size, 3]:
        refuse("encoder", "input", "image", image, f"preprocessing makes [1, {size}, {size}, 3]")
    features = _shape(encoder, "outputs", "features", source)[-1]
    pairs = [("decoder_init", "decoder_step")]
    if BACKWARD_ROLES["decoder_init"] in models:  # twoway: the right-to-left pair too
        pairs.append((BACKWARD_ROLES["decoder_init"], BACKWARD_ROLES["decoder_step"]))
    for init_role, step_role in pairs:
        init, step = models[init_role], models[step_role]
        init_features = _shape(init, "inputs", "features", source)
        if init_features[-1] != features:
            refuse(init_role, "input", "features", init_features, f"the encoder gives {features}")
        log_probs = _shape(step, "outputs", "log_probs", source)
        if log_probs[-1] != vocab_size:
            refuse(step_role, "output", "log_probs", log_probs, f"the vocabulary has {vocab_size}")
        for output in init.outputs:  # state and image embedding: decoder_init -> decoder_step
            name = output.get("name")
            given = _shape(init, "outputs", name, source)
            taken = _shape(step, "inputs", name, source)
            if taken[1:] != given[1:]:
                refuse(step_role, "input", name, taken, f"{init_role} gives {given}")
            if any(t.get("name") == f"{name}_next" for t in step.outputs):
                carried = _shape(step, "outputs", f"{name}_next", source)
                if carried[1:] != taken[1:]:
                    refuse(step_role, "output", f"{name}_next", carried, f"{name} is {taken}")
    step = models["decoder_step"]
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
        files = [(manifest.vocab_file, manifest.vocab_sha256)]
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


def find_source_run(bundle_dir: str | os.PathLike, source: dict[str, Any] | None) -> Path | None:
    """The training run a bundle was exported from (its manifest's `source`), if it is
    still where export left it.

    A bundle records its run's folder name and config hash, not a workstation path: the
    run is looked for beside the bundle and accepted only if its config still hashes the
    same. Bundles of older exports recorded an absolute path ({"path": ...}), used if it exists.
    """
    if not isinstance(source, dict):
        return None
    if isinstance(source.get("run"), str):
        candidate = Path(bundle_dir).resolve().parent / source["run"]
        try:
            config = json.loads((candidate / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return candidate if config_sha256(config) == source.get("config_sha256") else None
    legacy = source.get("path")
    if isinstance(legacy, str) and (Path(legacy) / "config.json").is_file():
        return Path(legacy)
    return None
