"""Benchmark: the vectorised evaluator against a devkit-style per-detection loop on a DOTA-sized
synthetic set (458 images like DOTA v1.0 val, 15 classes), side by side, same data.

    python -m dked_tf bench evaluation [--quick] [--devkit PATH] [--images N]

Reference evaluator:
- with `--devkit PATH` (a folder holding the DOTA devkit's `dota_evaluation_task1.py` and an
  importable `polyiou`): the devkit's own `voc_eval`, run per class on the Task1/labelTxt files
  written by the benchmark (its removed `np.bool` is read as `bool`; its prints are silenced);
- otherwise a small independent loop evaluator written here with the devkit's structure (per
  detection: HBB prefilter, then polygon IoU pair by pair with shapely, greedy matching) to
  estimate the devkit's speed. The table says which one ran.
Both paths of dked_tf are timed: from files (`dked-tf evaluate`'s reading + evaluation) and in
memory (`evaluate_detections`), best of 2-3 runs against one run of the reference, in wall and
CPU seconds. The largest |AP difference| to the reference (over the classes) is reported.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import time
import types

import matplotlib
import numpy as np
from shapely.geometry import Polygon

from dked_tf.bench.report import write_report
from dked_tf.data.dota import DOTA_CLASSES
from dked_tf.evaluation.folders import evaluate_folders
from dked_tf.evaluation.metrics import average_precision, evaluate_detections
from dked_tf.ops.obb import rbox_to_poly

CLASSES = DOTA_CLASSES["dota1.0"]


def make_dataset(num_images, objects_per_image, seed=0, image_size=2000.0):
    """Synthetic DOTA-like set. Returns (ground truths dict, detections dict)."""
    rng = np.random.default_rng(seed)
    # a skewed class mix (small vehicles dominate, as in DOTA)
    weights = np.array([8, 1, 2, 1, 30, 15, 12, 4, 1, 6, 1, 1, 6, 2, 1], np.float64)
    weights /= weights.sum()
    truths, detections = {}, {name: [] for name in CLASSES}
    for i in range(num_images):
        image_id = f"P{i:04d}"
        count = int(rng.poisson(objects_per_image))
        params = np.column_stack(
            [
                rng.uniform(50, image_size - 50, (count, 2)),
                rng.uniform(10, 80, (count, 1)),
                rng.uniform(6, 40, (count, 1)),
                rng.uniform(-np.pi / 2, np.pi / 2, (count, 1)),
            ]
        )
        classes = rng.choice(len(CLASSES), count, p=weights)
        difficult = rng.random(count) < 0.1
        polys = np.round(rbox_to_poly(params), 1)
        truths[image_id] = (polys, [CLASSES[c] for c in classes], difficult)
        # 0-3 detections per object, jittered; plus false positives
        repeats = rng.integers(0, 4, count)
        src = np.repeat(np.arange(count), repeats)
        jitter = rng.normal(0, 1, (len(src), 5)) * [3, 3, 4, 3, 0.08]
        det_params = params[src] + jitter
        num_fp = int(rng.poisson(objects_per_image * 0.5))
        fp_params = np.column_stack(
            [
                rng.uniform(50, image_size - 50, (num_fp, 2)),
                rng.uniform(10, 80, (num_fp, 1)),
                rng.uniform(6, 40, (num_fp, 1)),
                rng.uniform(-np.pi / 2, np.pi / 2, (num_fp, 1)),
            ]
        )
        det_polys = np.round(rbox_to_poly(np.vstack([det_params, fp_params])), 2)
        det_classes = np.concatenate([classes[src], rng.choice(len(CLASSES), num_fp, p=weights)])
        scores = np.round(rng.random(len(det_polys)), 4)
        for poly, c, s in zip(det_polys, det_classes, scores):
            detections[CLASSES[c]].append((image_id, float(s), poly))
    return truths, detections


def write_files(root, truths, detections):
    gt_dir = os.path.join(root, "labelTxt")
    det_dir = os.path.join(root, "results")
    os.makedirs(gt_dir)
    os.makedirs(det_dir)
    for image_id, (polys, names, difficult) in truths.items():
        with open(os.path.join(gt_dir, image_id + ".txt"), "w") as f:
            f.write("imagesource:GoogleEarth\ngsd:0.5\n")
            for poly, name, flag in zip(polys, names, difficult):
                f.write(" ".join(f"{v:.1f}" for v in poly) + f" {name} {int(flag)}\n")
    for name, entries in detections.items():
        with open(os.path.join(det_dir, f"Task1_{name}.txt"), "w") as f:
            for image_id, score, poly in entries:
                f.write(f"{image_id} {score!r} " + " ".join(f"{v:.2f}" for v in poly) + "\n")
    imageset = os.path.join(root, "imageset.txt")
    with open(imageset, "w") as f:
        f.write("\n".join(truths) + "\n")
    return gt_dir, det_dir, imageset


# ---------------------------------------------------------------------------------- references


@contextlib.contextmanager
def _importable_from(folder):
    """`folder` on sys.path for the duration of the block only (the devkit's modules import
    `polyiou` from their own folder)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def load_devkit(path):
    """Imports the devkit's dota_evaluation_task1 from `path` (np.bool read as bool)."""
    # the external DOTA devkit (and its compiled polyiou) may be absent: loaded here, only with --devkit
    source_path = os.path.join(path, "dota_evaluation_task1.py")
    if not os.path.isfile(source_path):
        raise FileNotFoundError(f"{source_path} not found (--devkit must be the devkit folder)")
    with open(source_path) as f:
        source = f.read().replace("np.bool)", "bool)")
    module = types.ModuleType("dota_evaluation_task1")
    module.__file__ = source_path
    matplotlib.use("Agg")  # the devkit imports pyplot
    with _importable_from(os.path.abspath(path)):
        if importlib.util.find_spec("polyiou") is None:
            raise ImportError(f"polyiou is not importable from {path} (build the devkit's extension)")
        exec(compile(source, source_path, "exec"), module.__dict__)
    return module


