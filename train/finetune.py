"""Fine-tune the encoder with the decoder, from the image files (`caption-train finetune`).

Cached features freeze the encoder: the decoder learns on top of what ImageNet taught it.
This mode reaches into the encoder. It starts from a finished cross-entropy run (its
encoder and kept decoder), streams the JPEGs through tf.data (parallel decode with the
device's own `load_pixels`, augmentation, prefetch) and trains the last N blocks of the
encoder together with the decoder, the encoder at a lower learning rate (two Adam
optimizers, each cosine-decayed to 0). Its output is an ordinary run folder, so SCST,
export, the bundles and the runtime take it unchanged; its features are cached under its
own encoder.keras.

Each image is encoded once per step and trains on all its captions ([B] images ->
[B, K, T] captions, K = the most captions an image has; images with fewer repeat theirs).
Augmentation that keeps a caption true: random crops and scales of the image, horizontal
flips with "left" and "right" swapped in its captions, mild colour jitter. All of it is
drawn from (seed, epoch, image), so a resumed epoch is the one an unbroken run trains.

BatchNorm: the layers keep their moving statistics and always run in inference mode. The
shared MobileNetV2 1.0 weights have BN folded into the convolutions (mean 0, variance 1,
gamma 1, beta the folded bias), so batch statistics of a few images would replace an
identity with noise; gamma and beta of the trained blocks still learn, as a per-channel
scale and bias, and fold away again at export.

Checkpoints are checkpoint.py's, as in every trainer: both models and both optimizers in
last.npz after every epoch, how far a run got read from the restored decoder optimizer's
step count, and history.jsonl the epochs' dev scores (epoch 0 is the parent). With
`ema_decay`, a moving average of the weights that learn (weight_average.py, as in SCST) is
what each epoch's dev scores, the kept epoch and the saved run are taken from; the live
weights' scores are logged beside them.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.evaluation import load_dataset, score_split
from edgecap.edge_runtime.preprocess import Preprocessing, load_pixels

from .checkpoint import TrainingCheckpoint
from .runs import RunError, TrainedRun, load_run, saved_stage
from .training import best_dev_cider_d

log = logging.getLogger(__name__)
FINETUNE_KINDS = ("lstm", "merge")  # teacher-forced whole captions on pooled features
ALL_BLOCKS = -1
# Words a horizontal flip turns into each other.
MIRRORED_WORDS = (("left", "right"),)
# A layer of block i: MobileNetV2's "block_12_expand", v1's "conv_dw_5", the synthetic
# encoder's "block3_pw"; MobileNetV2's first block is "expanded_conv".
BLOCK_NAME = re.compile(r"^(?:block_?(\d+)_|conv_(?:dw|pw)_(\d+)(?:_|$)|(expanded_conv)(?:_|$))")


@dataclass
class FinetuneConfig:
    epochs: int = 6  # passes over the train images
    # The last N blocks of the encoder and the layers after them learn; -1: all of it.
    train_blocks: int = 4
    # Adam peaks, each cosine-decayed to 0: the settings of the Flickr8k run chosen on dev
    # (docs/flickr8k.md "Fine-tuning the encoder").
    learning_rate: float = 2e-4  # the decoder's
    encoder_learning_rate: float = 5e-5  # the encoder's
    images_per_batch: int = 16  # a step sees every caption of this many images
    crop_area: float = 0.7  # random crops keep at least this share of the image (1: none)
    flip: bool = True  # horizontal flips, with "left" and "right" swapped in the captions
    jitter: float = 0.1  # brightness, contrast and saturation move by at most this much
    # Score, keep and save a moving average of the trained weights (weight_average.py)
    # with this decay per step; 0: the live weights.
    ema_decay: float = 0.0
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Refuse settings that cannot train, naming the flag."""
        if self.epochs < 1:
            raise ValueError("--epochs must be at least 1")
        if self.train_blocks < ALL_BLOCKS:
            raise ValueError("--train-blocks is a count of blocks, or -1 for the whole encoder")
        if self.images_per_batch < 1:
            raise ValueError("--images-per-batch must be at least 1")
        if not 0.1 <= self.crop_area <= 1.0:
            raise ValueError("--crop-area is the share of the image a crop keeps, 0.1 to 1")
        if not 0.0 <= self.jitter < 0.5:
            raise ValueError("--jitter is at most 0.5 (0: no colour jitter)")
        if self.learning_rate <= 0 or self.encoder_learning_rate < 0:
            raise ValueError("learning rates must be positive (the encoder's may be 0)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("--ema-decay is a decay per step in [0, 1), e.g. 0.999 (0: off)")


def block_of(name: str) -> int | None:
    """The block a layer belongs to, from its name; None for stem and head layers."""
    found = BLOCK_NAME.match(name)
    if found is None:
        return None
    number = found.group(1) or found.group(2)
    return 0 if number is None else int(number)


def trainable_layers(encoder, train_blocks: int) -> list[str]:
    """Mark the layers that learn (the last `train_blocks` blocks and the head after them;
    every layer for -1, none for 0) trainable and the rest frozen; returns the names of
    those with weights that learn."""
    blocks = sorted({b for b in map(block_of, (layer.name for layer in encoder.layers))
                     if b is not None})  # fmt: skip
    if train_blocks > len(blocks) or (train_blocks > 0 and not blocks):
        raise ValueError(
            f"--train-blocks {train_blocks}: {encoder.name} has {len(blocks)} blocks in its "
            "layer names; pass at most that, -1 for the whole encoder or 0 for none of it"
        )
    first = blocks[-train_blocks] if train_blocks > 0 else math.inf
    learning, seen_block = [], False
    for layer in encoder.layers:
        block = block_of(layer.name)
        seen_block = seen_block or block is not None
        # Layers before the first block are the stem, those after the last the head.
        position = block if block is not None else (math.inf if seen_block else -math.inf)
        learns = train_blocks == ALL_BLOCKS or (train_blocks > 0 and position >= first)
        layer.trainable = learns
        if learns and layer.weights:
            learning.append(layer.name)
    return learning


@dataclass(frozen=True)
class ImageCaptions:
    """Each image's captions as token ids, for teacher forcing: [N, K, W] with K the most
    captions an image has (an image with fewer repeats its own), W = max_length + 1."""

    inputs: np.ndarray  # [N, K, W] int32: <start> w1 .. wn, 0-padded
    targets: np.ndarray  # [N, K, W] int32: w1 .. wn <end>, 0-padded

    @classmethod
    def build(cls, captions: Sequence[Sequence[str]], vocab, max_length: int) -> ImageCaptions:
        most = max(len(c) for c in captions)
        width = max_length + 1
        inputs = np.zeros((len(captions), most, width), np.int32)
        targets = np.zeros((len(captions), most, width), np.int32)
        for image, texts in enumerate(captions):
            for k in range(most):
                ids = vocab.encode(texts[k % len(texts)])[:max_length]
                inputs[image, k, : len(ids) + 1] = [vocab.start_id, *ids]
                targets[image, k, : len(ids) + 1] = [*ids, vocab.end_id]
        return cls(inputs, targets)


def mirrored_pairs(vocab) -> list[tuple[int, int]]:
    """Token ids a horizontal flip swaps, for the pairs the vocabulary has."""
    ids = {token: i for i, token in enumerate(vocab.tokens)}
    return [(ids[a], ids[b]) for a, b in MIRRORED_WORDS if a in ids and b in ids]


def augment(pixels, seed, prep: Preprocessing, config: FinetuneConfig):
    """One image [S, S, 3] (already preprocessed: raw * scale + offset) -> (augmented
    image [S, S, 3], flipped). `seed` [2] int32 draws everything, so it repeats exactly."""
    import tensorflow as tf

    size = prep.input_size
    seeds = tf.random.experimental.stateless_split(seed, 8)
    if config.crop_area < 1.0:
        area = tf.random.stateless_uniform([], seeds[0], config.crop_area, 1.0)
        aspect = tf.exp(tf.random.stateless_uniform([], seeds[1], math.log(3 / 4), math.log(4 / 3)))
        height = tf.minimum(1.0, tf.sqrt(area / aspect))  # shares of the side
        width = tf.minimum(1.0, tf.sqrt(area * aspect))
        top = tf.random.stateless_uniform([], seeds[2], 0.0, 1.0) * (1.0 - height)
        left = tf.random.stateless_uniform([], seeds[3], 0.0, 1.0) * (1.0 - width)
        box = tf.stack([top, left, top + height, left + width])[None]  # [1, 4]
        # Bilinear weights sum to 1, so cropping the preprocessed pixels equals
        # preprocessing the cropped ones (the preprocessing is affine).
        pixels = tf.image.crop_and_resize(pixels[None], box, [0], [size, size])[0]  # [S, S, 3]
    flipped = tf.constant(False)
    if config.flip:
        flipped = tf.random.stateless_uniform([], seeds[4]) < 0.5
        pixels = tf.cond(flipped, lambda: tf.reverse(pixels, axis=[1]), lambda: pixels)
    if config.jitter > 0:
        raw = (pixels - prep.offset) / (prep.scale * 255.0)  # [0, 1] RGB
        j = config.jitter
        raw = tf.image.stateless_random_brightness(raw, j, seeds[5])
        raw = tf.image.stateless_random_contrast(raw, 1 - j, 1 + j, seeds[6])
        raw = tf.image.stateless_random_saturation(tf.clip_by_value(raw, 0, 1), 1 - j, 1 + j,
                                                   seeds[7])  # fmt: skip
        pixels = tf.clip_by_value(raw, 0.0, 1.0) * (prep.scale * 255.0) + prep.offset
    return pixels, flipped


def _read_pixels(prep: Preprocessing):
    """A tf.data map: path -> the pixels the device would feed the encoder, [S, S, 3]."""
    import tensorflow as tf

    def read(path):
        return load_pixels(path.decode(), prep).astype(np.float32)

    def map_fn(path):
        pixels = tf.numpy_function(read, [path], tf.float32, stateful=False)
        pixels.set_shape([prep.input_size, prep.input_size, 3])
        return pixels

    return map_fn


def augmented_images(paths: Sequence[str], prep: Preprocessing, config: FinetuneConfig,
                     epoch: int):  # fmt: skip
    """Epoch `epoch`'s train images, augmented, in batches of config.images_per_batch:
    (pixels [B, S, S, 3], flipped [B], the images' indices into `paths` [B]). The order and
    every augmentation depend on (seed, epoch) alone."""
    import tensorflow as tf

    order = np.random.default_rng([config.seed, epoch]).permutation(len(paths))
    read = _read_pixels(prep)

    def image(path, index):
        seed = tf.stack([tf.constant(config.seed * 7919 + epoch, tf.int32), index])
        pixels, flipped = augment(read(path), seed, prep, config)
        return pixels, flipped, index

    files = tf.data.Dataset.from_tensor_slices(
        (np.array(paths)[order], order.astype(np.int32))
    )  # fmt: skip
    return files.map(image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
        config.images_per_batch
    )


def training_images(paths: Sequence[str], captions: ImageCaptions, prep: Preprocessing,
                    config: FinetuneConfig, epoch: int, mirrored: Sequence[tuple[int, int]]):  # fmt: skip
    """Epoch `epoch`'s batches (augmented_images' with their captions): {pixels [B, S, S, 3],
    tokens [B, K, T]}, targets [B, K, T], weights [B, K, T] (0 on padding), T the batch's
    longest caption."""
    import tensorflow as tf

    table_inputs = tf.constant(captions.inputs)
    table_targets = tf.constant(captions.targets)

    def with_captions(pixels, flipped, index):
        inputs = tf.gather(table_inputs, index)  # [B, K, W]
        targets = tf.gather(table_targets, index)  # [B, K, W]
        flip = flipped[:, None, None]  # [B] -> [B, 1, 1]
        for a, b in mirrored:

            def swap(ids, a=a, b=b):
                return tf.where(flip, tf.where(ids == a, b, tf.where(ids == b, a, ids)), ids)

            inputs, targets = swap(inputs), swap(targets)
        width = tf.reduce_max(tf.reduce_sum(tf.cast(targets != 0, tf.int32), axis=-1))
        targets = targets[:, :, :width]  # [B, K, T]
        weights = tf.cast(targets != 0, tf.float32)  # [B, K, T]
        return {"pixels": pixels, "tokens": inputs[:, :, :width]}, targets, weights

    batches = augmented_images(paths, prep, config, epoch).map(with_captions).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options)


