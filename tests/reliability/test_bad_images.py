"""Bad and unusual images: each bad file gets one clear line, the batch goes on, and the
exit status says that something failed. Unusual but valid images caption normally."""

import io

import numpy as np
import pytest
from cli_helpers import edge_caption
from PIL import Image

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import ImageError
from edgecap.edge_runtime.preprocess import load_image


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_image(e2e):
    from edgecap.train.flickr8k import load_dataset

    dataset = load_dataset(e2e["data"])
    with Image.open(dataset.image_path(dataset.splits["test"][0])) as img:
        return img.convert("RGB")


def test_bad_files_each_get_one_line_and_the_batch_goes_on(e2e, good_image, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    good = _jpeg_bytes(good_image, quality=95)
    (folder / "a_good.jpg").write_bytes(good)
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "d_text.jpg").write_text("this is not an image\n")
    (folder / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    good_image.save(folder / "f_good.png")
    result = edge_caption("--model", e2e["bundle"], "--source", folder)
    assert result.returncode == 1
    captioned = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert captioned == [str(folder / "a_good.jpg"), str(folder / "f_good.png")]
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("edge_caption: skipped:")
    ]
    assert len(errors) == 4
    for name in ("b_empty.jpg", "c_truncated.jpg", "d_text.jpg", "e_corrupt.png"):
        assert sum(name in line for line in errors) == 1, name
    assert all("cannot decode image" in line for line in errors)
    assert "4 input(s) could not be captioned" in result.stderr


def _variants(good: Image.Image) -> dict[str, bytes]:
    out = {}
    for name, image, fmt in (
        ("grayscale.png", good.convert("L"), "PNG"),
        ("rgba.png", good.convert("RGBA"), "PNG"),
        ("palette.png", good.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        ("cmyk.jpg", good.convert("CMYK"), "JPEG"),
    ):
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out[name] = buf.getvalue()
    gray16 = (np.asarray(good.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)  # 16-bit
    buf = io.BytesIO()
    Image.fromarray(gray16).save(buf, format="PNG")
    out["gray16.png"] = buf.getvalue()
    return out


def test_unusual_but_valid_images_caption_like_the_original(e2e, good_image, tmp_path):
    with Captioner.from_bundle(e2e["bundle"]) as captioner:
        reference = captioner.caption(good_image)
        for name, data in _variants(good_image).items():
            path = tmp_path / name
            path.write_bytes(data)
            result = captioner.caption(path)
            assert result.tokens, name
            if name in ("rgba.png", "palette.png", "cmyk.jpg"):  # colour survives these
                assert result.text == reference.text, name


def test_exif_rotation_is_applied(good_image, tmp_path):
    wide = good_image.resize((96, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    wide.save(path, format="JPEG", exif=exif.tobytes())
    assert load_image(path).size == (48, 96)


def test_decompression_bomb_is_refused(good_image, tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    good_image.resize((400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 400 x 400 > 2 x the limit
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large to decode safely"):
        load_image(path)
