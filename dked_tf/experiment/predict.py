"""Detection with a trained detector on images of any size, and loading a trained detector for
export.

`detect_image`: images no larger than the tile size are letterboxed whole to the model input;
larger images are cut into overlapping tiles (`dked_tf.data.split.tile_windows`, original
pixels), each tile is letterboxed to the model input, detections are mapped back to the image
and merged across tiles with class-aware rotated (polygon) NMS. `predict_images` runs it over
image files and writes DOTA Task1 files (original pixels, atomically) and, optionally, the drawn
images. An image that cannot be read is skipped with a warning naming it; images whose file
names repeat get their relative paths as ids (`dked_tf.data.images.unique_image_ids`); an image
shrunk more than `SQUASH_WARNING` times to the model input without tiling gets a warning.
"""

import os
import sys

import keras
import numpy as np
import tensorflow as tf

import dked_tf.models.detector  # noqa: F401  (registers the serializable classes for .keras files)
from dked_tf import visualize
from dked_tf.config import ConfigError
from dked_tf.data.augment import letterbox_image_np
from dked_tf.data.dota import write_task1
from dked_tf.data.images import announced_image_ids, readable_images
from dked_tf.data.split import tile_windows
from dked_tf.distiller import Distiller
from dked_tf.experiment.saving import is_saved_detector, load_detector
from dked_tf.ops.nms import batched_rotated_nms
from dked_tf.terminal import progress as terminal_progress

# An image processed whole that is shrunk more than this many times to the model input gets a
# warning suggesting tiling (its objects shrink as much).
SQUASH_WARNING = 2.0


def check_tiling(tile_size, overlap):
    """Raises ConfigError for a negative tile size or overlap, or an overlap that is not smaller
    than the tile size (the tile step would be 1 pixel: ~N² tiles)."""
    if tile_size is not None and tile_size < 0:
        raise ConfigError(f"tile size must be >= 0 (0: no tiling), got {tile_size}")
    if overlap is not None and overlap < 0:
        raise ConfigError(f"tile overlap must be >= 0, got {overlap}")
    if tile_size and overlap is not None and overlap >= tile_size:
        raise ConfigError(
            f"tile overlap ({overlap} px) must be smaller than the tile size ({tile_size} px): "
            "the tiles would step by 1 pixel"
        )


