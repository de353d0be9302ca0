"""The one annotation record type that every reader returns and every consumer takes.

Also the error/skip bookkeeping shared by the readers: `AnnotationError` names the file and
line of bad input; `SkipLog` turns errors into warnings plus a printed summary when a reader
runs with `strict=False` (records are skipped and counted, never dropped silently); `Problems`
raises the first bad input line (strict) or skips and counts bad lines by kind (`dked-tf
evaluate --no-strict`); `read_imageset` reads an image-id list.
"""

import dataclasses
import os
import warnings

import cv2
import numpy as np


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


class InputError(ValueError):
    """Bad evaluation input; the message names the file (and line)."""


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


def read_imageset(path):
    """Image ids of an image-set file, one per line (blank lines skipped; a repeated id raises
    InputError naming both lines). Returns list[str] in file order."""
    ids, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            image_id = line.strip()
            if not image_id:
                continue
            if image_id in seen:
                raise InputError(f"{path}:{number}: image id {image_id!r} repeats line {seen[image_id]}")
            seen[image_id] = number
            ids.append(image_id)
    return ids


def check_image_file(path):
    """Raises AnnotationError when `path` is missing, empty or not a BMP/JPEG/PNG/GIF file
    (the formats `tf.io.decode_image` reads). Checks the magic bytes only (cheap)."""
    if not os.path.isfile(path):
        raise AnnotationError(path, "image file is missing")
    with open(path, "rb") as f:
        head = f.read(12)
    if not head:
        raise AnnotationError(path, "image file is empty")
    magic = (b"BM", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8")
    if not any(head.startswith(m) for m in magic):
        raise AnnotationError(path, "corrupt image: not a BMP, JPEG, PNG or GIF file")


def decode_check_image(path, width=None, height=None):
    """Fully decodes the image with OpenCV; raises AnnotationError if it fails or its size
    differs from the annotated (width, height)."""
    check_image_file(path)
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise AnnotationError(path, "corrupt image: OpenCV cannot decode it")
    h, w = image.shape[:2]
    if (width is not None and w != width) or (height is not None and h != height):
        raise AnnotationError(path, f"image is {w}x{h} pixels but the annotation says {width}x{height}")
