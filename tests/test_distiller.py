"""Distiller: training step, training-only auxiliary modules, config, checkpoint/resume,
MirroredStrategy (subprocess with 2 logical CPUs), mixed precision, self-distillation.

Tracing the full distillation step as a tf.function takes minutes on the shared 2-core test
machine, so these tests run the (identical) train_step eagerly (`run_eagerly=True`).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import dked_tf
from dked_tf.distiller import Distiller
from dked_tf.layers.ddc import DynamicDirectionalConv
from dked_tf.losses.distill import (
    DirectionalResponseLoss,
    FeatureCorrelationLoss,
    PredictionDistillationLoss,
)

NUM_CLASSES = 2
SIZE = 64
NO_DROP = {"neck_kwargs": {"drop_prob": 0.0}}


@pytest.fixture(scope="module")
def teacher(tiny_detector):
    return tiny_detector("gghl_darknet53_t", NUM_CLASSES, seed=1, **NO_DROP)


@pytest.fixture
def make_student(tiny_detector):
    """Factory of fresh (unseeded) tiny LoDet students without neck dropout."""
    return lambda **overrides: tiny_detector("lodet_mobilenetv2_t", NUM_CLASSES, **NO_DROP, **overrides)


def _values(variables):
    return [np.array(v) for v in variables]


def test_train_step_trains_student_and_aux_only_and_logs_every_term(teacher, make_student, tiny_batch, tiny_dataset):
    student = make_student()
    distiller = Distiller(teacher, student, image_size=SIZE)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    teacher_before = _values(teacher.weights)
    student_before = _values(student.trainable_variables)
    aux_before = _values(distiller.auxiliary_variables)
    assert aux_before, "the response loss owns DDC extraction modules"
    # the Distiller trains exactly student + aux variables (teacher frozen)
    ids = {id(v) for v in distiller.trainable_variables}
    assert ids == {id(v) for v in student.trainable_variables + distiller.auxiliary_variables}
    history = distiller.fit(tiny_dataset(), epochs=1, verbose=0).history
    expected = {f"jol_{t}" for t in ("obj_pos", "obj_neg", "cls_pos", "cls_neg", "iou", "s", "r", "l", "total")}
    expected |= {"corr", "resp", "pred_loc", "pred_cls", "total"}
    assert expected <= set(history)
    for name in expected:
        assert np.isfinite(history[name][0]), name
    for name in ("corr", "resp", "pred_cls", "jol_total"):
        assert history[name][0] > 0, name
    # total = JOL with λ-scaled class part + the distillation terms (λ = 0.5 by default)
    h = {k: v[0] for k, v in history.items()}
    rebuilt = (
        h["jol_total"]
        - 0.5 * (h["jol_cls_pos"] + h["jol_cls_neg"])
        + h["corr"]
        + h["resp"]
        + h["pred_loc"]
        + h["pred_cls"]
    )
    assert h["total"] == pytest.approx(rebuilt, rel=1e-4)
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, np.array(after))
    assert any(not np.allclose(b, np.array(a)) for b, a in zip(student_before, student.trainable_variables))
    assert any(not np.allclose(b, np.array(a)) for b, a in zip(aux_before, distiller.auxiliary_variables))
    # call / test_step use the student
    images, targets = tiny_batch()
    out = distiller(images)
    np.testing.assert_allclose(np.array(out["head"][0]), np.array(student(images)["head"][0]), atol=1e-5)
    logs = distiller.evaluate(images, targets, verbose=0, return_dict=True)
    assert np.isfinite(logs["jol_total"]) and logs["corr"] == 0.0


def test_student_jol_inside_the_distiller_equals_the_students_own_loss(teacher, make_student, tiny_batch):
    """The distiller's jol_* terms are the student's compute_loss, including its
    plain_class_weight (HEAD loss with 0, the default 1 otherwise)."""
    images, targets = tiny_batch()
    for plain in (0.0, None):
        student = make_student(plain_class_weight=plain)
        distiller = Distiller(teacher, student, image_size=SIZE)
        outputs = student(images, training=False)
        values = distiller.compute_terms(images, targets, teacher(images, training=False), outputs)
        own = student.compute_loss(x=images, y=targets, y_pred=outputs)
        assert float(values["jol_total"]) == pytest.approx(float(own), rel=1e-5), plain


def _tflite(model):
    """Builtin-only TFLite flatbuffer of the model's head outputs: (op list, size in bytes)."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serve = tf.function(
        lambda x: model(x, training=False)["head"],
        input_signature=[tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32)],
    )
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    ops = [op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()]
    return ops, len(content)


