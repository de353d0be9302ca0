"""DOTA v1.0 / v1.5 / v2.0: labelTxt reader and writer, class lists, Task1 result files.

labelTxt (one file per image, named like the image): optional header lines `imagesource:...`
and `gsd:...`, then one object per line `x1 y1 x2 y2 x3 y3 x4 y4 category difficult` (the
difficult field may be missing: 0). `difficult` is 0, 1, or 2 (2 = truncated by tiling); the
record's bool `difficult` is `value != 0` and the raw value is kept in `extra["difficult_value"]`.

Two readings of a labelTxt file (`parse_dota_label`):

- dataset rules (`read_dota`, training): unlike the devkit, which skips lines it cannot parse,
  lines with a wrong number of fields, non-numeric or non-finite coordinates, unknown classes or
  a bad difficult flag are errors that name the file and line (or, with strict=False, warnings;
  the record is skipped and counted);
- devkit rules (`devkit=True`, `dked-tf evaluate`'s ground truth): like the DOTA devkit, any
  class name and any integer difficult flag are read; unlike it (it skips them silently), lines
  with another number of fields than 9 or 10 (other than `key:value` headers) and bad numbers
  are errors that name the file and line. With a `Problems` object (records.py) bad lines are
  reported to it, skipped and counted (`--no-strict`).

In both, bytes that are not UTF-8 are an error naming the file and line (with a `Problems`
object: the line is reported and skipped).

Task1 result files: `Task1_<class>.txt`, lines `image_id score x1 y1 ... x4 y4`
(`write_task1`, `read_task1`; one file in columns: `read_task1_file`).
"""

import math
import os
import struct
import warnings

import cv2
import numpy as np

from dked_tf.data.images import IMAGE_EXTENSIONS, Image
from dked_tf.data.records import (
    AnnotationError,
    DatasetInfo,
    ImageRecord,
    InputError,
    PolygonReport,
    SkipLog,
    check_image_file,
    read_text_lines,
    report_problem,
)
from dked_tf.files import write_text_atomic

DOTA_CLASSES = {
    "dota1.0": (
        "plane",
        "baseball-diamond",
        "bridge",
        "ground-track-field",
        "small-vehicle",
        "large-vehicle",
        "ship",
        "tennis-court",
        "basketball-court",
        "storage-tank",
        "soccer-ball-field",
        "roundabout",
        "harbor",
        "swimming-pool",
        "helicopter",
    ),
}
DOTA_CLASSES["dota1.5"] = DOTA_CLASSES["dota1.0"] + ("container-crane",)
DOTA_CLASSES["dota2.0"] = DOTA_CLASSES["dota1.5"] + ("airport", "helipad")
TASK1_PREFIX = "Task1_"


def resolve_classes(classes, default="dota1.0", comma_list=False):
    """Class names as a tuple.

    classes: None -> `default` (resolved the same way); a DOTA list name 'dota1.0' | 'dota1.5' |
        'dota2.0'; a sequence of names. Another string is, with comma_list=False, a list name
        spelled differently ('v1.5', '1.5', 'DOTA1.5'; ValueError if none), with comma_list=True
        (the `--classes` option of `dked-tf evaluate`) names separated by commas ('plane,ship';
        InputError when it names no class or repeats one).
    Raises ValueError for an unknown list name or repeated names in a sequence.
    """
    if classes is None:
        classes = default
    if isinstance(classes, str) and comma_list and classes not in DOTA_CLASSES:
        names = tuple(name.strip() for name in classes.split(",") if name.strip())
        if not names:
            raise InputError(f"--classes {classes!r} names no class")
        if len(set(names)) != len(names):
            raise InputError(f"--classes {classes!r} has duplicate names")
        return names
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
        check_image_file(path)
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise AnnotationError(path, "corrupt image: OpenCV cannot decode it")
        return image.shape[1], image.shape[0]
    if check_images:
        check_image_file(path)
    if os.path.isfile(path):
        size = image_size_from_header(path)
        if size is None and Image is not None:  # e.g. TIFF: Pillow reads the size lazily
            try:
                with Image.open(path) as image:
                    size = image.size
            except Exception:  # Pillow raises many kinds; OpenCV below decides
                size = None
        if size is None:
            image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise AnnotationError(path, "corrupt image: cannot read its size")
            size = (image.shape[1], image.shape[0])
        return int(size[0]), int(size[1])
    return 0, 0


