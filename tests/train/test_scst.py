"""Self-critical sequence training: the sampler, the update's direction, and the run it writes."""

import json

import numpy as np
import pytest
from conftest import rising_dev_scores
from interruptions import kill_before_history_line

from edgecap.edge_runtime.vocab import NEVER_EMITTED_IDS

tf = pytest.importorskip("tensorflow")


def _tiny_model(kind: str, vocab_size: int = 12):
    import keras

    from edgecap.train.decoders import DecoderConfig, build_training_model

    keras.utils.set_random_seed(3)
    config = DecoderConfig(kind=kind, vocab_size=vocab_size, feature_dim=6, embed_dim=8,
                           units=16, max_length=7,
                           feature_positions=4 if kind == "attend" else 0)  # fmt: skip
    model = build_training_model(config)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.optimizer.build(model.trainable_variables)
    return model, config


def _ban(vocab_size: int):
    ban = np.zeros(vocab_size, np.float32)
    ban[list(NEVER_EMITTED_IDS)] = -1e9
    return tf.constant(ban)


def test_advantage_is_each_reward_minus_the_mean_of_the_others():
    from edgecap.train.scst import _advantages

    rewards = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(_advantages(rewards), [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0])


def _features(config, count: int) -> np.ndarray:
    shape = (count, config.feature_positions, 6) if config.feature_positions else (count, 6)
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)  # [N, (P,) F]


# (kind, the layer prefix of the direction sampled): twoway samples each of its two.
SAMPLED = [("lstm", ""), ("merge", ""), ("attend", ""), ("twoway", ""), ("twoway", "backward_")]


@pytest.mark.parametrize("kind, prefix", SAMPLED)
def test_sampler_never_draws_banned_ids_and_pads_after_the_end(kind, prefix):
    from edgecap.train.scst import _sampler

    model, config = _tiny_model(kind)
    end, pad = 2, 0
    sample = _sampler(model, kind, 1, end, pad, config.max_length + 1, _ban(config.vocab_size),
                      prefix)  # fmt: skip
    features = tf.constant(_features(config, 64))
    tokens = sample(features, tf.constant([5, 7])).numpy()  # [64, 8]
    assert tokens.shape == (64, config.max_length + 1)
    for row in tokens:
        ended = np.flatnonzero(row == end)
        if ended.size:
            assert (row[ended[0] + 1 :] == pad).all(), row
            row = row[: ended[0]]
        assert not set(row.tolist()) & set(NEVER_EMITTED_IDS), row
    again = sample(features, tf.constant([5, 7])).numpy()
    assert np.array_equal(tokens, again), "a seed must fix the samples"
    assert not np.array_equal(tokens, sample(features, tf.constant([6, 7])).numpy())


@pytest.mark.parametrize("kind, prefix", SAMPLED)
def test_sampler_draws_from_the_step_modules_distribution(kind, prefix):
    """The sampler is the step functions' math on the live variables: the word it draws most
    often first, for each image, is the step functions' most probable first word (twoway:
    of the direction sampled)."""
    from edgecap.train.decoders import DecoderStepFunctions, keras_step_model
    from edgecap.train.scst import _sampler

    model, config = _tiny_model(kind)
    for w in model.weights:  # sharpen the distributions so that 200 draws find the mode
        w.assign(w.numpy() * 4.0)
    features = _features(config, 3)
    step_model = keras_step_model(DecoderStepFunctions(model, config))
    if kind == "twoway":
        step_model = step_model.backward if prefix else step_model.forward
    log_probs, _ = step_model.step(np.ones(3, np.int32), step_model.init(features))
    ban = _ban(config.vocab_size)
    expected = np.argmax(log_probs + ban.numpy(), axis=-1)
    sample = _sampler(model, kind, 1, 2, 0, 1, ban, prefix)
    repeated = tf.constant(np.repeat(features, 200, axis=0))  # [3*200, ...]
    first = sample(repeated, tf.constant([1, 2])).numpy()[:, 0].reshape(3, 200)
    drawn = [np.bincount(row, minlength=config.vocab_size).argmax() for row in first]
    assert drawn == expected.tolist()


