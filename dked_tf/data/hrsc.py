"""HRSC2016: reader and writer of the XML annotations (`HRSC_Image` / `HRSC_Objects`).

Layouts understood by `read_hrsc(root)`:

- `root/FullDataSet/{AllImages,Annotations}` + `root/ImageSets/{trainval,test}.txt` (mmrotate);
- `root/Train/{AllImages,Annotations}` and `root/Test/{AllImages,Annotations}` (the original
  release; `imageset="trainval"` reads `Train`, `"test"` reads `Test`);
- `root/{AllImages,Annotations}` (e.g. `root` = `FullDataSet`), with optional
  `root/ImageSets` or `root/../ImageSets`;
- `root` = a directory of XML files (images looked up in `../AllImages`, then next to the XML).

Objects become polygons through `mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang` (angle in
radians, y down: the `mbox_w` side points along (cos ang, sin ang)). Tasks: `class_mode="ship"`
(HRSC2016 L1, one class) or `"31"` (the 31 classes of mmrotate's `HRSC_CLASSES_ID`).
"""

import os
import xml.parsers.expat

import numpy as np

from dked_tf.data.records import (
    AnnotationError,
    DatasetInfo,
    ImageRecord,
    PolygonReport,
    SkipLog,
    check_image_file,
    decode_check_image,
    read_imageset,
)
from dked_tf.files import write_text_atomic
from dked_tf.ops.obb import mbox_to_poly, poly_to_rbox, rbox_to_mbox

# Two-digit ids of the 31-class task (the 9-digit XML `Class_ID` is "1000000" + two digits),
# with the names mmrotate uses for them.
HRSC_CLASS_IDS = (
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "07",
    "08",
    "09",
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
    "18",
    "19",
    "20",
    "22",
    "24",
    "25",
    "26",
    "27",
    "28",
    "29",
    "30",
    "31",
    "32",
    "33",
)
HRSC_CLASS_NAMES_31 = (
    "ship",
    "aircraft carrier",
    "warcraft",
    "merchant ship",
    "Nimitz",
    "Enterprise",
    "Arleigh Burke",
    "WhidbeyIsland",
    "Perry",
    "Sanantonio",
    "Ticonderoga",
    "Kitty Hawk",
    "Kuznetsov",
    "Abukuma",
    "Austen",
    "Tarawa",
    "Blue Ridge",
    "Container",
    "OXo|--)",
    "Car carrier([]==[])",
    "Hovercraft",
    "yacht",
    "CntShip(_|.--.--|_]=",
    "Cruise",
    "submarine",
    "lute",
    "Medical",
    "Car carrier(======|",
    "Ford-class",
    "Midway-class",
    "Invincible-class",
)
SHIP_CLASS_ID = "100000001"
IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff")


def class_names_for(class_mode):
    """("ship",) for the L1 task, the 31 names for `class_mode="31"`."""
    if class_mode == "ship":
        return ("ship",)
    if str(class_mode) == "31":
        return HRSC_CLASS_NAMES_31
    raise ValueError(f"class_mode must be 'ship' or '31', got {class_mode!r}")


# --------------------------------------------------------------------------- XML with lines


class _Node:
    __slots__ = ("tag", "line", "text", "children")

    def __init__(self, tag, line):
        self.tag, self.line, self.text, self.children = tag, line, "", []

    def find(self, tag):
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag):
        return [c for c in self.children if c.tag == tag]


def _parse_xml(path):
    """Parses `path` into _Node objects that remember their line numbers."""
    with open(path, "rb") as f:
        data = f.read()
    parser = xml.parsers.expat.ParserCreate()
    stack, roots = [], []

    def start(tag, _attrs):
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag):
        node = stack.pop()
        node.text = node.text.strip()

    def chars(text):
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise AnnotationError(path, f"malformed XML: {xml.parsers.expat.ErrorString(e.code)}", e.lineno) from e
    return roots[0]


