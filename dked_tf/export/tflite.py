"""TFLite export: the network plus the per-cell decode, builtin ops only.

The .tflite takes one letterboxed image `[1, S, S, 3]` (float32 in [0, 1], or uint8 with
`uint8_input=True`) and returns, per cell of every level, `polygons [1, N, 8]` (letterboxed
input pixels), `scores [1, N]` and `classes [1, N]` (int32). NMS runs on the host
(`tflite/detect.py`, numpy) — or, with `nms="fast"`, a builtin-only matrix NMS runs inside
the .tflite and the outputs are the K kept detections.

Only TFLITE_BUILTINS (TFLITE_BUILTINS_INT8 for int8) are allowed: if anything would need
TF-Select (Flex), `export_tflite` fails and names the offending ops. A sidecar json next to
the .tflite gives image size, class names, strides, thresholds and output names.
"""

import importlib.util
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from dked_tf.data.augment import letterbox_image_tf
from dked_tf.data.images import IMAGE_EXTENSIONS
from dked_tf.data.pipeline import build_dataset, decode_image_tf
from dked_tf.export.metadata import detector_metadata
from dked_tf.files import write_bytes_atomic, write_json
from dked_tf.ops.head_contract import MIN_BOX_SIDE
from dked_tf.ops.nms import fast_rotated_nms_tf

QUANTIZE_CHOICES = ("none", "fp16", "int8")
NMS_CHOICES = ("host", "fast")


class TFLiteExportError(RuntimeError):
    """The graph cannot be converted with TFLite builtin ops only."""


# ----------------------------------------------------------------------------- graph


def cell_candidates_tf(cells):
    """decode_cells output -> (polygons [B,N,8], scores [B,N], classes int32 [B,N]).

    Accepts the detector's dict (polygons, scores, classes) or, when only class
    probabilities are given, takes the best class per cell (tf.math.argmax: builtin).
    """
    polygons = tf.cast(cells["polygons"], tf.float32)
    if "scores" in cells and "classes" in cells:
        scores = tf.cast(cells["scores"], tf.float32)
        classes = tf.cast(cells["classes"], tf.int32)
    else:
        probs = tf.cast(cells["class_scores"] if "class_scores" in cells else cells["class_probs"], tf.float32)
        if "objectness" in cells:
            probs = probs * tf.cast(cells["objectness"], tf.float32)[..., None]
        scores = tf.reduce_max(probs, axis=-1)
        classes = tf.cast(tf.math.argmax(probs, axis=-1), tf.int32)
    return polygons, scores, classes


def make_cells_function(
    model,
    image_size,
    nms="host",
    uint8_input=False,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    batch_size=1,
    fast_nms_candidates=200,
):
    """The tf.function that gets converted: images -> dict of per-cell (or fast-NMS) outputs.

    Input `images`: float32 [batch, S, S, 3] in [0, 1], or uint8 pixels if `uint8_input`.
    """
    if nms not in NMS_CHOICES:
        raise ValueError(f"nms must be one of {NMS_CHOICES}, got {nms!r}")
    size = int(image_size)
    dtype = tf.uint8 if uint8_input else tf.float32

    def cells_fn(images):
        x = tf.cast(images, tf.float32) / 255.0 if uint8_input else images
        head = model(x, training=False)["head"]
        polygons, scores, classes = cell_candidates_tf(model.decode_cells(head))
        if nms == "host":
            return {"polygons": polygons, "scores": scores, "classes": classes}
        return _fast_nms_outputs(
            fast_rotated_nms_tf,
            polygons,
            scores,
            classes,
            score_threshold,
            iou_threshold,
            max_detections,
            size,
            fast_nms_candidates,
        )

    spec = tf.TensorSpec([batch_size, size, size, 3], dtype, name="images")
    return tf.function(cells_fn, input_signature=[spec], autograph=False)


def _fast_nms_outputs(
    fast_nms, polygons, scores, classes, score_threshold, iou_threshold, max_detections, image_size, max_candidates
):
    """Per image: class-aware builtin-only matrix NMS -> fixed-size [B, K, ...] detections.

    Class awareness: each class's polygons are shifted by class * 2S along x, so boxes of
    different classes never overlap (polygons are clipped to the input, inside [0, S]).
    """
    polygons_out, scores_out, classes_out, counts = [], [], [], []
    shift_x = tf.constant([1.0, 0.0] * 4, tf.float32) * (2.0 * image_size)
    for b in range(polygons.shape[0]):
        shifted = polygons[b] + tf.cast(classes[b], tf.float32)[:, None] * shift_x
        # like OrientedDetector.decode: degenerate boxes (HBB side <= min_box_side) never count
        xs, ys = polygons[b][:, 0::2], polygons[b][:, 1::2]
        extent = tf.minimum(tf.reduce_max(xs, 1) - tf.reduce_min(xs, 1), tf.reduce_max(ys, 1) - tf.reduce_min(ys, 1))
        valid_scores = scores[b] * tf.cast(extent > MIN_BOX_SIDE, tf.float32)
        indices, count = fast_nms(
            shifted,
            valid_scores,
            iou_threshold,
            max_output=max_detections,
            max_candidates=max_candidates,
            score_threshold=score_threshold,
        )
        valid = indices >= 0
        safe = tf.maximum(indices, 0)
        mask = tf.cast(valid, tf.float32)
        polygons_out.append(tf.gather(polygons[b], safe) * mask[:, None])
        scores_out.append(tf.gather(scores[b], safe) * mask)
        classes_out.append(tf.gather(classes[b], safe) * tf.cast(valid, tf.int32))
        counts.append(tf.cast(count, tf.int32))
    return {
        "detection_polygons": tf.stack(polygons_out),
        "detection_scores": tf.stack(scores_out),
        "detection_classes": tf.stack(classes_out),
        "num_detections": tf.stack(counts),
    }


