"""Ablation of the DKED losses on the synthetic HRSC2016-style dataset (mAP table).

    dked-tf bench ablation [--teacher runs/hrsc_lodet/checkpoints/teacher] [--epochs 24]
    dked-tf bench ablation --quick          # tiny models at 64 px: checks that it runs

1. The teacher: a saved detector (`--teacher`, e.g. the main recipe's) or, without one, the
   recipe's teacher trained here with the recipe's teacher schedule.
2. The student of the same preset, trained from the SAME initial weights with the same data
   order, augmentation and optimizer schedule as the recipe, five times: baseline (no
   distillation), feature correlation alone, direction-adaptive response alone, prediction
   distillation alone, all three. The runs share one `Distiller` (one traced train step):
   losses are switched with `Distiller.set_loss_switches`, the student, auxiliary and
   optimizer variables are reset between runs, so the baseline trains with exactly the
   student's own JOL loss.
3. Each student is scored on the test split: mAP(07), mAP(12), and the localisation
   diagnostics of `dked_tf.evaluation.diagnostics` (median localisation quality q, gliding
   error, orientation accuracy at the positive cells). At CPU lengths mAP(07) sits near its
   1/11 floor; the diagnostics still separate the runs.

Configuration: the recipe preset (`--preset`, default `default`; `quick` with --quick) with
`--set key=value` overrides, as in `python recipes/hrsc_lodet.py`.
"""

import argparse
import time

import numpy as np

from dked_tf.bench.report import write_report
from dked_tf.config import add_set_argument, resolve_config
from dked_tf.evaluation.diagnostics import localisation_diagnostics
from dked_tf.experiment.data import make_train_dataset, prepare_records, steps_in
from dked_tf.experiment.evaluate import evaluate_map
from dked_tf.experiment.optimizer import make_optimizer, prebuild_optimizer
from dked_tf.experiment.saving import load_detector
from dked_tf.experiment.train_lib import make_distiller, set_seed, train
from dked_tf.models.presets import build_detector

CONFIGS = (
    ("baseline", (0, 0, 0)),
    ("corr", (1, 0, 0)),
    ("resp", (0, 1, 0)),
    ("pred", (0, 0, 1)),
    ("all", (1, 1, 1)),
)


def _score(model, records, class_names, cfg):
    metrics = evaluate_map(model, records, class_names, cfg, verbose=0)
    diagnostics = localisation_diagnostics(
        model, records, cfg.data.image_size, batch_size=cfg.eval_batch_size, max_objects=cfg.data.max_objects
    )
    return {
        "mAP07": 100 * metrics["map07"],
        "mAP12": 100 * metrics["map12"],
        "quality": diagnostics["quality_median"],
        "gliding_err": diagnostics["gliding_error"],
        "orient_acc": diagnostics["orientation_accuracy"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="dked-tf bench ablation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the smoke preset: tiny models, 64 px, a few steps")
    parser.add_argument("--preset", default=None, help="recipe preset (default: default, or smoke with --quick)")
    parser.add_argument(
        "--teacher",
        default=None,
        metavar="DIR",
        help="a saved teacher (e.g. runs/hrsc_lodet/checkpoints/teacher); default: train one",
    )
    parser.add_argument("--epochs", type=int, default=None, help="student epochs per run (default: the preset's)")
    add_set_argument(parser)
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/ablation.json)")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    preset = args.preset or ("smoke" if args.quick else "default")
    cfg = resolve_config(preset, overrides=args.overrides)
    if args.epochs:
        cfg.train.epochs = args.epochs
    train_records, class_names = prepare_records(cfg, "train", verbose=args.verbose)
    test_records, _ = prepare_records(cfg, "test", verbose=args.verbose)
    size, seed = cfg.data.image_size, cfg.train.seed

    rows = []
    if args.teacher:
        teacher, meta = load_detector(args.teacher)
        if int(meta["image_size"]) != size or list(meta["class_names"]) != list(class_names):
            raise SystemExit(
                f"ablation: teacher {args.teacher} was trained at {meta['image_size']} px on "
                f"{meta['class_names']}; this run is {size} px on {class_names}"
            )
        teacher_seconds = float(meta.get("train_seconds", 0.0))
    else:
        result = train(cfg, "teacher", records=(train_records, class_names), verbose=args.verbose)
        teacher, teacher_seconds = result.model, result.outcome.train_seconds
    rows.append(
        {
            "run": "teacher " + teacher.name,
            **_score(teacher, test_records, class_names, cfg),
            "seconds": teacher_seconds,
        }
    )
    if args.verbose:
        print(_line(rows[-1]), flush=True)

    # students: one Distiller, switched losses, identical starts
    set_seed(seed)
    student = build_detector(cfg.model.student, len(class_names), size, **cfg.model.student_overrides)
    steps = steps_in(make_train_dataset(train_records, cfg.data, seed=seed)) or 1
    distiller = make_distiller(teacher, student, cfg.distill, size)
    distiller.compile(optimizer=make_optimizer(cfg.train, steps))
    prebuild_optimizer(distiller)  # the slots exist before the snapshot below
    start = [np.array(v) for v in distiller.variables]
    # optimizer state right after build (iterations 0, zero moments, the learning rate)
    optimizer_start = [np.array(v) for v in distiller.optimizer.variables]
    for name, switches in CONFIGS:
        for variable, value in zip(distiller.variables, start):
            variable.assign(value)
        for variable, value in zip(distiller.optimizer.variables, optimizer_start):
            variable.assign(value)
        # a loss the config builds switched off (scale 0) stays off in every row
        distiller.set_loss_switches([s and on for s, on in zip(switches, distiller.built_switched_on)])
        t0 = time.perf_counter()
        history = distiller.fit(
            make_train_dataset(train_records, cfg.data, seed=seed), epochs=cfg.train.epochs, verbose=0, shuffle=False
        ).history
        seconds = time.perf_counter() - t0
        row = {
            "run": name,
            **_score(student, test_records, class_names, cfg),
            "final_jol": history["jol_total"][-1],
            "seconds": seconds,
        }
        rows.append(row)
        if args.verbose:
            print(_line(row), flush=True)
    write_report(
        "ablation",
        rows,
        path=args.output,
        columns=["run", "mAP07", "mAP12", "quality", "gliding_err", "orient_acc", "final_jol", "seconds"],
        title=(
            f"DKED ablation, synthetic HRSC, {size} px, {cfg.train.epochs} student epochs "
            "(mAP in %, localisation at positive test cells)"
        ),
        extra={
            "preset": preset,
            "overrides": list(args.overrides),
            "teacher": args.teacher,
            "epochs": cfg.train.epochs,
            "image_size": size,
            "seed": seed,
        },
    )
    return 0


def _line(row):
    return (
        f"{row['run']}: mAP(07) {row['mAP07']:.2f}  mAP(12) {row['mAP12']:.2f}  q {row['quality']:.3f}  "
        f"gliding err {row['gliding_err']:.3f}  orientation {row['orient_acc']:.3f}  ({row['seconds']:.0f} s)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