def _field(path, node, tag, kind=float, default=None):
    child = node.find(tag)
    if child is None or child.text == "":
        if default is not None:
            return default
        raise AnnotationError(path, f"<{node.tag}> has no <{tag}>", node.line)
    try:
        value = kind(child.text)
    except ValueError:
        raise AnnotationError(path, f"<{tag}> is not a {kind.__name__}: {child.text!r}", child.line) from None
    if kind is float and not np.isfinite(value):
        raise AnnotationError(path, f"<{tag}> is not finite: {child.text!r}", child.line)
    return value


# --------------------------------------------------------------------------- geometry


def _mbox_to_poly(mbox):
    """mbox float64 [N, 5] (cx, cy, w, h, ang radians) -> poly float64 [N, 8] pixels."""
    return np.asarray(mbox_to_poly(np.asarray(mbox, np.float64)), np.float64).reshape(-1, 8)


def _poly_to_mbox(polys):
    """poly [N, 8] pixels -> mbox float64 [N, 5] of the minimum-area rectangle (angle in radians)."""
    polys = np.asarray(polys, np.float64).reshape(-1, 8)
    return np.asarray(rbox_to_mbox(poly_to_rbox(polys)), np.float64).reshape(-1, 5)


# --------------------------------------------------------------------------- layout


