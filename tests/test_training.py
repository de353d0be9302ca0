import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from dked_tf import config as C  # noqa: E402
from dked_tf.experiment import callbacks, data, evaluate, optimizer, saving, train_lib  # noqa: E402
from dked_tf.models.presets import count_params, gflops  # noqa: E402


def test_warmup_cosine_matches_hand_values():
    schedule = optimizer.WarmupCosine(peak=1.0, total_steps=10, warmup_steps=2, floor=0.1)
    got = [float(schedule(s)) for s in (0, 1, 2, 6, 10, 50)]
    # warm-up: (step + 1) / 2 of the peak; then floor + (peak - floor) * (1 + cos(pi * p)) / 2, p = (s - 2) / 8
    want = [0.5, 1.0, 1.0, 0.1 + 0.9 * (1 + math.cos(math.pi * 0.5)) / 2, 0.1, 0.1]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)).get_config()
        == schedule.get_config()
    )


def test_make_optimizer_follows_config():
    cfg = C.TrainConfig(
        epochs=4,
        optimizer="sgd",
        learning_rate=0.2,
        min_learning_rate=0.0,
        warmup_epochs=1,
        weight_decay=5e-4,
        momentum=0.9,
        clipnorm=0.0,
    )
    opt = optimizer.make_optimizer(cfg, steps_per_epoch=5)
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov and opt.momentum == pytest.approx(0.9)
    schedule = opt.learning_rate if isinstance(opt.learning_rate, optimizer.WarmupCosine) else opt._learning_rate
    assert (schedule.total_steps, schedule.warmup_steps, schedule.peak) == (20, 5, 0.2)
    adamw = optimizer.make_optimizer(C.TrainConfig(epochs=2), steps_per_epoch=3)
    assert isinstance(adamw, keras.optimizers.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizer.make_optimizer(C.TrainConfig(optimizer="lion"), 3)


def test_weight_decay_skips_biases_and_norms():
    layer_in = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(layer_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(layer_in, x)
    kernel, bias, gamma, beta = model.trainable_variables
    before = [v.numpy().copy() for v in (kernel, bias, gamma, beta)]
    # zero gradients: only the decoupled weight decay (lr * wd * w) can move a weight
    opt2 = optimizer.make_optimizer(
        C.TrainConfig(
            optimizer="adamw", weight_decay=0.5, learning_rate=0.1, min_learning_rate=0.1, warmup_epochs=0, clipnorm=0.0
        ),
        1,
    )
    opt2.build(model.trainable_variables)
    opt2.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in model.trainable_variables])
    after = [v.numpy() for v in (kernel, bias, gamma, beta)]
    assert not np.allclose(after[0], before[0])  # kernel decayed by lr * wd = 5 %
    np.testing.assert_allclose(after[0], before[0] * (1 - 0.1 * 0.5), rtol=1e-5)
    for b, a in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(a, b)


