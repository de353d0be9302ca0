"""DOTA v1.0 / v1.5 / v2.0: labelTxt reader and writer, class lists, Task1 result files.

labelTxt (one file per image, named like the image): optional header lines `imagesource:...`
and `gsd:...`, then one object per line `x1 y1 x2 y2 x3 y3 x4 y4 category difficult` (the
difficult field may be missing: 0). `difficult` is 0, 1, or 2 (2 = truncated by tiling); the
record's bool `difficult` is `value != 0` and the raw value is kept in `extra["difficult_value"]`.

Unlike the devkit, which skips lines it cannot parse, lines with a wrong number of fields,
non-numeric or non-finite coordinates, unknown classes or a bad difficult flag are errors that
name the file and line (or, with strict=False, warnings; the record is skipped and counted).

Task1 result files: `Task1_<class>.txt`, lines `image_id score x1 y1 ... x4 y4`.
"""

import os
import struct

import numpy as np

from dked_tf.data.records import (
    AnnotationError,
    DatasetInfo,
    ImageRecord,
    SkipLog,
    check_image_file,
)

DOTA_CLASSES = {
    "dota1.0": (
        "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle",
        "large-vehicle", "ship", "tennis-court", "basketball-court", "storage-tank",
        "soccer-ball-field", "roundabout", "harbor", "swimming-pool", "helicopter",
    ),
}
DOTA_CLASSES["dota1.5"] = DOTA_CLASSES["dota1.0"] + ("container-crane",)
DOTA_CLASSES["dota2.0"] = DOTA_CLASSES["dota1.5"] + ("airport", "helipad")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def resolve_classes(classes):
    """'dota1.0' | 'dota1.5' | 'dota2.0' (also 'v1.0', '1.0', ...) or a list of names -> tuple."""
    if isinstance(classes, str):
        key = classes.lower().replace("v", "")
        key = key if key.startswith("dota") else "dota" + key
        if key not in DOTA_CLASSES:
            raise ValueError(f"unknown DOTA class list {classes!r}; use one of {sorted(DOTA_CLASSES)} or a list")
        return DOTA_CLASSES[key]
    names = tuple(str(c) for c in classes)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {names}")
    return names


def format_number(value):
    """Shortest text that reads back to the same float32 value (`12`, `12.5`, `0.1`)."""
    return np.format_float_positional(np.float32(value), trim="-")


# --------------------------------------------------------------------------- image size


