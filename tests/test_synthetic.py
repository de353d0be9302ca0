import json
import os

import cv2
import numpy as np
from shapely.geometry import Polygon, box

from dked_tf.data.dota import read_dota
from dked_tf.data.hrsc import HRSC_CLASS_IDS, HRSC_CLASS_NAMES_31, read_hrsc
from dked_tf.data.realistic import HULL_TYPES, REALISTIC_VERSION, make_realistic_hrsc, render_realistic_scene
from dked_tf.data.synthetic import (
    SYNTHETIC_DOTA_CLASSES,
    make_synthetic_dota,
    make_synthetic_hrsc,
    render_dota_scene,
    render_hrsc_scene,
)
from dked_tf.data.synthetic import main as synthetic_main


def file_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f != "manifest.json":
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_hrsc_set_reads_back_through_the_real_reader(tmp_path):
    root = make_synthetic_hrsc(tmp_path / "a", num_train=4, num_test=2, image_size=96, seed=3, verbose=0)
    assert os.path.isdir(os.path.join(root, "FullDataSet", "AllImages"))
    train, info = read_hrsc(root, "trainval", check_images="decode")
    test, _ = read_hrsc(root, "test")
    assert info.class_names == ("ship",) and len(train) == 4 and len(test) == 2
    assert all(len(r.image_id) == 9 and r.image_id.isdigit() for r in train + test)
    for r in train:
        image = cv2.imread(r.image_path)
        assert image.shape == (r.height, r.width, 3) and max(r.width, r.height) == 96
        assert np.all(np.isfinite(r.polygons))
    assert sum(r.num_objects for r in train + test) > 0


def test_deterministic_and_cached(tmp_path):
    kwargs = dict(num_train=3, num_test=1, image_size=80, seed=11, verbose=0)
    a = make_synthetic_hrsc(tmp_path / "a", **kwargs)
    b = make_synthetic_hrsc(tmp_path / "b", **kwargs)
    assert file_bytes(a) == file_bytes(b)
    probe = os.path.join(a, "FullDataSet", "Annotations", "100000001.xml")
    os.utime(probe, (1, 1))
    make_synthetic_hrsc(tmp_path / "a", **kwargs)  # complete and same parameters: skipped
    assert os.stat(probe).st_mtime == 1
    make_synthetic_hrsc(tmp_path / "a", **dict(kwargs, seed=12))  # new parameters: regenerated
    assert os.stat(probe).st_mtime != 1
    assert file_bytes(a) != file_bytes(b)


def test_scenes_are_a_genuine_detection_task():
    lengths, aspects, counts, contrasts, difficult = [], [], [], [], []
    for i in range(30):
        rng = np.random.default_rng([0, 1, i])
        image, objects = render_hrsc_scene(rng, 256, 224)
        gray = image.astype(np.float32).mean(axis=2)
        counts.append(len(objects))
        for o in objects:
            cx, cy, w, h, a = o["mbox"]
            lengths.append(w)
            aspects.append(w / h)
            difficult.append(o["difficult"])
            # contrast: object interior vs a ring around it (independent OpenCV rasterisation)
            box = cv2.boxPoints(((cx, cy), (w, h), np.rad2deg(a)))
            inner = np.zeros(gray.shape, np.uint8)
            cv2.fillPoly(inner, [np.round(box).astype(np.int32)], 1)
            ring = cv2.dilate(inner, np.ones((7, 7), np.uint8)) - inner
            if not o["difficult"] and not o["truncated"] and inner.sum() > 30 and ring.sum() > 30:
                contrasts.append(abs(gray[inner > 0].mean() - gray[ring > 0].mean()) + gray[inner > 0].std())
    lengths = np.array(lengths)
    # sizes spanning the three FPN levels at S = 256 (strides 8/16/32), aspect ratios up to ~10
    assert lengths.min() < 24 and lengths.max() > 120 and np.median(lengths) > 20
    assert max(aspects) > 7 and min(aspects) < 4.5
    assert max(counts) >= 7 and min(counts) <= 3  # crowded harbours and sparse open sea
    assert 0 < np.mean(difficult) < 0.4
    assert np.median(contrasts) > 15


