"""Scoring folders of files: DOTA Task1 result files against DOTA labelTxt or HRSC2016 XML
ground truth with the DOTA devkit's semantics or COCO-style AP (`evaluate_folders`, what `dked-tf evaluate`
runs), and the plots of such an evaluation (`write_plots`: PR curves, confusion matrices, overlays).

Ground truth is read with the devkit's token rules (`dked_tf.data.dota.parse_dota_label(...,
devkit=True)`) in float64; HRSC2016 polygons come from the float64 `mbox` fields. Bad input
(wrong number of fields, bad numbers, bytes that are not UTF-8, ...) raises
`InputError`/`AnnotationError` naming the file and line, or, with strict=False, is skipped and
counted in a `Problems` object (`context["problems"]`). Ground-truth polygons that are no
region (zero area, self-intersecting) are kept, as the devkit keeps them, and counted
(`context["degenerate_gt"]`: counts and the first file:line).
"""

import glob
import os

import cv2
import numpy as np

from dked_tf import visualize
from dked_tf.data.dota import IMAGE_EXTENSIONS, TASK1_PREFIX, parse_dota_label, read_task1_file, resolve_classes
from dked_tf.data.hrsc import class_names_for, read_hrsc_xml
from dked_tf.data.records import (
    PROBLEM_NAMES,
    AnnotationError,
    InputError,
    Problems,
    polygon_problems,
    read_imageset,
)
from dked_tf.evaluation.coco import evaluate_coco
from dked_tf.evaluation.confusion import ULTRALYTICS_SCORE_THRESHOLD, confusion_matrix
from dked_tf.evaluation.metrics import evaluate_detections
from dked_tf.files import write_json
from dked_tf.ops.iou import VALID
from dked_tf.ops.obb import mbox_to_poly


def load_dota_ground_truth(gt_dir, image_ids, problems, locations=None):
    """dict image_id -> (polygons float64 [N, 8] pixels, class names [N], difficult bool [N])
    from `gt_dir/<image_id>.txt` (DOTA labelTxt, devkit rules). A missing file is a problem
    ("missing ground-truth files"; not strict: the image is left out). locations: a dict to
    fill with image_id -> (file, line numbers int [N])."""
    truths = {}
    for image_id in image_ids:
        path = os.path.join(gt_dir, image_id + ".txt")
        if not os.path.isfile(path):
            problems.report("missing ground-truth files", f"{path}: ground truth of image {image_id!r} is missing")
            continue
        parsed = parse_dota_label(path, devkit=True, problems=problems)
        truths[image_id] = (parsed["polygons"], parsed["names"], parsed["difficult_value"] != 0)
        if locations is not None:
            locations[image_id] = (path, parsed["lines"])
    return truths


def degenerate_ground_truth(truths, class_names, locations):
    """Ground-truth polygons of the evaluated classes that are no region: {"counts": kind ->
    count, "first": "file:line (kind)" or ""} (the devkit keeps them: positives no detection can
    match)."""
    counts, first = {}, ""
    wanted = set(class_names)
    for image_id, (polygons, names, _) in truths.items():
        evaluated = np.asarray([name in wanted for name in names], bool)
        codes = polygon_problems(polygons) if len(polygons) else np.zeros(0, np.int8)
        bad = np.flatnonzero((codes != VALID) & evaluated)
        for k in bad:
            kind = PROBLEM_NAMES[int(codes[k])]
            counts[kind] = counts.get(kind, 0) + 1
        if len(bad) and not first:
            path, lines = locations.get(image_id, (image_id, None))
            where = f"{path}:{int(lines[bad[0]])}" if lines is not None else f"{path} (object {int(bad[0]) + 1})"
            first = f"{where} ({PROBLEM_NAMES[int(codes[bad[0]])]})"
    return {"counts": counts, "first": first}


