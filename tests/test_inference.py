"""`dked_tf.Detector`, the public inference API, and one-file `.keras` models (issue 17, items 6
and 7).

Detections in the images' own pixels are checked against the network's raw decode on
hand-letterboxed inputs, against a 2x enlarged copy of an image, against OpenCV's minimum-area
rectangles, and against the Task1 files `dked-tf predict` writes for the same images (a padded
one and a tiled one) from a `.keras` file `dked-tf export --format keras` wrote."""

import json
import os
import zipfile

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from dked_tf import Detections, Detector, cli  # noqa: E402
from dked_tf.data.augment import LETTERBOX_PAD_VALUE  # noqa: E402
from dked_tf.experiment.saving import KERAS_META_ENTRY, load_detector, save_detector, save_keras_file  # noqa: E402
from dked_tf.files import CorruptFileError  # noqa: E402
from dked_tf.models.detector import OrientedDetector  # noqa: E402

S = 64
CLASSES = ("ship", "boat")
SCORE = 0.2


@pytest.fixture(scope="module")
def model(tiny_detector):
    return tiny_detector("lodet_mobilenetv2_t", len(CLASSES), seed=5, randomize=True, forward_size=S)


@pytest.fixture(scope="module")
def images():
    """Images with structure (smoothed noise): 64x64, 64x48 (letterboxed with padding) and
    100x150 (tiled by 96 px tiles)."""
    rng = np.random.default_rng(3)

    def image(height, width):
        noise = rng.random((height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        return (cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)

    return {"square": image(S, S), "wide": image(48, S), "large": image(100, 150)}


def raw_detections(model, canvas):
    """The network's own decode of one float image [S, S, 3] in [0, 1], no letterbox involved."""
    out = model.decode(model(canvas[None], training=False)["head"], score_threshold=SCORE, iou_threshold=0.3)
    n = int(out["num_detections"][0])
    return out["polygons"][0, :n].numpy(), out["scores"][0, :n].numpy(), out["classes"][0, :n].numpy()


def test_detections_are_in_the_images_own_pixels(model, images):
    detector = Detector(model, CLASSES, S, score_threshold=SCORE)
    square = images["square"]
    result = first = detector(square)
    assert isinstance(result, Detections) and len(result) > 0 and result.image_shape == (S, S)
    # an S x S image is the network input itself (scale 1, no padding)
    polygons, scores, classes = raw_detections(model, square.astype(np.float32) / 255)
    np.testing.assert_allclose(result.polygons, polygons, atol=1e-3)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(result.classes, classes)
    # 64 x 48: scale 1, 8 rows of padding above and below (built by hand here)
    wide = images["wide"]
    canvas = np.full((S, S, 3), LETTERBOX_PAD_VALUE, np.float32)
    canvas[8:56] = wide.astype(np.float32) / 255
    polygons, scores, _ = raw_detections(model, canvas)
    result = detector(wide)
    assert len(result) > 0 and result.image_shape == (48, S)
    np.testing.assert_allclose(result.polygons, polygons - np.tile([0.0, 8.0], 4), atol=1e-3)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    # the square image enlarged 2x (each pixel a 2x2 block) shrinks back to the same input:
    # the same detections at twice the coordinates
    big = square.repeat(2, axis=0).repeat(2, axis=1)
    enlarged = detector(big)
    assert enlarged.image_shape == (2 * S, 2 * S) and len(enlarged) == len(first)
    np.testing.assert_allclose(enlarged.polygons, 2 * first.polygons, atol=2e-3)
    np.testing.assert_allclose(enlarged.scores, first.scores, atol=1e-4)


def test_rboxes_are_the_minimum_area_rectangles_and_labels_name_classes(model, images):
    result = Detector(model, CLASSES, S, score_threshold=SCORE)(images["wide"])
    assert result.rboxes.shape == (len(result), 5) and result.rboxes.dtype == np.float32
    for polygon, rbox in zip(result.polygons, result.rboxes):
        (cx, cy), (w, h), _ = cv2.minAreaRect(polygon.reshape(4, 2))
        np.testing.assert_allclose(rbox[:2], [cx, cy], atol=1e-2)
        np.testing.assert_allclose(sorted(rbox[2:4]), sorted([w, h]), atol=1e-2)
        assert rbox[2] >= rbox[3] and -np.pi / 2 <= rbox[4] < np.pi / 2
    assert result.labels == [CLASSES[c] for c in result.classes] and result.class_names == CLASSES
    assert np.all(np.diff(result.scores) <= 0)


def test_a_list_gives_a_list_and_bad_inputs_are_named(model, images, tmp_path):
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), cv2.cvtColor(images["wide"], cv2.COLOR_RGB2BGR))
    detector = Detector(model, CLASSES, S, score_threshold=SCORE, batch_size=2)
    from_path, from_array, square = detector([str(path), images["wide"], images["square"]])
    # the same pixels in two batch positions: equal up to the float32 rounding of the convolution
    # kernels, which on some CPUs differs by batch position (2.7e-5 px on an AVX2-only EPYC)
    np.testing.assert_allclose(from_path.polygons, from_array.polygons, rtol=0, atol=1e-3)
    np.testing.assert_allclose(from_path.scores, from_array.scores, rtol=0, atol=1e-5)
    stacked = detector(np.stack([images["square"], images["square"]]))
    assert isinstance(stacked, list) and len(stacked) == 2
    for result in stacked:  # the same image alone in its batch, or beside another one
        np.testing.assert_allclose(result.scores, square.scores, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing.png: no such image file"):
        detector(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match=r"uint8 RGB \[H, W, 3\].*float32 \[64, 64, 3\]"):
        detector(images["square"].astype(np.float32))
    with pytest.raises(TypeError, match="a path or a uint8 RGB numpy array"):
        detector(3)
    with pytest.raises(ValueError, match="1 class names for a model of 2 classes"):
        Detector(model, ["ship"], S)


def _task1(folder):
    """{image_id: sorted [(class, score, polygon [8])]} from the Task1 files of `folder`."""
    rows = {}
    for name in CLASSES:
        with open(os.path.join(folder, f"Task1_{name}.txt")) as handle:
            for line in handle:
                image_id, score, *poly = line.split()
                rows.setdefault(image_id, []).append((name, float(score), np.array(poly, np.float64)))
    return {k: sorted(v, key=lambda r: (-r[1], r[0])) for k, v in rows.items()}


def _as_rows(result):
    return sorted(
        ((label, float(s), p.astype(np.float64)) for label, s, p in zip(result.labels, result.scores, result.polygons)),
        key=lambda r: (-r[1], r[0]),
    )


def test_detector_gives_what_dked_tf_predict_writes_from_a_keras_file(model, images, tmp_path, capsys):
    """A run folder becomes one file (`dked-tf export --format keras`); `dked-tf predict` on that
    file (Task1 files) and `Detector.load` on the run folder give the same detections, in
    original pixels, for a padded image and a tiled one (the run's tile size, 96 px, travels
    inside the file)."""
    run = str(tmp_path / "run")
    save_detector(model, run, architecture="lodet_mobilenetv2_t", class_names=CLASSES, image_size=S, tile_size=96)
    export = ["export", "--weights", run, "--format", "keras", "--quiet", "--out"]
    assert cli.main(export + [str(tmp_path / "m.onnx")]) == 2
    assert "must end with .keras" in capsys.readouterr().err
    one_file = str(tmp_path / "m.keras")
    assert cli.main(export + [one_file]) == 0
    paths = []
    for name in ("wide", "large"):
        paths.append(str(tmp_path / "images" / f"{name}.png"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        cv2.imwrite(paths[-1], cv2.cvtColor(images[name], cv2.COLOR_RGB2BGR))
    out = tmp_path / "pred"
    argv = ["predict", str(tmp_path / "images"), "--model", one_file, "--out", str(out), "--no-draw", "--verbose", "0"]
    assert cli.main(argv + ["--score-threshold", str(SCORE), "--batch-size", "8"]) == 0
    written = _task1(out)
    detector = Detector.load(run, score_threshold=SCORE, batch_size=8)
    assert detector.tile_size == 96 and len(detector.windows(images["large"])) > 1
    results = detector(paths)
    assert sum(len(r) for r in results) > 0
    for path, result in zip(paths, results):
        image_id = os.path.splitext(os.path.basename(path))[0]
        expected = written.get(image_id, [])
        assert len(expected) == len(result), image_id
        for (name, score, poly), (label, our_score, our_poly) in zip(expected, _as_rows(result)):
            assert name == label and score == pytest.approx(our_score, abs=1e-6)
            np.testing.assert_allclose(poly, our_poly, atol=1e-3)
    height, width = images["large"].shape[:2]
    large = results[paths.index(str(tmp_path / "images" / "large.png"))]
    assert large.image_shape == (height, width) and large.polygons[:, 0::2].max() > 96  # past the first tile


# ----------------------------------------------------------------------------- one-file models


def test_keras_file_holds_the_facts_and_the_weights(model, tmp_path):
    path = str(tmp_path / "models" / "student.keras")
    assert save_keras_file(model, path, class_names=CLASSES, image_size=S, tile_size=96, role="student") == path
    with zipfile.ZipFile(path) as archive:
        assert {"config.json", "metadata.json", "model.weights.h5", KERAS_META_ENTRY} <= set(archive.namelist())
    assert os.listdir(tmp_path / "models") == ["student.keras"]  # written atomically: no temporary left
    # Detector.load reads it with keras.saving.load_model, like any .keras file
    detector = Detector.load(path, score_threshold=SCORE)
    meta = detector.meta
    assert meta["class_names"] == list(CLASSES) and meta["image_size"] == S and meta["num_classes"] == 2
    assert meta["tile_size"] == 96 and meta["role"] == "student" and meta["architecture"] == "lodet_mobilenetv2_t"
    assert isinstance(detector.model, OrientedDetector) and detector.model is not model
    assert detector.class_names == CLASSES and detector.image_size == S and detector.tile_size == 96
    assert detector.model.get_config() == model.get_config()
    for ours, theirs in zip(detector.model.weights, model.weights):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_a_keras_file_that_keras_wrote_alone_loads_with_numbered_classes(model, tmp_path):
    path = tmp_path / "plain.keras"
    model.save(path)
    detector = Detector.load(path)
    assert isinstance(detector.model, OrientedDetector) and detector.tile_size == 0
    assert detector.class_names == ("class0", "class1") and detector.image_size == model.image_size


def test_bad_keras_files_are_named(model, tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(FileNotFoundError, match="missing.keras: no such .keras model file"):
        load_detector(str(missing))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(CorruptFileError, match=r"garbage.keras is not a .keras model file \(not a zip archive"):
        load_detector(str(garbage))
    empty_zip = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CorruptFileError, match="empty.keras cannot be read as a Keras model"):
        load_detector(str(empty_zip))
    with pytest.raises(ValueError, match="needs the .keras extension"):
        save_keras_file(model, str(tmp_path / "student.h5"), class_names=CLASSES, image_size=S)
    with pytest.raises(ValueError, match="1 class names for a model of 2 classes"):
        save_keras_file(model, str(tmp_path / "student.keras"), class_names=["ship"], image_size=S)
    assert not (tmp_path / "student.keras").exists()


def test_the_recipe_exports_the_distilled_student_as_one_file(model, tmp_path):
    from dked_tf.config import preset_config
    from dked_tf.experiment.recipe import Recipe

    cfg = preset_config("smoke")
    cfg.export.saved_model = cfg.export.tflite = False
    recipe = Recipe(cfg, str(tmp_path / "run"), seeds=[0], verbose=0)
    save_detector(
        model,
        recipe.checkpoint("student_dked", 0),
        architecture="lodet_mobilenetv2_t",
        class_names=CLASSES,
        image_size=S,
        tile_size=0,
        role="student",
    )
    recipe.export_stage()
    path = tmp_path / "run" / "export" / "student_dked.keras"
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read(KERAS_META_ENTRY))
    assert meta["class_names"] == list(CLASSES) and meta["image_size"] == S and meta["role"] == "student"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["export"]["keras"]["path"] == str(path) and results["export"]["keras"]["megabytes"] > 0
