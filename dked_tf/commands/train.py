"""`dked-tf train`: train one detector (GGHL teacher or LO-Det student) with the JOL loss."""

import json
import os

DESCRIPTION = (
    "Train one oriented detector (the GGHL teacher or the LO-Det student, or any preset of "
    "dked_tf.models.presets) on HRSC2016, DOTA (scenes split into patches) or the built-in synthetic "
    "set. Writes model.json + model.weights.h5 (usable by `dked-tf predict/export/distill`), "
    "config.yaml/json, history.json and, with --evaluate, metrics.json. Interrupted runs resume from "
    "their last backup (every train.checkpoint_every epochs; 1 by default)."
)


def add_common_arguments(parser, default_out):
    """Options shared by `train` and `distill`."""
    from dked_tf.config import add_config_arguments

    data = parser.add_argument_group("data")
    data.add_argument("--format", choices=("hrsc", "dota"), default="hrsc",
                      help="dataset format: HRSC2016 XML (one class, ship) or DOTA labelTxt (scenes are split "
                           "into patches of data.patch_size with gap data.patch_gap)")
    data.add_argument("--data-root", default=None, metavar="DIR",
                      help="root of the real dataset (HRSC2016: FullDataSet+ImageSets or Train/Test; DOTA: "
                           "train/ and val/ with images/ and labelTxt/). Default: the built-in synthetic set in "
                           "that format, generated once under data.cache_dir")
    data.add_argument("--data-cache", default=None, metavar="DIR",
                      help="where the synthetic set and DOTA patches are cached (config data.cache_dir)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", default=default_out, metavar="DIR", help="output folder of this run")
    run.add_argument("--epochs", type=int, default=None, help="shortcut for --set train.epochs=N")
    run.add_argument("--seed", type=int, default=None, help="random seed (shortcut for --set train.seed=N)")
    run.add_argument("--image-size", type=int, default=None, help="input size S (shortcut for --set data.image_size=S)")
    run.add_argument("--no-resume", action="store_true",
                     help="start from scratch even if the output folder holds a backup of an interrupted run")
    run.add_argument("--evaluate", action="store_true",
                     help="after training, compute mAP(07) and mAP(12) on the test split and write metrics.json")
    run.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="1: progress bars and an ETA per epoch")
    add_config_arguments(parser.add_argument_group("configuration"))


def add_arguments(parser):
    parser.add_argument("--role", choices=("teacher", "student"), default="student",
                        help="which model of the config to train: teacher (model.teacher with the teacher_train "
                             "schedule) or student (model.student with the train schedule)")
    parser.add_argument("--arch", default=None, metavar="PRESET",
                        help="model preset name instead of the config's (gghl_darknet53[_s|_t], "
                             "lodet_mobilenetv2[_s|_t])")
    add_common_arguments(parser, default_out="runs/train")


def resolve_args_config(args, schedule="train"):
    """The ExperimentConfig of a train/distill invocation: preset -> --config -> --set ->
    the shortcut flags."""
    from dked_tf.config import apply_overrides, resolve_config

    cfg = resolve_config(args.preset, task=args.format, config_file=args.config, overrides=args.overrides)
    shortcuts = []
    if args.data_root:
        shortcuts.append(f"data.root={args.data_root}")
    if args.data_cache:
        shortcuts.append(f"data.cache_dir={args.data_cache}")
    if args.epochs is not None:
        shortcuts.append(f"{schedule}.epochs={args.epochs}")
    if args.seed is not None:
        shortcuts.append(f"{schedule}.seed={args.seed}")
    if args.image_size is not None:
        shortcuts.append(f"data.image_size={args.image_size}")
    cfg = apply_overrides(cfg, shortcuts)
    cfg.data.format = args.format
    return cfg


def evaluate_and_write(model, test_records, class_names, cfg, out_dir, verbose=1):
    """mAP(07) and mAP(12) of model on test_records; writes metrics.json; returns the dict."""
    from dked_tf.training import evaluate_map

    metrics = evaluate_map(model, test_records, class_names, cfg, verbose=verbose)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    if verbose:
        print(f"mAP(07) {100 * metrics['map07']:.2f}  mAP(12) {100 * metrics['map12']:.2f}")
    return metrics


def run(args):
    from dked_tf import config as C
    from dked_tf import training as T

    schedule = "teacher_train" if args.role == "teacher" else "train"
    cfg = resolve_args_config(args, schedule=schedule)
    train_cfg = getattr(cfg, schedule)
    arch = args.arch or (cfg.model.teacher if args.role == "teacher" else cfg.model.student)
    overrides = cfg.model.teacher_overrides if args.role == "teacher" else cfg.model.student_overrides
    os.makedirs(args.out, exist_ok=True)
    C.save_run_config(cfg, args.out)
    T.set_seed(train_cfg.seed)

    train_records, class_names = T.prepare_records(cfg, "train", verbose=args.verbose)
    dataset = T.make_train_dataset(train_records, cfg.data, seed=train_cfg.seed)
    steps = T.steps_in(dataset) or max(1, len(train_records) // cfg.data.batch_size)
    model = T.build_detector(arch, len(class_names), cfg.data.image_size, **overrides)
    optimizer = T.make_optimizer(train_cfg, steps)
    outcome = T.train_detector(model, dataset, epochs=train_cfg.epochs, optimizer=optimizer, stage=args.role,
                               checkpoint_dir=os.path.join(args.out, "backup"), resume=not args.no_resume,
                               verbose=args.verbose, checkpoint_every=train_cfg.checkpoint_every)
    T.save_detector(model, args.out, architecture=arch, class_names=class_names, image_size=cfg.data.image_size,
                    overrides=overrides, tile_size=T.tile_size_for(cfg), train_seconds=outcome.train_seconds)
    finish_run(model, outcome, args, cfg, class_names, f"trained {arch}")
    return 0


def finish_run(model, outcome, args, cfg, class_names, what):
    """End of a `train`/`distill` run: history.json, a summary line, optional test-split mAP."""
    from dked_tf import training as T

    with open(os.path.join(args.out, "history.json"), "w", encoding="utf-8") as handle:
        json.dump({"history": outcome.history, "train_seconds": outcome.train_seconds}, handle, indent=2)
    if args.verbose:
        print(f"{what} in {outcome.train_seconds:.0f} s; saved to {args.out}")
    if args.evaluate:
        test_records, _ = T.prepare_records(cfg, "test", verbose=args.verbose)
        evaluate_and_write(model, test_records, class_names, cfg, args.out, verbose=args.verbose)
