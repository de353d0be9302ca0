"""Dataset conversion between HRSC2016, DOTA and YOLO-OBB (`dked-tf convert`).

Layouts (issue #17's contract):

- hrsc:     SRC/FullDataSet/{AllImages,Annotations} + SRC/ImageSets/<split>.txt (or any layout
            `read_hrsc` accepts: the splits are the ImageSets files it can read, or Train/Test
            of the original release as trainval/test, or one split `all` when there are none);
            written as DST/FullDataSet/AllImages/<id><ext>, DST/FullDataSet/Annotations/<id>.xml
            and DST/ImageSets/<split>.txt.
- dota:     SRC/<split>/images/ + SRC/<split>/labelTxt/ (every folder with a labelTxt/ is a split;
            the class list from SRC/classes.txt, else DOTA v1.0, or `classes`); written alike,
            with DST/classes.txt.
- yolo-obb: Ultralytics' layout (`dked_tf.data.yolo_obb`): DST/images/<split>/,
            DST/labels/<split>/<id>.txt and DST/data.yaml with `path`, `train`, `val` (and `test`
            when there is such a split) and `names`; every folder under SRC/images/ is a split.

Split names and image ids are kept; images are hard-linked (copied when linking fails, or with
link=False). Difficult flags are kept by HRSC2016 and DOTA (DOTA's raw 0/1/2 value too, when the
source is DOTA); YOLO-OBB has none: difficult objects are written as ordinary ones (or left out
with difficult="drop") and counted. HRSC2016 stores rotated rectangles (`mbox`): other polygons
are written as their minimum-area rectangles (counted as "reshaped"), and it holds the class
`ship` or the 31 classes of the HRSC2016 L3 task only.
"""

import os

import numpy as np

from dked_tf.data.dota import read_dota, resolve_classes, write_dota_label
from dked_tf.data.hrsc import HRSC_CLASS_NAMES_31, class_names_for, read_hrsc, write_hrsc_xml, write_imageset
from dked_tf.data.records import InputError
from dked_tf.data.yolo_obb import DATA_YAML, DIFFICULT_CHOICES, read_data_yaml, read_yolo_obb, write_yolo_obb
from dked_tf.files import link_or_copy, write_text_atomic
from dked_tf.ops.obb import mbox_to_poly, poly_to_rbox, rbox_to_mbox

FORMATS = ("hrsc", "dota", "yolo-obb")
HRSC_SPLITS = ("trainval", "test", "train", "val")  # the ImageSets names read_hrsc reads
HRSC_ALL = "all"  # the one split of an HRSC2016 set without ImageSets
CLASSES_TXT = "classes.txt"
LABEL_DIRS = ("labelTxt", "labelTxt-v1.0", "labelTxt-v1.5", "labelTxt-v2.0")
RESHAPE_TOLERANCE = 1e-3  # px: a polygon farther than this from its rectangle is "reshaped"


# ----------------------------------------------------------------------------- reading


def _hrsc_splits(root):
    """The split names of an HRSC2016 set at `root` (see the module docstring)."""
    for folder in (os.path.join(root, "ImageSets"), os.path.join(os.path.dirname(root), "ImageSets")):
        if os.path.isdir(folder):
            names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".txt"))
            names = [n for n in names if n in HRSC_SPLITS]
            if names:
                return names
    if os.path.isdir(os.path.join(root, "Train")) or os.path.isdir(os.path.join(root, "Test")):
        return [n for n, d in (("trainval", "Train"), ("test", "Test")) if os.path.isdir(os.path.join(root, d))]
    return [HRSC_ALL]


