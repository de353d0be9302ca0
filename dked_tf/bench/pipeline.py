"""Benchmark of the tf.data pipeline: images/s at S = 512 and 800, batch 8, all augmentations on.

Data: a synthetic HRSC2016-format set with HRSC-like image sizes (long side 800 px by default,
cached in a temporary directory), read with the real reader. Rows: the training pipeline with
every augmentation (flips, rotation, scale, crop, translate, HSV, mixup), and the evaluation
pipeline (decode + letterbox only) for comparison, measured in the same run.

`python -m dked_tf bench pipeline [--quick] [--sizes 512 800] [--batch 8] [--batches 20]
[--student lodet_mobilenetv2_s]` (the last adds training-step rows and the ratio
pipeline images/s / training images/s, both measured in the same run; the pipeline keeps up when
the ratio is >= 2).
"""

import argparse
import os
import tempfile
import time

import keras
import tensorflow as tf

from dked_tf.bench.report import time_call, write_report
from dked_tf.data.augment import AugmentConfig
from dked_tf.data.hrsc import read_hrsc
from dked_tf.data.pipeline import build_dataset
from dked_tf.data.synthetic import make_synthetic_hrsc
from dked_tf.models.presets import build_model


def _student_row(args, records, size, augment, pipeline_rate):
    """Training-step rate of a model preset on batches of the same pipeline (one run)."""
    ds = build_dataset(records, size, args.batch, training=True, augment=augment, seed=1, repeat=True)
    iterator = iter(ds)
    batches = [next(iterator) for _ in range(2)]
    model = build_model(args.student, 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    step = {"i": 0}

    def train_step():
        images, targets = batches[step["i"] % len(batches)]
        step["i"] += 1
        model.train_on_batch(images, targets)

    timing = time_call(train_step, repeat=args.steps, warmup=1)
    rate = args.batch / timing["median_s"]
    return {
        "size": size,
        "pipeline": f"training steps of {args.student}",
        "batch": args.batch,
        "ms_per_batch": 1000 * timing["median_s"],
        "images_per_s": rate,
        "pipeline_vs_training": pipeline_rate / rate,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dked-tf bench pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="S=256, small images, few batches (< 60 s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row")
    parser.add_argument("--images", type=int, default=48, help="images in the synthetic set")
    parser.add_argument("--image-size", type=int, default=800, help="long side of the synthetic images")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "dked_tf_bench_pipeline"))
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/pipeline.json)")
    parser.add_argument(
        "--student",
        default=None,
        metavar="PRESET",
        help="also time training steps of this model preset (e.g. lodet_mobilenetv2_s) on the "
        "pipeline's batches at each size, and report pipeline rate / training rate",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps with --student")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.images, args.image_size = [256], 6, 16, 256

    data_dir = os.path.join(args.data_dir, f"hrsc_{args.image_size}_{args.images}")
    make_synthetic_hrsc(data_dir, num_train=args.images, num_test=0, image_size=args.image_size, seed=0, verbose=0)
    records, _ = read_hrsc(data_dir, "trainval")
    all_on = AugmentConfig(
        flip_horizontal=0.5,
        flip_vertical=0.5,
        rotate_prob=1.0,
        scale_prob=1.0,
        crop_prob=1.0,
        translate_prob=1.0,
        hsv_prob=1.0,
        mixup_prob=1.0,
    )
    rows = []
    for size in args.sizes:
        for name, training, augment in (
            ("train, all augmentations", True, all_on),
            ("eval, letterbox only", False, None),
        ):
            ds = build_dataset(
                records, size, args.batch, training=training, augment=augment, seed=0, repeat=True, drop_remainder=True
            )
            iterator = iter(ds)
            cpu0 = time.process_time()
            timing = time_call(lambda: next(iterator), repeat=args.batches, warmup=2)
            cpu = time.process_time() - cpu0
            rows.append(
                {
                    "size": size,
                    "pipeline": name,
                    "batch": args.batch,
                    "ms_per_batch": 1000 * timing["median_s"],
                    "images_per_s": args.batch / timing["median_s"],
                    # CPU time of all threads per image (load-independent cost; includes warm-up
                    # batches and prefetching, so an upper bound)
                    "cpu_ms_per_image": 1000 * cpu / (args.batch * (timing["runs"] + 2)),
                }
            )
        train_rate, eval_rate = rows[-2]["images_per_s"], rows[-1]["images_per_s"]
        rows[-2]["vs_eval"] = train_rate / eval_rate
        if args.student:
            rows.append(_student_row(args, records, size, all_on, train_rate))
    extra = {
        "source_images": f"{len(records)} synthetic HRSC2016 images, long side {args.image_size} px",
        "cpu_threads": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "note": "compare images_per_s with the student's training rate at the same size (>= 2x wanted)",
    }
    write_report(
        "pipeline",
        rows,
        path=args.output,
        extra=extra,
        columns=["size", "pipeline", "batch", "ms_per_batch", "images_per_s", "cpu_ms_per_image", "vs_eval"]
        + (["pipeline_vs_training"] if args.student else []),
        title="tf.data pipeline throughput",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
