"""DDC — Dynamic Directional Convolution (our reading of DKED, see shared/DESIGN.md "DKED").

One learned base kernel `k×k` and its `K` rotated copies (rotation of the kernel grid by
`j·pi/K`, j = 0..K-1). Each copy is a FIXED linear map of the base weights (a `k²×k²`
interpolation matrix computed in numpy when the layer is built), so all copies share and train
the same parameters. A per-sample softmax attention over the K directions, computed from global
average pooling through a small MLP, mixes the K responses:

    y = sum_j a_j(x) · conv(x, R_j · W) + b,      a(x) = softmax(MLP(GAP(x)) / temperature)

It is evaluated as ONE convolution with the K kernels stacked on the output axis, a reshape
that separates the K directions and the attention-weighted sum over them, so the exported
graph contains only TFLite builtins (CONV_2D / DEPTHWISE_CONV_2D, MEAN, FULLY_CONNECTED,
SOFTMAX, RESHAPE, MUL, SUM, ADD) in fp32, fp16 and int8. (A reshape + reduction rather than
K channel slices: the gradient of K slices materialises K full-size tensors in training.) The
kernel set depends only on weights, so converters fold it to a constant.

Rotation convention: image axes (x right = kernel column, y down = kernel row); a positive
angle turns the kernel counter-clockwise as displayed, so the copy at pi/2 equals
`np.rot90(base)` on the (row, column) axes.

Interpolation (`interpolation=`):
- "ring" (default): each Chebyshev ring of the kernel (the 8r taps at distance r from the
  centre) is treated as a closed loop and the taps are shifted along it by `angle/(2·pi)·8r`
  positions, linearly interpolated between the two neighbouring taps. Exact rotation at
  multiples of pi/2; at pi/4 a 3×3 kernel's taps move one position around the ring (corner ->
  edge middle), no weight is lost at the corners.
- "bilinear": Cartesian bilinear resampling of the base grid at the inversely rotated tap
  positions (taps that fall outside the grid read zero; corners lose weight at 45°).
"""

import math

import keras
import numpy as np
import tensorflow as tf


def _ring_order(radius):
    """Taps (x, y) of Chebyshev ring `radius`, counter-clockwise as displayed (y down),
    starting at (radius, 0). Returns list of length 8·radius."""
    r = radius
    taps = []
    # right edge going up (y decreasing), from (r, 0) to (r, -r)
    taps += [(r, -y) for y in range(0, r)]
    # top edge going left, from (r, -r) to (-r, -r)
    taps += [(r - x, -r) for x in range(0, 2 * r)]
    # left edge going down, from (-r, -r) to (-r, r)
    taps += [(-r, -r + y) for y in range(0, 2 * r)]
    # bottom edge going right, from (-r, r) to (r, r)
    taps += [(-r + x, r) for x in range(0, 2 * r)]
    # right edge going up, from (r, r) to (r, 1)
    taps += [(r, r - y) for y in range(0, r)]
    assert len(taps) == 8 * r and len(set(taps)) == 8 * r
    return taps


