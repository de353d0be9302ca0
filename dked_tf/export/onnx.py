"""ONNX export (tf2onnx, opset 17) of the network plus the per-cell decode.

Same graph as the host-NMS .tflite: `images float32 [1, S, S, 3]` in [0, 1] (letterboxed) ->
`polygons [1, N, 8]` (input pixels), `scores [1, N]`, `classes int32 [1, N]`. NMS stays on the
host, so the graph has no loops or NonMaxSuppression and TensorRT builds it as is. The
export is checked with onnxruntime against Keras and the ONNX op types are listed in the
sidecar json (`<name>.json`).
"""

import os
import warnings

import numpy as np
import tensorflow as tf

from dked_tf.export.metadata import detector_metadata
from dked_tf.export.tflite import cell_candidates_tf, make_cells_function
from dked_tf.files import write_json

DEFAULT_OPSET = 17


def list_onnx_ops(path):
    """Sorted op types of an .onnx file (including nested graphs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found = set()

    def visit(graph):
        for node in graph.node:
            found.add(node.op_type)
            for attribute in node.attribute:
                if attribute.g is not None and len(attribute.g.node):
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(model.graph)
    return sorted(found)


def _patch_tf2onnx():
    # tf2onnx 1.17 still uses numpy aliases removed in numpy 2; Keras ships the fix.
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


def export_onnx(
    model,
    path,
    image_size,
    opset=DEFAULT_OPSET,
    class_names=None,
    check=True,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    atol=1e-3,
    verbose=1,
):
    """Writes `path` (.onnx) and `<path minus .onnx>.json`. Returns the sidecar dict.

    check: run onnxruntime and Keras on one random letterboxed image and record the largest
    difference of polygons and scores (raises if above `atol` relative to the value scale).
    """
    import tf2onnx

    size = int(image_size)
    function = make_cells_function(model, size, nms="host")
    _patch_tf2onnx()
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(
        function,
        input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")],
        opset=int(opset),
        output_path=path,
    )
    ops = list_onnx_ops(path)
    sidecar = detector_metadata(
        model,
        "onnx",
        size,
        class_names,
        score_threshold,
        iou_threshold,
        max_detections,
        model=os.path.basename(path),
        opset=int(opset),
        input_name="images",
        input_dtype="float32",
        input_range="0..1",
        nms="host",
        outputs={"polygons": "polygons", "scores": "scores", "classes": "classes"},
        onnx_ops=ops,
    )
    if check:
        sidecar["check"] = check_onnx_against_keras(path, model, size, atol=atol)
    write_json(os.path.splitext(path)[0] + ".json", sidecar)
    if verbose:
        print(f"written {path} (opset {opset}); ONNX ops: {', '.join(ops)}")
    return sidecar


def run_onnx(path, images):
    """onnxruntime on float32 [1, S, S, 3] -> dict output name -> numpy array."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: np.asarray(images, np.float32)})
    return {name.split(":")[0]: value for name, value in zip(names, values)}


def check_onnx_against_keras(path, model, image_size, atol=1e-3, seed=0):
    """Largest |ONNX - Keras| of polygons (relative to the image size) and scores on one
    random image; raises RuntimeError above `atol`."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (1, image_size, image_size, 3)).astype(np.float32)
    reference = cell_candidates_tf(model.decode_cells(model(images, training=False)["head"]))
    expected = {"polygons": reference[0].numpy(), "scores": reference[1].numpy()}
    got = run_onnx(path, images)
    report = {
        "polygons_max_abs_diff_px": float(np.max(np.abs(got["polygons"] - expected["polygons"]))),
        "scores_max_abs_diff": float(np.max(np.abs(got["scores"] - expected["scores"]))),
    }
    if report["polygons_max_abs_diff_px"] > atol * image_size or report["scores_max_abs_diff"] > atol:
        raise RuntimeError(f"{path}: onnxruntime disagrees with Keras: {report}")
    return report