def image_size_from_header(path):
    """(width, height) from the PNG/JPEG/BMP/GIF header, without decoding; None if unknown."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"BM") and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return w, abs(h)
        if head.startswith(b"GIF8"):
            return struct.unpack("<HH", head[6:10])
        if head.startswith(b"\xff\xd8"):
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                code = marker[1]
                if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
                    continue
                length_bytes = f.read(2)
                if len(length_bytes) < 2:
                    return None
                length = struct.unpack(">H", length_bytes)[0]
                if code in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    data = f.read(5)
                    h, w = struct.unpack(">HH", data[1:5])
                    return w, h
                f.seek(length - 2, 1)
    return None


def _image_size(path, check_images):
    if check_images == "decode":
        import cv2

        check_image_file(path)
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise AnnotationError(path, "corrupt image: OpenCV cannot decode it")
        return image.shape[1], image.shape[0]
    if check_images:
        check_image_file(path)
    if os.path.isfile(path):
        size = image_size_from_header(path)
        if size is None:
            import cv2

            image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise AnnotationError(path, "corrupt image: cannot read its size")
            size = (image.shape[1], image.shape[0])
        return int(size[0]), int(size[1])
    return 0, 0


# --------------------------------------------------------------------------- reader


def parse_dota_label(path, class_names):
    """Parses one labelTxt file. Returns dict(polygons float32 [N, 8], classes int32 [N],
    difficult_value int8 [N], header dict). Raises AnnotationError naming file and line."""
    index = {name: i for i, name in enumerate(class_names)}
    polys, classes, diff, header = [], [], [], {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not a text file ({e})")
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        tokens = text.split()
        if len(tokens) == 1 and ":" in text:
            key, _, value = text.partition(":")
            header[key.strip()] = value.strip()
            continue
        if len(tokens) not in (9, 10):
            raise AnnotationError(
                path, f"expected 9 or 10 fields (x1 y1 ... x4 y4 category [difficult]), got {len(tokens)}: {text!r}", number
            )
        try:
            coords = [float(t) for t in tokens[:8]]
        except ValueError:
            raise AnnotationError(path, f"coordinates are not numbers: {' '.join(tokens[:8])!r}", number)
        if not all(np.isfinite(coords)):
            raise AnnotationError(path, f"non-finite coordinate in {' '.join(tokens[:8])!r}", number)
        name = tokens[8]
        if name not in index:
            raise AnnotationError(path, f"unknown class {name!r} (known: {', '.join(class_names)})", number)
        value = 0
        if len(tokens) == 10:
            if tokens[9] not in ("0", "1", "2"):
                raise AnnotationError(path, f"difficult must be 0, 1 or 2, got {tokens[9]!r}", number)
            value = int(tokens[9])
        polys.append(coords)
        classes.append(index[name])
        diff.append(value)
    return {
        "polygons": np.asarray(polys, np.float32).reshape(-1, 8),
        "classes": np.asarray(classes, np.int32),
        "difficult_value": np.asarray(diff, np.int8),
        "header": header,
    }


def _find_dirs(label_dir, image_dir):
    label_dir = os.path.abspath(os.path.expanduser(str(label_dir)))
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(f"DOTA label directory {label_dir} is missing")
    root = label_dir
    for name in ("labelTxt", "labelTxt-v1.0", "labelTxt-v1.5", "labelTxt-v2.0"):
        if os.path.isdir(os.path.join(label_dir, name)):
            label_dir = os.path.join(label_dir, name)
            break
    else:
        root = os.path.dirname(label_dir)
    if image_dir is None:
        image_dir = os.path.join(root, "images")
    return label_dir, os.path.abspath(os.path.expanduser(str(image_dir))), root


def _find_image(image_dir, image_id):
    for ext in IMAGE_EXTENSIONS:
        p = os.path.join(image_dir, image_id + ext)
        if os.path.isfile(p):
            return p
    return os.path.join(image_dir, image_id + ".png")


def read_dota(label_dir, image_dir=None, classes=None, strict=True, check_images=True, verbose=1):
    """Reads DOTA annotations.

    label_dir: a `labelTxt` directory, or a split directory holding `labelTxt/` (or
        `labelTxt-v1.x/`) and `images/`.
    image_dir: default `<label_dir>/../images`.
    classes: "dota1.0" | "dota1.5" | "dota2.0" | list of names | None (a `classes.txt` next to
        `labelTxt`/one level up, else dota1.0).
    check_images: True (image exists, valid header; size read from the header), "decode",
        False (missing images allowed: width = height = 0 then).
    Returns (list[ImageRecord] sorted by id, DatasetInfo).
    """
    label_dir, image_dir, root = _find_dirs(label_dir, image_dir)
    if classes is None:
        classes = "dota1.0"
        for candidate in (os.path.join(root, "classes.txt"), os.path.join(os.path.dirname(root), "classes.txt")):
            if os.path.isfile(candidate):
                with open(candidate) as f:
                    classes = [line.strip() for line in f if line.strip()]
                break
    names = resolve_classes(classes)
    log = SkipLog("read_dota", strict=strict, verbose=verbose)
    records = []
    files = sorted(f for f in os.listdir(label_dir) if f.endswith(".txt"))
    for file_name in files:
        path = os.path.join(label_dir, file_name)
        image_id = file_name[:-4]
        try:
            parsed = parse_dota_label(path, names)
            image_path = _find_image(image_dir, image_id)
            width, height = _image_size(image_path, check_images)
            extra = {"format": "dota", "difficult_value": parsed["difficult_value"]}
            extra.update({k: v for k, v in parsed["header"].items()})
            records.append(
                ImageRecord(
                    image_path=image_path,
                    image_id=image_id,
                    width=width,
                    height=height,
                    polygons=parsed["polygons"],
                    classes=parsed["classes"],
                    difficult=parsed["difficult_value"] != 0,
                    extra=extra,
                )
            )
        except AnnotationError as error:
            log.fail(error)
    log.summary(len(records))
    return records, DatasetInfo(class_names=names, format="dota", root=root, num_skipped=log.count)


# --------------------------------------------------------------------------- writer


def write_dota_label(record, path, class_names, header=True):
    """Writes `record` as a labelTxt file. Header lines (`imagesource:`, `gsd:`) are written when
    `record.extra` has them (and `header` is True). Coordinates use the shortest text that reads
    back to the same float32, so reader -> writer -> reader is exact."""
    names = resolve_classes(class_names)
    extra = record.extra or {}
    lines = []
    if header:
        for key in ("imagesource", "gsd"):
            if key in extra:
                lines.append(f"{key}:{extra[key]}")
    raw = extra.get("difficult_value")
    use_raw = isinstance(raw, np.ndarray) and len(raw) == record.num_objects and np.array_equal(raw != 0, record.difficult)
    for i in range(record.num_objects):
        cls = int(record.classes[i])
        if not 0 <= cls < len(names):
            raise ValueError(f"{record.image_id}: class index {cls} outside the {len(names)} class names")
        if not np.all(np.isfinite(record.polygons[i])):
            raise ValueError(f"{record.image_id}: object {i} has a non-finite coordinate")
        value = int(raw[i]) if use_raw else int(bool(record.difficult[i]))
        coords = " ".join(format_number(v) for v in record.polygons[i])
        lines.append(f"{coords} {names[cls]} {value}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- Task1 results


def write_task1(detections, out_dir, class_names=None, prefix="Task1_"):
    """Writes DOTA Task1 result files, one per class: `<prefix><class>.txt`, lines
    `image_id score x1 y1 ... x4 y4` (scores at full precision, avoiding the ties of 2-decimal
    rounding; coordinates as float32 shortest text).

    detections: dict class name -> list of (image_id, score, poly [8]).
    class_names: when given, every class gets a file (empty if no detection).
    Returns the list of paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    names = list(class_names) if class_names is not None else sorted(detections)
    unknown = set(detections) - set(names)
    if unknown:
        raise ValueError(f"detections for classes {sorted(unknown)} not in class_names")
    paths = []
    for name in names:
        path = os.path.join(out_dir, f"{prefix}{name}.txt")
        with open(path, "w") as f:
            for image_id, score, poly in detections.get(name, []):
                poly = np.asarray(poly, np.float64).reshape(8)
                if not (np.all(np.isfinite(poly)) and np.isfinite(score)):
                    raise ValueError(f"{name}: non-finite detection for image {image_id}")
                coords = " ".join(format_number(v) for v in poly)
                f.write(f"{image_id} {float(score)!r} {coords}\n")
        paths.append(path)
    return paths


