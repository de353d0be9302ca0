import math
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import shapely.geometry

from dked_tf.data.hrsc import HRSC_CLASS_NAMES_31, read_hrsc, read_hrsc_xml, write_hrsc_xml
from dked_tf.data.records import AnnotationError, ImageRecord

# The layout of a real HRSC2016 annotation (fields as in mmrotate's test file 100000006.xml).
REAL_XML = """<?xml version="1.0" encoding="utf-8"?>
<HRSC_Image>
  <Img_CusType>sealand</Img_CusType>
  <Img_ID>{image_id}</Img_ID>
  <Img_FileName>{image_id}</Img_FileName>
  <Img_FileFmt>bmp</Img_FileFmt>
  <Img_SizeWidth>{width}</Img_SizeWidth>
  <Img_SizeHeight>{height}</Img_SizeHeight>
  <Img_SizeDepth>3</Img_SizeDepth>
  <Img_Resolution>1.07</Img_Resolution>
  <Annotated>1</Annotated>
  <HRSC_Objects>
{objects}
  </HRSC_Objects>
</HRSC_Image>
"""
REAL_OBJECT = """    <HRSC_Object>
      <Object_ID>100000{k}</Object_ID>
      <Class_ID>{class_id}</Class_ID>
      <Object_NO>{k}</Object_NO>
      <truncated>0</truncated>
      <difficult>{difficult}</difficult>
      <box_xmin>10</box_xmin>
      <box_ymin>10</box_ymin>
      <box_xmax>50</box_xmax>
      <box_ymax>50</box_ymax>
      <mbox_cx>{cx}</mbox_cx>
      <mbox_cy>{cy}</mbox_cy>
      <mbox_w>{w}</mbox_w>
      <mbox_h>{h}</mbox_h>
      <mbox_ang>{ang}</mbox_ang>
      <header_x>30</header_x>
      <header_y>31</header_y>
      <segmented>0</segmented>
      <seg_color>
      </seg_color>
    </HRSC_Object>"""


def write_bmp(path, width, height):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def make_xml(path, image_id, objects, width=120, height=100):
    body = "\n".join(REAL_OBJECT.format(k=k, **o) for k, o in enumerate(objects))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(REAL_XML.format(image_id=image_id, width=width, height=height, objects=body))


OBJS = [
    dict(cx=60.5, cy=40.25, w=60.0, h=12.0, ang=0.0, class_id="100000013", difficult=0),
    dict(cx=30.0, cy=70.0, w=40.0, h=10.0, ang=-1.1234567, class_id="100000002", difficult=1),
]


def make_full_dataset(root, ids=("100000001", "100000002", "100000003"), test_ids=("100000003",)):
    for image_id in ids:
        make_xml(root / "FullDataSet" / "Annotations" / f"{image_id}.xml", image_id, OBJS)
        write_bmp(root / "FullDataSet" / "AllImages" / f"{image_id}.bmp", 120, 100)
    os.makedirs(root / "ImageSets", exist_ok=True)
    (root / "ImageSets" / "trainval.txt").write_text("".join(i + "\n" for i in ids if i not in test_ids))
    (root / "ImageSets" / "test.txt").write_text("".join(i + "\n" for i in test_ids))


