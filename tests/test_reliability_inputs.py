"""Bad input files (issue 15, part B): truncated and mutated images, TIFF, degenerate and
out-of-image ground truth, duplicate image-set ids, non-UTF-8 and short lines for `dked-tf
evaluate`, its option checks. Every file here is written in its real format (OpenCV-encoded
images, labelTxt, HRSC2016 XML, Task1) and then damaged byte by byte."""

import json
import os
import time

import cv2
import numpy as np
import pytest

from dked_tf.cli import main
from dked_tf.data.dota import parse_dota_label, read_dota, read_task1_file
from dked_tf.data.hrsc import read_hrsc, write_hrsc_xml
from dked_tf.data.images import image_file_problem, read_image_rgb
from dked_tf.data.records import (
    OUTSIDE_IMAGE,
    AnnotationError,
    ImageRecord,
    Problems,
    check_image_file,
    polygon_problems,
    read_imageset,
)
from dked_tf.evaluation.metrics import evaluate_detections
from dked_tf.ops.iou import SELF_INTERSECTING, VALID, ZERO_AREA


def photo(rng, height=96, width=128):
    """A smooth random image (compresses like a photo, not like noise)."""
    return cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (7, 7), 2)


@pytest.fixture
def images(tmp_path, rng):
    """Real JPEG, PNG, BMP and TIFF files of one image, encoded by OpenCV."""
    image = photo(rng)
    paths = {}
    for ext in ("jpg", "png", "bmp", "tif"):
        paths[ext] = str(tmp_path / f"scene.{ext}")
        assert cv2.imwrite(paths[ext], image)
    return image, paths


# ----------------------------------------------------------------------------- image files


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp"])
def test_every_truncation_of_an_image_is_named(images, tmp_path, ext):
    _, paths = images
    data = open(paths[ext], "rb").read()
    assert image_file_problem(paths[ext]) is None
    cut = str(tmp_path / f"cut.{ext}")
    # fuzz: cut the file at 40 lengths spread over it (also inside the headers)
    for length in np.unique(np.linspace(1, len(data) - 1, 40).astype(int)):
        with open(cut, "wb") as handle:
            handle.write(data[:length])
        with pytest.raises(AnnotationError, match=rf"cut\.{ext}: (truncated|corrupt)"):
            check_image_file(cut)
        with pytest.raises(ValueError, match=rf"cut\.{ext}"):
            read_image_rgb(cut)


def test_whole_images_with_trailing_bytes_and_tiff_pass(images, tmp_path):
    image, paths = images
    for path in paths.values():
        assert image_file_problem(path) is None
    # a JPEG followed by other data (phones append a video after the end-of-image marker)
    motion = str(tmp_path / "motion.jpg")
    with open(motion, "wb") as handle:
        handle.write(open(paths["jpg"], "rb").read() + os.urandom(5000))
    assert image_file_problem(motion) is None
    # a PNG with bytes after its IEND chunk is whole too
    padded = str(tmp_path / "padded.png")
    with open(padded, "wb") as handle:
        handle.write(open(paths["png"], "rb").read() + b"\0" * 100)
    assert image_file_problem(padded) is None
    # a valid TIFF is read, not called corrupt
    np.testing.assert_array_equal(read_image_rgb(paths["tif"]), image[..., ::-1])
    assert "corrupt image: not a BMP" in image_file_problem(_write(tmp_path / "x.png", b"GIF7" + b"\0" * 40))
    assert image_file_problem(_write(tmp_path / "empty.png", b"")) == "image file is empty"


def _write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def test_mutated_images_are_read_or_named(images, tmp_path, rng):
    """Fuzz: random byte flips inside each file. The readers either read an image or raise
    ValueError naming the file; nothing else escapes."""
    _, paths = images
    for ext, path in paths.items():
        data = bytearray(open(path, "rb").read())
        for trial in range(12):
            mutated = bytearray(data)
            for position in rng.integers(0, len(data), 8):
                mutated[position] = int(rng.integers(0, 256))
            target = _write(tmp_path / f"m{trial}.{ext}", bytes(mutated))
            try:
                image = read_image_rgb(target)
            except ValueError as error:
                assert target in str(error)
            else:
                assert image.ndim == 3 and image.shape[2] == 3


