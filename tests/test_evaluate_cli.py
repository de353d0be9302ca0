"""`dked-tf evaluate`: Task1 result files and DOTA labelTxt / HRSC2016 XML written here in the
real formats, read back by the command; hand-computed APs; bad input named by file and line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dked_tf.cli import main


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_labeltxt(path, objects, header=True):
    """objects: (poly, class, difficult or None for the 9-field form)."""
    with open(path, "w") as f:
        if header:
            f.write("imagesource:GoogleEarth\ngsd:0.146343590398\n")
        for poly, name, difficult in objects:
            fields = [f"{v:g}" for v in poly] + [name]
            if difficult is not None:
                fields.append(str(difficult))
            f.write(" ".join(fields) + "\n")


def write_task1(folder, name, lines):
    """lines: (image_id, score, poly)"""
    with open(os.path.join(folder, f"Task1_{name}.txt"), "w") as f:
        for image_id, score, poly in lines:
            f.write(f"{image_id} {score!r} " + " ".join(repr(float(v)) for v in poly) + "\n")


@pytest.fixture
def dota_set(tmp_path):
    gt = tmp_path / "labelTxt"
    det = tmp_path / "results"
    gt.mkdir()
    det.mkdir()
    write_labeltxt(
        gt / "P0001.txt",
        [
            (square(0, 0, 10, 10), "plane", 0),
            (square(20, 20, 30, 30), "plane", None),  # 9 fields: not difficult
            (square(40, 40, 50, 50), "plane", 2),  # split-truncated: difficult
            (square(60, 0, 80, 10), "ship", 0),
            (square(0, 60, 10, 70), "harbor", 0),  # a class outside --classes: ignored
        ],
    )
    write_labeltxt(gt / "P0002.txt", [(square(5, 5, 25, 15), "ship", 1)], header=False)
    write_task1(
        det,
        "plane",
        [
            ("P0001", 0.9, square(0, 0, 10, 10)),  # TP
            ("P0001", 0.8, square(0, 0, 10, 9.8)),  # duplicate: FP
            ("P0001", 0.7, square(40, 40, 50, 50)),  # on a difficult object: ignored
        ],
    )
    write_task1(
        det,
        "ship",
        [
            ("P0001", 0.6, square(60, 0, 80, 10)),  # TP
            ("P0002", 0.95, square(5, 5, 25, 15)),  # on a difficult object: ignored
        ],
    )
    (tmp_path / "val.txt").write_text("P0001\nP0002\n")
    return tmp_path


def run_cli(*args):
    return main(["evaluate", *map(str, args)])


def test_dota_round_trip_hand_computed(dota_set, capsys):
    out_json = dota_set / "out" / "metrics.json"
    code = run_cli(
        "--format",
        "dota",
        "--gt-dir",
        dota_set / "labelTxt",
        "--det-dir",
        dota_set / "results",
        "--imageset",
        dota_set / "val.txt",
        "--classes",
        "plane,ship",
        "--metric",
        "voc12",
        "--json",
        out_json,
    )
    assert code == 0
    payload = json.loads(out_json.read_text())
    assert set(payload) == {"mAP", "metric", "per_class", "num_gt", "num_det"}
    # plane: TP, FP -> recall .5 .5, precision 1 .5 -> area 0.5; ship: one TP of one -> 1.0
    assert payload["per_class"] == pytest.approx({"plane": 0.5, "ship": 1.0})
    assert payload["mAP"] == pytest.approx(0.75)
    assert payload["num_gt"] == {"plane": 2, "ship": 1}
    assert payload["num_det"] == {"plane": 3, "ship": 2}
    assert payload["metric"] == "voc12"
    printed = capsys.readouterr().out
    assert "plane" in printed and "mAP" in printed and "75.00" in printed
    # plane ranks TP, duplicate, difficult; ship ranks difficult, TP. The first N = positives
    # (2 planes, 1 ship) of each: TP, duplicate | difficult. Precision at k leaves difficult out:
    # at 1 plane 1, ship 0/0 -> 0 (the devkit's eps); at 10 plane 1/2, ship 1/1.
    assert (
        "top of the ranking: first true positive at rank 1 (plane), 2 (ship); precision at 1 / 10 / 100: "
        "0.50 / 0.75 / 0.75; of the first 3 detections: 33 % true positives, 33 % duplicates, "
        "33 % on difficult objects"
    ) in printed

    # VOC07 and difficult counted as positives
    code = run_cli(
        "--format",
        "dota",
        "--gt-dir",
        dota_set / "labelTxt",
        "--det-dir",
        dota_set / "results",
        "--classes",
        "plane,ship",
        "--difficult",
        "count",
        "--json",
        out_json,
    )
    payload = json.loads(out_json.read_text())
    assert code == 0 and payload["metric"] == "voc07"
    assert payload["num_gt"] == {"plane": 3, "ship": 2}
    # plane ranked TP, FP, TP (the difficult one now counts): recall 1/3 1/3 2/3
    recall, precision = np.array([1, 1, 2]) / 3, np.array([1, 0.5, 2 / 3])
    expected = sum((precision[recall >= t].max() if (recall >= t).any() else 0) / 11 for t in np.arange(0, 1.1, 0.1))
    assert payload["per_class"]["plane"] == pytest.approx(expected)


def test_dota_class_lists_and_missing_result_files(dota_set, capsys):
    out_json = dota_set / "m.json"
    assert (
        run_cli(
            "--format", "dota", "--gt-dir", dota_set / "labelTxt", "--det-dir", dota_set / "results", "--json", out_json
        )
        == 0
    )
    payload = json.loads(out_json.read_text())
    assert len(payload["per_class"]) == 15 and payload["per_class"]["harbor"] == 0.0
    assert payload["mAP"] == pytest.approx((6 / 11 + 1.0) / 15)
    assert "no result file" in capsys.readouterr().out
    assert (
        run_cli(
            "--format",
            "dota",
            "--gt-dir",
            dota_set / "labelTxt",
            "--det-dir",
            dota_set / "results",
            "--classes",
            "dota2.0",
            "--json",
            out_json,
        )
        == 0
    )
    assert len(json.loads(out_json.read_text())["per_class"]) == 18


@pytest.mark.parametrize(
    "line, message",
    [
        ("P0001 0.5 1 2 3 4 5 6 7\n", "Task1_plane.txt:4: 9 fields"),
        ("P0001 nan 0 0 10 0 10 10 0 10\n", "Task1_plane.txt:4: score and coordinates"),
        ("P0001 0.5 0 0 10 0 inf 10 0 10\n", "Task1_plane.txt:4: score and coordinates"),
        ("P9999 0.5 0 0 10 0 10 10 0 10\n", "Task1_plane.txt:4: image 'P9999' is not in the image set"),
    ],
)
def test_bad_detection_lines_are_named_or_skipped(dota_set, capsys, line, message):
    with open(dota_set / "results" / "Task1_plane.txt", "a") as f:
        f.write(line)
    args = [
        "--format",
        "dota",
        "--gt-dir",
        dota_set / "labelTxt",
        "--det-dir",
        dota_set / "results",
        "--imageset",
        dota_set / "val.txt",
        "--classes",
        "plane,ship",
        "--json",
        dota_set / "m.json",
    ]
    assert run_cli(*args) == 2
    assert message in capsys.readouterr().err
    assert run_cli(*args, "--no-strict") == 0
    assert "skipped 1 input lines/files" in capsys.readouterr().out
    assert json.loads((dota_set / "m.json").read_text())["mAP"] == pytest.approx((6 / 11 + 1) / 2)


def test_result_file_of_unknown_class_and_bad_ground_truth(dota_set, capsys):
    write_task1(dota_set / "results", "zebra", [("P0001", 0.5, square(0, 0, 1, 1))])
    args = [
        "--format",
        "dota",
        "--gt-dir",
        dota_set / "labelTxt",
        "--det-dir",
        dota_set / "results",
        "--classes",
        "plane,ship",
    ]
    assert run_cli(*args) == 2
    assert "Task1_zebra.txt: class 'zebra' is not in the class list" in capsys.readouterr().err
    os.remove(dota_set / "results" / "Task1_zebra.txt")
    with open(dota_set / "labelTxt" / "P0002.txt", "a") as f:
        f.write("1 2 3 4 5 6 7 8 ship 0 extra\n")
    assert run_cli(*args) == 2
    assert "P0002.txt:2: 11 fields" in capsys.readouterr().err
    # an image in the image set without ground truth file
    (dota_set / "val.txt").write_text("P0001\nP0002\nP0003\n")
    with open(dota_set / "labelTxt" / "P0002.txt", "w") as f:
        f.write("")
    assert run_cli(*args, "--imageset", dota_set / "val.txt") == 2
    assert "P0003.txt: ground truth of image 'P0003' is missing" in capsys.readouterr().err


def hrsc_xml(image_id, objects):
    rows = "".join(
        f"<HRSC_Object><Object_ID>{k}</Object_ID><Class_ID>100000001</Class_ID>"
        f"<truncated>0</truncated><difficult>{d}</difficult>"
        f"<mbox_cx>{cx}</mbox_cx><mbox_cy>{cy}</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>{h}</mbox_h>"
        f"<mbox_ang>{a}</mbox_ang></HRSC_Object>"
        for k, (cx, cy, w, h, a, d) in enumerate(objects)
    )
    return (
        f"<?xml version='1.0' encoding='utf-8'?>\n<HRSC_Image><Img_ID>{image_id}</Img_ID>"
        f"<Img_FileName>{image_id}</Img_FileName><Img_FileFmt>bmp</Img_FileFmt>"
        f"<Img_SizeWidth>200</Img_SizeWidth><Img_SizeHeight>100</Img_SizeHeight>"
        f"<Img_SizeDepth>3</Img_SizeDepth><HRSC_Objects>{rows}</HRSC_Objects></HRSC_Image>\n"
    )


def rotated(cx, cy, w, h, a):
    u = np.array([np.cos(a), np.sin(a)]) * w / 2
    v = np.array([-np.sin(a), np.cos(a)]) * h / 2
    c = np.array([cx, cy])
    return np.concatenate([c - u - v, c + u - v, c + u + v, c - u + v])


def test_hrsc_round_trip_both_metrics(tmp_path):
    ann = tmp_path / "Annotations"
    det = tmp_path / "det"
    ann.mkdir()
    det.mkdir()
    ships = [(60, 40, 80, 20, 0.4, 0), (150, 50, 60, 15, -1.1, 0), (30, 80, 30, 10, 0.0, 1)]
    (ann / "100000001.xml").write_text(hrsc_xml("100000001", ships))
    (ann / "100000002.xml").write_text(hrsc_xml("100000002", []))
    write_task1(
        det,
        "ship",
        [
            ("100000001", 0.9, rotated(60, 40, 80, 20, 0.4)),  # TP
            ("100000002", 0.8, rotated(50, 50, 40, 10, 0.0)),  # FP (no ship there)
            ("100000001", 0.7, rotated(150, 50, 60, 15, -1.1 + np.pi)),  # TP (same box, turned)
        ],
    )
    results = {}
    for metric in ("voc07", "voc12"):
        out = tmp_path / f"{metric}.json"
        assert run_cli("--format", "hrsc", "--gt-dir", ann, "--det-dir", det, "--metric", metric, "--json", out) == 0
        results[metric] = json.loads(out.read_text())
    # ranked TP, FP, TP over 2 positives: recall .5 .5 1, precision 1 .5 2/3
    assert results["voc12"]["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert results["voc07"]["mAP"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert results["voc07"]["num_gt"] == {"ship": 2}


def test_plots_and_module_entry_point(dota_set):
    pytest.importorskip("matplotlib")
    import cv2

    images = dota_set / "images"
    images.mkdir()
    cv2.imwrite(str(images / "P0001.png"), np.full((90, 90, 3), 40, np.uint8))
    plots = dota_set / "plots"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dked_tf",
            "evaluate",
            "--format",
            "dota",
            "--gt-dir",
            str(dota_set / "labelTxt"),
            "--det-dir",
            str(dota_set / "results"),
            "--classes",
            "plane,ship",
            "--plots",
            str(plots),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mAP" in proc.stdout
    assert (plots / "pr_curves.png").is_file()
    overlay = cv2.imread(str(plots / "overlays" / "P0001.png"))
    assert overlay is not None and overlay.shape == (90, 90, 3)
    assert not (overlay == 40).all()  # boxes were drawn


def test_round_trip_through_the_package_writers(tmp_path, rng):
    """Records and detections written by dked_tf.data.dota (labelTxt + Task1), read back by the
    command: the same numbers as evaluate_detections on the in-memory objects."""
    dota = pytest.importorskip("dked_tf.data.dota")
    from dked_tf.data.records import ImageRecord
    from dked_tf.evaluation.metrics import evaluate_detections

    names = ["car", "boat", "tank"]
    records, detections = [], {n: [] for n in names}
    for i in range(12):
        count = int(rng.integers(0, 6))
        polys = np.array(
            [rotated(*rng.uniform(20, 180, 2), *rng.uniform(8, 40, 2), rng.uniform(-3, 3)) for _ in range(count)]
        ).reshape(-1, 8)
        polys = polys.astype(np.float32)  # what the writers keep exactly
        classes = rng.integers(0, 3, count)
        record = ImageRecord(f"img{i}.png", f"img{i}", 200, 200, polys, classes, rng.random(count) < 0.2)
        records.append(record)
        for poly, c in zip(polys, classes):
            for _ in range(int(rng.integers(0, 3))):
                noisy = (poly + rng.normal(0, 2, 8)).astype(np.float32).astype(np.float64)
                detections[names[c]].append((record.image_id, float(rng.random()), noisy))
    gt_dir, det_dir = tmp_path / "labelTxt", tmp_path / "det"
    for record in records:
        dota.write_dota_label(record, str(gt_dir / f"{record.image_id}.txt"), names)
    dota.write_task1(detections, str(det_dir), names)
    for metric in ("voc07", "voc12"):
        out = tmp_path / f"{metric}.json"
        assert (
            run_cli(
                "--format",
                "dota",
                "--gt-dir",
                gt_dir,
                "--det-dir",
                det_dir,
                "--classes",
                ",".join(names),
                "--metric",
                metric,
                "--json",
                out,
            )
            == 0
        )
        payload = json.loads(out.read_text())
        expected = evaluate_detections(detections, records, names, metric=metric)
        assert payload["mAP"] == pytest.approx(expected.map, abs=1e-12)
        assert payload["per_class"] == pytest.approx(expected.per_class, abs=1e-12)
        assert payload["num_gt"] == expected.num_gt
        assert expected.map > 0.1
