"""DynamicDirectionalConv: rotation maps, equivariance, serialization, TFLite builtins."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.layers.ddc import (
    DynamicDirectionalConv,
    kernel_rotation_matrix,
    rotation_matrices,
)


def _apply(matrix, kernel):
    k = kernel.shape[0]
    return (matrix @ kernel.reshape(k * k)).reshape(k, k)


@pytest.mark.parametrize("interpolation", ["ring", "bilinear"])
@pytest.mark.parametrize("k", [3, 5])
def test_quarter_turns_equal_numpy_rot90(interpolation, k, rng):
    base = rng.normal(size=(k, k))
    for quarter in range(4):
        rotated = _apply(kernel_rotation_matrix(k, quarter * math.pi / 2, interpolation), base)
        np.testing.assert_allclose(rotated, np.rot90(base, quarter), atol=1e-12)


def test_45_degree_copy_moves_corner_to_adjacent_edge_middle():
    # K = 4 -> copies at 0, 45, 90, 135 degrees. Hand-computed: counter-clockwise as displayed
    # (rows grow downward), a one-hot top-right corner goes to the top edge middle at 45 deg,
    # to the top-left corner at 90 deg and to the left edge middle at 135 deg.
    maps = rotation_matrices(3, 4, "ring")
    base = np.zeros((3, 3))
    base[0, 2] = 1.0
    expected_positions = [(0, 2), (0, 1), (0, 0), (1, 0)]
    for j, (row, col) in enumerate(expected_positions):
        expected = np.zeros((3, 3))
        expected[row, col] = 1.0
        np.testing.assert_allclose(_apply(maps[j], base), expected, atol=1e-12)
    # an edge-middle tap goes to the next corner (the ring is a cycle of 8 taps)
    edge = np.zeros((3, 3))
    edge[1, 2] = 1.0  # right middle
    expected = np.zeros((3, 3))
    expected[0, 2] = 1.0  # top-right corner
    np.testing.assert_allclose(_apply(maps[1], edge), expected, atol=1e-12)
    # each map keeps the centre and conserves the total weight (a permutation at 45 deg)
    for m in maps:
        assert m[4, 4] == 1.0
        np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_half_step_interpolates_between_neighbouring_taps():
    # 22.5 deg on a 3x3 ring is half a tap: corner weight splits 0.5 / 0.5
    m = kernel_rotation_matrix(3, math.pi / 8, "ring")
    base = np.zeros((3, 3))
    base[0, 2] = 1.0
    out = _apply(m, base)
    assert out[0, 2] == pytest.approx(0.5) and out[0, 1] == pytest.approx(0.5)
    assert out.sum() == pytest.approx(1.0)


def _randomise_attention(layer, rng, scale=1.0):
    for dense in (layer.attention_hidden, layer.attention_logits):
        dense.kernel.assign(scale * rng.normal(size=dense.kernel.shape).astype("float32"))
        # positive hidden biases: no dead ReLU unit (a zero-range tensor breaks int8 XNNPACK)
        dense.bias.assign(scale * np.abs(rng.normal(size=dense.bias.shape)).astype("float32") + 0.1)


def _reference_output(layer, x):
    """Independent numpy evaluation: attention-mixed kernel per sample, then a direct
    correlation loop (same padding, stride 1)."""
    kernels = np.asarray(layer.rotated_kernels())  # [K, k, k, C, o]
    attention = np.asarray(layer.attention(tf.constant(x)))  # [B, K]
    k = layer.kernel_size
    pad = k // 2
    b, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    outs = []
    for i in range(b):
        kern = np.tensordot(attention[i], kernels, axes=1)  # [k, k, C, o]
        out = np.zeros((h, w, layer.output_channels))
        for y in range(h):
            for xx in range(w):
                patch = padded[i, y : y + k, xx : xx + k, :]
                if layer.depthwise:
                    out[y, xx] = np.einsum("abc,abc->c", patch, kern[..., 0])
                else:
                    out[y, xx] = np.einsum("abc,abcf->f", patch, kern)
        outs.append(out + np.asarray(layer.bias))
    return np.stack(outs)


@pytest.mark.parametrize("depthwise", [False, True])
def test_output_matches_direct_attention_mixed_convolution(depthwise, rng):
    layer = DynamicDirectionalConv(filters=5, depthwise=depthwise, num_directions=4)
    x = rng.normal(size=(2, 6, 7, 3)).astype("float32")
    layer(x)
    _randomise_attention(layer, rng)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x)), _reference_output(layer, x), atol=1e-4)


@pytest.mark.parametrize("depthwise", [False, True])
def test_rotating_input_and_kernel_rotates_output(depthwise, rng):
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    layer = DynamicDirectionalConv(filters=4, depthwise=depthwise, num_directions=4)
    layer(x)
    _randomise_attention(layer, rng)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    rotated_layer = DynamicDirectionalConv.from_config(layer.get_config())
    rotated_layer(x)
    rotated_layer.set_weights(layer.get_weights())
    base = np.asarray(layer.base_kernel)
    rotated_layer.base_kernel.assign(np.rot90(base, 1, axes=(0, 1)).copy())
    # every copy of the rotated layer is the 90-degree rotation of the same copy
    np.testing.assert_allclose(
        np.asarray(rotated_layer.rotated_kernels()),
        np.rot90(np.asarray(layer.rotated_kernels()), 1, axes=(1, 2)),
        atol=1e-6,
    )
    out = np.asarray(layer(x))
    out_rotated_input = np.asarray(rotated_layer(np.rot90(x, 1, axes=(1, 2)).copy()))
    np.testing.assert_allclose(out_rotated_input, np.rot90(out, 1, axes=(1, 2)), atol=1e-4)
    assert np.abs(out).max() > 0.1  # not a trivially zero output


def test_attention_is_a_distribution_and_temperature_flattens_it(rng):
    x = rng.normal(size=(3, 5, 5, 4)).astype("float32")
    sharp = DynamicDirectionalConv(filters=2, temperature=0.5)
    sharp(x)
    _randomise_attention(sharp, rng)
    flat = DynamicDirectionalConv(filters=2, temperature=50.0)
    flat(x)
    flat.set_weights(sharp.get_weights())
    a_sharp = np.asarray(sharp.attention(tf.constant(x)))
    a_flat = np.asarray(flat.attention(tf.constant(x)))
    np.testing.assert_allclose(a_sharp.sum(-1), 1.0, atol=1e-6)
    assert (a_flat.max(-1) - a_flat.min(-1)).max() < (a_sharp.max(-1) - a_sharp.min(-1)).max()


def test_strides_and_shapes(rng):
    x = rng.normal(size=(1, 9, 9, 3)).astype("float32")
    layer = DynamicDirectionalConv(filters=6, strides=2)
    assert tuple(layer(x).shape) == (1, 5, 5, 6)
    assert layer.compute_output_shape((1, 9, 9, 3)) == (1, 5, 5, 6)
    dw = DynamicDirectionalConv(depthwise=True, kernel_size=5, strides=2)
    assert tuple(dw(x).shape) == (1, 5, 5, 3)
    # parameters: base kernel + bias + attention MLP (no per-direction copies)
    assert dw.base_kernel.shape == (5, 5, 3, 1)
    with pytest.raises(ValueError, match="ddc.py"):
        DynamicDirectionalConv(filters=2, kernel_size=4)
    with pytest.raises(ValueError, match="ddc.py"):
        DynamicDirectionalConv()


def test_serialization_round_trip(tmp_path, rng):
    inputs = keras.Input((16, 16, 3))
    h = DynamicDirectionalConv(filters=4, num_directions=6, temperature=2.0, name="ddc")(inputs)
    h = DynamicDirectionalConv(depthwise=True, interpolation="bilinear", name="ddc_dw")(h)
    model = keras.Model(inputs, h)
    _randomise_attention(model.get_layer("ddc"), rng)
    path = tmp_path / "ddc.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("ddc")
    assert isinstance(layer, DynamicDirectionalConv)
    assert layer.num_directions == 6 and layer.temperature == 2.0
    assert loaded.get_layer("ddc_dw").interpolation == "bilinear"
    x = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)


def _tflite_ops(content):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    return {op["op_name"] for op in interpreter._get_ops_details()}, interpreter


def test_tflite_builtin_only_conversion_fp32_fp16_int8(tmp_path, rng):
    inputs = keras.Input((16, 16, 3), batch_size=1)
    h = DynamicDirectionalConv(filters=4, name="ddc")(inputs)
    h = DynamicDirectionalConv(depthwise=True, strides=2, name="ddc_dw")(h)
    model = keras.Model(inputs, h)
    _randomise_attention(model.get_layer("ddc"), rng)

    saved = str(tmp_path / "saved")
    model.export(saved, format="tf_saved_model", verbose=False)

    x = rng.uniform(size=(1, 16, 16, 3)).astype("float32")
    expected = np.asarray(model(x))
    allowed_extra = {"QUANTIZE", "DEQUANTIZE"}
    builtin = tf.lite.OpsSet.TFLITE_BUILTINS

    def convert(mode):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [builtin]
        if mode == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

            def representative():
                for _ in range(8):
                    yield [rng.uniform(size=(1, 16, 16, 3)).astype("float32")]

            converter.representative_dataset = representative
        return converter.convert()

    for mode, tol in (("fp32", 1e-4), ("fp16", 5e-2), ("int8", None)):
        ops, interpreter = _tflite_ops(convert(mode))
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), (mode, ops)
        assert "CONV_2D" in ops and "DEPTHWISE_CONV_2D" in ops, (mode, ops)
        assert (
            ops
            <= {
                "CONV_2D",
                "DEPTHWISE_CONV_2D",
                "MEAN",
                "FULLY_CONNECTED",
                "SOFTMAX",
                "STRIDED_SLICE",
                "MUL",
                "ADD",
                "RESHAPE",
                "RELU",
                "DIV",
                "SUM",
            }
            | allowed_extra
        ), (mode, ops)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        if tol is not None:
            np.testing.assert_allclose(got, expected, atol=tol * max(1.0, np.abs(expected).max()))
        else:
            # int8: same result up to quantisation noise
            err = np.abs(got - expected).max() / (np.abs(expected).max() + 1e-6)
            assert err < 0.15, err
