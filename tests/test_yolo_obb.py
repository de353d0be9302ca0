"""The YOLO-OBB writer/reader (`dked_tf.data.yolo_obb`) against Ultralytics' format, by hand-computed
values, and the read-back round trip. No TensorFlow, no Ultralytics."""

import os

import cv2
import numpy as np
import pytest
import yaml

from dked_tf.data.records import AnnotationError, ImageRecord
from dked_tf.data.yolo_obb import label_lines, label_path_for, read_yolo_obb, ultralytics_rejects, write_yolo_obb


def _image(path, width, height, value=0):
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return str(path)


@pytest.fixture
def source(tmp_path):
    """Two train images (200 x 100 with a difficult object and two crossing the border; 64 x 48)
    and one test image without objects."""
    folder = tmp_path / "src"
    folder.mkdir()
    a = ImageRecord(
        image_path=_image(folder / "a.png", 200, 100),
        image_id="img_a",
        width=200,
        height=100,
        polygons=[
            [20, 10, 60, 10, 60, 30, 20, 30],  # axis aligned
            [100, 50, 150, 40, 160, 90, 110, 100],  # rotated, difficult
            [180, 80, 210, 80, 210, 105, 180, 105],  # crosses the right and bottom borders
            [190, 90, 230, 90, 230, 120, 190, 120],
        ],  # centre outside the image
        classes=[0, 1, 1, 0],
        difficult=[False, True, False, False],
    )
    b = ImageRecord(
        image_path=_image(folder / "b.jpg", 64, 48, 10),
        image_id="img_b",
        width=64,
        height=48,
        polygons=[[0, 0, 32, 0, 32, 24, 0, 24]],
        classes=[1],
        difficult=[False],
    )
    c = ImageRecord(image_path=_image(folder / "c.png", 32, 32, 20), image_id="img_c", width=32, height=32)
    return {"trainval": [a, b], "test": [c]}


def test_label_lines_hand_computed(source):
    a = source["trainval"][0]
    lines, counts = label_lines(a)
    # x / 200, y / 100, six decimals. clip="auto": the box crossing the border keeps its corners
    # (its centre is inside: Ultralytics accepts it and clips it itself); the one whose centre is
    # outside would make Ultralytics drop the image's labels: its corners are clipped to [0, 1].
    assert lines == [
        "0 0.100000 0.100000 0.300000 0.100000 0.300000 0.300000 0.100000 0.300000",
        "1 0.500000 0.500000 0.750000 0.400000 0.800000 0.900000 0.550000 1.000000",
        "1 0.900000 0.800000 1.050000 0.800000 1.050000 1.050000 0.900000 1.050000",
        "0 0.950000 0.900000 1.000000 0.900000 1.000000 1.000000 0.950000 1.000000",
    ]
    assert counts == {"objects": 4, "difficult": 1, "dropped": 0, "outside": 2, "clipped": 1}
    lines, counts = label_lines(a, clip="all")
    assert lines[2] == "1 0.900000 0.800000 1.000000 0.800000 1.000000 1.000000 0.900000 1.000000"
    assert counts["clipped"] == 2
    lines, counts = label_lines(a, difficult="drop", clip="none")
    assert [line.split()[0] for line in lines] == ["0", "1", "0"]
    assert lines[2] == "0 0.950000 0.900000 1.150000 0.900000 1.150000 1.200000 0.950000 1.200000"
    assert counts == {"objects": 3, "difficult": 1, "dropped": 1, "outside": 2, "clipped": 0}
    with pytest.raises(ValueError, match="difficult"):
        label_lines(a, difficult="ignore")
    with pytest.raises(ValueError, match="clip"):
        label_lines(a, clip=True)


def test_ultralytics_rejects_matches_its_check():
    corners = np.array(
        [
            [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.4]],  # inside
            [[0.9, 0.5], [1.1, 0.5], [1.1, 0.6], [0.9, 0.6]],  # centre on the border: accepted
            [[0.95, 0.5], [1.2, 0.5], [1.2, 0.6], [0.95, 0.6]],  # centre outside
            [[-0.1, 0.0], [1.1, 0.0], [1.1, 0.1], [-0.1, 0.1]],
        ]
    )  # wider than the image
    np.testing.assert_array_equal(ultralytics_rejects(corners), [False, False, True, True])


