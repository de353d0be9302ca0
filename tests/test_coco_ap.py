"""dked_tf.evaluation.coco (COCO-style rotated AP) against hand-computed values and a plain
loop evaluator written here after pycocotools' COCOeval.evaluateImg / accumulate (shapely IoU,
one detection and one ground truth at a time); `dked-tf evaluate --metric coco --json`."""

import json

import numpy as np
import pytest
from scoring_cases import gt_dict, rect, square
from shapely.geometry import Polygon

from dked_tf.cli import main
from dked_tf.evaluation.coco import evaluate_coco

# ---------------------------------------------------------------------- independent reference

# the points as pycocotools' Params defines them
THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
RECALLS = np.linspace(0.0, 1.0, 101).tolist()


def shapely_overlap(det, gt, crowd):
    a, b = Polygon(np.reshape(det, (4, 2))), Polygon(np.reshape(gt, (4, 2)))
    inter = a.intersection(b).area
    if crowd:  # pycocotools' iou for iscrowd objects: intersection / detection area
        return inter / a.area if a.area > 0 else 0.0
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def reference_coco(detections, truths, class_names, difficult="ignore", max_dets=100):
    """AP [threshold][class] (-1 without positives) with pycocotools' loops."""
    table = []
    for t in THRESHOLDS:
        row = []
        for name in class_names:
            entries = [(k, *e) for k, e in enumerate(detections.get(name, []))]  # (file index, image, score, poly)
            kept, positives = [], 0
            results = {}  # file index -> (matched, ignored)
            for image_id, (polys, names, flags) in truths.items():
                gts = [(p, bool(f) and difficult == "ignore") for p, n, f in zip(polys, names, flags) if n == name]
                gts = [g for g in gts if not g[1]] + [g for g in gts if g[1]]  # ignored last (stable)
                positives += sum(1 for g in gts if not g[1])
                dets = sorted([e for e in entries if e[1] == image_id], key=lambda e: -e[2])[:max_dets]
                kept += dets
                taken = [False] * len(gts)
                for file_index, _, _, poly in dets:
                    best, m = min(t, 1 - 1e-10), -1
                    for g, (gpoly, ignore) in enumerate(gts):
                        if taken[g] and not ignore:
                            continue
                        if m > -1 and not gts[m][1] and ignore:
                            break
                        iou = shapely_overlap(poly, gpoly, ignore)
                        if iou < best:
                            continue
                        best, m = iou, g
                    if m == -1:
                        results[file_index] = (False, False)
                    else:
                        results[file_index] = (True, gts[m][1])
                        if not gts[m][1]:
                            taken[m] = True
            if positives == 0:
                row.append(-1.0)
                continue
            kept.sort(key=lambda e: e[0])  # the files' order, then a stable sort by score
            kept.sort(key=lambda e: -e[2])
            tp = fp = 0
            recall, precision = [], []
            for file_index, *_ in kept:
                matched, ignored = results[file_index]
                if not ignored:
                    tp += matched
                    fp += not matched
                recall.append(tp / positives)
                precision.append(tp / (tp + fp + np.spacing(1)))
            for i in range(len(precision) - 1, 0, -1):
                precision[i - 1] = max(precision[i - 1], precision[i])
            points = []
            for r in RECALLS:
                index = next((i for i, value in enumerate(recall) if value >= r), None)
                points.append(precision[index] if index is not None else 0.0)
            row.append(sum(points) / len(points))
        table.append(row)
    return np.array(table)


def check_against_reference(dets, gts, classes, **kw):
    result = evaluate_coco(dets, gts, classes, **kw)
    ref = reference_coco(dets, gts, classes, **kw)
    np.testing.assert_allclose(result.ap_table, ref, rtol=0, atol=1e-12)
    used = ref[0] >= 0
    expected = ref[:, used].mean() if used.any() else -1.0
    assert result.map == pytest.approx(expected, abs=1e-12)
    return result, ref


# ---------------------------------------------------------------------------- hand-computed


def test_iou_exactly_on_thresholds():
    gts = gt_dict(("i", [(square(0, 0, 10, 10), "a", 0)]), ("j", [(square(0, 0, 10, 10), "a", 0)]))
    # IoU exactly 0.5 (matches at t = 0.5 only) and exactly 0.75 (t = 0.5 ... 0.75)
    result = evaluate_coco({"a": [("i", 0.9, square(0, 0, 10, 5))]}, gts, ["a"])
    # one of two positives found: precision 1 up to recall 0.5 -> 51 of 101 points
    assert result.ap50 == pytest.approx(51 / 101, abs=1e-12)
    assert result.ap75 == 0.0
    assert result.map == pytest.approx(51 / 101 / 10, abs=1e-12)
    result = evaluate_coco({"a": [("i", 0.9, square(0, 0, 10, 7.5)), ("j", 0.8, square(0, 0, 10, 10))]}, gts, ["a"])
    assert result.ap50 == pytest.approx(1.0) and result.ap75 == pytest.approx(1.0)
    # t = 0.80 ... 0.95: FP then TP of 2 -> precision 1/2 up to recall 1/2 (51 points), then 0
    expected = (6 * 1.0 + 4 * 0.5 * 51 / 101) / 10
    assert result.map == pytest.approx(expected, abs=1e-12)
    assert result.per_class == {"a": pytest.approx(expected, abs=1e-12)}
    check_against_reference({"a": [("i", 0.9, square(0, 0, 10, 7.5)), ("j", 0.8, square(0, 0, 10, 10))]}, gts, ["a"])