def test_min_ship_length_bounds_every_ship_and_changes_the_cache_key(tmp_path):
    short = []
    for i in range(20):
        _, objects = render_hrsc_scene(np.random.default_rng([0, 1, i]), 256, 224, min_ship_length=0.12)
        assert all(o["mbox"][2] >= 0.12 * 256 - 1e-6 for o in objects)
        _, default_objects = render_hrsc_scene(np.random.default_rng([0, 1, i]), 256, 224)
        short += [o["mbox"][2] < 0.12 * 256 for o in default_objects]
    assert any(short), "the default range (5-70 %) has ships below 12 % of the side"
    kwargs = dict(num_train=2, num_test=1, image_size=80, seed=11, verbose=0)
    root = make_synthetic_hrsc(tmp_path / "a", **kwargs)
    probe = os.path.join(root, "FullDataSet", "Annotations", "100000001.xml")
    os.utime(probe, (1, 1))
    make_synthetic_hrsc(tmp_path / "a", min_ship_length=0.2, **kwargs)  # new parameter: regenerated
    assert os.stat(probe).st_mtime != 1


def test_max_ship_aspect_bounds_every_ship_and_changes_the_cache_key(tmp_path):
    slender = []
    for i in range(20):
        _, objects = render_hrsc_scene(np.random.default_rng([0, 1, i]), 256, 224, max_ship_aspect=5.0)
        for o in objects:
            length, width = o["mbox"][2], o["mbox"][3]
            assert length / width <= 5.0 + 1e-6, (i, o["mbox"])
        _, default_objects = render_hrsc_scene(np.random.default_rng([0, 1, i]), 256, 224)
        slender += [o["mbox"][2] / o["mbox"][3] > 5.0 for o in default_objects]
    assert any(slender), "the default range (up to 10:1) has ships more slender than 5:1"
    kwargs = dict(num_train=2, num_test=1, image_size=80, seed=12, verbose=0)
    root = make_synthetic_hrsc(tmp_path / "a", **kwargs)
    probe = os.path.join(root, "FullDataSet", "Annotations", "100000001.xml")
    os.utime(probe, (1, 1))
    make_synthetic_hrsc(tmp_path / "a", **kwargs)  # same parameters: reused
    assert os.stat(probe).st_mtime == 1
    make_synthetic_hrsc(tmp_path / "a", max_ship_aspect=4.0, **kwargs)  # new parameter: regenerated
    assert os.stat(probe).st_mtime != 1
    # the command line passes it through to the manifest
    assert (
        synthetic_main(
            [
                str(tmp_path / "b"),
                "--num-train",
                "2",
                "--num-test",
                "1",
                "--image-size",
                "80",
                "--max-ship-aspect",
                "4",
                "--min-ship-length",
                "0.2",
            ]
        )
        == 0
    )
    with open(tmp_path / "b" / "manifest.json") as f:
        params = json.load(f)["params"]
    assert params["max_ship_aspect"] == 4.0 and params["min_ship_length"] == 0.2


def test_dota_variant_layout_and_classes(tmp_path):
    root = make_synthetic_dota(tmp_path / "d", num_train=3, num_test=1, image_size=128, seed=1, verbose=0)
    train, info = read_dota(os.path.join(root, "train"), classes=None)
    val, _ = read_dota(os.path.join(root, "val"), classes=list(SYNTHETIC_DOTA_CLASSES))
    assert info.class_names == SYNTHETIC_DOTA_CLASSES and len(train) == 3 and len(val) == 1
    assert train[0].extra["imagesource"] == "synthetic" and max(train[0].width, train[0].height) == 128
    seen = set()
    for i in range(12):
        _, objects = render_dota_scene(np.random.default_rng([5, i]), 256, 256)
        seen |= {o["class_name"] for o in objects}
    assert seen == set(SYNTHETIC_DOTA_CLASSES)


