"""The public inference API: a trained detector applied to images of any size, detections in
the images' own pixels.

    from dked_tf import Detector
    detector = Detector.load("runs/student")    # a run folder, its model.json, or a .keras file
    result = detector("scene.png")              # a path, or a uint8 RGB array [H, W, 3]
    result.polygons, result.rboxes, result.scores, result.classes, result.class_names
    results = detector(["a.png", "b.png"])      # a list in gives a list out
    detector.save("student.keras")              # the one-file model

An image no larger than the tile size is letterboxed whole to the model input; a larger one is
cut into overlapping tiles (`dked_tf.data.split.tile_windows`, original pixels), each tile is
letterboxed to the model input, and the tiles' detections are mapped back to the image and
merged with class-aware rotated (polygon) NMS. The windows of up to `batch_size` images share
forward passes. `dked-tf predict` is this class over image files (`experiment.predict`).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from dked_tf.config import ConfigError
from dked_tf.data.augment import letterbox_image_np
from dked_tf.data.images import read_image_rgb
from dked_tf.data.split import tile_windows
from dked_tf.experiment.saving import load_detector, save_keras_file
from dked_tf.ops.nms import batched_rotated_nms
from dked_tf.ops.obb import poly_to_rbox

# The defaults of `Detector` and of `dked-tf predict`'s options.
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_IOU_THRESHOLD = 0.3
DEFAULT_MAX_DETECTIONS = 300
DEFAULT_BATCH_SIZE = 4


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


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """The detections of one image, sorted by descending score, in the image's own pixels.

    polygons: float32 [N, 8] x1 y1 ... x4 y4. rboxes: float32 [N, 5] cx, cy, w, h, theta (le90,
    radians), the minimum-area rectangle of each polygon. scores: float32 [N] in [0, 1].
    classes: int32 [N] class indices. class_names: the model's class names (index -> name).
    image_shape: (height, width) of the image in pixels.
    """

    polygons: np.ndarray
    rboxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: tuple
    image_shape: tuple

    def __len__(self):
        return int(self.scores.shape[0])

    @property
    def labels(self):
        """The class name of each detection: list[str] [N]."""
        return [self.class_names[int(c)] for c in self.classes]


def image_windows(height, width, tile_size, overlap):
    """The windows (x, y, w, h) original pixels an image is detected in: the whole image, or
    overlapping tiles when tile_size > 0 and a side exceeds it (overlap default tile_size // 4)."""
    if tile_size and tile_size > 0 and max(height, width) > tile_size:
        return tile_windows(width, height, tile_size, tile_size // 4 if overlap is None else overlap)
    return [(0, 0, width, height)]


def detect_images(
    model,
    images,
    image_size,
    *,
    tile_size=0,
    overlap=None,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    iou_threshold=DEFAULT_IOU_THRESHOLD,
    max_detections=DEFAULT_MAX_DETECTIONS,
    batch_size=DEFAULT_BATCH_SIZE,
):
    """Detections of images uint8 [H, W, 3] RGB of any size (each its own size).

    model: anything with `model(batch)["head"]` and `model.decode` (an OrientedDetector).
    image_size: the model input side S (px). tile_size: tile side in original pixels; an image
    with a side > tile_size (> 0) is tiled, else processed whole. overlap: pixels shared by
    neighbouring tiles (default tile_size // 4). batch_size: windows per forward pass (the
    windows of all images are batched together, in order).
    Returns one (polygons float32 [K, 8] original pixels, scores float32 [K], classes int32 [K])
    per image, sorted by descending score, K <= max_detections.
    """
    check_tiling(tile_size, overlap)
    windows = [
        (index, window)
        for index, image in enumerate(images)
        for window in image_windows(*image.shape[:2], tile_size, overlap)
    ]
    found = [([], [], []) for _ in images]
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        boxed = [letterbox_image_np(images[i][y : y + h, x : x + w], image_size) for i, (x, y, w, h) in chunk]
        head = model(tf.constant(np.stack([b[0] for b in boxed])), training=False)["head"]
        out = model.decode(
            head, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
        )
        out = {k: np.asarray(v) for k, v in out.items()}
        for row, ((index, (x, y, _, _)), (_, scale, offset)) in enumerate(zip(chunk, boxed)):
            n = int(out["num_detections"][row])
            poly = out["polygons"][row, :n].astype(np.float64).reshape(n, 4, 2)
            poly = (poly - offset) / scale + [x, y]  # letterbox inverse, then the window's origin
            keep = out["scores"][row, :n] >= score_threshold
            found[index][0].append(poly.reshape(n, 8)[keep])
            found[index][1].append(out["scores"][row, :n][keep])
            found[index][2].append(out["classes"][row, :n][keep])
    results = []
    for image, (polygons, scores, classes) in zip(images, found):
        polygons = np.concatenate(polygons).astype(np.float32)
        scores = np.concatenate(scores).astype(np.float32)
        classes = np.concatenate(classes).astype(np.int32)
        if len(polygons) and len(image_windows(*image.shape[:2], tile_size, overlap)) > 1:
            keep = np.asarray(batched_rotated_nms(polygons, scores, classes, iou_threshold, max_output=max_detections))
            polygons, scores, classes = polygons[keep], scores[keep], classes[keep]
        order = np.argsort(-scores, kind="stable")[:max_detections]
        results.append((polygons[order], scores[order], classes[order]))
    return results


def as_rgb_image(item):
    """An image of the API: a path (read as RGB; FileNotFoundError when missing, ValueError
    naming a file that cannot be decoded) or a uint8 array [H, W, 3] RGB (returned as is)."""
    if isinstance(item, (str, os.PathLike)):
        if not os.path.isfile(item):
            raise FileNotFoundError(f"{os.fspath(item)}: no such image file")
        return read_image_rgb(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3 or 0 in item.shape:
            raise ValueError(
                f"an image array must be uint8 RGB [H, W, 3] with H, W > 0, got {item.dtype} {list(item.shape)}"
            )
        return item
    raise TypeError(f"an image is a path or a uint8 RGB numpy array [H, W, 3], got {type(item).__name__}")


class Detector:
    """A trained detector for images of any size; detections in the images' own pixels.

        detector = Detector.load("model.keras")
        result = detector(image)          # Detections; a list (or [B, H, W, 3] array) -> a list

    Args:
      model: an OrientedDetector (or anything with `model(batch)["head"]` and `model.decode`).
      class_names: the names of the model's class indices.
      image_size: the model input side S (px); each image or tile is letterboxed to S x S.
      tile_size: tile side in original pixels: an image with a side > tile_size is cut into
        overlapping tiles; 0: never tile (each image letterboxed whole).
      overlap: pixels shared by neighbouring tiles (None: tile_size // 4); smaller than
        tile_size, larger than the largest object.
      score_threshold: keep detections with score >= this. iou_threshold: rotated-NMS IoU
        threshold inside each tile and when merging tiles. max_detections: most detections kept
        per tile and per image. batch_size: images (and tiles) per forward pass.
      meta: the saved facts the model was loaded with (model.json; {} when not loaded).
    """

    def __init__(
        self,
        model,
        class_names,
        image_size,
        *,
        tile_size=0,
        overlap=None,
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        iou_threshold=DEFAULT_IOU_THRESHOLD,
        max_detections=DEFAULT_MAX_DETECTIONS,
        batch_size=DEFAULT_BATCH_SIZE,
        meta=None,
    ):
        check_tiling(tile_size, overlap)
        self.model = model
        self.class_names = tuple(str(name) for name in class_names)
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and num_classes != len(self.class_names):
            raise ValueError(f"{len(self.class_names)} class names for a model of {num_classes} classes")
        self.image_size = int(image_size)
        self.tile_size = int(tile_size or 0)
        self.overlap = None if overlap is None else int(overlap)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.batch_size = max(1, int(batch_size))
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path, *, tile_size=None, **settings):
        """A Detector of the trained model at `path`: a run folder (model.json +
        model.weights.h5), its model.json, or a one-file `.keras` model. Class names and input
        size come from the saved facts; tile_size None: the tile size the model was trained on
        (DOTA patches), else 0. settings: the other arguments of `Detector`."""
        model, meta = load_detector(os.fspath(path))
        if tile_size is None:
            tile_size = int(meta.get("tile_size", 0) or 0)
        return cls(model, meta["class_names"], meta["image_size"], tile_size=tile_size, meta=meta, **settings)

    def save(self, path):
        """Writes the model as one `.keras` file (`saving.save_keras_file`) with the class names,
        input size and tile size inside, and the saved facts it was loaded with. Returns path."""
        extra = {k: v for k, v in self.meta.items() if k not in ("num_classes", "class_names", "image_size")}
        extra["tile_size"] = self.tile_size
        return save_keras_file(self.model, path, class_names=self.class_names, image_size=self.image_size, **extra)

    def windows(self, image):
        """The windows (x, y, w, h) original pixels `image` uint8 [H, W, 3] is detected in."""
        return image_windows(*image.shape[:2], self.tile_size, self.overlap)

    def __call__(self, images):
        """Detections of one image (a path or a uint8 RGB array [H, W, 3]) -> Detections; of a
        list (or tuple) of them, or a uint8 array [B, H, W, 3] -> list of Detections."""
        if isinstance(images, (list, tuple)):
            return self.detect_all(images)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return self.detect_all(list(images))
        return self.detect_all([images])[0]

    def detect_all(self, images):
        """list of Detections of the images (paths or arrays), read and detected `batch_size`
        images at a time."""
        results = []
        for start in range(0, len(images), self.batch_size):
            group = [as_rgb_image(item) for item in images[start : start + self.batch_size]]
            found = detect_images(
                self.model,
                group,
                self.image_size,
                tile_size=self.tile_size,
                overlap=self.overlap,
                score_threshold=self.score_threshold,
                iou_threshold=self.iou_threshold,
                max_detections=self.max_detections,
                batch_size=self.batch_size,
            )
            for image, (polygons, scores, classes) in zip(group, found):
                rboxes = poly_to_rbox(polygons).astype(np.float32) if len(polygons) else np.zeros((0, 5), np.float32)
                results.append(Detections(polygons, rboxes, scores, classes, self.class_names, image.shape[:2]))
        return results

    def __repr__(self):
        return (
            f"Detector({getattr(self.model, 'name', type(self.model).__name__)}, {len(self.class_names)} classes, "
            f"input {self.image_size} px, tile {self.tile_size or 'none'})"
        )
