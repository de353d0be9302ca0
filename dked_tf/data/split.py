"""DOTA tiling (large scenes -> patches) and merging (patch detections -> scene detections).

Follows the DOTA devkit (`ImgSplit`, `ResultMerge`) facts in shared/reference/evaluation.md §1.3:

- the image is first resized by each `rate` (cv2.INTER_CUBIC), polygons scaled alike;
- windows of `patch_size` slide by `patch_size - gap`; the last window of a row/column is moved
  back so it ends at the border (`left = max(W - patch_size, 0)`);
- patches are named `{image_id}__{rate}__{left}___{up}` (rate `1` for 1.0, e.g.
  `P0000__1__0___824`) and zero-padded to patch_size x patch_size (`padding=True`);
- objects: iof = area(object ∩ window) / area(object) (shapely). iof == 1: shifted unchanged.
  0 < iof < 1: the object is clipped to the window; a 5-vertex intersection is reduced to 4 by
  merging the shortest edge (its two vertices replaced by the edge midpoint), more than 5
  vertices -> dropped, fewer than 4 -> dropped; the vertex order is rotated to best fit the
  original; coordinates are clamped to the patch.
  `truncated_policy` decides which cut objects stay and their difficult flag:
    "threshold" (default): kept when iof >= iof_threshold, marked difficult 2 (clipped);
        dropped below the threshold.
    "devkit": every cut object kept; difficult 2 when iof <= iof_threshold, otherwise its
        original flag (DOTA devkit ImgSplit).
    "mmrotate": kept UNCLIPPED when iof >= iof_threshold, difficult 2; dropped below.
- coordinates stay floats (the devkit truncates to int; we keep sub-pixel positions).

Merging (`merge_detections`): patch names are parsed, polygons mapped by (p + (left, up)) / rate,
then class-wise polygon NMS per scene at IoU 0.1 (exact polygon IoU, boxes with IoU > threshold
suppressed, as `ResultMerge`).
"""

import os
import re

import cv2
import numpy as np
import shapely.geometry

from dked_tf.data.dota import read_dota, read_task1, resolve_classes, write_dota_label, write_task1
from dked_tf.data.records import ImageRecord
from dked_tf.ops.nms import rotated_nms
from dked_tf.terminal import progress as terminal_progress

PATCH_NAME = re.compile(r"^(?P<image_id>.+)__(?P<rate>[0-9.]+)__(?P<left>\d+)___(?P<up>\d+)$")


def format_rate(rate):
    rate = float(rate)
    return str(int(rate)) if rate.is_integer() else repr(rate)


def patch_name(image_id, rate, left, up):
    """`P0000__1__0___824` (devkit naming: 2 then 3 underscores)."""
    return f"{image_id}__{format_rate(rate)}__{int(left)}___{int(up)}"


def parse_patch_name(name):
    """'P0000__1__0___824' -> ('P0000', 1.0, 0, 824). Raises ValueError for other names."""
    base = os.path.splitext(os.path.basename(name))[0] if name.endswith((".png", ".jpg", ".txt")) else name
    match = PATCH_NAME.match(base)
    if not match:
        raise ValueError(f"{name!r} is not a patch name like 'P0000__1__0___824'")
    return match["image_id"], float(match["rate"]), int(match["left"]), int(match["up"])


def window_origins(length, patch_size, gap):
    """Left (or top) coordinates of the windows along one axis, devkit rule."""
    if gap >= patch_size:
        raise ValueError(f"gap {gap} must be smaller than patch_size {patch_size}")
    slide = patch_size - gap
    origins, start = [], 0
    while True:
        if start + patch_size >= length:
            origins.append(max(length - patch_size, 0))
            break
        origins.append(start)
        start += slide
    return origins


def tile_windows(width, height, tile_size, overlap):
    """Tiles of side `tile_size` (pixels, > 0) covering a width x height image, row by row:
    list of (x, y, w, h) pixels, w = min(tile_size, width - x) (likewise h). Neighbours share at
    least `overlap` pixels (an overlap >= tile_size steps by 1 pixel); the last tile of a row or
    column ends at the border (`window_origins`, the devkit rule)."""
    gap = min(overlap, tile_size - 1)
    return [
        (x, y, min(tile_size, width - x), min(tile_size, height - y))
        for y in window_origins(height, tile_size, gap)
        for x in window_origins(width, tile_size, gap)
    ]


def _poly5_to_poly4(points):
    """Merges the shortest edge of a pentagon: its two vertices become the edge midpoint."""
    points = np.asarray(points, np.float64)
    nxt = np.roll(points, -1, axis=0)
    lengths = np.linalg.norm(nxt - points, axis=1)
    i = int(np.argmin(lengths))
    j = (i + 1) % 5
    mid = (points[i] + points[j]) / 2
    out = []
    for k in range(5):
        if k == i:
            out.append(mid)
        elif k != j:
            out.append(points[k])
    return np.array(out)