def test_distilled_student_is_a_plain_student(teacher, make_student):
    student = make_student()
    distiller = Distiller(teacher, student, image_size=SIZE)
    plain = make_student()
    assert distiller.student is student
    assert student.count_params() == plain.count_params()
    assert [type(l).__name__ for l in student._flatten_layers()] == [type(l).__name__ for l in plain._flatten_layers()]
    assert not any(isinstance(l, DynamicDirectionalConv) for l in student._flatten_layers())
    ops_distilled, size_distilled = _tflite(distiller.student)
    ops_plain, size_plain = _tflite(plain)
    assert "CONV_2D" in ops_plain and not any(op.startswith("Flex") for op in ops_plain)
    assert ops_distilled == ops_plain
    assert abs(size_distilled - size_plain) <= 0.002 * size_plain


def test_config_round_trip(teacher, make_student):
    distiller = Distiller(
        teacher,
        make_student(),
        distillation_losses=[
            FeatureCorrelationLoss(levels=(-2, -1), max_grid=8),
            DirectionalResponseLoss(num_directions=8, enabled=False),
            PredictionDistillationLoss(lam=0.3, margin=0.2),
        ],
        distillation_loss_weights=[2.0, 1.0, 0.5],
        student_loss_weight=0.7,
        image_size=SIZE,
    )
    config = distiller.get_config()
    clone = Distiller.from_config(config)
    assert clone.student_loss_weight == 0.7 and clone.image_size == SIZE
    corr, resp, pred = clone.distillation_losses
    assert (corr.weight, corr.levels, corr.max_grid) == (2.0, (-2, -1), 8)
    assert resp.num_directions == 8 and not resp.enabled
    assert (pred.weight, pred.lam, pred.margin) == (0.5, 0.3, 0.2)
    assert clone.student.count_params() == distiller.student.count_params()
    assert clone.teacher.count_params() == teacher.count_params()
    assert not clone.teacher.trainable
    with pytest.raises(ValueError, match="distiller.py"):
        Distiller(teacher, distiller.student, distillation_loss_weights=[1.0], image_size=SIZE)


