"""The Raspberry Pi legacy job: the runtime and its tests pass with tflite-runtime 2.14 and
numpy < 2, in an environment with neither ai_edge_litert nor TensorFlow.

`make test` builds that environment (.venv/pi-legacy, from the `pi-legacy` extra) and points
EDGECAP_PI_PYTHON at it. The runtime's test modules then run there against the pipeline
the main test run built (the `e2e` fixture), so no model is trained twice.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PI_PYTHON = os.environ.get("EDGECAP_PI_PYTHON")

# Test modules that need only the runtime, the bundle and the data (no Keras, no export).
RUNTIME_TESTS = [
    "tests/test_decoding.py",
    "tests/test_text_vocab.py",
    "tests/test_metrics.py",
    "tests/test_bundle_checks.py",
    "tests/test_stream.py",
    "tests/test_flatbuffer_check.py",
    "tests/test_xnnpack.py",
    "tests/reliability/test_bad_images.py",
]

pytestmark = pytest.mark.skipif(
    not PI_PYTHON, reason="make test sets EDGECAP_PI_PYTHON to the .venv/pi-legacy interpreter"
)


def _pi(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / PI_PYTHON) if not os.path.isabs(PI_PYTHON) else PI_PYTHON, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def _pi_facts(imports: str, facts: str) -> dict:
    """The dict expression `facts`, after `import imports`, evaluated in the legacy
    environment. Isolated (-I): the checkout's folder and its edge_caption.egg-info stay
    off the path, so what is found is what the environment installed."""
    done = _pi("-I", "-c", f"import json, {imports}; print(json.dumps({facts}))")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_environment_is_the_legacy_one():
    facts = _pi_facts(
        "importlib.util as u, numpy, tflite_runtime",
        "{'numpy': numpy.__version__, 'tflite_runtime': tflite_runtime.__version__, "
        "'litert': u.find_spec('ai_edge_litert') is not None, "
        "'tensorflow': u.find_spec('tensorflow') is not None}",
    )
    assert facts["numpy"].startswith("1.")
    assert facts["tflite_runtime"] == "2.14.0"
    assert not facts["litert"] and not facts["tensorflow"]


def test_edge_caption_comes_from_the_built_wheel_not_the_checkout():
    facts = _pi_facts(
        "importlib.metadata as md, edgecap.edge_runtime as rt",
        "{'file': rt.__file__, 'record': md.distribution('edge-caption').read_text('RECORD'), "
        "'scripts': sorted(e.name for e in md.distribution('edge-caption').entry_points), "
        "'assets': [str(f) for f in md.distribution('edge-caption').files if f.suffix == '.keras']}",
    )
    assert "site-packages" in facts["file"]  # not REPO/edge_runtime, the checkout
    assert not facts["file"].startswith(str(REPO / "edge_runtime"))
    # A wheel's RECORD lists every module it installed; an editable install lists none.
    assert "edgecap/edge_runtime/cli.py" in facts["record"]
    assert "edge_caption" in facts["scripts"] and "caption-bench" in facts["scripts"]
    assert any(a.endswith("mobilenet_synth.keras") for a in facts["assets"])
    # The console script the wheel installed runs, without TensorFlow.
    version = _pi(str(Path(PI_PYTHON).parent / "edge_caption"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("edge_caption 0.")


def test_edge_caption_falls_back_to_tflite_runtime_and_captions_alike(e2e):
    folder = e2e["data"] / "Flicker8k_Dataset"
    image = sorted(folder.glob("*.jpg"))[0]
    args = ["-m", "edgecap.edge_runtime.cli", "--model", str(e2e["bundle"]), "--source", str(image)]
    legacy = _pi(*args, "--beam", "3")
    assert legacy.returncode == 0, legacy.stderr
    assert "ai_edge_litert is not installed; using the tflite_runtime fallback" in legacy.stderr
    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.edge_runtime.decoding import DecodeOptions

    with Captioner.open(e2e["bundle"], decode=DecodeOptions(beam_width=3)) as captioner:
        assert captioner.backends["encoder"] == "ai_edge_litert"
        expected = captioner.caption(image).text
    assert legacy.stdout.strip() == f"{image}\t{expected}"


def test_runtime_tests_pass_in_the_legacy_environment(e2e):
    done = _pi(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *RUNTIME_TESTS,
        env={"EDGECAP_PREBUILT_E2E": str(e2e["root"])},
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