def devkit_evaluate(devkit, gt_dir, det_dir, imageset, use_07=True):
    aps = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for name in CLASSES:
            _, _, ap = devkit.voc_eval(
                os.path.join(det_dir, "Task1_{:s}.txt"),
                os.path.join(gt_dir, "{:s}.txt"),
                imageset,
                name,
                ovthresh=0.5,
                use_07_metric=use_07,
            )
            aps[name] = float(ap)
    return aps


def loop_evaluate(truths, detections, use_07=True):
    """Independent devkit-style evaluator: a Python loop over detections, shapely IoU per pair
    after an HBB prefilter, greedy matching. Returns dict class -> AP."""
    aps = {}
    for name in CLASSES:
        per_image, npos = {}, 0
        for image_id, (polys, names, difficult) in truths.items():
            keep = [k for k, n in enumerate(names) if n == name]
            per_image[image_id] = (polys[keep], difficult[keep], np.zeros(len(keep), bool))
            npos += int((~difficult[keep]).sum())
        entries = detections.get(name, [])
        if not entries or npos == 0:
            aps[name] = 0.0
            continue
        scores = np.array([e[1] for e in entries])
        order = np.argsort(-scores)
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for d, k in enumerate(order):
            image_id, _, poly = entries[k]
            gt_polys, gt_difficult, taken = per_image[image_id]
            best, best_j = -np.inf, -1
            if len(gt_polys):
                x0, y0 = poly[0::2].min(), poly[1::2].min()
                x1, y1 = poly[0::2].max(), poly[1::2].max()
                iw = np.minimum(gt_polys[:, 0::2].max(1), x1) - np.maximum(gt_polys[:, 0::2].min(1), x0) + 1
                ih = np.minimum(gt_polys[:, 1::2].max(1), y1) - np.maximum(gt_polys[:, 1::2].min(1), y0) + 1
                candidates = np.flatnonzero((iw > 0) & (ih > 0))
                det_shape = Polygon(poly.reshape(4, 2))
                for j in candidates:
                    gt_shape = Polygon(gt_polys[j].reshape(4, 2))
                    inter = det_shape.intersection(gt_shape).area
                    iou = inter / (det_shape.area + gt_shape.area - inter)
                    if iou > best:
                        best, best_j = iou, j
            if best > 0.5:
                if not gt_difficult[best_j]:
                    if not taken[best_j]:
                        tp[d] = 1
                        taken[best_j] = True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[name] = average_precision(recall, precision, "voc07" if use_07 else "voc12")
    return aps


