"""SCST that reaches into the encoder (`caption-train scst --train-blocks N`).

SCST on cached features moves the decoder alone: the encoder stays where ImageNet or
cross-entropy fine-tuning left it, although the reward knows what the captions lack. With
`train_blocks`, the reward's gradient flows on into the encoder's last N blocks (and the
head after them), at the encoder's own, lower, Adam rate. Each step reads its images from
the JPEG files through finetune's tf.data pipeline and augmentation (crops, flips, colour
jitter), encodes them once to sample captions and again under the gradient tape. A caption
sampled from a flipped image is mirrored back ("left" <-> "right") before it is scored
against the image's own references. BatchNorm runs in inference mode, as in finetune.

This module is the pixel source of scst.py's loop; `CachedFeatures` there is the frozen
one. Both hand the loop the same thing per step: the images' indices, their features for
sampling, which were flipped, and what the training step reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .finetune import FinetuneConfig, augmented_images, plain_images, trainable_layers

# Decoders that read one pooled vector per image, as the encoder being trained gives it.
ENCODER_SCST_KINDS = ("lstm", "merge", "twoway")


def _joint_step(encoder, decoder, encoder_optimizer, ban, samples: int):
    """tf.function(pixels [B, S, S, 3], inputs [B*K, T], targets [B*K, T], advantages
    [B*K, T]): one policy-gradient step through the decoder and into the encoder."""
    import tensorflow as tf

    from .scst import policy_loss

    @tf.function(reduce_retracing=True)
    def step(pixels, inputs, targets, advantages):
        with tf.GradientTape() as tape:
            features = encoder(pixels, training=False)  # [B, F]; BatchNorm keeps its statistics
            features = tf.repeat(features, samples, axis=0)  # [B, F] -> [B*K, F]
            loss = policy_loss(decoder, features, inputs, targets, advantages, ban)
        encoder_variables = encoder.trainable_variables
        decoder_variables = decoder.trainable_variables
        gradients = tape.gradient(loss, [*encoder_variables, *decoder_variables])
        split = len(encoder_variables)
        encoder_optimizer.apply_gradients(zip(gradients[:split], encoder_variables, strict=True))
        decoder.optimizer.apply_gradients(
            zip(gradients[split:], decoder_variables, strict=True)
        )  # fmt: skip
        return loss

    return step


class LearningEncoder:
    """The images of each step, encoded by an encoder that learns from the reward."""

    def __init__(self, parent, dataset, config, decoder, ban) -> None:
        import keras
        import tensorflow as tf

        kind = parent.decoder_config.kind
        if kind not in ENCODER_SCST_KINDS:
            raise ValueError(
                f"--train-blocks {config.train_blocks}: a {kind} decoder reads the encoder's "
                f"feature map; SCST trains the encoder of {', '.join(ENCODER_SCST_KINDS)} runs"
            )
        self.encoder = keras.models.load_model(parent.path / "encoder.keras", safe_mode=True,
                                               compile=False)  # fmt: skip
        self.learning = trainable_layers(self.encoder, config.train_blocks)
        self.optimizer = keras.optimizers.Adam(config.encoder_learning_rate, clipnorm=5.0)
        self.optimizer.build(self.encoder.trainable_variables)
        # finetune's augmentation (crops, flips, jitter), drawn from SCST's seed; none at all
        # without config.augment.
        plain = {} if config.augment else {"crop_area": 1.0, "flip": False, "jitter": 0.0}
        self.augmentation = FinetuneConfig(images_per_batch=config.images_per_batch,
                                           seed=config.seed, **plain)  # fmt: skip
        self.prep = parent.preprocessing
        self.paths = {split: [str(dataset.image_path(i)) for i in dataset.splits[split]]
                      for split in ("train", "dev")}  # fmt: skip
        self.encode = tf.function(lambda pixels: self.encoder(pixels, training=False),
                                  reduce_retracing=True)  # fmt: skip
        self.step = _joint_step(self.encoder, decoder, self.optimizer, ban, config.samples)
        self.checkpointed = {"encoder": self.encoder, "encoder_optimizer": self.optimizer}
        self.kept = ("encoder",)

    def dev_features(self) -> np.ndarray:
        """The dev images as the device sees them, encoded by today's weights: [N, F]."""
        return np.concatenate(
            [self.encode(batch).numpy() for batch in plain_images(self.paths["dev"], self.prep)]
        )  # fmt: skip

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, object]]:
        """(image indices [B], features [B, F], flipped [B], pixels [B, S, S, 3]) per step."""
        images = augmented_images(self.paths["train"], self.prep, self.augmentation, epoch)
        for pixels, flipped, index in images.prefetch(2):
            yield index.numpy(), self.encode(pixels).numpy(), flipped.numpy(), pixels

    def save(self, out) -> None:
        from .training import _save_keras_atomic

        _save_keras_atomic(self.encoder, out / "encoder.keras")