def _find_layout(root, imageset):
    """Returns a list of (annotation_dir, image_dir, ids or None) to read."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"HRSC2016 root {root} is not a directory")

    def ids_file(*candidates):
        for c in candidates:
            if os.path.isfile(c):
                return c
        raise FileNotFoundError(f"no ImageSets file for imageset={imageset!r}; looked at {candidates}")

    if imageset not in (None, "trainval", "test", "train", "val"):
        raise ValueError(f"imageset must be None, 'trainval', 'train', 'val' or 'test', got {imageset!r}")

    full = os.path.join(root, "FullDataSet")
    if os.path.isdir(os.path.join(full, "Annotations")):
        ids = None
        if imageset:
            ids = ids_file(os.path.join(root, "ImageSets", f"{imageset}.txt"))
        return [(os.path.join(full, "Annotations"), os.path.join(full, "AllImages"), ids)]
    if os.path.isdir(os.path.join(root, "Train")) or os.path.isdir(os.path.join(root, "Test")):
        parts = {"trainval": ["Train"], "train": ["Train"], "val": ["Train"], "test": ["Test"], None: ["Train", "Test"]}
        out = []
        for part in parts[imageset]:
            d = os.path.join(root, part)
            if not os.path.isdir(d):
                raise FileNotFoundError(f"{d} is missing")
            ids = None
            if imageset in ("train", "val"):
                ids = ids_file(os.path.join(root, "ImageSets", f"{imageset}.txt"), os.path.join(d, f"{imageset}.txt"))
            out.append((os.path.join(d, "Annotations"), os.path.join(d, "AllImages"), ids))
        return out
    if os.path.isdir(os.path.join(root, "Annotations")):
        ids = None
        if imageset:
            ids = ids_file(
                os.path.join(root, "ImageSets", f"{imageset}.txt"),
                os.path.join(os.path.dirname(root), "ImageSets", f"{imageset}.txt"),
            )
        return [(os.path.join(root, "Annotations"), os.path.join(root, "AllImages"), ids)]
    # a plain directory of XML files
    if imageset:
        raise FileNotFoundError(f"{root}: a bare annotation directory has no ImageSets for imageset={imageset!r}")
    image_dir = os.path.join(os.path.dirname(root), "AllImages")
    return [(root, image_dir if os.path.isdir(image_dir) else root, None)]


def _read_ids(path):
    """Ids of an ImageSets file (`.xml` or image extensions dropped); a repeated id raises
    AnnotationError naming the file and line."""
    return read_imageset(path, strip_extensions=(".xml",) + IMAGE_EXTENSIONS)


def _find_image(image_dir, xml_dir, file_name, file_fmt, image_id):
    names = []
    if file_name:
        stem = file_name if os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS else None
        if stem:
            names.append(file_name)
        if file_fmt:
            names.append(f"{file_name}.{file_fmt}")
        names += [file_name + ext for ext in IMAGE_EXTENSIONS]
    names += [image_id + ext for ext in IMAGE_EXTENSIONS]
    for d in (image_dir, xml_dir):
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    return os.path.join(image_dir, names[0] if names else image_id + ".bmp")


# --------------------------------------------------------------------------- reader


def read_hrsc_xml(xml_path, image_dir=None, class_mode="ship", check_images=True):
    """Reads one HRSC2016 XML file into an ImageRecord (raises AnnotationError on bad input).

    check_images: True checks that the image exists and has a valid header, "decode" also
    decodes it and compares its size, False skips the image checks.
    """
    class_mode = "31" if str(class_mode) == "31" else class_mode
    class_names_for(class_mode)
    xml_dir = os.path.dirname(os.path.abspath(xml_path))
    image_dir = image_dir or xml_dir
    root = _parse_xml(xml_path)
    if root.tag != "HRSC_Image":
        raise AnnotationError(xml_path, f"root element is <{root.tag}>, expected <HRSC_Image>", root.line)
    image_id = _field(xml_path, root, "Img_ID", str, default=os.path.splitext(os.path.basename(xml_path))[0])
    file_name = _field(xml_path, root, "Img_FileName", str, default=image_id)
    file_fmt = _field(xml_path, root, "Img_FileFmt", str, default="bmp")
    width = _field(xml_path, root, "Img_SizeWidth", int)
    height = _field(xml_path, root, "Img_SizeHeight", int)
    depth = _field(xml_path, root, "Img_SizeDepth", int, default=3)
    if width <= 0 or height <= 0:
        raise AnnotationError(xml_path, f"image size {width}x{height} is not positive", root.find("Img_SizeWidth").line)

    mboxes, hbbs, headers, class_ids, object_ids, difficult, truncated, classes = [], [], [], [], [], [], [], []
    lines = []
    objects_node = root.find("HRSC_Objects")
    for obj in objects_node.findall("HRSC_Object") if objects_node is not None else []:
        mbox = [_field(xml_path, obj, t) for t in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")]
        if mbox[2] <= 0 or mbox[3] <= 0:
            raise AnnotationError(xml_path, f"object has non-positive mbox size {mbox[2]} x {mbox[3]}", obj.line)
        class_id = _field(xml_path, obj, "Class_ID", str, default=SHIP_CLASS_ID)
        if class_mode == "ship":
            classes.append(0)
        else:
            two = class_id[-2:]
            if len(class_id) != 9 or not class_id.isdigit() or two not in HRSC_CLASS_IDS:
                line = obj.find("Class_ID").line if obj.find("Class_ID") is not None else obj.line
                raise AnnotationError(xml_path, f"unknown Class_ID {class_id!r} for the 31-class task", line)
            classes.append(HRSC_CLASS_IDS.index(two))
        mboxes.append(mbox)
        hbbs.append(
            [_field(xml_path, obj, t, float, default=np.nan) for t in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")]
        )
        headers.append([_field(xml_path, obj, t, float, default=np.nan) for t in ("header_x", "header_y")])
        class_ids.append(class_id)
        object_ids.append(_field(xml_path, obj, "Object_ID", str, default=str(len(object_ids))))
        difficult.append(bool(_field(xml_path, obj, "difficult", int, default=0)))
        truncated.append(bool(_field(xml_path, obj, "truncated", int, default=0)))
        lines.append(obj.line)

    mbox_array = np.asarray(mboxes, np.float64).reshape(-1, 5)
    image_path = _find_image(image_dir, xml_dir, file_name, file_fmt, image_id)
    if check_images == "decode":
        decode_check_image(image_path, width, height)
    elif check_images:
        check_image_file(image_path)
    return ImageRecord(
        image_path=image_path,
        image_id=image_id,
        width=width,
        height=height,
        polygons=_mbox_to_poly(mbox_array).astype(np.float32),
        classes=np.asarray(classes, np.int32),
        difficult=np.asarray(difficult, bool),
        extra={
            "format": "hrsc",
            "mbox": mbox_array,
            "hbb": np.asarray(hbbs, np.float64).reshape(-1, 4),
            "header": np.asarray(headers, np.float64).reshape(-1, 2),
            "class_id": np.asarray(class_ids, dtype=object),
            "object_id": np.asarray(object_ids, dtype=object),
            "truncated": np.asarray(truncated, bool),
            "line": np.asarray(lines, np.int64),
            "annotation": os.path.abspath(xml_path),
            "file_name": file_name,
            "file_fmt": file_fmt,
            "depth": depth,
        },
    )


def read_hrsc(root, imageset=None, class_mode="ship", strict=True, check_images=True, verbose=1):
    """Reads an HRSC2016 dataset (see the module docstring for the layouts).

    root: dataset root, `FullDataSet`, or a directory of XML files.
    imageset: None (every annotation), "trainval", "test" (also "train"/"val" when such files
        exist under ImageSets).
    class_mode: "ship" (one class, the standard L1 task) or "31".
    strict: raise AnnotationError (naming file and line) on bad input; with False, warn, skip the
        record, and print a summary of skipped records at the end.
    check_images: True (file exists, valid and whole: `records.check_image_file`), "decode" (also
        a full decode + size), False.
    Objects whose polygon is no usable object (`records.polygon_problems`: zero area, outside the
    image) are kept and reported in one warning (count, kinds, first file:line) and in
    `info.bad_polygons`; the training pipeline drops them. A repeated id in the ImageSets file
    raises AnnotationError naming the file and line.
    Returns: (list[ImageRecord], DatasetInfo); records sorted by image id.
    """
    class_mode = "31" if str(class_mode) == "31" else class_mode
    names = class_names_for(class_mode)
    log = SkipLog("read_hrsc", strict=strict, verbose=verbose)
    report = PolygonReport()
    records = []
    for ann_dir, image_dir, ids_path in _find_layout(root, imageset):
        if not os.path.isdir(ann_dir):
            raise FileNotFoundError(f"annotation directory {ann_dir} is missing")
        if ids_path:
            ids = _read_ids(ids_path)
            xml_paths = [os.path.join(ann_dir, i + ".xml") for i in ids]
        else:
            xml_paths = sorted(os.path.join(ann_dir, f) for f in os.listdir(ann_dir) if f.lower().endswith(".xml"))
        for xml_path in xml_paths:
            try:
                if not os.path.isfile(xml_path):
                    raise AnnotationError(
                        xml_path, f"annotation listed in {ids_path} is missing" if ids_path else "missing"
                    )
                records.append(read_hrsc_xml(xml_path, image_dir, class_mode, check_images))
            except AnnotationError as error:
                log.fail(error)
                continue
            report.add(records[-1])
    log.summary(len(records))
    records.sort(key=lambda r: r.image_id)
    info = DatasetInfo(class_names=names, format="hrsc", root=os.path.abspath(str(root)), num_skipped=log.count)
    report.warn("read_hrsc", info)
    return records, info


# --------------------------------------------------------------------------- writer


def poly_hbb(polys):
    """poly [N, 8] -> float64 [N, 4] xmin, ymin, xmax, ymax (HRSC `box_*`)."""
    polys = np.asarray(polys, np.float64).reshape(-1, 8)
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1) if len(polys) else np.zeros((0, 4))


def _num(value):
    """Text of a number that reads back to the same float64 (integers without a dot)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def write_hrsc_xml(record, path, class_names=None, image_file_name=None, image_format=None):
    """Writes `record` as an HRSC2016 XML file (the layout of the real annotations).

    When `record.extra` holds the raw HRSC fields (`mbox`, `class_id`, `header`, ...) and they
    still describe `record.polygons`, they are written unchanged, so reader -> writer -> reader
    is exact. Otherwise each polygon is written as its minimum-area rectangle, `Class_ID` from
    `class_names` (31-class names, else the generic ship id 100000001), `header` at the end of
    the long side in the +mbox_ang direction.
    """
    extra = record.extra or {}
    n = record.num_objects
    mbox = extra.get("mbox")
    raw_ok = (
        isinstance(mbox, np.ndarray)
        and mbox.shape == (n, 5)
        and np.allclose(_mbox_to_poly(mbox), record.polygons, atol=1e-2)
    )
    if not raw_ok:
        mbox = _poly_to_mbox(record.polygons)
    polys = record.polygons.astype(np.float64)

    def per_object(key, fallback):
        value = extra.get(key)
        if raw_ok and isinstance(value, np.ndarray) and len(value) == n:
            return value
        return fallback

    if class_names is not None and tuple(class_names) == HRSC_CLASS_NAMES_31:
        default_ids = np.asarray(["1000000" + HRSC_CLASS_IDS[c] for c in record.classes], dtype=object)
    else:
        default_ids = np.asarray([SHIP_CLASS_ID] * n, dtype=object)
    class_ids = per_object("class_id", default_ids)
    hbb = per_object("hbb", np.round(poly_hbb(polys)))
    half_long = mbox[:, 2] / 2
    bow = np.stack([mbox[:, 0] + np.cos(mbox[:, 4]) * half_long, mbox[:, 1] + np.sin(mbox[:, 4]) * half_long], 1)
    header = per_object("header", np.round(bow))
    object_ids = per_object("object_id", np.asarray([str(i + 1) for i in range(n)], dtype=object))
    truncated = per_object("truncated", np.zeros(n, bool))

    file_name = image_file_name or extra.get("file_name") or record.image_id
    file_fmt = image_format or extra.get("file_fmt") or (os.path.splitext(record.image_path)[1].lstrip(".") or "bmp")
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<HRSC_Image>",
        f"  <Img_ID>{record.image_id}</Img_ID>",
        "  <Place_ID>0</Place_ID>",
        "  <Source_ID>0</Source_ID>",
        "  <Img_NO>0</Img_NO>",
        f"  <Img_FileName>{file_name}</Img_FileName>",
        f"  <Img_FileFmt>{file_fmt}</Img_FileFmt>",
        f"  <Img_SizeWidth>{int(record.width)}</Img_SizeWidth>",
        f"  <Img_SizeHeight>{int(record.height)}</Img_SizeHeight>",
        f"  <Img_SizeDepth>{int(extra.get('depth', 3))}</Img_SizeDepth>",
        "  <Img_Resolution>1</Img_Resolution>",
        "  <Annotated>1</Annotated>",
        "  <HRSC_Objects>",
    ]
    for i in range(n):
        h = hbb[i]
        lines += [
            "    <HRSC_Object>",
            f"      <Object_ID>{object_ids[i]}</Object_ID>",
            f"      <Class_ID>{class_ids[i]}</Class_ID>",
            f"      <Object_NO>{i + 1}</Object_NO>",
            f"      <truncated>{int(bool(truncated[i]))}</truncated>",
            f"      <difficult>{int(bool(record.difficult[i]))}</difficult>",
        ]
        for tag, v in zip(("box_xmin", "box_ymin", "box_xmax", "box_ymax"), h):
            if np.isfinite(v):
                lines.append(f"      <{tag}>{_num(v)}</{tag}>")
        for tag, v in zip(("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang"), mbox[i]):
            lines.append(f"      <{tag}>{_num(v)}</{tag}>")
        for tag, v in zip(("header_x", "header_y"), header[i]):
            if np.isfinite(v):
                lines.append(f"      <{tag}>{_num(v)}</{tag}>")
        lines += ["      <segmented>0</segmented>", "      <seg_color></seg_color>", "    </HRSC_Object>"]
    lines += ["  </HRSC_Objects>", "</HRSC_Image>", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "\n".join(lines))


def write_imageset(ids, path):
    """Writes an `ImageSets/*.txt` file: one image id per line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "".join(f"{i}\n" for i in ids))
