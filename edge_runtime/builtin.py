"""The bundles that ship inside the package, so that a device captions a photo right after
`pip install`: `edge_caption --source photo.jpg`, `Captioner.open()`.

Each is an ordinary bundle folder under `edge_runtime/models/NAME/`, copied there by
`make release-model` (export/release.py), which re-scores it on the Flickr8k test split and
writes those scores and where the bundle came from into its model card
(`model_card.test_metrics`, `model_card.provenance`). tests/e2e/test_builtin_model.py holds the
shipped files to those scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# What `edge_caption` and `Captioner.open()` use when no model is named.
DEFAULT_MODEL = "mobilenet_v2-lstm"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    path: Path
    bytes: int  # the bundle's files, manifest included
    recipe: str | None
    model_card: dict[str, Any]

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_MODEL


def builtin_names() -> list[str]:
    """Names of the built-in bundles this install has, sorted."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").is_file())


def builtin_models() -> list[BuiltinModel]:
    """Every built-in bundle with what `edge_caption models` lists (manifests only, no model
    is loaded)."""
    from .manifest import load_manifest

    models = []
    for name in builtin_names():
        path = MODELS_DIR / name
        manifest = load_manifest(path, verify_hashes=False)
        models.append(
            BuiltinModel(
                name=name,
                path=path,
                bytes=sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
                recipe=manifest.recipe.name if manifest.recipe else None,
                model_card=manifest.model_card or {},
            )
        )
    return models


def resolve_bundle(model: str | os.PathLike | None) -> Path:
    """The bundle folder for `model`: a folder path as given, else a built-in name; None is
    the default built-in. A folder wins over a built-in of the same name."""
    if model is None:
        model = DEFAULT_MODEL
        if DEFAULT_MODEL not in builtin_names():
            raise BundleError(
                f"this install has no built-in model ({MODELS_DIR} holds no "
                f"{DEFAULT_MODEL}); pass a bundle folder written by caption-export "
                "(edge_caption --model FOLDER)"
            )
    path = Path(model)
    if path.exists() or os.sep in str(model) or (os.altsep and os.altsep in str(model)):
        return path
    if str(model) in builtin_names():
        return MODELS_DIR / str(model)
    names = ", ".join(builtin_names()) or "none in this install"
    raise BundleError(
        f"{model}: no such bundle folder, and not a built-in model (built-in: {names}); "
        "pass a folder written by caption-export, or see `edge_caption models`"
    )