def read_splits(fmt, src, classes=None, hrsc_classes="ship", verbose=0):
    """({split: list of ImageRecord}, class names) of the dataset at `src` in format `fmt`."""
    src = os.path.abspath(os.path.expanduser(str(src)))
    if not os.path.isdir(src):
        raise InputError(f"{src}: source folder does not exist")
    if fmt == "hrsc":
        splits = {}
        for name in _hrsc_splits(src):
            records, info = read_hrsc(
                src, imageset=None if name == HRSC_ALL else name, class_mode=hrsc_classes, verbose=verbose
            )
            splits[name] = records
        return splits, tuple(info.class_names)
    if fmt == "dota":
        names = sorted(
            d for d in os.listdir(src) if any(os.path.isdir(os.path.join(src, d, label)) for label in LABEL_DIRS)
        )
        if not names:
            raise InputError(f"{src}: no DOTA split folders (<split>/labelTxt/ and <split>/images/)")
        splits = {}  # classes None: read_dota's rule (SRC/<split>/classes.txt, SRC/classes.txt, dota1.0)
        for name in names:
            records, info = read_dota(os.path.join(src, name), classes=classes, verbose=verbose)
            splits[name] = records
        return splits, tuple(info.class_names)
    if fmt == "yolo-obb":
        if not os.path.isfile(os.path.join(src, DATA_YAML)):
            raise InputError(
                f"{src}: no {DATA_YAML} (a YOLO-OBB dataset has data.yaml, images/<split>/, labels/<split>/)"
            )
        data, class_names = read_data_yaml(src)
        image_root = os.path.join(src, "images")
        folders = sorted(d for d in os.listdir(image_root) if os.path.isdir(os.path.join(image_root, d)))
        if not folders:
            raise InputError(f"{image_root}: no split folders")
        splits = {}
        for folder in folders:
            # read_yolo_obb takes a data.yaml key or a folder name; a key naming this folder wins
            key = next((k for k in ("train", "val", "test") if data.get(k) == f"images/{folder}"), folder)
            if key == folder and data.get(folder, f"images/{folder}") != f"images/{folder}":
                raise InputError(f"{src}/{DATA_YAML}: key {folder!r} names another folder than images/{folder}")
            records, _ = read_yolo_obb(src, split=key)
            splits[folder] = records
        return splits, tuple(class_names)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


# ----------------------------------------------------------------------------- writing


def _reshaped(polygons):
    """Number of polygons farther than RESHAPE_TOLERANCE px from their minimum-area rectangle
    (each vertex to the nearest rectangle corner)."""
    polygons = np.asarray(polygons, np.float64).reshape(-1, 8)
    if not len(polygons):
        return 0
    rect = np.asarray(mbox_to_poly(rbox_to_mbox(poly_to_rbox(polygons))), np.float64).reshape(-1, 4, 1, 2)
    distance = np.linalg.norm(polygons.reshape(-1, 1, 4, 2) - rect, axis=-1).min(axis=1)  # [N, 4]
    return int(np.count_nonzero(distance.max(axis=1) > RESHAPE_TOLERANCE))


def _image_name(record):
    return record.image_id + os.path.splitext(record.image_path)[1].lower()


def _check_ids(splits):
    """Image ids are unique within a split; an id in several splits must be the same file."""
    seen = {}
    for split, records in splits.items():
        inside = set()
        for record in records:
            if record.image_id in inside:
                raise InputError(f"split {split!r}: image id {record.image_id!r} appears twice")
            inside.add(record.image_id)
            other = seen.get(record.image_id)
            if other is not None and os.path.abspath(other) != os.path.abspath(record.image_path):
                raise InputError(
                    f"image id {record.image_id!r} names two images ({other} and {record.image_path}): "
                    f"HRSC2016 keeps all images in one folder"
                )
            seen[record.image_id] = record.image_path


def write_hrsc(dst, splits, class_names, link=True):
    """Writes the splits in the HRSC2016 (mmrotate) layout. Returns counts."""
    if tuple(class_names) not in (tuple(class_names_for("ship")), HRSC_CLASS_NAMES_31):
        raise InputError(f"HRSC2016 holds the class 'ship' or its 31 classes; the source has {', '.join(class_names)}")
    _check_ids(splits)
    image_dir = os.path.join(dst, "FullDataSet", "AllImages")
    ann_dir = os.path.join(dst, "FullDataSet", "Annotations")
    os.makedirs(image_dir, exist_ok=True)
    counts = {}
    for split, records in splits.items():
        total = {"images": 0, "objects": 0, "difficult": 0, "reshaped": 0, "copied": 0}
        for record in records:
            name = _image_name(record)
            how = link_or_copy(record.image_path, os.path.join(image_dir, name), link=link)
            write_hrsc_xml(
                record,
                os.path.join(ann_dir, record.image_id + ".xml"),
                class_names=class_names,
                image_file_name=record.image_id,
                image_format=os.path.splitext(name)[1].lstrip("."),
            )
            total["images"] += 1
            total["objects"] += record.num_objects
            total["difficult"] += int(record.difficult.sum())
            total["reshaped"] += _reshaped(record.polygons)
            total["copied"] += how == "copy"
        if split != HRSC_ALL:
            write_imageset([r.image_id for r in records], os.path.join(dst, "ImageSets", f"{split}.txt"))
        counts[split] = total
    return counts