def mirrored_text(text: str) -> str:
    """A caption of a flipped image as a caption of the image itself ("left" <-> "right")."""
    swap = {a: b for pair in MIRRORED_WORDS for a, b in (pair, pair[::-1])}
    return " ".join(swap.get(word, word) for word in text.split())


def plain_images(paths: Sequence[str], prep: Preprocessing, batch_size: int = 32):
    """The images as the device sees them, no augmentation, in order: [B, S, S, 3]."""
    import tensorflow as tf

    read = _read_pixels(prep)
    files = tf.data.Dataset.from_tensor_slices(np.array(paths))
    return (
        files.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(2)
    )


class JointTraining:
    """One step of the encoder and decoder on a batch of images and all their captions, on
    one replica or many (the loss is divided by the global batch's words, as in fit)."""

    def __init__(self, encoder, decoder, encoder_optimizer, decoder_optimizer, strategy):
        import tensorflow as tf

        self.encoder, self.decoder, self.strategy = encoder, decoder, strategy
        self.optimizers = (encoder_optimizer, decoder_optimizer)
        self.step = tf.function(self._step, reduce_retracing=True)
        self.encode = tf.function(lambda pixels: encoder(pixels, training=False),
                                  reduce_retracing=True)  # fmt: skip

    def _step(self, batch):
        sums = self.strategy.run(self._replica_step, args=batch)
        return self.strategy.reduce("SUM", sums, axis=None)

    def _replica_step(self, x, targets, weights):
        import keras
        import tensorflow as tf

        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        captions = tf.shape(targets)[1]
        width = tf.shape(targets)[2]
        with tf.GradientTape() as tape:
            # BatchNorm keeps its (folded) statistics: see the module's docstring.
            features = self.encoder(x["pixels"], training=False)  # [B, F]
            features = tf.repeat(features, captions, axis=0)  # [B, F] -> [B*K, F]
            tokens = tf.reshape(x["tokens"], [-1, width])  # [B, K, T] -> [B*K, T]
            logits = self.decoder({"features": features, "tokens": tokens}, training=True)
            flat_targets = tf.reshape(targets, [-1, width])  # [B*K, T]
            flat_weights = tf.reshape(weights, [-1, width])  # [B*K, T]
            loss_sum = tf.reduce_sum(cross_entropy(flat_targets, logits) * flat_weights)
            words = tf.reduce_sum(flat_weights)
            every_word = tf.distribute.get_replica_context().all_reduce("SUM", words)
            loss = loss_sum / every_word
        encoder_variables = self.encoder.trainable_variables
        decoder_variables = self.decoder.trainable_variables
        gradients = tape.gradient(loss, [*encoder_variables, *decoder_variables])
        split = len(encoder_variables)
        if encoder_variables:
            self.optimizers[0].apply_gradients(
                zip(gradients[:split], encoder_variables, strict=True)
            )
        self.optimizers[1].apply_gradients(zip(gradients[split:], decoder_variables, strict=True))
        return tf.stack([loss_sum, words])


