"""The two tables of export: one `Format` row per model format, one `Recipe` per (format,
precision) pair caption-export knows.

The CLI's choices, export_bundle's conversion and validation, the parity backend, the
per-file precisions written into the manifest and the docs table (`markdown_table`) all
read these, so adding a pair is one line here (plus, for a new per-file precision, its
branch in the format's converter), and adding a format is a row and a converter module.

One name per precision, the same in the CLI, the recipe, the manifest's per-file label and
the converters' `precision` argument:

- `fp32`: float32 weights and math;
- `fp16`: float16 weights, dequantized to float32 at load; math in float32;
- `dynamic`: int8 weights, activations float (TFLite) or quantized per call (ONNX);
- `int8`: full-integer (int8 input, math and output), calibrated on training images.
  Encoders only: a full-integer decoder would quantize its recurrent state, so an `int8`
  recipe's decoders are `dynamic`.

This module imports nothing heavy, so `caption-export --help` stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edgecap.edge_runtime.bundle import BACKEND_FORMATS
from edgecap.edge_runtime.manifest import MODEL_FORMATS
from edgecap.edge_runtime.manifest import MODEL_ROLES as ROLES
from edgecap.edge_runtime.step_models import BACKWARD_ROLES

FORWARD_TWINS = {backward: forward for forward, backward in BACKWARD_ROLES.items()}


@dataclass(frozen=True)
class Format:
    """One model format: how export writes it and how a device runs it."""

    name: str  # the manifest's model_format, --format's choice
    converter: str
    """The module that converts a run's models to this format. Each has the same five
    functions: convert_encoder(encoder, input_size, precision, calibration),
    convert_decoder_function(function, what, precision), checked_ops(data, what),
    tensor_specs(data, names) and file_details(data). Imported on use: it imports TensorFlow."""
    parity_backend: str  # the runtime backend export's parity check uses: a device's default

    @property
    def suffix(self) -> str:
        """The model files' suffix, from the manifest schema: '.tflite'."""
        return MODEL_FORMATS[self.name]

    @property
    def runtime_backends(self) -> tuple[str, ...]:
        """The edge_runtime backends that run this format (`edge_caption --backend`)."""
        return tuple(b for b, f in BACKEND_FORMATS.items() if f == self.name)

    def module(self) -> ModuleType:
        return importlib.import_module(self.converter)


FORMAT_ROWS: tuple[Format, ...] = (
    Format("tflite", "edgecap.export.tflite", parity_backend="litert"),
    Format("onnx", "edgecap.export.onnx", parity_backend="onnx"),
)


@dataclass(frozen=True)
class Tolerance:
    """What a bundle's parity with Keras must reach to ship: export's gate, per recipe (as
    optimum keeps ATOL_FOR_VALIDATION on each export config). None: not judged."""

    # All-float bundles must decode like Keras, or the export fails and leaves no bundle.
    min_identical_rate: float | None = None
    max_log_probs_diff: float | None = None
    # A quantized bundle whose same-scene rate falls more than this below 1.0 (synthetic
    # data) gets a WARNING, not a failure: paraphrases are expected, other scenes are not.
    max_same_scene_drop: float = 0.02
    # On real data (no scenes.json) a bundle fails when its greedy captions of the parity
    # images score this much below Keras' captions of the same images (absolute, corpus
    # scores against the references). On 100 Flickr8k images two Keras runs of different
    # seeds differ by about 0.01 BLEU-4 and 0.04 CIDEr-D; a broken quantization loses
    # several times that.
    max_bleu4_drop: float = 0.03
    max_cider_d_drop: float = 0.10
    # ... and when more of its greedy captions than this end on a word no caption ends on
    # ("... in front of a"; text.DANGLING_WORDS), whatever Keras does: the n-gram scores
    # above barely notice such captions, a reader does at once. References end so 0.08%
    # of the time. caption-export --max-dangling-endings overrides it (1.0: off).
    max_dangling_endings: float = 0.02


QUANTIZED = Tolerance()
FLOAT = Tolerance(min_identical_rate=0.99, max_log_probs_diff=1e-3)


@dataclass(frozen=True)
class Recipe:
    """One (format, precision) pair: what it means and what each file of the bundle becomes."""

    format: str
    precision: str
    description: str
    encoder: str
    decoder_init: str
    decoder_step: str
    tolerance: Tolerance = QUANTIZED  # the parity export_bundle requires of it

    @property
    def name(self) -> str:
        """The pair's folder name under a parent `--out`: `tflite-fp16`."""
        return f"{self.format}-{self.precision}"

    def file_precision(self, role: str) -> str:
        """The precision label the manifest gives the file of `role`; a twoway bundle's
        backward pair is stored as its forward twin (decoder_init_backward as decoder_init)."""
        role = FORWARD_TWINS.get(role, role)
        if role not in ROLES:
            raise ValueError(f"unknown model role {role!r}; choose one of {ROLES}")
        return getattr(self, role)

    @property
    def float_only(self) -> bool:
        """Every file is float32: the bundle must decode like Keras (strict parity)."""
        return all(self.file_precision(role) == "fp32" for role in ROLES)


