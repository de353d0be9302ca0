import os

import cv2
import numpy as np
import pytest
import shapely.geometry

from dked_tf.data.dota import read_dota, read_task1, write_task1
from dked_tf.data.records import ImageRecord
from dked_tf.data.split import (
    merge_detections,
    merge_task1,
    parse_patch_name,
    patch_name,
    split_dota,
    split_record,
    tile_windows,
    window_origins,
)

CLASSES = ["plane", "ship"]


def rect(cx, cy, w, h, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners]
    return np.ravel(pts)


def iou(a, b):
    pa, pb = shapely.geometry.Polygon(np.reshape(a, (4, 2))), shapely.geometry.Polygon(np.reshape(b, (4, 2)))
    return pa.intersection(pb).area / pa.union(pb).area


def test_window_origins_devkit_rule():
    # slide 824: 0, 824, then the last window is moved back to end at the border (2000 - 1024)
    assert window_origins(2000, 1024, 200) == [0, 824, 976]
    assert window_origins(1024, 1024, 200) == [0]
    assert window_origins(600, 1024, 200) == [0]
    assert window_origins(1848, 1024, 200) == [0, 824]


def test_patch_names():
    assert patch_name("P0000", 1.0, 0, 824) == "P0000__1__0___824"
    assert patch_name("P0000", 0.5, 100, 0) == "P0000__0.5__100___0"
    assert parse_patch_name("P0000__1__0___824") == ("P0000", 1.0, 0, 824)
    assert parse_patch_name("a__b__0.5__100___7.png") == ("a__b", 0.5, 100, 7)
    with pytest.raises(ValueError):
        parse_patch_name("P0000")


def test_cut_objects_follow_the_rules():
    # window 0..100 (patch 100, gap 20 on a 180 px image: windows at 0 and 80)
    inside = rect(40, 40, 30, 10)
    mostly_in = rect(92, 40, 30, 10)  # x 77..107: 23/30 inside the first window
    mostly_out = rect(105, 60, 30, 10)  # x 90..120: 10/30 inside the first window
    tilted = rect(95, 20, 40, 8, 0.6)
    record = ImageRecord(
        "", "S", 180, 100, [inside, mostly_in, mostly_out, tilted], [0, 1, 1, 0], [False, True, False, False]
    )
    first = split_record(record, patch_size=100, gap=20)[0]
    left, up, polys, classes, diff, ww, wh = first
    assert (left, up, ww, wh) == (0, 0, 100, 100)
    window = shapely.geometry.box(0, 0, 100, 100)
    # threshold policy: iof 23/30 >= 0.7 kept, clipped to the window, marked 2; 10/30 dropped
    assert len(polys) == 2 + (
        1
        if shapely.geometry.Polygon(tilted.reshape(4, 2)).intersection(window).area
        / shapely.geometry.Polygon(tilted.reshape(4, 2)).area
        >= 0.7
        else 0
    )
    np.testing.assert_allclose(polys[0], inside, atol=1e-5)
    assert diff[0] == 0
    clipped = shapely.geometry.Polygon(mostly_in.reshape(4, 2)).intersection(window)
    assert shapely.geometry.Polygon(polys[1].reshape(4, 2)).area == pytest.approx(clipped.area, rel=1e-6)
    assert diff[1] == 2 and classes[1] == 1
    # vertex order re-aligned to the original's (first vertex stays the top-left one)
    np.testing.assert_allclose(polys[1][:2], mostly_in[:2], atol=1e-5)
    # devkit policy keeps every cut object, 2 when iof <= threshold, original flag above
    _, _, polys_d, _, diff_d, _, _ = split_record(record, 100, 20, truncated_policy="devkit")[0]
    assert len(polys_d) == 4 and list(diff_d[:3]) == [0, 1, 2]
    # mmrotate policy: kept unclipped
    _, _, polys_m, _, diff_m, _, _ = split_record(record, 100, 20, truncated_policy="mmrotate")[0]
    np.testing.assert_allclose(polys_m[1], mostly_in, atol=1e-5)
    assert diff_m[1] == 2