def read_task1(result_dir, class_names=None, prefix="Task1_"):
    """Reads Task1 result files from `result_dir`. Returns dict class -> list of
    (image_id, score, poly float64 [8]). Bad lines raise AnnotationError naming file and line."""
    if class_names is None:
        files = sorted(f for f in os.listdir(result_dir) if f.startswith(prefix) and f.endswith(".txt"))
        class_names = [f[len(prefix):-4] for f in files]
    out = {}
    for name in class_names:
        path = os.path.join(result_dir, f"{prefix}{name}.txt")
        dets = []
        if os.path.isfile(path):
            with open(path) as f:
                for number, line in enumerate(f, start=1):
                    tokens = line.split()
                    if not tokens:
                        continue
                    if len(tokens) != 10:
                        raise AnnotationError(path, f"expected 10 fields (image_id score x1 y1 ... x4 y4), got {len(tokens)}", number)
                    try:
                        values = np.array([float(t) for t in tokens[1:]])
                    except ValueError:
                        raise AnnotationError(path, f"score/coordinates are not numbers: {line.strip()!r}", number)
                    if not np.all(np.isfinite(values)):
                        raise AnnotationError(path, "non-finite score or coordinate", number)
                    dets.append((tokens[0], float(values[0]), values[1:]))
        out[name] = dets
    return out
