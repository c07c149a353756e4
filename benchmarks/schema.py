"""The results file of `caption-bench`: its name, version and a validator.

`caption-bench merge` compares files written on different devices, possibly by different
versions of the tool; a field that changed meaning between versions would silently make
the comparison wrong, so a file of another schema version is refused, naming the file.
Bump SCHEMA_VERSION whenever a field is renamed, removed, or changes unit or meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.errors import EdgeCaptionError

SCHEMA = "edgecap-bench"
SCHEMA_VERSION = 1

# Fields every device fingerprint carries (benchmarks/fingerprint.py writes them).
FINGERPRINT_FIELDS = ("device", "cpu_model", "cores_logical", "arch", "os", "python", "runtimes")
# Fields every bundle entry carries, whatever its status.
BUNDLE_FIELDS = ("name", "path", "variant", "status")


def portable(value: Any, cwd: str | os.PathLike | None = None, home: str | None = None) -> Any:
    """`value` (a results dict, list or string) with the measuring machine's absolute paths
    taken out, so that a results file can be committed and compared: a path under the
    working directory becomes relative to it, one under the home folder `~/...`, a Python
    interpreter `python`, and any other `.../NAME` (its last component names the bundle or
    file; the folders above it are of that machine only). `--flag=/abs` arguments too.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    home = os.path.expanduser("~") if home is None else home

    def path(text: str) -> str:
        if "=" in text and text.startswith("--"):  # --out=/abs/path
            flag, _, rest = text.partition("=")
            return f"{flag}={path(rest)}"
        if not os.path.isabs(text) or "\n" in text:
            return text
        text = os.path.normpath(text)
        name = os.path.basename(text)
        if name.startswith("python") and os.path.basename(os.path.dirname(text)) == "bin":
            return "python"
        for root, shown in ((cwd, None), (home, "~")):
            if root not in ("", os.sep) and os.path.commonpath([text, root]) == root:
                relative = os.path.relpath(text, root)
                if shown is None:
                    return relative
                return shown if relative == "." else f"{shown}/{relative}"
        return f".../{name}" if name else text

    if isinstance(value, str):
        return path(value)
    if isinstance(value, dict):
        return {k: portable(v, cwd, home) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, cwd, home) for v in value]
    return value


def value_at(obj: dict | None, *path: str) -> Any:
    """The value at a path of keys in a results dict; None where a level is missing or
    null (a failed bundle has no latency, a skipped baseline no cold start)."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class SchemaError(EdgeCaptionError):
    """A results file is not a caption-bench results file this version can read."""


def schema_version_message(source: str, version: Any) -> str:
    """The one message for a file of another schema version (tests check it word for word)."""
    return (
        f"{source}: results schema version {version!r} is not supported; this caption-bench "
        f"reads version {SCHEMA_VERSION}. Rerun caption-bench on that device with this version"
    )


def validate(obj: Any, source: str) -> dict:
    """Check the shape of decoded results; return them, or raise SchemaError naming `source`."""
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise SchemaError(f"{source}: not a caption-bench results file (no 'schema': {SCHEMA!r})")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(schema_version_message(source, version))
    fingerprint = obj.get("fingerprint")
    if not isinstance(fingerprint, dict):
        raise SchemaError(f"{source}: missing the device 'fingerprint'")
    missing = [f for f in FINGERPRINT_FIELDS if f not in fingerprint]
    if missing:
        raise SchemaError(f"{source}: fingerprint lacks {', '.join(missing)}")
    bundles = obj.get("bundles")
    if not isinstance(bundles, list):
        raise SchemaError(f"{source}: 'bundles' must be a list")
    for i, entry in enumerate(bundles):
        if not isinstance(entry, dict):
            raise SchemaError(f"{source}: bundles[{i}] must be an object")
        missing = [f for f in BUNDLE_FIELDS if f not in entry]
        if missing:
            raise SchemaError(f"{source}: bundles[{i}] lacks {', '.join(missing)}")
    if not isinstance(obj.get("settings"), dict):
        raise SchemaError(f"{source}: missing 'settings'")
    return obj


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate one results file."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: results file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc})") from None
    return validate(obj, str(path))
