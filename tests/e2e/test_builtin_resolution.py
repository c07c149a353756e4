"""Built-in models by name: `Captioner.open()`, `edge_caption` without --model,
`edge_caption models` and `info NAME`, over a copy of the e2e bundle installed as the
default built-in (the real shipped model is held to its card in test_builtin_model.py)."""

import json
import shutil

import pytest

from edgecap.edge_runtime import builtin
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.cli import main as edge_caption
from edgecap.edge_runtime.errors import BundleError


@pytest.fixture
def installed(e2e, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(e2e["bundle"], models / builtin.DEFAULT_MODEL)
    monkeypatch.setattr(builtin, "MODELS_DIR", models)
    return models / builtin.DEFAULT_MODEL


def _image(e2e):
    return sorted((e2e["data"] / "Flicker8k_Dataset").glob("*.jpg"))[0]


def test_the_default_built_in_model_opens_with_no_path(e2e, installed):
    image = _image(e2e)
    with Captioner.open(e2e["bundle"]) as by_path, Captioner.open() as default:
        assert default.bundle.path == installed
        assert default.caption(image).text == by_path.caption(image).text
    with Captioner.open(builtin.DEFAULT_MODEL) as by_name:
        assert by_name.bundle.path == installed


def test_edge_caption_without_model_uses_the_built_in(e2e, installed, capsys):
    image = _image(e2e)
    assert edge_caption(["--source", str(image)]) == 0
    default = capsys.readouterr().out
    assert edge_caption(["--model", str(e2e["bundle"]), "--source", str(image)]) == 0
    assert default == capsys.readouterr().out and default.startswith(f"{image}\t")
    assert edge_caption(["--model", builtin.DEFAULT_MODEL, "--source", str(image)]) == 0
    assert capsys.readouterr().out == default


def test_models_lists_the_built_in_bundles(e2e, installed, capsys):
    assert edge_caption(["models"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{builtin.DEFAULT_MODEL} (default)\n")
    assert "recipe tflite-int8" in text and "licences  weights:" in text
    assert edge_caption(["models", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["name"] == builtin.DEFAULT_MODEL and record["default"] is True
    assert record["bytes"] == sum(f.stat().st_size for f in installed.iterdir())
    assert edge_caption(["info", builtin.DEFAULT_MODEL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle"] == str(installed)


def test_an_unknown_name_or_a_missing_built_in_is_a_named_error(e2e, installed, tmp_path, capsys):
    assert edge_caption(["--model", "no-such-model", "--source", str(_image(e2e))]) == 2
    err = capsys.readouterr().err
    assert "no-such-model: no such bundle folder, and not a built-in model (built-in: " in err
    assert builtin.DEFAULT_MODEL in err and "Traceback" not in err
    # A folder path that does not exist is a folder error, not a name lookup.
    with pytest.raises(BundleError, match="bundle folder not found"):
        Captioner.open(tmp_path / "nowhere")
    shutil.rmtree(installed)
    with pytest.raises(BundleError, match="this install has no built-in model"):
        Captioner.open()
    assert edge_caption(["models"]) == 1
    assert "no built-in model in this install" in capsys.readouterr().err


def test_the_demo_captions_real_photo_folders_with_the_built_in(e2e, installed, tmp_path, capsys):
    from edgecap.export.demo import photos

    folder = tmp_path / "photos"
    folder.mkdir()
    images = sorted((e2e["data"] / "Flicker8k_Dataset").glob("*.jpg"))[:3]
    for image in images:
        shutil.copyfile(image, folder / image.name)
    (folder / "notes.txt").write_text("not a photo")
    result = photos([folder], e2e["data"] / "Flickr8k.token.txt", tmp_path / "photos.json")
    out = capsys.readouterr().out
    assert [r["photo"] for r in result["photos"]] == [str(folder / i.name) for i in images]
    assert all(r["reference"] and r["caption"] for r in result["photos"])
    assert f"\n{images[0].name:<28} {result['photos'][0]['caption']}\n" in out
    assert "reference: " in out and "3 photos with Flickr8k references: BLEU-4" in out
    assert json.loads((tmp_path / "photos.json").read_text())["scores"]["images"] == 3
