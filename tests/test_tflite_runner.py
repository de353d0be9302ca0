"""The TensorFlow-free device runner tflite/detect.py: polygon IoU against shapely, NMS
against dked_tf.ops.nms, the letterbox by hand, and the CLI end to end in a subprocess that
must not import TensorFlow."""

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import shapely

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECT_PY = os.path.join(REPO, "tflite", "detect.py")


@pytest.fixture(scope="module")
def detect():
    spec = importlib.util.spec_from_file_location("tflite_detect_under_test", DETECT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rectangles(rng, n, spread=60.0, max_side=30.0):
    centre = rng.uniform(0, spread, (n, 2))
    w, h = rng.uniform(1, max_side, n), rng.uniform(1, max_side, n)
    t = rng.uniform(-np.pi, np.pi, n)
    u = np.stack([np.cos(t), np.sin(t)], -1) * w[:, None] / 2
    v = np.stack([-np.sin(t), np.cos(t)], -1) * h[:, None] / 2
    return np.stack([centre - u - v, centre + u - v, centre + u + v, centre - u + v], 1).reshape(n, 8)


def _orc_quads(rng, n):
    """Convex quads with one vertex on each side of a random box (GGHL's ORC shapes)."""
    x0, y0 = rng.uniform(0, 40, n), rng.uniform(0, 40, n)
    w, h = rng.uniform(2, 30, n), rng.uniform(2, 30, n)
    s = rng.uniform(0, 1, (n, 4))
    return np.stack(
        [x0 + s[:, 0] * w, y0, x0 + w, y0 + s[:, 1] * h, x0 + w - s[:, 2] * w, y0 + h, x0, y0 + h - s[:, 3] * h], 1
    )


def _shapely_iou(a, b):
    pa, pb = shapely.Polygon(a.reshape(4, 2)), shapely.Polygon(b.reshape(4, 2))
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def test_runner_uses_the_package_geometry_and_image_files(detect):
    # one implementation: the runner loads the package's own files by path (no TensorFlow)
    assert os.path.samefile(detect.geometry.__file__, os.path.join(REPO, "dked_tf", "ops", "iou.py"))
    assert os.path.samefile(detect.images.__file__, os.path.join(REPO, "dked_tf", "data", "images.py"))


def test_intersection_area_matches_shapely(detect, rng):
    a = np.concatenate([_rectangles(rng, 300), _orc_quads(rng, 300)])
    b = np.concatenate([_rectangles(rng, 300), _orc_quads(rng, 300)])
    b[:20] = a[:20]  # identical
    b[20:40] = a[20:40].reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8)  # identical, other orientation
    b[40:60] = a[40:60] + 1000.0  # disjoint
    corners = a[60:80].reshape(-1, 4, 2)
    centres = corners.mean(1, keepdims=True)
    b[60:80] = ((corners - centres) * 0.5 + centres).reshape(-1, 8)  # contained
    got = detect.geometry.quad_intersection_area(a, b)
    expected = [
        shapely.Polygon(x.reshape(4, 2)).intersection(shapely.Polygon(y.reshape(4, 2))).area for x, y in zip(a, b)
    ]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)
    assert (np.asarray(expected) > 0).sum() > 150


def test_iou_one_to_many_matches_shapely(detect, rng):
    boxes = np.concatenate([_rectangles(rng, 100, spread=20), _orc_quads(rng, 100)])
    got = detect.polygon_iou_one_to_many(boxes[0], boxes)
    expected = [_shapely_iou(boxes[0], other) for other in boxes]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert got[0] == pytest.approx(1.0)
    degenerate = np.array([0, 0, 10, 0, 10, 0, 0, 0], np.float64)  # zero area
    assert detect.polygon_iou_one_to_many(degenerate, boxes[:3]).tolist() == [0.0, 0.0, 0.0]


def test_nms_hand_case(detect):
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], np.float64)
    shifted = square + np.array([4, 0] * 4)  # IoU with square = 60 / 140 = 0.43
    far = square + 100
    polys = np.stack([shifted, square, far])
    scores = np.array([0.8, 0.9, 0.7])
    assert detect.rotated_nms(polys, scores, 0.5).tolist() == [1, 0, 2]
    assert detect.rotated_nms(polys, scores, 0.4).tolist() == [1, 2]
    assert detect.rotated_nms(polys, scores, 0.4, max_output=1).tolist() == [1]
    # other class: not suppressed
    assert detect.batched_rotated_nms(polys, scores, [0, 1, 0], 0.4).tolist() == [1, 0, 2]


