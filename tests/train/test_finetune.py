"""caption-train finetune: which layers learn, augmentation that keeps captions true, one
joint step, and a run that resumes, continues and refuses other settings."""

import json

import numpy as np
import pytest
from conftest import rising_dev_scores
from PIL import Image

from edgecap.edge_runtime.preprocess import Preprocessing, load_pixels
from edgecap.edge_runtime.vocab import Vocabulary


@pytest.fixture(scope="module")
def small_mobilenet_v2():
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )


def test_block_names_of_every_mobilenet_family():
    from edgecap.train.finetune import block_of

    assert block_of("block_12_expand_BN") == 12
    assert block_of("expanded_conv_depthwise") == 0
    assert block_of("conv_dw_5_relu") == 5 and block_of("conv_pw_13") == 13
    assert block_of("block3_pw_bn") == 3  # the synthetic encoder
    for stem_or_head in ("Conv1", "bn_Conv1", "Conv_1", "Conv_1_bn", "out_relu", "conv1"):
        assert block_of(stem_or_head) is None


def test_the_last_blocks_and_the_head_learn_the_rest_is_frozen(small_mobilenet_v2):
    from edgecap.train.finetune import trainable_layers

    encoder = small_mobilenet_v2
    learning = trainable_layers(encoder, 2)
    assert learning[0] == "block_15_expand" and learning[-2:] == ["Conv_1", "Conv_1_bn"]
    assert all(n.startswith(("block_15_", "block_16_", "Conv_1")) for n in learning)
    assert not encoder.get_layer("Conv1").trainable
    assert not encoder.get_layer("block_14_project").trainable
    assert trainable_layers(encoder, 0) == [] and not encoder.trainable_variables
    every = trainable_layers(encoder, -1)
    assert every[0] == "Conv1" and len(every) == len([x for x in encoder.layers if x.weights])
    with pytest.raises(ValueError, match=r"--train-blocks 18: .* has 17 blocks"):
        trainable_layers(encoder, 18)


