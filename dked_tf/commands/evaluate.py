"""`dked-tf evaluate`: score DOTA Task1 result files against DOTA labelTxt or HRSC2016 XML ground
truth with the DOTA devkit's semantics (see dked_tf.evaluation.metrics).

    dked-tf evaluate --format dota --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--classes dota1.0|dota1.5|dota2.0|a,b,c] [--json OUT]
    dked-tf evaluate --format hrsc --gt-dir DIR --det-dir DIR [--imageset FILE]
        [--metric voc07|voc12] [--json OUT]
"""

import glob
import json
import math
import os
import sys

import numpy as np

DESCRIPTION = (
    "Score DOTA Task1 result files (Task1_<class>.txt: `imgname score x1 y1 ... x4 y4`) against "
    "DOTA labelTxt or HRSC2016 XML ground truth, with the DOTA devkit's Task1 semantics (polygon "
    "IoU > 0.5, greedy by descending score, difficult objects ignored, VOC07 11-point or VOC12 "
    "area AP, mAP over the class list). Prints a per-class table."
)

from dked_tf.data.dota import DOTA_CLASSES, IMAGE_EXTENSIONS  # noqa: E402  (numpy-only module)

HRSC_CLASSES = ("ship",)
TASK1_PREFIX = "Task1_"


class InputError(ValueError):
    """Bad evaluation input; the message names the file (and line)."""


class Problems:
    """Raises the first problem (strict) or counts problems of each kind (not strict)."""

    def __init__(self, strict):
        self.strict = strict
        self.counts = {}
        self.examples = []

    def report(self, kind, message):
        if self.strict:
            raise InputError(message)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def summary(self):
        if not self.counts:
            return ""
        total = sum(self.counts.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        lines = [f"skipped {total} input lines/files (--no-strict): {kinds}"]
        lines += [f"  e.g. {message}" for message in self.examples]
        return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--format", choices=("dota", "hrsc"), required=True,
                        help="ground-truth format: DOTA labelTxt (*.txt) or HRSC2016 XML")
    parser.add_argument("--gt-dir", required=True, metavar="DIR",
                        help="DOTA labelTxt/ or HRSC2016 Annotations/ folder")
    parser.add_argument("--det-dir", required=True, metavar="DIR",
                        help="folder of Task1_<class>.txt files (HRSC2016: Task1_ship.txt)")
    parser.add_argument("--imageset", metavar="FILE", default=None,
                        help="image ids, one per line (default: every ground-truth file)")
    parser.add_argument("--metric", choices=("voc07", "voc12"), default="voc07",
                        help="VOC07 11-point AP (the devkit's) or VOC12 area AP")
    parser.add_argument("--classes", default=None,
                        help="dota1.0, dota1.5, dota2.0 or a comma-separated list "
                             "(default: dota1.0 for DOTA, ship for HRSC2016)")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help='write {"mAP", "metric", "per_class", "num_gt", "num_det"} as JSON')
    parser.add_argument("--plots", metavar="DIR", default=None,
                        help="write pr_curves.png and detection overlays (ground truth green, "
                             "detections orange) of images found next to the ground truth")
    parser.add_argument("--max-overlays", type=int, default=10,
                        help="at most this many overlay images with --plots")
    parser.add_argument("--overlay-score", type=float, default=0.3,
                        help="detections below this score are not drawn in overlays")
    parser.add_argument("--strict", action=argparse_boolean(), default=True,
                        help="stop at the first bad input (file and line named); --no-strict skips "
                             "bad lines/files and reports how many")
    parser.add_argument("--iou-threshold", type=float, default=0.5,
                        help="IoU threshold of a match")
    parser.add_argument("--comparison", choices=(">", ">="), default=">",
                        help="match when IoU > threshold (the devkit) or >=")
    parser.add_argument("--difficult", choices=("ignore", "count"), default=None,
                        help="difficult objects: ignore (devkit v1.0) or count as positives "
                             "(devkit v1.5 script, mmrotate). Default: count for --classes "
                             "dota1.5, else ignore")


