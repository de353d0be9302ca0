"""Ultralytics' oriented-box (YOLO-OBB) dataset format: writer and reader.

    DST/data.yaml                      path: DST, train: images/trainval, val: images/test,
                                       names: {0: ship, ...}
    DST/images/<split>/<image_id><ext> hard link to (or copy of) the record's image
    DST/labels/<split>/<image_id>.txt  one line per object: `class x1 y1 x2 y2 x3 y3 x4 y4`,
                                       x / image width and y / image height (0..1)

Ultralytics finds an image's labels by replacing the last `/images/` of the image path with
`/labels/` and the extension with `.txt` (`ultralytics.data.utils.img2label_paths`), so an image
is named after its record's `image_id` and the label file after the same stem; the predictions
of a model map back to records by that stem. Images are hard links (a copy when the link fails,
e.g. across file systems), not symbolic links: Ultralytics resolves the split folders with
`Path.resolve()`, and the images must stay inside `images/<split>/` for the label mapping.

Choices the format forces:
- difficult: YOLO-OBB has no difficult flag. `difficult="keep"` writes difficult objects as
  ordinary ones (what our own training does: the flag only matters for evaluation, where the
  evaluator ignores them); `"drop"` leaves them out. The counts are reported either way.
- coordinates outside the image (objects cut by the border): Ultralytics does NOT clip when it
  reads labels, and its own DOTA tiler (`ultralytics.data.split_dota`) writes such corners
  unclipped; its augmentations clip them later, keeping the box's orientation
  (`Instances.clip(preserve_obb=True)`). Its label check (`verify_image_label`) only tests the
  axis-aligned hull: centre in [-0.01, 1.01] and width, height <= 1.01, and drops ALL labels of
  an image that fails ("ignoring corrupt image/label"). So `clip="auto"` (default) writes the
  corners as they are, except for objects that would fail that check (centre outside the image,
  or larger than it), whose corners are clipped to [0, 1]; `clip="all"` clips every object's
  corners to [0, 1] (a box cut by the border becomes a quadrilateral, of which Ultralytics fits
  the minimum-area rectangle); `clip="none"` writes all values as they are. The counts of
  objects with a corner outside the image and of clipped objects are reported.
- no objects: an empty label file (Ultralytics: a background image).

Files are written atomically (`dked_tf.files`: a temporary file in the same folder, then
`os.replace`); `data.yaml` is written last, so a complete `data.yaml` means a complete dataset. Files of an earlier
conversion that the new one does not write are removed from the split folders, and
Ultralytics' label cache (`labels/<split>.cache`, keyed on file sizes and names, not contents)
is deleted so it cannot outlive the labels it describes.
"""

import os

import cv2
import numpy as np
import yaml

from dked_tf.data.records import AnnotationError, ImageRecord
from dked_tf.files import link_or_copy, write_text_atomic

DATA_YAML = "data.yaml"
DIFFICULT_CHOICES = ("keep", "drop")
CLIP_CHOICES = ("auto", "all", "none")
IMAGE_EXTENSIONS = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")


# ----------------------------------------------------------------------------- writer


def ultralytics_rejects(normalised):
    """bool [N]: objects (normalised corners [N, 4, 2]) whose axis-aligned hull fails Ultralytics'
    label check (centre outside [0, 1] or a side longer than 1; Ultralytics allows 0.01 more)."""
    low, high = normalised.min(axis=1), normalised.max(axis=1)
    centre, side = (low + high) / 2, high - low
    return np.any((centre < 0.0) | (centre > 1.0) | (side > 1.0), axis=1)


