"""pyproject.toml's extras: what pip meets first decides whether it backtracks.

pip adds the core requirements of a package before an extra's, and fetches the newest
release of each as it adds it. An extra that caps a project the core also requires (numpy
< 2 for tflite-runtime) therefore made pip fetch the newest release first and discard it:
`[pi-legacy]` fetched numpy 2 and OpenCV 5 (52 MB) for nothing. These tests keep the
caps where pip meets them first."""

import subprocess
import sys

import tomllib
from conftest import REPO
from packaging.requirements import Requirement

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]


def _requirements(extra: str | None) -> list[Requirement]:
    lines = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _capped(requirement: Requirement) -> bool:
    return any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier)


def test_no_extra_caps_a_project_the_core_requires():
    core = {r.name for r in _requirements(None)}
    for extra in PROJECT["optional-dependencies"]:
        for requirement in _requirements(extra):
            if requirement.name in core:
                assert not _capped(requirement), (extra, str(requirement))


def test_pi_legacy_caps_numpy_and_opencv_itself_and_does_not_pull_the_uncapped_core():
    pi_legacy = {r.name: r for r in _requirements("pi-legacy")}
    assert NAME not in pi_legacy, "[pi-legacy] must not include [core]: its caps come first"
    assert not pi_legacy["numpy"].specifier.contains("2.0.0")
    assert not pi_legacy["opencv-python-headless"].specifier.contains("4.12.0")
    # Every other way to run the runtime brings numpy and OpenCV through [core].
    for extra in ("edge", "train"):
        assert any(r.name == NAME and r.extras == {"core"} for r in _requirements(extra)), extra
    assert {r.name for r in _requirements("core")} == {"numpy", "opencv-python-headless"}


def test_a_bare_install_without_numpy_says_which_extra_to_add():
    """The bare package has no numpy: importing the runtime names the extra to install."""
    code = "import sys; sys.modules['numpy'] = None; import edgecap.edge_runtime"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: edge-caption's runtime needs numpy, which comes with")
    assert "pip install 'edge-caption[edge]'" in last