def argparse_boolean():
    import argparse

    return argparse.BooleanOptionalAction


# ----------------------------------------------------------------------------------------------
# Readers (float64, devkit token rules)


def resolve_classes(fmt, classes):
    if classes is None:
        return DOTA_CLASSES["dota1.0"] if fmt == "dota" else HRSC_CLASSES
    if classes in DOTA_CLASSES:
        return DOTA_CLASSES[classes]
    names = tuple(name.strip() for name in classes.split(",") if name.strip())
    if not names:
        raise InputError(f"--classes {classes!r} names no class")
    if len(set(names)) != len(names):
        raise InputError(f"--classes {classes!r} has duplicate names")
    return names


def read_imageset(path):
    """Image ids, one per line (blank lines skipped, duplicates rejected)."""
    ids, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            image_id = line.strip()
            if not image_id:
                continue
            if image_id in seen:
                raise InputError(f"{path}:{number}: image id {image_id!r} repeats line "
                                 f"{seen[image_id]}")
            seen[image_id] = number
            ids.append(image_id)
    return ids


def _float(token):
    try:
        return float(token)
    except ValueError:
        return None


def _parse_float_rows(rows):
    """rows: list of equally long lists of number strings -> float64 [len(rows), K], or None if
    one does not parse."""
    if not rows:
        return np.zeros((0, 0))
    try:
        values = list(map(float, [token for row in rows for token in row]))
    except ValueError:
        return None
    return np.array(values, np.float64).reshape(len(rows), -1)