def test_write_layout_and_data_yaml(tmp_path, source):
    root = tmp_path / "yolo"
    summary = write_yolo_obb(root, source, ["ship", "boat"], verbose=0)
    with open(root / "data.yaml") as f:
        data = yaml.safe_load(f)
    assert data == {
        "path": str(root),
        "train": "images/trainval",
        "val": "images/test",
        "names": {0: "ship", 1: "boat"},
    }
    assert sorted(os.listdir(root / "images" / "trainval")) == ["img_a.png", "img_b.jpg"]
    assert sorted(os.listdir(root / "labels" / "trainval")) == ["img_a.txt", "img_b.txt"]
    assert os.listdir(root / "images" / "test") == ["img_c.png"]
    assert (root / "labels" / "test" / "img_c.txt").read_text() == ""  # a background image
    assert (
        root / "labels" / "trainval" / "img_b.txt"
    ).read_text() == "1 0.000000 0.000000 0.500000 0.000000 0.500000 0.500000 0.000000 0.500000\n"
    # hard links (same file), not symlinks: Ultralytics maps images/ -> labels/ on the path it sees
    image = root / "images" / "trainval" / "img_a.png"
    assert not os.path.islink(image) and os.path.samefile(image, source["trainval"][0].image_path)
    # Ultralytics' rule: the last /images/ becomes /labels/, the extension .txt
    assert label_path_for(str(image)) == str(root / "labels" / "trainval" / "img_a.txt")
    assert summary["splits"]["trainval"] == {
        "images": 2,
        "objects": 5,
        "difficult": 1,
        "dropped": 0,
        "outside": 2,
        "clipped": 1,
        "linked": 2,
        "copied": 0,
    }
    assert summary["splits"]["test"]["objects"] == 0
    leftovers = [n for _, _, files in os.walk(root) for n in files if n.endswith(".tmp")]
    assert leftovers == []


def test_round_trip(tmp_path, source):
    root = tmp_path / "yolo"
    write_yolo_obb(root, source, ["ship", "boat"], clip="none", verbose=0)
    for split, key in (("trainval", "train"), ("test", "val")):
        records, names = read_yolo_obb(root, key)
        assert names == ("ship", "boat")
        originals = sorted(source[split], key=lambda r: r.image_id)
        assert [r.image_id for r in records] == [r.image_id for r in originals]
        for got, want in zip(records, originals):
            assert (got.width, got.height) == (want.width, want.height)
            np.testing.assert_array_equal(got.classes, want.classes)
            np.testing.assert_allclose(got.polygons, want.polygons, atol=1e-3)  # 6 decimals of the side
            assert not got.difficult.any()
            assert os.path.basename(got.image_path) == want.image_id + os.path.splitext(want.image_path)[1]


def test_difficult_drop_and_rewrite(tmp_path, source):
    root = tmp_path / "yolo"
    write_yolo_obb(root, source, ["ship", "boat"], verbose=0)
    (root / "labels" / "trainval.cache").write_text("stale")
    # a second conversion into the same folder: fewer images, difficult dropped
    summary = write_yolo_obb(
        root,
        {"trainval": source["trainval"][:1], "test": source["test"]},
        ["ship", "boat"],
        difficult="drop",
        verbose=0,
    )
    assert summary["splits"]["trainval"]["dropped"] == 1
    assert os.listdir(root / "images" / "trainval") == ["img_a.png"]
    assert os.listdir(root / "labels" / "trainval") == ["img_a.txt"]
    assert not (root / "labels" / "trainval.cache").exists()  # Ultralytics' cache would outlive the labels
    records, _ = read_yolo_obb(root, "train")
    assert len(records) == 1 and records[0].num_objects == 3
    records, _ = read_yolo_obb(root, "trainval", sizes={"img_a": (200, 100)})  # a folder name works too
    assert records[0].polygons[0, 2] == pytest.approx(60.0)


def test_copy_instead_of_link(tmp_path, source):
    root = tmp_path / "yolo"
    summary = write_yolo_obb(root, source, ["ship", "boat"], link=False, verbose=0)
    assert summary["splits"]["trainval"]["copied"] == 2
    image = root / "images" / "trainval" / "img_b.jpg"
    assert not os.path.samefile(image, source["trainval"][1].image_path)
    assert image.read_bytes() == open(source["trainval"][1].image_path, "rb").read()


def test_writer_errors(tmp_path, source):
    names = ["ship", "boat"]
    with pytest.raises(ValueError, match="no 'test'"):
        write_yolo_obb(tmp_path / "a", {"trainval": source["trainval"]}, names, verbose=0)
    with pytest.raises(ValueError, match="appears twice"):
        write_yolo_obb(tmp_path / "b", {"trainval": source["trainval"] * 2, "test": []}, names, verbose=0)
    with pytest.raises(ValueError, match="class index 1"):
        write_yolo_obb(tmp_path / "c", source, ["ship"], verbose=0)


def test_reader_names_the_bad_line(tmp_path, source):
    root = tmp_path / "yolo"
    write_yolo_obb(root, source, ["ship", "boat"], verbose=0)
    label = root / "labels" / "trainval" / "img_b.txt"
    label.write_text("1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n7 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n")
    with pytest.raises(AnnotationError, match=r"img_b.txt:2: class 7"):
        read_yolo_obb(root, "train")
    label.write_text("1 0.1 0.1 0.2\n")
    with pytest.raises(AnnotationError, match=r"img_b.txt:1: expected"):
        read_yolo_obb(root, "train")
