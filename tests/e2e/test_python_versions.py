"""The Python range (pyproject.toml) and what the training tools say where TensorFlow has no
wheel. The runtime on Python 3.13 and on aarch64 is proven in Debian roots by
`make test-debian13` and `make test-arm64` (tests/platforms/), not here."""

import importlib.util

import pytest
import tomllib
from conftest import REPO


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_python_range_is_open_and_tensorflow_keeps_its_limit_through_a_marker():
    project = _project()
    assert project["requires-python"] == ">=3.10"
    extras = project["optional-dependencies"]
    tensorflow = [r for r in extras["train"] if r.startswith("tensorflow")]
    assert tensorflow == ["tensorflow-cpu==2.21.0; python_version < '3.14'"]
    assert "tflite-runtime==2.14.0; python_version < '3.12'" in extras["pi-legacy"]
    # numpy < 2 there: OpenCV 4.12 and later need numpy >= 2, so the cap spares pip a
    # backtrack through six OpenCV releases.
    assert "opencv-python-headless>=4.8,<4.12" in extras["pi-legacy"]


def test_caption_export_without_tensorflow_says_which_pythons_have_it(
    monkeypatch, capsys, tmp_path
):
    from edgecap.export import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real(name, *a),
    )
    status = cli.main(
        [str(tmp_path), "--format", "tflite", "--quantize", "int8", "--out", str(tmp_path / "b")]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "caption-export: error: tensorflow is not installed" in err
    assert "Python 3.10 to 3.13" in err


def test_caption_train_without_tensorflow_says_which_pythons_have_it(monkeypatch, capsys):
    from edgecap.train import cli_train

    def train(argv):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setattr(cli_train, "_train", train)
    assert cli_train.main(["--data", "x", "--out", "y"]) == 2
    assert "caption-train: error: tensorflow is not installed" in capsys.readouterr().err

    def other(argv):
        raise ModuleNotFoundError("No module named 'foo'", name="foo")

    monkeypatch.setattr(cli_train, "_train", other)
    with pytest.raises(ModuleNotFoundError):
        cli_train.main(["--data", "x", "--out", "y"])
