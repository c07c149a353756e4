"""The device fingerprint that goes into every results file: what ran, on what.

Runtime versions come from installed package metadata (importlib.metadata), never from
importing the package: importing TensorFlow alone costs seconds and hundreds of MB, and
the fingerprint must not disturb the measurements that follow it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .bench_result import Fingerprint

try:
    import psutil  # the bench extra: physical cores and memory
except ImportError:
    psutil = None

# Runtime name in the results -> (the module it is imported as, the distributions that
# provide it). Where several are installed side by side (onnxruntime and onnxruntime-gpu,
# say), the version is the one of the distribution Python would import.
RUNTIME_DISTRIBUTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "edge_caption": ("edgecap", ("edge-caption",)),
    "numpy": ("numpy", ("numpy",)),
    "ai_edge_litert": ("ai_edge_litert", ("ai-edge-litert", "ai-edge-litert-nightly")),
    "tflite_runtime": ("tflite_runtime", ("tflite-runtime",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-silicon")),
    "opencv": ("cv2", ("opencv-python-headless", "opencv-python",
                       "opencv-contrib-python-headless", "opencv-contrib-python")),
    "pillow": ("PIL", ("pillow",)),
    "tensorflow": ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-macos",
                                  "tensorflow-aarch64")),
    "keras": ("keras", ("keras",)),
}  # fmt: skip

# /proc/cpuinfo keys that name the CPU or board, by platform: x86 has "model name"; a
# Raspberry Pi has "Model" (the board) and older kernels "Hardware"; some ARM SoCs "Processor".
_CPUINFO_KEYS = ("model name", "Model", "Hardware", "Processor", "cpu model")


def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name, (module, distributions) in RUNTIME_DISTRIBUTIONS.items():
        found = []
        for dist in distributions:
            try:
                found.append(metadata.distribution(dist))
            except metadata.PackageNotFoundError:
                continue
        versions[name] = _imported(module, found).version if found else None
    return versions


def _imported(module: str, found: list[metadata.Distribution]) -> metadata.Distribution:
    """Of the installed distributions of `module`, the one whose files an import would
    load (find_spec locates a top-level module without running it)."""
    if len(found) > 1:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            where = Path(spec.origin).resolve().parent
            for dist in found:
                if Path(str(dist.locate_file(module))).resolve() == where:
                    return dist
    return found[0]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU (or board) name: /proc/cpuinfo on Linux, sysctl on macOS, else platform."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in _CPUINFO_KEYS:
        if key in fields:
            return fields[key]
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _os_release() -> str | None:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:  # no /etc/os-release (macOS, Windows)
        return None


def short_label(model: str, cores: int) -> str:
    """A compact device label for tables: 'Intel Xeon Processor, 2 cores'."""
    name = re.sub(r"\((R|TM|tm|r)\)", "", model)
    name = re.sub(r"\s+", " ", name).strip()
    return f"{name}, {cores} cores"


def fingerprint(device: str | None = None) -> Fingerprint:
    """Everything a reader needs to tell two devices (or two setups of one) apart."""
    model = cpu_model()
    cores = os.cpu_count() or 1
    from edgecap.edge_runtime.bundle import usable_cores

    # The cores this process may run on (a container or taskset can allow fewer): what
    # the runtime's default thread count uses too.
    available = usable_cores()
    return Fingerprint(
        device=device or short_label(model, cores),
        cpu_model=model,
        cores_logical=cores,
        cores_physical=psutil.cpu_count(logical=False) if psutil else None,
        cores_available=available,
        arch=platform.machine(),
        os=platform.platform(),
        os_release=_os_release(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        memory_mb=int(psutil.virtual_memory().total / 2**20) if psutil else None,
        runtimes=runtime_versions(),
    )


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none): other work on the
    machine slows every measurement, and a reader of the results should know."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def label(fp: Fingerprint) -> str:
    """One line for a README or a plot title: device, arch, OS, Python, runtimes."""
    runtimes = ", ".join(f"{k} {v}" for k, v in fp.runtimes.items() if v and k != "edge_caption")
    return (
        f"{fp.device} ({fp.cpu_model}, {fp.cores_logical} logical cores, {fp.arch}), "
        f"{fp.os_release or fp.os}, {fp.python}; {runtimes}"
    )
