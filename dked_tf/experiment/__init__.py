"""The application layer: one training path (`train`), saved detectors, the recipe stages and
their report, used by the CLI commands, the recipes and the benchmarks.

    from dked_tf.experiment import train
    teacher = train(cfg, "teacher", out="runs/teacher")
    dked = train(cfg, "student", seed=0, out="runs/dked", teacher="runs/teacher")
    Detector.load("runs/dked")("image.png")  # detections in the image's own pixels
"""

from dked_tf.experiment.inference import Detections, Detector
from dked_tf.experiment.saving import (
    is_saved_detector,
    load_detector,
    load_keras_file,
    save_detector,
    save_keras_file,
)
from dked_tf.experiment.train_lib import TrainOutcome, TrainResult, train

__all__ = [
    "Detections",
    "Detector",
    "TrainOutcome",
    "TrainResult",
    "is_saved_detector",
    "load_detector",
    "load_keras_file",
    "save_detector",
    "save_keras_file",
    "train",
]
