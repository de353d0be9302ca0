"""`dked-tf train`: train one detector (GGHL teacher or LO-Det student) with the JOL loss."""

import os

from dked_tf.config import ConfigError, add_config_arguments, flag_overrides, resolve_config, save_run_config
from dked_tf.experiment.data import prepare_records, resolve_input
from dked_tf.experiment.evaluate import evaluate_map
from dked_tf.experiment.saving import (
    METRICS_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    discard_saved_detector,
    is_saved_detector,
)
from dked_tf.experiment.train_lib import check_resumable, default_backup_dir, run_record, train
from dked_tf.files import write_json

DESCRIPTION = (
    "Train one oriented detector (the GGHL teacher or the LO-Det student, or any preset of "
    "dked_tf.models.presets) on HRSC2016, DOTA (scenes split into patches) or the built-in synthetic "
    "set. Writes model.json + model.weights.h5 (usable by `dked-tf predict/export/distill`), "
    "config.yaml/json, history.json, history.csv, tensorboard/ (TensorBoard event files), with --val-every "
    "best.weights.h5 + best.json (best validation mAP) and, with --evaluate, metrics.json. Interrupted runs "
    "resume from their last backup (every train.checkpoint_every epochs; 1 by default) when rerun with the same "
    "config; a folder holding a finished model is refused unless --force."
)


def add_common_arguments(parser, default_out):
    """Options shared by `train` and `distill`."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--format",
        choices=("hrsc", "dota"),
        default="hrsc",
        help="dataset format: HRSC2016 XML (one class, ship) or DOTA labelTxt (scenes are split "
        "into patches of data.patch_size with gap data.patch_gap)",
    )
    data.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="root of the real dataset (HRSC2016: FullDataSet+ImageSets or Train/Test; DOTA: "
        "train/ and val/ with images/ and labelTxt/). Default: the built-in synthetic set in "
        "that format, generated once under data.cache_dir",
    )
    data.add_argument(
        "--data-cache",
        default=None,
        metavar="DIR",
        help="where the synthetic set and DOTA patches are cached (config data.cache_dir)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--out", default=default_out, metavar="DIR", help="output folder of this run")
    run.add_argument("--epochs", type=int, default=None, help="shortcut for --set train.epochs=N")
    run.add_argument("--seed", type=int, default=None, help="random seed (shortcut for --set train.seed=N)")
    run.add_argument("--image-size", type=int, default=None, help="input size S (shortcut for --set data.image_size=S)")
    run.add_argument(
        "--val-every",
        type=int,
        default=None,
        metavar="N",
        help="score mAP(07)/mAP(12) on the validation images (data.val_split) every N epochs, keep the best "
        "weights in OUT/best.weights.h5 (shortcut for --set train.val_every=N; 0: off)",
    )
    run.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="write the TensorBoard event files (losses, learning rate, val mAP, drawn val images) to DIR "
        "instead of OUT/tensorboard (--set train.tensorboard=false: none)",
    )
    run.add_argument(
        "--no-resume",
        action="store_true",
        help="start from scratch even if the output folder holds a backup of an interrupted run",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="train into an output folder that holds a finished model (it is replaced; without "
        "--force such a folder is refused)",
    )
    run.add_argument(
        "--evaluate",
        action="store_true",
        help="after training, compute mAP(07) and mAP(12) on the test split and write metrics.json",
    )
    run.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="1: progress bars and an ETA per epoch")
    add_config_arguments(parser.add_argument_group("configuration"))


def add_arguments(parser):
    parser.add_argument(
        "--role",
        choices=("teacher", "student"),
        default="student",
        help="which model of the config to train: teacher (model.teacher with the teacher_train "
        "schedule) or student (model.student with the train schedule)",
    )
    parser.add_argument(
        "--arch",
        default=None,
        metavar="PRESET",
        help="model preset name instead of the config's (gghl_darknet53[_s|_t], lodet_mobilenetv2[_s|_t])",
    )
    add_common_arguments(parser, default_out="runs/train")


def config_from_args(args, schedule, extra_flags=None):
    """The ExperimentConfig of a train/distill invocation: preset (of --format's task) ->
    --config -> --set -> the explicit flags (they win over --set; data.format is --format's).
    schedule: the config section (train or teacher_train) that --epochs/--seed set."""
    flags = {
        "data.root": args.data_root,
        "data.cache_dir": args.data_cache,
        f"{schedule}.epochs": args.epochs,
        f"{schedule}.seed": args.seed,
        f"{schedule}.val_every": args.val_every,
        "data.image_size": args.image_size,
        "data.format": args.format,
        **(extra_flags or {}),
    }
    return resolve_config(
        args.preset, task=args.format, config_file=args.config, overrides=list(args.overrides) + flag_overrides(flags)
    )


def protect_finished_run(args):
    """Refuses (ConfigError) an output folder that holds a finished model unless --force; with
    --force the finished model's files are removed before training starts."""
    if not is_saved_detector(args.out):
        return
    if not args.force:
        raise ConfigError(
            f"{args.out} holds a finished model ({MODEL_FILE} + {WEIGHTS_FILE}): pass --force to train it "
            "again (replacing it) or choose another --out"
        )
    if args.verbose:
        print(f"--force: removing the finished model in {args.out}", flush=True)
    discard_saved_detector(args.out)


def finish_run(result, args, cfg):
    """End of a `train`/`distill` run: a summary line and, with --evaluate, test-split mAP
    written to metrics.json."""
    if args.verbose:
        print(f"trained {result.architecture} in {result.outcome.train_seconds:.0f} s; saved to {args.out}")
        best = result.outcome.best
        if best:
            stopped = result.outcome.stopped_early_at
            early = f"; stopped early after epoch {stopped}" if stopped else ""
            print(
                f"best val mAP(07) {100 * best['val_map07']:.2f} at epoch {best['epoch']} -> "
                f"{os.path.join(args.out, best['weights'])}{early}"
            )
    if args.evaluate:
        test_records, _ = prepare_records(cfg, "test", verbose=args.verbose)
        metrics = evaluate_map(result.model, test_records, result.class_names, cfg, verbose=args.verbose)
        write_json(os.path.join(args.out, METRICS_FILE), metrics)
        if args.verbose:
            print(f"mAP(07) {100 * metrics['map07']:.2f}  mAP(12) {100 * metrics['map12']:.2f}")


def start_run(cfg, args, role, teacher=None, architecture=None, init_from=None):
    """Checks the output folder (a finished model needs --force; the backup of an interrupted
    run resumes only when its config matches), then the training records and the config with
    its input resolved (`resolve_input`: the chosen input scale is printed), saved into the run
    folder: (cfg, (records, class_names))."""
    protect_finished_run(args)
    records = prepare_records(cfg, "train", verbose=args.verbose)
    cfg, line = resolve_input(cfg, records[0])
    if args.verbose:
        print(line, flush=True)
    if not (args.no_resume or args.force):
        record = run_record(cfg, role, teacher=teacher, architecture=architecture, init_from=init_from)
        check_resumable(default_backup_dir(args.out), record)
    os.makedirs(args.out, exist_ok=True)
    save_run_config(cfg, args.out)
    return cfg, records


def run(args):
    schedule = "teacher_train" if args.role == "teacher" else "train"
    cfg, records = start_run(config_from_args(args, schedule), args, args.role, architecture=args.arch)
    result = train(
        cfg,
        args.role,
        out=args.out,
        records=records,
        architecture=args.arch,
        resume=not (args.no_resume or args.force),
        verbose=args.verbose,
        tensorboard_dir=args.tensorboard,
    )
    finish_run(result, args, cfg)
    return 0