def test_check_cost_per_image_stays_small(images):
    """The default check reads a few bytes: well under a millisecond per image here."""
    _, paths = images
    start = time.perf_counter()
    for _ in range(200):
        for ext in ("jpg", "png", "bmp"):
            assert image_file_problem(paths[ext]) is None
    per_image = (time.perf_counter() - start) / 600
    assert per_image < 2e-3, per_image


def test_pipeline_names_a_file_that_fails_to_decode(images, tmp_path):
    tf = pytest.importorskip("tensorflow")
    from dked_tf.data.pipeline import build_dataset

    image, paths = images
    box = dict(polygons=[[10, 10, 40, 10, 40, 30, 10, 30]], classes=[0], difficult=[False])
    good = ImageRecord(paths["png"], "a", 128, 96, **box)
    tiff = ImageRecord(paths["tif"], "b", 128, 96, **box)
    batches = list(build_dataset([good, tiff], 64, 2, training=False))
    # the TIFF is decoded (by OpenCV) to the same pixels as the PNG
    np.testing.assert_array_equal(batches[0][0][0].numpy(), batches[0][0][1].numpy())
    broken = str(tmp_path / "broken.png")
    with open(broken, "wb") as handle:  # damaged after the readers checked it
        handle.write(open(paths["png"], "rb").read()[:300])
    bad = ImageRecord(broken, "c", 128, 96, **box)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"broken\.png: cannot decode the image: truncated PNG"):
        list(build_dataset([good, bad], 64, 2, training=False))


# ----------------------------------------------------------------------------- polygons

# x1 y1 ... x4 y4 of a 200 x 100 image: fine, one point, collinear, bow-tie, far outside,
# entirely outside (just right of the image), touching the border (fine)
POLYGONS = [
    ("10 10 50 10 50 30 10 30", VALID),
    ("20 20 20 20 20 20 20 20", ZERO_AREA),
    ("0 0 10 5 20 10 30 15", ZERO_AREA),
    ("60 10 90 40 90 10 60 40", SELF_INTERSECTING),
    ("100 10 900 10 900 30 100 30", OUTSIDE_IMAGE),
    ("205 10 230 10 230 30 205 30", OUTSIDE_IMAGE),
    ("-5 -5 20 -5 20 20 -5 20", VALID),
]


def test_polygon_problems_by_hand():
    polygons = np.array([[float(v) for v in text.split()] for text, _ in POLYGONS])
    assert polygon_problems(polygons, 200, 100).tolist() == [code for _, code in POLYGONS]
    # without an image size, only the geometry is judged
    assert polygon_problems(polygons).tolist()[4:] == [VALID, VALID, VALID]


@pytest.fixture
def dota_split(tmp_path):
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "images").mkdir()
    lines = ["imagesource:GoogleEarth", "gsd:0.5"] + [f"{text} plane 0" for text, _ in POLYGONS]
    (tmp_path / "labelTxt" / "P0001.txt").write_text("\n".join(lines) + "\n")
    cv2.imwrite(str(tmp_path / "images" / "P0001.png"), np.zeros((100, 200, 3), np.uint8))
    return tmp_path


def test_readers_report_degenerate_ground_truth_and_training_drops_it(dota_split):
    with pytest.warns(UserWarning, match=r"5 ground-truth polygons are no usable object \(2 zero area, 1 self-inter"):
        (record,), info = read_dota(dota_split, classes="dota1.0")
    assert info.bad_polygons == {"zero area": 2, "self-intersecting": 1, "outside the image": 2}
    assert info.first_bad_polygon.endswith("P0001.txt:4 (zero area)")  # line 4: after 2 headers
    assert record.num_objects == 7 and record.extra["line"].tolist() == [3, 4, 5, 6, 7, 8, 9]
    pytest.importorskip("tensorflow")
    from dked_tf.data.pipeline import build_dataset

    with pytest.warns(UserWarning, match=r"dropped from training: 5 ground-truth polygons.*P0001\.txt:4"):
        dataset = build_dataset([record], 64, 1, training=True, augment=False, seed=0)
    _, targets = next(iter(dataset))
    assert int(targets["weights"].numpy().sum()) == 2  # the fine polygon and the one at the border
    assert record.num_objects == 7  # the records themselves (what evaluation scores) keep all


