"""evaluation.box_errors on hand-built boxes: every expected figure computed by hand."""

import numpy as np
import pytest
from scoring_cases import rect, ship_record

from dked_tf.evaluation.box_errors import box_errors


def test_each_error_measured_and_undone_by_its_own_fix():
    theta = np.deg2rad(30.0)
    u, v = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
    truths = [
        rect(50, 50, 40, 8, theta),  # detected 2.5x too wide: IoU 8/20 = 0.4
        rect(120, 50, 40, 8, theta),  # detected 4 px (half a width) off across the axis
        rect(50, 140, 40, 8, theta),  # detected turned by 20 degrees
        rect(150, 150, 40, 8, 0.0),  # not detected
        rect(100, 100, 30, 6, 0.0),  # difficult: not counted
    ]
    shifted = np.array([120.0, 50.0]) + 4.0 * v
    detections = {
        "ship": [
            ("a", 0.9, rect(50, 50, 40, 20, theta)),
            ("a", 0.2, rect(50, 50, 40, 8, theta)),  # exact but lower score: not the object's own
            ("a", 0.8, rect(shifted[0], shifted[1], 40, 8, theta)),
            ("a", 0.7, rect(50, 140, 40, 8, theta + np.deg2rad(20.0))),  # IoU 0.40 (shapely)
            ("a", 0.6, rect(150, 30, 40, 8, 0.0)),  # far from everything
        ]
    }
    record = ship_record("a", truths, difficult=[False, False, False, False, True], size=200)
    got = box_errors(detections, [record], ["ship"])
    assert got["ground_truths"] == 4
    assert got["found"] == pytest.approx(3 / 4)
    # IoUs of the three: 0.4; shifted by w/2 across: (8 - 4) / (8 + 4) = 1/3; turned: below 0.5
    assert got["passed"] == 0.0
    assert got["width_ratio_median"] == pytest.approx(1.0)  # 2.5, 1, 1
    assert got["length_ratio_median"] == pytest.approx(1.0)
    assert got["angle_error_median"] == pytest.approx(0.0, abs=1e-4)  # 0, 0, 20
    assert got["centre_across_median"] == pytest.approx(0.0, abs=1e-4)  # 0, 0.5, 0
    assert got["centre_along_median"] == pytest.approx(0.0, abs=1e-4)
    # each fix repairs exactly its own object
    assert got["passed_if_exact"]["width"] == pytest.approx(1 / 3)
    assert got["passed_if_exact"]["centre_across"] == pytest.approx(1 / 3)
    assert got["passed_if_exact"]["angle"] == pytest.approx(1 / 3)
    assert got["passed_if_exact"]["length"] == 0.0
    assert got["passed_if_exact"]["centre_along"] == 0.0
    assert u @ v == pytest.approx(0.0)


def test_medians_signs_and_units():
    # one object, detection 20 % longer, 4 px along the axis (0.1 lengths), 1 px across (1/8 widths)
    truth = rect(100, 100, 40, 8, np.deg2rad(-60.0))
    theta = np.deg2rad(-60.0)
    u, v = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
    centre = np.array([100.0, 100.0]) - 4.0 * u + 1.0 * v
    detection = rect(centre[0], centre[1], 48, 8, theta + np.pi)  # same axis, opposite direction
    got = box_errors({"ship": [("b", 0.5, detection)]}, [ship_record("b", [truth], size=200)], ["ship"])
    assert got["found"] == 1.0
    assert got["length_ratio_median"] == pytest.approx(1.2, rel=1e-5)
    assert got["width_ratio_median"] == pytest.approx(1.0)
    assert got["angle_error_median"] == pytest.approx(0.0, abs=1e-4)
    assert got["centre_along_median"] == pytest.approx(0.1, rel=1e-4)
    assert got["centre_across_median"] == pytest.approx(1 / 8, rel=1e-4)


def test_nothing_found():
    got = box_errors({"ship": []}, [ship_record("c", [rect(50, 50, 20, 5, 0.0)], size=200)], ["ship"])
    assert got == {"ground_truths": 1, "found": 0.0, "passed": None, "passed_if_exact": None}