DYNAMIC_RANGE = "dynamic"  # a file's precision: int8 weights, float activations

# Per format, the first pair listed is the default of `caption-export --format F`.
# fmt: off
RECIPES: tuple[Recipe, ...] = (
    Recipe("tflite", "int8", "full-integer encoder (calibrated on training images) + dynamic-range int8 decoders", "int8", DYNAMIC_RANGE, DYNAMIC_RANGE),
    Recipe("tflite", "fp32", "all float32", "fp32", "fp32", "fp32", FLOAT),
    Recipe("tflite", "fp16", "float16 weights in all three files, float32 math", "fp16", "fp16", "fp16"),
    Recipe("tflite", "dynamic", "dynamic-range int8 weights in all three files, float math", DYNAMIC_RANGE, DYNAMIC_RANGE, DYNAMIC_RANGE),
    Recipe("onnx", "fp32", "all float32", "fp32", "fp32", "fp32", FLOAT),
    Recipe("onnx", "dynamic", "int8 weights, activations quantized per call (onnxruntime.quantization)", DYNAMIC_RANGE, DYNAMIC_RANGE, DYNAMIC_RANGE),
    Recipe("onnx", "int8", "static int8 (QDQ) encoder calibrated on training images + dynamic-range int8 decoders", "int8", DYNAMIC_RANGE, DYNAMIC_RANGE),
)
# fmt: on

FORMATS: tuple[str, ...] = tuple(f.name for f in FORMAT_ROWS)
# Precisions per format, default first (the shape export.exporter and export.cli expose).
PRECISIONS: dict[str, tuple[str, ...]] = {
    f: tuple(r.precision for r in RECIPES if r.format == f) for f in FORMATS
}
ALL_PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(r.precision for r in RECIPES))


def format_row(model_format: str) -> Format:
    """The Format row of a model format; ValueError if there is none."""
    for row in FORMAT_ROWS:
        if row.name == model_format:
            return row
    raise ValueError(f"unknown model format {model_format!r}; choose one of {list(FORMATS)}")


def get(model_format: str, precision: str | None = None) -> Recipe:
    """The recipe of a pair (precision None: the format's default); ValueError if none."""
    if model_format not in PRECISIONS:
        raise ValueError(f"unknown model format {model_format!r}; choose one of {list(FORMATS)}")
    precision = precision or PRECISIONS[model_format][0]
    for recipe in RECIPES:
        if (recipe.format, recipe.precision) == (model_format, precision):
            return recipe
    raise ValueError(
        f"precision {precision!r} is not available for {model_format}; "
        f"choose one of {PRECISIONS[model_format]}"
    )


def select(formats: str, quantize: str | None) -> list[Recipe]:
    """The pairs that `--format F --quantize Q` asks for, in registry order.

    `formats`: a format, `all`, or a comma list; `quantize`: a precision, `all`, a comma
    list, or None (each format's default). A pair that does not exist is skipped when
    `all` was asked on either side, and is a ValueError when both sides were named.
    """
    all_formats = formats.strip() == "all"
    wanted_formats = list(FORMATS) if all_formats else _split(formats)
    for f in wanted_formats:
        if f not in PRECISIONS:
            raise ValueError(f"unknown format {f!r}; choose from {', '.join(FORMATS)} or all")
    if quantize is None:
        return [get(f) for f in wanted_formats]
    all_precisions = quantize.strip() == "all"
    wanted = list(ALL_PRECISIONS) if all_precisions else _split(quantize)
    for p in wanted:
        if p not in ALL_PRECISIONS:
            raise ValueError(
                f"unknown precision {p!r}; choose from {', '.join(ALL_PRECISIONS)} or all"
            )
    chosen = []
    for recipe in RECIPES:
        if recipe.format in wanted_formats and recipe.precision in wanted:
            chosen.append(recipe)
    if not (all_formats or all_precisions):
        for f in wanted_formats:
            for p in wanted:
                if p not in PRECISIONS[f]:
                    raise ValueError(
                        f"--quantize {p} is not available for --format {f}; "
                        f"choose one of {', '.join(PRECISIONS[f])}"
                    )
    for p in wanted:
        if not all_precisions and not any(r.precision == p for r in chosen):
            raise ValueError(f"--quantize {p} is available for none of {', '.join(wanted_formats)}")
    return chosen


def _split(text: str) -> list[str]:
    items = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise ValueError(f"empty list {text!r}")
    return items


def markdown_table() -> str:
    """Every pair, for the docs: format, precision, files' labels, what it means."""
    rows = [
        "| format | precision | encoder | decoder_init | decoder_step | what it means |",
        "|---|---|---|---|---|---|",
    ]
    for r in RECIPES:
        labels = " | ".join(f"`{r.file_precision(role)}`" for role in ROLES)
        default = " (default)" if PRECISIONS[r.format][0] == r.precision else ""
        rows.append(f"| {r.format} | `{r.precision}`{default} | {labels} | {r.description} |")
    return "\n".join(rows)