def read_dota_labeltxt(path, problems):
    """One DOTA labelTxt file -> (polygons float64 [N, 8], class names [N], difficult bool [N]).

    Devkit rules: lines with fewer than 9 tokens (headers such as `gsd:0.5`) are skipped; 9 tokens
    -> not difficult; 10 -> difficult = int(token 10) != 0. Lines with more than 10 tokens or a
    bad number are errors (the devkit crashes on them).
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    numbers, rows = [], []
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if len(tokens) < 9:
            continue
        if len(tokens) > 10:
            problems.report("bad ground-truth lines",
                            f"{path}:{number}: {len(tokens)} fields, expected 'x1 y1 ... x4 y4 "
                            f"class [difficult]' (9 or 10)")
            continue
        numbers.append(number)
        rows.append(tokens)
    coords = _parse_float_rows([t[:8] for t in rows])
    flags = None
    if coords is not None and np.isfinite(coords).all():
        try:
            flags = [int(t[9]) if len(t) == 10 else 0 for t in rows]
        except ValueError:
            flags = None
    if flags is None:  # a bad value somewhere: find and report it line by line
        keep_rows, keep_coords, flags = [], [], []
        for number, tokens in zip(numbers, rows):
            where = f"{path}:{number}"
            values = [_float(t) for t in tokens[:8]]
            if any(v is None or not math.isfinite(v) for v in values):
                problems.report("bad ground-truth lines",
                                f"{where}: the 8 coordinates must be finite numbers: "
                                f"{' '.join(tokens[:8])}")
                continue
            try:
                flag = int(tokens[9]) if len(tokens) == 10 else 0
            except ValueError:
                problems.report("bad ground-truth lines",
                                f"{where}: difficult must be an integer, got {tokens[9]!r}")
                continue
            keep_rows.append(tokens)
            keep_coords.append(values)
            flags.append(flag)
        rows, coords = keep_rows, np.asarray(keep_coords, np.float64).reshape(-1, 8)
    return (coords.reshape(len(rows), 8), [t[8] for t in rows],
            np.asarray(flags, np.int64).reshape(-1) != 0)


def load_dota_ground_truth(gt_dir, image_ids, problems):
    """dict image_id -> (polygons [N, 8] float64, class names, difficult) for DOTA labelTxt."""
    truths = {}
    for image_id in image_ids:
        path = os.path.join(gt_dir, image_id + ".txt")
        if not os.path.isfile(path):
            problems.report("missing ground-truth files", f"{path}: ground truth of image "
                            f"{image_id!r} is missing")
            continue
        truths[image_id] = read_dota_labeltxt(path, problems)
    return truths


def load_hrsc_ground_truth(gt_dir, image_ids, problems):
    """dict image_id -> (polygons [N, 8] float64, ["ship"] * N, difficult) from HRSC2016 XML
    (polygons from the float64 mbox fields, single class ship)."""
    from dked_tf.data.hrsc import read_hrsc_xml
    from dked_tf.data.records import AnnotationError
    from dked_tf.ops.obb import mbox_to_poly

    truths, paths = {}, {}
    for image_id in image_ids:
        path = os.path.join(gt_dir, image_id + ".xml")
        if not os.path.isfile(path):
            problems.report("missing ground-truth files", f"{path}: ground truth of image "
                            f"{image_id!r} is missing")
            continue
        try:
            record = read_hrsc_xml(path, class_mode="ship", check_images=False)
        except AnnotationError as error:
            problems.report("bad ground-truth files", str(error))
            continue
        mbox = np.asarray(record.extra.get("mbox", np.zeros((0, 5))), np.float64).reshape(-1, 5)
        polygons = (np.asarray(mbox_to_poly(mbox), np.float64).reshape(-1, 8) if len(mbox)
                    else np.asarray(record.polygons, np.float64))
        truths[image_id] = (polygons, ["ship"] * len(polygons), np.asarray(record.difficult, bool))
        paths[image_id] = record.image_path
    return truths, paths


def _read_task1_fast(text, image_ids):
    """The common case in C speed: every non-blank line has exactly 10 fields, finite numbers
    and a known image. Returns the columnar dict, or None to fall back to the line-by-line
    reader (which names the offending line)."""
    import warnings

    tokens = text.split()
    lines = text.splitlines()
    count = sum(1 for line in lines if line and not line.isspace())
    if count == 0:
        return {"image_ids": [], "scores": np.zeros(0), "polygons": np.zeros((0, 8))}
    if len(tokens) != 10 * count:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # every line needs a 10th field to parse, and the token total then leaves exactly 10
            values = np.loadtxt(lines, dtype=np.float64, usecols=range(1, 10), comments=None,
                                ndmin=2)
    except ValueError:
        return None
    if values.shape != (count, 9) or not np.isfinite(values).all():
        return None
    names = tokens[0::10]
    if not all(name in image_ids for name in names):
        return None
    return {"image_ids": names, "scores": values[:, 0].copy(), "polygons": values[:, 1:].copy()}


def read_task1_file(path, class_name, image_ids, problems):
    """One Task1 file -> {"image_ids": [D], "scores": float64 [D], "polygons": float64 [D, 8]}
    in file order (the columnar detections form of evaluate_detections).

    Each line: `imgname score x1 y1 x2 y2 x3 y3 x4 y4` (10 fields, finite numbers); the image
    must be in `image_ids`. Blank lines are skipped.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fast = _read_task1_fast(text, image_ids)
    if fast is not None:
        return fast
    lines = text.splitlines()
    numbers, rows = [], []
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 10:
            problems.report("bad detection lines",
                            f"{path}:{number}: {len(tokens)} fields, expected 10 "
                            f"('imgname score x1 y1 x2 y2 x3 y3 x4 y4')")
            continue
        numbers.append(number)
        rows.append(tokens)
    values = _parse_float_rows([t[1:] for t in rows])
    finite = None if values is None else np.isfinite(values).all(axis=1)
    if values is None or not finite.all():
        keep_numbers, keep_rows, keep_values = [], [], []
        for number, tokens in zip(numbers, rows):
            parsed = [_float(t) for t in tokens[1:]]
            if any(v is None or not math.isfinite(v) for v in parsed):
                problems.report("bad detection lines",
                                f"{path}:{number}: score and coordinates must be finite "
                                f"numbers: {' '.join(tokens[1:])}")
                continue
            keep_numbers.append(number)
            keep_rows.append(tokens)
            keep_values.append(parsed)
        numbers, rows = keep_numbers, keep_rows
        values = np.asarray(keep_values, np.float64).reshape(-1, 9)
    values = values.reshape(len(rows), 9)
    names = [t[0] for t in rows]
    known = np.fromiter((name in image_ids for name in names), bool, len(names))
    if not known.all():
        for k in np.flatnonzero(~known):
            problems.report("detections of images outside the image set",
                            f"{path}:{numbers[k]}: image {names[k]!r} is not in the image set")
        names = [name for name, ok in zip(names, known) if ok]
        values = values[known]
    return {"image_ids": names, "scores": values[:, 0].copy(),
            "polygons": values[:, 1:].copy()}


