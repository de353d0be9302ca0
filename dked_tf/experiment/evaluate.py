"""The figures of a results table: mAP of a model on records, parameters, GFLOPs, CPU latency."""

import time

import numpy as np
import tensorflow as tf

from dked_tf.data.split import merge_detections
from dked_tf.evaluation.metrics import evaluate_detections
from dked_tf.evaluation.runner import predict_records

# DOTA: patch detections are merged back to scenes with class-wise polygon NMS at this IoU
# (the devkit's merge).
MERGE_IOU = 0.1


def detect_records(model, records, class_names, cfg, verbose=1):
    """Detections of `model` on `records` (class -> [(image_id, score, poly [8])], original
    pixels) with the config's input size, batch and decode thresholds."""
    return predict_records(
        model,
        records,
        cfg.data.inference_size,
        batch_size=cfg.eval_batch_size,
        score_threshold=cfg.model.score_threshold,
        iou_threshold=cfg.model.iou_threshold,
        max_detections=cfg.model.max_detections,
        class_names=list(class_names),
        verbose=verbose,
    )


def detect_scenes(model, patches, class_names, cfg, verbose=1):
    """DOTA: detections on the patch records merged back to their scenes (scene pixels)."""
    return merge_detections(detect_records(model, patches, class_names, cfg, verbose=verbose), iou_threshold=MERGE_IOU)


def evaluate_map(model, records, class_names, cfg, verbose=1, return_results=False):
    """mAP(07) and mAP(12) (DOTA devkit semantics, IoU > 0.5) of `model` on `records`.

    Returns {"map07", "map12", "per_class07", "per_class12", "num_gt", "num_det", "degenerate_gt"}
    (degenerate_gt: ground truth that is no region, kind -> count, kept as the devkit keeps it);
    with return_results=True (metrics, {"voc07": EvalResult, "voc12": EvalResult}, detections)."""
    detections = detect_records(model, records, class_names, cfg, verbose=verbose)
    return score_detections(detections, records, class_names, return_results=return_results)


def score_detections(detections, records, class_names, return_results=False):
    """The metrics dict of `evaluate_map` for ready detections (class -> [(id, score, poly)])."""
    results = {m: evaluate_detections(detections, records, list(class_names), metric=m) for m in ("voc07", "voc12")}
    metrics = {
        "map07": float(results["voc07"].map),
        "map12": float(results["voc12"].map),
        "per_class07": {k: float(v) for k, v in results["voc07"].per_class.items()},
        "per_class12": {k: float(v) for k, v in results["voc12"].per_class.items()},
        "num_gt": {k: int(v) for k, v in dict(results["voc07"].num_gt).items()},
        "num_det": {k: int(v) for k, v in dict(results["voc07"].num_det).items()},
        "degenerate_gt": dict(results["voc07"].degenerate_gt),
    }
    if return_results:
        return metrics, results, detections
    return metrics


def measure_latency_ms(model, image_size, runs=20, warmup=3, include_decode=False, **decode_kwargs):
    """Median wall time (ms) of one forward pass of a batch-1 [1, S, S, 3] image on this
    machine's CPU, compiled with tf.function; `include_decode=True` adds `model.decode`
    (scores, polygons, rotated NMS)."""
    images = tf.random.stateless_uniform([1, image_size, image_size, 3], seed=(1, 2))

    @tf.function(reduce_retracing=True)
    def forward(x):
        head = model(x, training=False)["head"]
        if include_decode:
            return model.decode(head, **decode_kwargs)
        return head

    with tf.device("/CPU:0"):
        for _ in range(max(1, warmup)):
            tf.nest.map_structure(lambda t: t.numpy(), forward(images))
        times = []
        for _ in range(max(1, runs)):
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), forward(images))
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)