def test_polygons_from_mbox_match_hand_computed_corners(tmp_path):
    make_full_dataset(tmp_path)
    records, info = read_hrsc(tmp_path, "trainval")
    assert info.class_names == ("ship",) and info.format == "hrsc"
    assert [r.image_id for r in records] == ["100000001", "100000002"]
    r = records[0]
    assert (r.width, r.height) == (120, 100)
    assert r.image_path.endswith(os.path.join("AllImages", "100000001.bmp"))
    # axis-aligned object: corners at cx +- w/2, cy +- h/2
    corners = {tuple(np.round(p, 4)) for p in r.polygons[0].reshape(4, 2)}
    assert corners == {(30.5, 34.25), (90.5, 34.25), (90.5, 46.25), (30.5, 46.25)}
    # rotated object: shapely agrees on area, centre, and the long side direction is the angle
    poly = shapely.geometry.Polygon(r.polygons[1].reshape(4, 2))
    assert poly.area == pytest.approx(400.0, rel=1e-5)
    assert poly.centroid.x == pytest.approx(30.0, abs=1e-4) and poly.centroid.y == pytest.approx(70.0, abs=1e-4)
    pts = r.polygons[1].reshape(4, 2).astype(np.float64)
    edges = np.roll(pts, -1, 0) - pts
    long_edge = edges[np.argmax(np.linalg.norm(edges, axis=1))]
    assert abs(math.atan2(long_edge[1], long_edge[0]) % math.pi - (-1.1234567) % math.pi) < 1e-5
    np.testing.assert_array_equal(r.classes, [0, 0])
    np.testing.assert_array_equal(r.difficult, [False, True])


def test_31_class_mode_maps_class_ids(tmp_path):
    make_full_dataset(tmp_path)
    records, info = read_hrsc(tmp_path, "test", class_mode="31")
    assert len(info.class_names) == 31 and info.class_names == HRSC_CLASS_NAMES_31
    assert [info.class_names[c] for c in records[0].classes] == ["Kuznetsov", "aircraft carrier"]


def test_reader_writer_reader_is_exact(tmp_path):
    make_full_dataset(tmp_path)
    records, _ = read_hrsc(tmp_path, None, class_mode="31")
    assert len(records) == 3
    out = tmp_path / "out.xml"
    write_hrsc_xml(records[0], out)
    again = read_hrsc_xml(out, image_dir=str(tmp_path / "FullDataSet" / "AllImages"), class_mode="31")
    np.testing.assert_array_equal(again.polygons, records[0].polygons)
    np.testing.assert_array_equal(again.classes, records[0].classes)
    np.testing.assert_array_equal(again.difficult, records[0].difficult)
    np.testing.assert_array_equal(again.extra["mbox"], records[0].extra["mbox"])
    assert (again.width, again.height, again.image_id) == (120, 100, "100000001")
    # the written file has the real layout, readable by a plain XML parser
    root = ET.parse(out).getroot()
    assert root.tag == "HRSC_Image"
    for tag in ("Img_ID", "Img_FileName", "Img_FileFmt", "Img_SizeWidth", "Img_SizeHeight", "Img_SizeDepth"):
        assert root.find(tag) is not None, tag
    objs = root.find("HRSC_Objects").findall("HRSC_Object")
    assert len(objs) == 2
    for tag in (
        "Object_ID",
        "Class_ID",
        "difficult",
        "truncated",
        "box_xmin",
        "box_ymax",
        "mbox_cx",
        "mbox_cy",
        "mbox_w",
        "mbox_h",
        "mbox_ang",
        "header_x",
        "header_y",
    ):
        assert objs[1].find(tag) is not None, tag
    assert float(objs[1].find("mbox_ang").text) == -1.1234567
    assert objs[0].find("Class_ID").text == "100000013"


def test_writer_from_plain_polygons(tmp_path):
    # a record without raw HRSC fields: the minimum-area rectangle is written
    angle = 0.4
    c, s = math.cos(angle), math.sin(angle)
    pts = [(50 + c * x - s * y, 40 + s * x + c * y) for x, y in ((-20, -5), (20, -5), (20, 5), (-20, 5))]
    record = ImageRecord("img.png", "abc", 100, 80, [np.ravel(pts)], [0], [False])
    write_hrsc_xml(record, tmp_path / "abc.xml")
    back = read_hrsc_xml(tmp_path / "abc.xml", check_images=False)
    a = shapely.geometry.Polygon(np.asarray(pts))
    b = shapely.geometry.Polygon(back.polygons[0].reshape(4, 2))
    assert a.intersection(b).area / a.union(b).area > 0.9999
    assert back.extra["mbox"][0, 2] == pytest.approx(40.0, rel=1e-5)


