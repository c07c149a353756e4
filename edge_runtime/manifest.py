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
from .schema import from_json, json_field
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
class RecipeRecord:
    """The manifest's record of the export recipe that made a bundle (a row of
    export/formats.py's RECIPES): its (format, precision) pair, by the name caption-export and
    caption-bench use (e.g. 'tflite-int8'); recorded so that nothing infers it."""

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
    recipe: RecipeRecord | None = None  # None only in bundles exported before it was recorded
    encoder: dict[str, Any] = field(default_factory=dict)  # name, alpha, input_size, feature_dim
    decoder_units: int | None = None
    decoder_embed_dim: int | None = None
    # Beam search's default length penalty for this bundle (DecodeOptions.length_penalty).
    length_penalty: float = 0.0
    created: str | None = None  # ISO 8601, UTC
    # The training run, by folder name and config hash (find_source_run); older bundles
    # recorded an absolute path instead, kept as {"path": ...}.
    source: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None  # export's comparison with Keras (export/parity.py)
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


def _in_range(value: int | None, low: int, high: int, field: str, section: str = "") -> None:
    """Refuse an integer field outside [low, high] (None: the field is absent)."""
    if value is not None and not low <= value <= high:
        where = f"{section}: " if section else ""
        raise ValueError(
            f"{where}field {field!r} is {value}, outside {low}..{high}; re-export the bundle"
        )


def _supported_decoder(kind: str) -> None:
    if kind not in DECODER_KINDS:
        raise ValueError(
            f"decoder kind {kind!r} is not supported by this runtime ({DECODER_KINDS})"
        )


def _known_format(model_format: str) -> None:
    if model_format not in MODEL_FORMATS:
        raise ValueError(f"must be one of {sorted(MODEL_FORMATS)}, not {model_format!r}")


def _caption_length(length: int) -> None:
    if not 1 <= length <= MAX_CAPTION_LENGTH:
        raise ValueError(f"{length} is out of range (1..{MAX_CAPTION_LENGTH})")


# manifest.json's sections as the file lays them out, read by schema.from_json; the checks
# that need the bundle folder or span sections are parse_manifest's and _check_shapes'.
@dataclass
class _DecoderSection:
    kind: str = json_field(check=_supported_decoder)
    units: int | None = None
    embed_dim: int | None = None
    prefix_length: int | None = None  # BLSTM only
    length_penalty: float = 0.0  # bundles exported before it was recorded shipped with 0

    def __post_init__(self) -> None:
        # Finite and within decoding's limit: a hand-edited 400 made beam search overflow.
        try:
            self.length_penalty = check_length_penalty(
                self.length_penalty, "field 'length_penalty'"
            )
        except ValueError as exc:
            raise ValueError(f"{exc}; re-export the bundle") from None


@dataclass
class _VocabSection:
    file: str
    size: int
    start_id: int
    end_id: int
    sha256: str
    pad_id: int | None = None
    unk_id: int | None = None

    def __post_init__(self) -> None:
        _in_range(self.size, 5, MAX_VOCAB_SIZE, "size")  # 4 special tokens + 1 word
        if not (0 <= self.start_id < self.size and 0 <= self.end_id < self.size):
            raise ValueError(f"special token ids are outside the vocabulary of {self.size}")
        _in_range(self.pad_id, 0, self.size - 1, "pad_id")
        _in_range(self.unk_id, 0, self.size - 1, "unk_id")


@dataclass
class _ModelSection:
    file: str
    sha256: str
    precision: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    bytes: int | None = None
    ops: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    __json_extra__ = "details"  # what one format alone has, kept as written

    def __post_init__(self) -> None:
        _in_range(self.bytes, 0, 2**40, "bytes")


@dataclass
class _ModelsSection:
    encoder: _ModelSection
    decoder_init: _ModelSection
    decoder_step: _ModelSection
    # twoway's right-to-left pair (_ManifestFile requires them for that kind)
    decoder_init_backward: _ModelSection | None = None
    decoder_step_backward: _ModelSection | None = None