def test_pentagon_intersection_becomes_quadrilateral():
    # a square rotated 45 degrees whose corner is cut by the window edge -> 5 vertices -> 4
    diamond = rect(90, 50, 30, 30, np.pi / 4)  # x from 68.8 to 111.2, window edge at x = 100
    record = ImageRecord("", "S", 180, 100, [diamond], [0], [False])
    _, _, polys, _, diff, _, _ = split_record(record, 100, 20, iof_threshold=0.5, truncated_policy="devkit")[0]
    # iof = 1 - 11.2^2 / 900 = 0.86 > 0.5: the devkit keeps the original flag
    assert polys.shape == (1, 8) and diff[0] == 0
    assert np.all(polys[0][0::2] <= 100 + 1e-6)
    # hand-derived: pentagon top (90, 28.79), (100, 38.79), (100, 61.21), bottom (90, 71.21),
    # left (68.79, 50); the two 14.14-long edges tie as shortest; merging one of them replaces
    # its end points by their midpoint
    r = 15 * np.sqrt(2)
    top, bottom, left = (90, 50 - r), (90, 50 + r), (90 - r, 50)
    c1, c2 = (100, 50 - r + 10), (100, 50 + r - 10)
    options = [
        [((top[0] + c1[0]) / 2, (top[1] + c1[1]) / 2), c2, bottom, left],
        [top, c1, ((c2[0] + bottom[0]) / 2, (c2[1] + bottom[1]) / 2), left],
    ]
    got = shapely.geometry.Polygon(polys[0].reshape(4, 2))
    assert (
        max(
            got.intersection(shapely.geometry.Polygon(o)).area / got.union(shapely.geometry.Polygon(o)).area
            for o in options
        )
        > 0.9999
    )


def test_split_then_merge_gives_back_the_objects(tmp_path, rng):
    records = []
    for k in range(2):
        polys, classes = [], []
        for i in range(12):  # one object per cell of a 4 x 3 grid: no two overlap
            w, h = rng.uniform(8, 40), rng.uniform(4, 12)
            cx, cy = 37.5 + 75 * (i % 4) + rng.uniform(-8, 8), 33 + 66 * (i // 4) + rng.uniform(-8, 8)
            polys.append(rect(cx, cy, w, h, rng.uniform(0, np.pi)))
            classes.append(int(rng.integers(2)))
        path = tmp_path / "scenes" / "images" / f"P{k:04d}.png"
        os.makedirs(path.parent, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
        records.append(ImageRecord(str(path), f"P{k:04d}", 300, 200, polys, classes, np.zeros(12, bool)))
    patches = split_dota(records, tmp_path / "patches", patch_size=128, gap=48, class_names=CLASSES, verbose=0)
    names = sorted(os.listdir(tmp_path / "patches" / "images"))
    assert len(names) == 2 * 4 * 2 and names[0] == "P0000__1__0___0.png"
    # patch pixels are the scene crop, zero padded to 128 x 128
    scene = cv2.imread(records[0].image_path)
    patch = cv2.imread(str(tmp_path / "patches" / "images" / "P0000__1__172___72.png"))
    assert patch.shape == (128, 128, 3)
    np.testing.assert_array_equal(patch, scene[72:200, 172:300])
    # the written labelTxt reads back like the returned patch records
    back, _ = read_dota(tmp_path / "patches", classes=CLASSES)
    assert [r.image_id for r in back] == sorted(p.image_id for p in patches)
    # ground truth as detections (whole copies score higher than clipped pieces), then merge
    dets = {name: [] for name in CLASSES}
    for p in back:
        for poly, cls, d in zip(p.polygons, p.classes, p.extra["difficult_value"]):
            dets[CLASSES[cls]].append((p.image_id, 0.9 if d != 2 else 0.3, poly))
    write_task1(dets, tmp_path / "patch_results", CLASSES)
    merged = merge_task1(tmp_path / "patch_results", tmp_path / "merged", CLASSES)
    assert read_task1(tmp_path / "merged", CLASSES).keys() == set(CLASSES)
    for record in records:
        for poly, cls in zip(record.polygons, record.classes):
            cands = [p for i, s, p in merged[CLASSES[cls]] if i == record.image_id]
            assert max(iou(poly, c) for c in cands) > 0.999
    assert sum(len(v) for v in merged.values()) == sum(r.num_objects for r in records)


def test_merge_maps_rate_and_offset():
    poly = rect(10, 20, 8, 4)
    dets = {"ship": [("S__0.5__100___50", 0.8, poly), ("S__0.5__100___50", 0.7, poly + 0.1), ("T", 0.6, poly)]}
    merged = merge_detections(dets)["ship"]
    assert [(i, s) for i, s, _ in merged] == [("S", 0.8), ("T", 0.6)]
    np.testing.assert_allclose(merged[0][2], (poly + np.tile([100, 50], 4)) / 0.5)


def test_tile_windows_rows_of_window_origins():
    windows = tile_windows(500, 260, 200, 50)
    assert [(x, y) for x, y, _, _ in windows] == [(x, y) for y in (0, 60) for x in (0, 150, 300)]
    assert all(w == 200 and h == 200 for _, _, w, h in windows)
    assert tile_windows(120, 90, 200, 50) == [(0, 0, 120, 90)]
    # an overlap of a whole tile or more steps by one pixel
    assert [x for x, _, _, _ in tile_windows(203, 1, 200, 200)] == [0, 1, 2, 3]