def _best_order(points4, reference4):
    """Cyclic rotation of points4 [4, 2] closest (sum of vertex distances) to reference4."""
    best, best_cost = points4, np.inf
    for shift in range(4):
        cand = np.roll(points4, -shift, axis=0)
        cost = np.linalg.norm(cand - reference4, axis=1).sum()
        if cost < best_cost:
            best, best_cost = cand, cost
    return best


def _clip_object(poly, window_poly, shapely):
    """Intersection of the object with the window as [4, 2] points, or None when the devkit
    drops it (fewer than 4 or more than 5 vertices)."""
    inter = poly.intersection(window_poly)
    if inter.is_empty or inter.geom_type != "Polygon":
        if inter.geom_type in ("MultiPolygon", "GeometryCollection"):
            polys = [g for g in getattr(inter, "geoms", []) if g.geom_type == "Polygon"]
            if not polys:
                return None
            inter = max(polys, key=lambda g: g.area)
        else:
            return None
    inter = shapely.geometry.polygon.orient(inter, sign=1)
    inter = inter.simplify(1e-9)
    points = np.asarray(inter.exterior.coords)[:-1]
    if len(points) < 4 or len(points) > 5:
        return None
    if len(points) == 5:
        points = _poly5_to_poly4(points)
    return points


def split_record(record, patch_size=1024, gap=200, rate=1.0, iof_threshold=0.7, truncated_policy="threshold"):
    """Patch annotations of one (already rate-scaled) record; no pixels.

    Returns list of (left, up, polygons float32 [K, 8] in patch pixels, classes, difficult_value
    int8 [K], window width, window height) per window.
    """
    if truncated_policy not in ("threshold", "devkit", "mmrotate"):
        raise ValueError(f"truncated_policy must be 'threshold', 'devkit' or 'mmrotate', got {truncated_policy!r}")
    width, height = int(round(record.width * rate)), int(round(record.height * rate))
    polys = record.polygons.astype(np.float64) * rate
    raw = (record.extra or {}).get("difficult_value")
    has_raw = isinstance(raw, np.ndarray) and len(raw) == record.num_objects
    diff_value = (raw if has_raw else record.difficult).astype(np.int8)
    shapes = []
    for p in polys:
        shape = shapely.geometry.Polygon(p.reshape(4, 2))
        shapes.append(shape if shape.is_valid else shape.buffer(0))  # self-intersecting: repaired
    out = []
    for left in window_origins(width, patch_size, gap):
        for up in window_origins(height, patch_size, gap):
            ww, wh = min(patch_size, width - left), min(patch_size, height - up)
            window = shapely.geometry.box(left, up, left + ww, up + wh)
            kept_polys, kept_classes, kept_diff = [], [], []
            for i, shape in enumerate(shapes):
                area = shape.area
                if area <= 0:
                    continue
                inter_area = shape.intersection(window).area
                iof = inter_area / area
                if iof <= 0:
                    continue
                pts = polys[i].reshape(4, 2)
                if iof >= 1 - 1e-9:
                    kept_polys.append(pts - [left, up])
                    kept_classes.append(record.classes[i])
                    kept_diff.append(diff_value[i])
                    continue
                if truncated_policy in ("threshold", "mmrotate") and iof < iof_threshold:
                    continue
                if truncated_policy == "mmrotate":
                    kept_polys.append(pts - [left, up])
                    kept_classes.append(record.classes[i])
                    kept_diff.append(2)
                    continue
                clipped = _clip_object(shape, window, shapely)
                if clipped is None:
                    continue
                clipped = _best_order(clipped, pts)
                clipped = clipped - [left, up]
                clipped[:, 0] = np.clip(clipped[:, 0], 0, ww)
                clipped[:, 1] = np.clip(clipped[:, 1], 0, wh)
                if truncated_policy == "devkit":
                    value = diff_value[i] if iof > iof_threshold else 2
                else:
                    value = 2
                kept_polys.append(clipped)
                kept_classes.append(record.classes[i])
                kept_diff.append(value)
            out.append(
                (
                    left,
                    up,
                    np.asarray(kept_polys, np.float32).reshape(-1, 8),
                    np.asarray(kept_classes, np.int32),
                    np.asarray(kept_diff, np.int8),
                    ww,
                    wh,
                )
            )
    return out


def _load_records(source, class_names):
    if isinstance(source, (str, os.PathLike)):
        records, info = read_dota(source, classes=class_names)
        return records, info.class_names
    return list(source), resolve_classes(class_names) if class_names is not None else None


