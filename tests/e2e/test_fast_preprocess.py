"""Files decode at reduced size (JPEG draft) and frames resize before their channel swap;
training reads files exactly as the device does."""

import dataclasses
import sys

import numpy as np
import pytest
from PIL import Image

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.preprocess import Preprocessing, load_image, load_pixels, preprocess

PREP = Preprocessing(input_size=224)  # resize "area", the default
BILINEAR = dataclasses.replace(PREP, resize="bilinear")  # bundles exported before "area"


@pytest.fixture(scope="module")
def large_jpegs(flickr8k_originals, tmp_path_factory):
    """12 MP JPEGs made from real photos (in a temporary folder, never in the repository)."""
    folder = tmp_path_factory.mktemp("large")
    paths = []
    for photo in sorted(flickr8k_originals.glob("*.jpg"))[:4]:
        path = folder / photo.name
        Image.open(photo).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def test_a_12_mp_jpeg_decodes_at_an_eighth_and_still_covers_the_input(large_jpegs):
    assert load_image(large_jpegs[0]).size == (4000, 3000)
    assert load_image(large_jpegs[0], min_side=224).size == (500, 375)  # 1/8, both >= 224
    assert load_image(large_jpegs[0], min_side=400).size == (1000, 750)  # 1/4: 1/8 is too small


def test_reduced_decoding_stays_close_to_the_full_decode(large_jpegs):
    # Measured on 10 such photos: max |diff| 0.039-0.078 (5-10 of 255 levels), mean 0.002-0.006.
    for path in large_jpegs:
        fast, exact = load_pixels(path, PREP), preprocess(load_image(path), PREP)
        assert fast.shape == exact.shape == (224, 224, 3)
        assert np.abs(fast - exact).max() < 0.15
        assert np.abs(fast - exact).mean() < 0.01


def test_a_photo_already_near_the_input_size_reads_exactly_as_before(flickr8k_originals):
    for photo in sorted(flickr8k_originals.glob("*.jpg"))[:5]:  # about 500 x 375: no draft
        np.testing.assert_array_equal(load_pixels(photo, PREP), preprocess(load_image(photo), PREP))


def test_training_features_read_files_the_way_the_device_does(large_jpegs):
    from edgecap.edge_runtime.evaluation.datasets import CaptionDataset
    from edgecap.train.features import _compute

    names = [p.name for p in large_jpegs]
    dataset = CaptionDataset(
        root=large_jpegs[0].parent,
        splits={"train": names},
        captions={n: ["a photo"] for n in names},
        image_dir=large_jpegs[0].parent,
    )

    def identity(batch, training=False):
        return batch.reshape(len(batch), -1)  # [B, S*S*3]: the pixels themselves

    features = _compute(dataset, names, PREP, identity, batch_size=2)
    for row, path in zip(features, large_jpegs, strict=True):
        np.testing.assert_array_equal(row, load_pixels(path, PREP).ravel())


def test_a_bgr_frame_gives_the_pixels_of_its_rgb_twin(e2e, large_jpegs):
    rgb = np.asarray(Image.open(large_jpegs[0]).resize((1280, 720)))  # [720, 1280, 3]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    with Captioner.open(e2e["bundle"]) as captioner:
        np.testing.assert_array_equal(captioner.encode(bgr, bgr=True), captioner.encode(rgb))
        assert captioner.caption(bgr, bgr=True).text == captioner.caption(rgb).text


def _frames(photos, size):
    """RGB frames [H, W, 3] made from real photos (in memory only)."""
    return [np.asarray(Image.open(p).convert("RGB").resize(size)) for p in photos]


def test_a_camera_frame_takes_the_fast_area_path_and_stays_close_to_one_step(flickr8k_originals):
    photos = sorted(flickr8k_originals.glob("*.jpg"))[:4]
    # Measured on the 60 photos: 720p max |diff| 0.17 (22 of 255 levels), mean per frame at
    # most 0.011 (0.0044 on average); 1080p max 0.12, mean at most 0.0082 (0.0039). Pixels
    # near sharp edges move most; the captions are measured in docs/benchmarks.md.
    for size in ((1280, 720), (1920, 1080)):
        for frame in _frames(photos, size):
            fast, exact = preprocess(frame, PREP), preprocess(frame, PREP, exact=True)
            assert 0 < np.abs(fast - exact).max() < 0.2
            assert np.abs(fast - exact).mean() < 0.012