def load_hrsc_ground_truth(gt_dir, image_ids, problems, locations=None):
    """(dict image_id -> (polygons float64 [N, 8] pixels, ["ship"] * N, difficult bool [N]),
    dict image_id -> image path) from `gt_dir/<image_id>.xml` (HRSC2016; polygons from the
    float64 mbox fields, single class ship). Missing or bad files are problems. locations: a
    dict to fill with image_id -> (file, line numbers int [N])."""
    truths, paths = {}, {}
    for image_id in image_ids:
        path = os.path.join(gt_dir, image_id + ".xml")
        if not os.path.isfile(path):
            problems.report("missing ground-truth files", f"{path}: ground truth of image {image_id!r} is missing")
            continue
        try:
            record = read_hrsc_xml(path, class_mode="ship", check_images=False)
        except AnnotationError as error:
            problems.report("bad ground-truth files", str(error))
            continue
        mbox = np.asarray(record.extra.get("mbox", np.zeros((0, 5))), np.float64).reshape(-1, 5)
        polygons = (
            np.asarray(mbox_to_poly(mbox), np.float64).reshape(-1, 8)
            if len(mbox)
            else np.asarray(record.polygons, np.float64)
        )
        truths[image_id] = (polygons, ["ship"] * len(polygons), np.asarray(record.difficult, bool))
        paths[image_id] = record.image_path
        if locations is not None:
            locations[image_id] = (path, record.extra.get("line"))
    return truths, paths


def load_detections(det_dir, class_names, image_ids, problems):
    """(dict class -> columnar detections {"image_ids", "scores" float64 [D], "polygons"
    float64 [D, 8]} from `det_dir/Task1_<class>.txt`, classes without a file). Task1 files of
    classes outside `class_names` are problems; a missing class file means no detections."""
    if not os.path.isdir(det_dir):
        raise InputError(f"{det_dir}: detection folder does not exist")
    image_ids = set(image_ids)
    known = set(class_names)
    for path in sorted(glob.glob(os.path.join(det_dir, TASK1_PREFIX + "*.txt"))):
        name = os.path.basename(path)[len(TASK1_PREFIX) : -len(".txt")]
        if name not in known:
            problems.report(
                "result files of classes outside the class list",
                f"{path}: class {name!r} is not in the class list ({', '.join(class_names)})",
            )
    detections, missing = {}, []
    for name in class_names:
        path = os.path.join(det_dir, f"{TASK1_PREFIX}{name}.txt")
        if not os.path.isfile(path):
            missing.append(name)
            detections[name] = {"image_ids": [], "scores": np.zeros(0), "polygons": np.zeros((0, 8))}
            continue
        detections[name] = read_task1_file(path, image_ids, problems, devkit=True)
    return detections, missing


def _list_ids(gt_dir, extension):
    if not os.path.isdir(gt_dir):
        raise InputError(f"{gt_dir}: ground-truth folder does not exist")
    return sorted(os.path.splitext(f)[0] for f in os.listdir(gt_dir) if f.lower().endswith(extension))


def evaluate_folders(
    fmt,
    gt_dir,
    det_dir,
    imageset=None,
    metric="voc07",
    classes=None,
    strict=True,
    iou_threshold=0.5,
    comparison=">",
    difficult=None,
):
    """Reads the folders and evaluates.

    fmt: "dota" (gt_dir holds labelTxt files) or "hrsc" (HRSC2016 XML files).
    det_dir: Task1_<class>.txt files. imageset: a file of image ids (default: every ground-truth
    file). metric: "voc07", "voc12" or "coco" (`dked_tf.evaluation.coco`: AP50:95, AP50, AP75;
    iou_threshold and comparison do not apply). classes: None (dota1.0 for DOTA, ship for
    HRSC2016), a DOTA list name or comma-separated names. difficult: "ignore" | "count" | None
    (count for classes="dota1.5"); with "coco", ignored difficult objects are crowd regions.
    Returns (EvalResult or CocoResult, context dict with problems, missing, truths, detections, class_names,
    image_paths, other_classes, degenerate_gt) or raises InputError (an AnnotationError) naming
    the bad input.
    """
    class_names = resolve_classes(
        classes, default="dota1.0" if fmt == "dota" else class_names_for("ship"), comma_list=True
    )
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
        raise InputError(
            f"no images to evaluate (no {extension} files in {gt_dir}"
            + (f" / no ids in {imageset}" if imageset else "")
            + ")"
        )
    image_paths, locations = {}, {}
    if fmt == "dota":
        truths = load_dota_ground_truth(gt_dir, image_ids, problems, locations)
    else:
        truths, image_paths = load_hrsc_ground_truth(gt_dir, image_ids, problems, locations)
    detections, missing = load_detections(det_dir, class_names, set(truths), problems)
    if metric == "coco":
        result = evaluate_coco(detections, truths, class_names, difficult=difficult)
    else:
        result = evaluate_detections(
            detections,
            truths,
            class_names,
            metric=metric,
            iou_threshold=iou_threshold,
            comparison=comparison,
            difficult=difficult,
        )
    other = sorted({n for _, names, _ in truths.values() for n in names} - set(class_names))
    context = {
        "problems": problems,
        "missing": missing,
        "truths": truths,
        "detections": detections,
        "class_names": class_names,
        "image_paths": image_paths,
        "other_classes": other,
        "degenerate_gt": degenerate_ground_truth(truths, class_names, locations),
    }
    return result, context


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


