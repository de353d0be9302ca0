"""`dked-tf evaluate`: score DOTA Task1 result files against DOTA labelTxt or HRSC2016 XML ground
truth with the DOTA devkit's semantics (see dked_tf.evaluation.metrics).

    dked-tf evaluate --format dota --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--classes dota1.0|dota1.5|dota2.0|a,b,c] [--json OUT]
    dked-tf evaluate --format hrsc --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--json OUT]
"""

import argparse
import os
import sys

from dked_tf.config import ConfigError
from dked_tf.data.records import AnnotationError
from dked_tf.evaluation.folders import evaluate_folders, write_plots
from dked_tf.files import write_json

DESCRIPTION = (
    "Score DOTA Task1 result files (Task1_<class>.txt: `imgname score x1 y1 ... x4 y4`) against "
    "DOTA labelTxt or HRSC2016 XML ground truth, with the DOTA devkit's Task1 semantics (polygon "
    "IoU > 0.5, greedy by descending score, difficult objects ignored, VOC07 11-point or VOC12 "
    "area AP, mAP over the class list). Prints a per-class table."
)


def iou_threshold(text):
    """argparse type of --iou-threshold: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1]: an IoU threshold is a fraction of overlap")
    return value


def check_writable(path):
    """Raises ConfigError (one line, before any work) when the JSON output `path` cannot be
    written: it is a folder, or its folder cannot be created or written into."""
    if os.path.isdir(path):
        raise ConfigError(f"--json {path}: is a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    probe = os.path.join(folder, f".dked_tf_write_check_{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"--json {path}: cannot write there ({error.strerror or error})") from None


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
        "--json",
        metavar="OUT",
        default=None,
        help='write {"mAP", "metric", "per_class", "num_gt", "num_det"} as JSON '
        "(checked writable before the evaluation starts)",
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
    parser.add_argument("--iou-threshold", type=iou_threshold, default=0.5, help="IoU threshold of a match, in (0, 1]")
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
    """Evaluates and prints the table. Bad input (a file and line named) -> one line on stderr and
    exit code 2 (AnnotationError, ConfigError, OSError)."""
    try:
        if args.json:
            check_writable(args.json)
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
    except (AnnotationError, ConfigError, OSError) as error:
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
    degenerate = context["degenerate_gt"]
    if degenerate["counts"]:
        kinds = ", ".join(f"{count} {kind}" for kind, count in degenerate["counts"].items())
        print(
            f"note: {sum(degenerate['counts'].values())} ground-truth polygons are no region ({kinds}; first: "
            f"{degenerate['first']}); kept as the DOTA devkit keeps them: positives that no detection can match"
        )
    print(result.format_table())
    if args.json:
        payload = result.to_dict()
        payload = {key: payload[key] for key in ("mAP", "metric", "per_class", "num_gt", "num_det")}
        try:
            write_json(args.json, payload)
        except OSError as error:  # the results are printed above; say what was not written
            print(f"dked-tf evaluate: error: could not write {args.json}: {error}", file=sys.stderr)
            return 2
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