# ---------------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="dked-tf bench evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smaller set (< 60 s)")
    parser.add_argument("--images", type=int, default=None, help="images (default 458; quick 60)")
    parser.add_argument(
        "--objects", type=float, default=None, help="mean objects per image (default 62 like DOTA val; quick 40)"
    )
    parser.add_argument(
        "--devkit",
        default=None,
        metavar="PATH",
        help="folder with the DOTA devkit's dota_evaluation_task1.py and polyiou",
    )
    parser.add_argument("--metric", choices=("voc07", "voc12"), default="voc07")
    parser.add_argument("--out", default=None, help="JSON path (default bench_results/evaluation.json)")
    args = parser.parse_args(argv)

    num_images = args.images or (60 if args.quick else 458)
    objects = args.objects or (40.0 if args.quick else 62.0)
    truths, detections = make_dataset(num_images, objects)
    num_gt = sum(len(v[0]) for v in truths.values())
    num_det = sum(len(v) for v in detections.values())
    use_07 = args.metric == "voc07"
    print(
        f"synthetic DOTA-like set: {num_images} images, {num_gt} objects, {num_det} detections, "
        f"{len(CLASSES)} classes, {args.metric}"
    )

    rows = []
    with tempfile.TemporaryDirectory() as root:
        gt_dir, det_dir, imageset = write_files(root, truths, detections)

        if args.devkit:
            devkit = load_devkit(args.devkit)
            reference_name = "DOTA devkit voc_eval (files, per class)"
            start, start_cpu = time.perf_counter(), time.process_time()
            reference = devkit_evaluate(devkit, gt_dir, det_dir, imageset, use_07)
            reference_s = time.perf_counter() - start
            reference_cpu = time.process_time() - start_cpu
        else:
            reference_name = "devkit-style loop, shapely per pair (in memory; devkit estimate)"
            start, start_cpu = time.perf_counter(), time.process_time()
            reference = loop_evaluate(truths, detections, use_07)
            reference_s = time.perf_counter() - start
            reference_cpu = time.process_time() - start_cpu
        reference_map = float(np.mean(list(reference.values())))

        def ours_files():
            return evaluate_folders("dota", gt_dir, det_dir, imageset=imageset, metric=args.metric)[0]

        def ours_memory():
            return evaluate_detections(detections, truths, list(CLASSES), metric=args.metric)

        timings = {}
        results = {}
        for label, fn in (
            ("dked_tf evaluate_folders (files: read + evaluate)", ours_files),
            ("dked_tf evaluate_detections (in memory)", ours_memory),
        ):
            best, best_cpu = np.inf, np.inf
            for _ in range(2 if args.quick else 3):
                start, start_cpu = time.perf_counter(), time.process_time()
                results[label] = fn()
                best = min(best, time.perf_counter() - start)
                best_cpu = min(best_cpu, time.process_time() - start_cpu)
            timings[label] = (best, best_cpu)

    # CPU seconds of this process are the steadier figure on a shared machine (all evaluators
    # here run on one core); wall seconds are also given.
    rows.append(
        {
            "evaluator": reference_name,
            "wall s": reference_s,
            "cpu s": reference_cpu,
            "mAP": reference_map,
            "max |AP diff|": 0.0,
            "speed-up wall": 1.0,
            "speed-up cpu": 1.0,
        }
    )
    for label, (seconds, cpu) in timings.items():
        result = results[label]
        diff = max(abs(result.per_class[n] - reference[n]) for n in CLASSES)
        rows.append(
            {
                "evaluator": label,
                "wall s": seconds,
                "cpu s": cpu,
                "mAP": float(result.map),
                "max |AP diff|": float(diff),
                "speed-up wall": reference_s / seconds,
                "speed-up cpu": reference_cpu / cpu,
            }
        )
    write_report(
        "evaluation",
        rows,
        path=args.out,
        title=f"Rotated mAP evaluation, {num_images} images / {num_gt} objects / {num_det} "
        f"detections ({args.metric}); reference: {reference_name}",
        extra={
            "images": num_images,
            "objects": num_gt,
            "detections": num_det,
            "metric": args.metric,
            "reference": reference_name,
            "quick": args.quick,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
