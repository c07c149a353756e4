"""Recipes as data: each file in train/configs/ is one recipe (nanoGPT's config/).

    seed-*.json      the seed project's four configurations (`caption-train --preset NAME`)
    synth-*.json     the decoders of `make synth-results`, on the synthetic demo data
    flickr8k-*.json  the models `make flickr8k` trains, exports and scores

A recipe has a "train" section (TrainConfig's fields, "decoder" holding DecoderConfig's)
and may have "finetune" (FinetuneConfig), "scst" (ScstConfig) and "pipeline" (how `make
flickr8k` names, exports and decodes the model) sections. `caption-train --config NAME`
and its `finetune` / `scst` subcommands read their section; flags given on the command
line win. Every key is checked against the field it sets, and an error names the file and
the key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass(frozen=True)
class PipelineEntry:
    """How `make flickr8k` handles a model besides training it."""

    name: str  # the run folder under the pipeline's --out
    weights_file: str  # the encoder's ImageNet weights, a file in --weights-dir
    # Bundles to export and evaluate, as [format, precision] pairs.
    bundles: tuple[tuple[str, str], ...] = (("tflite", "int8"),)
    beams: tuple[int, ...] = (1, 3)
    # Beam ranking: score / (words + 1) ** length_penalty, chosen on the dev split.
    length_penalty: float = 0.5
    order: int = 0  # place in `make flickr8k`'s run and table, lowest first


def _sections() -> dict[str, type]:
    from .decoders import DecoderConfig
    from .finetune import FinetuneConfig
    from .scst import ScstConfig
    from .training import TrainConfig

    return {"train": TrainConfig, "train.decoder": DecoderConfig, "finetune": FinetuneConfig,
            "scst": ScstConfig, "pipeline": PipelineEntry}  # fmt: skip


# Fields a recipe never sets: the data is the command line's, and the decoder's sizes that
# depend on the vocabulary and the features are measured when training starts.
NOT_IN_A_RECIPE = {"train": {"data"},
                   "train.decoder": {"vocab_size", "feature_dim", "feature_positions", "max_length"}}  # fmt: skip


def config_path(name: str | Path) -> Path:
    """A recipe's file: a name in train/configs/ ("seed-mobilenet-lstm") or a path."""
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return path
    found = CONFIG_DIR / f"{name}.json"
    if not found.is_file():
        raise ValueError(
            f"{name}: no such recipe; pass a .json file or one of {', '.join(config_names())}"
        )
    return found


def config_names(prefix: str = "") -> list[str]:
    """The recipes in train/configs/ whose names start with `prefix`."""
    return sorted(p.stem for p in CONFIG_DIR.glob(f"{prefix}*.json"))


def _check(section: str, values: Any, where: Path) -> None:
    """Each key a field of the section's dataclass, each value of that field's type."""
    cls = _sections()[section]
    if not isinstance(values, dict):
        raise ValueError(f"{where}: {section} must be an object of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    settable = sorted(set(fields) - NOT_IN_A_RECIPE.get(section, set()))
    for key, value in values.items():
        if key not in settable:
            raise ValueError(
                f"{where}: {section}.{key} is not a setting; choose from {', '.join(settable)}"
            )
        if section == "train" and key == "decoder":
            _check("train.decoder", value, where)
            continue
        default = fields[key].default
        if default is dataclasses.MISSING:  # a required field: its annotation names it
            expected = {"str": str, "int": int, "float": float}.get(str(fields[key].type), object)
        else:
            expected = type(default)
        accepted = (int, float) if expected is float else (list,) if expected is tuple else expected
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, accepted):
            raise ValueError(
                f"{where}: {section}.{key} is {value!r}; it takes a {expected.__name__}"
            )


def load_config(name: str | Path) -> dict[str, Any]:
    """A recipe, checked: {"description", "train", and maybe "finetune", "scst", "pipeline"}."""
    path = config_path(name)
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON recipe ({exc})") from None
    if not isinstance(recipe, dict) or "train" not in recipe:
        raise ValueError(f'{path}: a recipe is an object with at least a "train" section')
    for key, values in recipe.items():
        if key == "description":
            continue
        if key not in ("train", "finetune", "scst", "pipeline"):
            raise ValueError(
                f"{path}: {key} is not a section; use description, train, finetune, scst "
                "or pipeline"
            )
        _check(key, values, path)
    return recipe


def pipeline_entry(recipe: dict[str, Any]) -> PipelineEntry:
    """The recipe's "pipeline" section as a PipelineEntry (lists become tuples)."""
    fields = dict(recipe["pipeline"])
    if "bundles" in fields:
        fields["bundles"] = tuple(tuple(pair) for pair in fields["bundles"])
    if "beams" in fields:
        fields["beams"] = tuple(fields["beams"])
    return PipelineEntry(**fields)