def test_checkpoint_and_resume_match_an_uninterrupted_run(
    teacher, make_student, tiny_dataset, interrupt_before_epoch, tmp_path
):
    def make(initial=None):
        d = Distiller(teacher, make_student(), image_size=SIZE)
        if initial is not None:
            d.set_weights(initial)
        d.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        return d

    reference = make()
    initial = reference.get_weights()
    reference.fit(tiny_dataset(), epochs=2, verbose=0)

    backup = str(tmp_path / "backup")
    checkpoint = str(tmp_path / "last.weights.h5")
    interrupted = make(initial)
    with pytest.raises(RuntimeError, match="simulated"):
        interrupted.fit(
            tiny_dataset(),
            epochs=2,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup),
                interrupt_before_epoch(1),
                keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True),
            ],
        )
    resumed = make(initial)
    resumed.fit(tiny_dataset(), epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    for a, b in zip(reference.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5, rtol=1e-4)
    # the restart did not just start from scratch: one more epoch changed the weights
    assert any(
        not np.allclose(np.array(a), np.array(b))
        for a, b in zip(interrupted.trainable_variables, resumed.trainable_variables)
    )
    # the ModelCheckpoint file of epoch 1 loads back (student + aux modules)
    reference.load_weights(checkpoint)
    for a, b in zip(interrupted.trainable_variables, reference.trainable_variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_self_distillation_gghl_teacher_and_student(teacher, tiny_detector, tiny_batch):
    student = tiny_detector("gghl_darknet53_t", NUM_CLASSES, seed=3, **NO_DROP)
    distiller = Distiller(teacher, student, image_size=SIZE)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    logs = distiller.train_on_batch(*tiny_batch(), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["resp"] > 0 and logs["corr"] > 0
    # a student initialised as the teacher's copy: correlation and soft labels vanish
    student.set_weights(teacher.get_weights())
    images, targets = tiny_batch()
    values = distiller.compute_terms(images, targets, teacher(images, training=False), student(images, training=False))
    assert float(values["corr"]) < 1e-8 and abs(float(values["pred_cls"])) < 1e-5
    # switching every distillation loss off leaves exactly the student's JOL loss
    distiller.set_loss_switches([False, False, False])
    values = distiller.compute_terms(images, targets, teacher(images, training=False), student(images, training=False))
    assert float(values["total"]) == pytest.approx(float(values["jol_total"]), rel=1e-6)
    assert float(values["resp"]) == 0.0 and float(values["pred_loc"]) == 0.0


def test_loss_switches_at_construction_and_at_run_time(teacher, make_student, tiny_batch):
    """Losses built switched off are left out of the step and cannot be switched on later; losses
    built on are switched at run time, contributing exactly 0 while off."""
    student = make_student()
    built_off = Distiller(
        teacher,
        student,
        distillation_losses=[
            FeatureCorrelationLoss(enabled=False),
            DirectionalResponseLoss(enabled=False),
            PredictionDistillationLoss(lam=0.3, enabled=False),
        ],
        image_size=SIZE,
    )
    np.testing.assert_array_equal(np.array(built_off.loss_switches), [0.0, 0.0, 0.0])
    images, targets = tiny_batch()
    teacher_outputs = teacher(images, training=False)
    student_outputs = student(images, training=False)
    off = built_off.compute_terms(images, targets, teacher_outputs, student_outputs)
    for name in ("corr", "resp", "pred_loc", "pred_cls"):
        assert float(off[name]) == 0.0, name
    # a switched-off prediction loss leaves the JOL class terms unscaled
    assert float(off["total"]) == pytest.approx(float(off["jol_total"]), rel=1e-6)
    with pytest.raises(ValueError, match="built switched off"):
        built_off.set_loss_switches([True, False, False])

    built_on = Distiller(
        teacher,
        student,
        distillation_losses=[FeatureCorrelationLoss(), DirectionalResponseLoss(), PredictionDistillationLoss(lam=0.3)],
        image_size=SIZE,
    )
    built_on.set_loss_switches([False, False, False])
    assert not any(loss.enabled for loss in built_on.distillation_losses)
    off = built_on.compute_terms(images, targets, teacher_outputs, student_outputs)
    for name in ("corr", "resp", "pred_loc", "pred_cls"):
        assert float(off[name]) == 0.0, name
    assert float(off["total"]) == pytest.approx(float(off["jol_total"]), rel=1e-6)
    built_on.set_loss_switches([True, True, True])
    assert all(loss.enabled for loss in built_on.distillation_losses)
    assert all(c["config"]["enabled"] for c in built_on.get_config()["distillation_losses"])
    on = built_on.compute_terms(images, targets, teacher_outputs, student_outputs)
    assert float(on["corr"]) > 0 and float(on["resp"]) > 0
    rebuilt = (
        on["jol_total"]
        - 0.7 * (on["jol_cls_pos"] + on["jol_cls_neg"])
        + on["corr"]
        + on["resp"]
        + on["pred_loc"]
        + on["pred_cls"]
    )
    assert float(on["total"]) == pytest.approx(float(rebuilt), rel=1e-5)
    with pytest.raises(ValueError, match="distiller.py"):
        built_on.set_loss_switches([True, False])
    with pytest.raises(ValueError, match="weight must be > 0"):
        Distiller(teacher, student, distillation_loss_weights=[1.0, 0.0, 1.0], image_size=SIZE)


def test_mixed_float16_losses_are_float32(teacher, make_student, tiny_batch):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student = make_student()
        distiller = Distiller(teacher, student, image_size=SIZE)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
        images, targets = tiny_batch()
        outputs = student(images, training=True)
        assert outputs["neck"][0].dtype == "float16"
        values = distiller.compute_terms(images, targets, teacher(images, training=False), outputs)
        for name, value in values.items():
            assert value.dtype == tf.float32, name
            assert np.isfinite(float(value)), name
        logs = distiller.train_on_batch(images, targets, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from dked_tf.distiller import Distiller
    from dked_tf.models.presets import build_model

    # argv: the batch (.npz: images + the target keys), then JSON {num_classes, size, overrides}
    with np.load(sys.argv[1]) as batch:
        images = batch["images"]
        targets = {k: batch[k] for k in ("polygons", "classes", "weights")}
    settings = json.loads(sys.argv[2])

    def make():
        keras.utils.set_random_seed(0)
        teacher = build_model("gghl_darknet53_t", settings["num_classes"], **settings["overrides"])
        student = build_model("lodet_mobilenetv2_t", settings["num_classes"], **settings["overrides"])
        return Distiller(teacher, student, image_size=settings["size"])

    lr = 0.05
    # single device: the data-parallel step on 2 replicas == mean over the two half batches
    single = make()
    initial = single.get_weights()
    variables = single.trainable_variables
    totals, grads = [], []
    for half in (slice(0, 2), slice(2, 4)):
        x = images[half]
        y = {k: v[half] for k, v in targets.items()}
        teacher_out = single.teacher(x, training=False)
        with tf.GradientTape() as tape:
            values = single.compute_terms(x, y, teacher_out, single.student(x, training=True))
        totals.append(float(values["total"]))
        grads.append(tape.gradient(values["total"], variables))
    expected_total = float(np.mean(totals))
    expected = [np.array(v) - lr * 0.5 * (np.array(a) + np.array(b))
                for v, a, b in zip(variables, grads[0], grads[1])]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = make()
        mirrored.set_weights(initial)
        mirrored.compile(optimizer=keras.optimizers.SGD(lr), run_eagerly=True)
    dataset = tf.data.Dataset.from_tensors((images, targets))
    history = mirrored.fit(dataset, epochs=1, verbose=0).history
    got = [np.array(v) for v in mirrored.trainable_variables]
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
    scale = max(float(np.max(np.abs(b))) for b in expected)
    moved = max(float(np.max(np.abs(np.array(v) - e))) for v, e in zip(variables, expected))
    print(json.dumps({"total": history["total"][0], "expected_total": expected_total,
                      "weight_err": err, "scale": scale, "step_size": moved}))
    """
)


def test_mirrored_strategy_two_logical_cpus_matches_single_device(tiny_batch, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    images, targets = tiny_batch(4, seed=5)
    batch = tmp_path / "batch.npz"
    np.savez(batch, images=images, **targets)
    settings = json.dumps({"num_classes": NUM_CLASSES, "size": SIZE, "overrides": NO_DROP})
    # the child imports the dked_tf this process imported (editable install or checkout)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(dked_tf.__file__)))
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=python_path)
    result = subprocess.run(
        [sys.executable, str(script), str(batch), settings],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["total"] == pytest.approx(report["expected_total"], rel=1e-4)
    # the update is the one of the global-batch mean (not the sum over replicas)
    assert report["step_size"] > 1e-4
    assert report["weight_err"] < 1e-5 + 1e-3 * report["step_size"]
