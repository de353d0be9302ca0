"""`dked-tf distill`: train a student from a trained teacher with DKED."""

from dked_tf.commands.train import add_common_arguments, config_from_args, finish_run, start_run
from dked_tf.experiment.train_lib import require_saved_teacher, train

DESCRIPTION = (
    "Train a student detector from a trained teacher with DKED (feature-correlation, "
    "direction-adaptive feature-response and prediction distillation; dked_tf.Distiller). The teacher "
    "is frozen; the student uses the config's `train` schedule, so it is directly comparable with a "
    "student trained alone by `dked-tf train --role student` with the same seed. The result folder holds "
    "the plain student (model.json + model.weights.h5): the distillation modules are training-only."
)


def add_arguments(parser):
    parser.add_argument(
        "--teacher",
        required=True,
        metavar="DIR",
        help="folder of the trained teacher (model.json + model.weights.h5 from `dked-tf train "
        "--role teacher --out DIR`)",
    )
    parser.add_argument(
        "--student-arch",
        default=None,
        metavar="PRESET",
        help="student preset instead of the config's model.student; a GGHL preset here gives "
        "self-distillation (GGHL -> GGHL)",
    )
    parser.add_argument(
        "--init-student",
        default=None,
        metavar="DIR",
        help="start the student from these weights (a saved detector folder) instead of from scratch",
    )
    add_common_arguments(parser, default_out="runs/distill")
    loss = parser.add_argument_group("DKED losses (shortcuts for --set distill.*)")
    loss.add_argument(
        "--correlation-scale",
        type=float,
        default=None,
        help="backbone feature-correlation loss weight, as a multiple of its default (0: off)",
    )
    loss.add_argument(
        "--response-scale",
        type=float,
        default=None,
        help="direction-adaptive FPN feature-response loss weight, as a multiple of its default (0: off)",
    )
    loss.add_argument(
        "--prediction-scale",
        type=float,
        default=None,
        help="prediction (teacher-bounded box + soft class) loss weight, as a multiple of its default (0: off)",
    )
    loss.add_argument("--delta", type=float, default=None, help="margin δ of the teacher-bounded regression")
    loss.add_argument(
        "--lam",
        type=float,
        default=None,
        help="λ: weight of the ground-truth class loss against the teacher's soft labels (1-λ)",
    )


def run(args):
    cfg = config_from_args(
        args,
        "train",
        extra_flags={
            "distill.correlation_scale": args.correlation_scale,
            "distill.response_scale": args.response_scale,
            "distill.prediction_scale": args.prediction_scale,
            "distill.delta": args.delta,
            "distill.lam": args.lam,
        },
    )
    require_saved_teacher(args.teacher)  # before the data is prepared
    cfg, records = start_run(
        cfg, args, "student", teacher=args.teacher, architecture=args.student_arch, init_from=args.init_student
    )
    result = train(
        cfg,
        "student",
        out=args.out,
        records=records,
        teacher=args.teacher,
        architecture=args.student_arch,
        init_from=args.init_student,
        resume=not (args.no_resume or args.force),
        verbose=args.verbose,
        tensorboard_dir=args.tensorboard,
    )
    finish_run(result, args, cfg)
    return 0