def split_dota(
    source,
    out_dir=None,
    patch_size=1024,
    gap=200,
    rates=(1.0,),
    iof_threshold=0.7,
    class_names="dota1.0",
    truncated_policy="threshold",
    padding=True,
    image_ext=".png",
    skip_empty=False,
    write_images=True,
    overwrite=False,
    verbose=1,
):
    """Splits DOTA scenes into patches (see the module docstring for the rules).

    source: list of ImageRecord or a DOTA split directory (read with `read_dota`).
    out_dir: when given, writes `out_dir/images/<patch>.png` and `out_dir/labelTxt/<patch>.txt`
        (images only when `write_images`; existing patch images are kept unless `overwrite`, so
        a second call on the same scenes is cheap); None returns the patch records only.
    Returns list[ImageRecord] of the patches (image_path under out_dir/images, or '' without
    out_dir); `extra["difficult_value"]` holds 0/1/2, `extra["patch"]` (image_id, rate, left, up).
    """
    records, names = _load_records(source, class_names)
    if out_dir is not None:
        if names is None:
            raise ValueError("class_names is needed to write labelTxt files")
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
        os.makedirs(os.path.join(out_dir, "labelTxt"), exist_ok=True)
    patches = []
    iterator = records
    if verbose and out_dir is not None:
        iterator = terminal_progress(records, desc="split_dota", verbose=verbose, leave=False)
    for record in iterator:
        image = None
        for rate in rates:
            windows = split_record(record, patch_size, gap, rate, iof_threshold, truncated_policy)
            scaled = None
            for left, up, polys, classes, diff, ww, wh in windows:
                if skip_empty and len(polys) == 0:
                    continue
                name = patch_name(record.image_id, rate, left, up)
                pw, ph = (patch_size, patch_size) if padding else (ww, wh)
                image_path = os.path.join(out_dir, "images", name + image_ext) if out_dir is not None else ""
                patch = ImageRecord(
                    image_path=image_path,
                    image_id=name,
                    width=pw,
                    height=ph,
                    polygons=polys,
                    classes=classes,
                    difficult=diff != 0,
                    extra={
                        "format": "dota",
                        "difficult_value": diff,
                        "patch": (record.image_id, float(rate), int(left), int(up)),
                    },
                )
                patches.append(patch)
                if out_dir is None:
                    continue
                write_dota_label(patch, os.path.join(out_dir, "labelTxt", name + ".txt"), names, header=False)
                if write_images and (overwrite or not os.path.isfile(image_path)):
                    if image is None:
                        image = cv2.imread(record.image_path, cv2.IMREAD_COLOR)
                        if image is None:
                            raise FileNotFoundError(f"{record.image_path}: missing or corrupt image")
                    if scaled is None:
                        scaled = (
                            image
                            if rate == 1
                            else cv2.resize(
                                image,
                                (int(round(record.width * rate)), int(round(record.height * rate))),
                                interpolation=cv2.INTER_CUBIC,
                            )
                        )
                    crop = scaled[up : up + wh, left : left + ww]
                    if padding:
                        canvas = np.zeros((patch_size, patch_size, 3), np.uint8)
                        canvas[: crop.shape[0], : crop.shape[1]] = crop
                        crop = canvas
                    cv2.imwrite(image_path, crop)
    return patches


def merge_detections(patch_detections, iou_threshold=0.1):
    """Patch detections -> scene detections.

    patch_detections: dict class -> list of (patch_id, score, poly [8]) in patch pixels
        (patch ids like 'P0000__1__0___824'; ids that are not patch names pass through as scenes).
    Returns dict class -> list of (image_id, score, poly float64 [8]) in scene pixels, after
    polygon NMS per class and scene (boxes with IoU > iou_threshold to a kept box are removed),
    sorted by image id then descending score.
    """
    out = {}
    for name, dets in patch_detections.items():
        by_image = {}
        for patch_id, score, poly in dets:
            poly = np.asarray(poly, np.float64).reshape(8)
            try:
                image_id, rate, left, up = parse_patch_name(str(patch_id))
            except ValueError:
                image_id, rate, left, up = str(patch_id), 1.0, 0, 0
            scene = (poly + np.tile([left, up], 4)) / rate
            by_image.setdefault(image_id, []).append((float(score), scene))
        merged = []
        for image_id in sorted(by_image):
            items = by_image[image_id]
            polys = np.array([p for _, p in items]).reshape(-1, 8)
            scores = np.array([s for s, _ in items])
            keep = rotated_nms(polys, scores, iou_threshold)
            merged += [(image_id, float(scores[k]), polys[k]) for k in keep]
        out[name] = merged
    return out


def merge_task1(patch_result_dir, out_dir, class_names=None, iou_threshold=0.1):
    """Reads patch-level Task1 files, merges them (merge_detections) and writes scene-level
    Task1 files to `out_dir`. Returns the merged detections."""
    dets = read_task1(patch_result_dir, class_names)
    merged = merge_detections(dets, iou_threshold)
    write_task1(merged, out_dir, class_names=class_names or sorted(merged))
    return merged