def _prepare_run(parent: TrainedRun, out: Path, config: FinetuneConfig, chief: bool) -> dict:
    """The new run folder's config.json (the parent's plus ours), refused if it holds a
    run of other settings; more epochs than it was made with go on from its last one."""
    settings = {**config.to_json(), "parent": str(parent.path.resolve())}
    run_config = {**parent.config_json, "finetune": settings}
    run_config.pop("scst", None)
    config_file = out / "config.json"
    # A run of other settings is refused; runs made before the average trained without it.
    saved_stage(out, "finetune", settings, defaults={"ema_decay": 0.0})
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(parent.path / "vocab.json", out / "vocab.json")
        write_json_atomic(config_file, run_config)
    return run_config


def finetune(
    parent_dir: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig,
    final_split: str = "dev",
    distribute: str = "none",
    devices: Sequence[str] = (),
    feature_cache: str | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune the run at parent_dir (encoder and decoder) into out_dir; returns the
    state ({"epochs_done", "history"}) with the final split's greedy metrics, if scored.

    The kept epoch is the best on greedy dev CIDEr-D (the parent itself, epoch 0, when no
    epoch beats it). `final_split` "dev" while choosing settings; "test" once, for the
    final model; "none" to skip it.
    """
    import keras
    from tqdm import tqdm

    from .distribute import is_chief, make_strategy
    from .keras_captioner import caption_cached
    from .training import _save_keras_atomic
    from .weight_average import WeightAverage, scores_with_average

    config.check()
    strategy = make_strategy(distribute, devices)  # before any other TensorFlow op
    chief = is_chief(strategy)
    parent = load_run(parent_dir)
    kind = parent.decoder_config.kind
    if kind not in FINETUNE_KINDS:
        raise RunError(
            f"{parent.path}: a {kind} decoder; finetune trains {' or '.join(FINETUNE_KINDS)} "
            "runs (whole captions on pooled features)"
        )
    out = Path(out_dir)
    _prepare_run(parent, out, config, chief)
    dataset = load_dataset(parent.config.data)
    prep, vocab, decoder_config = parent.preprocessing, parent.vocab, parent.decoder_config
    train_ids, dev_ids = dataset.splits["train"], dataset.splits["dev"]
    paths = {split: [str(dataset.image_path(i)) for i in dataset.splits[split]]
             for split in ("train", "dev")}  # fmt: skip
    captions = ImageCaptions.build(
        [dataset.captions[i] for i in train_ids], vocab, decoder_config.max_length
    )
    mirrored = mirrored_pairs(vocab) if config.flip else []
    steps_per_epoch = math.ceil(len(train_ids) / config.images_per_batch)

    with strategy.scope():
        encoder = keras.models.load_model(parent.path / "encoder.keras", safe_mode=True,
                                          compile=False)  # fmt: skip
        decoder = keras.models.load_model(parent.path / "decoder.keras", safe_mode=True,
                                          compile=False)  # fmt: skip
        learning = trainable_layers(encoder, config.train_blocks)
        total = config.epochs * steps_per_epoch

        def adam(rate: float):
            schedule = keras.optimizers.schedules.CosineDecay(rate, decay_steps=total)
            return keras.optimizers.Adam(schedule, clipnorm=5.0)

        optimizers = (adam(config.encoder_learning_rate), adam(config.learning_rate))
        optimizers[0].build(encoder.trainable_variables)
        optimizers[1].build(decoder.trainable_variables)
        average = (
            WeightAverage([encoder, decoder], config.ema_decay, optimizers[1].iterations)
            if config.ema_decay
            else None
        )
    log.info("finetune: %d encoder layers learn (%s ... %s), %d steps an epoch",
             len(learning), learning[:1], learning[-1:], steps_per_epoch)  # fmt: skip
    trainer = JointTraining(encoder, decoder, *optimizers, strategy)

    def scores_now(prefix: str) -> dict:
        features = np.concatenate(
            [trainer.encode(batch).numpy() for batch in plain_images(paths["dev"], prep)]
        )  # [N, F]
        predictions = caption_cached(decoder, decoder_config, vocab, features, dev_ids)
        scores = score_split(dataset, "dev", predictions)
        return {f"{prefix}dev_bleu4": scores.bleu4, f"{prefix}dev_cider_d": scores.cider_d,
                f"{prefix}dev_dangling_endings": scores.dangling_endings}  # fmt: skip

    def dev_scores() -> dict:
        return scores_with_average(average, scores_now)

    # Every worker restores the chief's checkpoint; only the chief writes.
    checkpoint = TrainingCheckpoint(
        out / "checkpoints",
        {"encoder": encoder, "decoder": decoder, "encoder_optimizer": optimizers[0],
         "decoder_optimizer": optimizers[1], **({"average": average} if average else {})},
        # The average holds every weight that learns; the rest are the parent's.
        kept=["average"] if average else ["encoder", "decoder"], optimizer="decoder_optimizer",
        steps_per_epoch=steps_per_epoch, objective=best_dev_cider_d, writer=chief,
    )  # fmt: skip
    with strategy.scope():
        # The parent's dev scores are epoch 0's, taken before any checkpoint is restored.
        done = checkpoint.resume(baseline=lambda: {"parent": True, **dev_scores()},
                                 rescore=dev_scores)  # fmt: skip
    if done:
        log.info("resuming %s after epoch %d of %d", out, done, config.epochs)
    else:
        log.info("parent on dev: %s", checkpoint.history[0])

    for epoch in range(done, config.epochs):
        start = time.perf_counter()
        batches = training_images(paths["train"], captions, prep, config, epoch, mirrored)
        loss_sum = words = 0.0
        bar = tqdm(strategy.experimental_distribute_dataset(batches), total=steps_per_epoch,
                   desc=f"finetune epoch {epoch + 1}/{config.epochs}",
                   disable=not progress or not chief)  # fmt: skip
        for batch in bar:
            batch_loss, batch_words = trainer.step(batch).numpy()
            if average is not None:
                average.update()
            loss_sum, words = loss_sum + batch_loss, words + batch_words
            bar.set_postfix(loss=f"{loss_sum / words:.3f}")
        entry = checkpoint.end_epoch(
            {"epoch": epoch + 1, "seconds": round(time.perf_counter() - start, 1),
             "loss": round(float(loss_sum / words), 4), **dev_scores()}
        )  # fmt: skip
        log.info("finetune epoch %d: %s", epoch + 1, entry)
    if not chief:
        return {}

    history = checkpoint.history
    state = {"epochs_done": checkpoint.epochs_done, "history": history}
    kept = checkpoint.restore_best()
    if kept is None:
        log.info("no epoch beat the parent on dev: keeping the parent's encoder and decoder")
        shutil.copyfile(parent.path / "encoder.keras", out / "encoder.keras")
        shutil.copyfile(parent.path / "decoder.keras", out / "decoder.keras")
    else:
        if average is not None:  # best.npz holds the kept epoch's average
            average.copy_to_models()
        log.info("keeping epoch %d: dev CIDEr-D %.4f", kept["epoch"], kept["dev_cider_d"])
        _save_keras_atomic(encoder, out / "encoder.keras")
        _save_keras_atomic(decoder, out / "decoder.keras")
    if final_split == "none":
        return state
    metrics = _score_kept(parent, out, dataset, final_split, feature_cache, history, progress)
    return {**state, "metrics": metrics}


def _score_kept(
    parent: TrainedRun,
    out: Path,
    dataset,
    split: str,
    feature_cache: str | None,
    history: list[dict],
    progress: bool,
) -> dict:
    """The kept model's greedy scores on `split`, with the training's time and peak memory,
    written to out/metrics.json. The kept encoder's features go to the cache (keyed on its
    file), where SCST and evaluation find them."""
    import keras

    from .encoders import get_encoder_spec
    from .features import extract_features
    from .keras_captioner import caption_cached

    spec = get_encoder_spec(parent.config.encoder.name)
    kept_encoder, kept_decoder = (
        keras.models.load_model(out / name, safe_mode=True, compile=False)
        for name in ("encoder.keras", "decoder.keras")
    )  # the parent's when no epoch beat it, not the last epoch's
    features = extract_features(
        dataset, split, spec, str(out / "encoder.keras"), kept_encoder,
        feature_cache or parent.config.train.feature_cache or None,
        progress=progress, prep=parent.preprocessing,
    )  # fmt: skip
    ids = dataset.splits[split]
    predictions = caption_cached(kept_decoder, parent.decoder_config, parent.vocab, features, ids)
    metrics = {"split": split, **score_split(dataset, split, predictions).to_json(),
               "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
               "peak_memory_mb": max(h.get("peak_memory_mb", 0.0) for h in history)}  # fmt: skip
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