# --------------------------------------------------------------------------- realistic set


def test_realistic_set_reads_back_in_both_class_modes(tmp_path):
    root = make_realistic_hrsc(tmp_path / "r", num_train=4, num_test=2, image_size=256, seed=5, verbose=0)
    for name in ("AllImages", "Annotations"):
        assert os.path.isdir(os.path.join(root, "FullDataSet", name))
    assert not [f for _, _, files in os.walk(root) for f in files if f.endswith(".tmp")]
    ships, info = read_hrsc(root, "trainval", class_mode="ship", check_images="decode")
    test, _ = read_hrsc(root, "test", class_mode="ship")
    typed, info31 = read_hrsc(root, "trainval", class_mode="31")
    assert info.class_names == ("ship",) and info31.class_names == HRSC_CLASS_NAMES_31
    assert len(ships) == 4 and len(test) == 2
    assert [r.image_id for r in ships] == ["100000001", "100000002", "100000003", "100000004"]
    assert [r.image_id for r in test] == ["200000001", "200000002"]
    for r, t in zip(ships, typed):
        image = cv2.imread(r.image_path)
        assert image.shape == (r.height, r.width, 3) and max(r.width, r.height) == 256
        assert np.all(r.classes == 0) and np.array_equal(r.polygons, t.polygons)
        assert np.all(np.isfinite(r.polygons)) and r.extra["truncated"].dtype == bool
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["complete"] and manifest["params"]["kind"] == "hrsc_realistic"
    assert manifest["params"]["version"] == REALISTIC_VERSION
    assert manifest["stats"]["ships"] == sum(r.num_objects for r in ships + test) > 0


def test_realistic_deterministic_and_cached(tmp_path):
    kwargs = dict(num_train=2, num_test=1, image_size=192, seed=7, verbose=0)
    a = make_realistic_hrsc(tmp_path / "a", **kwargs)
    b = make_realistic_hrsc(tmp_path / "b", **kwargs)
    assert file_bytes(a) == file_bytes(b)
    probe = os.path.join(a, "FullDataSet", "Annotations", "100000001.xml")
    os.utime(probe, (1, 1))
    make_realistic_hrsc(tmp_path / "a", **kwargs)  # complete and same parameters: skipped
    assert os.stat(probe).st_mtime == 1
    make_realistic_hrsc(tmp_path / "a", **dict(kwargs, seed=8))  # new parameters: regenerated
    assert os.stat(probe).st_mtime != 1 and file_bytes(a) != file_bytes(b)
    easy = make_synthetic_hrsc(tmp_path / "e", **kwargs)  # a different generator, not the same images
    assert file_bytes(easy) != file_bytes(b)


def _realistic_objects(num, size, seed=0):
    """Objects of `num` scenes with long side `size`, with polygons measured by shapely from the mbox
    corners computed here (cos / sin of mbox_ang, independent of the package's geometry code)."""
    out = []
    for i in range(num):
        rng = np.random.default_rng([seed, 99, i])
        width, height = size, int(size * rng.uniform(0.75, 1.0))
        _, objects = render_realistic_scene(rng, width, height)
        for o in objects:
            cx, cy, w, h, a = o["mbox"]
            u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            corners = [
                np.array([cx, cy]) + su * w / 2 * u + sv * h / 2 * v for su, sv in ((1, 1), (1, -1), (-1, -1), (-1, 1))
            ]
            o["polygon"] = Polygon(corners)
            o["image"] = (i, width, height)
        out.append(objects)
    return out


