"""The ImageNet weight files in ../shared/weights/imagenet are what the registry builds: each
loads into its architecture, and the with-top MobileNet v1 recognises the check photos."""

import numpy as np
import pytest

from edgecap.edge_runtime.preprocess import Preprocessing, load_image, preprocess
from edgecap.train.encoders import build_encoder, get_encoder_spec

# registry name -> the no-top weight file made for it
NO_TOP_FILES = {
    "mobilenet_v2": "mobilenet_v2_1.0_224_imagenet_bnfolded_no_top.h5",
    "mobilenet_v2_035": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "mobilenet_025": "mobilenet_2_5_224_tf_no_top.h5",
}


def _pixels(path, size=224) -> np.ndarray:
    return preprocess(load_image(path), Preprocessing(input_size=size))[None]  # [1, S, S, 3]


@pytest.mark.parametrize("name", sorted(NO_TOP_FILES))
def test_every_shared_weight_file_loads_into_the_registry_architecture(
    name, imagenet_weights, imagenet_check
):
    spec = get_encoder_spec(name)
    encoder = build_encoder(name, str(imagenet_weights / NO_TOP_FILES[name]))
    cat, parrot = (
        np.asarray(encoder(_pixels(imagenet_check / f), training=False))
        for f in ("cat.jpg", "parrot.jpg")
    )
    assert cat.shape == parrot.shape == (1, spec.feature_dim)
    # Pretrained features are sparse, non-negative (ReLU6, pooled) and tell photos apart;
    # an architecture that silently kept random weights would give near-equal vectors.
    assert cat.min() >= 0.0 and (cat > 0).mean() > 0.2
    cosine = float(cat[0] @ parrot[0]) / float(np.linalg.norm(cat) * np.linalg.norm(parrot))
    assert cosine < 0.9, cosine


def test_a_weight_file_of_another_architecture_is_named(imagenet_weights):
    wrong = imagenet_weights / NO_TOP_FILES["mobilenet_025"]
    with pytest.raises(
        ValueError, match=rf"{wrong.name}: these weights do not fit mobilenet_v2_035"
    ):
        build_encoder("mobilenet_v2_035", str(wrong))


def test_with_top_mobilenet_025_classifies_the_check_photos(imagenet_weights, imagenet_check):
    import keras

    labels = (imagenet_check / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background"
    model = keras.applications.MobileNet(
        alpha=0.25, weights=str(imagenet_weights / "mobilenet_2_5_224_tf.h5"), include_top=True
    )

    def top1(photo: str) -> str:
        probs = np.asarray(model(_pixels(imagenet_check / photo), training=False))[0]  # [1000]
        return labels[int(np.argmax(probs)) + 1]  # Keras' class k is line k + 1

    assert "cat" in top1("cat.jpg")  # Egyptian cat or tabby
    assert top1("parrot.jpg") == "macaw"
    assert top1("hot_dog.jpg").startswith("hotdog")
