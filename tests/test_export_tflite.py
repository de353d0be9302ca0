"""TFLite export: builtin ops only, fp32 numerically equal to Keras' decode_cells, full-int8
with uint8 input from pipeline images, a loud failure on TF-Select ops, and the device
runner's detections equal to the Keras evaluation path."""

import json
import os

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from dked_tf.data.records import ImageRecord  # noqa: E402
from dked_tf.evaluation.runner import predict_records  # noqa: E402
from dked_tf.export.tflite import (  # noqa: E402
    TFLiteExportError,
    convert_function_to_tflite,
    export_tflite,
    predict_tflite,
    representative_from_records,
    representative_images,
)

SIZE = 64
CLASS_NAMES = ["ship", "boat"]


@pytest.fixture(scope="module")
def model(tiny_detector):
    return tiny_detector("lodet_mobilenetv2_t", len(CLASS_NAMES), seed=5, randomize=True)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    out = []
    for i, (h, w) in enumerate([(48, 80), (90, 60), (64, 64), (70, 100)]):
        image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        path = str(root / f"img{i}.png")
        cv2.imwrite(path, image)
        polygon = np.array([[5, 5, 30, 8, 27, 20, 3, 17]], np.float32)
        out.append(ImageRecord(path, f"img{i}", w, h, polygon, [i % 2], [False]))
    return out


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tflite") / "student.tflite")
    sidecar = export_tflite(
        model, path, SIZE, class_names=CLASS_NAMES, score_threshold=0.0, iou_threshold=0.3, max_detections=15, verbose=0
    )
    return path, sidecar


def _run(path, images):
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(images=images).items()}, interpreter


def test_fp32_equals_keras_decode_cells(model, fp32, tiny_images):
    path, _ = fp32
    images = tiny_images(1, SIZE, seed=2)
    cells = model.decode_cells(model(images, training=False)["head"])
    outputs, _ = _run(path, images)
    n = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2
    assert outputs["polygons"].shape == (1, n, 8)
    np.testing.assert_allclose(outputs["polygons"], cells["polygons"].numpy(), atol=1e-3 * SIZE)
    np.testing.assert_allclose(outputs["scores"], cells["scores"].numpy(), atol=1e-5)
    # classes agree wherever the best class is not a near tie
    probs = np.sort(cells["class_probs"].numpy(), axis=-1)
    clear = (probs[..., -1] - probs[..., -2]) > 1e-4
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(outputs["classes"][clear], cells["classes"].numpy()[clear])


def test_builtin_ops_only_and_sidecar(fp32):
    path, sidecar = fp32
    interpreter = Interpreter(model_path=path)  # not invoked: XNNPACK has not replaced nodes yet
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "CONV_2D" in ops
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops)
    with open(os.path.splitext(path)[0] + ".json") as f:
        on_disk = json.load(f)
    assert on_disk == sidecar
    assert set(on_disk["tflite_ops"]) == ops
    assert on_disk["image_size"] == SIZE and on_disk["class_names"] == CLASS_NAMES
    assert on_disk["strides"] == [8, 16, 32] and on_disk["nms"] == "host"
    assert on_disk["iou_threshold"] == 0.3 and on_disk["max_detections"] == 15
    assert set(on_disk["outputs"]) == {"polygons", "scores", "classes"}


def test_int8_full_integer_uint8_input_from_pipeline(model, records, tmp_path):
    path = str(tmp_path / "student_int8.tflite")
    representative = list(representative_from_records(records, SIZE, limit=4))
    assert len(representative) == 4 and representative[0].shape == (SIZE, SIZE, 3)
    sidecar = export_tflite(
        model, path, SIZE, quantize="int8", representative_images=representative, uint8_input=True, verbose=0
    )
    assert sidecar["quantize"] == "int8"
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    scale, zero_point = detail["quantization"]
    assert scale == pytest.approx(1 / 255, rel=0.02) and abs(zero_point) <= 1
    int8_tensors = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    assert len(int8_tensors) > 20  # weights and activations are integer
    # float outputs, close to Keras on a pipeline image
    image = representative[0]
    quantized = np.clip(np.round(image / scale + zero_point), 0, 255).astype(np.uint8)[None]
    outputs = {k: np.asarray(v) for k, v in interpreter.get_signature_runner()(images=quantized).items()}
    assert outputs["scores"].dtype == np.float32
    cells = model.decode_cells(model(image[None], training=False)["head"])
    error = np.abs(outputs["polygons"] - cells["polygons"].numpy())
    assert np.median(error) < 0.1 * SIZE
    assert np.abs(outputs["scores"] - cells["scores"].numpy()).mean() < 0.05


def test_representative_folder_is_letterboxed(tmp_path):
    image = np.full((20, 40, 3), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    images = list(representative_images(str(tmp_path), 32))
    assert len(images) == 1 and images[0].shape == (32, 32, 3)
    # 40x20 -> scale 0.8, 32x16 centred: rows 8..24 white, the rest 0.5
    assert np.allclose(images[0][9:23], 1.0) and np.allclose(images[0][:7], 0.5) and np.allclose(images[0][25:], 0.5)


def test_flex_ops_fail_loudly_with_their_names():
    @tf.function(input_signature=[tf.TensorSpec([4, 4], tf.float32)])
    def needs_select(x):
        singular_values = tf.linalg.svd(x, compute_uv=False)
        return {"s": singular_values}

    with pytest.raises(TFLiteExportError, match="Svd"):
        convert_function_to_tflite(needs_select)


def test_device_runner_matches_keras_evaluation_path(model, fp32, records):
    """tflite/detect.py (cv2 letterbox, numpy NMS) vs predict_records (pipeline, graph NMS)."""
    path, _ = fp32
    kwargs = dict(score_threshold=0.0, iou_threshold=0.3, max_detections=15)
    keras_found = predict_records(model, records, SIZE, batch_size=2, class_names=CLASS_NAMES, verbose=0, **kwargs)
    tflite_found = predict_tflite(path, records, CLASS_NAMES, verbose=0, **kwargs)
    total = 0
    for name in CLASS_NAMES:
        for record in records:
            a = sorted((r for r in keras_found[name] if r[0] == record.image_id), key=lambda r: -r[1])
            b = sorted((r for r in tflite_found[name] if r[0] == record.image_id), key=lambda r: -r[1])
            assert len(a) == len(b), (name, record.image_id)
            for (_, score_a, poly_a), (_, score_b, poly_b) in zip(a, b):
                assert score_b == pytest.approx(score_a, abs=1e-4)
                np.testing.assert_allclose(poly_b, poly_a, atol=0.05)
            total += len(a)
    assert total > 0
