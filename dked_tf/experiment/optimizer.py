"""Optimizer and learning-rate schedule of a training run.

- `WarmupCosine`: linear warm-up from 0, then a per-iteration cosine to a floor (the GGHL §1.8
  schedule).
- `make_optimizer(train_cfg, steps_per_epoch)`: AdamW or SGD-Nesterov over that schedule, with
  decoupled weight decay that skips biases and normalisation parameters.
- `prebuild_optimizer(model)`: the optimizer's slot variables created before the first trace.
"""

import math

import keras
import tensorflow as tf

# Variables whose names contain one of these are not weight-decayed (biases, BN/LN parameters).
NO_DECAY_NAMES = ("bias", "gamma", "beta", "moving_mean", "moving_variance")


@keras.saving.register_keras_serializable(package="dked_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate per iteration: linear from 0 to `peak` over `warmup_steps`, then a cosine
    from `peak` down to `floor` at `total_steps` (held at `floor` after that)."""

    def __init__(self, peak, total_steps, warmup_steps=0, floor=0.0):
        self.peak = float(peak)
        self.total_steps = int(max(1, total_steps))
        self.warmup_steps = int(max(0, min(warmup_steps, self.total_steps - 1)))
        self.floor = float(floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        total = tf.cast(self.total_steps, tf.float32)
        warm_lr = self.peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
        cosine_lr = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, warm_lr, cosine_lr)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "floor": self.floor,
        }


def make_optimizer(train_cfg, steps_per_epoch):
    """A Keras optimizer for `train_cfg` (`dked_tf.config.TrainConfig`) with the warm-up +
    cosine schedule over train_cfg.epochs × steps_per_epoch iterations."""
    steps_per_epoch = max(1, int(steps_per_epoch))
    schedule = WarmupCosine(
        peak=train_cfg.learning_rate,
        total_steps=train_cfg.epochs * steps_per_epoch,
        warmup_steps=int(round(train_cfg.warmup_epochs * steps_per_epoch)),
        floor=train_cfg.min_learning_rate,
    )
    extra = {"clipnorm": train_cfg.clipnorm} if train_cfg.clipnorm and train_cfg.clipnorm > 0 else {}
    if train_cfg.ema_momentum:
        extra.update(use_ema=True, ema_momentum=float(train_cfg.ema_momentum))
    name = train_cfg.optimizer.lower()
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_cfg.weight_decay, **extra)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=train_cfg.momentum,
            nesterov=True,
            weight_decay=train_cfg.weight_decay or None,
            **extra,
        )
    else:
        raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; use 'adamw' or 'sgd'")
    if train_cfg.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer


def prebuild_optimizer(model):
    """Creates the optimizer's slot variables before the first training step is traced.

    Without a distribution strategy Keras defers this into the traced train step; variables
    created there make `tf.function` trace the whole step a second time. Same variables, same
    updates: Keras builds them exactly so under a strategy and before restoring a backup.
    """
    optimizer = model.optimizer
    if model.built and optimizer is not None and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)
