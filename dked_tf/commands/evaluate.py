"""`dked-tf evaluate`: score DOTA Task1 result files against DOTA labelTxt or HRSC2016 XML ground
truth with the DOTA devkit's semantics (see dked_tf.evaluation.metrics) or COCO-style AP50:95 /
AP50 / AP75 (`--metric coco`, see dked_tf.evaluation.coco).

    dked-tf evaluate --format dota --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12|coco] [--classes dota1.0|dota1.5|dota2.0|a,b,c] [--json OUT]
    dked-tf evaluate --format hrsc --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12|coco] [--json OUT]
    ... [--plots DIR [--matrix-score 0.25]]   PR curves, confusion matrices, overlays
"""

import argparse
import os
import sys

from dked_tf.config import ConfigError
from dked_tf.data.records import AnnotationError
from dked_tf.evaluation.confusion import ULTRALYTICS_SCORE_THRESHOLD
from dked_tf.evaluation.folders import evaluate_folders, write_plots
from dked_tf.evaluation.top_ranked import describe, top_ranked
from dked_tf.files import write_json

DESCRIPTION = (
    "Score DOTA Task1 result files (Task1_<class>.txt: `imgname score x1 y1 ... x4 y4`) against "
    "DOTA labelTxt or HRSC2016 XML ground truth, with the DOTA devkit's Task1 semantics (polygon "
    "IoU > 0.5, greedy by descending score, difficult objects ignored, VOC07 11-point or VOC12 "
    "area AP, mAP over the class list), or COCO-style (--metric coco: AP50:95, AP50, AP75 with "
    "pycocotools' matching, polygon IoU, difficult objects as ignored crowd regions). Prints a "
    "per-class table."
)

# --iou-threshold / --comparison when they are not given (VOC metrics only)
VOC_IOU_THRESHOLD = 0.5
VOC_COMPARISON = ">"


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
        choices=("voc07", "voc12", "coco"),
        default="voc07",
        help="VOC07 11-point AP (the devkit's), VOC12 area AP, or coco: AP50:95 (IoU >= 0.50, 0.55 ... 0.95, "
        "101-point AP, at most 100 detections per image and class), AP50 and AP75",
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
        help='write {"mAP", "metric", "per_class", "num_gt", "num_det"} as JSON (coco: also "AP50", "AP75"; '
        '"mAP" and "per_class" are AP50:95) (checked writable before the evaluation starts)',
    )
    parser.add_argument(
        "--plots",
        metavar="DIR",
        default=None,
        help="write pr_curves.png, confusion_matrix.png, confusion_matrix_normalized.png and "
        "confusion_matrix.json (Ultralytics' "
        "layout: rows predicted, columns true, plus background; detections matched one-to-one at the "
        "evaluation's IoU threshold, IoU >= 0.5 for coco) and detection overlays (ground truth green, "
        "detections orange) of images found next to the ground truth",
    )
    parser.add_argument(
        "--matrix-score",
        type=float,
        default=ULTRALYTICS_SCORE_THRESHOLD,
        help="with --plots: detections scoring above this enter the confusion matrix (Ultralytics' conf)",
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
    parser.add_argument(
        "--iou-threshold",
        type=iou_threshold,
        default=None,
        help=f"IoU threshold of a match, in (0, 1] (voc07/voc12; default {VOC_IOU_THRESHOLD})",
    )
    parser.add_argument(
        "--comparison",
        choices=(">", ">="),
        default=None,
        help=f"match when IoU > threshold (the devkit) or >= (voc07/voc12; default {VOC_COMPARISON!r})",
    )
    parser.add_argument(
        "--difficult",
        choices=("ignore", "count"),
        default=None,
        help="difficult objects: ignore (devkit v1.0) or count as positives "
        "(devkit v1.5 script, mmrotate); with --metric coco, ignored difficult objects are "
        "pycocotools' crowd regions. Default: count for --classes dota1.5, else ignore",
    )


def run(args):
    """Evaluates and prints the table. Bad input (a file and line named) -> one line on stderr and
    exit code 2 (AnnotationError, ConfigError, OSError)."""
    try:
        if args.metric == "coco" and (args.iou_threshold is not None or args.comparison is not None):
            raise ConfigError("--iou-threshold and --comparison are for voc07/voc12; coco uses IoU >= 0.50 ... 0.95")
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
            iou_threshold=VOC_IOU_THRESHOLD if args.iou_threshold is None else args.iou_threshold,
            comparison=VOC_COMPARISON if args.comparison is None else args.comparison,
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
        what = "no detections" if args.metric == "coco" else "AP 0"
        print(f"note: no result file for {len(context['missing'])} class(es) ({what}): {', '.join(context['missing'])}")
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
    capped = sum(getattr(result, "capped", {}).values())
    if capped:
        print(f"note: {capped} detections beyond the {result.max_dets} best of their image and class are not scored")
    print(result.format_table())
    if args.metric != "coco":
        line = describe(
            top_ranked(
                context["detections"],
                truths,
                context["class_names"],
                pass_iou=result.iou_threshold,
                comparison=result.comparison,
                difficult=result.difficult,
            )
        )
        if line:
            print(line)
    if args.json:
        payload = result.to_dict()
        keys = ("mAP", "metric", "per_class", "num_gt", "num_det")
        if args.metric == "coco":
            keys = ("metric", "mAP", "AP50", "AP75", "per_class", "num_gt", "num_det")
        payload = {key: payload[key] for key in keys}
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
            matrix_score=args.matrix_score,
        )
        print(f"written {len(written)} plot(s) to {args.plots}")
    return 0
