"""TensorRT for NVIDIA Jetson: ONNX -> TensorRT engine, and TF-TRT where TensorFlow has it.

- `build_tensorrt_engine(onnx_path, ...)`: where the Python `tensorrt` package imports (a
  Jetson with JetPack, or an x86 box with TensorRT), builds a serialized engine from the
  ONNX file written by `dked_tf.export.onnx.export_onnx`; elsewhere it returns (and prints)
  the exact `trtexec` command to run on the device.
- `convert_tftrt(saved_model_dir, out, precision)`: TF-TRT conversion. TensorFlow >= 2.18
  wheels are built without TensorRT, so on them it fails at once and points to the ONNX
  route; it runs where TensorFlow was built with TensorRT (<= 2.17, e.g. NVIDIA's Jetson
  wheels).
"""

import os
import shlex

from dked_tf.files import write_bytes_atomic

PRECISIONS = ("FP32", "FP16", "INT8")


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or TF-TRT) is not available in this environment."""


def trtexec_command(
    onnx_path, engine_path, fp16=True, int8=False, calibration_cache=None, workspace_mb=1024, trtexec="trtexec"
):
    """The `trtexec` command line (a string) that builds `engine_path` from `onnx_path`."""
    parts = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if fp16:
        parts.append("--fp16")
    if int8:
        parts.append("--int8")
        if calibration_cache:
            parts.append(f"--calib={calibration_cache}")
    if workspace_mb:
        parts.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    return " ".join(shlex.quote(p) for p in parts)


def tensorrt_available():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def build_tensorrt_engine(
    onnx_path, engine_path=None, fp16=True, int8=False, int8_calibrator=None, workspace_mb=1024, verbose=1
):
    """Builds a TensorRT engine from an ONNX file if `tensorrt` is importable.

    Returns dict: `built` (bool), `engine` (path), `trtexec` (the equivalent command line),
    `message`. INT8 in Python needs a `tensorrt.IInt8Calibrator` (`int8_calibrator`); without
    one use the trtexec command with a calibration cache.
    """
    onnx_path = str(onnx_path)
    if not os.path.exists(onnx_path):
        raise FileNotFoundError(f"{onnx_path}: ONNX file not found (write it with `dked-tf export --format onnx`)")
    engine_path = str(engine_path or os.path.splitext(onnx_path)[0] + ".engine")
    command = trtexec_command(onnx_path, engine_path, fp16=fp16, int8=int8, workspace_mb=workspace_mb)
    result = {"built": False, "engine": engine_path, "onnx": onnx_path, "trtexec": command}
    if not tensorrt_available():
        result["message"] = (
            "the Python `tensorrt` package is not installed here; copy the ONNX file to the Jetson "
            f"and run there:\n  {command}\n(trtexec is in /usr/src/tensorrt/bin on JetPack)"
        )
        if verbose:
            print(result["message"])
        return result
    if int8 and int8_calibrator is None:
        raise ValueError("INT8 engines need an int8_calibrator (tensorrt.IInt8Calibrator), or use: " + command)

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.INFO if verbose > 1 else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the ONNX file:\n{errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = int8_calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")
    write_bytes_atomic(engine_path, bytes(serialized))
    result.update(built=True, message=f"written {engine_path}")
    if verbose:
        print(result["message"])
    return result


def tftrt_available():
    """(available, reason): whether this TensorFlow was built with TensorRT."""
    import tensorflow as tf

    build_info = tf.sysconfig.get_build_info()
    if not build_info.get("is_tensorrt_build", False):
        return False, f"TensorFlow {tf.__version__} was built without TensorRT (is_tensorrt_build=False)"
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

        if not _pywrap_py_utils.is_tensorrt_enabled():
            return False, f"TensorFlow {tf.__version__} reports TensorRT disabled"
    except ImportError as error:
        return False, f"TensorFlow {tf.__version__} has no TF-TRT bindings ({error})"
    return True, "ok"


def tftrt_unavailable_message(reason):
    return (
        f"TF-TRT is not available: {reason}. TensorFlow >= 2.18 wheels ship without TensorRT, so "
        "TF-TRT conversion only runs with a TensorFlow built with TensorRT (<= 2.17, e.g. NVIDIA's "
        "Jetson wheels from JetPack). Use the ONNX route instead: `dked-tf export --format onnx` "
        "then build an engine on the Jetson with `trtexec --onnx=model.onnx --saveEngine=model.engine "
        "--fp16` (or `dked-tf export --format tensorrt`, which prints that command)."
    )


def convert_tftrt(
    saved_model_dir, out, precision="FP16", calibration_images=None, signature_key="serving_default", verbose=1
):
    """TF-TRT conversion of a SavedModel. Fails at once (TensorRTUnavailableError) without
    TensorRT in TensorFlow.

    precision: "FP32" | "FP16" | "INT8"; INT8 needs calibration_images (iterable of input
    arrays for the signature, e.g. uint8 [1, H, W, 3]).
    """
    precision = str(precision).upper()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    available, reason = tftrt_available()
    if not available:
        raise TensorRTUnavailableError(tftrt_unavailable_message(reason))
    if precision == "INT8" and calibration_images is None:
        raise ValueError("TF-TRT INT8 needs calibration_images")

    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=str(saved_model_dir),
        input_saved_model_signature_key=signature_key,
        precision_mode=getattr(trt.TrtPrecisionMode, precision),
        use_calibration=precision == "INT8",
    )
    if precision == "INT8":

        def calibration_input():
            for batch in calibration_images:
                yield (batch,)

        converter.convert(calibration_input_fn=calibration_input)
    else:
        converter.convert()
    converter.save(str(out))
    if verbose:
        print(f"written TF-TRT SavedModel {out} ({precision})")
    return str(out)
