"""Pretrained backbones (`model.teacher_backbone_weights` / `model.student_backbone_weights`):
a Darknet file written here by hand in Darknet's layout, Keras' ImageNet MobileNetV2 file put into
a temporary Keras cache (KERAS_HOME, read by Keras at import: a child process), the config rules
and the CLI's one-line error. No network: downloads are sent to a closed local port."""

import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from dked_tf import cli
from dked_tf.config import ConfigError, preset_config, validate_config
from dked_tf.files import CorruptFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keras 3.15's keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights="imagenet")
# looks for this file in $KERAS_HOME/models (keras/src/applications/mobilenet_v2.py).
MOBILENETV2_035_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
MOBILENETV2_05_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def _tiny_darknet_convs():
    """(cin, cout, k) of every conv of gghl_darknet53_t's backbone in Darknet order, from the
    architecture: stem 3x3 (32 x 0.125 -> 8, the minimum), then per stage a 3x3 stride-2 conv to
    C = 8/16/32/64/128 and one residual block (1x1 to C/2, 3x3 back to C)."""
    convs, cin = [(3, 8, 3)], 8
    for channels in (8, 16, 32, 64, 128):
        convs += [(cin, channels, 3), (channels, channels // 2, 1), (channels // 2, channels, 3)]
        cin = channels
    return convs


def _write_darknet(path, convs, extra_floats):
    """Darknet's layout: int32 major 0, minor 2, revision 0, int64 seen; per conv float32 BN beta,
    gamma, running mean, running variance [out], then the kernel [out, in, kh, kw]; then
    `extra_floats` floats of later layers (a classifier). Returns the arrays per conv."""
    rng = np.random.default_rng(11)
    written = []
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([32013312], "<i8").tobytes())
        for cin, cout, k in convs:
            arrays = {
                "beta": rng.normal(size=cout),
                "gamma": rng.uniform(0.5, 1.5, cout),
                "mean": rng.normal(size=cout),
                "var": rng.uniform(0.5, 2.0, cout),
                "kernel": rng.normal(size=(cout, cin, k, k)),
            }
            for name in ("beta", "gamma", "mean", "var", "kernel"):
                handle.write(arrays[name].astype("<f4").tobytes())
            written.append(arrays)
        handle.write(rng.normal(size=extra_floats).astype("<f4").tobytes())
    return written


@pytest.mark.parametrize("name, extra", [("tiny.conv.74", 0), ("tiny_448.weights", 1000 * 129)])
def test_darknet_file_written_by_hand_loads_into_the_teacher_backbone(tiny_detector, tmp_path, name, extra):
    model = tiny_detector("gghl_darknet53_t", 2)
    convs = _tiny_darknet_convs()
    path = tmp_path / name
    written = _write_darknet(path, convs, extra)
    assert model.load_backbone_weights(str(path), verbose=0) == len(convs)
    for index, arrays in enumerate(written):
        layer = model.backbone.get_layer(f"conv_{index:03d}")
        np.testing.assert_array_equal(layer.bn.gamma.numpy(), arrays["gamma"].astype(np.float32))
        np.testing.assert_array_equal(layer.bn.beta.numpy(), arrays["beta"].astype(np.float32))
        np.testing.assert_array_equal(layer.bn.moving_mean.numpy(), arrays["mean"].astype(np.float32))
        np.testing.assert_array_equal(layer.bn.moving_variance.numpy(), arrays["var"].astype(np.float32))
        # Keras kernels are [kh, kw, in, out]; Darknet's [out, in, kh, kw]
        kernel = layer.conv.kernel.numpy()
        np.testing.assert_array_equal(kernel, arrays["kernel"].astype(np.float32).transpose(2, 3, 1, 0))


def test_keras_weights_file_of_a_darknet_backbone(tiny_detector, tmp_path):
    source = tiny_detector("gghl_darknet53_t", 2, seed=1, randomize=True)
    path = str(tmp_path / "darknet_t.weights.h5")
    source.backbone.save_weights(path)
    model = tiny_detector("gghl_darknet53_t", 2, seed=2)
    model.load_backbone_weights(path, verbose=0)
    for mine, theirs in zip(model.backbone.weights, source.backbone.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_wrong_weights_for_a_backbone_are_one_line_errors(tiny_detector, tmp_path):
    student = tiny_detector("lodet_mobilenetv2_t", 2)
    with pytest.raises(ConfigError, match="MobileNetV2 backbone takes"):
        student.load_backbone_weights(str(tmp_path / "darknet53.conv.74"))
    teacher = tiny_detector("gghl_darknet53_t", 2)
    with pytest.raises(ConfigError, match="fits only the full Darknet53"):
        teacher.load_backbone_weights("imagenet")
    with pytest.raises(FileNotFoundError, match="missing.weights"):
        teacher.load_backbone_weights(str(tmp_path / "missing.weights"))
    short = tmp_path / "short.weights"
    _write_darknet(short, _tiny_darknet_convs()[:3], 0)
    with pytest.raises(CorruptFileError, match="short.weights ends early"):
        teacher.load_backbone_weights(str(short), verbose=0)


def _legacy_h5(model, path):
    """Keras' ImageNet files are legacy (Keras 2) HDF5 weights: attribute layer_names; one group
    per layer with attribute weight_names and one dataset per weight, trainable ones first."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0".encode() for w in weights]
            group.attrs["weight_names"] = names
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode(), data=weight.numpy())


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from dked_tf.models.presets import build_model

    out, images = sys.argv[1], np.load(sys.argv[2])
    key = "model.student_backbone_weights"
    model = build_model("lodet_mobilenetv2_t", 2)
    model.load_backbone_weights("imagenet", key=key, verbose=0)
    base = model.backbone.get_layer("mobilenetv2_base")
    arrays = {f"{l.name}:{i}": w for l in base.layers for i, w in enumerate(l.get_weights())}
    arrays["c5"] = model.backbone(images, training=False)[2].numpy()
    np.savez(out, **arrays)
    wider = build_model("lodet_mobilenetv2_t", 2, backbone_kwargs={"alpha": 0.5})
    try:
        wider.load_backbone_weights("imagenet", key=key, verbose=0)
    except FileNotFoundError as error:
        print("ERROR " + str(error))
    """
)


def test_imagenet_mobilenetv2_comes_from_the_keras_cache(tmp_path):
    reference = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None)
    rng = np.random.default_rng(3)
    for weight in reference.weights:
        low = 0.5 if "variance" in weight.path else -0.5
        weight.assign(rng.uniform(low, low + 1.0, weight.shape).astype("float32"))
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    _legacy_h5(reference, cache / MOBILENETV2_035_FILE)
    images = rng.uniform(size=(1, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras_home"), PYTHONPATH=ROOT, NO_PROXY="", no_proxy="")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env[name] = "http://127.0.0.1:9"  # a closed port: any download fails at once
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "out.npz"), str(tmp_path / "images.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = np.load(tmp_path / "out.npz")
    count = 0
    for layer in reference.layers:
        for i, value in enumerate(layer.get_weights()):
            np.testing.assert_array_equal(loaded[f"{layer.name}:{i}"], value, err_msg=layer.name)
            count += 1
    assert count == len(reference.weights) > 200
    # the student's backbone is keras.applications' network: the same C5 as the file's model
    expected = reference(images * 2.0 - 1.0, training=False).numpy()
    np.testing.assert_allclose(loaded["c5"], expected, rtol=1e-4, atol=1e-4)
    # alpha 0.5 is not in the cache and cannot be downloaded: one line naming file and folder
    error = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(error) == 1, done.stdout[-2000:]
    assert MOBILENETV2_05_FILE in error[0]
    assert str(cache / MOBILENETV2_05_FILE) in error[0]
    assert "model.student_backbone_weights" in error[0]


def test_backbone_weights_in_the_presets_and_their_validation():
    paper = preset_config("paper")
    assert (paper.model.teacher_backbone_weights, paper.model.student_backbone_weights) == ("imagenet", "imagenet")
    for name in ("smoke", "quick", "default"):
        cfg = preset_config(name)
        assert (cfg.model.teacher_backbone_weights, cfg.model.student_backbone_weights) == ("", "")
    cfg = preset_config("smoke")
    for value in ("imagenet", "/w/darknet53.conv.74", "darknet53_448.weights", "mbv2.weights.h5", "m.h5", ""):
        cfg.model.teacher_backbone_weights = value
        validate_config(cfg)
    cfg.model.teacher_backbone_weights = "weights.txt"
    with pytest.raises(ConfigError, match="model.teacher_backbone_weights='weights.txt'"):
        validate_config(cfg)


def test_a_run_from_pretrained_weights_is_not_resumed_as_one_from_scratch():
    from dked_tf.experiment.train_lib import record_differences, run_record

    scratch = preset_config("smoke")
    pretrained = preset_config("smoke")
    pretrained.model.student_backbone_weights = "imagenet"
    assert record_differences(run_record(scratch, "student"), run_record(pretrained, "student")) == [
        'backbone_weights: "" -> "imagenet"'
    ]
    assert record_differences(run_record(scratch, "teacher"), run_record(pretrained, "teacher")) == []


def test_train_with_a_missing_weights_file_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "mobilenetv2.weights.h5"
    code = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--data-cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
            "--verbose",
            "0",
            "--set",
            f"model.student_backbone_weights={missing}",
        ]
    )
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], lines
    assert lines[0].startswith("dked-tf train: error: model.student_backbone_weights")