@dataclass
class _ManifestFile:
    model_format: str = json_field(check=_known_format)
    preprocessing: dict[str, Any] = json_field()  # Preprocessing.from_json checks it
    decoder: _DecoderSection = json_field()
    max_caption_length: int = json_field(check=_caption_length)
    vocab: _VocabSection = json_field()
    models: _ModelsSection = json_field()
    recipe: RecipeRecord | None = None  # None only in bundles exported before it was recorded
    encoder: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    source: dict[str, Any] | None = None
    source_run: str | None = None  # older bundles: the run's absolute path
    parity: dict[str, Any] | None = None
    model_card: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for role in decoder_roles(self.decoder.kind):
            if getattr(self.models, role) is None:
                raise ValueError(f"models: missing field {role!r}")
        if self.decoder.kind == "blstm":
            # The step fills one prefix slot per word, <start> first: max_length + 1 at least.
            if self.decoder.prefix_length is None:
                raise ValueError("decoder: missing field 'prefix_length'")
            _in_range(self.decoder.prefix_length, self.max_caption_length + 1,
                      MAX_CAPTION_LENGTH + 1, "prefix_length", section="decoder")  # fmt: skip
        if self.recipe is not None and self.recipe.format != self.model_format:
            raise ValueError(
                f"recipe: format {self.recipe.format!r} is not the model_format {self.model_format!r}"
            )


def _check_header(obj: Any, source: str) -> None:
    """Refuse what is not an edge-caption manifest of the version this runtime reads,
    before any field is read: its fields would only raise puzzling errors."""
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


def parse_manifest(obj: Any, root: Path, source: str = "manifest.json") -> Manifest:
    """Validate a decoded manifest.json; every problem is a BundleError naming the field."""
    _check_header(obj, source)
    raw = from_json(_ManifestFile, obj, source)
    prep = Preprocessing.from_json(raw.preprocessing, source)
    decoder, vocab = raw.decoder, raw.vocab
    models = {
        role: _model_entry(
            role, getattr(raw.models, role), raw.model_format, decoder.kind, root, source
        )
        for role in model_roles(decoder.kind)
    }
    prefix_length = decoder.prefix_length if decoder.kind == "blstm" else None
    legacy_source = None if raw.source_run is None else {"path": raw.source_run}
    _check_shapes(models, prep, vocab.size, prefix_length, source)
    return Manifest(
        root=root,
        model_format=raw.model_format,
        preprocessing=prep,
        decoder_kind=decoder.kind,
        max_length=raw.max_caption_length,
        prefix_length=prefix_length,
        vocab_file=_safe_relative(root, vocab.file, f"{source} vocab"),
        vocab_size=vocab.size,
        start_id=vocab.start_id,
        end_id=vocab.end_id,
        models=models,
        vocab_sha256=vocab.sha256,
        pad_id=vocab.pad_id,
        unk_id=vocab.unk_id,
        recipe=raw.recipe,
        encoder=raw.encoder,
        decoder_units=decoder.units,
        decoder_embed_dim=decoder.embed_dim,
        length_penalty=decoder.length_penalty,
        created=raw.created,
        source=raw.source if raw.source is not None else legacy_source,
        parity=raw.parity,
        model_card=raw.model_card,
    )


def _model_entry(
    role: str, raw: _ModelSection, model_format: str, decoder_kind: str, root: Path, source: str
) -> ModelEntry:
    """models.<role>: a plain file name of the format's suffix, and the tensor names the
    runtime feeds and reads for this decoder kind, in the file's order."""
    where = f"{source} models.{role}"
    file = _safe_relative(root, raw.file, where)
    suffix = MODEL_FORMATS[model_format]
    if not file.endswith(suffix):
        raise BundleError(
            f"{where}: file {file!r} does not end in {suffix} for a {model_format} bundle"
        )
    expected = tensor_names(decoder_kind)[role]
    for kind_name, tensors in (("inputs", raw.inputs), ("outputs", raw.outputs)):
        found = [t.get("name") for t in tensors]
        if found != expected[kind_name]:
            raise BundleError(
                f"{where}: {kind_name} are {found}, expected {expected[kind_name]} "
                f"for a {decoder_kind} decoder"
            )
    # The section's fields as read, with the role and the checked file name.
    return ModelEntry(role=role, **{**vars(raw), "file": file})


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
