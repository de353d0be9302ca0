"""A Keras callback that scores rotated mAP on a validation set during `fit`."""

import math

import keras
import numpy as np

from dked_tf.data.pipeline import build_dataset
from dked_tf.evaluation import runner
from dked_tf.evaluation.metrics import evaluate_all_metrics

LOG_NAMES = {"voc07": "val_map07", "voc12": "val_map12"}


class MeanAPCallback(keras.callbacks.Callback):
    """Computes mAP (devkit semantics) every `every_n_epochs` epochs and writes it into `logs`
    as `val_map07` / `val_map12`, so `History`, `ModelCheckpoint(monitor="val_map07",
    mode="max")` and `EarlyStopping` see it (put this callback before them in the list).

    val_data: list of ImageRecord (evaluated in original pixels through `predict_records`), or
        a `tf.data.Dataset` of (images, targets) from `build_dataset(..., training=False)`
        (evaluated in the letterboxed pixels of the batches, ground truth from the targets;
        IoU does not change under the letterbox's scale and shift).
    class_names: names of the classes (default "0".."nC-1" from the model's num_classes).
    image_size: S of the S x S input (needed for records).
    metric: "voc07", "voc12" or a tuple of both.
    batch_size, score_threshold, nms_iou_threshold, max_detections: detection settings.
    graph: run network + decode as one traced tf.function (traced once, reused every epoch);
        False decodes eagerly (no tracing cost, slower per batch).
    Other keyword arguments (iou_threshold, comparison, difficult, preset) go to the evaluator.
    Works with any model exposing `decode` (OrientedDetector) and with a Distiller (its
    `student` is evaluated).
    """

    def __init__(
        self,
        val_data,
        class_names=None,
        image_size=None,
        every_n_epochs=1,
        metric=("voc07", "voc12"),
        verbose=1,
        batch_size=8,
        score_threshold=0.05,
        nms_iou_threshold=0.3,
        max_detections=300,
        graph=True,
        **eval_kwargs,
    ):
        super().__init__()
        metrics = (metric,) if isinstance(metric, str) else tuple(metric)
        for name in metrics:
            if name not in LOG_NAMES:
                raise ValueError(f"metric must be among {tuple(LOG_NAMES)}, got {name!r}")
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.val_data = val_data
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.image_size = image_size
        self.every_n_epochs = int(every_n_epochs)
        self.metrics = metrics
        self.verbose = verbose
        self.batch_size = batch_size
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        self.graph = graph
        self.eval_kwargs = eval_kwargs
        self.last_results = None  # dict metric -> EvalResult of the last evaluation
        self.last_detections = None  # class name -> [(image_id, score, poly [8])] of the last evaluation
        self._detect = None  # (model, detect fn): traced once, reused every evaluation
        self._dataset = None  # the evaluation pipeline over the records, built once
        is_records = isinstance(val_data, (list, tuple))
        if is_records and image_size is None:
            raise ValueError("MeanAPCallback: image_size is required when val_data is a list of records")

    def _class_names(self, net):
        if self.class_names is not None:
            return self.class_names
        num_classes = int(getattr(net, "num_classes", 0) or 0)
        if num_classes <= 0:
            raise ValueError("MeanAPCallback: pass class_names (the model has no num_classes)")
        return [str(i) for i in range(num_classes)]

    def _detect_fn(self, net):
        if self._detect is None or self._detect[0] is not net:
            self._detect = (
                net,
                runner.make_detect_fn(
                    net, self.score_threshold, self.nms_iou_threshold, self.max_detections, self.graph
                ),
            )
        return self._detect[1]

    def evaluate(self):
        """Runs the evaluation now. Returns dict metric -> EvalResult."""
        net = runner.inference_model(self.model)
        class_names = self._class_names(net)
        detect = self._detect_fn(net)
        if isinstance(self.val_data, (list, tuple)):
            if self._dataset is None:
                self._dataset = build_dataset(list(self.val_data), self.image_size, self.batch_size, training=False)
            detections = runner.predict_records(
                net,
                self.val_data,
                self.image_size,
                batch_size=self.batch_size,
                class_names=class_names,
                verbose=self.verbose,
                detect_fn=detect,
                dataset=self._dataset,
            )
            ground_truths = self.val_data
        else:
            detections, ground_truths = self._run_dataset(detect, class_names)
        self.last_detections = detections
        return evaluate_all_metrics(detections, ground_truths, class_names, self.metrics, **self.eval_kwargs)

    def _run_dataset(self, detect, class_names):
        detections = {name: [] for name in class_names}
        ground_truths = {}
        try:
            total = int(self.val_data.cardinality())
            total = total if total > 0 else None
        except (AttributeError, TypeError):
            total = None
        for images, targets in runner.progress(self.val_data, total=total, verbose=self.verbose, desc="val mAP"):
            decoded = detect(images)
            polygons = np.asarray(decoded["polygons"], np.float64)
            scores = np.asarray(decoded["scores"], np.float64)
            classes = np.asarray(decoded["classes"]).astype(np.int64)
            counts = runner._valid_counts(decoded, len(polygons))
            gt_polys = runner._to_numpy(targets["polygons"])
            gt_classes = runner._to_numpy(targets["classes"])
            gt_weights = runner._to_numpy(targets["weights"])
            gt_difficult = runner._to_numpy(targets["difficult"])
            for b in range(len(polygons)):
                image_id = f"batch_image_{len(ground_truths)}"
                valid = gt_weights[b] > 0
                ground_truths[image_id] = (gt_polys[b][valid], gt_classes[b][valid], gt_difficult[b][valid])
                for k in range(int(counts[b])):
                    label = int(classes[b, k])
                    if 0 <= label < len(class_names):
                        detections[class_names[label]].append((image_id, float(scores[b, k]), polygons[b, k]))
        return detections, ground_truths

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        results = self.evaluate()
        self.last_results = results
        for metric, result in results.items():
            value = float(result.map)
            if not math.isfinite(value):
                raise ValueError(f"MeanAPCallback: {metric} mAP is not finite ({value})")
            if logs is not None:
                logs[LOG_NAMES[metric]] = value
        if self.verbose:
            text = "  ".join(f"{LOG_NAMES[m]}={r.map:.4f}" for m, r in results.items())
            print(f"\nEpoch {epoch + 1}: {text}")