# ----------------------------------------------------------------------------- representative data


def _letterboxed_from_files(folder, image_size, limit):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) for the representative dataset")
    for name in names[:limit]:
        image = decode_image_tf(tf.constant(os.path.join(folder, name)), dtype=None)  # errors name the file
        yield letterbox_image_tf(image, image_size)[0].numpy()


def representative_images(source, image_size, limit=300):
    """Yields float32 [S, S, 3] letterboxed images in [0, 1] from `source`:

    a folder of image files (letterboxed here), a tf.data.Dataset / iterable of images or
    `(images, targets)` batches from `dked_tf.data.pipeline.build_dataset`, or arrays
    [S, S, 3] / [B, S, S, 3].
    """
    if isinstance(source, (str, os.PathLike)):
        yield from _letterboxed_from_files(str(source), image_size, limit)
        return
    count = 0
    for item in source:
        images = item[0] if isinstance(item, (tuple, list)) else item
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] != (image_size, image_size, 3):
            raise ValueError(
                f"representative images must be letterboxed [S, S, 3] with S={image_size}, got {images.shape[1:]}"
            )
        for image in images:
            yield image
            count += 1
            if count >= limit:
                return


def representative_from_records(records, image_size, limit=300, seed=0):
    """Representative images drawn from the evaluation pipeline (letterbox, no augmentation)."""
    rng = np.random.default_rng(seed)
    chosen = [records[i] for i in rng.permutation(len(records))[:limit]]
    dataset = build_dataset(chosen, image_size, batch_size=8, training=False)
    return representative_images(dataset, image_size, limit)


# ----------------------------------------------------------------------------- conversion


def _flex_ops_from_error(message):
    found = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
    for line in re.findall(r"(?:Flex|Custom) ops?:\s*([^\n]+)", message):
        found.update(op.strip().removeprefix("Flex") for op in line.split(",") if op.strip())
    found.update(re.findall(r"tf\.(\w+)\s*\{\{node", message))
    return sorted(found)


def list_tflite_ops(model_content_or_path):
    """Sorted op names used by a .tflite (file path or bytes), via the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_content_or_path, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model_content_or_path))
    else:
        interpreter = Interpreter(model_path=str(model_content_or_path))
    return sorted({op["op_name"] for op in interpreter._get_ops_details()} - {"DELEGATE"})


def convert_saved_model_to_tflite(
    saved_model_dir, quantize="none", representative=None, uint8_input=False, signature_key="serving_default"
):
    """TFLiteConverter with builtins only. Returns the .tflite bytes.

    representative: a callable returning an iterable of lists of input arrays (int8 only).
    Raises TFLiteExportError listing the ops that would need TF-Select.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature_key])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs representative images (--representative-data)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if uint8_input else tf.float32
        converter.inference_output_type = tf.float32
    try:
        content = converter.convert()
    except Exception as error:  # ConverterError and friends
        message = str(error)
        ops = _flex_ops_from_error(message)
        if ops:
            raise TFLiteExportError(
                "the graph needs ops outside the TFLite builtins (TF-Select/Flex would be "
                f"required, which dked_tf does not allow): {', '.join(ops)}.\nConverter said:\n{message[-2000:]}"
            ) from error
        raise TFLiteExportError(f"TFLite conversion failed ({quantize}):\n{message[-3000:]}") from error
    ops = list_tflite_ops(content)
    flex = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    if flex:
        raise TFLiteExportError(f"the converted model uses non-builtin ops: {', '.join(flex)}")
    return content


def _write_frozen_saved_model(function, directory):
    """Freezes the function's variables into constants and saves it as a variable-free
    SavedModel whose `serving_default` signature keeps the input and output names.

    Freezing first is what makes Keras 3 models convert correctly (converting the
    un-frozen function gives NaN outputs) and it skips the slow variable/object-graph
    serialization."""
    concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs
    specs = [
        tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in concrete.inputs if t.dtype != tf.resource
    ]

    def named_outputs(*inputs):
        return tf.nest.pack_sequence_as(structure, tf.nest.flatten(frozen(*inputs)))

    signature = tf.function(named_outputs, input_signature=specs, autograph=False).get_concrete_function()
    module = tf.Module()
    tf.saved_model.save(module, directory, signatures={"serving_default": signature})


