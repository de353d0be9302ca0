"""`dked-tf export`: a trained detector (run folder or .keras) -> one-file .keras, SavedModel,
TFLite, ONNX, TensorRT, TF-TRT.

    dked-tf export --weights runs/student --format keras --out student.keras
    dked-tf export --weights student.keras --format tflite --quantize int8 \\
        --representative-data data/train/images --out export/student_int8.tflite
    dked-tf export --weights student.keras --format saved_model --out export/student/1
    dked-tf export --weights student.keras --format tensorrt --out export/student.onnx
    dked-tf export --model lodet_mobilenetv2_t --num-classes 2 --format onnx --out /tmp/t.onnx
"""

import os
import sys

from dked_tf.config import ConfigError, check_at_least, check_fraction, check_input_size
from dked_tf.data.images import folder_batches_rgb
from dked_tf.experiment.saving import is_keras_file, load_detector, save_keras_file
from dked_tf.export.onnx import export_onnx
from dked_tf.export.saved_model import export_saved_model
from dked_tf.export.tensorrt import (
    TensorRTUnavailableError,
    build_tensorrt_engine,
    convert_tftrt,
    tftrt_available,
    tftrt_unavailable_message,
)
from dked_tf.export.tflite import export_tflite
from dked_tf.models.presets import build_model

DESCRIPTION = (
    "Export a detector: one-file .keras model, SavedModel (TF Serving signatures), TFLite fp32/fp16/int8 (builtin ops, "
    "NMS on the host or fast in-graph), ONNX, a TensorRT engine (or the trtexec command), TF-TRT."
)
FORMATS = ("keras", "saved_model", "tflite", "onnx", "tensorrt", "tftrt")


def add_arguments(parser):
    source = parser.add_argument_group("model (one of)")
    source.add_argument(
        "--weights",
        help="a run folder written by `dked-tf train`/`distill` (model.json + "
        "model.weights.h5), or a .keras model file (OrientedDetector, or a Distiller whose "
        "student is exported)",
    )
    source.add_argument("--model", help="a preset name, randomly initialised (smoke tests), e.g. lodet_mobilenetv2_t")
    source.add_argument("--num-classes", type=int, default=None, help="classes of --model")
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="keras: one .keras file with class names, input and tile size inside (read by "
        "`dked-tf predict/export`, `dked_tf.Detector.load` and `keras.saving.load_model`); "
        "saved_model: TF Serving signatures; tflite: builtin-only .tflite + sidecar json; "
        "onnx: for TensorRT/onnxruntime; tensorrt: engine where `tensorrt` imports, else ONNX + the "
        "trtexec command; tftrt: TF-TRT (only where TensorFlow has TensorRT)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output: .keras file, SavedModel folder, .tflite, .onnx (tensorrt: .onnx or .engine), TF-TRT folder",
    )
    parser.add_argument("--image-size", type=int, default=None, help="network input side S (default: the model's)")
    parser.add_argument("--class-names", default=None, help="comma-separated class names for the sidecar/metadata")
    parser.add_argument("--score-threshold", type=float, default=None, help="default: the model's")
    parser.add_argument("--iou-threshold", type=float, default=None, help="NMS IoU threshold (default: the model's)")
    parser.add_argument("--max-detections", type=int, default=None, help="default: the model's")
    tflite = parser.add_argument_group("tflite")
    tflite.add_argument(
        "--quantize",
        choices=("none", "fp16", "int8"),
        default="none",
        help="none: float32; fp16: float16 weights; int8: full-integer post-training quantization "
        "calibrated on --representative-data",
    )
    tflite.add_argument(
        "--representative-data",
        default=None,
        help="folder of training images for int8 calibration (letterboxed like the pipeline)",
    )
    tflite.add_argument("--num-representative", type=int, default=300, help="images used for int8 calibration")
    tflite.add_argument(
        "--nms",
        choices=("host", "fast"),
        default="host",
        help="host: per-cell outputs, NMS in tflite/detect.py; fast: builtin-only matrix NMS in the graph",
    )
    tflite.add_argument("--uint8-input", action="store_true", help="the .tflite takes uint8 pixels")
    trt = parser.add_argument_group("onnx / tensorrt / tftrt")
    trt.add_argument("--opset", type=int, default=17, help="ONNX opset")
    trt.add_argument(
        "--precision", choices=("FP32", "FP16", "INT8"), default="FP16", help="TensorRT / TF-TRT precision"
    )
    trt.add_argument(
        "--saved-model", default=None, help="tftrt: an existing SavedModel to convert (default: export one first)"
    )
    trt.add_argument("--calibration-data", default=None, help="tftrt INT8: folder of calibration images")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def load_model_and_meta(args):
    """(model, meta) to export, from --weights (a run folder or .keras file; its saved facts also
    fill in --class-names and --image-size) or --model/--num-classes (meta {})."""
    if bool(args.weights) == bool(args.model):
        raise ConfigError("give exactly one of --weights DIR_OR_FILE.keras or --model PRESET --num-classes N")
    if args.model:
        if not args.num_classes:
            raise ConfigError("--model needs --num-classes")
        return build_model(args.model, args.num_classes), {}
    if not os.path.exists(args.weights):
        raise FileNotFoundError(f"{args.weights}: no such file or folder (--weights)")
    model, meta = load_detector(args.weights)
    if not args.class_names and meta.get("class_names"):
        args.class_names = ",".join(meta["class_names"])
    if not args.image_size and meta:
        args.image_size = int(meta["image_size"])
    return model, meta


