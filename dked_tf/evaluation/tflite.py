"""Accuracy of a .tflite export: the device runner (`tflite/detect.py`, through
`dked_tf.export.tflite.predict_tflite`) over annotated records, scored with the same evaluator
as the Keras model."""

from dked_tf.evaluation.metrics import evaluate_detections
from dked_tf.export.tflite import predict_tflite


def evaluate_tflite(
    path,
    records,
    class_names,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    num_threads=2,
    verbose=1,
    **evaluate_kwargs,
):
    """mAP of a .tflite on records (list of ImageRecord; detections in original pixels) with the
    device runner and the same evaluator as the Keras model (`evaluate_detections`;
    `evaluate_kwargs` such as metric="voc07" go to it) -> EvalResult.

    Parity recipe: compare with `dked_tf.evaluation.runner.evaluate_model(model, records,
    class_names, image_size, metric, score_threshold=s, nms_iou_threshold=i,
    max_detections=k)` at the same thresholds (fp32 within 0.1 mAP point, fp16 within 0.5;
    report the int8 drop).
    """
    detections = predict_tflite(
        path, records, class_names, score_threshold, iou_threshold, max_detections, num_threads, verbose
    )
    return evaluate_detections(detections, records, class_names, **evaluate_kwargs)
