"""Running a detector over annotated records and scoring it.

`predict_records` feeds the records through the evaluation pipeline (`build_dataset(...,
training=False)`, letterboxed), decodes with the model's `decode`, undoes the letterbox and
returns detections per class in original image pixels: the evaluator's input, and what the DOTA
Task1 writer takes.
"""

import math

import numpy as np
import tensorflow as tf

from dked_tf.data.pipeline import build_dataset
from dked_tf.evaluation.metrics import evaluate_all_metrics, evaluate_detections
from dked_tf.terminal import progress as terminal_progress


def inference_model(model):
    """The model that detects: a Distiller's student, or the model itself."""
    student = getattr(model, "student", None)
    return student if student is not None else model


def progress(iterable, total=None, verbose=1, desc=None):
    """A tqdm progress bar over iterable (total items, desc label) when verbose and on a terminal,
    else the iterable (`dked_tf.terminal.progress`)."""
    return terminal_progress(iterable, total=total, desc=desc, verbose=verbose, leave=False)


def _to_numpy(value):
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def make_detect_fn(model, score_threshold=0.05, iou_threshold=0.3, max_detections=300, graph=True):
    """Returns fn(images float32 [B, S, S, 3]) -> decode dict of numpy arrays
    (`polygons [B, K, 8]`, `scores [B, K]`, `classes [B, K]`, `num_detections [B]`, input
    pixels), using `model.decode` on the head outputs, or `predict_on_batch` for models whose
    prediction already is that dict. graph: trace network + decode into one tf.function
    (fast per batch once traced; tracing the decode takes seconds), else run the network in a
    graph and the decode eagerly."""
    model = inference_model(model)
    if hasattr(model, "decode"):

        def forward_and_decode(images):
            head = model(images, training=False)["head"]
            return model.decode(
                head, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
            )

        # One graph for network + decode when the decode traces (OrientedDetector's does);
        # otherwise the network in a graph and the decode eagerly.
        state = {"graph": tf.function(forward_and_decode, reduce_retracing=True) if graph else None}

        def network(images):
            return model(images, training=False)["head"]

        forward = tf.function(network, reduce_retracing=True) if graph else network

        def detect(images):
            if state["graph"] is not None:
                try:
                    decoded = state["graph"](images)
                    return {key: _to_numpy(value) for key, value in decoded.items()}
                except (
                    TypeError,
                    ValueError,
                    NotImplementedError,
                    AttributeError,
                    tf.errors.OperatorNotAllowedInGraphError,
                ):
                    state["graph"] = None
            decoded = model.decode(
                forward(images),
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
            )
            return {key: _to_numpy(value) for key, value in decoded.items()}

        return detect

    def detect_with_predict(images):
        decoded = model.predict_on_batch(images)
        if not isinstance(decoded, dict) or "polygons" not in decoded:
            raise TypeError(
                "the model has no `decode` method and its prediction is not the "
                "decode dict (polygons, scores, classes, num_detections)"
            )
        return {key: _to_numpy(value) for key, value in decoded.items()}

    return detect_with_predict


def _valid_counts(decoded, batch):
    if "num_detections" in decoded:
        return np.asarray(decoded["num_detections"]).reshape(-1).astype(np.int64)
    return np.full(batch, np.asarray(decoded["scores"]).shape[1], np.int64)


def predict_records(
    model,
    records,
    image_size,
    batch_size=8,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    class_names=None,
    verbose=1,
    detect_fn=None,
    dataset=None,
):
    """Detections of `model` on `records`, in original image pixels.

    records: list of ImageRecord (images read from `image_path`). image_size: S of the
    letterboxed S x S input. score_threshold / iou_threshold / max_detections: passed to the
    model's decode (NMS IoU threshold). class_names: names for the class indices (default:
    "0", "1", ...). detect_fn: a function from `make_detect_fn` to reuse (its thresholds
    apply; saves retracing when called repeatedly, e.g. every epoch). dataset: the
    `build_dataset(records, image_size, batch_size, training=False)` to reuse, if already built.
    Returns: dict class name -> list of (image_id, score, poly float64 [8]); every class name
    is a key (possibly with an empty list).
    """
    records = list(records)
    net = inference_model(model)
    if class_names is None:
        num_classes = int(getattr(net, "num_classes", 0) or 0)
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    detections = {name: [] for name in class_names}
    if not records:
        return detections
    if dataset is None:
        dataset = build_dataset(records, image_size, batch_size, training=False)
    detect = detect_fn or make_detect_fn(net, score_threshold, iou_threshold, max_detections)
    total = math.ceil(len(records) / batch_size)
    for images, targets in progress(dataset, total=total, verbose=verbose, desc="detect"):
        decoded = detect(images)
        index = _to_numpy(targets["image_index"]).reshape(-1)
        scale = _to_numpy(targets["scale"]).reshape(-1).astype(np.float64)
        offset = _to_numpy(targets["offset"]).reshape(-1, 2).astype(np.float64)
        polygons = np.asarray(decoded["polygons"], np.float64)
        scores = np.asarray(decoded["scores"], np.float64)
        classes = np.asarray(decoded["classes"]).astype(np.int64)
        counts = _valid_counts(decoded, len(index))
        for b in range(len(index)):
            image_id = records[int(index[b])].image_id
            k = int(counts[b])
            # letterboxed = original * scale + offset
            original = (polygons[b, :k].reshape(k, 4, 2) - offset[b]) / scale[b]
            original = original.reshape(k, 8)
            for poly, score, label in zip(original, scores[b, :k], classes[b, :k]):
                if not 0 <= label < len(class_names):
                    raise ValueError(
                        f"the model predicted class {label}, but there are only {len(class_names)} class names"
                    )
                if not (np.isfinite(score) and np.isfinite(poly).all()):
                    raise ValueError(
                        f"non-finite detection on image {image_id!r}: score {score}, polygon {poly.tolist()}"
                    )
                detections[class_names[label]].append((image_id, float(score), poly))
    return detections


def evaluate_model(
    model,
    records,
    class_names,
    image_size,
    metric="voc07",
    *,
    batch_size=8,
    score_threshold=0.05,
    nms_iou_threshold=0.3,
    max_detections=300,
    verbose=1,
    **eval_kwargs,
):
    """predict_records + evaluate_detections on the records' own ground truth.

    metric: "voc07" / "voc12" -> EvalResult, or a tuple of them -> dict metric -> EvalResult.
    nms_iou_threshold: the decode's NMS threshold; eval_kwargs (iou_threshold, comparison,
    difficult, preset, mean_over) go to the evaluator.
    """
    records = list(records)
    detections = predict_records(
        model,
        records,
        image_size,
        batch_size=batch_size,
        score_threshold=score_threshold,
        iou_threshold=nms_iou_threshold,
        max_detections=max_detections,
        class_names=class_names,
        verbose=verbose,
    )
    if isinstance(metric, (tuple, list)):
        return evaluate_all_metrics(detections, records, class_names, metric, **eval_kwargs)
    return evaluate_detections(detections, records, class_names, metric=metric, **eval_kwargs)