def load_detections(det_dir, class_names, image_ids, problems):
    """dict class -> detections from `det_dir/Task1_<class>.txt`; other Task1 files are errors
    (their class is not in the class list). A missing class file means no detections."""
    if not os.path.isdir(det_dir):
        raise InputError(f"{det_dir}: detection folder does not exist")
    image_ids = set(image_ids)
    known = set(class_names)
    for path in sorted(glob.glob(os.path.join(det_dir, TASK1_PREFIX + "*.txt"))):
        name = os.path.basename(path)[len(TASK1_PREFIX):-len(".txt")]
        if name not in known:
            problems.report("result files of classes outside the class list",
                            f"{path}: class {name!r} is not in the class list "
                            f"({', '.join(class_names)})")
    detections, missing = {}, []
    for name in class_names:
        path = os.path.join(det_dir, f"{TASK1_PREFIX}{name}.txt")
        if not os.path.isfile(path):
            missing.append(name)
            detections[name] = {"image_ids": [], "scores": np.zeros(0), "polygons": np.zeros((0, 8))}
            continue
        detections[name] = read_task1_file(path, name, image_ids, problems)
    return detections, missing


def _list_ids(gt_dir, extension):
    if not os.path.isdir(gt_dir):
        raise InputError(f"{gt_dir}: ground-truth folder does not exist")
    return sorted(os.path.splitext(f)[0] for f in os.listdir(gt_dir)
                  if f.lower().endswith(extension))


# ----------------------------------------------------------------------------------------------
# Plots


def _find_image(gt_dir, image_id):
    parent = os.path.dirname(os.path.abspath(gt_dir))
    for folder in (os.path.join(parent, "images"), os.path.join(parent, "AllImages"), gt_dir):
        for extension in IMAGE_EXTENSIONS:
            path = os.path.join(folder, image_id + extension)
            if os.path.isfile(path):
                return path
    return None


def write_plots(out_dir, result, truths, detections, class_names, gt_dir, image_paths,
                max_overlays, overlay_score):
    """pr_curves.png and overlays/<image_id>.png. Returns the list of written paths."""
    import cv2

    from dked_tf import visualize

    os.makedirs(out_dir, exist_ok=True)
    written = [visualize.plot_pr_curves(result.pr_curves, os.path.join(out_dir, "pr_curves.png"),
                                        ap=result.per_class,
                                        title=f"{result.metric} mAP = {result.map:.4f}")]
    per_image = {}
    for name in class_names:
        columns = detections.get(name) or {"image_ids": [], "scores": [], "polygons": []}
        for image_id, score, poly in zip(columns["image_ids"], columns["scores"],
                                         columns["polygons"]):
            if score >= overlay_score:
                per_image.setdefault(image_id, []).append((score, poly, name))
    for image_id in list(truths)[:max(0, max_overlays)]:
        path = image_paths.get(image_id) or _find_image(gt_dir, image_id)
        image = cv2.imread(path, cv2.IMREAD_COLOR) if path and os.path.isfile(path) else None
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        gt_polys, gt_names, _ = truths[image_id]
        dets = per_image.get(image_id, [])
        det_polys = np.asarray([d[1] for d in dets], np.float64).reshape(-1, 8)
        canvas = visualize.draw_detections_vs_gt(
            image, gt_polys, det_polys, [d[0] for d in dets],
            labels=[d[2] for d in dets] if len(class_names) > 1 else None)
        written.append(visualize.save_image(os.path.join(out_dir, "overlays", image_id + ".png"),
                                            canvas))
    return written


