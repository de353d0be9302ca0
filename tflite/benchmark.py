"""Latency of an exported .tflite detector on this device, stage by stage.

    python tflite/benchmark.py --model student_int8.tflite --runs 50 --threads 2 --json out.json

Stages: preprocess (letterbox + input conversion), invoke (the interpreter), NMS (numpy,
class-aware, plus mapping back to original pixels). Needs only the LiteRT interpreter,
numpy and OpenCV (no TensorFlow). Without --image, a synthetic image of --image-width x
--image-height is used; --score-threshold sets how many candidates reach the NMS.
"""

import argparse
import json
import os
import platform
import sys
import time

import detect  # tflite/detect.py: a script's own folder is on the import path (`python tflite/benchmark.py`)
import numpy as np


def benchmark(
    model_path,
    image_rgb,
    runs=50,
    warmup=3,
    num_threads=2,
    sidecar=None,
    score_threshold=None,
    iou_threshold=None,
    max_detections=None,
):
    """Runs detect() `warmup` + `runs` times. Returns dict of per-stage medians/means in ms."""
    detector = detect.TFLiteDetector(
        model_path,
        sidecar,
        num_threads=num_threads,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    for _ in range(warmup):
        detector.detect(image_rgb)
    stages = {"preprocess_s": [], "invoke_s": [], "nms_s": [], "total_s": []}
    detections = 0
    for _ in range(runs):
        start = time.perf_counter()
        found = detector.detect(image_rgb)
        stages["total_s"].append(time.perf_counter() - start)
        for key, value in detector.timings.items():
            stages[key].append(value)
        detections = len(found["scores"])
    result = {
        "model": os.path.basename(str(model_path)),
        "quantize": detector.sidecar.get("quantize"),
        "nms": detector.nms_mode,
        "image_size": detector.image_size,
        "input_image": list(image_rgb.shape[:2]),
        "threads": num_threads,
        "runs": runs,
        "detections": detections,
        "machine": platform.machine(),
    }
    for key, values in stages.items():
        name = key[:-2]
        result[f"{name}_median_ms"] = float(np.median(values) * 1000)
        result[f"{name}_mean_ms"] = float(np.mean(values) * 1000)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--sidecar", default=None)
    parser.add_argument("--image", default=None, help="an image file (default: synthetic noise)")
    parser.add_argument("--image-width", type=int, default=1024)
    parser.add_argument("--image-height", type=int, default=768)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.image:
        image = detect.read_image_rgb(args.image)
    else:
        image = (np.random.default_rng(0).random((args.image_height, args.image_width, 3)) * 255).astype(np.uint8)
    result = benchmark(args.model, image, args.runs, args.warmup, args.threads, args.sidecar, args.score_threshold)
    print(
        f"{result['model']} ({result['quantize']}, nms={result['nms']}, {result['image_size']} px, "
        f"{args.threads} threads, {args.runs} runs):"
    )
    for stage in ("preprocess", "invoke", "nms", "total"):
        print(
            f"  {stage:<10} median {result[f'{stage}_median_ms']:8.2f} ms   mean {result[f'{stage}_mean_ms']:8.2f} ms"
        )
    if args.json:
        temporary = f"{args.json}.tmp{os.getpid()}"  # same folder, then os.replace: never half a file
        with open(temporary, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(temporary, args.json)
        print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
