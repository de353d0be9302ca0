import argparse
import json

import pytest
import yaml

from dked_tf import config as C
from dked_tf.experiment.optimizer import make_optimizer


def test_presets_differ_where_they_should():
    quick, default, paper = (C.preset_config(p) for p in ("quick", "default", "paper"))
    assert quick.data.image_size < default.data.image_size < paper.data.image_size == 800
    assert paper.model.teacher == "gghl_darknet53" and paper.model.student == "lodet_mobilenetv2"
    # GGHL §1.8 schedule for the teacher, LO-Det §2.6 for the student.
    teacher_train = paper.teacher_train
    assert (teacher_train.optimizer, teacher_train.learning_rate, teacher_train.epochs) == ("sgd", 2e-4, 151)
    assert (paper.train.learning_rate, paper.train.epochs, paper.train.warmup_epochs) == (1.5e-4, 121, 5)
    smoke = C.preset_config("smoke")
    assert smoke.model.student.endswith("_t") and smoke.data.image_size == 64
    with pytest.raises(C.ConfigError, match="unknown preset"):
        C.preset_config("huge")


def test_overrides_are_typed():
    cfg = C.apply_overrides(
        C.preset_config("default"),
        [
            "train.epochs=12",
            "train.learning_rate=2e-4",
            "data.augment=false",
            "data.multiscale=[224, 256]",
            "model.student=lodet_mobilenetv2_t",
            "model.student_overrides={width: 0.5}",
            "distill.delta=0.1",
            "data.root=/data/HRSC2016",
            "train.warmup_epochs=2",
        ],
    )
    assert cfg.train.epochs == 12 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(2e-4) and isinstance(cfg.train.learning_rate, float)
    assert cfg.data.augment is False
    assert cfg.data.multiscale == [224, 256]
    assert cfg.model.student_overrides == {"width": 0.5}
    assert cfg.train.warmup_epochs == 2.0 and isinstance(cfg.train.warmup_epochs, float)
    assert cfg.data.root == "/data/HRSC2016"
    base = C.preset_config("default")
    C.apply_overrides(base, ["train.epochs=99"])
    assert base.train.epochs != 99


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.epoch=3", "did you mean train.epochs"),
        ("train.epochs=2.5", "expected an integer"),
        ("data.augment=maybe", "true/false"),
        ("train.epochs", "KEY=VALUE"),
        ("nosuch.x=1", "unknown config key"),
        ("train=3", "must be a mapping"),
    ],
)
def test_bad_overrides_name_the_key(text, message):
    with pytest.raises(C.ConfigError, match=message):
        C.apply_overrides(C.preset_config("default"), [text])


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_file_round_trip(tmp_path, suffix):
    cfg = C.apply_overrides(
        C.preset_config("quick"), ["train.epochs=7", "data.multiscale=[96,128]", "distill.extra={tau: 2.0}"]
    )
    path = C.save_config(cfg, tmp_path / f"config.{suffix}")
    text = open(path).read()
    data = json.loads(text) if suffix == "json" else yaml.safe_load(text)
    assert data["train"]["epochs"] == 7 and data["preset"] == "quick"
    assert C.load_config(path) == cfg


def test_partial_file_applies_on_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: paper\ntrain:\n  epochs: 3\n")
    cfg = C.load_config(path)
    assert cfg.train.epochs == 3 and cfg.data.image_size == 800 and cfg.train.learning_rate == 1.5e-4
    path.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(C.ConfigError, match="mine.yaml"):
        C.load_config(path)


def test_resolve_order_and_cli_arguments(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"epochs": 5, "seed": 3}}))
    parser = argparse.ArgumentParser()
    C.add_config_arguments(parser)
    args = parser.parse_args(["--preset", "quick", "--config", str(path), "--set", "train.epochs=9"])
    cfg = C.resolve_config(args.preset, config_file=args.config, overrides=args.overrides)
    assert (cfg.preset, cfg.train.epochs, cfg.train.seed) == ("quick", 9, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--preset", "giant"])


def test_cli_flags_win_over_set_and_format_picks_the_task():
    import argparse

    from dked_tf.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--epochs", "3", "--set", "train.epochs=5", "--set", "train.seed=4", "--format", "dota"])
    cfg = train_command.config_from_args(args, "train")
    assert cfg.train.epochs == 3 and cfg.train.seed == 4
    assert cfg.data.format == "dota" and cfg.data.synthetic_image_size >= 2 * cfg.data.patch_size
    args = parser.parse_args(["--set", "data.format=dota"])
    assert train_command.config_from_args(args, "train").data.format == "hrsc"


def test_default_preset_is_the_realistic_set_with_the_box_term_and_easy_keeps_the_previous_default():
    default, easy = C.preset_config("default"), C.preset_config("easy")
    assert default.data.synthetic_kind == "realistic" and default.data.synthetic_image_size == 512
    for overrides in (default.model.teacher_overrides, default.model.student_overrides):
        assert overrides["loss_weights"] == {"obb": 4.0} and overrides["level_reference_size"] == 256
    assert default.seeds == [0, 1, 2] and default.data.input_scale == "fit"
    assert default.model.min_stride("teacher") == default.model.min_stride("student") == 4
    assert default.model.iou_threshold == 0.5
    assert easy.model.min_stride("teacher") == easy.model.min_stride("student") == 8
    assert easy.model.iou_threshold == 0.3
    assert easy.data.synthetic_kind == "easy" and easy.data.synthetic_image_size == 256
    assert "loss_weights" not in easy.model.teacher_overrides and easy.seeds == [0, 1]
    # DOTA keeps its patches and GGHL's loss
    dota = C.preset_config("default", task="dota")
    assert dota.data.synthetic_kind == "easy" and "loss_weights" not in dota.model.student_overrides


def test_ema_momentum_switches_on_keras_weight_averaging():
    schedule = C.preset_config("default").train
    assert not make_optimizer(schedule, 10).use_ema
    averaged = make_optimizer(C.apply_overrides(C.preset_config("default"), ["train.ema_momentum=0.99"]).train, 10)
    assert averaged.use_ema and averaged.ema_momentum == pytest.approx(0.99)