def test_evaluation_keeps_degenerate_ground_truth_like_the_devkit_and_counts_it():
    # one plane matched exactly, one zero-area plane: the devkit counts 2 positives, recall 1/2,
    # precision 1 -> VOC07 AP = 6/11 (thresholds 0, 0.1, ..., 0.5)
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    gts = {"i": ([square, [5, 5, 5, 5, 5, 5, 5, 5]], ["plane", "plane"], [False, False])}
    result = evaluate_detections({"plane": [("i", 0.9, square)]}, gts, ["plane"])
    assert result.map == pytest.approx(6 / 11) and result.num_gt == {"plane": 2}
    assert result.degenerate_gt == {"zero area": 1}


def test_duplicate_and_undecodable_imageset_lines_are_named(tmp_path):
    path = tmp_path / "trainval.txt"
    path.write_text("100000001\n100000002\n\n100000001.bmp\n")
    with pytest.raises(AnnotationError, match=r"trainval\.txt:4: image id '100000001' repeats line 1"):
        read_imageset(path, strip_extensions=(".bmp",))
    path.write_bytes(b"100000001\n1000\xff0002\n")
    with pytest.raises(AnnotationError, match=r"trainval\.txt:2: not UTF-8 text: byte ff at column 5"):
        read_imageset(path)


def test_hrsc_reader_rejects_a_repeated_id_and_reads_tiff_images(tmp_path, rng):
    full = tmp_path / "FullDataSet"
    image = photo(rng, 100, 120)
    for image_id in ("100000001", "100000002"):
        record = ImageRecord(
            "", image_id, 120, 100, polygons=[[10, 10, 60, 10, 60, 30, 10, 30]], classes=[0], difficult=[False]
        )
        write_hrsc_xml(record, full / "Annotations" / f"{image_id}.xml", image_format="tif")
        os.makedirs(full / "AllImages", exist_ok=True)
        cv2.imwrite(str(full / "AllImages" / f"{image_id}.tif"), image)
    os.makedirs(tmp_path / "ImageSets")
    (tmp_path / "ImageSets" / "trainval.txt").write_text("100000001\n100000002\n")
    records, _ = read_hrsc(tmp_path, imageset="trainval", check_images="decode")
    assert [r.image_path.endswith(".tif") for r in records] == [True, True]
    (tmp_path / "ImageSets" / "trainval.txt").write_text("100000001\n100000002\n100000001\n")
    with pytest.raises(AnnotationError, match=r"ImageSets/trainval\.txt:3: image id '100000001' repeats line 1"):
        read_hrsc(tmp_path, imageset="trainval")


def test_mutated_label_files_raise_only_named_errors(dota_split, rng):
    """Fuzz: random byte edits of a labelTxt file. The dataset reader raises AnnotationError
    naming the file and line, or reads; with a non-strict Problems nothing is raised."""
    path = dota_split / "labelTxt" / "P0001.txt"
    data = bytearray(path.read_bytes())
    alphabet = b" \n\t.-x9:\xff\xc3"
    for _ in range(60):
        mutated = bytearray(data)
        for position in rng.integers(0, len(data), 3):
            mutated[position] = alphabet[rng.integers(0, len(alphabet))]
        path.write_bytes(bytes(mutated))
        try:
            parse_dota_label(path, ("plane",))
        except AnnotationError as error:
            assert str(error).startswith(f"{path}:")
        problems = Problems(strict=False)
        parse_dota_label(path, devkit=True, problems=problems)


# ----------------------------------------------------------------------------- dked-tf evaluate


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def folders(tmp_path):
    gt, det = tmp_path / "labelTxt", tmp_path / "results"
    gt.mkdir()
    det.mkdir()
    (gt / "P0001.txt").write_text(
        "imagesource:GoogleEarth\n"
        + " ".join(map(str, square(0, 0, 10, 10)))
        + " plane 0\n"
        + " ".join(map(str, square(20, 20, 30, 30)))
        + " plane 0\n"
    )
    (det / "Task1_plane.txt").write_text("P0001 0.9 " + " ".join(map(str, square(0, 0, 10, 10))) + "\n")
    return tmp_path