def _log_prob(model, features, inputs, targets) -> float:
    logits = model({"features": features, "tokens": inputs}, training=False)
    log_probs = tf.nn.log_softmax(logits)
    return float(tf.reduce_sum(tf.gather(log_probs, targets, batch_dims=2)))


@pytest.mark.parametrize("advantage, direction", [(1.0, 1), (-1.0, -1)])
def test_the_update_follows_the_sign_of_the_advantage(advantage, direction):
    from edgecap.train.scst import _train_step

    model, config = _tiny_model("lstm")  # a fresh model (and optimizer) per sign
    step = _train_step(model, _ban(config.vocab_size))
    features = tf.constant(np.ones((1, 6), np.float32))
    targets = tf.constant([[5, 6, 2]])  # two words and <end>
    inputs = tf.constant([[1, 5, 6]])  # <start> then the words
    before = _log_prob(model, features, inputs, targets)
    step(features, inputs, targets, tf.constant([[advantage] * 3]))  # each token's
    after = _log_prob(model, features, inputs, targets)
    assert np.sign(after - before) == direction, (before, after)


def test_each_direction_of_a_twoway_model_follows_its_own_advantage():
    """A twoway row holds a forward and a backward caption, each with its own advantage:
    a good forward sample is made likelier while a poor backward one is made less likely."""
    from edgecap.train.scst import _train_step

    model, config = _tiny_model("twoway")
    step = _train_step(model, _ban(config.vocab_size))
    features = tf.constant(np.ones((1, 6), np.float32))
    forward_in, forward_out = [1, 5, 6], [5, 6, 2]
    backward_in, backward_out = [1, 6, 5], [6, 5, 2]  # the same words, last first
    inputs = tf.constant([forward_in + backward_in])  # [1, 2T]
    targets = tf.constant([forward_out + backward_out])

    def per_direction() -> np.ndarray:
        logits = model({"features": features, "tokens": inputs}, training=False)  # [1, 2T, V]
        chosen = tf.gather(tf.nn.log_softmax(logits), targets, batch_dims=2)[0]  # [2T]
        return np.array([float(tf.reduce_sum(chosen[:3])), float(tf.reduce_sum(chosen[3:]))])

    before = per_direction()
    step(features, inputs, targets, tf.constant([[1.0] * 3 + [-1.0] * 3]))
    forward_change, backward_change = per_direction() - before
    assert forward_change > 0 > backward_change, (forward_change, backward_change)


def test_scst_writes_a_run_that_loads_resumes_and_refuses_other_settings(e2e, tmp_path):
    from edgecap.train.runs import load_run
    from edgecap.train.scst import ScstConfig, scst

    config = ScstConfig(epochs=1, samples=3, images_per_batch=32)
    out = tmp_path / "scst"
    state = scst(e2e["run"], out, config, progress=False)
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert state["history"][0]["parent"] is True
    assert all(0.0 <= h["dev_cider_d"] for h in state["history"])
    assert state["history"][1]["peak_memory_mb"] > 100  # MB: TensorFlow alone holds more
    run = load_run(out)
    saved = json.loads((out / "config.json").read_text())["scst"]
    assert saved["parent"] == str(e2e["run"].resolve()) and saved["samples"] == 3
    assert run.vocab.tokens == load_run(e2e["run"]).vocab.tokens
    kept = "best.npz" if state["history"][1].get("best") else None
    if kept is None:  # no epoch beat the parent on dev: the parent's weights are kept
        parent = load_run(e2e["run"]).decoder
        for a, b in zip(run.decoder.get_weights(), parent.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)

    again = scst(e2e["run"], out, config, progress=False)  # finished: nothing to train
    assert again["history"] == state["history"]
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        scst(e2e["run"], out, ScstConfig(epochs=2, samples=2, images_per_batch=32), progress=False)
    # More epochs, same settings: the run goes on from its last epoch.
    longer = scst(e2e["run"], out, ScstConfig(epochs=2, samples=3, images_per_batch=32),
                  progress=False)  # fmt: skip
    assert [h["epoch"] for h in longer["history"]] == [0, 1, 2]
    assert longer["history"][:2] == state["history"]
    assert json.loads((out / "config.json").read_text())["scst"]["epochs"] == 2
    with pytest.raises(
        ValueError, match=r"already holds a run of 2 epochs; pass --epochs 2 or more to resume"
    ):
        scst(e2e["run"], out, config, progress=False)


