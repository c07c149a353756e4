"""Image preprocessing, driven only by the bundle manifest.

Training uses this same module, so the pixels a model saw in training are the pixels it
sees on the device.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BundleError, ImageError

REDUCING_GAP = 1.5  # see Preprocessing.reducing_gap; manifests without the field use it
# "area" is OpenCV's (see _resize_area); the others are PIL filters, kept for the bundles
# exported before "area" existed.
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
RESIZE_RULES = ("area", *PIL_FILTERS)


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB pixels become the encoder's input: resize, then `pixel * scale + offset`."""

    input_size: int  # square side the encoder takes, in pixels
    scale: float = 1.0 / 127.5  # MobileNet/Inception "tf" mode maps [0, 255] to [-1, 1]
    offset: float = -1.0
    channel_order: str = "RGB"  # order the model expects; inputs are converted to it
    # How an image becomes input_size x input_size. "area": box averages in OpenCV, on the
    # uint8 array, never a PIL image (see _resize_area): a 720p frame to 224 px costs 0.4
    # ms. "bilinear" / "nearest": PIL's filters, as bundles exported before "area" existed
    # were trained with.
    resize: str = "area"
    crop: str = "none"  # "none": stretch the whole image; "center": center square crop first
    # The PIL rules only: PIL's reducing_gap. A side at least 2 x gap x input_size long is
    # first shrunk by the whole factor floor(side / (gap x input_size)) (a box average, a
    # fraction of the cost of the filter over every source pixel), then filtered. It halves
    # a 1080p frame's resize; images under 2 x gap x input_size (every Flickr8k 224 px
    # photo, every JPEG that draft mode decoded) resize exactly as with None.
    reducing_gap: float | None = REDUCING_GAP

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, source: str = "manifest") -> Preprocessing:
        """Validate manifest.json's `preprocessing`: every field present, of its type, and
        in range. Numbers must be finite: NaN or Infinity in scale or offset used to be
        accepted and turned every image into the same garbage (captioned, exit 0), and
        an input_size of Infinity escaped as an OverflowError."""
        if not isinstance(obj, dict):
            raise BundleError(f"{source}: 'preprocessing' must be an object")
        where = f"{source} preprocessing"
        try:
            prep = cls(
                input_size=_integer(obj, "input_size", 8, 4096, where),
                scale=_number(obj, "scale", MAX_SCALE, where, nonzero=True),
                offset=_number(obj, "offset", MAX_OFFSET, where),
                channel_order=_text(obj, "channel_order", where),
                resize=_text(obj, "resize", where),
                crop=_text(obj, "crop", where),
                reducing_gap=(
                    None
                    if obj.get("reducing_gap", REDUCING_GAP) is None
                    else _number(
                        {"reducing_gap": REDUCING_GAP, **obj},
                        "reducing_gap",
                        MAX_REDUCING_GAP,
                        where,
                    )
                ),
            )
        except KeyError as exc:
            raise BundleError(f"{where}: missing field {exc.args[0]!r}") from None
        if prep.channel_order not in ("RGB", "BGR"):
            raise BundleError(
                f"{source}: channel_order must be RGB or BGR, not {prep.channel_order!r}"
            )
        if prep.resize not in RESIZE_RULES:
            raise BundleError(
                f"{source}: resize must be one of {', '.join(RESIZE_RULES)}, not {prep.resize!r}"
            )
        if prep.crop not in ("none", "center"):
            raise BundleError(f"{source}: crop must be 'none' or 'center', not {prep.crop!r}")
        if prep.reducing_gap is not None and prep.reducing_gap < 1.0:
            raise BundleError(f"{source}: reducing_gap must be null or at least 1.0")
        return prep


# Bounds of the pixel mapping `pixel * scale + offset`: every real encoder's lies within
# [-1, 1] x 255 (scale 1/127.5, 1/255, 1) and offset [-255, 255] (Caffe's means are ~124).
MAX_SCALE, MAX_OFFSET = 1e3, 1e6
MAX_REDUCING_GAP = 1e3


def _integer(obj: dict, key: str, low: int, high: int, where: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"{where}: field {key!r} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise BundleError(f"{where}: field {key!r} is {value}, outside {low}..{high}")
    return value


def _number(obj: dict, key: str, limit: float, where: str, nonzero: bool = False) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"{where}: field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > limit or (nonzero and value == 0):
        rule = f"a finite number{', not 0,' if nonzero else ''} within +-{limit:g}"
        raise BundleError(f"{where}: field {key!r} must be {rule}, got {value!r}")
    return float(value)


def _text(obj: dict, key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise BundleError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def load_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Open an image file as RGB, applying its EXIF orientation. Raises ImageError with the path.

    With `min_side`, a JPEG is decoded at the smallest of libjpeg's DCT scales (1/1, 1/2,
    1/4, 1/8) at which both sides are still at least `min_side` pixels (PIL's draft mode):
    a 12 MP photo for a 224 px encoder decodes at 1/8 size, several times faster and in a
    sixty-fourth of the memory. The resize that follows (preprocess) does the rest. Other
    formats, and JPEGs already near that size, decode in full.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:  # reads the header only
            pixels = img.width * img.height
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                # PIL refuses only above twice its limit and merely warns between 1x and
                # 2x: up to ~537 MB of RGB for one hostile file, too much for a device.
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} = {pixels} pixels, more than the "
                    f"{Image.MAX_IMAGE_PIXELS} allowed"
                )
            if min_side and img.format == "JPEG":
                img.draft(None, (min_side, min_side))
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageError as exc:  # from to_rgb, which does not know the file name
        raise ImageError(f"{path}: {exc}") from None
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(
                f"{path}: image file not found: it is a link to {os.readlink(path)!r}, which "
                "does not exist"
            ) from None
        raise ImageError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image is too large to decode safely ({exc})") from None
    except OSError as exc:
        if exc.errno is not None:
            # The OS refused to read it (a folder, no permission, an I/O error): "corrupt"
            # would send the user looking in the wrong place. PIL's own decode errors are
            # OSErrors without an errno, handled below.
            raise ImageError(f"{path}: cannot read image file ({exc.strerror})") from None
        raise ImageError(
            f"{path}: cannot decode image ({exc}); the file is corrupt or not an image"
        ) from None
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{path}: cannot decode image ({exc}); the file is corrupt or not an image"
        ) from None


