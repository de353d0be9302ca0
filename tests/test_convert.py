"""dked_tf.data.convert and `dked-tf convert`: the built-in synthetic HRSC2016 and DOTA sets,
written here at a tiny size, round-tripped through YOLO-OBB and compared with the originals
(polygons to 1e-3 px, classes, splits, difficult flags where the format keeps them); the files
of each layout checked as the other tools read them."""

import os

import cv2
import numpy as np
import pytest
import yaml

from dked_tf.cli import main
from dked_tf.data.convert import convert_dataset, yolo_roles
from dked_tf.data.dota import read_dota
from dked_tf.data.hrsc import read_hrsc
from dked_tf.data.synthetic import make_synthetic_dota, make_synthetic_hrsc


@pytest.fixture(scope="module")
def hrsc_set(tmp_path_factory):
    return make_synthetic_hrsc(tmp_path_factory.mktemp("hrsc") / "src", 3, 2, image_size=160, verbose=0)


@pytest.fixture(scope="module")
def dota_set(tmp_path_factory):
    return make_synthetic_dota(tmp_path_factory.mktemp("dota") / "src", 3, 2, image_size=160, verbose=0)


def hrsc_splits(root):
    names = sorted(f[:-4] for f in os.listdir(os.path.join(root, "ImageSets")))
    return {name: read_hrsc(root, imageset=name, verbose=0)[0] for name in names}


def dota_splits(root):
    return {name: read_dota(os.path.join(root, name), verbose=0)[0] for name in ("train", "val")}


def assert_same(before, after, difficult=True):
    assert list(before) == list(after)
    for split in before:
        assert [r.image_id for r in before[split]] == [r.image_id for r in after[split]]
        for a, b in zip(before[split], after[split]):
            assert (a.width, a.height) == (b.width, b.height)
            assert a.classes.tolist() == b.classes.tolist()
            assert os.path.getsize(a.image_path) == os.path.getsize(b.image_path)
            assert a.polygons.shape == b.polygons.shape
            assert np.abs(a.polygons - b.polygons).max(initial=0) < 1e-3  # same vertices, same order
            if difficult:
                assert a.difficult.tolist() == b.difficult.tolist()


def test_hrsc_to_yolo_obb_to_hrsc(hrsc_set, tmp_path, capsys):
    yolo, back = tmp_path / "yolo", tmp_path / "back"
    # clip="none": corners outside the image as they are (the default "auto" clips the objects
    # Ultralytics would reject; the CLI test sees it report them)
    summary = convert_dataset("hrsc", "yolo-obb", hrsc_set, yolo, clip="none")
    data = yaml.safe_load((yolo / "data.yaml").read_text())
    assert data == {"path": str(yolo), "train": "images/trainval", "val": "images/test", "names": {0: "ship"}}
    before = hrsc_splits(hrsc_set)
    assert summary["difficult"] == sum(int(r.difficult.sum()) for rs in before.values() for r in rs)
    # Ultralytics' pairing: images/<split>/<id>.<ext> <-> labels/<split>/<id>.txt, normalised corners
    for split, records in before.items():
        for record in records:
            image = yolo / "images" / split / os.path.basename(record.image_path)
            assert image.is_file() and os.path.samefile(image, record.image_path)  # hard-linked
            rows = np.loadtxt(yolo / "labels" / split / f"{record.image_id}.txt", ndmin=2)
            assert rows.shape == (record.num_objects, 9)
            scale = np.tile([record.width, record.height], 4)
            np.testing.assert_allclose(rows[:, 1:] * scale, record.polygons, atol=1e-3)
    convert_dataset("yolo-obb", "hrsc", yolo, back)
    after = hrsc_splits(back)
    # YOLO-OBB has no difficult flag: everything comes back as not difficult
    assert_same(before, after, difficult=False)
    assert not any(r.difficult.any() for rs in after.values() for r in rs)


def test_dota_to_yolo_obb_to_dota(dota_set, tmp_path):
    yolo, back = tmp_path / "yolo", tmp_path / "back"
    convert_dataset("dota", "yolo-obb", dota_set, yolo, clip="none")
    data = yaml.safe_load((yolo / "data.yaml").read_text())
    names = ["plane", "small-vehicle", "large-vehicle", "ship", "storage-tank"]
    assert data == {"path": str(yolo), "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    convert_dataset("yolo-obb", "dota", yolo, back)
    assert (back / "classes.txt").read_text().split() == names
    before, after = dota_splits(dota_set), dota_splits(back)
    assert sum(r.num_objects for rs in before.values() for r in rs) > 10
    assert_same(before, after, difficult=False)


def test_dota_to_hrsc_keeps_difficult_and_refuses_many_classes(tmp_path):
    src = tmp_path / "dota"
    for split in ("trainval", "test"):
        (src / split / "labelTxt").mkdir(parents=True)
        (src / split / "images").mkdir()
        cv2.imwrite(str(src / split / "images" / f"{split}1.png"), np.zeros((40, 50, 3), np.uint8))
        (src / split / "labelTxt" / f"{split}1.txt").write_text(
            "10 10 30 10 30 20 10 20 ship 1\n5 25 15 25 15 35 5 35 ship 0\n"
        )
    with pytest.raises(ValueError, match="HRSC2016 holds"):
        convert_dataset("dota", "hrsc", src, tmp_path / "bad")  # the 15 DOTA v1.0 classes
    convert_dataset("dota", "hrsc", src, tmp_path / "hrsc", classes="ship")
    back = hrsc_splits(tmp_path / "hrsc")
    assert sorted(back) == ["test", "trainval"]
    assert [r.difficult.tolist() for r in back["test"]] == [[True, False]]
    convert_dataset("hrsc", "dota", tmp_path / "hrsc", tmp_path / "dota2")
    again = read_dota(tmp_path / "dota2" / "trainval", verbose=0)[0]
    assert again[0].difficult.tolist() == [True, False]
    np.testing.assert_allclose(
        sorted(map(tuple, again[0].polygons.reshape(-1, 2))),
        sorted(map(tuple, np.array([[10, 10, 30, 10, 30, 20, 10, 20], [5, 25, 15, 25, 15, 35, 5, 35]]).reshape(-1, 2))),
        atol=1e-3,
    )


def test_yolo_roles():
    assert yolo_roles(["test", "trainval"]) == ("trainval", "test", None)
    assert yolo_roles(["test", "train", "val"]) == ("train", "val", "test")
    assert yolo_roles(["all"]) == ("all", "all", None)


def test_cli_convert(hrsc_set, tmp_path, capsys):
    out = tmp_path / "dota"
    assert main(["convert", "--from", "hrsc", "--to", "yolo-obb", str(hrsc_set), str(tmp_path / "y")]) == 0
    printed = capsys.readouterr().out
    assert "trainval: 3 images" in printed and "test: 2 images" in printed
    assert "YOLO-OBB has no difficult flag" in printed and "clipped to the image" in printed
    assert main(["convert", "--from", "yolo-obb", "--to", "dota", "--copy", str(tmp_path / "y"), str(out)]) == 0
    assert sorted(os.listdir(out)) == ["classes.txt", "test", "trainval"]
    assert len(os.listdir(out / "trainval" / "labelTxt")) == 3
    image = next(iter((out / "test" / "images").iterdir()))
    assert os.stat(image).st_nlink == 1  # --copy: not a link
    # a missing source: one line, exit code 2
    assert main(["convert", "--from", "dota", "--to", "hrsc", str(tmp_path / "nothing"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
