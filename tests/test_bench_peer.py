"""`dked-tf bench peer`: the detector its latency rows time (no Ultralytics needed here)."""

import numpy as np
import pytest

from dked_tf.bench.peer import latency_detector
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
