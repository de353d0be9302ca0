"""`dked-tf predict` and the device runner `tflite/detect.py` with bad inputs (issue 15, part B):
an unreadable image among good ones, two inputs with the same file name, tiles that would step
by one pixel, a large image squashed to the model input, a missing or non-TFLite model. A stub
stands in for the network (one box per image), so these run in a second."""

import importlib.util
import os
import types

import cv2
import numpy as np
import pytest

from dked_tf.config import ConfigError
from dked_tf.data.images import unique_image_ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX = np.array([8, 8, 24, 8, 24, 24, 8, 24], np.float32)  # letterboxed input pixels


@pytest.fixture
def inputs(tmp_path, rng):
    """a/x.png and b/x.png (same file name), a/broken.jpg (truncated), c/y.jpg."""
    paths = {}
    for name, size in (("a/x.png", (64, 64)), ("b/x.png", (64, 64)), ("a/broken.jpg", (64, 64)), ("c/y.jpg", (48, 64))):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), (rng.random((*size, 3)) * 255).astype(np.uint8))
        paths[name] = str(path)
    data = open(paths["a/broken.jpg"], "rb").read()
    with open(paths["a/broken.jpg"], "wb") as handle:
        handle.write(data[: len(data) // 2])
    return paths


def task1_ids(path):
    with open(path) as handle:
        return [line.split()[0] for line in handle if line.strip()]


def test_unique_image_ids_by_hand(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "c" / "y.jpg", tmp_path / "c" / "y.png"]
    ids, renamed = unique_image_ids(paths + [paths[0]])
    assert ids == ["a/x", "b/x", "c/y.jpg", "c/y.png", "a/x"]
    assert sorted(renamed.values()) == ["a/x", "b/x", "c/y.jpg", "c/y.png"]
    assert unique_image_ids([tmp_path / "p q.png", tmp_path / "r.png"]) == (["p_q", "r"], {})


# ----------------------------------------------------------------------------- dked-tf predict


class StubDetector:
    """Stands in for an OrientedDetector: `BOX` with score 0.9, class 0, on every input."""

    def __call__(self, batch, training=False):
        return {"head": batch}

    def decode(self, head, score_threshold, iou_threshold, max_detections):
        count = int(head.shape[0])
        return {
            "polygons": np.tile(BOX, (count, 1, 1)),
            "scores": np.full((count, 1), 0.9, np.float32),
            "classes": np.zeros((count, 1), np.int32),
            "num_detections": np.ones(count, np.int32),
        }


def test_predict_skips_an_unreadable_image_and_keeps_ids_unique(inputs, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from dked_tf.experiment.inference import Detector
    from dked_tf.experiment.predict import predict_images

    out = tmp_path / "out"
    skipped = []
    paths = [inputs["a/x.png"], inputs["a/broken.jpg"], inputs["b/x.png"], inputs["c/y.jpg"]]
    detector = Detector(StubDetector(), ["ship", "boat"], 64)
    total = predict_images(detector, paths, str(out), verbose=0, skipped=skipped)
    err = capsys.readouterr().err
    assert total == 3 and skipped == [inputs["a/broken.jpg"]]
    assert f"warning: skipped an image that cannot be read: {inputs['a/broken.jpg']}: truncated" in err
    assert "their image ids are paths relative to their common folder: a/x, b/x" in err
    assert task1_ids(out / "Task1_ship.txt") == ["a/x", "b/x", "y"]
    assert task1_ids(out / "Task1_boat.txt") == []
    assert (out / "images" / "a" / "x.png").exists() and (out / "images" / "b" / "x.png").exists()
    assert not [name for name in os.listdir(out) if ".tmp" in name]  # atomic writes leave nothing


def test_predict_warns_when_a_large_image_is_squashed(tmp_path, rng, capsys):
    pytest.importorskip("tensorflow")
    from dked_tf.experiment.inference import Detector
    from dked_tf.experiment.predict import predict_images

    big = tmp_path / "big.png"
    cv2.imwrite(str(big), (rng.random((200, 300, 3)) * 255).astype(np.uint8))
    predict_images(Detector(StubDetector(), ["ship"], 64), [str(big)], str(tmp_path / "o1"), draw=False, verbose=0)
    err = capsys.readouterr().err
    assert "big.png is 300x200 px and is shrunk 4.7x to the model's 64 px input" in err
    assert "--tile-size 64" in err and len(err.strip().splitlines()) == 1
    tiled = Detector(StubDetector(), ["ship"], 64, tile_size=64)
    predict_images(tiled, [str(big)], str(tmp_path / "o2"), draw=False, verbose=0)
    assert "shrunk" not in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"overlap \(64 px\) must be smaller than the tile size \(64 px\)"):
        Detector(StubDetector(), ["ship"], 64, tile_size=64, overlap=64)


def test_predict_command_rejects_overlap_before_loading_the_model(tmp_path):
    pytest.importorskip("tensorflow")
    from dked_tf.commands import predict

    args = types.SimpleNamespace(inputs=[str(tmp_path)], model=str(tmp_path / "no_model"), tile_size=512, overlap=600)
    with pytest.raises(ConfigError, match=r"overlap \(600 px\) must be smaller than the tile size \(512 px\)"):
        predict.run(args)


# ----------------------------------------------------------------------------- tflite/detect.py


@pytest.fixture(scope="module")
def detect():
    spec = importlib.util.spec_from_file_location("detect_for_reliability", os.path.join(REPO, "tflite", "detect.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StubTFLiteDetector:
    class_names = ["ship"]
    timings = {}

    def detect(self, image):
        return {"polygons": BOX[None].astype(np.float64), "scores": np.array([0.9]), "classes": np.array([0])}


def test_detect_py_skips_an_unreadable_image(detect, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    skipped = []
    paths = [inputs["a/x.png"], inputs["a/broken.jpg"], inputs["b/x.png"]]
    results = detect.run_on_images(StubTFLiteDetector(), paths, str(out), verbose=0, skipped=skipped)
    assert [image_id for image_id, _ in results] == ["a/x", "b/x"] and skipped == [inputs["a/broken.jpg"]]
    assert f"skipped an image that cannot be read: {inputs['a/broken.jpg']}" in capsys.readouterr().err
    assert task1_ids(out / "Task1_ship.txt") == ["a/x", "b/x"]
    assert (out / "a" / "x.png").exists() and not [name for name in os.listdir(out) if ".tmp" in name]


def test_detect_py_names_a_missing_or_wrong_model(detect, tmp_path, capsys):
    missing = tmp_path / "student.tflite"
    assert detect.main(["--model", str(missing), "--source", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"detect.py: error: {missing}: no such .tflite model file"
    wrong = tmp_path / "weights.h5"
    wrong.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "weights.json").write_text("{}")
    assert detect.main(["--model", str(wrong), "--source", str(tmp_path)]) == 2
    assert f"{wrong}: not a TFLite model" in capsys.readouterr().err