def write_dota(dst, splits, class_names, link=True):
    """Writes the splits as DST/<split>/{images,labelTxt}/ and DST/classes.txt. Returns counts."""
    counts = {}
    for split, records in splits.items():
        total = {"images": 0, "objects": 0, "difficult": 0, "copied": 0}
        for record in records:
            image_dir = os.path.join(dst, split, "images")
            os.makedirs(image_dir, exist_ok=True)
            how = link_or_copy(record.image_path, os.path.join(image_dir, _image_name(record)), link=link)
            write_dota_label(record, os.path.join(dst, split, "labelTxt", record.image_id + ".txt"), list(class_names))
            total["images"] += 1
            total["objects"] += record.num_objects
            total["difficult"] += int(record.difficult.sum())
            total["copied"] += how == "copy"
        os.makedirs(os.path.join(dst, split, "labelTxt"), exist_ok=True)
        counts[split] = total
    write_text_atomic(os.path.join(dst, CLASSES_TXT), "".join(f"{name}\n" for name in class_names))
    return counts


def yolo_roles(split_names):
    """(train, val, test) folders data.yaml names: train = trainval or train (else the first
    split), val = val or test (else train), test = test when it is not val."""
    names = list(split_names)
    train = next((n for n in ("trainval", "train") if n in names), names[0])
    val = next((n for n in ("val", "test") if n in names), train)
    test = "test" if "test" in names and val != "test" else None
    return train, val, test


def write_yolo(dst, splits, class_names, link=True, difficult="keep", clip="auto"):
    """Writes the splits in Ultralytics' OBB layout (`write_yolo_obb`). Returns counts."""
    train, val, test = yolo_roles(splits)
    summary = write_yolo_obb(
        dst,
        splits,
        list(class_names),
        train=train,
        val=val,
        test=test,
        difficult=difficult,
        clip=clip,
        link=link,
        verbose=0,
    )
    return summary["splits"]


def convert_dataset(
    src_format,
    dst_format,
    src,
    dst,
    *,
    classes=None,
    hrsc_classes="ship",
    link=True,
    difficult="keep",
    clip="auto",
    verbose=0,
):
    """Converts the dataset at `src` (format src_format) into `dst` (format dst_format).

    classes: the DOTA class list of a DOTA source (a list name, a list, or None: SRC/classes.txt,
    else DOTA v1.0). hrsc_classes: "ship" or "31" (an HRSC2016 source's task). link: hard-link
    images (else copy). difficult ("keep" | "drop") and clip ("auto" | "all" | "none"): for a
    YOLO-OBB destination (see `dked_tf.data.yolo_obb`).
    Returns {"splits": {split: counts}, "class_names", "difficult": difficult objects seen,
    "src", "dst"}. Bad input raises InputError / AnnotationError / OSError.
    """
    for fmt in (src_format, dst_format):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if difficult not in DIFFICULT_CHOICES:
        raise ValueError(f"difficult must be one of {DIFFICULT_CHOICES}, got {difficult!r}")
    src = os.path.abspath(os.path.expanduser(str(src)))
    dst = os.path.abspath(os.path.expanduser(str(dst)))
    if not os.path.isdir(src):
        raise InputError(f"{src}: source folder does not exist")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise InputError(f"{dst}: the destination is the source folder")
    if classes is not None and src_format == "dota":
        classes = resolve_classes(classes, comma_list=True)
    splits, class_names = read_splits(src_format, src, classes=classes, hrsc_classes=hrsc_classes, verbose=verbose)
    os.makedirs(dst, exist_ok=True)
    if dst_format == "hrsc":
        counts = write_hrsc(dst, splits, class_names, link=link)
    elif dst_format == "dota":
        counts = write_dota(dst, splits, class_names, link=link)
    else:
        counts = write_yolo(dst, splits, class_names, link=link, difficult=difficult, clip=clip)
    seen = sum(int(r.difficult.sum()) for records in splits.values() for r in records)
    return {"splits": counts, "class_names": class_names, "difficult": seen, "src": src, "dst": dst}