def test_train_test_layout(tmp_path):
    for part, image_id in (("Train", "100000010"), ("Test", "100000020")):
        make_xml(tmp_path / part / "Annotations" / f"{image_id}.xml", image_id, OBJS[:1])
        write_bmp(tmp_path / part / "AllImages" / f"{image_id}.bmp", 120, 100)
    assert [r.image_id for r in read_hrsc(tmp_path, "trainval")[0]] == ["100000010"]
    assert [r.image_id for r in read_hrsc(tmp_path, "test")[0]] == ["100000020"]
    assert len(read_hrsc(tmp_path)[0]) == 2


def test_malformed_xml_error_names_file_and_line(tmp_path):
    make_full_dataset(tmp_path)
    bad = tmp_path / "FullDataSet" / "Annotations" / "100000002.xml"
    lines = bad.read_text().splitlines()
    lines[5] = "  <Img_SizeWidth>120</Img_SizeWidthX>"
    bad.write_text("\n".join(lines))
    with pytest.raises(AnnotationError, match=r"100000002\.xml:6: malformed XML"):
        read_hrsc(tmp_path, "trainval")


def test_non_finite_and_missing_values_name_the_line(tmp_path):
    make_full_dataset(tmp_path)
    path = tmp_path / "FullDataSet" / "Annotations" / "100000001.xml"
    text = path.read_text().replace("<mbox_cx>30.0</mbox_cx>", "<mbox_cx>nan</mbox_cx>")
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "nan" in l)
    with pytest.raises(AnnotationError, match=rf"100000001\.xml:{line}: <mbox_cx> is not finite"):
        read_hrsc_xml(path, check_images=False)


def test_missing_and_corrupt_images(tmp_path):
    make_full_dataset(tmp_path)
    os.remove(tmp_path / "FullDataSet" / "AllImages" / "100000001.bmp")
    (tmp_path / "FullDataSet" / "AllImages" / "100000002.bmp").write_bytes(b"not an image at all")
    with pytest.raises(AnnotationError, match="100000001.bmp: image file is missing"):
        read_hrsc(tmp_path, "trainval")
    with pytest.warns(UserWarning) as caught:
        records, info = read_hrsc(tmp_path, None, strict=False)
    messages = [str(w.message) for w in caught]
    assert any("100000001.bmp: image file is missing" in m for m in messages)
    assert any("100000002.bmp: corrupt image" in m for m in messages)
    assert [r.image_id for r in records] == ["100000003"]
    assert info.num_skipped == 2


def test_unknown_class_id_and_strict_false_summary(tmp_path, capsys):
    make_full_dataset(tmp_path)
    path = tmp_path / "FullDataSet" / "Annotations" / "100000003.xml"
    text = path.read_text().replace("100000013", "100000099")
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "100000099" in l)
    with pytest.raises(AnnotationError, match=rf"100000003\.xml:{line}: unknown Class_ID"):
        read_hrsc(tmp_path, "test", class_mode="31")
    with pytest.warns(UserWarning):
        records, info = read_hrsc(tmp_path, None, class_mode="31", strict=False)
    assert len(records) == 2 and info.num_skipped == 1
    assert "skipped 1" in capsys.readouterr().out
    # the ship task ignores the class code
    assert len(read_hrsc(tmp_path, None)[0]) == 3


def test_imageset_listing_a_missing_annotation(tmp_path):
    make_full_dataset(tmp_path)
    with open(tmp_path / "ImageSets" / "test.txt", "a") as f:
        f.write("100000404\n")
    with pytest.raises(AnnotationError, match=r"100000404\.xml: annotation listed in .*test\.txt is missing"):
        read_hrsc(tmp_path, "test")