def kernel_rotation_matrix(kernel_size, angle, interpolation="ring"):
    """Fixed linear map that rotates a `kernel_size`² kernel grid by `angle` (radians).

    Returns: float64 [k², k²] matrix R with `rotated.flat[p] = sum_q R[p, q] · base.flat[q]`,
    flat index = row·k + column (row = y + k//2, column = x + k//2).
    """
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"ddc.py: kernel_size must be odd and >= 1, got {kernel_size}")
    c = k // 2
    matrix = np.zeros((k * k, k * k), np.float64)

    def flat(x, y):
        return (y + c) * k + (x + c)

    if interpolation == "ring":
        matrix[flat(0, 0), flat(0, 0)] = 1.0
        for r in range(1, c + 1):
            taps = _ring_order(r)
            n = len(taps)
            shift = angle / (2.0 * math.pi) * n
            for i, (x, y) in enumerate(taps):
                source = (i - shift) % n
                low = int(math.floor(source + 1e-9)) % n
                frac = source - math.floor(source + 1e-9)
                if abs(frac) < 1e-9:
                    frac = 0.0
                high = (low + 1) % n
                matrix[flat(x, y), flat(*taps[low])] += 1.0 - frac
                if frac > 0.0:
                    matrix[flat(x, y), flat(*taps[high])] += frac
    elif interpolation == "bilinear":
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        for y in range(-c, c + 1):
            for x in range(-c, c + 1):
                # inverse rotation of the destination tap gives the source position
                sx = x * cos_a - y * sin_a
                sy = x * sin_a + y * cos_a
                for gy in range(-c, c + 1):
                    for gx in range(-c, c + 1):
                        wx = 1.0 - abs(sx - gx)
                        wy = 1.0 - abs(sy - gy)
                        if wx > 1e-12 and wy > 1e-12:
                            matrix[flat(x, y), flat(gx, gy)] += wx * wy
    else:
        raise ValueError(f"ddc.py: interpolation must be 'ring' or 'bilinear', got {interpolation!r}")
    matrix[np.abs(matrix) < 1e-12] = 0.0
    return matrix


def rotation_matrices(kernel_size, num_directions, interpolation="ring"):
    """float64 [K, k², k²]: the maps for angles j·pi/K, j = 0..K-1."""
    return np.stack(
        [
            kernel_rotation_matrix(kernel_size, j * math.pi / num_directions, interpolation)
            for j in range(num_directions)
        ]
    )


def _split_channels(tensor, outer, inner):
    """[B, H, W, outer·inner] -> [B, H, W, outer, inner] (static H, W when known, so exported
    graphs hold a constant shape)."""
    height, width = tensor.shape[1], tensor.shape[2]
    if height is None or width is None:
        dynamic = tf.shape(tensor)
        height = dynamic[1] if height is None else height
        width = dynamic[2] if width is None else width
    return tf.reshape(tensor, tf.stack([-1, height, width, outer, inner]))