def plot_confusion(out_dir, result, truths, detections, class_names, score_threshold=ULTRALYTICS_SCORE_THRESHOLD):
    """confusion_matrix.png (counts), confusion_matrix_normalized.png (shares of each true
    class) and confusion_matrix.json (`ConfusionMatrix.to_dict`) of an evaluation: detections
    scoring above score_threshold matched at the evaluation's IoU threshold (VOC:
    result.iou_threshold with result.comparison; coco: IoU >= 0.5), difficult objects as the
    evaluation treats them (`dked_tf.evaluation.confusion`).
    Returns (ConfusionMatrix, written paths)."""
    if result.metric == "coco":
        iou_threshold, comparison = 0.5, ">="
    else:
        iou_threshold, comparison = result.iou_threshold, result.comparison
    matrix = confusion_matrix(
        detections,
        truths,
        class_names,
        iou_threshold=iou_threshold,
        comparison=comparison,
        score_threshold=score_threshold,
        difficult=result.difficult,
    )
    title = f"IoU {comparison} {iou_threshold:g}, score > {score_threshold:g}"
    written = [
        visualize.plot_confusion_matrix(
            matrix.matrix, matrix.labels, os.path.join(out_dir, "confusion_matrix.png"), title=title
        ),
        visualize.plot_confusion_matrix(
            matrix.matrix,
            matrix.labels,
            os.path.join(out_dir, "confusion_matrix_normalized.png"),
            normalize=True,
            title=f"{title} (columns sum to 1)",
        ),
        write_json(os.path.join(out_dir, "confusion_matrix.json"), matrix.to_dict()),
    ]
    return matrix, written


def write_plots(
    out_dir,
    result,
    truths,
    detections,
    class_names,
    gt_dir,
    image_paths,
    max_overlays,
    overlay_score,
    matrix_score=ULTRALYTICS_SCORE_THRESHOLD,
):
    """pr_curves.png, the confusion matrices (`plot_confusion`, detections scoring above
    matrix_score) and overlays/<image_id>.png (ground truth green, detections with score >=
    overlay_score orange) of the first `max_overlays` images found next to the ground truth
    (`<gt_dir>/../images`, `../AllImages`, gt_dir) or in image_paths. Returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = [
        visualize.plot_pr_curves(
            result.pr_curves,
            os.path.join(out_dir, "pr_curves.png"),
            ap=result.per_class,
            title=f"{result.metric} mAP = {result.map:.4f}",
        )
    ]
    written += plot_confusion(out_dir, result, truths, detections, class_names, matrix_score)[1]
    per_image = {}
    for name in class_names:
        columns = detections.get(name) or {"image_ids": [], "scores": [], "polygons": []}
        for image_id, score, poly in zip(columns["image_ids"], columns["scores"], columns["polygons"]):
            if score >= overlay_score:
                per_image.setdefault(image_id, []).append((score, poly, name))
    for image_id in list(truths)[: max(0, max_overlays)]:
        path = image_paths.get(image_id) or _find_image(gt_dir, image_id)
        image = cv2.imread(path, cv2.IMREAD_COLOR) if path and os.path.isfile(path) else None
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        gt_polys, gt_names, _ = truths[image_id]
        dets = per_image.get(image_id, [])
        det_polys = np.asarray([d[1] for d in dets], np.float64).reshape(-1, 8)
        canvas = visualize.draw_detections_vs_gt(
            image,
            gt_polys,
            det_polys,
            [d[0] for d in dets],
            labels=[d[2] for d in dets] if len(class_names) > 1 else None,
        )
        written.append(visualize.save_image(os.path.join(out_dir, "overlays", image_id + ".png"), canvas))
    return written