def evaluate(folders, *extra):
    args = ["evaluate", "--format", "dota", "--gt-dir", folders / "labelTxt", "--det-dir", folders / "results"]
    return main([str(a) for a in args + list(extra) + ["--classes", "plane"]])


def test_evaluate_names_non_utf8_bytes_with_and_without_strict(folders, capsys):
    with open(folders / "labelTxt" / "P0001.txt", "ab") as handle:
        handle.write(b"1 1 2 1 2 2 1 2 pl\xe9ne 0\n")
    assert evaluate(folders) == 2
    assert "P0001.txt:4: not UTF-8 text: byte e9 at column 19" in capsys.readouterr().err
    assert evaluate(folders, "--no-strict", "--json", folders / "m.json") == 0
    assert "skipped 1 input lines/files (--no-strict): 1 bad ground-truth lines" in capsys.readouterr().out
    assert json.loads((folders / "m.json").read_text())["num_gt"] == {"plane": 2}
    with open(folders / "results" / "Task1_plane.txt", "ab") as handle:
        handle.write(b"P0001 0.5 \x80 0 1 0 1 1 0 1\n")
    assert evaluate(folders, "--no-strict") == 0
    assert "skipped 2 input lines/files (--no-strict): 1 bad detection lines, 1 bad ground-truth lines" in (
        capsys.readouterr().out
    )
    assert evaluate(folders) == 2
    assert "P0001.txt:4: not UTF-8" in capsys.readouterr().err


def test_evaluate_short_ground_truth_lines_are_errors_with_strict(folders, capsys):
    with open(folders / "labelTxt" / "P0001.txt", "a") as handle:
        handle.write("30 30 40 30 40 40 plane\n2:5 1 plane\n")  # 7 and 3 fields: the devkit skips them
    assert evaluate(folders) == 2
    assert "P0001.txt:4: 7 fields, expected" in capsys.readouterr().err
    assert evaluate(folders, "--no-strict") == 0
    assert "2 bad ground-truth lines" in capsys.readouterr().out


def test_evaluate_reports_degenerate_ground_truth(folders, capsys):
    with open(folders / "labelTxt" / "P0001.txt", "a") as handle:
        handle.write("5 5 5 5 5 5 5 5 plane 0\n")
    assert evaluate(folders) == 0
    out = capsys.readouterr().out
    assert "note: 1 ground-truth polygons are no region (1 zero area; first: " in out
    assert "P0001.txt:4 (zero area)" in out


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2", "nan", "half"])
def test_evaluate_rejects_iou_thresholds_outside_0_1(folders, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        evaluate(folders, "--iou-threshold", value)
    assert exit_info.value.code == 2
    assert "--iou-threshold" in capsys.readouterr().err


def test_evaluate_checks_the_json_path_before_the_work(folders, capsys):
    blocker = folders / "not_a_folder"
    blocker.write_text("x")
    assert evaluate(folders, "--json", blocker / "m.json") == 2
    captured = capsys.readouterr()
    assert f"--json {blocker / 'm.json'}: cannot write there" in captured.err
    assert "mAP" not in captured.out and len(captured.err.strip().splitlines()) == 1
    assert evaluate(folders, "--json", folders) == 2
    assert "is a folder" in capsys.readouterr().err
    assert evaluate(folders, "--iou-threshold", "1", "--json", folders / "ok.json") == 0
    assert not [name for name in os.listdir(folders) if ".tmp" in name or "write_check" in name]


def test_task1_reader_names_non_utf8_lines(tmp_path):
    path = tmp_path / "Task1_plane.txt"
    path.write_bytes(b"A 0.5 0 0 1 0 1 1 0 1\nB\xff 0.5 0 0 1 0 1 1 0 1\n")
    with pytest.raises(AnnotationError, match=r"Task1_plane\.txt:2: not UTF-8 text: byte ff at column 2"):
        read_task1_file(path)
    problems = Problems(strict=False)
    assert read_task1_file(path, problems=problems)["image_ids"] == ["A"]
    assert problems.counts == {"bad detection lines": 1}
