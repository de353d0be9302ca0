"""data.input_scale: whole-image letterbox ("fit"), native-resolution windows (a number) and the
automatic choice from the objects' sizes ("auto")."""

import numpy as np
import pytest
import shapely
from PIL import Image

from dked_tf.config import ConfigError, preset_config, resolve_config
from dked_tf.data.records import ImageRecord
from dked_tf.experiment.data import AUTO_OBJECT_PX, make_train_dataset, resolve_input


def ship(cx, cy, length, width, theta):
    u = np.array([np.cos(theta), np.sin(theta)]) * length / 2
    v = np.array([-np.sin(theta), np.cos(theta)]) * width / 2
    c = np.array([cx, cy])
    return np.concatenate([c - u - v, c + u - v, c + u + v, c - u + v]).astype(np.float32)


def records_with(tmp_path, side, lengths):
    path = tmp_path / "scene.png"
    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(path)
    polygons = [ship(side / 2, side / 2, length, length / 5, 0.3) for length in lengths]
    classes, difficult = np.zeros(len(lengths), np.int32), np.zeros(len(lengths), bool)
    record = ImageRecord(str(path), "scene", side, side, np.stack(polygons), classes, difficult)
    return [record]


def config(input_scale, image_size=192, test_image_size=0):
    cfg = preset_config("default")
    cfg.data.image_size = image_size
    cfg.data.input_scale = input_scale
    cfg.data.test_image_size = test_image_size
    return cfg


def test_auto_scales_small_objects_towards_the_target_length(tmp_path):
    records = records_with(tmp_path, 512, [30.0, 44.0, 60.0])  # median 44 px
    resolved, line = resolve_input(config("auto"), records)
    scale = AUTO_OBJECT_PX / 44.0
    assert float(resolved.data.input_scale) == pytest.approx(scale, rel=1e-3)
    assert resolved.data.test_image_size == int(np.ceil(512 * scale / 32)) * 32 == 480
    assert resolved.data.inference_size == 480 and resolved.data.image_size == 192
    assert "windows" in line and "480" in line


def test_auto_never_goes_past_native_resolution(tmp_path):
    resolved, _ = resolve_input(config("auto"), records_with(tmp_path, 512, [12.0, 14.0, 16.0]))
    assert float(resolved.data.input_scale) == 1.0 and resolved.data.test_image_size == 512


def test_auto_keeps_whole_images_when_the_objects_are_large(tmp_path):
    resolved, line = resolve_input(config("auto", image_size=192), records_with(tmp_path, 256, [80.0, 100.0, 150.0]))
    assert resolved.data.input_scale == "fit" and resolved.data.test_image_size == 192
    assert "whole images" in line


def test_fixed_scale_and_explicit_test_size(tmp_path):
    records = records_with(tmp_path, 512, [40.0])
    resolved, _ = resolve_input(config("0.5"), records)
    assert resolved.data.test_image_size == 256
    resolved, _ = resolve_input(config("0.5", test_image_size=320), records)
    assert resolved.data.test_image_size == 320


def test_bad_scale_is_a_clear_error(tmp_path):
    records = records_with(tmp_path, 512, [40.0])
    for bad in ("-1", "big"):
        with pytest.raises(ValueError, match="input_scale"):
            resolve_input(config(bad), records)


def test_set_merges_one_entry_into_a_dict_field():
    cfg = resolve_config("default", overrides=["data.augment_kwargs.window_scale=1.0"])
    assert cfg.data.augment_kwargs["window_scale"] == 1.0
    assert cfg.data.augment_kwargs["rotate_prob"] == 0.3  # the preset's other entries stay
    with pytest.raises(ConfigError):
        resolve_config("default", overrides=["data.no_such_field.x=1"])


def test_windows_keep_native_object_sizes(tmp_path):
    records = records_with(tmp_path, 300, [120.0])  # the ship spans about x, y in [89, 211]
    cfg, _ = resolve_input(config("1.0", image_size=256), records)
    cfg.data.augment = False
    cfg.data.batch_size = 1
    images, targets = next(iter(make_train_dataset(records, cfg.data, seed=3)))
    assert images.shape == (1, 256, 256, 3)
    assert float(targets["scale"][0]) == pytest.approx(1.0)
    kept = targets["weights"][0].numpy() > 0
    assert kept.sum() == 1  # every 256 px window of the 300 px image starts in [0, 44]: it holds the ship
    polygon = shapely.Polygon(targets["polygons"][0].numpy()[kept][0].reshape(4, 2))
    assert polygon.area == pytest.approx(120.0 * 24.0, rel=0.02)
