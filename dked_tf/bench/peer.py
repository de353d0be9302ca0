"""Peer yardstick: YOLO11n-OBB (Ultralytics, trained from scratch) against ours, same data, same
input size, a fixed training wall-time budget, scored by our evaluator; optionally the batch-1
CPU latency of both at 800 px.

    pip install 'dked_tf[peer]'                          # Ultralytics + PyTorch (not in the default install)
    dked-tf bench peer --quick                           # plumbing check: smoke set, 30 s budget
    dked-tf bench peer --budget-seconds 120 --threads 2 --ours runs/hrsc_lodet/checkpoints/student_seed0
    dked-tf bench peer --latency --python /path/to/venv-with-ultralytics/bin/python

Steps:
1. The records of the preset (`--preset`, `--set`, `--data-root`; default: the built-in synthetic
   HRSC set of the default preset, `dked_tf.experiment.data.prepare_records`) are written in
   Ultralytics' OBB format under OUT/dataset (`dked_tf.data.yolo_obb`): train = our train split
   (trainval), val = our test split.
2. A child process (`--python`: an interpreter with ultralytics; default this one) runs a
   script written to OUT/yolo/peer_yolo.py that imports only ultralytics, torch and numpy. It
   trains `yolo11n-obb.yaml` from scratch (no pretrained weights: nothing is downloaded) at
   `--image-size` (default: the config's data.image_size), `--batch` 8, CPU, `--threads` torch
   threads, `--seed` 0 (deterministic), no AMP, no plots, no per-epoch validation. The budget: Ultralytics' `time`
   argument (hours; it overrides `epochs`: after the first epoch the epoch count is re-estimated
   from the mean epoch time so the learning-rate schedule ends at the budget) plus a callback
   that stops the loop after the first batch past `--budget-seconds` (Ultralytics checks its
   `time` only at optimizer steps). One optimizer step per batch like ours (`nbs` = batch;
   Ultralytics' default nbs=64 accumulates 8 batches per step: `--yolo-set nbs=64`); other
   hyper-parameters are Ultralytics' defaults (optimizer auto, mosaic, ...). The clock is
   Ultralytics' (train loop start: after the data and model are set up, like our
   `train_seconds`, which starts at Keras' on_train_begin). OpenMP workers sleep instead of
   spinning (OMP_WAIT_POLICY=PASSIVE unless set): on a shared CPU spinning threads made torch
   several times slower. The last checkpoint (not `best.pt`: Ultralytics would pick
   "best" on the val split, which is our test split) predicts the test images at conf =
   model.score_threshold and max_det = model.max_detections of the config (our evaluation's);
   NMS IoU: Ultralytics' default 0.7 on its probabilistic IoU (`--yolo-iou`). Predictions
   (image id, class, score, the 4 corners in original pixels, `result.obb.xyxyxyxy`) go to
   OUT/yolo/result.json and are scored with `dked_tf.experiment.evaluate.score_detections`
   (DOTA-devkit mAP(07) / mAP(12) at IoU 0.5; difficult objects ignored).
3. `--ours RUN_DIR...`: saved detectors of ours (`dked-tf train` / recipe checkpoints) scored on
   the same test records with `evaluate_map`; their `train_seconds` and `epochs` come from
   model.json.
4. `--latency`: batch 1, `--latency-size` px (800), `--latency-threads` (default `--threads`)
   threads, in this one process, taking turns call by call (each round calls every model
   once, the starting model rotating from round to round; median of `--rounds` 30):
   YOLO11n-OBB exported to ONNX by the child (the trained model, nc of this dataset;
   `model.export(format="onnx", dynamic=False, simplify=False)`) in ONNX Runtime; ours,
   `--latency-model` (a preset, with random weights: they do not change the time; default
   lodet_mobilenetv2, the paper-scale student; or a saved detector's folder, e.g. the
   recipe's DKED student, to time the architecture that was trained) as TFLite fp32, TFLite
   int8 (calibrated on a few test images) in LiteRT and as ONNX in ONNX Runtime. A call is
   the raw model: a letterboxed float image in, the output arrays out (both graphs include
   their box decode); letterboxing and NMS are excluded for every model. ONNX Runtime's
   workers do not spin (`allow_spinning=0`). On a shared, loaded CPU 1 thread gives the
   steadier numbers. Needs the `export` extra here (onnxruntime, ai-edge-litert, tf2onnx) and
   `onnx` in the Ultralytics interpreter (for its ONNX export).

`--reuse` keeps the YOLO checkpoint of an earlier run in the same --out (same data, size,
budget, seed) and only predicts / exports again.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

from dked_tf.bench.report import write_report
from dked_tf.config import PRESETS, add_set_argument, flag_overrides, resolve_config
from dked_tf.data.pipeline import build_dataset
from dked_tf.data.yolo_obb import CLIP_CHOICES, DIFFICULT_CHOICES, write_yolo_obb
from dked_tf.evaluation.top_ranked import top_ranked
from dked_tf.experiment.data import prepare_records
from dked_tf.experiment.evaluate import evaluate_map, score_detections
from dked_tf.experiment.saving import load_detector
from dked_tf.export.onnx import export_onnx
from dked_tf.export.tflite import export_tflite, representative_from_records
from dked_tf.models.presets import build_detector, count_params

DEFAULT_BUDGET_S = 509
QUICK_BUDGET_S = 30
YOLO_MODEL = "yolo11n-obb.yaml"

# The child script: runs in the Ultralytics interpreter, imports only ultralytics, torch, numpy
# and the standard library. argv[1]: job json (written by `_yolo_job`); writes job["result"].
YOLO_SCRIPT = r'''
"""Trains / predicts / exports YOLO-OBB for `dked-tf bench peer` (written by dked_tf/bench/peer.py)."""
import json
import os
import socket
import sys
import time

with open(sys.argv[1], encoding="utf-8") as handle:
    JOB = json.load(handle)

# Offline: Ultralytics checks the network (YOLO_OFFLINE=1 set by the parent skips that), may
# fetch a font for its plots and data check, and may pip-install missing export requirements
# (YOLO_AUTOINSTALL=false). Any connection attempt that is left fails here and is counted.
BLOCKED = []
_real_connect = socket.socket.connect


def _no_network(self, address, *args, **kwargs):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        BLOCKED.append(str(address))
        raise OSError(f"dked-tf bench peer: network disabled (connect to {address})")
    return _real_connect(self, address, *args, **kwargs)


socket.socket.connect = _no_network

import numpy as np  # noqa: E402
import torch  # noqa: E402
import ultralytics  # noqa: E402
from ultralytics import YOLO, settings  # noqa: E402
from ultralytics.utils import torch_utils  # noqa: E402

import ultralytics.data.utils as _data_utils  # noqa: E402

_data_utils.check_font = lambda *args, **kwargs: None  # plots are off; the font is only for drawing
settings.update({k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard",
                                    "wandb", "hub") if k in settings})
THREADS = int(JOB["threads"])
torch_utils.NUM_THREADS = THREADS  # select_device() resets torch's threads to this
torch.set_num_threads(THREADS)


def say(text):
    print(f"[yolo] {text}", flush=True)


def param_count(model):
    return int(sum(p.numel() for p in model.model.parameters()))


result = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "threads": THREADS}
budget = float(JOB["budget_seconds"])
workdir = JOB["workdir"]
last = os.path.join(workdir, "train", "weights", "last.pt")

if JOB["train"]:
    model = YOLO(JOB["model"])  # a .yaml: built from scratch, random weights
    clock = {"batches": 0, "start": None, "last": None, "threads": None}

    def on_train_start(trainer):
        torch.set_num_threads(THREADS)
        clock["threads"] = torch.get_num_threads()
        say(f"training: {len(trainer.train_loader.dataset)} images, {len(trainer.train_loader)} batches/epoch, "
            f"{clock['threads']} threads, budget {budget:.0f} s")

    def on_train_batch_end(trainer):
        clock["batches"] += 1
        clock["start"] = trainer.train_time_start
        clock["last"] = time.time()
        if clock["last"] - trainer.train_time_start > budget:
            trainer.stop = True  # Ultralytics breaks out of the epoch after this callback

    def on_train_epoch_end(trainer):
        losses = trainer.tloss if trainer.tloss is not None else []
        losses = losses.values() if isinstance(losses, dict) else losses
        loss = " ".join(f"{float(v):.3f}" for v in losses)
        say(f"epoch {trainer.epoch + 1}/{trainer.epochs} loss {loss} "
            f"elapsed {time.time() - trainer.train_time_start:.0f} s")

    for name, fn in (("on_train_start", on_train_start), ("on_train_batch_end", on_train_batch_end),
                     ("on_train_epoch_end", on_train_epoch_end)):
        model.add_callback(name, fn)
    t0 = time.time()
    model.train(data=JOB["data_yaml"], imgsz=JOB["imgsz"], batch=JOB["batch"], epochs=JOB["epochs"],
                time=budget / 3600.0, workers=0, device="cpu", seed=JOB["seed"], deterministic=True,
                pretrained=False, amp=False, plots=False, val=False, project=workdir, name="train", exist_ok=True,
                verbose=True, **JOB["train_args"])
    trainer = model.trainer
    result["train"] = {
        "loop_seconds": float(clock["last"] - clock["start"]) if clock["start"] else 0.0,
        "call_seconds": float(time.time() - t0),
        "epochs": int(trainer.epoch + 1), "batches": int(clock["batches"]), "threads": clock["threads"],
        "accumulate": int(trainer.accumulate), "batch": int(trainer.batch_size),
        "ultralytics_val": {k: float(v) for k, v in (trainer.metrics or {}).items()},
        "checkpoint": str(trainer.last),
    }
    last = str(trainer.last)
    say(f"trained {result['train']['epochs']} epochs ({result['train']['batches']} batches) in "
        f"{result['train']['loop_seconds']:.0f} s")

if not os.path.exists(last):
    raise SystemExit(f"no checkpoint {last}: train first (without --reuse)")
model = YOLO(last)
result["params"] = param_count(model)
result["checkpoint"] = last
predictions, seconds = [], []
by_path = {os.path.abspath(path): image_id for image_id, path in JOB["test_images"]}
if JOB["test_images"]:
    t0 = time.time()
    for r in model.predict(source=[path for _, path in JOB["test_images"]], imgsz=JOB["imgsz"], conf=JOB["conf"],
                           iou=JOB["iou"], max_det=JOB["max_det"], device="cpu", stream=True, verbose=False,
                           save=False, batch=1):
        torch.set_num_threads(THREADS)
        image_id = by_path[os.path.abspath(r.path)]
        obb = r.obb
        corners = obb.xyxyxyxy.cpu().numpy().reshape(-1, 8) if obb is not None else np.zeros((0, 8))
        scores = obb.conf.cpu().numpy() if obb is not None else np.zeros(0)
        classes = obb.cls.cpu().numpy().astype(int) if obb is not None else np.zeros(0, int)
        seconds.append(sum(r.speed.values()) / 1000.0)
        for poly, score, cls in zip(corners, scores, classes):
            predictions.append({"image_id": image_id, "class": int(cls), "score": float(score),
                                "poly": [float(v) for v in poly]})
    result["predict"] = {"images": len(JOB["test_images"]), "detections": len(predictions),
                         "seconds": float(time.time() - t0), "median_ms_per_image": float(np.median(seconds) * 1e3)}
    say(f"predicted {len(JOB['test_images'])} test images: {len(predictions)} detections")
result["predictions"] = predictions

if JOB["export_onnx"]:
    exported = YOLO(last).export(format="onnx", imgsz=JOB["export_imgsz"], dynamic=False, simplify=False,
                                 half=False, batch=1, device="cpu")
    if not exported or not os.path.exists(str(exported)):
        raise SystemExit("ONNX export failed (Ultralytics needs the `onnx` package: pip install onnx)")
    os.replace(str(exported), JOB["export_onnx"])
    result["onnx"] = JOB["export_onnx"]
    say(f"exported {JOB['export_onnx']} at {JOB['export_imgsz']} px")

result["blocked_connections"] = BLOCKED
with open(JOB["result"] + ".tmp", "w", encoding="utf-8") as handle:
    json.dump(result, handle)
os.replace(JOB["result"] + ".tmp", JOB["result"])
'''


# ----------------------------------------------------------------------------- the YOLO child


def find_python(python):
    """The interpreter that runs Ultralytics: `python`, or this one when it has ultralytics."""
    if python:
        return python
    if importlib.util.find_spec("ultralytics") is not None:
        return sys.executable
    raise SystemExit(
        "bench peer: this environment has no Ultralytics. Install the optional extra here "
        "(pip install 'dked_tf[peer]', which brings ultralytics and PyTorch), or pass "
        "--python /path/to/venv/bin/python of an environment that has it (pip install ultralytics; "
        "for --latency also onnx)."
    )


def child_env(out, threads):
    env = dict(os.environ)
    # Sleeping (not spinning) OpenMP workers: on a shared, loaded CPU torch's spinning threads made
    # a 2-thread training step 4-20x slower than a 1-thread one (measured: 2.4-15 s vs 0.6 s);
    # passive, 2 threads took 0.66 s.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(
        YOLO_OFFLINE="1",
        YOLO_AUTOINSTALL="false",
        YOLO_CONFIG_DIR=os.path.join(out, "ultralytics_config"),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def check_python(python, env):
    """(ultralytics version, torch version) of `python`; exits with a clear message when it fails."""
    code = "import ultralytics, torch; print(ultralytics.__version__, torch.__version__)"
    try:
        done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except OSError as error:
        raise SystemExit(f"bench peer: cannot run --python {python}: {error}") from None
    if done.returncode:
        raise SystemExit(
            f"bench peer: {python} cannot import ultralytics and torch "
            f"(pip install 'dked_tf[peer]' or ultralytics there):\n{done.stderr[-2000:]}"
        )
    return done.stdout.split()[-2:]


def run_child(python, job, out, env, verbose=1):
    """Runs YOLO_SCRIPT on `job`; the log goes to OUT/yolo/log.txt, `[yolo]` lines also here."""
    folder = job["workdir"]
    script = os.path.join(folder, "peer_yolo.py")
    job_path = os.path.join(folder, "job.json")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(YOLO_SCRIPT)
    with open(job_path, "w", encoding="utf-8") as handle:
        json.dump(job, handle, indent=1)
    log_path = os.path.join(folder, "log.txt")
    if os.path.exists(job["result"]):
        os.remove(job["result"])
    tail = []
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [python, script, job_path],
            env=env,
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for line in process.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-40:]
            if verbose and line.startswith("[yolo]"):
                print(f"  {line.rstrip()}", flush=True)
        code = process.wait()
    if code or not os.path.exists(job["result"]):
        raise SystemExit(
            "bench peer: the YOLO process failed (exit code {}); log {}:\n{}".format(code, log_path, "\n".join(tail))
        )
    with open(job["result"], encoding="utf-8") as handle:
        return json.load(handle)


def yolo_detections(predictions, class_names):
    """Child predictions -> the evaluator's dict: class name -> [(image_id, score, poly [8])]."""
    detections = {name: [] for name in class_names}
    for p in predictions:
        detections[class_names[p["class"]]].append((p["image_id"], p["score"], np.asarray(p["poly"], np.float64)))
    return detections