# --------------------------------------------------------------------------- reader


def _float(token):
    """float(token), or None when it is not a number."""
    try:
        return float(token)
    except ValueError:
        return None


def _parse_float_rows(rows, width):
    """rows: list of lists of `width` number strings -> float64 [len(rows), width], or None if
    one does not parse (C-speed conversion of the common, clean case)."""
    try:
        values = list(map(float, [token for row in rows for token in row]))
    except ValueError:
        return None
    return np.array(values, np.float64).reshape(len(rows), width)


def _difficult_values(rows, devkit):
    """The difficult flags of 9/10-field rows (missing: 0), or None if one is bad: devkit rules
    take any integer, dataset rules only 0, 1 or 2."""
    if devkit:
        try:
            return [int(t[9]) if len(t) == 10 else 0 for t in rows]
        except ValueError:
            return None
    if any(len(t) == 10 and t[9] not in ("0", "1", "2") for t in rows):
        return None
    return [int(t[9]) if len(t) == 10 else 0 for t in rows]


def _label_line_problem(tokens, line, index, class_names, devkit):
    """What is wrong with one object line of a labelTxt file (message text), or None."""
    if len(tokens) not in (9, 10):
        if devkit:
            return f"{len(tokens)} fields, expected 'x1 y1 ... x4 y4 class [difficult]' (9 or 10)"
        return f"expected 9 or 10 fields (x1 y1 ... x4 y4 category [difficult]), got {len(tokens)}: {line.strip()!r}"
    values = [_float(t) for t in tokens[:8]]
    if devkit:
        if any(v is None or not math.isfinite(v) for v in values):
            return f"the 8 coordinates must be finite numbers: {' '.join(tokens[:8])}"
        if len(tokens) == 10 and _difficult_values([tokens], devkit) is None:
            return f"difficult must be an integer, got {tokens[9]!r}"
        return None
    if any(v is None for v in values):
        return f"coordinates are not numbers: {' '.join(tokens[:8])!r}"
    if not all(math.isfinite(v) for v in values):
        return f"non-finite coordinate in {' '.join(tokens[:8])!r}"
    if tokens[8] not in index:
        return f"unknown class {tokens[8]!r} (known: {', '.join(class_names)})"
    if len(tokens) == 10 and tokens[9] not in ("0", "1", "2"):
        return f"difficult must be 0, 1 or 2, got {tokens[9]!r}"
    return None


