"""SavedModel export with TensorFlow Serving signatures (Model Garden style).

Two signatures, both letterboxing inside the graph exactly like the data pipeline
(scale = min(S/w, S/h), centred, padded with 0.5) and both returning detections in the
ORIGINAL image's pixels after exact class-aware rotated NMS (`OrientedDetector.decode`):

- `serving_default(images: uint8 [B, H, W, 3])` (any H, W; one size per batch),
- `serving_image_bytes(image_bytes: string [B])` (encoded JPEG/PNG; each image its own size).

Outputs: `detection_polygons float32 [B, K, 8]`, `detection_rboxes float32 [B, K, 5]`,
`detection_scores float32 [B, K]`, `detection_classes int32 [B, K]`, `num_detections int32 [B]`
(rows at and after `num_detections` are zero). K = max_detections.

The letterbox is the data pipeline's own (`dked_tf.data.augment.letterbox_image_tf`: one bilinear
resampling, sub-pixel centring), so a served image gets exactly the input the evaluation path
(`dked_tf.evaluation.runner.predict_records`) gives the model.

The thresholds are baked into the graph and recorded twice: in `assets/dked_tf_export.json`
and as the variable collection `export_config` (`tf.saved_model.load(path).export_config`).
"""

import json
import os

import keras
import tensorflow as tf

from dked_tf.data.augment import letterbox_image_tf
from dked_tf.export.metadata import detector_metadata
from dked_tf.files import write_json

METADATA_FILENAME = "dked_tf_export.json"


def letterbox_batch_tf(images, image_size):
    """images: uint8 [B, H, W, 3] (or a ragged list via map_fn) -> ([B,S,S,3], scale [B], offset [B,2])."""
    return tf.map_fn(
        lambda image: letterbox_image_tf(image, image_size),
        images,
        fn_output_signature=(
            tf.TensorSpec([image_size, image_size, 3], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([2], tf.float32),
        ),
    )


def undo_letterbox_tf(detections, scale, offset):
    """Maps decode output (letterboxed pixels) to original pixels; padded rows stay zero.

    detections: dict polygons [B,K,8], rboxes [B,K,5], scores [B,K], classes [B,K],
    num_detections [B]; scale [B]; offset [B, 2].
    """
    polygons = tf.cast(detections["polygons"], tf.float32)
    rboxes = tf.cast(detections["rboxes"], tf.float32)
    num = tf.cast(tf.reshape(detections["num_detections"], [-1]), tf.int32)
    k = tf.shape(polygons)[1]
    valid = tf.cast(tf.range(k)[None, :] < num[:, None], tf.float32)  # [B, K]
    scale_b = scale[:, None, None]
    polygons = (polygons - tf.tile(offset, [1, 4])[:, None, :]) / scale_b * valid[..., None]
    centres = (rboxes[..., 0:2] - offset[:, None, :]) / scale_b
    sides = rboxes[..., 2:4] / scale_b
    rboxes = tf.concat([centres, sides, rboxes[..., 4:5]], axis=-1) * valid[..., None]
    return {
        "detection_polygons": polygons,
        "detection_rboxes": rboxes,
        "detection_scores": tf.cast(detections["scores"], tf.float32) * valid,
        "detection_classes": tf.cast(detections["classes"], tf.int32) * tf.cast(valid, tf.int32),
        "num_detections": num,
    }


def _decode_bytes_tf(encoded):
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def export_saved_model(
    model, path, image_size, score_threshold=0.05, iou_threshold=0.3, max_detections=300, class_names=None, verbose=0
):
    """Writes a SavedModel with `serving_default` and `serving_image_bytes` signatures.

    model: an OrientedDetector (built). path: output folder. image_size: S of the square
    network input. Returns the metadata dict (also in `<path>/assets/dked_tf_export.json`).
    """
    size = int(image_size)
    score_threshold = float(score_threshold)
    iou_threshold = float(iou_threshold)
    max_detections = int(max_detections)

    # One inner function, traced once and shared by both signatures.
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, 2], tf.float32),
        ],
        autograph=False,
    )
    def detect_letterboxed(batch, scale, offset):
        outputs = model(batch, training=False)
        detections = model.decode(
            outputs["head"],
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        return undo_letterbox_tf(detections, scale, offset)

    def serve_images(images):
        batch, scale, offset = letterbox_batch_tf(images, size)
        return detect_letterboxed(batch, scale, offset)

    def serve_image_bytes(image_bytes):
        batch, scale, offset = tf.map_fn(
            lambda encoded: letterbox_image_tf(_decode_bytes_tf(encoded), size),
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([size, size, 3], tf.float32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([2], tf.float32),
            ),
        )
        return detect_letterboxed(batch, scale, offset)

    # autograph=False: the graph code is written with explicit TF control flow, and
    # converting every Keras layer's Python with autograph dominates the export time.
    images_fn = tf.function(
        serve_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        autograph=False,
    )
    bytes_fn = tf.function(
        serve_image_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        autograph=False,
    )
    images_fn.get_concrete_function()
    bytes_fn.get_concrete_function()

    metadata = detector_metadata(
        model,
        "saved_model",
        size,
        class_names,
        score_threshold,
        iou_threshold,
        max_detections,
        signatures={
            "serving_default": {"inputs": {"images": "uint8 [B, H, W, 3]"}},
            "serving_image_bytes": {"inputs": {"image_bytes": "string [B] (JPEG/PNG)"}},
        },
        outputs={
            "detection_polygons": "float32 [B, K, 8], original pixels",
            "detection_rboxes": "float32 [B, K, 5] cx cy w h theta (le90, radians)",
            "detection_scores": "float32 [B, K]",
            "detection_classes": "int32 [B, K]",
            "num_detections": "int32 [B]",
        },
        nms="exact class-aware rotated NMS in graph",
    )

    # Not `archive.track(model)`: the variables the endpoints use are tracked from the traced
    # functions, and walking the whole Keras object graph for lookup tables (there are none)
    # retraces every layer function and costs most of the export time.
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", images_fn)
    archive.add_endpoint("serving_image_bytes", bytes_fn)
    archive.add_variable_collection(
        "export_config",
        [
            tf.Variable(size, trainable=False, name="image_size"),
            tf.Variable(score_threshold, trainable=False, name="score_threshold"),
            tf.Variable(iou_threshold, trainable=False, name="iou_threshold"),
            tf.Variable(max_detections, trainable=False, name="max_detections"),
        ],
    )
    archive.write_out(str(path), verbose=False)  # its listing shows every captured variable
    assets = os.path.join(str(path), "assets")
    os.makedirs(assets, exist_ok=True)
    write_json(os.path.join(assets, METADATA_FILENAME), metadata)
    return metadata


def read_export_metadata(path):
    """The metadata json of a SavedModel written by export_saved_model."""
    with open(os.path.join(str(path), "assets", METADATA_FILENAME)) as f:
        return json.load(f)
