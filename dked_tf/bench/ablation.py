"""Ablation of the DKED losses on the synthetic HRSC2016-style dataset (VOC07 mAP table).

    python -m dked_tf bench ablation [--quick] [--epochs 8] [--teacher-epochs 12]

1. Trains the teacher (`gghl_darknet53_s`, `_t` with --quick) on the synthetic trainval split.
2. Trains the student (`lodet_mobilenetv2_s` / `_t`) from the SAME initial weights, with the
   same data order and optimizer, five times: baseline (no distillation), feature correlation
   alone, direction-adaptive response alone, prediction distillation alone, all three.
   The runs share one `Distiller` (one traced train step): losses are switched with
   `Distiller.set_loss_switches`, the student, auxiliary and optimizer variables are reset
   between runs. The baseline therefore trains with exactly the student's own JOL loss.
3. Evaluates each student (and the teacher) on the test split: VOC07 mAP at IoU 0.5.

This is the runnable experiment; the full-size study is in the recipe issue. With --quick
the numbers are noise-level (a few steps at 64 px) — it checks that the pipeline runs.
"""

import argparse
import os
import time

import keras
import numpy as np

from dked_tf.bench.report import write_report

CONFIGS = (
    ("baseline", (0, 0, 0)),
    ("corr", (1, 0, 0)),
    ("resp", (0, 1, 0)),
    ("pred", (0, 0, 1)),
    ("all", (1, 1, 1)),
)


def _evaluate(detect_fn, model, records, class_names, size, batch):
    from dked_tf.evaluation.metrics import evaluate_detections
    from dked_tf.evaluation.runner import predict_records

    detections = predict_records(model, records, size, batch_size=batch, class_names=class_names,
                                 verbose=0, detect_fn=detect_fn)
    return evaluate_detections(detections, records, class_names, metric="voc07").map


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dked-tf bench ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, 64 px, few steps")
    parser.add_argument("--data-dir", default=None, help="where the synthetic set is written")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="student epochs per run")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/)")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    from dked_tf.data.hrsc import read_hrsc
    from dked_tf.data.pipeline import build_dataset
    from dked_tf.data.synthetic import default_data_dir, make_synthetic_hrsc
    from dked_tf.distiller import Distiller
    from dked_tf.evaluation.runner import make_detect_fn
    from dked_tf.models.presets import build_model

    quick = args.quick
    size = args.image_size or (64 if quick else 256)
    epochs = args.epochs or (4 if quick else 8)
    teacher_epochs = args.teacher_epochs or (8 if quick else 12)
    batch = args.batch or (4 if quick else 8)
    num_train = args.num_train or (16 if quick else 300)
    num_test = args.num_test or (8 if quick else 100)
    suffix = "_t" if quick else "_s"
    data_dir = args.data_dir or os.path.join(
        default_data_dir(), f"ablation_hrsc_{num_train}_{num_test}_{size}"
    )
    root = make_synthetic_hrsc(data_dir, num_train=num_train, num_test=num_test,
                               image_size=size, seed=0, verbose=args.verbose)
    train_records, info = read_hrsc(root, "trainval", verbose=0)
    test_records, _ = read_hrsc(root, "test", verbose=0)
    class_names = list(info.class_names)
    num_classes = len(class_names)

    def dataset():
        return build_dataset(train_records, size, batch, training=True, seed=0, augment=False)

    keras.utils.set_random_seed(0)
    teacher = build_model("gghl_darknet53" + suffix, num_classes, image_size=size)
    student = build_model("lodet_mobilenetv2" + suffix, num_classes, image_size=size)

    # 1. teacher: trained alone (its own JOL) with the plain training step
    from dked_tf.bench.distill import make_student_step

    t0 = time.perf_counter()
    teacher_step = make_student_step(teacher, keras.optimizers.Adam(args.lr), size)
    for epoch in range(teacher_epochs):
        losses = [float(teacher_step(x, y)) for x, y in dataset()]
        if args.verbose:
            print(f"teacher epoch {epoch + 1}/{teacher_epochs}: JOL {np.mean(losses):.3f}",
                  flush=True)
    teacher_seconds = time.perf_counter() - t0
    teacher_map = _evaluate(make_detect_fn(teacher), teacher, test_records, class_names, size, batch)
    rows = [{"run": "teacher " + teacher.name, "mAP_voc07": 100 * teacher_map,
             "final_total": float(np.mean(losses)), "seconds": teacher_seconds}]

    # 2. students: one Distiller, switched losses, identical starts
    distiller = Distiller(teacher, student, image_size=size)
    distiller.compile(optimizer=keras.optimizers.Adam(args.lr))
    distiller.optimizer.build(distiller.trainable_variables)
    start = [np.array(v) for v in distiller.variables]
    # optimizer state right after build (iterations 0, zero moments, the learning rate)
    optimizer_start = [np.array(v) for v in distiller.optimizer.variables]
    detect_fn = make_detect_fn(student)
    for name, switches in CONFIGS:
        for variable, value in zip(distiller.variables, start):
            variable.assign(value)
        for variable, value in zip(distiller.optimizer.variables, optimizer_start):
            variable.assign(value)
        distiller.set_loss_switches(switches)
        t0 = time.perf_counter()
        history = distiller.fit(dataset(), epochs=epochs, verbose=0).history
        seconds = time.perf_counter() - t0
        student_map = _evaluate(detect_fn, student, test_records, class_names, size, batch)
        row = {"run": name, "mAP_voc07": 100 * student_map,
               "final_total": history["total"][-1], "final_jol": history["jol_total"][-1],
               "seconds": seconds}
        rows.append(row)
        if args.verbose:
            print(f"{name}: mAP {row['mAP_voc07']:.2f}  total {row['final_total']:.3f}  "
                  f"({seconds:.0f} s)", flush=True)
    write_report(
        "ablation",
        rows,
        path=args.output,
        columns=["run", "mAP_voc07", "final_total", "final_jol", "seconds"],
        title=f"DKED ablation, synthetic HRSC, {size} px, {epochs} student epochs (VOC07 mAP %)",
        extra={"size": size, "epochs": epochs, "teacher_epochs": teacher_epochs,
               "num_train": num_train, "num_test": num_test, "quick": quick},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