def parse_dota_label(path, class_names=None, *, devkit=False, problems=None):
    """Parses one labelTxt file (see the module docstring for the dataset and devkit rules).

    class_names: the known classes (dataset rules: required, other names are errors; devkit
        rules: optional, other names read with class index -1).
    problems: None raises AnnotationError (`file:line: ...`) at the first bad line; a
        records.Problems gets every bad line ("bad ground-truth lines") and it is skipped.
    Returns dict(polygons float64 [N, 8] pixels, names list[str] [N], classes int32 [N] (index
    into class_names, -1 if not there), difficult_value [N] (int8 0/1/2; devkit rules: int64),
    header dict of the `key:value` lines, lines int64 [N] (the line number of each object)).
    """
    index = {name: i for i, name in enumerate(class_names or ())}
    lines = read_text_lines(path, problems, "bad ground-truth lines")
    header, numbers, rows = {}, [], []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if tokens and len(tokens) < 9 and tokens[0].partition(":")[0].isidentifier() and ":" in tokens[0]:
            key, _, value = line.strip().partition(":")
            header[key.strip()] = value.strip()
            continue
        if not tokens:
            continue
        numbers.append(number)
        rows.append(tokens)
    flags = None
    if all(len(t) in (9, 10) for t in rows):  # the clean case, vectorised
        coords = _parse_float_rows([t[:8] for t in rows], 8)
        if coords is not None and np.isfinite(coords).all() and (devkit or all(t[8] in index for t in rows)):
            flags = _difficult_values(rows, devkit)
    if flags is None:  # a bad line somewhere: find and report it line by line
        keep, kept_numbers = [], []
        for number, tokens in zip(numbers, rows):
            message = _label_line_problem(tokens, lines[number - 1], index, class_names or (), devkit)
            if message is None:
                keep.append(tokens)
                kept_numbers.append(number)
            else:
                report_problem(problems, "bad ground-truth lines", path, message, number)
        rows, numbers = keep, kept_numbers
        coords = _parse_float_rows([t[:8] for t in rows], 8)
        flags = _difficult_values(rows, devkit)
    names = [t[8] for t in rows]
    return {
        "polygons": coords.reshape(len(rows), 8),
        "names": names,
        "classes": np.asarray([index.get(name, -1) for name in names], np.int32),
        "difficult_value": np.asarray(flags, np.int64 if devkit else np.int8).reshape(-1),
        "header": header,
        "lines": np.asarray(numbers, np.int64),
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
    check_images: True (image exists, valid and whole: `records.check_image_file`; size read from
        the header), "decode" (also a full decode), False (missing images allowed: width =
        height = 0 then).
    Objects whose polygon is no usable object (`records.polygon_problems`: zero area,
    self-intersecting, outside the image) are kept and reported in one warning (count, kinds,
    first file:line) and in `info.bad_polygons`; the training pipeline drops them.
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
    report = PolygonReport()
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
            extra.update(line=parsed["lines"], annotation=os.path.abspath(path))
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
            continue
        report.add(records[-1])
    log.summary(len(records))
    info = DatasetInfo(class_names=names, format="dota", root=root, num_skipped=log.count)
    report.warn("read_dota", info)
    return records, info


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
    use_raw = (
        isinstance(raw, np.ndarray) and len(raw) == record.num_objects and np.array_equal(raw != 0, record.difficult)
    )
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
    write_text_atomic(path, "".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- Task1 results


def write_task1(detections, out_dir, class_names=None, prefix=TASK1_PREFIX):
    """Writes DOTA Task1 result files, one per class: `<prefix><class>.txt`, lines
    `image_id score x1 y1 ... x4 y4` (scores at full precision, avoiding the ties of 2-decimal
    rounding; coordinates as float32 shortest text). Each file is written atomically (a
    temporary file, then renamed): a crash leaves the old file or the new one.

    detections: dict class name -> list of (image_id, score, poly [8]).
    class_names: when given, every class gets a file (empty if no detection).
    Returns the list of paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    names = list(class_names) if class_names is not None else sorted(detections)
    unknown = set(detections) - set(names)
    if unknown:
        raise ValueError(f"detections for classes {sorted(unknown)} not in class_names")
    texts = {}
    for name in names:
        rows = []
        for image_id, score, poly in detections.get(name, []):
            poly = np.asarray(poly, np.float64).reshape(8)
            if not (np.all(np.isfinite(poly)) and np.isfinite(score)):
                raise ValueError(f"{name}: non-finite detection for image {image_id}")
            if not str(image_id) or len(str(image_id).split()) != 1:
                raise ValueError(f"{name}: image id {image_id!r} is empty or has whitespace (a field separator)")
            coords = " ".join(format_number(v) for v in poly)
            rows.append(f"{image_id} {float(score)!r} {coords}\n")
        texts[os.path.join(out_dir, f"{prefix}{name}.txt")] = "".join(rows)
    for path, text in texts.items():  # every line checked before the first file is replaced
        write_text_atomic(path, text)
    return list(texts)


def _read_task1_fast(text, image_ids):
    """The common case in C speed: every non-blank line has exactly 10 fields, finite numbers
    and (when image_ids is given) a known image. Returns the columnar dict, or None to fall back
    to the line-by-line reader (which names the offending line)."""
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
            values = np.loadtxt(lines, dtype=np.float64, usecols=range(1, 10), comments=None, ndmin=2)
    except ValueError:
        return None
    if values.shape != (count, 9) or not np.isfinite(values).all():
        return None
    names = tokens[0::10]
    if image_ids is not None and not all(name in image_ids for name in names):
        return None
    return {"image_ids": names, "scores": values[:, 0].copy(), "polygons": values[:, 1:].copy()}


def _task1_count_message(tokens, devkit):
    """Message of a Task1 line with a wrong number of fields."""
    if devkit:
        return f"{len(tokens)} fields, expected 10 ('imgname score x1 y1 x2 y2 x3 y3 x4 y4')"
    return f"expected 10 fields (image_id score x1 y1 ... x4 y4), got {len(tokens)}"


def _task1_number_message(tokens, line, devkit):
    """Message of a Task1 line whose score or coordinates are not finite numbers."""
    if devkit:
        return f"score and coordinates must be finite numbers: {' '.join(tokens[1:])}"
    if any(_float(t) is None for t in tokens[1:]):
        return f"score/coordinates are not numbers: {line.strip()!r}"
    return "non-finite score or coordinate"


def read_task1_file(path, image_ids=None, problems=None, devkit=False):
    """One Task1 file -> {"image_ids": [D], "scores": float64 [D], "polygons": float64 [D, 8]
    pixels} in file order (the columnar detections form of evaluate_detections).

    Each line: `imgname score x1 y1 x2 y2 x3 y3 x4 y4` (10 fields, finite numbers); blank lines
    are skipped. image_ids: when given (a set), a detection of another image is a problem.
    problems: None raises AnnotationError (`file:line: ...`) at the first bad line; a
        records.Problems gets every bad line (in line order) and it is skipped.
    devkit: word the messages as `dked-tf evaluate` does (`9 fields, expected 10 ...`).
    A line of bytes that are not UTF-8 is a bad line too (named, or skipped with `problems`).
    """
    lines = read_text_lines(path, problems, "bad detection lines")
    text = "\n".join(lines)
    fast = _read_task1_fast(text, image_ids)
    if fast is not None:
        return fast
    found = []  # (line number, kind, message), reported in line order at the end
    numbers, rows = [], []
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 10:
            found.append((number, "bad detection lines", _task1_count_message(tokens, devkit)))
            continue
        numbers.append(number)
        rows.append(tokens)
    values = _parse_float_rows([t[1:] for t in rows], 9)
    if values is None:
        values = np.array([[_float(t) for t in row[1:]] for row in rows], np.float64).reshape(-1, 9)
    good = np.isfinite(values).all(axis=1)  # an unparsable token became nan
    for k in np.flatnonzero(~good):
        message = _task1_number_message(rows[k], lines[numbers[k] - 1], devkit)
        found.append((numbers[k], "bad detection lines", message))
    names = [t[0] for t in rows]
    if image_ids is not None:
        known = np.fromiter((name in image_ids for name in names), bool, len(names))
        for k in np.flatnonzero(good & ~known):
            found.append(
                (
                    numbers[k],
                    "detections of images outside the image set",
                    f"image {names[k]!r} is not in the image set",
                )
            )
        good &= known
    for number, kind, message in sorted(found, key=lambda item: item[0]):
        report_problem(problems, kind, path, message, number)
    return {
        "image_ids": [name for name, ok in zip(names, good) if ok],
        "scores": values[good, 0].copy(),
        "polygons": values[good, 1:].copy(),
    }


def read_task1(result_dir, class_names=None, prefix=TASK1_PREFIX):
    """Reads Task1 result files from `result_dir` (a class without a file has no detections).
    Returns dict class -> list of (image_id, score, poly float64 [8] pixels). Bad lines raise
    AnnotationError naming file and line."""
    if class_names is None:
        files = sorted(f for f in os.listdir(result_dir) if f.startswith(prefix) and f.endswith(".txt"))
        class_names = [f[len(prefix) : -4] for f in files]
    out = {}
    for name in class_names:
        path = os.path.join(result_dir, f"{prefix}{name}.txt")
        out[name] = []
        if os.path.isfile(path):
            columns = read_task1_file(path)
            out[name] = list(zip(columns["image_ids"], columns["scores"].tolist(), columns["polygons"]))
    return out
