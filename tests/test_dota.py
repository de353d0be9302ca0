import os

import cv2
import numpy as np
import pytest

from dked_tf.data.dota import (
    DOTA_CLASSES,
    image_size_from_header,
    parse_dota_label,
    read_dota,
    read_task1,
    read_task1_file,
    resolve_classes,
    write_dota_label,
    write_task1,
)
from dked_tf.data.records import AnnotationError, InputError, Problems

LABEL = """imagesource:GoogleEarth
gsd:0.146343590398

2753 2408 2861 2385 2888 2468 2805 2502 plane 0
3445 3391 3484 3409 3478 3422 3437 3402 large-vehicle 1
1.5 2.25 10.125 2.25 10.125 8 1.5 8 small-vehicle 2
100 100 140 100 140 120 100 120 ship
"""


def make_split(root, label=LABEL, image_id="P0001", size=(400, 350), ext=".png"):
    os.makedirs(root / "labelTxt", exist_ok=True)
    os.makedirs(root / "images", exist_ok=True)
    (root / "labelTxt" / f"{image_id}.txt").write_text(label)
    w, h = size
    cv2.imwrite(str(root / "images" / f"{image_id}{ext}"), np.zeros((h, w, 3), np.uint8))


def test_class_lists():
    assert len(DOTA_CLASSES["dota1.0"]) == 15 and len(DOTA_CLASSES["dota1.5"]) == 16
    assert len(DOTA_CLASSES["dota2.0"]) == 18
    assert DOTA_CLASSES["dota1.0"][0] == "plane" and DOTA_CLASSES["dota1.0"][-1] == "helicopter"
    assert DOTA_CLASSES["dota1.5"][-1] == "container-crane"
    assert DOTA_CLASSES["dota2.0"][-2:] == ("airport", "helipad")
    assert resolve_classes("v1.5") == DOTA_CLASSES["dota1.5"]
    with pytest.raises(ValueError):
        resolve_classes("dota3")


def test_read_label_fields(tmp_path):
    make_split(tmp_path)
    records, info = read_dota(tmp_path / "labelTxt", classes="dota1.0")
    assert info.format == "dota" and len(records) == 1
    r = records[0]
    assert (r.image_id, r.width, r.height) == ("P0001", 400, 350)
    np.testing.assert_array_equal(r.polygons[0], [2753, 2408, 2861, 2385, 2888, 2468, 2805, 2502])
    np.testing.assert_array_equal(r.polygons[2], np.float32([1.5, 2.25, 10.125, 2.25, 10.125, 8, 1.5, 8]))
    names = DOTA_CLASSES["dota1.0"]
    assert [names[c] for c in r.classes] == ["plane", "large-vehicle", "small-vehicle", "ship"]
    np.testing.assert_array_equal(r.extra["difficult_value"], [0, 1, 2, 0])  # missing field -> 0
    np.testing.assert_array_equal(r.difficult, [False, True, True, False])
    assert r.extra["imagesource"] == "GoogleEarth" and r.extra["gsd"] == "0.146343590398"


def test_reader_writer_reader_is_exact(tmp_path, rng):
    label = "gsd:0.5\n" + "".join(
        " ".join(f"{v}" for v in rng.uniform(0, 1000, 8).astype(np.float32)) + f" ship {d}\n" for d in (0, 1, 2)
    )
    make_split(tmp_path / "a", label=label, size=(64, 48))
    (rec,), _ = read_dota(tmp_path / "a", classes="dota2.0")
    write_dota_label(rec, tmp_path / "b" / "labelTxt" / "P0001.txt", "dota2.0")
    os.makedirs(tmp_path / "b" / "images")
    os.link(rec.image_path, tmp_path / "b" / "images" / "P0001.png")
    (back,), _ = read_dota(tmp_path / "b", classes="dota2.0")
    assert back.polygons.tobytes() == rec.polygons.tobytes()
    np.testing.assert_array_equal(back.classes, rec.classes)
    np.testing.assert_array_equal(back.extra["difficult_value"], [0, 1, 2])
    assert back.extra["gsd"] == "0.5"
    assert (back.width, back.height) == (64, 48)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1 2 3 4 5 6 7 8 plane 0 extra", "expected 9 or 10 fields"),
        ("1 2 3 4 5 6 7 plane", "expected 9 or 10 fields"),
        ("1 2 3 4 5 6 7 x8 plane 0", "not numbers"),
        ("1 2 3 4 5 nan 7 8 plane 0", "non-finite"),
        ("1 2 3 4 5 6 7 8 spaceship 0", "unknown class 'spaceship'"),
        ("1 2 3 4 5 6 7 8 plane 3", "difficult must be 0, 1 or 2"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad_line, message):
    make_split(tmp_path, label=LABEL + bad_line + "\n", size=(32, 32))
    line = len(LABEL.splitlines()) + 1
    with pytest.raises(AnnotationError, match=rf"P0001\.txt:{line}: .*{message}"):
        read_dota(tmp_path)