def test_realistic_sizes_aspects_headings_crowding_truncation_difficulty():
    size = 256
    scenes = _realistic_objects(30, size)
    objects = [o for objs in scenes for o in objs]
    lengths, aspects, headings = [], [], []
    for o in objects:
        poly = o["polygon"]
        rect = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:4]
        sides = np.linalg.norm(np.roll(rect, -1, 0) - rect, axis=1)
        lengths.append(sides.max())
        aspects.append(sides.max() / sides.min())
        cx, cy = o["mbox"][:2]
        headings.append(np.arctan2(o["header"][1] - cy, o["header"][0] - cx))
        # the bow marker sits at the end of the long side
        assert abs(np.hypot(o["header"][0] - cx, o["header"][1] - cy) - sides.max() / 2) < 0.05
        _, width, height = o["image"]
        visible = poly.intersection(box(0, 0, width, height)).area / poly.area
        assert visible > 0.2  # objects mostly outside the image are not annotated
        if visible < 0.9:
            assert o["truncated"]
    lengths, aspects = np.array(lengths), np.array(aspects)
    # 15 px .. 45 % of the side at 512 px, median ~45 px: scaled to 256 px
    assert lengths.min() >= 15 / 512 * size - 0.05 and lengths.max() <= 0.45 * size + 0.05
    assert 0.065 * size < np.median(lengths) < 0.115 * size
    assert lengths.max() > 0.2 * size and np.mean(lengths < 0.05 * size) > 0.05
    assert aspects.min() >= 3.0 - 1e-3 and aspects.max() <= 9.0 + 1e-3
    assert np.mean(aspects > 7) > 0.1 and np.mean(aspects < 4.5) > 0.1
    # any heading: every quadrant of the bow direction is used
    quadrants = np.bincount(((np.array(headings) + np.pi) // (np.pi / 2)).astype(int) % 4, minlength=4)
    assert quadrants.min() > 0.1 * len(headings)
    counts = [len(objs) for objs in scenes]
    assert 4 <= np.mean(counts) <= 11 and max(counts) >= 12 and min(counts) <= 3
    truncated = np.mean([o["truncated"] for o in objects])
    difficult = np.mean([o["difficult"] for o in objects])
    assert 0.03 < truncated < 0.35 and 0.03 < difficult < 0.3
    assert all(o["difficult"] for o in objects if o["mbox"][2] < 18 / 512 * size)


def test_realistic_has_several_hull_classes_and_scene_kinds():
    scenes = _realistic_objects(30, 256, seed=1)
    objects = [o for objs in scenes for o in objs]
    class_ids = {o["class_id"] for o in objects}
    assert class_ids <= {t.class_id for t in HULL_TYPES} and len(class_ids) >= 5
    assert all(len(c) == 9 and c[-2:] in HRSC_CLASS_IDS for c in class_ids)
    assert len({t.class_id for t in HULL_TYPES}) == len(HULL_TYPES) == 10
    assert {o["scene"] for o in objects} == {"harbour", "coast", "channel", "sea"}


def test_realistic_scenes_have_structure_and_ships_stand_out():
    """Harbour images are busy (land, edges), ships differ from their surroundings unless difficult."""
    contrasts, edges = [], []
    for i in range(8):
        rng = np.random.default_rng([3, 99, i])
        image, objects = render_realistic_scene(rng, 256, 256, kind="harbour")
        gray = image.astype(np.float32).mean(axis=2)
        edges.append(np.mean(cv2.Canny(image, 50, 150) > 0))
        for o in objects:
            cx, cy, w, h, a = o["mbox"]
            inner = np.zeros(gray.shape, np.uint8)
            cv2.fillPoly(inner, [np.round(cv2.boxPoints(((cx, cy), (w, h), np.rad2deg(a)))).astype(np.int32)], 1)
            ring = cv2.dilate(inner, np.ones((5, 5), np.uint8)) - inner
            if not o["difficult"] and not o["truncated"] and inner.sum() > 20 and ring.sum() > 20:
                contrasts.append(abs(gray[inner > 0].mean() - gray[ring > 0].mean()) + gray[inner > 0].std())
    assert np.mean(edges) > 0.03 and np.median(contrasts) > 12