def detect_image(
    model,
    image,
    image_size,
    *,
    tile_size=0,
    overlap=None,
    score_threshold=0.3,
    iou_threshold=0.3,
    max_detections=300,
    batch_size=4,
):
    """Detections of one image uint8 [H, W, 3] RGB of any size.

    image_size: the model input side S (pixels). tile_size: tile side in original pixels; an
    image with a side > tile_size (> 0) is tiled, else processed whole. overlap: pixels shared
    by neighbouring tiles (default tile_size // 4). batch_size: tiles per forward pass.
    Returns (polygons float32 [K, 8] original pixels, scores float32 [K], classes int32 [K]),
    sorted by descending score.
    """
    check_tiling(tile_size, overlap)
    height, width = image.shape[:2]
    if tile_size > 0 and max(height, width) > tile_size:
        overlap = tile_size // 4 if overlap is None else overlap
        windows = tile_windows(width, height, tile_size, overlap)
    else:
        windows = [(0, 0, width, height)]
    polygons, scores, classes = [], [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        boxed = [letterbox_image_np(image[y : y + h, x : x + w], image_size) for x, y, w, h in chunk]
        batch = tf.constant(np.stack([b[0] for b in boxed]))
        head = model(batch, training=False)["head"]
        out = model.decode(
            head, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
        )
        out = {k: np.asarray(v) for k, v in out.items()}
        for i, ((x, y, _, _), (_, scale, (pad_x, pad_y))) in enumerate(zip(chunk, boxed)):
            n = int(out["num_detections"][i])
            poly = out["polygons"][i, :n].astype(np.float64).reshape(n, 4, 2)
            poly = (poly - [pad_x, pad_y]) / scale + [x, y]
            keep = out["scores"][i, :n] >= score_threshold
            polygons.append(poly.reshape(n, 8)[keep])
            scores.append(out["scores"][i, :n][keep])
            classes.append(out["classes"][i, :n][keep])
    polygons = np.concatenate(polygons).astype(np.float32) if polygons else np.zeros((0, 8), np.float32)
    scores = np.concatenate(scores).astype(np.float32) if scores else np.zeros((0,), np.float32)
    classes = np.concatenate(classes).astype(np.int32) if classes else np.zeros((0,), np.int32)
    if len(windows) > 1 and len(scores):
        keep = np.asarray(batched_rotated_nms(polygons, scores, classes, iou_threshold, max_output=max_detections))
        polygons, scores, classes = polygons[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return polygons[order], scores[order], classes[order]


def _progress(items, verbose, desc):
    """A tqdm progress bar over items when verbose and on a terminal, else the items."""
    return terminal_progress(items, desc=desc, verbose=verbose, unit="img")


def predict_images(
    model,
    paths,
    out_dir,
    class_names,
    image_size,
    *,
    tile_size=0,
    overlap=None,
    score_threshold=0.3,
    iou_threshold=0.3,
    max_detections=300,
    batch_size=4,
    draw=True,
    verbose=1,
    skipped=None,
):
    """`detect_image` over image files; writes `out_dir/Task1_<class>.txt` (every class, lines
    `image_id score x1 y1 ... x4 y4`, original pixels; each file atomically) and, with draw,
    `out_dir/images/<image_id>.png` with the detections drawn.

    image_id: the file name without extension; where two inputs share it, their paths relative
    to their common folder (`unique_image_ids`; a note on stderr lists them).
    An image that cannot be read is skipped with a warning on stderr naming it (and appended to
    the list `skipped` when given); the Task1 files hold every other image. An image processed
    whole and shrunk more than SQUASH_WARNING times gets a one-line warning suggesting tiling.
    class_names: the names of the model's class indices. verbose: 1 shows a progress bar.
    Returns the number of detections written.
    """
    check_tiling(tile_size, overlap)
    detections = {name: [] for name in class_names}
    draw_dir = os.path.join(out_dir, "images")
    ids = announced_image_ids(paths)
    total, squash_warned = 0, False
    pairs = _progress(list(zip(paths, ids)), verbose, "predict")
    for path, image_id, image in readable_images(pairs, skipped):
        longest = max(image.shape[:2])
        whole = not (tile_size and tile_size > 0 and longest > tile_size)
        if whole and longest > SQUASH_WARNING * image_size and not squash_warned:
            squash_warned = True
            print(
                f"warning: {path} is {image.shape[1]}x{image.shape[0]} px and is shrunk {longest / image_size:.1f}x "
                f"to the model's {image_size} px input (objects shrink as much); pass --tile-size {image_size} to "
                "tile it (further images like it are not named)",
                file=sys.stderr,
            )
        polys, scores, classes = detect_image(
            model,
            image,
            image_size,
            tile_size=tile_size,
            overlap=overlap,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            batch_size=batch_size,
        )
        for poly, score, cls in zip(polys, scores, classes):
            detections[class_names[int(cls)]].append((image_id, float(score), poly))
        total += len(scores)
        if draw:
            labels = [class_names[int(c)] for c in classes]
            drawn = visualize.draw_polygons(image, polys, labels=labels, scores=scores)
            visualize.save_image(os.path.join(draw_dir, image_id + ".png"), drawn)
    write_task1(detections, out_dir, class_names)
    return total


def load_trained_detector(path):
    """A trained detector from `path` -> (model, meta).

    path: a run folder written by `save_detector` (model.json + model.weights.h5) or its
    model.json (meta: the saved model.json), or a .keras model file (an OrientedDetector, or a
    Distiller whose student is returned; meta {}). Raises FileNotFoundError when a folder or
    .json is not a saved detector (model.json or model.weights.h5 missing).
    """
    if os.path.isdir(path) or path.endswith(".json"):
        if not is_saved_detector(os.path.dirname(path) if os.path.isfile(path) else path):
            raise FileNotFoundError(f"{path}: not a saved detector folder (model.json + model.weights.h5)")
        return load_detector(path)
    model = keras.saving.load_model(path, compile=False)
    return (model.student if isinstance(model, Distiller) else model), {}
