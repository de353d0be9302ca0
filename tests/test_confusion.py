"""The detection confusion matrix (`dked_tf.evaluation.confusion`, Ultralytics' rules with polygon
IoU) on hand-computed cases, its picture, and `dked-tf evaluate --plots` writing it."""

import json
import os

import cv2
import numpy as np
import pytest

from dked_tf import visualize
from dked_tf.cli import main
from dked_tf.evaluation.confusion import confusion_matrix, match_one_to_one
from dked_tf.files import TEMPORARY_PREFIX


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def columns(rows):
    """rows: (image_id, score, polygon) -> the columnar form of load_detections."""
    return {
        "image_ids": [r[0] for r in rows],
        "scores": np.array([r[1] for r in rows], float),
        "polygons": np.array([r[2] for r in rows], float).reshape(-1, 8),
    }


def test_matching_is_ultralytics_greedy_not_optimal():
    # det 1 overlaps gt 1 (0.7) but prefers gt 0 (0.8), which det 0 takes (0.9): det 1 and gt 1
    # stay unmatched, as in Ultralytics (an optimal assignment would pair them)
    iou = np.array([[0.9, 0.8], [0.0, 0.7]])
    assert match_one_to_one(iou, 0.5).tolist() == [[0, 0]]
    # each side at most once, the higher IoU wins
    iou = np.array([[0.6, 0.0, 0.0], [0.9, 0.7, 0.0], [0.0, 0.55, 0.95]])
    assert sorted(match_one_to_one(iou, 0.5).tolist()) == [[1, 0], [2, 2]]


def test_matching_threshold_comparison_and_ties():
    iou = np.array([[0.5, 0.2]])
    assert match_one_to_one(iou, 0.5, ">").shape == (0, 2)
    assert match_one_to_one(iou, 0.5, ">=").tolist() == [[0, 0]]
    assert match_one_to_one(np.array([[0.8, 0.8], [0.8, 0.8]]), 0.5).tolist() == [[0, 0]]
    assert match_one_to_one(np.zeros((0, 3)), 0.5).shape == (0, 2)


CLASSES = ["plane", "ship"]
TRUTHS = {
    "a": (
        np.array([square(0, 0, 10, 10), square(20, 20, 30, 30), square(40, 40, 50, 50), square(60, 0, 80, 10)]),
        ["plane", "plane", "plane", "ship"],
        np.array([False, False, True, False]),
    ),
    "b": (np.array([square(0, 60, 10, 70), square(5, 5, 25, 15)]), ["harbor", "ship"], np.array([False, False])),
}
DETECTIONS = {
    "plane": columns(
        [
            ("a", 0.9, square(0, 0, 10, 10)),  # plane correct
            ("a", 0.8, square(0, 0, 10, 9.8)),  # duplicate: plane false positive
            ("a", 0.7, square(40, 40, 50, 50)),  # on a difficult plane
            ("b", 0.6, square(5, 5, 25, 15)),  # a ship called plane
            ("b", 0.25, square(0, 60, 10, 70)),  # not above the score threshold
            ("c", 0.5, square(0, 0, 5, 5)),  # an image without ground truth: false positive
        ]
    ),
    "ship": columns([("a", 0.3, square(60, 0, 80, 5))]),  # IoU 0.5 with the ship: matched only with >=
}


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(DETECTIONS, TRUTHS, CLASSES, iou_threshold=0.5, comparison=">")
    # rows predicted (plane, ship, background), columns true (plane, ship, background)
    expected = [
        [1, 1, 2],  # plane: 1 correct, 1 ship called plane, 2 false positives (duplicate, image c)
        [0, 0, 1],  # ship: its detection at IoU 0.5 does not pass "> 0.5": a false positive
        [1, 1, 0],  # missed: the plane at (20, 20), the ship of image a
    ]
    assert cm.matrix.tolist() == expected
    assert cm.labels == ["plane", "ship", "background"]
    cm = confusion_matrix(DETECTIONS, TRUTHS, CLASSES, iou_threshold=0.5, comparison=">=")
    assert cm.matrix.tolist() == [[1, 1, 2], [0, 1, 0], [1, 0, 0]]
    # counted, the difficult plane is matched by its detection
    cm = confusion_matrix(DETECTIONS, TRUTHS, CLASSES, iou_threshold=0.5, comparison=">=", difficult="count")
    assert cm.matrix.tolist() == [[2, 1, 2], [0, 1, 0], [1, 0, 0]]
    # a lower score threshold lets the 0.25 detection in: no ground truth of its class list there
    cm = confusion_matrix(DETECTIONS, TRUTHS, CLASSES, score_threshold=0.2)
    assert cm.matrix[0, 2] == 3
    normalized = cm.normalized()
    np.testing.assert_allclose(normalized.sum(axis=0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(normalized[:, 0], [1 / 2, 0, 1 / 2])


def test_confusion_matrix_picture_is_written_atomically(tmp_path):
    cm = confusion_matrix(DETECTIONS, TRUTHS, CLASSES)
    for normalize in (False, True):
        path = tmp_path / f"cm_{normalize}.png"
        assert visualize.plot_confusion_matrix(cm.matrix, cm.labels, str(path), normalize=normalize) == str(path)
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100
    assert not [name for name in os.listdir(tmp_path) if name.startswith(TEMPORARY_PREFIX)]
    with pytest.raises(ValueError, match="3 labels"):
        visualize.plot_confusion_matrix(np.zeros((2, 2)), cm.labels, str(tmp_path / "bad.png"))


def _write_labeltxt(path, objects):
    with open(path, "w") as handle:
        for poly, name, difficult in objects:
            handle.write(" ".join(f"{v:g}" for v in poly) + f" {name} {int(difficult)}\n")


def test_evaluate_plots_writes_the_confusion_matrix(tmp_path, capsys):
    gt, det = tmp_path / "labelTxt", tmp_path / "results"
    gt.mkdir()
    det.mkdir()
    for image_id, (polygons, names, difficult) in TRUTHS.items():
        _write_labeltxt(gt / f"{image_id}.txt", zip(polygons, names, difficult))
    for name, cols in DETECTIONS.items():
        with open(det / f"Task1_{name}.txt", "w") as handle:
            for image_id, score, poly in zip(cols["image_ids"], cols["scores"], cols["polygons"]):
                if image_id in TRUTHS:  # the devkit scores only images with ground truth
                    handle.write(f"{image_id} {float(score)!r} " + " ".join(repr(float(v)) for v in poly) + "\n")
    plots = tmp_path / "plots"
    code = main(
        ["evaluate", "--format", "dota", "--gt-dir", str(gt), "--det-dir", str(det), "--classes", "plane,ship"]
        + ["--plots", str(plots), "--comparison", ">="]
    )
    assert code == 0, capsys.readouterr().err
    for name in ("pr_curves.png", "confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert cv2.imread(str(plots / name)) is not None, name
    written = json.loads((plots / "confusion_matrix.json").read_text())
    assert written["labels"] == ["plane", "ship", "background"]
    assert written["matrix"] == [[1, 1, 1], [0, 1, 0], [1, 0, 0]]  # image c is not in the evaluation
    assert (written["iou_threshold"], written["comparison"], written["score_threshold"]) == (0.5, ">=", 0.25)