# ----------------------------------------------------------------------------- ours


def ranking_columns(detections, records, class_names):
    """The top of each model's ranking (`evaluation.top_ranked`) as table columns: rank of the first
    true positive (the first class's), precision among the first 10, and of the first N detections
    (N = ground truths) the shares of true positives, near misses and background, in percent."""
    top = top_ranked(detections, records, class_names)
    first = next(iter(top["first_true_positive_rank"].values()), None)
    if not top["ranked"]:
        return {"first_tp": first}
    return {
        "first_tp": first,
        "p_at_10": top["precision_at"]["10"],
        "top_tp_pct": 100 * top["true_positive"],
        "top_near_miss_pct": 100 * top["near_miss"],
        "top_background_pct": 100 * top["background"],
    }


def score_ours(run_dirs, cfg, test_records, class_names):
    """One row per saved detector of ours: mAP on the test records, params, training time."""

    rows, details = [], []
    for run_dir in run_dirs:
        model, meta = load_detector(run_dir)
        if list(meta["class_names"]) != list(class_names):
            raise SystemExit(
                f"bench peer: {run_dir} was trained on classes {meta['class_names']}, the data has {list(class_names)}"
            )
        model_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=int(meta["image_size"])))
        metrics, _, detections = evaluate_map(
            model, test_records, class_names, model_cfg, verbose=0, return_results=True
        )
        label = " ".join(str(v) for v in (meta.get("role"), f"seed {meta['seed']}" if "seed" in meta else None) if v)
        row = {
            "model": f"ours {meta['architecture']}" + (f" ({label})" if label else ""),
            "source": os.path.normpath(run_dir),
            "params_M": count_params(model) / 1e6,
            "input_px": int(meta["image_size"]),
            "map07": 100 * metrics["map07"],
            "map12": 100 * metrics["map12"],
            **ranking_columns(detections, test_records, class_names),
        }
        if "train_seconds" in meta:
            row["train_s"] = float(meta["train_seconds"])
        if "epochs" in meta:
            row["epochs"] = int(meta["epochs"])
        rows.append(row)
        details.append({"run_dir": run_dir, "meta": meta, "metrics": metrics})
        print(f"  ours {run_dir}: mAP(07) {row['map07']:.2f}, mAP(12) {row['map12']:.2f}", flush=True)
    return rows, details