def label_lines(record, difficult="keep", clip="auto", decimals=6):
    """The label file lines of one record.

    Returns (lines, counts): lines `class x1 y1 ... x4 y4` (normalised by the record's width and
    height, `decimals` decimals) and counts {"objects", "difficult", "dropped", "outside",
    "clipped"}: objects written, difficult objects seen, difficult objects left out, objects
    with a corner outside [0, 1], objects whose corners were clipped (see the module docstring
    for clip "auto" | "all" | "none")."""
    if difficult not in DIFFICULT_CHOICES:
        raise ValueError(f"difficult must be one of {DIFFICULT_CHOICES}, got {difficult!r}")
    if clip not in CLIP_CHOICES:
        raise ValueError(f"clip must be one of {CLIP_CHOICES}, got {clip!r}")
    if record.width <= 0 or record.height <= 0:
        raise ValueError(
            f"record {record.image_id!r}: width and height must be positive, got {record.width}x{record.height}"
        )
    keep = ~record.difficult if difficult == "drop" else np.ones(record.num_objects, bool)
    polygons = record.polygons[keep].astype(np.float64).reshape(-1, 4, 2)
    classes = record.classes[keep]
    normalised = polygons / np.array([record.width, record.height], np.float64)
    outside = np.any((normalised < 0.0) | (normalised > 1.0), axis=(1, 2))
    if clip == "all":
        clipped = outside
    elif clip == "auto":
        clipped = outside & ultralytics_rejects(normalised)
    else:
        clipped = np.zeros(len(normalised), bool)
    normalised[clipped] = np.clip(normalised[clipped], 0.0, 1.0)
    lines = []
    for cls, poly in zip(classes, normalised.reshape(-1, 8)):
        lines.append(f"{int(cls)} " + " ".join(f"{v:.{decimals}f}" for v in poly))
    counts = {
        "objects": len(lines),
        "difficult": int(record.difficult.sum()),
        "dropped": int(record.num_objects - len(lines)),
        "outside": int(outside.sum()),
        "clipped": int(clipped.sum()),
    }
    return lines, counts


