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
    from edgecap.edge_runtime.evaluation.datasets import load_dataset

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
    with Captioner.open(e2e["bundle"]) as captioner:
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


def test_python_api_raises_image_error_naming_each_bad_input(e2e, good_image, tmp_path):
    """Captioner.caption, the library path: every bad input is an ImageError that names it,
    and the captioner goes on captioning good images afterwards."""
    good = _jpeg_bytes(good_image, quality=95)
    decode_failures = {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "text.jpg": b"this is not an image\n",
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20,
    }
    with Captioner.open(e2e["bundle"]) as captioner:
        reference = captioner.caption(good_image).text
        for name, data in decode_failures.items():
            path = tmp_path / name
            path.write_bytes(data)
            with pytest.raises(ImageError) as caught:
                captioner.caption(path)
            message = str(caught.value)
            assert message.startswith(f"{path}: cannot decode image ("), message
            assert message.endswith("); the file is corrupt or not an image"), message

        refused = [
            (tmp_path / "missing.jpg", f"{tmp_path / 'missing.jpg'}: image file not found"),
            (tmp_path, f"{tmp_path}: cannot read image file (Is a directory)"),
            (np.zeros((0, 0, 3), np.uint8), "image has no pixels (0x0)"),
            (
                np.zeros((4, 4, 5), np.uint8),
                "image array must be [H, W], [H, W, 3] or [H, W, 4], got (4, 4, 5)",
            ),
            (
                Image.new("La", (8, 8)),
                "cannot convert an image of mode La to RGB (conversion from La to L not supported)",
            ),
            (42, "cannot caption an object of type int; pass a path, PIL image or array"),
            (np.full((4, 4, 3), None), "image array must hold numbers, got dtype object"),
            (np.full((4, 4), "x"), "image array must hold numbers, got dtype <U1"),
        ]
        for bad, expected in refused:
            with pytest.raises(ImageError) as caught:
                captioner.caption(bad)
            assert str(caught.value) == expected

        bomb = tmp_path / "bomb.png"
        good_image.resize((400, 400)).save(bomb)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
            with pytest.raises(ImageError, match=rf"^{bomb}: image is too large to decode safely"):
                captioner.caption(bomb)
        assert captioner.caption(good_image).text == reference  # still works


def test_image_between_one_and_two_times_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    """PIL itself only warns below twice MAX_IMAGE_PIXELS and then decodes the whole image."""
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 400), (90, 140, 200)).save(path)  # 1.6 x the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value) == (
        f"{path}: image is too large to decode safely (400x400 = 160000 pixels, more than the "
        "100000 allowed)"
    )