# ----------------------------------------------------------------------------- latency


def _test_image(records, size):
    """One real letterboxed test image, float32 [1, S, S, 3] in [0, 1] (the pipeline's letterbox)."""

    images, _ = next(iter(build_dataset(records[:1], size, batch_size=1, training=False)))
    return np.asarray(images, np.float32)


def _ort_call(path, threads, image):
    import onnxruntime  # noqa: PLC0415  (the export extra)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Workers sleep instead of spinning, like torch's (OMP_WAIT_POLICY=PASSIVE): on a shared CPU,
    # 2 spinning threads took 230 ms per YOLO call against 173 ms without spinning (1 thread: 132).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image}
    return lambda: session.run(None, feed)


def _tflite_call(path, threads, image):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415  (the export extra)

    interpreter = Interpreter(model_path=str(path), num_threads=int(threads))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = image
    if detail["dtype"] != np.float32:  # a quantized input: scale the float image into it
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(image / scale + zero), info.min, info.max).astype(detail["dtype"])
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return call


def take_turns(calls, rounds, warmup=2):
    """calls: {name: fn}. Every round calls each fn once (the first one rotating); returns
    {name: {"median_ms", "p10_ms", "p90_ms", "runs"}}."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return {
        name: {
            "median_ms": float(np.median(t) * 1e3),
            "p10_ms": float(np.percentile(t, 10) * 1e3),
            "p90_ms": float(np.percentile(t, 90) * 1e3),
            "runs": len(t),
        }
        for name, t in times.items()
    }


def latency_detector(spec, num_classes, size):
    """The detector to time, run once at `size` px: a saved detector (its folder or .keras
    file: architecture and weights) or a preset name (random weights)."""
    if not os.path.exists(spec):
        return build_detector(spec, num_classes, size)
    model, meta = load_detector(spec)
    if len(meta["class_names"]) != num_classes:
        raise SystemExit(
            f"--latency-model {spec}: the detector has {len(meta['class_names'])} classes, the data {num_classes}"
        )
    model(np.zeros([1, size, size, 3], np.float32), training=False)
    return model


def latency_rows(args, yolo_onnx, yolo_params, class_names, test_records, out):
    """Exports ours (TFLite fp32, int8; ONNX), then times them with the YOLO ONNX, turn by turn."""

    size, threads = args.latency_size, args.latency_threads
    folder = os.path.join(out, "latency")
    os.makedirs(folder, exist_ok=True)
    print(f"latency: exporting {args.latency_model} at {size} px (TFLite fp32, int8, ONNX) ...", flush=True)
    model = latency_detector(args.latency_model, len(class_names), size)
    params = count_params(model) / 1e6
    paths = {
        "fp32": os.path.join(folder, "ours_fp32.tflite"),
        "int8": os.path.join(folder, "ours_int8.tflite"),
        "onnx": os.path.join(folder, "ours.onnx"),
    }
    t0 = time.perf_counter()
    export_tflite(model, paths["fp32"], size, class_names=list(class_names), verbose=0)
    export_tflite(
        model,
        paths["int8"],
        size,
        quantize="int8",
        class_names=list(class_names),
        verbose=0,
        representative_images=representative_from_records(test_records, size, limit=args.calibration_images),
        num_representative=args.calibration_images,
    )
    export_onnx(model, paths["onnx"], size, class_names=list(class_names), verbose=0)
    print(
        f"  exported in {time.perf_counter() - t0:.0f} s; timing {args.rounds} rounds, {threads} threads ...",
        flush=True,
    )
    image = _test_image(test_records, size)
    calls = {
        "yolo11n-obb onnxruntime": _ort_call(yolo_onnx, threads, np.ascontiguousarray(image.transpose(0, 3, 1, 2))),
        "ours tflite fp32": _tflite_call(paths["fp32"], threads, image),
        "ours tflite int8": _tflite_call(paths["int8"], threads, image),
        "ours onnxruntime": _ort_call(paths["onnx"], threads, image),
    }
    timing = take_turns(calls, args.rounds)
    rows = [
        {
            "model": "YOLO11n-OBB",
            "runtime": "onnxruntime fp32",
            "params_M": yolo_params / 1e6,
            "input_px": size,
            "latency_ms": timing["yolo11n-obb onnxruntime"]["median_ms"],
        }
    ]
    for key, runtime in (
        ("ours tflite fp32", "litert fp32"),
        ("ours tflite int8", "litert int8"),
        ("ours onnxruntime", "onnxruntime fp32"),
    ):
        rows.append(
            {
                "model": f"ours {args.latency_model}",
                "runtime": runtime,
                "params_M": params,
                "input_px": size,
                "latency_ms": timing[key]["median_ms"],
            }
        )
    sizes = {k: os.path.getsize(p) / 1e6 for k, p in paths.items()}
    sizes["yolo_onnx"] = os.path.getsize(yolo_onnx) / 1e6
    return rows, {
        "timing": timing,
        "size_mb": sizes,
        "threads": threads,
        "rounds": args.rounds,
        "image_size": size,
        "model": args.latency_model,
        "call": "one inference call: letterboxed float image in, output arrays out (both graphs include "
        "their box decode); letterbox and NMS excluded",
    }


# ----------------------------------------------------------------------------- main


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dked-tf bench peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"plumbing check: smoke preset, {QUICK_BUDGET_S} s budget; with --latency the tiny "
        "student at 256 px, 5 rounds",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="config preset (default: default)")
    parser.add_argument("--task", choices=("hrsc", "dota"), default="hrsc", help="dataset format of the preset")
    add_set_argument(parser)
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="a real HRSC2016 / DOTA tree (default: the preset's built-in synthetic set)",
    )
    parser.add_argument("--data-cache", default=None, metavar="DIR", help="config data.cache_dir")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help=f"wall time of the YOLO training loop (default {DEFAULT_BUDGET_S}; --quick {QUICK_BUDGET_S})",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="YOLO input size (default: the config's data.image_size; a multiple of 32)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch / LiteRT / ONNX Runtime threads (default 1)")
    parser.add_argument("--batch", type=int, default=8, help="YOLO batch size (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="YOLO training seed")
    parser.add_argument(
        "--difficult",
        choices=DIFFICULT_CHOICES,
        default="keep",
        help="difficult objects in the YOLO labels (the format has no flag; ours trains on them)",
    )
    parser.add_argument(
        "--clip",
        choices=CLIP_CHOICES,
        default="auto",
        help="corners outside the image (dked_tf.data.yolo_obb): auto clips only objects "
        "Ultralytics would reject (default), all clips every one, none writes them as they are",
    )
    parser.add_argument("--yolo-model", default=YOLO_MODEL, help="Ultralytics model yaml (default %(default)s)")
    parser.add_argument(
        "--yolo-iou",
        type=float,
        default=0.7,
        help="YOLO NMS threshold (Ultralytics' probabilistic IoU; default its 0.7)",
    )
    parser.add_argument(
        "--yolo-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Ultralytics train argument, e.g. --yolo-set nbs=8 (values parsed as JSON)",
    )
    parser.add_argument(
        "--python", default=None, help="Python of an environment with ultralytics (default: this one, if it has it)"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="work folder: dataset, YOLO run, exports (default bench_results/peer)",
    )
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/peer.json)")
    parser.add_argument(
        "--ours",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="saved detectors of ours (model.json folders) to score on the same test split",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the YOLO checkpoint of an earlier run in --out (same settings); predict/export only",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="batch-1 latency at --latency-size: YOLO ONNX vs ours TFLite fp32/int8 and ONNX",
    )
    parser.add_argument("--latency-size", type=int, default=None, help="latency input size (default 800)")
    parser.add_argument(
        "--latency-model",
        default=None,
        help="our preset for the latency rows (default lodet_mobilenetv2, the paper-scale student), or a "
        "saved detector's folder (its architecture, e.g. runs/hrsc_lodet/checkpoints/student_dked_seed0)",
    )
    parser.add_argument(
        "--latency-threads",
        type=int,
        default=None,
        help="LiteRT / ONNX Runtime threads of the latency rows (default --threads)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="latency rounds (default 30)")
    parser.add_argument("--calibration-images", type=int, default=8, help="int8 representative images (default 8)")
    return parser


def _parse_yolo_set(items):
    extra = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--yolo-set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            extra[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            extra[key.strip()] = value
    reserved = {"data", "imgsz", "batch", "time", "workers", "device", "seed", "pretrained", "amp", "project", "name"}
    if reserved & set(extra):
        raise SystemExit(f"--yolo-set: {', '.join(sorted(reserved & set(extra)))} are set by the bench's own options")
    return extra


def main(argv=None):
    args = build_parser().parse_args(argv)
    preset = args.preset or ("smoke" if args.quick else "default")
    budget = float(
        args.budget_seconds if args.budget_seconds is not None else QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET_S
    )
    args.latency_size = args.latency_size or (256 if args.quick else 800)
    args.latency_model = args.latency_model or ("lodet_mobilenetv2_t" if args.quick else "lodet_mobilenetv2")
    args.rounds = args.rounds or (5 if args.quick else 30)
    args.latency_threads = args.latency_threads or args.threads
    if min(args.threads, args.latency_threads) < 1:
        raise SystemExit("--threads and --latency-threads need at least 1")
    train_args = _parse_yolo_set(args.yolo_set)
    # One optimizer step per batch, as ours: Ultralytics' default nominal batch (nbs=64) accumulates
    # 64 / batch = 8 batches per step, i.e. 8x fewer steps in a short budget (measured, default
    # preset, 120 s: mAP(12) 0.2 with nbs=64, 14.2 with nbs=8). --yolo-set nbs=64 restores it.
    train_args.setdefault("nbs", args.batch)
    python = find_python(args.python)
    out = os.path.abspath(args.out or os.path.join("bench_results", "peer"))
    os.makedirs(os.path.join(out, "yolo"), exist_ok=True)
    env = child_env(out, args.threads)
    versions = check_python(python, env)
    print(f"bench peer: Ultralytics {versions[0]}, torch {versions[1]} ({python})", flush=True)

    flags = flag_overrides({"data.root": args.data_root, "data.cache_dir": args.data_cache})
    cfg = resolve_config(preset, task=args.task, overrides=flags + list(args.overrides))
    imgsz = int(args.image_size or cfg.data.image_size)
    if imgsz % 32:
        raise SystemExit(f"--image-size {imgsz}: YOLO11 needs a multiple of 32 (its largest stride)")
    train_records, class_names = prepare_records(cfg, "train", verbose=0)
    test_records, _ = prepare_records(cfg, "test", verbose=0)
    print(f"data: {len(train_records)} train, {len(test_records)} test images; classes {list(class_names)}", flush=True)
    dataset = write_yolo_obb(
        os.path.join(out, "dataset"),
        {"trainval": train_records, "test": test_records},
        class_names,
        difficult=args.difficult,
        clip=args.clip,
    )

    workdir = os.path.join(out, "yolo")
    job = {
        "model": args.yolo_model,
        "data_yaml": dataset["data_yaml"],
        "imgsz": imgsz,
        "batch": args.batch,
        "budget_seconds": budget,
        "epochs": 100,
        "seed": args.seed,
        "threads": args.threads,
        "train_args": train_args,
        "workdir": workdir,
        "test_images": [
            [
                r.image_id,
                os.path.join(dataset["root"], "images", "test", r.image_id + os.path.splitext(r.image_path)[1].lower()),
            ]
            for r in test_records
        ],
        "conf": float(cfg.model.score_threshold),
        "iou": float(args.yolo_iou),
        "max_det": int(cfg.model.max_detections),
        "export_onnx": os.path.join(out, "latency", "yolo11n_obb.onnx") if args.latency else "",
        "export_imgsz": args.latency_size,
        "result": os.path.join(workdir, "result.json"),
    }
    settings_path = os.path.join(workdir, "train_settings.json")
    train_key = {
        k: job[k] for k in ("model", "data_yaml", "imgsz", "batch", "budget_seconds", "seed", "threads", "train_args")
    }
    train_key.update(records=[r.image_id for r in train_records], difficult=args.difficult, clip=args.clip)
    previous = None
    if args.reuse and os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as handle:
            previous = json.load(handle)
    job["train"] = not (
        previous
        and previous.get("key") == train_key
        and os.path.exists(os.path.join(workdir, "train", "weights", "last.pt"))
    )
    if args.reuse and job["train"]:
        print("--reuse: no matching earlier YOLO run in this --out; training", flush=True)
    if args.latency:
        os.makedirs(os.path.join(out, "latency"), exist_ok=True)
    print(
        f"YOLO: {args.yolo_model} from scratch at {imgsz} px, batch {args.batch}, budget {budget:.0f} s, "
        f"{args.threads} threads" + ("" if job["train"] else " (reusing the earlier run)"),
        flush=True,
    )
    child = run_child(python, job, out, env)
    if job["train"]:
        previous = {"key": train_key, "train": child["train"]}
        with open(settings_path, "w", encoding="utf-8") as handle:
            json.dump(previous, handle, indent=1)
    trained = previous["train"]
    if child.get("blocked_connections"):
        print(
            f"note: the YOLO process tried to connect {len(child['blocked_connections'])} times (blocked): "
            f"{child['blocked_connections'][:3]}",
            flush=True,
        )

    detections = yolo_detections(child["predictions"], class_names)
    metrics = score_detections(detections, test_records, class_names)
    yolo_row = {
        "model": "YOLO11n-OBB (scratch)",
        "source": os.path.relpath(trained["checkpoint"]),
        "params_M": child["params"] / 1e6,
        "input_px": imgsz,
        "budget_s": budget,
        "train_s": trained["loop_seconds"],
        "epochs": trained["epochs"],
        "map07": 100 * metrics["map07"],
        "map12": 100 * metrics["map12"],
        **ranking_columns(detections, test_records, class_names),
    }
    print(
        f"  YOLO11n-OBB: mAP(07) {yolo_row['map07']:.2f}, mAP(12) {yolo_row['map12']:.2f} "
        f"({trained['epochs']} epochs, {trained['batches']} batches in {trained['loop_seconds']:.0f} s)",
        flush=True,
    )
    rows = [yolo_row]
    ours_rows, ours_details = score_ours(args.ours, cfg, test_records, class_names) if args.ours else ([], [])
    rows += ours_rows
    extra = {
        "config": {
            "preset": preset,
            "task": args.task,
            "overrides": flags + list(args.overrides),
            "score_threshold": cfg.model.score_threshold,
            "max_detections": cfg.model.max_detections,
        },
        "dataset": dataset,
        "yolo": {
            "python": python,
            "ultralytics": child["ultralytics"],
            "torch": child["torch"],
            "train": trained,
            "params": child["params"],
            "predict": child.get("predict"),
            "conf": job["conf"],
            "iou": job["iou"],
            "max_det": job["max_det"],
            "train_args": train_args,
            "blocked_connections": child.get("blocked_connections", []),
            "metrics": metrics,
        },
        "ours": ours_details,
        "notes": "train_s: the training loop's wall time (YOLO: Ultralytics' clock from its train start to "
        "the last batch; ours: model.json train_seconds); mAP in percent, our evaluator (IoU 0.5, "
        "difficult ignored); first_tp, p_at_10, top_*_pct: the top of the ranking "
        "(dked_tf.evaluation.top_ranked; the first N detections, N = ground truths)",
    }
    if args.latency:
        lat_rows, lat_details = latency_rows(args, child["onnx"], child["params"], class_names, test_records, out)
        yolo_row["latency_ms"] = lat_rows[0]["latency_ms"]
        yolo_row["runtime"] = f"{lat_rows[0]['runtime']} @{args.latency_size}"
        for row in lat_rows[1:]:
            row["runtime"] = f"{row['runtime']} @{args.latency_size}"
        rows += lat_rows[1:]
        extra["latency"] = lat_details
    write_report(
        "peer",
        rows,
        path=args.output,
        extra=extra,
        title=f"Ours vs YOLO11n-OBB: same data, {budget:.0f} s YOLO budget, our evaluator"
        + (f"; latency batch 1 @{args.latency_size} px, {args.latency_threads} threads" if args.latency else ""),
        columns=[
            "model",
            "params_M",
            "input_px",
            "budget_s",
            "train_s",
            "epochs",
            "map07",
            "map12",
            "first_tp",
            "p_at_10",
            "top_tp_pct",
            "top_near_miss_pct",
            "top_background_pct",
            "runtime",
            "latency_ms",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
