"""Benchmark: cost of one DKED distillation step vs (student-only step + teacher forward).

    python -m dked_tf bench distill [--quick] [--paper] [--batch 4] [--repeat 5]

For each teacher/student pair, on the same batch and input size, measured in one run:
  distill_ms  one `Distiller.train_step` (teacher forward, student forward + backward, target
              encoding, JOL, the three DKED losses and their auxiliary modules, update);
  student_ms  one student-only training step (student forward + backward, target encoding,
              JOL, update) — what training the student alone costs;
  teacher_ms  one teacher inference forward.
ratio = distill / (student + teacher) (target <= 1.15: everything the distiller adds beyond
the unavoidable teacher forward stays small); teacher_share = teacher / distill.
All three run as tf.function graphs; the first call (tracing) is timed separately.
Pairs: --quick tiny presets at 64 px; default small presets at 256 px; --paper adds the
paper-scale GGHL-Darknet53 -> LO-Det-MobileNetV2 pair (at --paper-size, default 800).
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from dked_tf.bench.report import time_call, write_report
from dked_tf.distiller import Distiller
from dked_tf.models.presets import build_model


def synthetic_batch(batch, size, num_classes, seed=0):
    """(images float32 [B,S,S,3], targets dict) with a few oriented boxes per image."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch, size, size, 3)).astype("float32")
    objects = 4
    polygons = np.zeros((batch, objects, 8), np.float32)
    for b in range(batch):
        for k in range(objects):
            cx, cy = rng.uniform(0.2, 0.8, 2) * size
            length = rng.uniform(0.08, 0.4) * size
            width = length * rng.uniform(0.2, 0.6)
            angle = rng.uniform(-np.pi / 2, np.pi / 2)
            c, s = np.cos(angle), np.sin(angle)
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [length / 2, width / 2]
            rotated = corners @ np.array([[c, s], [-s, c]]) + [cx, cy]
            polygons[b, k] = np.clip(rotated, 0, size - 1).reshape(8)
    targets = {
        "polygons": polygons,
        "classes": rng.integers(0, num_classes, (batch, objects)).astype(np.int32),
        "weights": np.ones((batch, objects), np.float32),
    }
    return images, targets


def make_student_step(model, optimizer):
    """tf.function training step of `model` alone on its JOL loss (what plain training does)."""
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = model.compute_loss(x=images, y=targets, y_pred=outputs, training=True)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def bench_pair(teacher_name, student_name, size, batch, num_classes, repeat, verbose=1, breakdown=False):
    keras.utils.set_random_seed(0)
    teacher = build_model(teacher_name, num_classes, image_size=size)
    student = build_model(student_name, num_classes, image_size=size)
    images, targets = synthetic_batch(batch, size, num_classes)
    images = tf.constant(images)
    targets = {k: tf.constant(v) for k, v in targets.items()}

    distiller = Distiller(teacher, student, image_size=size)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-4))
    distiller.optimizer.build(distiller.trainable_variables)
    distill_step = tf.function(lambda x, y: distiller.train_step((x, y)))
    student_step = make_student_step(student, keras.optimizers.Adam(1e-4))
    teacher_forward = tf.function(lambda x: teacher(x, training=False)["head"])

    functions = {
        "teacher": lambda: [t.numpy() for t in teacher_forward(images)],
        "student": lambda: float(student_step(images, targets)),
        "distill": lambda: float(distill_step(images, targets)["total"]),
    }
    if breakdown:
        # the same Distiller step without any distillation loss (the unused teacher forward is
        # pruned): the Distiller's own overhead over a plain student step
        bare = Distiller(teacher, student, distillation_losses=[], image_size=size)
        bare.compile(optimizer=keras.optimizers.Adam(1e-4))
        bare.optimizer.build(bare.trainable_variables)
        bare_step = tf.function(lambda x, y: bare.train_step((x, y)))
        functions["distill_no_losses"] = lambda: float(bare_step(images, targets)["total"])
    traces = {}
    for name, fn in functions.items():
        t0 = time.perf_counter()
        fn()
        traces[name] = time.perf_counter() - t0
        if verbose:
            print(f"  {teacher_name}->{student_name}: traced {name} in {traces[name]:.1f} s", flush=True)
    # interleaved rounds (one call of each per round) so that load drift on a shared machine
    # hits every variant alike; time_call per call, medians over the rounds
    runs = {name: [] for name in functions}
    for _ in range(repeat):
        for name, fn in functions.items():
            runs[name].append(time_call(fn, repeat=1, warmup=0)["median_s"])
    timings = {name: {"median_s": float(np.median(v))} for name, v in runs.items()}
    distill_ms = timings["distill"]["median_s"] * 1e3
    student_ms = timings["student"]["median_s"] * 1e3
    teacher_ms = timings["teacher"]["median_s"] * 1e3
    return {
        "teacher": teacher_name,
        "student": student_name,
        "size": size,
        "batch": batch,
        "distill_ms": distill_ms,
        "student_ms": student_ms,
        "teacher_ms": teacher_ms,
        "ratio": distill_ms / (student_ms + teacher_ms),
        "target": "<=1.15",
        "teacher_share": teacher_ms / distill_ms,
        "trace_distill_s": traces["distill"],
        **({"distill_no_losses_ms": timings["distill_no_losses"]["median_s"] * 1e3} if breakdown else {}),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="dked-tf bench distill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny presets at 64 px")
    parser.add_argument("--paper", action="store_true", help="add the paper-scale pair")
    parser.add_argument("--paper-size", type=int, default=800)
    parser.add_argument("--size", type=int, default=None, help="input size of the small pair")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the Distiller step with no distillation loss"
    )
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    if args.quick:
        pairs = [("gghl_darknet53_t", "lodet_mobilenetv2_t", args.size or 64)]
        batch, repeat = args.batch or 2, args.repeat or 3
    else:
        pairs = [("gghl_darknet53_s", "lodet_mobilenetv2_s", args.size or 256)]
        batch, repeat = args.batch or 4, args.repeat or 5
    if args.paper:
        pairs.append(("gghl_darknet53", "lodet_mobilenetv2", args.paper_size))
    rows = []
    for teacher_name, student_name, size in pairs:
        pair_batch = batch if size < 512 else min(batch, 2)
        rows.append(
            bench_pair(
                teacher_name,
                student_name,
                size,
                pair_batch,
                args.num_classes,
                repeat if size < 512 else min(repeat, 3),
                args.verbose,
                breakdown=args.breakdown,
            )
        )
    write_report(
        "distill",
        rows,
        path=args.output,
        title="DKED distillation step vs student step + teacher forward (median ms)",
        extra={"target_ratio": 1.15},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