def test_set_seed_reproduces_initial_weights(tiny_detector):
    train_lib.set_seed(3)
    a = tiny_detector("gghl_darknet53_t", 2, forward_size=64)
    train_lib.set_seed(3)
    b = tiny_detector("gghl_darknet53_t", 2, forward_size=64)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_save_and_load_detector_round_trip(tiny_detector, tiny_images, tmp_path):
    model = tiny_detector("gghl_darknet53_t", 2, forward_size=64)
    saving.save_detector(
        model,
        tmp_path / "run",
        architecture="gghl_darknet53_t",
        class_names=("ship", "boat"),
        image_size=64,
        tile_size=0,
        train_seconds=1.5,
    )
    assert saving.is_saved_detector(str(tmp_path / "run")) and not saving.is_saved_detector(str(tmp_path))
    loaded, meta = saving.load_detector(str(tmp_path / "run"))
    assert meta["class_names"] == ["ship", "boat"] and meta["train_seconds"] == 1.5
    x = tiny_images(1, seed=0)
    for ya, yb in zip(model(x, training=False)["head"], loaded(x, training=False)["head"]):
        np.testing.assert_allclose(ya.numpy(), yb.numpy(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="model.json"):
        saving.load_detector(str(tmp_path))


def test_params_flops_latency_are_sane(tiny_detector):
    model = tiny_detector("gghl_darknet53_t", 1, forward_size=64)
    params = count_params(model)
    assert params == sum(int(np.prod(w.shape)) for w in model.weights)
    small, large = gflops(model, 32), gflops(model, 64)
    assert 0 < small and large == pytest.approx(4 * small, rel=0.15)  # conv FLOPs scale with the pixel count
    assert evaluate.measure_latency_ms(model, 64, runs=2, warmup=1) > 0


@pytest.mark.parametrize("every, resumed_epochs", [(1, 2), (2, 3), (3, 2), (4, 5)])
def test_epoch_backup_writes_every_n_epochs_and_resumes_from_the_last_one(
    interrupt_before_epoch, tmp_path, every, resumed_epochs
):
    """Interrupted before epoch index 3 of 5: the last backup is after epoch (3 // every) * every,
    so the resumed fit runs the remaining 5 - that many epochs."""
    x = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
    y = 3 * x

    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    backup = str(tmp_path / f"backup{every}")
    with pytest.raises(RuntimeError, match="simulated interruption"):
        make().fit(
            x, y, epochs=5, verbose=0, callbacks=[callbacks.EpochBackup(backup, every=every), interrupt_before_epoch(3)]
        )
    history = make().fit(x, y, epochs=5, verbose=0, callbacks=[callbacks.EpochBackup(backup, every=every)])
    assert len(history.history["loss"]) == resumed_epochs


def test_prebuilt_optimizer_traces_the_train_step_once(tiny_detector, tmp_path):
    """Keras (no distribution strategy) creates the optimizer slots inside the first traced step,
    which makes tf.function trace the step twice (measured: 2 traces without
    `prebuild_optimizer`); `_fit` builds them beforehand."""
    cfg = C.preset_config("smoke")
    cfg.data.cache_dir = str(tmp_path)
    records, names = data.prepare_records(cfg, "train", verbose=0)
    dataset = data.make_train_dataset(records[:4], cfg.data, seed=0)
    model = tiny_detector(cfg.model.teacher, len(names), forward_size=cfg.data.image_size)
    traces = []
    original = model.train_step

    def counted(data):
        traces.append(1)
        return original(data)

    model.train_step = counted
    model.compile(optimizer=optimizer.make_optimizer(cfg.train, 1), jit_compile=False)
    train_lib.fit(model, dataset, epochs=1, stage="teacher", verbose=0)
    assert len(traces) == 1


def test_realistic_synthetic_kind_is_generated_and_read_back(tmp_path):
    cfg = C.apply_overrides(
        C.preset_config("smoke"),
        [f"data.cache_dir={tmp_path}", "data.synthetic_kind=realistic", "data.synthetic_image_size=128"],
    )
    records, names = data.prepare_records(cfg, "train", verbose=0)
    assert names == ("ship",) and len(records) == cfg.data.synthetic_train_images
    assert sum(len(r.polygons) for r in records) > 0
    assert any(path.name.startswith("realistic_hrsc_") for path in tmp_path.iterdir())
    cfg = C.apply_overrides(cfg, ["data.synthetic_kind=hard"])
    with pytest.raises(ValueError, match="synthetic_kind"):
        data.prepare_records(cfg, "train", verbose=0)


def test_object_scale_at_the_input_and_the_small_object_warning(tmp_path):
    from dked_tf.data.records import ImageRecord

    # a 40 x 10 px box and a 20 x 4 px box in a 400 x 200 image: at a 100 px input scale = 1/4
    boxes = np.array([[0, 0, 40, 0, 40, 10, 0, 10], [100, 100, 120, 100, 120, 104, 100, 104]], np.float32)
    record = ImageRecord(str(tmp_path / "x.png"), "x", 400, 200, boxes, [0, 0], [False, False])
    scale = data.object_scale([record], 100)
    assert scale["objects"] == 2 and scale["native_median_length_px"] == pytest.approx(30.0)
    assert scale["median_length_px"] == pytest.approx(7.5) and scale["median_width_px"] == pytest.approx(1.75)
    assert scale["small_fraction"] == 1.0
    line = data.describe_object_scale([record], 100)
    # 16 / 7.5 x 100 = 213 px, rounded up to a multiple of 32
    assert "WARNING" in line and "data.image_size=224" in line
    assert "WARNING" not in data.describe_object_scale([record], 800)  # 60 px long there


def test_object_scale_notes_levels_at_stride_4_for_objects_under_one_stride_8_cell(tmp_path):
    from dked_tf.data.records import ImageRecord

    # a 120 x 20 px box in a 400 x 400 image: 30 x 5 px at a 100 px input, 60 x 10 px at 200 px
    boxes = np.array([[100, 100, 220, 100, 220, 120, 100, 120]], np.float32)
    record = ImageRecord(str(tmp_path / "x.png"), "x", 400, 400, boxes, [0], [False])
    assert "min_stride=4" in data.describe_object_scale([record], 100, min_stride=8)
    assert "min_stride=4" not in data.describe_object_scale([record], 200, min_stride=8)
    assert "min_stride=4" not in data.describe_object_scale([record], 100, min_stride=4)
    assert "NOTE" not in data.describe_object_scale([record], 100)