def _photo(path, width=32):
    """Left half red, right half blue: a flip shows."""
    pixels = np.zeros((width, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    Image.fromarray(pixels).save(path)
    return str(path)


def _batches(tmp_path, config, epoch=0):
    from edgecap.train.finetune import ImageCaptions, mirrored_pairs, training_images

    texts = [["a dog left of a cat", "the cat is right"], ["a red square on the left"]]
    vocab = Vocabulary.build([c for cs in texts for c in cs])
    paths = [_photo(tmp_path / f"{i}.png") for i in range(len(texts))]
    captions = ImageCaptions.build(texts, vocab, max_length=8)
    prep = Preprocessing(input_size=32, resize="bilinear")
    batches = training_images(paths, captions, prep, config, epoch, mirrored_pairs(vocab))
    return list(batches.as_numpy_iterator()), vocab, paths, prep


def test_a_flip_mirrors_the_image_and_swaps_left_and_right_in_its_captions(tmp_path):
    from edgecap.train.finetune import FinetuneConfig

    config = FinetuneConfig(crop_area=1.0, jitter=0.0, images_per_batch=8)
    seen = {True: 0, False: 0}
    for epoch in range(8):
        ((x, targets, weights),), vocab, paths, prep = _batches(tmp_path, config, epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(paths))
        for row, image in enumerate(order):
            original = load_pixels(paths[image], prep)
            flipped = not np.allclose(x["pixels"][row], original, atol=1e-4)
            if flipped:
                np.testing.assert_allclose(x["pixels"][row], original[:, ::-1], atol=1e-4)
            seen[flipped] += 1
            words = [vocab.decode(t) for t in targets[row]]
            if image == 0:  # two captions, no padding captions
                expected = (["a dog right of a cat", "the cat is left"] if flipped
                            else ["a dog left of a cat", "the cat is right"])  # fmt: skip
                assert words == expected
            else:  # one caption, repeated to the batch's two
                side = "right" if flipped else "left"
                assert words == [f"a red square on the {side}"] * 2
            np.testing.assert_array_equal(weights[row], targets[row] != 0)
            assert (x["tokens"][row][:, 0] == vocab.start_id).all()
    assert seen[True] and seen[False], seen  # both happen over 8 epochs x 2 images


def test_augmentation_repeats_for_an_epoch_and_changes_between_epochs(tmp_path):
    from edgecap.train.finetune import FinetuneConfig

    config = FinetuneConfig(images_per_batch=8)
    first, *_ = _batches(tmp_path, config, epoch=3)
    again, *_ = _batches(tmp_path, config, epoch=3)
    other, *_ = _batches(tmp_path, config, epoch=4)
    np.testing.assert_array_equal(first[0][0]["pixels"], again[0][0]["pixels"])
    assert not np.array_equal(first[0][0]["pixels"], other[0][0]["pixels"])
    pixels = first[0][0]["pixels"]
    assert pixels.min() >= -1.0 - 1e-6 and pixels.max() <= 1.0 + 1e-6  # still in range


def test_one_joint_step_moves_the_learning_layers_and_keeps_batchnorm_statistics(
    small_mobilenet_v2,
):
    import keras
    import tensorflow as tf

    from edgecap.train.decoders import DecoderConfig, build_training_model
    from edgecap.train.finetune import JointTraining, trainable_layers

    encoder = small_mobilenet_v2
    trainable_layers(encoder, 1)
    decoder = build_training_model(
        DecoderConfig(kind="lstm", units=16, embed_dim=8, vocab_size=12, feature_dim=1280)
    )
    optimizers = (keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    optimizers[0].build(encoder.trainable_variables)
    optimizers[1].build(decoder.trainable_variables)
    before = {w.path: np.array(w) for w in encoder.weights}
    trainer = JointTraining(encoder, decoder, *optimizers, tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 12, (2, 3, 5)).astype(np.int32)  # [B, K, T]
    batch = (
        {"pixels": rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32), "tokens": tokens},
        tokens,
        np.ones((2, 3, 5), np.float32),
    )
    loss_sum, words = trainer.step(batch).numpy()
    assert words == 30 and loss_sum > 0
    moved = {w.path for w in encoder.weights if not np.array_equal(before[w.path], np.array(w))}
    assert any("block_16_project/" in p for p in moved) and any("Conv_1/" in p for p in moved)
    assert not any(p.startswith(("Conv1/", "block_15_")) for p in moved), sorted(moved)
    assert not any("moving" in p for p in moved)  # BatchNorm runs in inference mode


def test_finetune_writes_a_run_that_resumes_continues_and_refuses_other_settings(e2e, tmp_path):
    from edgecap.train.finetune import FinetuneConfig, finetune
    from edgecap.train.keras_captioner import feature_cache_weights
    from edgecap.train.runs import load_run

    config = FinetuneConfig(epochs=1, train_blocks=2, images_per_batch=32, learning_rate=1e-3,
                            encoder_learning_rate=1e-4)  # fmt: skip
    out = tmp_path / "ft"
    state = finetune(e2e["run"], out, config, final_split="dev", progress=False)
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert state["history"][1]["peak_memory_mb"] > 0
    assert state["metrics"]["split"] == "dev"
    run = load_run(out)  # an ordinary run: export, SCST and evaluate take it
    saved = json.loads((out / "config.json").read_text())["finetune"]
    assert saved["train_blocks"] == 2 and saved["parent"] == str(e2e["run"].resolve())
    # Its features are cached under its own encoder, not the parent's weights.
    assert feature_cache_weights(run, None) == str(out / "encoder.keras")

    assert finetune(e2e["run"], out, config, final_split="none", progress=False)["history"] \
        == state["history"]  # fmt: skip  # finished: nothing to train
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        finetune(e2e["run"], out, FinetuneConfig(epochs=1, train_blocks=3), progress=False)
    longer = FinetuneConfig(**{**config.to_json(), "epochs": 2})
    continued = finetune(e2e["run"], out, longer, final_split="none", progress=False)
    assert [h["epoch"] for h in continued["history"]] == [0, 1, 2]
    assert continued["history"][:2] == state["history"]


def test_finetune_with_an_average_keeps_and_saves_the_average(e2e, tmp_path, monkeypatch):
    from dataclasses import replace

    import edgecap.train.finetune as finetune_module
    from edgecap.train.checkpoint import BEST, LAST
    from edgecap.train.finetune import FinetuneConfig, finetune, trainable_layers
    from edgecap.train.runs import load_run

    rising_dev_scores(monkeypatch, finetune_module)
    config = FinetuneConfig(epochs=2, train_blocks=2, images_per_batch=32, learning_rate=1e-3,
                            encoder_learning_rate=1e-4, ema_decay=0.9)  # fmt: skip
    out = tmp_path / "ft-average"
    history = finetune(e2e["run"], out, config, final_split="none", progress=False)["history"]
    assert all("live_dev_cider_d" in h and "dev_cider_d" in h for h in history)
    assert history[0]["live_dev_cider_d"] == history[0]["dev_cider_d"]  # the parent's
    assert [h["epoch"] for h in history if h.get("best")] == [1, 2]

    run, parent = load_run(out), load_run(e2e["run"])
    trainable_layers(run.encoder, 2)
    trainable_layers(parent.encoder, 2)
    learning = [*run.encoder.trainable_variables, *run.decoder.trainable_variables]
    best, last = np.load(out / "checkpoints" / BEST), np.load(out / "checkpoints" / LAST)
    # best.npz holds the kept average alone: the encoder's learning weights, then the
    # decoder's; the run saves exactly those.
    assert sorted(best.files) == [f"average/{i:05d}" for i in range(len(learning))]
    for index, variable in enumerate(learning):
        np.testing.assert_array_equal(variable.numpy(), best[f"average/{index:05d}"])
    # The average trails the live weights, which moved away from the parent's.
    live_decoder = [last[f"decoder/{i:05d}"] for i in range(len(run.decoder.variables))]
    assert any(not np.array_equal(a, b) for a, b in zip(
        [v.numpy() for v in run.decoder.variables], live_decoder, strict=True))  # fmt: skip
    assert all(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
        run.encoder.trainable_variables, parent.encoder.trainable_variables, strict=True))  # fmt: skip
    # The frozen layers are the parent's, to the bit.
    frozen = [v for v in run.encoder.non_trainable_variables]
    for a, b in zip(frozen, parent.encoder.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    assert finetune(e2e["run"], out, config, final_split="none",
                    progress=False)["history"] == history  # fmt: skip  # finished
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        finetune(e2e["run"], out, replace(config, ema_decay=0.0), progress=False)
    with pytest.raises(ValueError, match=r"--ema-decay is a decay per step in \[0, 1\)"):
        FinetuneConfig(ema_decay=1.0).check()


def test_a_finetune_run_from_before_the_average_resumes_as_one_without_it(e2e, tmp_path):
    from edgecap.train.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(epochs=1, train_blocks=1, images_per_batch=64, learning_rate=1e-3,
                            encoder_learning_rate=1e-4)  # fmt: skip
    out = tmp_path / "ft-old"
    history = finetune(e2e["run"], out, config, final_split="none", progress=False)["history"]
    written = json.loads((out / "config.json").read_text())
    del written["finetune"]["ema_decay"]  # as versions before --ema-decay wrote it
    (out / "config.json").write_text(json.dumps(written))
    assert finetune(e2e["run"], out, config, final_split="none",
                    progress=False)["history"] == history  # fmt: skip
