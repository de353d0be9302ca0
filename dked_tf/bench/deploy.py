"""Deployment latency on this CPU, batch 1: Keras vs SavedModel vs TFLite fp32/fp16/int8, the
host NMS, and the student against the teacher.

    dked-tf bench deploy --quick          # small student (and small teacher) at 256 px
    dked-tf bench deploy                  # small and paper-scale student at 512 and 800,
                                          # paper-scale teacher at 800 (Keras, TFLite fp32)

Rows: one per (model, size, runtime). `latency_ms` is the median forward time (Keras: the
network plus per-cell decode in a tf.function; SavedModel: the whole serving signature
including letterbox and graph NMS; TFLite: `invoke` with --threads threads). `nms_ms` is the
numpy class-aware rotated NMS of tflite/detect.py on the top --nms-candidates cells, and
`detect_path_ms` the device runner's preprocess + invoke + NMS on a 1.25S x S image. Weights
are random unless --student-weights / --teacher-weights give .keras files, so only the
timings (not the detections) are meaningful; NMS is therefore timed on a fixed number of
candidates. Ratios are computed within this one run.
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import dked_tf.models.detector  # noqa: F401  (registers the serializable classes for .keras files)
from dked_tf.bench.report import time_call, write_report
from dked_tf.data.synthetic import render_hrsc_scene
from dked_tf.export.saved_model import export_saved_model
from dked_tf.export.tflite import export_tflite, load_device_runner
from dked_tf.models.presets import build_model


def _synthetic_images(count, size, seed=0):
    """Letterboxed float32 [S, S, 3] synthetic ship scenes in [0, 1]."""
    rng = np.random.default_rng(seed)
    return [render_hrsc_scene(rng, size, size)[0].astype(np.float32) / 255.0 for _ in range(count)]


def _build(name, num_classes, weights=None):
    if weights:
        return keras.saving.load_model(weights, compile=False)
    return build_model(name, num_classes)


def _keras_row(model, size, repeat):
    cells = tf.function(lambda x: model.decode_cells(model(x, training=False)["head"]), autograph=False)
    x = tf.constant(np.random.default_rng(0).random((1, size, size, 3)), tf.float32)
    timing = time_call(lambda: cells(x)["scores"].numpy(), repeat=repeat, warmup=2)
    return timing["median_s"] * 1000


def _saved_model_row(model, size, repeat, workdir):
    path = os.path.join(workdir, f"sm_{size}")
    export_saved_model(model, path, size, score_threshold=0.05, iou_threshold=0.3, max_detections=100)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    image = tf.constant((np.random.default_rng(1).random((1, size, int(size * 1.25), 3)) * 255).astype(np.uint8))
    timing = time_call(lambda: serve(images=image)["num_detections"].numpy(), repeat=repeat, warmup=2)
    return timing["median_s"] * 1000


def _tflite_rows(model, size, quantizations, threads, repeat, workdir, nms_candidates, label):
    runner = load_device_runner()
    rows = []
    calibration = _synthetic_images(8, size) if "int8" in quantizations else None
    image = (np.random.default_rng(2).random((size, int(size * 1.25), 3)) * 255).astype(np.uint8)
    for quantize in quantizations:
        path = os.path.join(workdir, f"{label}_{size}_{quantize}.tflite")
        start = time.perf_counter()
        sidecar = export_tflite(
            model,
            path,
            size,
            quantize=quantize,
            representative_images=calibration,
            score_threshold=0.05,
            iou_threshold=0.3,
            max_detections=100,
            verbose=0,
        )
        export_s = time.perf_counter() - start
        detector = runner.TFLiteDetector(path, num_threads=threads)
        letterboxed, _, _ = runner.letterbox(image, size)
        tensor = detector.prepare_input(letterboxed)
        invoke = time_call(lambda: detector.invoke(tensor), repeat=repeat, warmup=2)
        raw = detector.invoke(tensor)
        names = detector.output_names
        scores = raw[names["scores"]].reshape(-1)
        top = np.argsort(-scores)[:nms_candidates]
        polygons = raw[names["polygons"]].reshape(-1, 8)[top]
        classes = raw[names["classes"]].reshape(-1)[top]
        nms = time_call(
            lambda: runner.batched_rotated_nms(polygons, scores[top], classes, 0.3, 100), repeat=repeat, warmup=1
        )
        path_times = []
        for _ in range(max(3, repeat // 2)):
            detector.detect(image)
            path_times.append(sum(detector.timings.values()))
        rows.append(
            {
                "runtime": f"tflite_{quantize}",
                "latency_ms": invoke["median_s"] * 1000,
                "nms_ms": nms["median_s"] * 1000,
                "detect_path_ms": float(np.median(path_times) * 1000),
                "size_mb": sidecar["size_bytes"] / 1e6,
                "export_s": export_s,
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dked-tf bench deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small student and teacher at 256 px only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--num-classes", type=int, default=1)
    parser.add_argument("--nms-candidates", type=int, default=300)
    parser.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel rows")
    parser.add_argument("--student-weights", default=None, help=".keras file of a trained student")
    parser.add_argument("--teacher-weights", default=None, help=".keras file of a trained teacher")
    parser.add_argument("--out", default=None, help="JSON path (default bench_results/deploy.json)")
    args = parser.parse_args(argv)

    if args.quick:
        plan = [
            ("student", "lodet_mobilenetv2_s", 256, ("none", "int8"), True),
            ("teacher", "gghl_darknet53_s", 256, ("none",), False),
        ]
        args.repeat = min(args.repeat, 5)
    else:
        plan = [
            ("student", "lodet_mobilenetv2_s", 512, ("none", "fp16", "int8"), True),
            ("student", "lodet_mobilenetv2_s", 800, ("none", "fp16", "int8"), True),
            ("student", "lodet_mobilenetv2", 512, ("none", "fp16", "int8"), True),
            ("student", "lodet_mobilenetv2", 800, ("none", "fp16", "int8"), True),
            ("teacher", "gghl_darknet53", 800, ("none",), False),
        ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dked_bench_deploy_") as workdir:
        built = {}
        for role, preset, size, quantizations, with_saved_model in plan:
            weights = args.student_weights if role == "student" else args.teacher_weights
            if preset not in built:
                built[preset] = _build(preset, args.num_classes, weights)
            model = built[preset]
            base = {"model": f"{role}:{preset}", "size": size}
            rows.append({**base, "runtime": "keras", "latency_ms": _keras_row(model, size, args.repeat)})
            if with_saved_model and not args.no_saved_model:
                rows.append(
                    {
                        **base,
                        "runtime": "saved_model(+letterbox+NMS)",
                        "latency_ms": _saved_model_row(model, size, args.repeat, workdir),
                    }
                )
            for row in _tflite_rows(
                model, size, quantizations, args.threads, args.repeat, workdir, args.nms_candidates, preset
            ):
                rows.append({**base, **row})
            print(f"done {role} {preset} @ {size}", flush=True)

    ratios = {}
    for row in rows:
        keras_ms = next(
            (
                r["latency_ms"]
                for r in rows
                if r["model"] == row["model"] and r["size"] == row["size"] and r["runtime"] == "keras"
            ),
            None,
        )
        if keras_ms:
            row["speedup_vs_keras"] = keras_ms / row["latency_ms"]
    students = [r for r in rows if r["model"].startswith("student") and r["runtime"] == "keras"]
    teachers = [r for r in rows if r["model"].startswith("teacher") and r["runtime"] == "keras"]
    for teacher in teachers:
        for student in students:
            if student["size"] == teacher["size"]:
                ratios[f"teacher/student keras latency @ {teacher['size']} ({student['model']})"] = (
                    teacher["latency_ms"] / student["latency_ms"]
                )
    columns = ["model", "size", "runtime", "latency_ms", "speedup_vs_keras", "nms_ms", "detect_path_ms", "size_mb"]
    write_report(
        "deploy",
        rows,
        path=args.out,
        columns=columns,
        extra={
            "threads": args.threads,
            "nms_candidates": args.nms_candidates,
            "ratios": ratios,
            "weights": "trained" if args.student_weights else "random init (timings only)",
        },
        title=f"deploy latency, batch 1, {args.threads} threads",
    )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