def test_strict_false_skips_and_counts(tmp_path, capsys):
    make_split(tmp_path, size=(32, 32))
    make_split(tmp_path, label="1 2 3 4 5 6 7 8 plane 0\n1 2 3\n", image_id="P0002", size=(32, 32))
    make_split(tmp_path, label="1 2 3 4 5 6 7 8 plane 0\n", image_id="P0003", size=(32, 32))
    os.remove(tmp_path / "images" / "P0003.png")
    with pytest.raises(AnnotationError):
        read_dota(tmp_path)
    with pytest.warns(UserWarning):
        records, info = read_dota(tmp_path, strict=False)
    assert [r.image_id for r in records] == ["P0001"] and info.num_skipped == 2
    out = capsys.readouterr().out
    assert "skipped 2" in out and "P0002.txt:2" in out and "P0003.png: image file is missing" in out


def test_corrupt_image(tmp_path):
    make_split(tmp_path, size=(32, 32))
    (tmp_path / "images" / "P0001.png").write_bytes(b"\x00" * 100)
    with pytest.raises(AnnotationError, match="P0001.png: corrupt image"):
        read_dota(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_image_size_from_header(tmp_path, ext):
    path = str(tmp_path / f"x{ext}")
    cv2.imwrite(path, np.zeros((37, 53, 3), np.uint8))
    assert tuple(image_size_from_header(path)) == (53, 37)


def test_task1_round_trip(tmp_path, rng):
    dets = {
        "plane": [("P0001", 0.987654321, rng.uniform(0, 500, 8)), ("P0002", 0.5, rng.uniform(0, 500, 8))],
        "ship": [("P0001", 0.25, rng.uniform(0, 500, 8))],
    }
    paths = write_task1(dets, tmp_path, class_names=["plane", "ship", "harbor"])
    assert sorted(os.path.basename(p) for p in paths) == ["Task1_harbor.txt", "Task1_plane.txt", "Task1_ship.txt"]
    first = (tmp_path / "Task1_plane.txt").read_text().splitlines()[0].split()
    assert first[0] == "P0001" and float(first[1]) == 0.987654321 and len(first) == 10
    back = read_task1(tmp_path)
    assert back["harbor"] == []
    for name, items in dets.items():
        for (i0, s0, p0), (i1, s1, p1) in zip(items, back[name]):
            assert i0 == i1 and s0 == s1
            np.testing.assert_allclose(p1, p0, rtol=1e-6)
    (tmp_path / "Task1_ship.txt").write_text("P0001 0.5 1 2 3\n")
    with pytest.raises(AnnotationError, match=r"Task1_ship\.txt:1: expected 10 fields"):
        read_task1(tmp_path)


def test_devkit_rules_of_the_evaluator(tmp_path):
    """devkit=True (dked-tf evaluate's ground truth): any class name and any integer difficult
    flag read, float64; a short line (which the devkit skips silently) is named, or skipped and
    counted with a non-strict Problems; the dataset rules reject the same lines."""
    path = tmp_path / "P0001.txt"
    path.write_text("imagesource:GoogleEarth\ngsd:0.5\n1 2 3\n0.1 0 10 0 10 10 0 10 zebra 5\n1 1 2 1 2 2 1 2 plane\n")
    with pytest.raises(AnnotationError, match=r"P0001\.txt:3: 3 fields, expected"):
        parse_dota_label(path, devkit=True)
    problems = Problems(strict=False)
    parsed = parse_dota_label(path, devkit=True, problems=problems)
    assert problems.counts == {"bad ground-truth lines": 1} and parsed["lines"].tolist() == [4, 5]
    assert parsed["names"] == ["zebra", "plane"] and parsed["polygons"].dtype == np.float64
    assert parsed["polygons"][0, 0] == 0.1 and parsed["difficult_value"].tolist() == [5, 0]
    assert parsed["classes"].tolist() == [-1, -1] and parsed["header"] == {"imagesource": "GoogleEarth", "gsd": "0.5"}
    with pytest.raises(AnnotationError, match=r"P0001\.txt:3: expected 9 or 10 fields"):
        parse_dota_label(path, DOTA_CLASSES["dota1.0"])


def test_bad_label_lines_reported_in_line_order_or_skipped(tmp_path):
    path = tmp_path / "P0001.txt"
    path.write_text(
        "1 2 3 4 5 6 7 8 plane 0\n1 2 3 4 5 x 7 8 plane 0\n1 2 3 4 5 6 7 8 plane 0 extra\n1 2 3 4 5 6 7 8 ship y\n"
    )
    with pytest.raises(InputError, match=r"P0001\.txt:2: the 8 coordinates must be finite numbers"):
        parse_dota_label(path, devkit=True, problems=Problems(strict=True))
    problems = Problems(strict=False)
    parsed = parse_dota_label(path, devkit=True, problems=problems)
    assert parsed["names"] == ["plane"] and problems.counts == {"bad ground-truth lines": 3}
    assert [m.split(": ")[0] for m in problems.examples] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert "P0001.txt:3: 11 fields" in problems.examples[1]
    assert "difficult must be an integer, got 'y'" in problems.examples[2]


def test_task1_file_columns_image_set_and_problems(tmp_path):
    path = tmp_path / "Task1_plane.txt"
    path.write_text("A 0.5 0 0 1 0 1 1 0 1\n\nB 0.25 0 0 2 0 2 2 0 2\nA 0.1 0 0 1\nA nan 0 0 1 0 1 1 0 1\n")
    with pytest.raises(AnnotationError, match=r"Task1_plane\.txt:4: expected 10 fields"):
        read_task1_file(path)
    with pytest.raises(InputError, match=r"Task1_plane\.txt:3: image 'B' is not in the image set"):
        read_task1_file(path, {"A"}, Problems(strict=True), devkit=True)
    problems = Problems(strict=False)
    columns = read_task1_file(path, {"A"}, problems, devkit=True)
    assert columns["image_ids"] == ["A"] and columns["scores"].tolist() == [0.5]
    assert columns["polygons"].shape == (1, 8) and columns["polygons"].dtype == np.float64
    assert problems.counts == {"bad detection lines": 2, "detections of images outside the image set": 1}
    assert "Task1_plane.txt:4: 5 fields, expected 10" in problems.examples[1]
    path.write_text("A 0.5 0 0 1 0 1 1 0 1\nB 0.25 0 0 2 0 2 2 0 2\n")  # the clean, vectorised case
    columns = read_task1_file(path)
    assert columns["image_ids"] == ["A", "B"] and columns["polygons"][1].tolist() == [0, 0, 2, 0, 2, 2, 0, 2]


def test_class_list_from_the_command_line():
    assert resolve_classes("plane, ship", comma_list=True) == ("plane", "ship")
    assert resolve_classes("ship", comma_list=True) == ("ship",)
    assert resolve_classes("dota1.5", comma_list=True) == DOTA_CLASSES["dota1.5"]
    assert resolve_classes(None, default=("ship",), comma_list=True) == ("ship",)
    assert resolve_classes(None) == DOTA_CLASSES["dota1.0"]
    with pytest.raises(InputError, match="names no class"):
        resolve_classes(" , ", comma_list=True)
    with pytest.raises(InputError, match="has duplicate names"):
        resolve_classes("a,b,a", comma_list=True)
    with pytest.raises(ValueError, match="unknown DOTA class list"):
        resolve_classes("ship")
