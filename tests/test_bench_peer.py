"""`dked-tf bench peer`: the detector its latency rows time (no Ultralytics needed here)."""

import numpy as np
import pytest
from scoring_cases import rect, ship_record

from dked_tf.bench.peer import latency_detector, ranking_columns
from dked_tf.experiment.saving import save_detector
from dked_tf.models.presets import build_detector


def test_latency_detector_is_the_saved_architecture_with_its_weights(tmp_path):
    trained = build_detector("lodet_mobilenetv2_t", 2, 64, min_stride=4)
    run = save_detector(
        trained,
        str(tmp_path / "student"),
        architecture="lodet_mobilenetv2_t",
        class_names=["a", "b"],
        image_size=64,
        overrides={"min_stride": 4},
    )
    timed = latency_detector(run, 2, 96)
    assert timed.strides == (4, 8, 16)
    image = np.random.default_rng(0).uniform(0, 1, (1, 96, 96, 3)).astype(np.float32)
    got = timed(image, training=False)["head"]
    want = trained(image, training=False)["head"]
    assert [tuple(h.shape) for h in got] == [(1, 24, 24, 12), (1, 12, 12, 12), (1, 6, 6, 12)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5)


def test_latency_detector_builds_a_preset_and_checks_the_classes(tmp_path):
    assert latency_detector("lodet_mobilenetv2_t", 3, 64).strides == (8, 16, 32)
    run = save_detector(
        build_detector("lodet_mobilenetv2_t", 2, 64),
        str(tmp_path / "two"),
        architecture="lodet_mobilenetv2_t",
        class_names=["a", "b"],
        image_size=64,
    )
    with pytest.raises(SystemExit, match="2 classes, the data 5"):
        latency_detector(run, 5, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.json"):
        latency_detector(str(tmp_path / "empty"), 2, 64)


def test_ranking_columns_of_the_peer_table():
    ships = [rect(50, 50, 40, 8, 0.0), rect(150, 50, 40, 8, 0.0)]
    record = ship_record("a", ships, size=200)
    detections = {
        "ship": [
            ("a", 0.9, rect(120, 150, 30, 6, 0.0)),  # background, ranked first
            ("a", 0.8, ships[1]),  # the true positive
            ("a", 0.7, rect(50, 53, 40, 8, 0.0)),  # 3 px across an 8 px hull: IoU 5/11, a near miss
        ]
    }
    got = ranking_columns(detections, [record], ["ship"])
    # two ground truths: the first two detections are classified
    assert got == {
        "first_tp": 2,
        "p_at_10": 1 / 3,
        "top_tp_pct": 50.0,
        "top_near_miss_pct": 0.0,
        "top_background_pct": 50.0,
    }
    assert ranking_columns({"ship": []}, [record], ["ship"]) == {"first_tp": None}