EXIF_ORIENTATION = 0x0112


def upright(img: Image.Image) -> Image.Image:
    """`img` turned the way its EXIF orientation says (a phone photo held sideways), or
    `img` itself when it has no orientation to apply. For a PIL image a caller opened: a
    file path gets the same through load_image. Arrays carry no EXIF and are taken as
    they are."""
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return img
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:  # a damaged EXIF block
        raise ImageError(f"cannot read the image's EXIF orientation ({exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL mode: grayscale, palette, RGBA (composited on black), CMYK, 16-bit.

    Raises ImageError for an image without pixels or a mode PIL cannot convert (e.g. "La").
    """
    if img.width == 0 or img.height == 0:
        # PIL happily resizes a 0x0 image to a black square, which would get a caption.
        raise ImageError(f"image has no pixels ({img.width}x{img.height})")
    try:
        return _to_rgb(img)
    except ValueError as exc:
        raise ImageError(f"cannot convert an image of mode {img.mode} to RGB ({exc})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / peak, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_pixels(path: str | os.PathLike, prep: Preprocessing) -> np.ndarray:
    """An image file -> float32 array [H, W, 3] ready for the encoder: the one way every
    file is read for a model, in training, export, evaluation and on the device alike."""
    return preprocess(load_image(path, min_side=prep.input_size), prep)


def preprocess(
    image: Image.Image | np.ndarray, prep: Preprocessing, bgr: bool = False, exact: bool = False
) -> np.ndarray:
    """An RGB PIL image or uint8 array [H, W, 3] -> float32 array [S, S, 3] for the encoder.

    `bgr=True` says the image's channels are in BGR order (a camera frame as it is): they
    are swapped after the resize, on the small image, which gives the same pixels as
    swapping first (every rule works per channel) without a full-size copy.
    `exact=True` applies the rule in one step over every source pixel, with no shrinking
    by whole factors first: the reference the fast path is measured against, not a path
    to run (a 1080p frame costs several times as much).
    """
    height, width = (
        (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
    )
    if height == 0 or width == 0:  # e.g. an empty array passed to Captioner.caption
        raise ImageError(f"image has no pixels ({width}x{height})")
    if prep.crop == "center":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        if isinstance(image, Image.Image):
            image = image.crop((left, top, left + side, top + side))
        else:
            image = image[top : top + side, left : left + side]  # [side, side, 3], a view
    swap = (prep.channel_order == "BGR") != bgr
    if prep.resize == "area":
        small = _resize_area(np.asarray(image), prep.input_size, fast=not exact, swap=swap)
    else:
        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        if image.size != (prep.input_size, prep.input_size):
            size, resample = (prep.input_size, prep.input_size), PIL_FILTERS[prep.resize]
            gap = None if exact else prep.reducing_gap
            image = image.resize(size, resample, reducing_gap=gap)
        small = np.asarray(image)
        if swap:
            small = small[..., ::-1]  # a view
    # One float copy, scaled in place: `pixels * scale + offset` over a channel-reversed
    # view makes more copies and was measurably slower (docs/benchmarks.md, "Figures behind
    # the runtime's choices").
    pixels = small.astype(np.float32)  # [S, S, 3]
    np.multiply(pixels, np.float32(prep.scale), out=pixels)
    return np.add(pixels, np.float32(prep.offset), out=pixels)


def _resize_area(
    pixels: np.ndarray, side: int, fast: bool = True, swap: bool = False
) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [side, side, 3] by OpenCV's INTER_AREA, which weighs every
    source pixel by the area it covers (no aliasing, unlike a bilinear sample).

    One INTER_AREA step over a large image is slow (its non-integer path is not
    vectorized). An image at least twice the side both ways
    is therefore, unless `fast=False`, halved by 2x2 box averages (the vectorized path)
    while its short side stays at least 2 x side, sampled bilinearly to 2 side x 2 side,
    and box-averaged 2x2 once more: several times faster, and closer to the one-step result
    than halving all the way (docs/benchmarks.md, its figures under "Figures behind the
    runtime's choices"). A halving drops an
    odd last row or column. Smaller images take the one step, and an image already
    side x side is kept as it is. `swap` reverses the channels of the result (RGB <-> BGR).
    """
    try:
        import cv2
    except ImportError:
        raise BundleError(
            "this model resizes images with OpenCV (manifest preprocessing.resize 'area'), "
            "which is not installed (the [edge] and [pi-legacy] extras install it): "
            "pip install opencv-python-headless"
        ) from None
    if pixels.shape[:2] == (side, side):
        pass
    elif not fast or min(pixels.shape[:2]) < 2 * side:
        pixels = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)
    else:
        while min(pixels.shape[:2]) // 2 >= 2 * side:
            height, width = pixels.shape[:2]
            pixels = pixels[: height - height % 2, : width - width % 2]  # even sides, a view
            pixels = cv2.resize(pixels, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        pixels = cv2.resize(pixels, (2 * side, 2 * side), interpolation=cv2.INTER_LINEAR)
        pixels = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)
    # The swap on the small result: 20 times faster than numpy's copy of a reversed view.
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if swap else pixels  # [side, side, 3]