def test_an_array_and_a_pil_image_of_it_give_the_same_pixels(flickr8k_originals):
    photo = sorted(flickr8k_originals.glob("*.jpg"))[0]
    for prep in (PREP, BILINEAR, dataclasses.replace(PREP, crop="center")):
        for frame in _frames([photo], (1280, 720)):
            np.testing.assert_array_equal(
                preprocess(frame, prep), preprocess(Image.fromarray(frame), prep)
            )


def test_the_pil_rules_shrink_by_whole_factors_first_and_stay_close(flickr8k_originals):
    photos = sorted(flickr8k_originals.glob("*.jpg"))[:4]
    # Measured on the 60 photos as 720p and 1080p frames: max |diff| 0.11 (14 of 255
    # levels), mean per frame at most 0.0097 (0.0045-0.0049 on average).
    for size in ((1280, 720), (1920, 1080)):
        for frame in _frames(photos, size):
            fast = preprocess(Image.fromarray(frame), BILINEAR)
            exact = preprocess(Image.fromarray(frame), BILINEAR, exact=True)
            assert 0 < np.abs(fast - exact).max() < 0.15
            assert np.abs(fast - exact).mean() < 0.012


def test_on_training_images_every_rule_gives_the_same_pixels(flickr8k_224):
    # Flickr8k's 224 px copy is already the input size, so no rule resizes it: a model
    # trained on it with "bilinear" saw exactly the pixels "area" gives.
    for photo in sorted((flickr8k_224 / "Flicker8k_Dataset").glob("*.jpg"))[:8]:
        area = load_pixels(photo, PREP)
        np.testing.assert_array_equal(area, load_pixels(photo, BILINEAR))
        np.testing.assert_array_equal(area, preprocess(load_image(photo), PREP, exact=True))


def test_images_under_twice_the_gap_resize_exactly_as_the_filter_alone(flickr8k_224):
    photo = next((flickr8k_224 / "Flicker8k_Dataset").glob("*.jpg"))
    frame = Image.fromarray(_frames([photo], (671, 600))[0])  # 671 < 2 x 1.5 x 224
    np.testing.assert_array_equal(
        preprocess(frame, BILINEAR), preprocess(frame, BILINEAR, exact=True)
    )


def test_without_opencv_an_area_bundle_says_what_to_install(monkeypatch):
    from edgecap.edge_runtime.errors import BundleError

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(BundleError) as error:
        preprocess(frame, PREP)
    assert str(error.value) == (
        "this model resizes images with OpenCV (manifest preprocessing.resize 'area'), "
        "which is not installed (the [edge] and [pi-legacy] extras install it): "
        "pip install opencv-python-headless"
    )
    assert preprocess(frame, BILINEAR).shape == (224, 224, 3)  # PIL rules need no OpenCV


def test_an_unknown_resize_rule_is_refused_with_the_known_ones():
    from edgecap.edge_runtime.errors import BundleError

    with pytest.raises(BundleError) as error:
        Preprocessing.from_json({**PREP.to_json(), "resize": "bicubic"}, source="m.json")
    assert (
        str(error.value) == "m.json: resize must be one of area, bilinear, nearest, not 'bicubic'"
    )


def test_the_manifest_carries_the_gap_and_older_manifests_get_the_default():
    from edgecap.edge_runtime.errors import BundleError
    from edgecap.edge_runtime.preprocess import REDUCING_GAP

    written = PREP.to_json()
    assert written["reducing_gap"] == REDUCING_GAP == 1.5
    assert Preprocessing.from_json(written) == PREP
    older = {k: v for k, v in written.items() if k != "reducing_gap"}
    assert Preprocessing.from_json(older) == PREP
    assert Preprocessing.from_json({**written, "reducing_gap": None}).reducing_gap is None
    with pytest.raises(BundleError) as error:
        Preprocessing.from_json({**written, "reducing_gap": 0.5}, source="m.json")
    assert str(error.value) == "m.json: reducing_gap must be null or at least 1.0"