@keras.saving.register_keras_serializable(package="dked_tf")
class DynamicDirectionalConv(keras.layers.Layer):
    """Dynamic Directional Convolution.

    Input: float [B, H, W, C_in]. Output: [B, H', W', filters] (regular) or
    [B, H', W', C_in] (depthwise), H' = ceil(H / strides) with "same" padding.

    Args:
        filters: output channels of the regular variant (ignored when `depthwise=True`).
        kernel_size: odd int.
        num_directions: K, number of rotated copies (angles j·pi/K).
        temperature: softmax temperature of the direction attention (larger = flatter).
        depthwise: depthwise (one base kernel per input channel) instead of regular conv.
        strides, padding: as in keras Conv2D ("same" or "valid").
        attention_reduction: hidden width of the attention MLP = max(4, C_in // reduction).
        interpolation: "ring" or "bilinear" (see module docstring).
        use_bias, kernel_initializer, kernel_regularizer: as in keras Conv2D.
    """

    def __init__(
        self,
        filters=None,
        kernel_size=3,
        num_directions=4,
        temperature=1.0,
        depthwise=False,
        strides=1,
        padding="same",
        attention_reduction=4,
        interpolation="ring",
        use_bias=True,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not depthwise and (filters is None or int(filters) < 1):
            raise ValueError("ddc.py: the regular DynamicDirectionalConv needs filters >= 1")
        if int(num_directions) < 1:
            raise ValueError(f"ddc.py: num_directions must be >= 1, got {num_directions}")
        if padding not in ("same", "valid"):
            raise ValueError(f"ddc.py: padding must be 'same' or 'valid', got {padding!r}")
        if float(temperature) <= 0:
            raise ValueError(f"ddc.py: temperature must be > 0, got {temperature}")
        self.filters = None if filters is None else int(filters)
        self.kernel_size = int(kernel_size)
        self.num_directions = int(num_directions)
        self.temperature = float(temperature)
        self.depthwise = bool(depthwise)
        self.strides = int(strides)
        self.padding = padding
        self.attention_reduction = int(attention_reduction)
        self.interpolation = interpolation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        # validates kernel_size / interpolation early
        self._rotations = rotation_matrices(self.kernel_size, self.num_directions, self.interpolation).astype(
            np.float32
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("ddc.py: the channel dimension of the input must be known")
        channels = int(channels)
        self.input_channels = channels
        out_per_tap = 1 if self.depthwise else self.filters
        k = self.kernel_size
        self.base_kernel = self.add_weight(
            name="base_kernel",
            shape=(k, k, channels, out_per_tap),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        out_channels = channels if self.depthwise else self.filters
        self.bias = self.add_weight(name="bias", shape=(out_channels,), initializer="zeros") if self.use_bias else None
        hidden = max(4, channels // max(1, self.attention_reduction))
        self.attention_hidden = keras.layers.Dense(hidden, activation="relu", name="attn_hidden")
        self.attention_hidden.build((None, channels))
        self.attention_logits = keras.layers.Dense(self.num_directions, name="attn_logits", kernel_initializer="zeros")
        self.attention_logits.build((None, hidden))
        self.output_channels = out_channels

    # ------------------------------------------------------------------ kernels
    def rotated_kernels(self):
        """The K kernels: float [K, k, k, C_in, out_per_tap] (copy j = rotation by j·pi/K)."""
        k = self.kernel_size
        base = keras.ops.reshape(self.base_kernel, (k * k, -1))
        rotations = keras.ops.convert_to_tensor(self._rotations, dtype=base.dtype)
        stacked = keras.ops.einsum("jpq,qc->jpc", rotations, base)
        shape = (self.num_directions, k, k) + tuple(self.base_kernel.shape[2:])
        return keras.ops.reshape(stacked, shape)

    def attention(self, inputs):
        """Per-sample direction weights: float [B, K], rows sum to 1."""
        pooled = keras.ops.mean(inputs, axis=(1, 2))
        logits = self.attention_logits(self.attention_hidden(pooled))
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def call(self, inputs):
        kernels = keras.ops.cast(self.rotated_kernels(), inputs.dtype)  # [K,k,k,C,o]
        num = self.num_directions
        padding = self.padding.upper()
        weights = keras.ops.cast(self.attention(inputs), inputs.dtype)  # [B, K]
        if self.depthwise:
            # depthwise kernel [k, k, C, K]: output channel c·K + j is channel c, direction j
            kernel = keras.ops.transpose(kernels[..., 0], (1, 2, 3, 0))
            responses = tf.nn.depthwise_conv2d(
                inputs, kernel, strides=[1, self.strides, self.strides, 1], padding=padding
            )
            mixed = _split_channels(responses, self.input_channels, num) * tf.reshape(weights, (-1, 1, 1, 1, num))
            output = tf.reduce_sum(mixed, axis=4)
        else:
            # regular kernel [k, k, C, K·F]: output channel j·F + f is direction j, filter f
            kernel = keras.ops.transpose(kernels, (1, 2, 3, 0, 4))
            kernel = keras.ops.reshape(
                kernel,
                (self.kernel_size, self.kernel_size, self.input_channels, num * self.filters),
            )
            responses = tf.nn.conv2d(inputs, kernel, strides=self.strides, padding=padding)
            mixed = _split_channels(responses, num, self.filters) * tf.reshape(weights, (-1, 1, 1, num, 1))
            output = tf.reduce_sum(mixed, axis=3)
        if self.bias is not None:
            output = output + keras.ops.cast(self.bias, inputs.dtype)
        return output

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape

        def out(size):
            if size is None:
                return None
            if self.padding == "same":
                return -(-size // self.strides)
            return (size - self.kernel_size) // self.strides + 1

        return (b, out(h), out(w), c if self.depthwise else self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            num_directions=self.num_directions,
            temperature=self.temperature,
            depthwise=self.depthwise,
            strides=self.strides,
            padding=self.padding,
            attention_reduction=self.attention_reduction,
            interpolation=self.interpolation,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer
            else None,
        )
        return config