def write_yolo_obb(
    root,
    splits,
    class_names,
    *,
    train="trainval",
    val="test",
    test=None,
    difficult="keep",
    clip="auto",
    link=True,
    decimals=6,
    verbose=1,
):
    """Writes records as an Ultralytics OBB dataset under `root`.

    splits: {folder name: list of ImageRecord}, e.g. {"trainval": train_records, "test":
        test_records}; each record's `image_id` must be unique within its split.
    class_names: names of the class indices (data.yaml `names: {0: name, ...}`).
    train, val: the folders data.yaml names as `train:` and `val:` (`images/<folder>`); test:
        optionally the folder of `test:`.
    difficult: "keep" or "drop"; clip: "auto", "all" or "none" (see the module docstring).
    link: hard-link the images (copy when that fails); False: always copy.

    Returns {"root", "data_yaml", "splits": {folder: {"images", "objects", "difficult",
    "dropped", "outside", "clipped", "linked", "copied"}}} (counts as in `label_lines`).
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    for key, folder in (("train", train), ("val", val), ("test", test)):
        if folder is not None and folder not in splits:
            raise ValueError(
                f"data.yaml {key}: images/{folder}, but splits has no {folder!r} (got {', '.join(splits) or 'none'})"
            )
    summary = {"root": root, "data_yaml": os.path.join(root, DATA_YAML), "splits": {}}
    for folder, records in splits.items():
        image_dir = os.path.join(root, "images", folder)
        label_dir = os.path.join(root, "labels", folder)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        cache = os.path.join(root, "labels", f"{folder}.cache")
        if os.path.exists(cache):
            os.remove(cache)
        totals = {
            "images": 0,
            "objects": 0,
            "difficult": 0,
            "dropped": 0,
            "outside": 0,
            "clipped": 0,
            "linked": 0,
            "copied": 0,
        }
        written_images, written_labels, seen = set(), set(), {}
        for record in records:
            if record.image_id in seen:
                raise ValueError(
                    f"split {folder!r}: image id {record.image_id!r} appears twice "
                    f"({seen[record.image_id]} and {record.image_path})"
                )
            seen[record.image_id] = record.image_path
            for cls in np.unique(record.classes):
                if not 0 <= int(cls) < len(class_names):
                    raise ValueError(
                        f"record {record.image_id!r}: class index {int(cls)} is not in 0..{len(class_names) - 1}"
                    )
            ext = os.path.splitext(record.image_path)[1].lower()
            if ext not in IMAGE_EXTENSIONS:
                raise ValueError(
                    f"record {record.image_id!r}: {record.image_path}: Ultralytics reads only "
                    f"{', '.join(IMAGE_EXTENSIONS)} images"
                )
            image_name = record.image_id + ext
            how = link_or_copy(record.image_path, os.path.join(image_dir, image_name), link=link)
            lines, counts = label_lines(record, difficult=difficult, clip=clip, decimals=decimals)
            label_name = record.image_id + ".txt"
            write_text_atomic(os.path.join(label_dir, label_name), "".join(line + "\n" for line in lines))
            written_images.add(image_name)
            written_labels.add(label_name)
            totals["images"] += 1
            totals["linked" if how in ("link", "same") else "copied"] += 1
            for key, value in counts.items():
                totals[key] += value
        for folder_path, keep in ((image_dir, written_images), (label_dir, written_labels)):
            for name in os.listdir(folder_path):
                full = os.path.join(folder_path, name)
                if name not in keep and os.path.isfile(full):
                    os.remove(full)  # left over from an earlier conversion into the same folder
        summary["splits"][folder] = totals
        if verbose:
            extra = f", {totals['copied']} copied" if totals["copied"] else ""
            print(
                f"yolo-obb {folder}: {totals['images']} images, {totals['objects']} objects "
                f"(difficult {totals['difficult']}, {'dropped' if difficult == 'drop' else 'kept'}), "
                f"{totals['outside']} cut by the border ({totals['clipped']} clipped to [0, 1], clip={clip}){extra}"
            )
    data = {
        "path": root,
        "train": f"images/{train}",
        "val": f"images/{val}",
    }
    if test is not None:
        data["test"] = f"images/{test}"
    data["names"] = {i: str(name) for i, name in enumerate(class_names)}
    write_text_atomic(summary["data_yaml"], yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return summary


# ----------------------------------------------------------------------------- reader


def read_data_yaml(root):
    """(data dict, class names tuple) of `root/data.yaml` (names as a mapping or a list)."""
    path = os.path.join(root, DATA_YAML)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise AnnotationError(path, f"names keys must be 0..{len(keys) - 1}, got {keys}")
        class_names = tuple(str(names[k]) for k in keys)
    elif isinstance(names, list):
        class_names = tuple(str(n) for n in names)
    else:
        raise AnnotationError(path, "needs `names` ({0: name, ...} or a list)")
    return data, class_names


def read_label_file(path, num_classes, width, height):
    """(polygons float32 [N, 8] in pixels, classes int32 [N]) of one label file."""
    polygons, classes = [], []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 9:
                raise AnnotationError(path, f"expected `class x1 y1 ... x4 y4` (9 fields), got {len(fields)}", number)
            try:
                cls = int(fields[0])
                values = [float(v) for v in fields[1:]]
            except ValueError:
                raise AnnotationError(path, f"not numbers: {line.strip()!r}", number) from None
            if not 0 <= cls < num_classes:
                raise AnnotationError(path, f"class {cls} is not in 0..{num_classes - 1}", number)
            classes.append(cls)
            polygons.append(values)
    polygons = np.asarray(polygons, np.float64).reshape(-1, 4, 2) * np.array([width, height], np.float64)
    return polygons.reshape(-1, 8).astype(np.float32), np.asarray(classes, np.int32)


def label_path_for(image_path):
    """Ultralytics' rule (`img2label_paths`): the last `/images/` of the path becomes `/labels/`
    and the extension `.txt`."""
    marker = f"{os.sep}images{os.sep}"
    if marker not in image_path:
        raise ValueError(f"{image_path}: not under an images/ folder")
    return f"{os.sep}labels{os.sep}".join(image_path.rsplit(marker, 1)).rsplit(".", 1)[0] + ".txt"


def read_yolo_obb(root, split="val", sizes=None):
    """Records of one split of a YOLO-OBB dataset, polygons back in pixels.

    split: a data.yaml key ("train", "val", "test") or a folder name under images/.
    sizes: optional {image_id: (width, height)}; otherwise each image's size is read from the
        file (OpenCV). difficult is all False (the format has no such flag).
    Returns (records sorted by image id, class names).
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    data, class_names = read_data_yaml(root)
    value = data.get(split, f"images/{split}")
    if not isinstance(value, str):
        raise AnnotationError(os.path.join(root, DATA_YAML), f"{split}: only a single folder is supported")
    base = data.get("path") or root
    image_dir = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.isdir(image_dir):
        image_dir = os.path.join(root, value)  # the tree was moved: path: still names the old place
    if not os.path.isdir(image_dir):
        raise AnnotationError(os.path.join(root, DATA_YAML), f"{split}: no folder {image_dir}")
    records = []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
            continue
        image_path = os.path.join(image_dir, name)
        if sizes is not None and stem in sizes:
            width, height = sizes[stem]
        else:
            image = cv2.imread(image_path, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise AnnotationError(image_path, "OpenCV cannot decode this image")
            height, width = image.shape[:2]
        label_path = label_path_for(image_path)
        if os.path.exists(label_path):
            polygons, classes = read_label_file(label_path, len(class_names), width, height)
        else:
            polygons, classes = np.zeros((0, 8), np.float32), np.zeros((0,), np.int32)
        records.append(
            ImageRecord(
                image_path=image_path,
                image_id=stem,
                width=int(width),
                height=int(height),
                polygons=polygons,
                classes=classes,
                difficult=np.zeros(len(classes), bool),
            )
        )
    return records, class_names
