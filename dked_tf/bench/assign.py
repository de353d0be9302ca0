"""What the label assignment gives each object, per network input size (no training).

    dked-tf bench assign --set data.synthetic_kind=realistic --set data.synthetic_image_size=512
    dked-tf bench assign --data-root ~/data/HRSC2016 --sizes 192 384 800
    dked-tf bench assign --quick

For the training split of the recipe's data (a preset with `--set` overrides, or `--data-root`)
and each input size S: how many annotated objects the pipeline keeps at S (it drops slivers
thinner than 2 px after letterboxing), their median length and width in input pixels, and how
many positive OLA cells each kept object gets on its own (`assign.encode_targets`, the model's
strides and level reference size), overall and by object length at the input. Few positive
cells per object, or many objects without any, mean few and noisy training signals: the
network input is too small for the objects, or the level thresholds do not fit them.
"""

import argparse

from dked_tf.bench.report import write_report
from dked_tf.config import add_set_argument, flag_overrides, resolve_config
from dked_tf.evaluation.diagnostics import assignment_statistics
from dked_tf.experiment.data import prepare_records
from dked_tf.models.backbones import level_strides


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="dked-tf bench assign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", help="recipe preset whose data and model are used")
    parser.add_argument("--data-root", default=None, help="a real HRSC2016 tree instead of the synthetic set")
    add_set_argument(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="input sizes (default: 192 256 384 512)")
    parser.add_argument("--images", type=int, default=None, help="use the first N training images")
    parser.add_argument("--quick", action="store_true", help="the smoke preset at two sizes")
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/assign.json)")
    args = parser.parse_args(argv)

    preset = "smoke" if args.quick else args.preset
    overrides = flag_overrides({"data.root": args.data_root}) + list(args.overrides)
    cfg = resolve_config(preset, overrides=overrides)
    sizes = args.sizes or ([64, 96] if args.quick else [192, 256, 384, 512])
    records, _ = prepare_records(cfg, "train", verbose=0)
    records = records[: args.images] if args.images else records
    level_reference_size = cfg.model.student_overrides.get("level_reference_size")
    min_gaussian_sigma = float(cfg.model.student_overrides.get("min_gaussian_sigma", 0.0))
    rows, by_length = [], []
    for size in sizes:
        stats = assignment_statistics(
            records,
            size,
            strides=level_strides(cfg.model.min_stride("student")),
            level_reference_size=level_reference_size,
            max_objects=cfg.data.max_objects,
            min_gaussian_sigma=min_gaussian_sigma,
        )
        rows.append(
            {
                "input_px": size,
                "objects": stats["objects"],
                "kept_%": 100 * stats["kept_fraction"],
                "median_len_px": stats["median_length_px"],
                "median_width_px": stats["median_width_px"],
                "pos_cells_mean": stats["positives_mean"],
                "pos_cells_median": stats["positives_median"],
                "no_pos_%": 100 * stats["no_positive_fraction"],
                "levels_%": "/".join(f"{100 * share:.0f}" for share in stats["level_share"]),
            }
        )
        by_length += [{"input_px": size, **row} for row in stats["by_length"]]
    write_report(
        "assign",
        rows,
        path=args.output,
        title=f"OLA positives per object, {len(records)} training images ({cfg.data.format}, preset {preset})",
        extra={"preset": preset, "overrides": overrides, "by_length": by_length},
    )
    print()
    for row in by_length:
        print(
            f"  {row['input_px']} px, objects {row['length_px']} px long: {row['objects']} objects, "
            f"kept {100 * row['kept_fraction']:.0f} %, {row['positives_mean']:.2f} positive cells each, "
            f"{100 * row['no_positive_fraction']:.0f} % without"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