# ----------------------------------------------------------------------------------------------


def evaluate_folders(fmt, gt_dir, det_dir, imageset=None, metric="voc07", classes=None,
                     strict=True, iou_threshold=0.5, comparison=">", difficult=None):
    """Reads the folders and evaluates. Returns (EvalResult, context dict) or raises InputError."""
    from dked_tf.evaluation.metrics import evaluate_detections

    class_names = resolve_classes(fmt, classes)
    if difficult is None:
        difficult = "count" if classes == "dota1.5" else "ignore"
    problems = Problems(strict)
    extension = ".txt" if fmt == "dota" else ".xml"
    if imageset:
        if not os.path.isfile(imageset):
            raise InputError(f"{imageset}: image set file does not exist")
        image_ids = read_imageset(imageset)
        if not os.path.isdir(gt_dir):
            raise InputError(f"{gt_dir}: ground-truth folder does not exist")
    else:
        image_ids = _list_ids(gt_dir, extension)
    if not image_ids:
        raise InputError(f"no images to evaluate (no {extension} files in {gt_dir}"
                         + (f" / no ids in {imageset}" if imageset else "") + ")")
    image_paths = {}
    if fmt == "dota":
        truths = load_dota_ground_truth(gt_dir, image_ids, problems)
    else:
        truths, image_paths = load_hrsc_ground_truth(gt_dir, image_ids, problems)
    detections, missing = load_detections(det_dir, class_names, set(truths), problems)
    result = evaluate_detections(detections, truths, class_names, metric=metric,
                                 iou_threshold=iou_threshold, comparison=comparison,
                                 difficult=difficult)
    other = sorted({n for _, names, _ in truths.values() for n in names} - set(class_names))
    context = {"problems": problems, "missing": missing, "truths": truths,
               "detections": detections, "class_names": class_names,
               "image_paths": image_paths, "other_classes": other}
    return result, context


def run(args):
    try:
        result, context = evaluate_folders(
            args.format, args.gt_dir, args.det_dir, imageset=args.imageset, metric=args.metric,
            classes=args.classes, strict=args.strict, iou_threshold=args.iou_threshold,
            comparison=args.comparison, difficult=args.difficult)
    except (InputError, OSError) as error:
        print(f"dked-tf evaluate: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # from the evaluator: names the class / image / row
        print(f"dked-tf evaluate: error: {error}", file=sys.stderr)
        return 2
    truths = context["truths"]
    print(f"{len(truths)} images, {len(context['class_names'])} classes, "
          f"{sum(result.num_det.values())} detections")
    if context["missing"]:
        print(f"note: no result file for {len(context['missing'])} class(es) (AP 0): "
              f"{', '.join(context['missing'])}")
    if context["other_classes"]:
        print(f"note: ground-truth objects of classes outside the class list are ignored: "
              f"{', '.join(context['other_classes'][:10])}")
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
        written = write_plots(args.plots, result, truths, context["detections"],
                              context["class_names"], args.gt_dir, context["image_paths"],
                              args.max_overlays, args.overlay_score)
        print(f"written {len(written)} plot(s) to {args.plots}")
    return 0
