"""ONNX export through `dked-tf export --format tensorrt` (writes the ONNX file and, without the
tensorrt package, the trtexec command), checked with onnxruntime against Keras; TF-TRT's
immediate, explained failure on TensorFlow without TensorRT."""

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from dked_tf.cli import main as cli_main  # noqa: E402
from dked_tf.export import tensorrt as trt_export  # noqa: E402

SIZE = 64
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def exported(tiny_detector, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    model = tiny_detector("lodet_mobilenetv2_t", NUM_CLASSES, seed=7, randomize=True)
    weights = str(root / "student.keras")
    model.save(weights)
    onnx_path = str(root / "student.onnx")
    code = cli_main(
        [
            "export",
            "--weights",
            weights,
            "--format",
            "tensorrt",
            "--out",
            onnx_path,
            "--image-size",
            str(SIZE),
            "--class-names",
            "a,b,c",
            "--quiet",
        ]
    )
    assert code == 0
    return {"model": model, "onnx": onnx_path, "root": root}


def test_onnxruntime_matches_keras(exported, tiny_images):
    model = exported["model"]
    images = tiny_images(1, SIZE, seed=4)
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip([n.split(":")[0] for n in names], session.run(names, {session.get_inputs()[0].name: images})))
    cells = model.decode_cells(model(images, training=False)["head"])
    np.testing.assert_allclose(got["polygons"], cells["polygons"].numpy(), atol=1e-3 * SIZE)
    np.testing.assert_allclose(got["scores"], cells["scores"].numpy(), atol=1e-5)


def test_sidecar_lists_the_onnx_ops_and_no_loops(exported):
    with open(os.path.splitext(exported["onnx"])[0] + ".json") as f:
        sidecar = json.load(f)
    graph_ops = sorted({node.op_type for node in onnx.load(exported["onnx"]).graph.node})
    assert sidecar["onnx_ops"] == graph_ops
    assert "Conv" in graph_ops
    # nothing TensorRT handles badly: NMS stays on the host, no control flow
    assert not {"Loop", "If", "NonMaxSuppression", "Scan"} & set(graph_ops)
    assert sidecar["opset"] == 17 and sidecar["class_names"] == ["a", "b", "c"]
    assert sidecar["check"]["scores_max_abs_diff"] < 1e-4


def test_tensorrt_route_gives_the_trtexec_command(exported):
    if trt_export.tensorrt_available():
        pytest.skip("tensorrt is installed here: the engine is built instead")
    result = trt_export.build_tensorrt_engine(exported["onnx"], verbose=0)
    engine = os.path.splitext(exported["onnx"])[0] + ".engine"
    assert result["built"] is False and not os.path.exists(engine)
    assert result["trtexec"].startswith(f"trtexec --onnx={exported['onnx']} --saveEngine={engine} --fp16")
    assert result["trtexec"] in result["message"]


def test_trtexec_command_options():
    command = trt_export.trtexec_command(
        "m.onnx", "m.engine", fp16=False, int8=True, calibration_cache="c.cache", workspace_mb=512
    )
    assert command == "trtexec --onnx=m.onnx --saveEngine=m.engine --int8 --calib=c.cache --memPoolSize=workspace:512M"


def test_tftrt_fails_at_once_with_the_explanation(tmp_path):
    available, reason = trt_export.tftrt_available()
    if available:
        pytest.skip("this TensorFlow has TensorRT")
    assert tf.sysconfig.get_build_info().get("is_tensorrt_build") is False
    missing = str(tmp_path / "does_not_exist")  # no SavedModel needed to fail
    with pytest.raises(trt_export.TensorRTUnavailableError) as info:
        trt_export.convert_tftrt(missing, str(tmp_path / "out"), precision="FP16")
    message = str(info.value)
    assert "built without TensorRT" in message and "2.18" in message
    assert "--format onnx" in message and "trtexec" in message
    assert not os.path.exists(tmp_path / "out")


def test_tftrt_cli_returns_an_error_code(tmp_path, capsys):
    if trt_export.tftrt_available()[0]:
        pytest.skip("this TensorFlow has TensorRT")
    code = cli_main(
        [
            "export",
            "--model",
            "lodet_mobilenetv2_t",
            "--num-classes",
            "2",
            "--format",
            "tftrt",
            "--out",
            str(tmp_path / "trt"),
        ]
    )
    assert code == 2
    assert "ONNX route" in capsys.readouterr().err