def test_equal_scores_keep_the_files_order():
    gts = gt_dict(("A", [(square(0, 0, 10, 10), "a", 0)]), ("B", [(square(0, 0, 10, 10), "a", 0)]))
    fp_first = [("B", 0.8, square(50, 50, 60, 60)), ("A", 0.8, square(0, 0, 10, 10)), ("B", 0.5, square(0, 0, 10, 10))]
    # FP, TP, TP: precision 0, 1/2, 2/3 -> envelope 2/3 at every recall point
    result, _ = check_against_reference({"a": fp_first}, gts, ["a"])
    assert result.map == pytest.approx(2 / 3, abs=1e-12)
    tp_first = [fp_first[1], fp_first[0], fp_first[2]]
    # TP, FP, TP: precision 1 up to recall 0.5 (51 points), then 2/3 (50 points)
    result, _ = check_against_reference({"a": tp_first}, gts, ["a"])
    assert result.map == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


def test_equal_iou_takes_the_last_ground_truth():
    # d1 overlaps g1 and g2 with IoU 0.6 each; pycocotools' `<` test gives it the LAST, g2,
    # which leaves g1 to d2 (with the first, d2 would find g1 taken and g2 at IoU 1/3: FP)
    g1, g2 = square(0, 0, 10, 10), square(5, 0, 15, 10)
    gts = gt_dict(("i", [(g1, "a", 0), (g2, "a", 0)]))
    dets = [("i", 0.9, square(2.5, 0, 12.5, 10)), ("i", 0.8, square(0, 0, 10, 10))]
    result, _ = check_against_reference({"a": dets}, gts, ["a"])
    np.testing.assert_allclose(result.ap_table[:3, 0], 1.0, atol=1e-12)


def test_difficult_objects_are_crowd_regions():
    gts = gt_dict(("i", [(square(0, 0, 10, 10), "a", 0), (square(20, 0, 30, 10), "a", 1)]))
    dets = [
        ("i", 0.95, square(20, 0, 30, 10)),  # on the difficult object: ignored
        ("i", 0.9, square(20, 0, 30, 10)),  # again (a crowd region is never used up): ignored
        ("i", 0.85, square(20, 0, 25, 5)),  # IoU 0.25, but 1.0 of its own area: ignored
        ("i", 0.8, square(0, 0, 10, 10)),  # TP
    ]
    result, _ = check_against_reference({"a": dets}, gts, ["a"])
    assert result.map == pytest.approx(1.0) and result.num_gt == {"a": 1}
    # counted as a positive, the difficult object is matched once: TP, FP, FP, TP of 2
    result, ref = check_against_reference({"a": dets}, gts, ["a"], difficult="count")
    assert result.num_gt == {"a": 2}
    assert result.map == pytest.approx((51 * 1.0 + 50 * 0.5) / 101, abs=1e-12)
    # a regular ground truth wins over a better-overlapping difficult one
    gts = gt_dict(("i", [(square(0, 0, 10, 10), "a", 0), (square(0, 0, 10, 10), "a", 1)]))
    result, _ = check_against_reference({"a": [("i", 0.9, square(0, 0, 10, 6))]}, gts, ["a"])
    # TP at t <= 0.6 (IoU 0.6; the crowd overlap is 1.0); above, it falls on the crowd: ignored
    np.testing.assert_allclose(result.ap_table[:, 0], [1.0] * 3 + [0.0] * 7, atol=1e-12)


def test_at_most_100_detections_per_image_and_class():
    gts = gt_dict(("i", [(square(0, 0, 10, 10), "a", 0)]), ("j", [(square(0, 0, 10, 10), "b", 0)]))
    far = [("i", 0.9, square(100 + 20 * k, 0, 110 + 20 * k, 10)) for k in range(100)]
    late = ("i", 0.1, square(0, 0, 10, 10))
    result = evaluate_coco({"a": far + [late]}, gts, ["a", "b"])
    assert result.per_class["a"] == 0.0 and result.capped == {"a": 1, "b": 0}
    assert result.per_class["b"] == 0.0 and result.num_det == {"a": 101, "b": 0}
    result, _ = check_against_reference({"a": far + [late]}, gts, ["a"], max_dets=101)
    assert result.map == pytest.approx(1 / 101, abs=1e-12)
    # the cap is per image: another image's detections are not counted against it
    gts["k"] = (square(0, 0, 10, 10)[None], ["a"], np.zeros(1, bool))
    result, _ = check_against_reference({"a": far + [("k", 0.05, square(0, 0, 10, 10))]}, gts, ["a"])
    # 100 FP then the TP of k: recall 1/2 at precision 1/101 -> 51 of 101 points
    assert result.map == pytest.approx(51 / 101 / 101, abs=1e-12)


