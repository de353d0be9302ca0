"""Accuracy parity of the TFLite exports (fp32 / fp16 / int8) against the Keras model.

    dked-tf bench parity --run runs/hrsc_lodet [--model student_dked] [--calibration 100]

Reads a trained detector saved by the recipe (`<run>/checkpoints/<model>`) and the test split
of the data its run used (`<run>/config.yaml`), exports it to TFLite three ways and scores every
export with the device runner and the same evaluator as the Keras model. Targets (deployment
issue): fp32 within 0.1 mAP point of Keras, fp16 within 0.5, int8 drop reported (target <= 2).
"""

import argparse
import os
import tempfile

from dked_tf.bench.report import write_report
from dked_tf.config import load_config
from dked_tf.evaluation.runner import evaluate_model
from dked_tf.evaluation.tflite import evaluate_tflite
from dked_tf.experiment.data import prepare_records
from dked_tf.experiment.saving import load_detector
from dked_tf.export import tflite as tfl


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dked-tf bench parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/hrsc_lodet", help="output folder of recipes/hrsc_lodet.py")
    parser.add_argument("--model", default="student_dked", help="checkpoint name under <run>/checkpoints")
    parser.add_argument("--calibration", type=int, default=100, help="training images for int8 calibration")
    parser.add_argument("--out", default=None, help="JSON path (default bench_results/parity.json)")
    args = parser.parse_args(argv)

    model, meta = load_detector(os.path.join(args.run, "checkpoints", args.model))
    cfg = load_config(os.path.join(args.run, "config.yaml"))  # the data the run used
    test, class_names = prepare_records(cfg, "test", verbose=0)
    train, _ = prepare_records(cfg, "train", verbose=0)
    size = int(meta["image_size"])
    keras_map = evaluate_model(model, test, list(class_names), size, metric="voc07", verbose=0).map
    rows = [{"runtime": "keras", "map07": 100 * keras_map, "diff_vs_keras": 0.0, "size_mb": ""}]
    calibration = tfl.representative_from_records(train, size, limit=args.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in ("none", "fp16", "int8"):
            path = os.path.join(tmp, f"{args.model}_{quantize}.tflite")
            tfl.export_tflite(
                model,
                path,
                size,
                quantize=quantize,
                representative_images=calibration if quantize == "int8" else None,
                class_names=list(class_names),
                num_representative=args.calibration,
                verbose=0,
            )
            result = evaluate_tflite(path, test, list(class_names), verbose=0, metric="voc07")
            rows.append(
                {
                    "runtime": f"tflite_{quantize}",
                    "map07": 100 * result.map,
                    "diff_vs_keras": 100 * (result.map - keras_map),
                    "size_mb": os.path.getsize(path) / 2**20,
                }
            )
    title = f"TFLite accuracy parity: {args.model} of {args.run}, {len(test)} test images, {size} px"
    write_report(
        "parity", rows, path=args.out, title=title, extra={"run": args.run, "model": args.model, "image_size": size}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
