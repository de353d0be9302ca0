"""`dked-tf distill`: train a student from a trained teacher with DKED."""

import os

from dked_tf.commands.train import add_common_arguments, finish_run, resolve_args_config

DESCRIPTION = (
    "Train a student detector from a trained teacher with DKED (feature-correlation, "
    "direction-adaptive feature-response and prediction distillation; dked_tf.Distiller). The teacher "
    "is frozen; the student uses the config's `train` schedule, so it is directly comparable with a "
    "student trained alone by `dked-tf train --role student` with the same seed. The result folder holds "
    "the plain student (model.json + model.weights.h5): the distillation modules are training-only."
)


def add_arguments(parser):
    parser.add_argument("--teacher", required=True, metavar="DIR",
                        help="folder of the trained teacher (model.json + model.weights.h5 from `dked-tf train "
                             "--role teacher --out DIR`)")
    parser.add_argument("--student-arch", default=None, metavar="PRESET",
                        help="student preset instead of the config's model.student; a GGHL preset here gives "
                             "self-distillation (GGHL -> GGHL)")
    parser.add_argument("--init-student", default=None, metavar="DIR",
                        help="start the student from these weights (a saved detector folder) instead of from scratch")
    add_common_arguments(parser, default_out="runs/distill")
    loss = parser.add_argument_group("DKED losses (shortcuts for --set distill.*)")
    loss.add_argument("--correlation-scale", type=float, default=None,
                      help="backbone feature-correlation loss weight, as a multiple of its default (0: off)")
    loss.add_argument("--response-scale", type=float, default=None,
                      help="direction-adaptive FPN feature-response loss weight, as a multiple of its default (0: off)")
    loss.add_argument("--prediction-scale", type=float, default=None,
                      help="prediction (teacher-bounded box + soft class) loss weight, as a multiple of its "
                           "default (0: off)")
    loss.add_argument("--delta", type=float, default=None, help="margin δ of the teacher-bounded regression")
    loss.add_argument("--lam", type=float, default=None,
                      help="λ: weight of the ground-truth class loss against the teacher's soft labels (1-λ)")


def run(args):
    from dked_tf import config as C
    from dked_tf import training as T

    cfg = resolve_args_config(args, schedule="train")
    shortcuts = {"correlation_scale": args.correlation_scale, "response_scale": args.response_scale,
                 "prediction_scale": args.prediction_scale, "delta": args.delta, "lam": args.lam}
    cfg = C.apply_overrides(cfg, [f"distill.{k}={v}" for k, v in shortcuts.items() if v is not None])
    teacher, teacher_meta = T.load_detector(args.teacher)
    if teacher_meta["image_size"] != cfg.data.image_size and args.verbose:
        print(f"note: teacher trained at {teacher_meta['image_size']} px, distilling at {cfg.data.image_size} px")
    arch = args.student_arch or cfg.model.student
    os.makedirs(args.out, exist_ok=True)
    C.save_run_config(cfg, args.out)
    T.set_seed(cfg.train.seed)

    train_records, class_names = T.prepare_records(cfg, "train", verbose=args.verbose)
    if list(class_names) != list(teacher_meta["class_names"]):
        raise ValueError(f"the teacher in {args.teacher} was trained on classes {teacher_meta['class_names']}, "
                         f"the data has {list(class_names)}")
    dataset = T.make_train_dataset(train_records, cfg.data, seed=cfg.train.seed)
    steps = T.steps_in(dataset) or max(1, len(train_records) // cfg.data.batch_size)
    if args.init_student:
        student, _ = T.load_detector(args.init_student)
    else:
        student = T.build_detector(arch, len(class_names), cfg.data.image_size, **cfg.model.student_overrides)
    optimizer = T.make_optimizer(cfg.train, steps)
    _, outcome = T.distill(teacher, student, dataset, distill_cfg=cfg.distill, optimizer=optimizer,
                           epochs=cfg.train.epochs, stage="dked", checkpoint_dir=os.path.join(args.out, "backup"),
                           resume=not args.no_resume, verbose=args.verbose, image_size=cfg.data.image_size,
                           checkpoint_every=cfg.train.checkpoint_every)
    T.save_detector(student, args.out, architecture=arch, class_names=class_names, image_size=cfg.data.image_size,
                    overrides=cfg.model.student_overrides, tile_size=T.tile_size_for(cfg),
                    train_seconds=outcome.train_seconds, teacher=os.path.abspath(args.teacher))
    finish_run(student, outcome, args, cfg, class_names, f"distilled {arch}")
    return 0