def test_classes_without_ground_truth_are_left_out():
    gts = gt_dict(("i", [(square(0, 0, 10, 10), "a", 0), (square(20, 0, 30, 10), "b", 1)]))
    dets = {"a": [("i", 0.9, square(0, 0, 10, 10))], "b": [("i", 0.9, square(50, 0, 60, 10))]}
    result, ref = check_against_reference(dets, gts, ["a", "b", "c"])
    assert result.per_class == {"a": pytest.approx(1.0), "b": -1.0, "c": -1.0}
    assert [result.map, result.ap50, result.ap75] == pytest.approx([1.0, 1.0, 1.0])
    empty = evaluate_coco({}, gt_dict(("i", [])), ["a"])
    assert empty.map == -1.0 and empty.to_dict()["per_class"] == {"a": -1.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b"]
    images, dets = [], {"a": [], "b": []}
    for i in range(4):
        objects = []
        for _ in range(rng.integers(0, 6)):
            poly = rect(*rng.uniform(20, 80, 2), *rng.uniform(8, 30, 2), rng.uniform(0, np.pi))
            objects.append((poly, classes[rng.integers(0, 2)], rng.random() < 0.25))
        images.append((f"img{i}", objects))
        for poly, name, _ in objects:
            for _ in range(rng.integers(0, 3)):  # jittered copies: IoUs spread over the thresholds
                jitter = poly + rng.normal(0, 1.5, 8)
                dets[name].append((f"img{i}", round(rng.uniform(0, 1), 1), jitter))
        for _ in range(rng.integers(0, 4)):
            poly = rect(*rng.uniform(0, 100, 2), *rng.uniform(5, 30, 2), rng.uniform(0, np.pi))
            dets[classes[rng.integers(0, 2)]].append((f"img{i}", round(rng.uniform(0, 1), 1), poly))
    order = rng.permutation(len(dets["a"]))
    dets["a"] = [dets["a"][k] for k in order]
    gts = gt_dict(*images)
    check_against_reference(dets, gts, classes)
    check_against_reference(dets, gts, classes, difficult="count")
    check_against_reference(dets, gts, classes, max_dets=2)


# ---------------------------------------------------------------------------- the command


def write_labeltxt(path, objects):
    with open(path, "w") as f:
        for poly, name, difficult in objects:
            f.write(" ".join(f"{v:g}" for v in poly) + f" {name} {difficult}\n")


def write_task1(folder, name, lines):
    with open(folder / f"Task1_{name}.txt", "w") as f:
        for image_id, score, poly in lines:
            f.write(f"{image_id} {score!r} " + " ".join(repr(float(v)) for v in poly) + "\n")


def test_cli_coco_json(tmp_path, capsys):
    gt, det = tmp_path / "labelTxt", tmp_path / "results"
    gt.mkdir()
    det.mkdir()
    write_labeltxt(
        gt / "P1.txt",
        [(square(0, 0, 10, 10), "plane", 0), (square(20, 0, 30, 10), "plane", 1), (square(40, 0, 60, 10), "ship", 0)],
    )
    write_labeltxt(gt / "P2.txt", [(square(0, 0, 10, 10), "plane", 0)])
    write_task1(det, "plane", [("P1", 0.9, square(0, 0, 10, 7.5)), ("P1", 0.8, square(20, 0, 30, 10))])
    write_task1(det, "ship", [("P1", 0.7, square(40, 0, 60, 10))])
    out = tmp_path / "coco.json"
    args = ["evaluate", "--format", "dota", "--gt-dir", gt, "--det-dir", det, "--classes", "plane,ship,harbor"]
    code = main([str(a) for a in args + ["--metric", "coco", "--json", out]])
    assert code == 0
    payload = json.loads(out.read_text())
    # plane: 1 of 2 positives at IoU 0.75 (6 thresholds), the difficult hit ignored; ship: exact
    plane = 6 / 10 * 51 / 101
    assert payload == {
        "metric": "coco",
        "mAP": pytest.approx((plane + 1.0) / 2, abs=1e-12),
        "AP50": pytest.approx((51 / 101 + 1.0) / 2, abs=1e-12),
        "AP75": pytest.approx((51 / 101 + 1.0) / 2, abs=1e-12),
        "per_class": {"plane": pytest.approx(plane, abs=1e-12), "ship": pytest.approx(1.0), "harbor": -1.0},
        "num_gt": {"plane": 2, "ship": 1, "harbor": 0},
        "num_det": {"plane": 2, "ship": 1, "harbor": 0},
    }
    assert "AP50:95" in capsys.readouterr().out
    # the VOC-only switches are refused with coco: one line, exit code 2
    assert main([str(a) for a in args + ["--metric", "coco", "--iou-threshold", "0.6"]]) == 2
    assert "--iou-threshold" in capsys.readouterr().err
