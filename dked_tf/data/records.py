"""The one annotation record type that every reader returns and every consumer takes.

Also the error/skip bookkeeping shared by the readers: `AnnotationError` names the file and
line of bad input; `SkipLog` turns errors into warnings plus a printed summary when a reader
runs with `strict=False` (records are skipped and counted, never dropped silently); `Problems`
raises the first bad input line (strict) or skips and counts bad lines by kind (`dked-tf
evaluate --no-strict`); `read_imageset` reads an image-id list; `read_text_lines` reads a text
file line by line, naming the line of bytes that are not UTF-8.

Ground-truth polygons that are no usable object (`polygon_problems`: zero area, self-intersecting,
outside their image) are kept in the records and reported once per read (`PolygonReport`: how
many of each kind and the first file:line); the training pipeline drops them, the evaluation
keeps them as the devkit does.
"""

import dataclasses
import os
import warnings

import cv2
import numpy as np

from dked_tf.data.images import image_file_problem
from dked_tf.ops.iou import SELF_INTERSECTING, VALID, VALIDITY_NAMES, ZERO_AREA, quad_validity


@dataclasses.dataclass
class ImageRecord:
    """One annotated image.

    image_path: path of the image file (may not exist for evaluation-only use).
    image_id: id without extension (`P0706`, `100000001`); names the image in result files.
    width, height: image size in pixels.
    polygons: float32 [N, 8], pixels, x1 y1 ... x4 y4.
    classes: int32 [N], index into the dataset's class names.
    difficult: bool [N] (DOTA's `2` — truncated by tiling — also reads as difficult).
    extra: format-specific details a writer needs for an exact round trip, e.g. HRSC2016's raw
        `mbox` float64 [N, 5], `class_id` (9-digit codes), `header` [N, 2]; DOTA's raw
        `difficult_value` int [N] (0/1/2) and header lines. Per-object entries are arrays whose
        first dimension is N; `select` keeps them in step with the polygons.
    """

    image_path: str
    image_id: str
    width: int
    height: int
    polygons: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 8), np.float32))
    classes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int32))
    difficult: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), bool))
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.polygons = np.asarray(self.polygons, np.float32).reshape(-1, 8)
        self.classes = np.asarray(self.classes, np.int32).reshape(-1)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        n = len(self.polygons)
        if len(self.classes) != n or len(self.difficult) != n:
            raise ValueError(
                f"ImageRecord {self.image_id!r}: polygons [{n}, 8], classes [{len(self.classes)}] "
                f"and difficult [{len(self.difficult)}] must have the same length"
            )

    @property
    def num_objects(self):
        return len(self.polygons)

    def select(self, keep):
        """A copy with only the objects where `keep` (bool [N] or int indices) holds.

        Per-object arrays in `extra` (first dimension N) are selected alike; other entries are
        copied unchanged.
        """
        keep = np.asarray(keep)
        n = self.num_objects
        extra = {}
        for key, value in self.extra.items():
            if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
                extra[key] = value[keep]
            else:
                extra[key] = value
        return dataclasses.replace(
            self,
            polygons=self.polygons[keep],
            classes=self.classes[keep],
            difficult=self.difficult[keep],
            extra=extra,
        )


@dataclasses.dataclass
class DatasetInfo:
    """What goes with a list of records: the class names and the format they were read from."""

    class_names: tuple
    format: str  # "hrsc" or "dota"
    root: str = ""
    num_skipped: int = 0  # records skipped by a reader running with strict=False
    # ground-truth polygons that are no usable object, kind -> count (`polygon_problems`), and
    # where the first one is (`file:line (kind)`); kept in the records
    bad_polygons: dict = dataclasses.field(default_factory=dict)
    first_bad_polygon: str = ""


class AnnotationError(ValueError):
    """Bad annotation or image input; the message starts with `file:line:`."""

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class SkipLog:
    """Raises (strict) or warns-and-counts (not strict) reader errors; prints a summary."""

    def __init__(self, reader_name, strict=True, verbose=1):
        self.reader_name = reader_name
        self.strict = strict
        self.verbose = verbose
        self.messages = []

    def fail(self, error):
        """Handles one AnnotationError: raise it when strict, else warn and count it."""
        if self.strict:
            raise error
        warnings.warn(f"{self.reader_name}: skipped: {error}", stacklevel=3)
        self.messages.append(str(error))

    @property
    def count(self):
        return len(self.messages)

    def summary(self, num_read):
        if self.count and self.verbose:
            print(f"{self.reader_name}: read {num_read} records, skipped {self.count} (strict=False); first problems:")
            for message in self.messages[:5]:
                print(f"  {message}")


