"""Helpers shared by the test modules (not a test module itself)."""

import numpy as np


def randomize_weights(model, seed):
    """He-normal kernels everywhere: a freshly built tiny model (BN at its initial statistics,
    small prior-biased heads) gives nearly the same output at every cell whatever the image;
    these weights make outputs depend on the image, and classes and scores distinct."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if not weight.path.endswith("kernel"):
            continue
        shape = tuple(weight.shape)
        if len(shape) == 4:
            fan_in = shape[0] * shape[1] * (1 if shape[-1] == 1 else shape[2])  # depthwise: k*k
        else:
            fan_in = shape[0]
        weight.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype("float32"))


def interrupt_before_epoch(epoch):
    """A Keras callback that raises RuntimeError("simulated interruption") as epoch `epoch`
    (0-based) begins: an interrupted training for resume tests."""
    import keras

    class _Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index == epoch:
                raise RuntimeError("simulated interruption")

    return _Interrupt()
