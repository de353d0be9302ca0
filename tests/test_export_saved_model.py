"""SavedModel export: both serving signatures, metadata, saved_model_cli, and equality with
the evaluation path (pipeline letterbox -> model.decode -> original pixels)."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from dked_tf.data.records import ImageRecord  # noqa: E402
from dked_tf.evaluation.runner import predict_records  # noqa: E402
from dked_tf.export.saved_model import export_saved_model, read_export_metadata  # noqa: E402

SIZE = 64
NUM_CLASSES = 2
# Random initialisation gives scores ~0.01 everywhere: a zero threshold keeps candidates so
# that NMS and the un-letterbox have real work to do.
SCORE_THRESHOLD = 0.0
IOU_THRESHOLD = 0.3
MAX_DETECTIONS = 12


@pytest.fixture(scope="module")
def exported(tiny_detector, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_model")
    pytest.importorskip("keras")
    model = tiny_detector("lodet_mobilenetv2_t", NUM_CLASSES, seed=3, randomize=True)
    path = str(root / "detector")
    metadata = export_saved_model(
        model,
        path,
        SIZE,
        score_threshold=SCORE_THRESHOLD,
        iou_threshold=IOU_THRESHOLD,
        max_detections=MAX_DETECTIONS,
        class_names=["ship", "boat"],
    )
    rng = np.random.default_rng(0)
    images = {
        "wide": (rng.random((40, 96, 3)) * 255).astype(np.uint8),  # W > H: pads top and bottom
        "tall": (rng.random((90, 50, 3)) * 255).astype(np.uint8),  # H > W: pads left and right
    }
    records = []
    for name, image in images.items():
        file = str(root / f"{name}.png")
        cv2.imwrite(file, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        records.append(ImageRecord(file, name, image.shape[1], image.shape[0]))
    return {
        "model": model,
        "path": path,
        "metadata": metadata,
        "images": images,
        "records": records,
        "loaded": tf.saved_model.load(path),
        "reference": _reference(model, records),
    }


def _reference(model, records):
    """Detections of the evaluation path: image_id -> (polys [K,8], scores [K], classes [K])."""
    found = predict_records(
        model,
        records,
        SIZE,
        batch_size=1,
        score_threshold=SCORE_THRESHOLD,
        iou_threshold=IOU_THRESHOLD,
        max_detections=MAX_DETECTIONS,
        verbose=0,
    )
    per_image = {}
    for class_name, rows in found.items():
        for image_id, score, poly in rows:
            per_image.setdefault(image_id, []).append((score, int(class_name), poly))
    out = {}
    for image_id, rows in per_image.items():
        rows.sort(key=lambda r: -r[0])
        out[image_id] = (np.array([r[2] for r in rows]), np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    return out


def _check_same(outputs, b, reference):
    polys, scores, classes = reference
    n = int(outputs["num_detections"][b])
    assert n == len(scores) > 0
    got_scores = outputs["detection_scores"][b].numpy()
    order = np.argsort(-got_scores[:n], kind="stable")
    np.testing.assert_allclose(got_scores[:n][order], scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(outputs["detection_classes"][b].numpy()[:n][order], classes)
    np.testing.assert_allclose(outputs["detection_polygons"][b].numpy()[:n][order], polys, atol=2e-2)
    # padded rows are zero
    assert not outputs["detection_polygons"][b].numpy()[n:].any()
    assert not outputs["detection_scores"][b].numpy()[n:].any()


def test_signatures_and_output_shapes(exported):
    loaded = exported["loaded"]
    assert {"serving_default", "serving_image_bytes"} <= set(loaded.signatures)
    outputs = loaded.signatures["serving_default"](images=tf.constant(exported["images"]["wide"][None]))
    assert outputs["detection_polygons"].shape == (1, MAX_DETECTIONS, 8)
    assert outputs["detection_rboxes"].shape == (1, MAX_DETECTIONS, 5)
    assert outputs["detection_scores"].shape == (1, MAX_DETECTIONS)
    assert outputs["detection_classes"].dtype == tf.int32
    assert outputs["num_detections"].shape == (1,)


def test_serving_default_equals_evaluation_path(exported):
    reference = exported["reference"]
    loaded = exported["loaded"]
    for name in ("wide", "tall"):
        outputs = loaded.signatures["serving_default"](images=tf.constant(exported["images"][name][None]))
        _check_same(outputs, 0, reference[name])


def test_image_bytes_batch_of_different_sizes(exported):
    reference = exported["reference"]
    encoded = []
    for name in ("wide", "tall"):
        ok, buffer = cv2.imencode(".png", cv2.cvtColor(exported["images"][name], cv2.COLOR_RGB2BGR))
        assert ok
        encoded.append(buffer.tobytes())
    outputs = exported["loaded"].signatures["serving_image_bytes"](image_bytes=tf.constant(encoded))
    assert outputs["detection_polygons"].shape == (2, MAX_DETECTIONS, 8)
    for b, name in enumerate(("wide", "tall")):
        _check_same(outputs, b, reference[name])


def test_rboxes_are_the_polygons_rboxes_in_original_pixels(exported):
    """detection_rboxes (scaled back from the letterbox) = poly_to_rbox of detection_polygons."""
    from dked_tf.ops.obb import poly_to_rbox

    outputs = exported["loaded"].signatures["serving_default"](images=tf.constant(exported["images"]["tall"][None]))
    n = int(outputs["num_detections"][0])
    assert n > 0
    rboxes = outputs["detection_rboxes"][0].numpy()[:n]
    expected = poly_to_rbox(outputs["detection_polygons"][0].numpy()[:n].astype(np.float64))
    np.testing.assert_allclose(rboxes[:, :4], expected[:, :4], atol=0.05)
    angle_gap = np.abs((rboxes[:, 4] - expected[:, 4] + np.pi / 2) % np.pi - np.pi / 2)
    elongated = expected[:, 2] > 1.05 * expected[:, 3]  # theta is defined up to symmetry for squares
    assert np.all(angle_gap[elongated] < 1e-2)


def test_metadata_records_thresholds(exported):
    metadata = read_export_metadata(exported["path"])
    assert metadata["score_threshold"] == SCORE_THRESHOLD
    assert metadata["iou_threshold"] == IOU_THRESHOLD
    assert metadata["max_detections"] == MAX_DETECTIONS
    assert metadata["image_size"] == SIZE and metadata["class_names"] == ["ship", "boat"]
    with open(os.path.join(exported["path"], "assets", "dked_tf_export.json")) as f:
        assert json.load(f) == metadata
    values = {v.name.split(":")[0]: v.numpy() for v in exported["loaded"].export_config}
    assert values["iou_threshold"] == pytest.approx(IOU_THRESHOLD)
    assert values["max_detections"] == MAX_DETECTIONS and values["image_size"] == SIZE


def test_saved_model_cli_shows_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli not installed next to the interpreter")
    result = subprocess.run(
        [cli, "show", "--dir", exported["path"], "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "signature_def['serving_default']" in text and "signature_def['serving_image_bytes']" in text
    assert "DT_UINT8" in text and "DT_STRING" in text
    for name in ("detection_polygons", "detection_rboxes", "detection_scores", "detection_classes", "num_detections"):
        assert name in text
