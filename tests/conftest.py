import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# The real Flickr8k annotation files, beside the repository (images are not shipped).
FLICKR8K = Path(os.environ.get("EDGECAP_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))
# Real photos and ImageNet weights, beside the repository (never committed into it).
SHARED = Path(os.environ.get("EDGECAP_SHARED", REPO.parent / "shared"))

# Tests that take one of these fixtures need data that is not in the repository. A clone
# without it skips them (each with one line saying what is missing and where to point);
# CI (CI=true) fails instead, so the tests it runs keep proving that data's paths.
SHARED_FIXTURES = {
    "flickr8k_annotations",
    "imagenet_weights",
    "imagenet_check",
    "flickr8k_originals",
    "flickr8k_224",
}
MISSING_DATA = "needs data outside the repository: "


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared_data: needs the Flickr8k files, photos or ImageNet weights of ../shared "
        "(EDGECAP_SHARED, EDGECAP_FLICKR8K); skipped where they are absent, except in CI",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marked from the fixtures each test takes, so a new test cannot forget the mark.
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the shared data must be there)")
    pytest.skip(MISSING_DATA + message)


def pytest_terminal_summary(terminalreporter) -> None:
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if isinstance(r.longrepr, tuple) and r.longrepr[2].startswith("Skipped: " + MISSING_DATA)
    ]
    if skipped:
        terminalreporter.write_sep(
            "-",
            f"{len(skipped)} tests skipped for lack of data outside the repository "
            f"(looked in {SHARED} and {FLICKR8K}; set EDGECAP_SHARED and EDGECAP_FLICKR8K)",
        )


@pytest.fixture(scope="session")
def flickr8k_annotations() -> Path:
    if not (FLICKR8K / "Flickr8k.token.txt").exists():
        _missing(
            f"the real Flickr8k annotation files, not found at {FLICKR8K}; "
            "set EDGECAP_FLICKR8K to the folder that holds Flickr8k.token.txt"
        )
    return FLICKR8K


def _shared(relative: str, what: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        _missing(
            f"{what}, not found at {path}; set EDGECAP_SHARED to the folder that holds "
            "data/ and weights/ (by default ../shared beside the repository)"
        )
    return path


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    return _shared("weights/imagenet", "ImageNet encoder weights")


@pytest.fixture(scope="session")
def imagenet_check() -> Path:
    return _shared("data/imagenet_check", "ImageNet check photos")


@pytest.fixture(scope="session")
def flickr8k_originals() -> Path:
    return _shared("data/flickr8k-originals", "Flickr8k photos at original size")


@pytest.fixture(scope="session")
def flickr8k_224() -> Path:
    return _shared("data/flickr8k-224", "Flickr8k (224 px copy)")


# A small but real pipeline, shared by the end-to-end tests: synthetic scenes -> features from
# the shipped demo encoder -> LSTM decoder -> int8 TFLite bundle. About a minute on 2 cores.
E2E_IMAGES = 1600
E2E_EPOCHS = 25


# The Raspberry Pi legacy job (tests/e2e/test_pi_legacy.py) runs the runtime's tests in an
# environment without TensorFlow, on the pipeline the main test run already built.
PREBUILT_E2E = os.environ.get("EDGECAP_PREBUILT_E2E")


def load_e2e(root: Path, metrics: dict | None = None, manifest: dict | None = None) -> dict:
    """The e2e pipeline's folders under `root`, as the `e2e` fixture hands them out."""
    return {
        "root": root,
        "data": root / "data",
        "run": root / "run",
        "bundle": root / "bundle-int8",
        "metrics": metrics or json.loads((root / "run" / "metrics.json").read_text()),
        "manifest": manifest or json.loads((root / "bundle-int8" / "manifest.json").read_text()),
    }


def build_e2e(root: Path) -> dict:
    """Build the e2e pipeline into `root` (an empty folder). tests/platforms/build_e2e.py
    calls it to make the folder that EDGECAP_PREBUILT_E2E names in a Debian root."""
    from edgecap.export.exporter import export_bundle
    from edgecap.train.decoders import DecoderConfig
    from edgecap.train.synthetic import generate
    from edgecap.train.training import TrainConfig, train

    generate(root / "data", E2E_IMAGES, seed=11, progress=False)
    config = TrainConfig(
        data=str(root / "data"),
        encoder="mobilenet_synth",
        weights=os.environ.get("EDGECAP_TEST_ENCODER_WEIGHTS", "default"),
        decoder=DecoderConfig(units=128, embed_dim=64),
        epochs=E2E_EPOCHS,
        batch_size=64,
        feature_cache=str(root / "features"),
        keep="last",  # 25 epochs: scoring dev after each would double the fixture's time
    )
    metrics = train(config, root / "run", progress=False)
    manifest = export_bundle(root / "run", root / "bundle-int8", "int8", parity_images=20)
    return load_e2e(root, metrics, manifest)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory):
    if PREBUILT_E2E:
        return load_e2e(Path(PREBUILT_E2E))
    return build_e2e(tmp_path_factory.mktemp("e2e"))


def train_kind_and_export(
    e2e: dict, root: Path, kind: str, epochs: int, bundles: tuple[tuple[str, str], ...]
) -> dict:
    """A run of decoder `kind` on the e2e data and features (small: 96 units, `epochs`
    epochs, the last kept), exported to each (format, precision) of `bundles` under root;
    the module fixtures of the other decoder kinds' end-to-end tests."""
    from edgecap.export.exporter import export_bundle
    from edgecap.train.decoders import DecoderConfig
    from edgecap.train.training import TrainConfig, train

    config = TrainConfig(
        data=str(e2e["data"]),
        encoder="mobilenet_synth",
        decoder=DecoderConfig(kind=kind, units=96, embed_dim=48),
        epochs=epochs,
        batch_size=64,
        feature_cache=str(e2e["root"] / "features"),  # the e2e run's cache (attend adds maps)
        keep="last",
    )
    metrics = train(config, root / "run", progress=False)
    exported = {
        (fmt, precision): export_bundle(
            root / "run", root / f"{fmt}-{precision}", precision, parity_images=20,
            model_format=fmt,
        )
        for fmt, precision in bundles
    }  # fmt: skip
    return {"root": root, "metrics": metrics, "bundles": exported, "e2e": e2e}


@pytest.fixture(scope="session")
def onnx_bundle(e2e, tmp_path_factory):
    """The e2e run as an fp32 ONNX bundle (tests/export/test_onnx.py, the thread tests)."""
    from edgecap.export.exporter import export_bundle

    out = tmp_path_factory.mktemp("onnx") / "bundle-onnx-fp32"
    manifest = export_bundle(e2e["run"], out, "fp32", parity_images=20, model_format="onnx")
    return {"path": out, "manifest": manifest}


def rising_dev_scores(monkeypatch, module) -> None:
    """Every epoch after the parent (scored twice: averaged and live) beats the one before
    on dev: `module.score_split` adds its call's number to CIDEr-D from the third call on,
    so a training with an average keeps its last epoch whatever the toy data gives."""
    from dataclasses import replace

    real_score, calls = module.score_split, []

    def later_scores_higher(*args, **kwargs):
        calls.append(1)
        scores = real_score(*args, **kwargs)
        return scores if len(calls) <= 2 else replace(scores, cider_d=scores.cider_d + len(calls))

    monkeypatch.setattr(module, "score_split", later_scores_higher)
