"""evaluation.top_ranked on hand-built boxes: each detection's outcome is fixed by construction and
the overlaps that decide it are checked with shapely."""

import cv2
import numpy as np
from scoring_cases import rect, ship_record
from shapely.geometry import Polygon

from dked_tf import visualize
from dked_tf.data.records import ImageRecord
from dked_tf.evaluation.metrics import evaluate_detections
from dked_tf.evaluation.top_ranked import ranked_false_positives, top_ranked


def _iou(a, b):
    a, b = Polygon(np.reshape(a, (4, 2))), Polygon(np.reshape(b, (4, 2)))
    return a.intersection(b).area / a.union(b).area


SHIP_A = rect(60, 60, 40, 8, 0.3)
SHIP_B = rect(200, 60, 40, 8, 0.0)
SHIP_C = rect(60, 200, 40, 8, 1.2)  # difficult
SHIP_D = rect(200, 200, 40, 8, -0.5)  # in a second image, never detected
NEAR_B = rect(200, 63, 40, 8, 0.0)  # 3 px across a 8 px wide hull: IoU 5/11
FAR = rect(150, 250, 30, 6, 0.0)


def _case():
    records = [
        ship_record("one", [SHIP_A, SHIP_B, SHIP_C], [False, False, True]),
        ship_record("two", [SHIP_D], [False]),
    ]
    detections = {
        "ship": [
            ("one", 0.5, SHIP_C),  # rank 5: difficult
            ("one", 0.9, SHIP_A),  # rank 1: true positive
            ("one", 0.6, FAR),  # rank 4: background
            ("one", 0.8, SHIP_A),  # rank 2: duplicate of rank 1
            ("one", 0.7, NEAR_B),  # rank 3: near miss
            ("two", 0.4, SHIP_D),  # rank 6: true positive
        ]
    }
    return detections, records


def test_overlaps_of_the_construction():
    assert abs(_iou(NEAR_B, SHIP_B) - 5.0 / 11.0) < 1e-9
    assert max(_iou(FAR, ship) for ship in (SHIP_A, SHIP_B, SHIP_C)) == 0.0


def test_each_top_detection_gets_its_outcome():
    detections, records = _case()
    # three ground truths count (C is difficult): the top three are classified by default
    got = top_ranked(detections, records, ["ship"])
    assert got["ranked"] == 3
    assert got["true_positive"] == got["duplicate"] == got["near_miss"] == 1 / 3
    assert got["background"] == got["difficult"] == 0.0
    assert got["first_true_positive_rank"] == {"ship": 1}

    every = top_ranked(detections, records, ["ship"], count=10)
    assert every["ranked"] == 6
    assert every["true_positive"] == 2 / 6
    for outcome in ("duplicate", "near_miss", "background", "difficult"):
        assert every[outcome] == 1 / 6, outcome
    # precision as the PR curve has it: TP / (TP + FP), the difficult match left out
    assert every["precision_at"]["1"] == 1.0
    assert every["precision_at"]["5"] == 1 / 4
    assert every["precision_at"]["10"] == 2 / 5


def test_precision_agrees_with_the_evaluator_and_near_miss_follows_found_iou():
    detections, records = _case()
    every = top_ranked(detections, records, ["ship"], count=10)
    recall, precision = evaluate_detections(detections, records, ["ship"]).pr_curves["ship"]
    assert every["precision_at"]["10"] == precision[-1]
    assert recall[-1] == 2 / 3
    # above the near miss's IoU (5/11) it counts as background
    strict = top_ranked(detections, records, ["ship"], count=10, found_iou=0.5)
    assert strict["near_miss"] == 0.0 and strict["background"] == 2 / 6


def test_a_first_true_positive_further_down_and_no_detections():
    detections, records = _case()
    late = {"ship": [entry for entry in detections["ship"] if entry[1] != 0.9 and entry[1] != 0.8]}
    got = top_ranked(late, records, ["ship"], count=10)
    assert got["first_true_positive_rank"] == {"ship": 4}  # NEAR_B, FAR, C (difficult), then D
    assert got["precision_at"]["1"] == 0.0

    empty = top_ranked({"ship": []}, records, ["ship"])
    assert empty["ranked"] == 0 and empty["true_positive"] is None
    assert empty["first_true_positive_rank"] == {"ship": None}


def test_the_highest_false_positives_in_score_order():
    detections, records = _case()
    got = ranked_false_positives(detections, records, ["ship"], count=2)
    assert [(e["rank"], e["outcome"]) for e in got] == [(2, "duplicate"), (3, "near_miss")]
    assert abs(got[1]["iou"] - 5.0 / 11.0) < 1e-9
    np.testing.assert_allclose(got[1]["polygon"], NEAR_B)
    every = ranked_false_positives(detections, records, ["ship"], count=10)
    assert [e["outcome"] for e in every] == ["duplicate", "near_miss", "background"]  # the difficult match is no FP
    assert every[2]["iou"] == 0.0 and every[2]["image_id"] == "one"


def test_a_sheet_of_detections_shows_each_crop(tmp_path):
    image = np.zeros((300, 300, 3), np.uint8)
    image[50:70, 40:80] = 200
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), image)
    records = [ImageRecord(str(path), "one", 300, 300, np.array([SHIP_B]), np.zeros(1, np.int32), np.zeros(1, bool))]
    entries = [("one", rect(60, 60, 40, 20, 0.0), "#1 near"), ("one", FAR, "#2"), ("missing", FAR, "#3")]
    sheet = visualize.detection_sheet(records, entries, columns=2, tile=64)
    assert sheet.shape == (128, 128, 3) and sheet.dtype == np.uint8
    first = sheet[:64, :64]
    assert (first[..., 0] > 150).any()  # the bright patch under the first detection
    assert (sheet[64:, 64:] == 32).all()  # an unused tile stays background
    assert (sheet[64:, :64, 1] == 96).mean() > 0.9  # the unreadable image: a grey tile
    assert visualize.detection_sheet(records, []) is None