class InputError(AnnotationError):
    """Bad evaluation input; the message names the file (and line). An AnnotationError whose
    message is given whole (`InputError("file:3: what is wrong")`)."""

    def __init__(self, message, path=None, line=None):
        ValueError.__init__(self, message)
        self.path = path
        self.line = line


class Problems:
    """Raises the first problem as InputError (strict) or counts problems of each kind (not
    strict: the bad line or file is skipped by the reader that reports it)."""

    def __init__(self, strict):
        self.strict = strict
        self.counts = {}
        self.examples = []

    def report(self, kind, message):
        """kind: what was skipped, e.g. "bad detection lines"; message: `file:line: what is wrong`."""
        if self.strict:
            raise InputError(message)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def summary(self):
        """One line per kind of skipped input plus up to 5 example messages; "" when nothing was skipped."""
        if not self.counts:
            return ""
        total = sum(self.counts.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        lines = [f"skipped {total} input lines/files (--no-strict): {kinds}"]
        lines += [f"  e.g. {message}" for message in self.examples]
        return "\n".join(lines)


def report_problem(problems, kind, path, message, line=None):
    """Raises AnnotationError(path, message, line) when `problems` is None, else reports its
    text (`path:line: message`) to the Problems object (which raises it when strict)."""
    error = AnnotationError(path, message, line)
    if problems is None:
        raise error
    problems.report(kind, str(error))


def read_text_lines(path, problems=None, kind="undecodable lines"):
    """The lines of a UTF-8 text file (str.splitlines; a BOM is dropped). A line that is not
    UTF-8 raises AnnotationError naming the file, line and byte (problems=None), or is reported
    to `problems` as `kind` and read as an empty line (so line numbers stay)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        pass
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError as error:
            message = f"not UTF-8 text: byte {raw[error.start : error.start + 1].hex()} at column {error.start + 1}"
            report_problem(problems, kind, path, message, number)
            lines.append("")
    return lines


def read_imageset(path, strip_extensions=()):
    """Image ids of an image-set file, one per line (blank lines skipped). A repeated id, or a
    line that is not UTF-8, raises InputError (an AnnotationError) naming the file and line.
    strip_extensions: ids ending with one of these (lower case, e.g. ".xml") lose it.
    Returns list[str] in file order."""
    ids, seen = [], {}
    try:
        lines = read_text_lines(path)
    except AnnotationError as error:
        raise InputError(str(error), error.path, error.line) from None
    for number, line in enumerate(lines, 1):
        image_id = line.strip()
        if not image_id:
            continue
        if strip_extensions and image_id.lower().endswith(tuple(strip_extensions)):
            image_id = os.path.splitext(image_id)[0]
        if image_id in seen:
            raise InputError(f"{path}:{number}: image id {image_id!r} repeats line {seen[image_id]}", path, number)
        seen[image_id] = number
        ids.append(image_id)
    return ids


def check_image_file(path):
    """Raises AnnotationError when `path` is missing, empty, not an image file we read, or
    truncated (`dked_tf.data.images.image_file_problem`: the file's bytes, no decoding)."""
    problem = image_file_problem(path)
    if problem is not None:
        raise AnnotationError(path, problem)


def decode_check_image(path, width=None, height=None):
    """`check_image_file`, then a full decode with OpenCV; raises AnnotationError if it fails or
    the size differs from the annotated (width, height)."""
    check_image_file(path)
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise AnnotationError(path, "corrupt image: OpenCV cannot decode it")
    h, w = image.shape[:2]
    if (width is not None and w != width) or (height is not None and h != height):
        raise AnnotationError(path, f"image is {w}x{h} pixels but the annotation says {width}x{height}")


# ----------------------------------------------------------------------------- polygons

OUTSIDE_IMAGE = 3
PROBLEM_NAMES = {ZERO_AREA: VALIDITY_NAMES[ZERO_AREA], SELF_INTERSECTING: VALIDITY_NAMES[SELF_INTERSECTING]}
PROBLEM_NAMES[OUTSIDE_IMAGE] = "outside the image"
# A polygon whose area is below this fraction of its bounding box's diagonal² is a line or a
# point ("zero area"; float32 rounding of collinear points stays far below it).
ZERO_AREA_RTOL = 1e-6
# A polygon with a vertex farther outside the image than this fraction of the image's longer
# side, or with nothing inside the image, is "outside the image".
OUTSIDE_MARGIN = 0.5


def polygon_problems(polygons, width=0, height=0):
    """Which ground-truth polygons are no usable object: int8 [N], 0 (VALID) or a key of
    PROBLEM_NAMES: ZERO_AREA (all points equal, collinear), SELF_INTERSECTING (a bow-tie),
    OUTSIDE_IMAGE (checked where width and height are > 0).
    polygons: float [N, 8] pixels; width, height: the image size, scalars or [N] (one per
    polygon; 0 = unknown). Non-finite rows raise ValueError."""
    polygons = np.asarray(polygons, np.float64).reshape(-1, 8)
    codes = quad_validity(polygons, ZERO_AREA_RTOL)
    width = np.broadcast_to(np.asarray(width, np.float64), codes.shape)
    height = np.broadcast_to(np.asarray(height, np.float64), codes.shape)
    known = (width > 0) & (height > 0) & (codes == VALID)
    if known.any():
        margin = OUTSIDE_MARGIN * np.maximum(width, height)
        xs, ys = polygons[:, 0::2], polygons[:, 1::2]
        low_x, high_x, low_y, high_y = xs.min(1), xs.max(1), ys.min(1), ys.max(1)
        far = (low_x < -margin) | (high_x > width + margin) | (low_y < -margin) | (high_y > height + margin)
        nothing_inside = (high_x <= 0) | (low_x >= width) | (high_y <= 0) | (low_y >= height)
        codes[known & (far | nothing_inside)] = OUTSIDE_IMAGE
    return codes


def problem_counts(codes):
    """polygon_problems codes -> dict kind name -> count (kinds that occur, in code order)."""
    codes = np.asarray(codes)
    return {PROBLEM_NAMES[c]: int(np.count_nonzero(codes == c)) for c in sorted(PROBLEM_NAMES) if (codes == c).any()}


def polygon_problem_counts(polygons, width=0, height=0):
    """dict kind name -> count of `polygon_problems(polygons, width, height)`."""
    return problem_counts(polygon_problems(polygons, width, height))


def object_location(record, index):
    """`file:line` of object `index` of a record (its annotation file and line when the reader
    recorded them, else the image path)."""
    extra = record.extra or {}
    path = extra.get("annotation") or record.image_path
    lines = extra.get("line")
    if isinstance(lines, np.ndarray) and len(lines) == record.num_objects and lines[index] > 0:
        return f"{path}:{int(lines[index])}"
    return f"{path} (object {index + 1})"


class PolygonReport:
    """Counts the ground-truth polygons of records that are no usable object and remembers the
    first one: `add(record)` per record, then `summary()`."""

    def __init__(self):
        self.counts = {}
        self.first = ""

    def add(self, record, codes=None):
        """Checks one record (or counts its `codes`, when already computed); returns its
        polygon_problems codes."""
        if codes is None:
            codes = polygon_problems(record.polygons, record.width, record.height)
        bad = np.flatnonzero(codes != VALID)
        for name, count in problem_counts(codes).items():
            self.counts[name] = self.counts.get(name, 0) + count
        if len(bad) and not self.first:
            self.first = f"{object_location(record, int(bad[0]))} ({PROBLEM_NAMES[int(codes[bad[0]])]})"
        return codes

    @property
    def total(self):
        return sum(self.counts.values())

    def summary(self, what="ground-truth polygons"):
        """One line: how many, of which kinds, the first; "" when none."""
        if not self.total:
            return ""
        kinds = ", ".join(f"{count} {name}" for name, count in self.counts.items())
        return f"{self.total} {what} are no usable object ({kinds}); first: {self.first}"

    def warn(self, reader_name, info=None, stacklevel=3):
        """Warns with the summary (training drops them, evaluation keeps them) and records it in
        `info` (DatasetInfo)."""
        if info is not None:
            info.bad_polygons = dict(self.counts)
            info.first_bad_polygon = self.first
        if self.total:
            warnings.warn(
                f"{reader_name}: {self.summary()}. Training drops them; evaluation keeps them, as the "
                "DOTA devkit does (positives that no detection can match)",
                stacklevel=stacklevel,
            )