def convert_function_to_tflite(function, quantize="none", representative=None, uint8_input=False):
    """Converts a `tf.function` with an input signature (builtins only). Returns the bytes.

    The function may use variables (a Keras model's): they are frozen into constants.
    """
    directory = tempfile.mkdtemp(prefix="dked_tflite_")
    try:
        _write_frozen_saved_model(function, directory)
        return convert_saved_model_to_tflite(directory, quantize, representative, uint8_input)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def export_tflite(
    model,
    path,
    image_size,
    quantize="none",
    representative_images=None,
    nms="host",
    uint8_input=False,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    class_names=None,
    num_representative=300,
    fast_nms_candidates=200,
    verbose=1,
):
    """Writes `path` (.tflite) and its sidecar json (same name, `.json`). Returns the sidecar dict.

    model: a built OrientedDetector. quantize: "none" | "fp16" | "int8". representative_images:
    folder of images, iterable of letterboxed images / pipeline batches (int8 only; at most
    `num_representative` are used). nms: "host" (per-cell outputs) | "fast" (in-graph
    builtin-only NMS). uint8_input: the input takes uint8 pixels (0..255) instead of floats.
    """
    size = int(image_size)
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    graph_uint8 = uint8_input and quantize != "int8"  # int8 models quantize the float input instead
    function = make_cells_function(
        model,
        size,
        nms=nms,
        uint8_input=graph_uint8,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        fast_nms_candidates=fast_nms_candidates,
    )
    representative = None
    if quantize == "int8":
        if representative_images is None:
            raise ValueError("int8 quantization needs representative_images (a folder or pipeline batches)")
        images = [image for image in representative_images_list(representative_images, size, num_representative)]
        if verbose:
            print(f"int8 calibration on {len(images)} representative images")

        def representative():
            for image in images:
                yield [image[None].astype(np.float32)]

    content = convert_function_to_tflite(function, quantize, representative, uint8_input)
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, content)
    if nms == "host":
        outputs = {"polygons": "polygons", "scores": "scores", "classes": "classes"}
    else:
        outputs = {
            "polygons": "detection_polygons",
            "scores": "detection_scores",
            "classes": "detection_classes",
            "num_detections": "num_detections",
        }
    sidecar = detector_metadata(
        model,
        "tflite",
        size,
        class_names,
        score_threshold,
        iou_threshold,
        max_detections,
        model=os.path.basename(path),
        input_name="images",
        input_dtype="uint8" if uint8_input else "float32",
        input_range="0..255" if uint8_input else "0..1",
        quantize=quantize,
        nms=nms,
        pre_nms_top_k=int(model.pre_nms_top_k),
        min_box_side=MIN_BOX_SIDE,
        outputs=outputs,
        coordinates="letterboxed input pixels: original = (value - offset) / scale",
        tflite_ops=list_tflite_ops(content),
        size_bytes=len(content),
    )
    write_json(os.path.splitext(path)[0] + ".json", sidecar)
    if verbose:
        print(
            f"written {path} ({len(content) / 1e6:.2f} MB, {quantize}, nms={nms}); "
            f"ops: {', '.join(sidecar['tflite_ops'])}"
        )
    return sidecar


def representative_images_list(source, image_size, limit):
    images = list(representative_images(source, image_size, limit))
    if not images:
        raise ValueError("the representative dataset is empty")
    return images


# ----------------------------------------------------------------------------- accuracy parity


def load_device_runner():
    """Imports the repository's `tflite/detect.py` (the TensorFlow-free device runner)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "tflite", "detect.py"))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the device runner tflite/detect.py is not next to this package")
    spec = importlib.util.spec_from_file_location("dked_tflite_detect", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict_tflite(
    path,
    records,
    class_names=None,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    num_threads=2,
    verbose=1,
):
    """Runs a .tflite over records with the device runner -> dict class name -> list of
    (image_id, score, poly[8]) in original pixels (the evaluator's input)."""
    runner = load_device_runner()
    detector = runner.TFLiteDetector(
        path,
        num_threads=num_threads,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    names = list(class_names or detector.class_names)
    detections = {name: [] for name in names}
    for number, record in enumerate(records, 1):
        found = detector.detect(runner.read_image_rgb(record.image_path))
        for polygon, score, cls in zip(found["polygons"], found["scores"], found["classes"]):
            name = names[int(cls)] if 0 <= int(cls) < len(names) else str(int(cls))
            detections.setdefault(name, []).append((record.image_id, float(score), np.asarray(polygon, np.float64)))
        if verbose and (number % 50 == 0 or number == len(records)):
            print(f"tflite predict {number}/{len(records)}")
    return detections
