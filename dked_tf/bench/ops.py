"""Benchmark of dked_tf.ops: polygon IoU matrix vs shapely, rotated NMS vs OpenCV and shapely.

    python -m dked_tf bench ops [--quick] [--output PATH]

All contenders run side by side in one process on the same inputs; ratios are computed from
the medians of that run. Our NMS is checked for an identical keep list against a greedy NMS
built on shapely's exact IoU. OpenCV's `cv2.dnn.NMSBoxesRotated` gets the minimum-area
rectangles (its input format; conversion not timed); its keep set can differ slightly
because its rotated-rectangle intersection treats containment and float32 rounding its own
way.
"""

import argparse
import math

import cv2
import numpy as np
import shapely
import tensorflow as tf

from dked_tf.bench.report import format_table, time_call, write_report
from dked_tf.ops.iou import poly_iou
from dked_tf.ops.nms import fast_rotated_nms_tf, rotated_nms, rotated_nms_tf
from dked_tf.ops.obb import poly_to_rbox, rbox_to_poly

IMAGE = 1024.0


def detector_like_boxes(rng, count, boxes_per_object=20):
    """Clusters of jittered boxes around objects, as a detector emits before NMS."""
    objects = max(1, count // boxes_per_object)
    centres = np.stack(
        [
            rng.uniform(40, IMAGE - 40, objects),
            rng.uniform(40, IMAGE - 40, objects),
            rng.uniform(15, 80, objects),
            rng.uniform(8, 40, objects),
            rng.uniform(-math.pi / 2, math.pi / 2, objects),
        ],
        axis=-1,
    )
    boxes = centres[rng.integers(0, objects, count)]
    boxes = boxes + rng.normal(0, 1, (count, 5)) * np.array([3, 3, 3, 2, 0.08])
    boxes[:, 2:4] = np.abs(boxes[:, 2:4]) + 2
    return rbox_to_poly(boxes), rng.uniform(0, 1, count)


def uniform_boxes(rng, count, extent=IMAGE, size=(5.0, 80.0)):
    boxes = np.stack(
        [
            rng.uniform(0, extent, count),
            rng.uniform(0, extent, count),
            rng.uniform(*size, count),
            rng.uniform(*size, count),
            rng.uniform(-math.pi, math.pi, count),
        ],
        axis=-1,
    )
    return rbox_to_poly(boxes), rng.uniform(0, 1, count)


def shapely_iou_matrix(a, b):
    pa = shapely.polygons(a.reshape(-1, 4, 2))
    pb = shapely.polygons(b.reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return inter / union


def shapely_greedy_nms(polys, scores, threshold):
    """Greedy NMS with shapely's exact IoU; an STRtree limits each box's comparisons to kept
    boxes whose envelopes intersect it (a fair, indexed baseline)."""
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    areas = shapely.area(shapes)
    first, second = shapely.STRtree(shapes).query(shapes)
    neighbours = np.split(second, np.searchsorted(first, np.arange(1, len(shapes))))
    is_kept = np.zeros(len(shapes), dtype=bool)
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        others = neighbours[i][is_kept[neighbours[i]]]
        if len(others):
            inter = shapely.area(shapely.intersection(shapes[i], shapes[others]))
            if np.any(inter / (areas[i] + areas[others] - inter) > threshold):
                continue
        is_kept[i] = True
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def opencv_nms(rects, scores, threshold):
    kept = cv2.dnn.NMSBoxesRotated(rects, scores, 0.0, threshold)
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def iou_rows(sizes, rng, repeat):
    """sizes: {"sparse": [n, ...], "dense": [n, ...]}."""
    rows = []
    for name, maker, key in (
        ("sparse (1024² image)", uniform_boxes, "sparse"),
        ("dense (256² area)", lambda r, n: uniform_boxes(r, n, extent=256.0), "dense"),
    ):
        for n in sizes[key]:
            a, _ = maker(rng, n)
            b, _ = maker(rng, n)
            ours = poly_iou(a, b)
            reference = shapely_iou_matrix(a, b)
            t_ours = time_call(lambda: poly_iou(a, b), repeat=repeat, warmup=0)["median_s"]
            t_shapely = time_call(lambda: shapely_iou_matrix(a, b), repeat=1, warmup=0)["median_s"]
            rows.append(
                {
                    "task": f"IoU matrix {name}",
                    "n": f"{n}x{n}",
                    "ours_ms": 1e3 * t_ours,
                    "shapely_ms": 1e3 * t_shapely,
                    "cv2_ms": "",
                    "x_vs_shapely": t_shapely / t_ours,
                    "x_vs_cv2": "",
                    "max_abs_diff": float(np.abs(ours - reference).max()),
                    "overlapping_pairs": f"{(reference > 0).mean():.2%}",
                }
            )
            print(rows[-1], flush=True)
    return rows


def nms_rows(sizes, rng, repeat, threshold=0.45):
    rows = []
    for name, maker in (("detector-like", detector_like_boxes), ("uniform", uniform_boxes)):
        for n in sizes:
            polys, scores = maker(rng, n)
            rboxes = poly_to_rbox(polys)
            rects = [((float(b[0]), float(b[1])), (float(b[2]), float(b[3])), math.degrees(b[4])) for b in rboxes]
            scores32 = scores.astype(np.float32).tolist()
            ours = rotated_nms(polys, scores, threshold)
            t_ours = time_call(lambda: rotated_nms(polys, scores, threshold), repeat=repeat, warmup=1)["median_s"]
            cv2_kept = opencv_nms(rects, scores32, threshold)
            t_cv2 = time_call(lambda: opencv_nms(rects, scores32, threshold), repeat=repeat, warmup=1)["median_s"]
            t_shapely = time_call(lambda: shapely_greedy_nms(polys, scores, threshold), repeat=1, warmup=0)["median_s"]
            reference = shapely_greedy_nms(polys, scores, threshold)
            common = len(set(cv2_kept.tolist()) & set(ours.tolist()))
            rows.append(
                {
                    "task": f"NMS {name} (IoU>{threshold})",
                    "n": n,
                    "ours_ms": 1e3 * t_ours,
                    "shapely_ms": 1e3 * t_shapely,
                    "cv2_ms": 1e3 * t_cv2,
                    "x_vs_shapely": t_shapely / t_ours,
                    "x_vs_cv2": t_cv2 / t_ours,
                    "kept": len(ours),
                    "kept_cv2": len(cv2_kept),
                    "same_as_shapely": bool(np.array_equal(ours, reference)),
                    "cv2_agreement": f"{common / max(1, len(set(ours.tolist()) | set(cv2_kept.tolist()))):.3f}",
                }
            )
            print(rows[-1], flush=True)
    return rows


def tf_rows(sizes, rng, threshold=0.45):
    """TF graph NMS (exact while-loop and builtin-only matrix NMS), CPU, for reference."""
    spec = [tf.TensorSpec([None, 8], tf.float32), tf.TensorSpec([None], tf.float32)]

    @tf.function(input_signature=spec, autograph=False)
    def exact(p, s):
        return rotated_nms_tf(p, s, threshold, max_output=300)

    @tf.function(input_signature=spec, autograph=False)
    def fast(p, s):
        return fast_rotated_nms_tf(p, s, threshold, max_output=300, max_candidates=1000)

    rows = []
    for n in sizes:
        polys, scores = detector_like_boxes(rng, n)
        p32, s32 = tf.constant(polys, tf.float32), tf.constant(scores, tf.float32)
        reference = rotated_nms(polys, scores, threshold, max_output=300)
        indices, count = exact(p32, s32)
        same = np.array_equal(indices.numpy()[: int(count)], reference)
        t_exact = time_call(lambda: exact(p32, s32)[1].numpy(), repeat=3, warmup=1)["median_s"]
        t_fast = time_call(lambda: fast(p32, s32)[1].numpy(), repeat=3, warmup=1)["median_s"]
        t_np = time_call(lambda: rotated_nms(polys, scores, threshold, max_output=300), repeat=3, warmup=1)["median_s"]
        rows.append(
            {
                "task": "TF NMS detector-like: exact graph / fast matrix (top 1000)",
                "n": n,
                "ours_ms": 1e3 * t_np,
                "tf_exact_ms": 1e3 * t_exact,
                "tf_fast_ms": 1e3 * t_fast,
                "same_as_shapely": bool(same),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dked-tf bench ops", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (< 60 s)")
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/ops.json)")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow NMS rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    repeat = 1 if args.quick else 3
    iou_sizes = {"sparse": [1000], "dense": [500]} if args.quick else {"sparse": [2000], "dense": [2000]}
    rows = iou_rows(iou_sizes, rng, repeat)
    rows += nms_rows([500, 2000, 5000], rng, repeat)
    tf_table = [] if (args.quick or args.no_tf) else tf_rows([500, 2000, 5000], rng)
    columns = [
        "task",
        "n",
        "ours_ms",
        "shapely_ms",
        "cv2_ms",
        "x_vs_shapely",
        "x_vs_cv2",
        "max_abs_diff",
        "overlapping_pairs",
        "kept",
        "kept_cv2",
        "same_as_shapely",
        "cv2_agreement",
    ]
    write_report(
        "ops",
        rows,
        path=args.output,
        columns=columns,
        extra={"quick": args.quick, "tf_rows": tf_table},
        title="dked_tf.ops: IoU matrix and rotated NMS (ms, median; x = speed-up of ours)",
    )
    if tf_table:
        print("\n" + format_table(tf_table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