def test_a_bleu4_mix_is_recorded_and_a_run_from_before_it_still_resumes(e2e, tmp_path):
    from edgecap.train.scst import ScstConfig, scst

    out = tmp_path / "scst-mix"
    mixed = ScstConfig(epochs=1, samples=2, images_per_batch=64, bleu4_weight=1.0)
    state = scst(e2e["run"], out, mixed, progress=False)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    assert config["scst"]["bleu4_weight"] == 1.0
    assert state["history"][1]["train_reward"] > 0
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        scst(e2e["run"], out, ScstConfig(epochs=1, samples=2, images_per_batch=64), progress=False)
    # A run written before the mix existed has no bleu4_weight: it trained on CIDEr-D alone.
    del config["scst"]["bleu4_weight"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        scst(e2e["run"], out, mixed, progress=False)
    plain = ScstConfig(epochs=1, samples=2, images_per_batch=64)
    assert scst(e2e["run"], out, plain, progress=False)["epochs_done"] == 1


# Five references of three images, as Flickr8k's read; for each, a complete caption and
# the same caption cut before its last noun, as the self-critical model without the
# end-aware reward learned to end one caption in seven.
REFERENCES = {
    "dog": ["a black dog is running after a white dog in the snow",
            "black dog chasing brown dog through snow",
            "two dogs chase each other across the snowy ground",
            "two dogs play together in the snow",
            "two dogs running through a low lying body of water"],
    "man": ["a man in a blue shirt stands in front of a building",
            "a man stands in front of a brick building",
            "a man wearing a blue shirt is standing near a wall",
            "a man poses in front of a building",
            "the man in blue stands outside a building"],
    "girl": ["a little girl plays in the sand", "a child digs in the sand at the beach",
             "a girl in a pink dress is playing at the beach", "a young girl sits in the sand",
             "a small child plays on the beach"],
}  # fmt: skip
ENDINGS = [
    ("dog", "a black dog is running in the snow", "a black dog is running in the"),
    ("dog", "two dogs play in the snow", "two dogs play in the"),
    ("man", "a man in a blue shirt stands in front of a building",
     "a man in a blue shirt stands in front of a"),
    ("girl", "a little girl plays in the sand", "a little girl plays in the"),
    ("girl", "a girl is playing at the beach", "a girl is playing at the"),
]  # fmt: skip


@pytest.mark.parametrize(("image", "complete", "dangling"), ENDINGS)
def test_the_end_aware_reward_penalizes_a_dangling_ending(image, complete, dangling):
    from edgecap.train.scst import CaptionReward

    aware = CaptionReward(REFERENCES, "<end>", bleu4_weight=1.0)
    blind = CaptionReward(REFERENCES, "<end>", bleu4_weight=1.0, end_aware=False)
    # Scored without its end, the dangling caption keeps every n-gram it matched and loses
    # little; with the end token as a word, "the <end>" / "a <end>" match no reference
    # while "snow <end>" does, so stopping on a dangling word costs far more.
    assert aware(image, dangling) < blind(image, dangling)
    assert aware(image, complete) > blind(image, complete)
    gap_aware = aware(image, complete) - aware(image, dangling)
    gap_blind = blind(image, complete) - blind(image, dangling)
    assert gap_aware > 1.3 * gap_blind > 0
    # A caption cut at the length limit did not end: it gets no end token.
    assert aware(image, complete, ended=False) < aware(image, complete)


@pytest.mark.parametrize(("image", "complete", "dangling"), ENDINGS)
def test_the_dangling_penalty_costs_only_a_caption_that_ended_dangling(image, complete, dangling):
    from edgecap.train.scst import CaptionReward

    aware = CaptionReward(REFERENCES, "<end>", bleu4_weight=1.0)
    penalized = CaptionReward(REFERENCES, "<end>", bleu4_weight=1.0, dangling_penalty=0.75)
    assert penalized(image, dangling) == pytest.approx(aware(image, dangling) - 0.75)
    assert penalized(image, complete) == aware(image, complete)
    # Cut at the length limit, it did not choose to end there: no penalty.
    assert penalized(image, dangling, ended=False) == aware(image, dangling, ended=False)


def test_an_epoch_with_dangling_dev_captions_is_never_kept(e2e, tmp_path, monkeypatch):
    """The kept-epoch rule, in a toy SCST run: an epoch whose dev captions dangle too often
    is passed over however well it scores, and the parent is kept."""
    import edgecap.train.scst as scst_module

    real_score = scst_module.score_split
    calls = []

    def score_with_dangling_epochs(dataset, split, predictions, *args, **kwargs):
        scores = real_score(dataset, split, predictions, *args, **kwargs)
        calls.append(scores)
        if len(calls) == 1:  # the parent
            return scores
        # Every SCST epoch scores far better on dev but ends 1% of captions dangling.
        from dataclasses import replace

        return replace(scores, cider_d=scores.cider_d + 5, dangling_endings=0.01)

    monkeypatch.setattr(scst_module, "score_split", score_with_dangling_epochs)
    config = scst_module.ScstConfig(epochs=1, samples=2, images_per_batch=64)
    state = scst_module.scst(e2e["run"], tmp_path / "scst", config, progress=False)
    assert state["history"][1]["dev_dangling_endings"] == 0.01
    assert not state["history"][1].get("best")
    assert not (tmp_path / "scst" / "checkpoints" / "best.npz").exists()
    saved = json.loads((tmp_path / "scst" / "config.json").read_text())["scst"]
    assert saved["end_aware"] is True and saved["max_dev_dangling"] == 0.005


def test_scst_killed_between_its_checkpoint_writes_resumes_to_the_same_result(
    e2e, tmp_path, monkeypatch
):
    """Progress comes from last.npz, not the history: killed after epoch 2's checkpoint is
    written but before its history line, the rerun scores epoch 2 again instead of training
    it twice, and ends where an uninterrupted run ends."""
    import edgecap.train.scst as scst_module
    from edgecap.train.checkpoint import read_history, saved_steps
    from edgecap.train.runs import load_run

    config = scst_module.ScstConfig(epochs=3, samples=2, images_per_batch=64)
    whole = scst_module.scst(e2e["run"], tmp_path / "whole", config, progress=False)

    kill_before_history_line(monkeypatch, 2)  # last.npz (and best.npz) of epoch 2 stay
    cut = tmp_path / "cut"
    with pytest.raises(SystemExit):
        scst_module.scst(e2e["run"], cut, config, progress=False)
    monkeypatch.undo()
    assert [h["epoch"] for h in read_history(cut / "checkpoints")] == [0, 1]
    steps = saved_steps(tmp_path / "whole" / "checkpoints", "optimizer") // 3
    assert saved_steps(cut / "checkpoints", "optimizer") == 2 * steps  # the model is ahead

    resumed = scst_module.scst(e2e["run"], cut, config, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][2]["recovered"] is True
    for mine, theirs in zip(resumed["history"], whole["history"], strict=True):
        for key in ("dev_bleu4", "dev_cider_d", "dev_dangling_endings"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6), (mine, theirs)
        assert mine.get("best") == theirs.get("best")
    kept, expected = load_run(cut).decoder, load_run(tmp_path / "whole").decoder
    for a, b in zip(kept.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_caption_sampled_from_a_flipped_image_is_scored_mirrored():
    """The references describe the image as taken: "a dog on the left" drawn from the
    mirrored image is scored as "a dog on the right", and only for the flipped image."""
    from edgecap.edge_runtime.vocab import Vocabulary
    from edgecap.train.scst import ScstConfig, _scst_step

    vocab = Vocabulary.build(["a dog on the left", "a dog on the right"], min_count=1)
    words = vocab.encode("a dog on the left")
    row = [*words, vocab.end_id, vocab.pad_id]

    def sample(features, seed):
        return tf.constant([row] * int(features.shape[0]), tf.int32)  # [N, steps]

    scored = []

    def reward(key, text, ended):
        scored.append((key, text))
        return 0.0

    config = ScstConfig(samples=2)
    features = np.zeros((2, 6), np.float32)  # [B, F]
    _scst_step(np.array([0, 1]), features, np.array([True, False]), features, [0, 0],
               ["flipped", "as taken"], [sample], reward, lambda *tensors: None, vocab,
               config)  # fmt: skip
    assert (
        scored == [("flipped", "a dog on the right")] * 2 + [("as taken", "a dog on the left")] * 2
    )


def test_scst_with_train_blocks_trains_the_encoder_and_keys_features_on_it(e2e, tmp_path):
    from edgecap.train.checkpoint import LAST
    from edgecap.train.keras_captioner import feature_cache_weights
    from edgecap.train.runs import load_run
    from edgecap.train.scst import ScstConfig, scst

    config = ScstConfig(epochs=1, samples=2, images_per_batch=32, train_blocks=1,
                        encoder_learning_rate=1e-3, max_dev_dangling=1.0)  # fmt: skip
    out = tmp_path / "scst-encoder"
    state = scst(e2e["run"], out, config, progress=False)
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    run, parent = load_run(out), load_run(e2e["run"])
    assert run.config.encoder_trained and not parent.config.encoder_trained
    assert json.loads((out / "config.json").read_text())["scst"]["train_blocks"] == 1
    # Its features are cached under its own encoder file, not the parent's weights.
    assert feature_cache_weights(run, None) == str(out / "encoder.keras")

    # The last epoch's encoder (checkpoint.py saves encoder.variables in order) moved in
    # its last block and head, and nowhere before them.
    saved = np.load(out / "checkpoints" / LAST)
    moved = {
        variable.path
        for index, variable in enumerate(parent.encoder.variables)
        if not np.array_equal(saved[f"encoder/{index:05d}"], np.asarray(variable))
    }
    layers = {path.split("/")[0] for path in moved}
    assert layers and all(name.startswith(("block6_", "embedding", "squeeze")) for name in layers)
    assert not any("moving" in path for path in moved)  # BatchNorm runs in inference mode

    again = scst(e2e["run"], out, config, progress=False)  # finished: nothing to train
    assert again["history"] == state["history"]
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        scst(e2e["run"], out, ScstConfig(**{**config.to_json(), "train_blocks": 2}),
             progress=False)  # fmt: skip


@pytest.mark.parametrize("augment", [True, False])
def test_the_learning_encoder_reads_the_device_pixels_unless_it_augments(e2e, augment):
    """--no-augment gives the encoder exactly the pixels the device feeds it; augmentation
    changes them. Either way a step's indices name the images its pixels came from."""
    from edgecap.edge_runtime.evaluation import load_dataset
    from edgecap.edge_runtime.preprocess import load_pixels
    from edgecap.train.runs import load_run
    from edgecap.train.scst import ScstConfig
    from edgecap.train.scst_encoder import LearningEncoder

    parent = load_run(e2e["run"])
    dataset = load_dataset(parent.config.data)
    model, _ = _tiny_model("lstm")
    config = ScstConfig(images_per_batch=4, train_blocks=1, augment=augment)
    source = LearningEncoder(parent, dataset, config, model, _ban(12))
    batch, features, flipped, pixels = next(source.batches(epoch=0))
    device = np.stack([load_pixels(source.paths["train"][i], parent.preprocessing)
                       for i in batch])  # fmt: skip  # [B, S, S, 3]
    same = np.allclose(np.asarray(pixels), device, atol=1e-6)
    assert same is not augment
    assert features.shape[0] == len(batch) == 4 and (augment or not flipped.any())


def test_the_weight_average_follows_its_ramp_and_swaps_in_and_out():
    from edgecap.train.weight_average import WeightAverage

    model, _ = _tiny_model("lstm")
    steps = tf.Variable(0, dtype=tf.int64)
    average = WeightAverage([model], 0.9, steps)
    first = [v.numpy() for v in model.trainable_variables]
    for variable in model.trainable_variables:
        variable.assign_add(tf.ones_like(variable))
    steps.assign(1)  # d = min(0.9, 2 / 11): the average moves most of the way at first
    average.update()
    d = 2 / 11
    for kept, before in zip(average.variables, first, strict=True):
        np.testing.assert_allclose(kept.numpy(), before + (1 - d), rtol=1e-6, atol=1e-6)
    steps.assign(1000)  # d = 0.9 from here on
    average.update()
    live = [v.numpy() for v in model.trainable_variables]
    for kept, before, now in zip(average.variables, first, live, strict=True):
        expected = 0.9 * (before + (1 - d)) + 0.1 * now
        np.testing.assert_allclose(kept.numpy(), expected, rtol=1e-6, atol=1e-6)
    with average.applied():
        for variable, kept in zip(model.trainable_variables, average.variables, strict=True):
            np.testing.assert_array_equal(variable.numpy(), kept.numpy())
    for variable, own in zip(model.trainable_variables, live, strict=True):
        np.testing.assert_array_equal(variable.numpy(), own)
    with pytest.raises(ValueError, match=r"--ema-decay 1.0: .* in \(0, 1\)"):
        WeightAverage([model], 1.0, steps)


@pytest.mark.parametrize("train_blocks", [0, 1])
def test_scst_with_an_average_keeps_and_saves_the_average(e2e, tmp_path, monkeypatch, train_blocks):

    import edgecap.train.scst as scst_module
    from edgecap.train.checkpoint import BEST, LAST
    from edgecap.train.finetune import trainable_layers
    from edgecap.train.runs import load_run
    from edgecap.train.scst import ScstConfig, scst

    rising_dev_scores(monkeypatch, scst_module)

    config = ScstConfig(epochs=2, samples=2, images_per_batch=32, learning_rate=1e-3,
                        ema_decay=0.9, max_dev_dangling=1.0, train_blocks=train_blocks,
                        encoder_learning_rate=1e-5)  # fmt: skip
    out = tmp_path / "scst-average"
    state = scst(e2e["run"], out, config, progress=False)
    history = state["history"]
    assert all("live_dev_cider_d" in h and "dev_cider_d" in h for h in history)
    # Epoch 0 is the parent, whose average is itself.
    assert history[0]["live_dev_cider_d"] == history[0]["dev_cider_d"]
    decoder = load_run(out).decoder
    saved = {key: value for key, value in np.load(out / "checkpoints" / LAST).items()}
    kept = [h for h in history[1:] if h.get("best")]
    live = [saved[f"model/{i:05d}"] for i in range(len(decoder.variables))]
    trainable = {id(v) for v in decoder.trainable_variables}
    averaged = [saved[f"average/{i:05d}"] for i in range(len(decoder.trainable_variables))]
    assert any(not np.array_equal(a, b) for a, b in zip(
        averaged, [w for w, v in zip(live, decoder.variables, strict=True) if id(v) in trainable],
        strict=True))  # fmt: skip  # the average trails the live weights
    assert [h["epoch"] for h in kept] == [1, 2]
    best = np.load(out / "checkpoints" / BEST)  # the kept epoch's average, saved as the run's
    for index, variable in enumerate(decoder.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), best[f"average/{index:05d}"])
    # With train_blocks the encoder's learning layers are averaged too, after the decoder's.
    encoder, parent = load_run(out).encoder, load_run(e2e["run"]).encoder
    trainable_layers(encoder, train_blocks)
    trainable_layers(parent, train_blocks)
    first = len(decoder.trainable_variables)
    assert len(best.files) == first + len(encoder.trainable_variables)
    for index, variable in enumerate(encoder.trainable_variables, first):
        np.testing.assert_array_equal(variable.numpy(), best[f"average/{index:05d}"])
    moved = [
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(encoder.trainable_variables, parent.trainable_variables, strict=True)
    ]
    assert all(moved) if train_blocks else not moved  # fmt: skip
    again = scst(e2e["run"], out, config, progress=False)  # finished: nothing to train
    assert again["history"] == history
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        scst(e2e["run"], out, ScstConfig(**{**config.to_json(), "ema_decay": 0.0}),
             progress=False)  # fmt: skip
