"""The scale switches (train.strategy, train.mixed_precision; issue #17, item 4) and one
`dked-tf train` run with validation, the best weights, the logs and both switches on (items 2-4).

On this CPU machine MirroredStrategy runs one replica on the CPU and bfloat16 stands in for a
GPU's float16: the same code paths (variables created under the strategy, a dtype policy whose
compute dtype is not float32) without the hardware.
"""

import csv
import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from dked_tf import cli
from dked_tf.config import TrainConfig

SIZE = 64
NUM_CLASSES = 2


def _one_step(schedule, tiny_batch):
    """Builds a tiny student under training_scope(schedule) and trains one step on tiny_batch:
    (model, strategy, history, head output dtypes, loss dtype, compute dtype)."""
    import keras
    import tensorflow as tf

    from dked_tf.experiment.train_lib import training_scope
    from dked_tf.models.presets import build_detector

    images, targets = tiny_batch(2, seed=3)
    with training_scope(schedule) as strategy:
        keras.utils.set_random_seed(0)
        model = build_detector("lodet_mobilenetv2_t", NUM_CLASSES, SIZE, neck_kwargs={"drop_prob": 0.0})
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        before = [np.array(v) for v in model.trainable_variables]
        history = model.fit(tf.data.Dataset.from_tensors((images, targets)), epochs=1, verbose=0, shuffle=False).history
        outputs = model(images, training=False)
        loss = model.compute_loss(images, targets, outputs, training=False)
        name = keras.backend.standardize_dtype
        dtypes = {
            "head": {name(h.dtype) for h in outputs["head"]},
            "loss": name(loss.dtype),
            "features": name(outputs["neck"][0].dtype),
            "variables": {name(v.dtype) for v in model.trainable_variables},
        }
        moved = max(float(np.max(np.abs(np.array(v) - b))) for v, b in zip(model.trainable_variables, before))
    return model, strategy, history, dtypes, moved


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_heads_loss_and_variables_float32(tiny_batch):
    import keras

    before = keras.config.dtype_policy().name
    schedule = dataclasses.replace(TrainConfig(), mixed_precision="mixed_bfloat16")
    model, _, history, dtypes, moved = _one_step(schedule, tiny_batch)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert dtypes["features"] == "bfloat16"  # the convolutions compute in bfloat16
    assert dtypes["head"] == {"float32"} and dtypes["loss"] == "float32"
    assert dtypes["variables"] == {"float32"}
    assert np.isfinite(history["loss"][0]) and moved > 0
    assert keras.config.dtype_policy().name == before  # the policy is the run's only


def test_mirrored_strategy_over_the_cpu_trains_one_step(tiny_batch):
    import tensorflow as tf

    schedule = dataclasses.replace(TrainConfig(), strategy="mirrored")
    model, strategy, history, dtypes, moved = _one_step(schedule, tiny_batch)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == len(strategy.extended.worker_devices) >= 1
    assert model.distribute_strategy is strategy
    assert isinstance(model.trainable_variables[0].value, tf.distribute.DistributedValues)
    assert np.isfinite(history["loss"][0]) and moved > 0 and dtypes["head"] == {"float32"}


def test_only_the_chief_of_a_multi_worker_cluster_writes_the_run_folder():
    import types

    import tensorflow as tf

    from dked_tf.experiment.train_lib import is_chief

    def strategy(cluster, task_type, task_id):
        spec = tf.train.ClusterSpec(cluster)
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, task_type=task_type, task_id=task_id)
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(strategy(workers, "worker", 0)) and not is_chief(strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert is_chief(strategy(with_chief, "chief", 0)) and not is_chief(strategy(with_chief, "worker", 0))
    assert is_chief(tf.distribute.get_strategy())


def _events(log_dir):
    import tensorflow as tf

    tags = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return tags


def test_cli_train_validates_keeps_the_best_weights_and_logs_under_mirrored_bfloat16(tmp_path, capsys):
    """`dked-tf train --val-every 1 --tensorboard DIR --set train.strategy=mirrored --set
    train.mixed_precision=mixed_bfloat16` on the smoke preset: val mAP in the epoch lines, the
    CSV, TensorBoard and best.json; best.weights.h5 loads into the saved detector; stdout (not a
    terminal here) has one line per epoch and no progress bar."""
    from dked_tf.experiment.saving import load_detector

    run_dir, tb_dir = tmp_path / "run", tmp_path / "tb"
    code = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--data-cache",
            str(tmp_path / "cache"),
            "--out",
            str(run_dir),
            "--epochs",
            "2",
            "--val-every",
            "1",
            "--tensorboard",
            str(tb_dir),
            "--set",
            "train.strategy=mirrored",
            "--set",
            "train.mixed_precision=mixed_bfloat16",
            "--set",
            "model.score_threshold=0.0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    epoch_lines = [line for line in out.splitlines() if line.startswith("[student] epoch")]
    assert len(epoch_lines) == 2 and all("val_map07" in line for line in epoch_lines)
    assert "\x08" not in out and "━" not in out and "Epoch 1/2" not in out
    assert "held out" in out and "best val mAP(07)" in out
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    val_map = [float(r["val_map07"]) for r in rows]
    best = json.loads((run_dir / "best.json").read_text())
    assert best["value"] == pytest.approx(max(val_map)) and best["epoch"] == 1 + int(np.argmax(val_map))
    assert json.loads((run_dir / "history.json").read_text())["best"]["epoch"] == best["epoch"]
    config = (run_dir / "config.yaml").read_text()
    assert "strategy: mirrored" in config and "mixed_precision: mixed_bfloat16" in config
    model, _ = load_detector(run_dir)
    model.load_weights(run_dir / "best.weights.h5")
    tags = _events(tb_dir)
    assert set(tags["val_map07"]) == {1, 2} and float(tags["val_map07"][2]) == pytest.approx(val_map[1])
    assert {"loss", "learning_rate", "val_map12"} <= set(tags)
    assert any(tag.startswith("val_detections/") for tag in tags)
    assert not (run_dir / "tensorboard").exists()
