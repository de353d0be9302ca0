"""`dked-tf evaluate`: score DOTA Task1 result files against DOTA labelTxt or HRSC2016 XML ground
truth with the DOTA devkit's semantics (see dked_tf.evaluation.metrics).

    dked-tf evaluate --format dota --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--classes dota1.0|dota1.5|dota2.0|a,b,c] [--json OUT]
    dked-tf evaluate --format hrsc --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--json OUT]
"""

import argparse
import json
import os
import sys

from dked_tf.data.records import InputError
from dked_tf.evaluation.folders import evaluate_folders, write_plots

DESCRIPTION = (
    "Score DOTA Task1 result files (Task1_<class>.txt: `imgname score x1 y1 ... x4 y4`) against "
    "DOTA labelTxt or HRSC2016 XML ground truth, with the DOTA devkit's Task1 semantics (polygon "
    "IoU > 0.5, greedy by descending score, difficult objects ignored, VOC07 11-point or VOC12 "
    "area AP, mAP over the class list). Prints a per-class table."
)


def add_arguments(parser):
    parser.add_argument(
        "--format",
        choices=("dota", "hrsc"),
        required=True,
        help="ground-truth format: DOTA labelTxt (*.txt) or HRSC2016 XML",
    )
    parser.add_argument("--gt-dir", required=True, metavar="DIR", help="DOTA labelTxt/ or HRSC2016 Annotations/ folder")
    parser.add_argument(
        "--det-dir", required=True, metavar="DIR", help="folder of Task1_<class>.txt files (HRSC2016: Task1_ship.txt)"
    )
    parser.add_argument(
        "--imageset", metavar="FILE", default=None, help="image ids, one per line (default: every ground-truth file)"
    )
    parser.add_argument(
        "--metric",
        choices=("voc07", "voc12"),
        default="voc07",
        help="VOC07 11-point AP (the devkit's) or VOC12 area AP",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="dota1.0, dota1.5, dota2.0 or a comma-separated list (default: dota1.0 for DOTA, ship for HRSC2016)",
    )
    parser.add_argument(
        "--json", metavar="OUT", default=None, help='write {"mAP", "metric", "per_class", "num_gt", "num_det"} as JSON'
    )
    parser.add_argument(
        "--plots",
        metavar="DIR",
        default=None,
        help="write pr_curves.png and detection overlays (ground truth green, "
        "detections orange) of images found next to the ground truth",
    )
    parser.add_argument("--max-overlays", type=int, default=10, help="at most this many overlay images with --plots")
    parser.add_argument(
        "--overlay-score", type=float, default=0.3, help="detections below this score are not drawn in overlays"
    )
    parser.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop at the first bad input (file and line named); --no-strict skips "
        "bad lines/files and reports how many",
    )
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="IoU threshold of a match")
    parser.add_argument(
        "--comparison", choices=(">", ">="), default=">", help="match when IoU > threshold (the devkit) or >="
    )
    parser.add_argument(
        "--difficult",
        choices=("ignore", "count"),
        default=None,
        help="difficult objects: ignore (devkit v1.0) or count as positives "
        "(devkit v1.5 script, mmrotate). Default: count for --classes "
        "dota1.5, else ignore",
    )


def run(args):
    try:
        result, context = evaluate_folders(
            args.format,
            args.gt_dir,
            args.det_dir,
            imageset=args.imageset,
            metric=args.metric,
            classes=args.classes,
            strict=args.strict,
            iou_threshold=args.iou_threshold,
            comparison=args.comparison,
            difficult=args.difficult,
        )
    except (InputError, OSError) as error:
        print(f"dked-tf evaluate: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # from the evaluator: names the class / image / row
        print(f"dked-tf evaluate: error: {error}", file=sys.stderr)
        return 2
    truths = context["truths"]
    print(f"{len(truths)} images, {len(context['class_names'])} classes, {sum(result.num_det.values())} detections")
    if context["missing"]:
        print(f"note: no result file for {len(context['missing'])} class(es) (AP 0): {', '.join(context['missing'])}")
    if context["other_classes"]:
        print(
            f"note: ground-truth objects of classes outside the class list are ignored: "
            f"{', '.join(context['other_classes'][:10])}"
        )
    summary = context["problems"].summary()
    if summary:
        print(summary)
    print(result.format_table())
    if args.json:
        payload = result.to_dict()
        payload = {key: payload[key] for key in ("mAP", "metric", "per_class", "num_gt", "num_det")}
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"written {args.json}")
    if args.plots:
        written = write_plots(
            args.plots,
            result,
            truths,
            context["detections"],
            context["class_names"],
            args.gt_dir,
            context["image_paths"],
            args.max_overlays,
            args.overlay_score,
        )
        print(f"written {len(written)} plot(s) to {args.plots}")
    return 0
