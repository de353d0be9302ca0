import numpy as np
import pytest

from dked_tf.models.presets import PRESETS, REFERENCE_PARAMS_M, build_model, count_params, gflops


def test_unknown_preset_is_named_in_the_error():
    with pytest.raises(ValueError, match="no_such_model"):
        build_model("no_such_model", 3)


def test_overrides_merge_into_the_preset():
    model = build_model("lodet_mobilenetv2_t", 2, neck_kwargs={"drop_prob": 0.0}, image_size=96, name="custom")
    assert model.neck_kwargs == {"width": 0.0625, "drop_prob": 0.0}
    assert model.image_size == 96 and model.name == "custom" and model.preset == "lodet_mobilenetv2_t"


@pytest.mark.parametrize("name", ["gghl_darknet53", "lodet_mobilenetv2"])
def test_paper_scale_parameter_counts_match_the_reference(name):
    model = build_model(name, 15)
    trainable_m = count_params(model, trainable_only=True) / 1e6
    assert trainable_m == pytest.approx(REFERENCE_PARAMS_M[name], rel=0.05)
    assert model.image_size == 800


def test_small_teacher_is_clearly_larger_than_small_student():
    teacher = build_model("gghl_darknet53_s", 1)
    student = build_model("lodet_mobilenetv2_s", 1)
    assert count_params(teacher) > 3 * count_params(student)
    assert teacher.image_size == student.image_size == 256


def test_gflops_scales_with_the_input_area(tiny_detector):
    model = tiny_detector("gghl_darknet53_t", 1)
    small, large = gflops(model, 64), gflops(model, 128)
    assert small > 0
    assert 3.8 < large / small < 4.2


@pytest.mark.parametrize("name", ["gghl_darknet53_t", "lodet_mobilenetv2_t"])
def test_tiny_presets_convert_to_builtin_only_tflite(name, tiny_detector, tiny_images):
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_detector(name, 3)
    blob = model.to_tflite(64)  # TFLITE_BUILTINS only: raises if an op needs Flex
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    x = tiny_images(1, seed=0)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    reference = model.cells_function(64)(x)
    for key, value in zip(sorted(reference), outputs):
        expected = reference[key].numpy()
        assert value.shape == expected.shape, key
        if key == "classes":
            assert np.mean(value == expected) > 0.95
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-3, atol=1e-3, err_msg=key)


def test_every_preset_is_documented():
    import dked_tf.models.presets as presets

    for name in PRESETS:
        assert name in presets.__doc__
