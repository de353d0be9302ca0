"""Teacher vs student: CPU latency (batch 1) in Keras and TFLite fp32, params and GFLOPs.

    python -m dked_tf bench models            # paper presets at 512 and 800 px
    python -m dked_tf bench models --quick    # small presets at 256 px (< 60 s)

Keras latency: a `tf.function` of `model(images, training=False)` (forward only, no decode).
TFLite latency: the builtin-only fp32 flatbuffer of `model.decode_cells(model(images))`
(forward + per-cell decode, no NMS), run by the LiteRT interpreter with default threads.
The speed ratio is teacher latency / student latency, both measured in this run.
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from dked_tf.bench.report import time_call, write_report
from dked_tf.models.presets import build_model, count_params, gflops


def _keras_latency(model, size, repeat):
    forward = tf.function(lambda x: model(x, training=False)["head"])
    images = tf.random.uniform([1, size, size, 3])
    return time_call(lambda: [t.numpy() for t in forward(images)], repeat=repeat, warmup=1)


def _tflite_latency(model, size, repeat):
    # optional dependency (the `export` extra), may be absent: imported only when TFLite is timed (not with --no-tflite)
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    blob = model.to_tflite(size)
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    images = np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype(np.float32)

    def run():
        interpreter.set_tensor(index, images)
        interpreter.invoke()

    return time_call(run, repeat=repeat, warmup=1), len(blob)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="dked-tf bench models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small presets at 256 px, few repeats (< 60 s)")
    parser.add_argument("--teacher", default=None, help="teacher preset")
    parser.add_argument("--student", default=None, help="student preset")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="input sides in px")
    parser.add_argument("--num-classes", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite columns")
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/)")
    args = parser.parse_args(argv)

    teacher_name = args.teacher or ("gghl_darknet53_s" if args.quick else "gghl_darknet53")
    student_name = args.student or ("lodet_mobilenetv2_s" if args.quick else "lodet_mobilenetv2")
    sizes = args.sizes or ([256] if args.quick else [512, 800])
    repeat = args.repeat or (2 if args.quick else 5)

    start = time.perf_counter()
    rows, ratios = [], []
    for size in sizes:
        timings = {}
        for role, name in (("teacher", teacher_name), ("student", student_name)):
            model = build_model(name, args.num_classes)
            row = {
                "role": role,
                "preset": name,
                "size": size,
                "params_M": count_params(model, trainable_only=True) / 1e6,
                "GFLOPs": gflops(model, size),
            }
            keras_t = _keras_latency(model, size, repeat)
            row["keras_ms"] = keras_t["median_s"] * 1e3
            if not args.no_tflite:
                tflite_t, nbytes = _tflite_latency(model, size, repeat)
                row["tflite_ms"] = tflite_t["median_s"] * 1e3
                row["tflite_MB"] = nbytes / 1e6
            timings[role] = row
            rows.append(row)
            print(
                f"  {role} {name} @{size}: keras {row['keras_ms']:.1f} ms"
                + (f", tflite {row['tflite_ms']:.1f} ms" if "tflite_ms" in row else ""),
                flush=True,
            )
        ratio = {"size": size, "keras_speedup": timings["teacher"]["keras_ms"] / timings["student"]["keras_ms"]}
        if not args.no_tflite:
            ratio["tflite_speedup"] = timings["teacher"]["tflite_ms"] / timings["student"]["tflite_ms"]
        ratios.append(ratio)
    for ratio in ratios:
        rows.append(
            {
                "role": "student/teacher speed",
                "preset": "",
                "size": ratio["size"],
                "keras_ms": ratio["keras_speedup"],
                "tflite_ms": ratio.get("tflite_speedup", ""),
            }
        )
    write_report(
        "models",
        rows,
        path=args.output,
        columns=["role", "preset", "size", "params_M", "GFLOPs", "keras_ms", "tflite_ms", "tflite_MB"],
        title="models: CPU batch-1 latency (ms; last rows: teacher/student latency ratio = student speed-up)",
        extra={
            "ratios": ratios,
            "paper_fps_rtx3090": {"student": 62.12, "teacher": 42.39},
            "seconds": time.perf_counter() - start,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