def test_nms_equals_dked_tf_ops(detect, rng):
    nms = pytest.importorskip("dked_tf.ops.nms")
    for _trial in range(5):
        polys = np.concatenate([_rectangles(rng, 60, spread=40), _orc_quads(rng, 60)])
        scores = rng.permutation(len(polys)) / len(polys) + 0.001  # distinct
        classes = rng.integers(0, 3, len(polys))
        for threshold in (0.1, 0.3, 0.6):
            np.testing.assert_array_equal(
                detect.rotated_nms(polys, scores, threshold), nms.rotated_nms(polys, scores, threshold)
            )
            np.testing.assert_array_equal(
                detect.batched_rotated_nms(polys, scores, classes, threshold, max_output=25),
                nms.batched_rotated_nms(polys, scores, classes, threshold, max_output=25),
            )


def test_letterbox_by_hand(detect, rng):
    blocks = (rng.random((32, 64, 3)) * 255).astype(np.uint8)
    image = np.kron(blocks, np.ones((2, 2, 1), np.uint8))  # 64 x 128, constant 2x2 blocks
    letterboxed, scale, offset = detect.letterbox(image, 64)
    assert scale == 0.5 and offset.tolist() == [0.0, 16.0]
    np.testing.assert_allclose(letterboxed[16:48], blocks / 255.0, atol=1e-6)
    assert np.all(letterboxed[:16] == 0.5) and np.all(letterboxed[48:] == 0.5)


def test_rboxes_of_a_rotated_rectangle(detect):
    theta = 0.3
    u = np.array([np.cos(theta), np.sin(theta)]) * 20 / 2
    v = np.array([-np.sin(theta), np.cos(theta)]) * 8 / 2
    c = np.array([50.0, 40.0])
    poly = np.stack([c - u - v, c + u - v, c + u + v, c - u + v]).reshape(1, 8)
    np.testing.assert_allclose(detect.polygons_to_rboxes(poly)[0], [50, 40, 20, 8, theta], atol=1e-3)


# ----------------------------------------------------------------------------- end to end

# Four cells in letterboxed 64 x 64 input pixels: a box, a heavy overlap of it in the same class
# (suppressed), the same overlap in another class (kept), and a box under the score threshold.
CELL_POLYGONS = np.array(
    [
        [10, 20, 30, 20, 30, 40, 10, 40],
        [12, 20, 32, 20, 32, 40, 12, 40],
        [12, 20, 32, 20, 32, 40, 12, 40],
        [40, 30, 50, 30, 50, 44, 40, 44],
    ],
    np.float32,
)
CELL_SCORES = np.array([0.9, 0.8, 0.7, 0.01], np.float32)
CELL_CLASSES = np.array([0, 0, 1, 0], np.int32)


def _constant_tflite(path):
    tf = pytest.importorskip("tensorflow")
    from dked_tf.export.tflite import convert_function_to_tflite

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32, name="images")])
    def cells(images):
        zero = tf.reduce_mean(images) * 0.0  # keeps the input in the graph
        return {
            "polygons": tf.constant(CELL_POLYGONS)[None] + zero,
            "scores": tf.constant(CELL_SCORES)[None] + zero,
            "classes": tf.constant(CELL_CLASSES)[None],
        }

    with open(path, "wb") as f:
        f.write(convert_function_to_tflite(cells))
    sidecar = {
        "image_size": 64,
        "class_names": ["ship", "boat"],
        "score_threshold": 0.05,
        "iou_threshold": 0.3,
        "max_detections": 10,
        "nms": "host",
        "input_name": "images",
        "outputs": {"polygons": "polygons", "scores": "scores", "classes": "classes"},
    }
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(sidecar, f)


def test_detect_cli_without_tensorflow(tmp_path):
    model = str(tmp_path / "constant.tflite")
    _constant_tflite(model)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "scene.png"), np.zeros((64, 128, 3), np.uint8))  # scale 0.5, offset (0, 16)
    out = tmp_path / "out"
    env = {**os.environ, "DKED_TFLITE_CHECK_NO_TF": "1"}
    result = subprocess.run(
        [sys.executable, DETECT_PY, "--model", model, "--source", str(images), "--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow_imported=False" in result.stdout
    assert (out / "scene.png").exists()
    ship = (out / "Task1_ship.txt").read_text().split("\n")
    boat = (out / "Task1_boat.txt").read_text().split("\n")
    ship, boat = [line for line in ship if line], [line for line in boat if line]
    assert len(ship) == 1 and len(boat) == 1

    def parse(line):
        fields = line.split()
        return fields[0], float(fields[1]), np.array(fields[2:], np.float64)

    image_id, score, poly = parse(ship[0])
    assert image_id == "scene" and score == pytest.approx(0.9)
    np.testing.assert_allclose(poly, [20, 8, 60, 8, 60, 48, 20, 48], atol=0.06)  # (p - (0, 16)) / 0.5
    image_id, score, poly = parse(boat[0])
    assert score == pytest.approx(0.7)
    np.testing.assert_allclose(poly, [24, 8, 64, 8, 64, 48, 24, 48], atol=0.06)