def _settings(args, model):
    return dict(
        image_size=int(args.image_size or model.image_size or 800),
        score_threshold=float(args.score_threshold if args.score_threshold is not None else model.score_threshold),
        iou_threshold=float(args.iou_threshold if args.iou_threshold is not None else model.iou_threshold),
        max_detections=int(args.max_detections if args.max_detections is not None else model.max_detections),
    )


def check_arguments(args):
    """Raises ConfigError for a value no export can use (the config's rules, `dked_tf.config`)."""
    if args.image_size is not None:
        check_input_size("--image-size", args.image_size)
    for name in ("score_threshold", "iou_threshold"):
        if getattr(args, name) is not None:
            check_fraction(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_detections is not None:
        check_at_least("--max-detections", args.max_detections, 1)
    check_at_least("--num-representative", args.num_representative, 1)
    if args.format == "keras" and not is_keras_file(args.out):
        raise ConfigError(f"--format keras writes one .keras file: --out {args.out} must end with .keras")
    if args.format == "tflite" and args.quantize == "int8" and not args.representative_data:
        raise ConfigError("--quantize int8 needs --representative-data DIR (training images)")


def run(args):
    check_arguments(args)
    verbose = 0 if args.quiet else 1
    class_names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None

    if args.format == "tftrt":
        # fail before any work where TensorFlow has no TensorRT
        available, reason = tftrt_available()
        if not available:
            print(f"dked-tf export: {tftrt_unavailable_message(reason)}", file=sys.stderr)
            return 2
        saved_model = args.saved_model
        if saved_model is None:
            model, _ = load_model_and_meta(args)
            saved_model = args.out.rstrip("/") + "_savedmodel"
            export_saved_model(model, saved_model, class_names=class_names, **_settings(args, model))
        calibration = None
        if args.precision == "INT8":
            if not args.calibration_data:
                raise ConfigError("--precision INT8 needs --calibration-data DIR")
            calibration = list(folder_batches_rgb(args.calibration_data, args.num_representative))
        try:
            convert_tftrt(saved_model, args.out, args.precision, calibration, verbose=verbose)
        except TensorRTUnavailableError as error:
            print(f"dked-tf export: {error}", file=sys.stderr)
            return 2
        return 0

    model, meta = load_model_and_meta(args)
    if args.class_names and class_names is None:  # filled in from a saved run folder
        class_names = [n.strip() for n in args.class_names.split(",")]
    settings = _settings(args, model)
    if args.format == "keras":
        names = class_names or [f"class{i}" for i in range(model.num_classes)]
        extra = {k: v for k, v in meta.items() if k not in ("class_names", "image_size", "num_classes")}
        save_keras_file(model, args.out, class_names=names, image_size=settings["image_size"], **extra)
        if verbose:
            print(f"written {args.out} (one-file model: dked-tf predict --model {args.out}, Detector.load)")
        return 0
    if args.format == "saved_model":
        export_saved_model(model, args.out, class_names=class_names, verbose=verbose, **settings)
        if verbose:
            print(f"written SavedModel {args.out} (signatures serving_default, serving_image_bytes)")
        return 0
    if args.format == "tflite":
        export_tflite(
            model,
            args.out,
            settings["image_size"],
            quantize=args.quantize,
            representative_images=args.representative_data,
            nms=args.nms,
            uint8_input=args.uint8_input,
            score_threshold=settings["score_threshold"],
            iou_threshold=settings["iou_threshold"],
            max_detections=settings["max_detections"],
            class_names=class_names,
            num_representative=args.num_representative,
            verbose=verbose,
        )
        return 0
    if args.format in ("onnx", "tensorrt"):
        out = args.out
        onnx_path = out if not out.endswith(".engine") else os.path.splitext(out)[0] + ".onnx"
        export_onnx(
            model,
            onnx_path,
            settings["image_size"],
            opset=args.opset,
            class_names=class_names,
            score_threshold=settings["score_threshold"],
            iou_threshold=settings["iou_threshold"],
            max_detections=settings["max_detections"],
            verbose=verbose,
        )
        if args.format == "tensorrt":
            engine = out if out.endswith(".engine") else os.path.splitext(out)[0] + ".engine"
            result = build_tensorrt_engine(
                onnx_path, engine, fp16=args.precision == "FP16", int8=args.precision == "INT8", verbose=verbose
            )
            if not result["built"]:
                print(f"trtexec command: {result['trtexec']}")
        return 0
    raise SystemExit(f"dked-tf export: unknown format {args.format!r}")
