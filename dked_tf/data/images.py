"""Image files: the extensions we read, checking a file's bytes for truncation, reading one image
as RGB, listing the images of folders, and unique image ids for a list of image files.

numpy + OpenCV (+ Pillow when installed, as it is through matplotlib, for a rare slow check) only:
no TensorFlow, nothing of the package. `tflite/detect.py` loads this file by path on devices
without the package: keep its top-level imports to the standard library, numpy and OpenCV.
"""

import os
import struct
import sys
import warnings

import cv2
import numpy as np

try:  # Pillow decodes strictly (OpenCV accepts a truncated JPEG); a device may not have it
    from PIL import Image
except ImportError:  # pragma: no cover (a dependency of the package; the device runner may lack it)
    Image = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_JPEG, _PNG, _BMP, _GIF, _TIFF, _WEBP = "JPEG", "PNG", "BMP", "GIF", "TIFF", "WebP"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# bytes at the end of a JPEG after its end-of-image marker that still count as "ends with it"
_JPEG_TAIL = 64


def image_format(head):
    """The format named by a file's first bytes (at least 12): "JPEG", "PNG", "BMP", "GIF",
    "TIFF", "WebP", or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head.startswith(_PNG_SIGNATURE):
        return _PNG
    if head.startswith(b"BM"):
        return _BMP
    if head.startswith(b"GIF8"):
        return _GIF
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return _TIFF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _WEBP
    return None


def _png_has_iend(handle, size):
    """Walks the PNG chunks (seeking over their data): whether a whole IEND chunk is reached
    before the end of the file."""
    position = len(_PNG_SIGNATURE)
    while position + 8 <= size:
        handle.seek(position)
        length, kind = struct.unpack(">I4s", handle.read(8))
        if kind == b"IEND":
            return position + 12 + length <= size
        position += 12 + length
    return False


def _strict_decode_problem(path):
    """A full decode with Pillow, which (unlike OpenCV) fails on truncated data: the error text,
    or None when the image decodes. Without Pillow: "cannot check"."""
    if Image is None:
        return "Pillow is not installed to check it further"
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # remote sensing scenes are legitimately huge
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"{type(error).__name__}: {error}"
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return None


def image_file_problem(path):
    """What is wrong with an image file, judged from its bytes without decoding it: a message, or
    None when it looks whole.

    Checks: the file exists and is not empty; its first bytes name a format we read (BMP, JPEG,
    PNG, GIF, TIFF, WebP); a JPEG ends with its end-of-image marker (else, e.g. a phone's video
    appended after it, a full decode decides), a PNG reaches its IEND chunk, a BMP or WebP file
    is as long as its header says. Cost: a few small reads (measured 15-35 µs per file from
    the page cache, against 13-500 ms for a full decode of 800² to 4000² images).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return "image file is missing"
    size = os.path.getsize(path)
    if size == 0:
        return "image file is empty"
    with open(path, "rb") as handle:
        head = handle.read(32)
        kind = image_format(head)
        if kind is None:
            return f"corrupt image: not a BMP, JPEG, PNG, GIF, TIFF or WebP file (it starts with {head[:8].hex(' ')})"
        if kind == _JPEG:
            handle.seek(max(0, size - _JPEG_TAIL))
            if b"\xff\xd9" in handle.read():
                return None
            problem = _strict_decode_problem(path)
            return None if problem is None else f"truncated or corrupt JPEG: no end-of-image marker ({problem})"
        if kind == _PNG:
            handle.seek(max(0, size - len(_PNG_IEND)))
            if handle.read() == _PNG_IEND or _png_has_iend(handle, size):
                return None
            return "truncated PNG: the file ends before its IEND chunk"
        if kind == _BMP and len(head) >= 14:
            declared, _, _, data_offset = struct.unpack("<IHHI", head[2:14])
            if declared > size or data_offset > size:
                return f"truncated BMP: the header says {max(declared, data_offset)} bytes, the file has {size}"
        if kind == _WEBP:
            declared = struct.unpack("<I", head[4:8])[0] + 8
            if declared > size:
                return f"truncated WebP: the header says {declared} bytes, the file has {size}"
    return None


def read_image_rgb(path):
    """The image at `path` as uint8 [H, W, 3] RGB. Raises ValueError naming the file when it is
    missing, truncated (`image_file_problem`), or OpenCV cannot decode it."""
    problem = image_file_problem(path)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode the image (corrupt or unsupported variant of its format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(inputs):
    """Image paths from files and folders, in the given order (each folder's images with an
    IMAGE_EXTENSIONS extension, sorted by name, not recursive; a warning on stderr for a folder
    without images). Raises FileNotFoundError for an input that is neither file nor folder."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                print(f"warning: no images in folder {item}", file=sys.stderr)
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    return paths


def _id_text(text):
    """An image id usable in a Task1 line: no whitespace (a field separator there)."""
    return "_".join(text.split()) or "_"


def unique_image_ids(paths):
    """Image ids (the names in Task1 files) for image files, one per path, all different.

    An image's id is its file name without extension, like the datasets' ids. When that repeats
    (two folders holding `a.png`, or `a.png` and `a.jpg`), each image of the repeated name gets
    its path relative to the folder all the inputs share, without extension (`day1/a`,
    `day2/a`), or with it if that still repeats (`a.png`, `a.jpg`); whitespace becomes `_`.
    Returns (ids list[str], renamed: dict path -> id of the paths that did not get their plain
    name). The same path given twice keeps one id.
    """
    paths = [os.fspath(p) for p in paths]
    absolute = [os.path.abspath(p) for p in paths]
    stems = {full: _id_text(os.path.splitext(os.path.basename(full))[0]) for full in absolute}
    owners = {}
    for full in dict.fromkeys(absolute):  # distinct files, in input order
        owners.setdefault(stems[full], []).append(full)
    common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if paths else ""
    taken = {stem for stem, files in owners.items() if len(files) == 1}
    chosen = {files[0]: stem for stem, files in owners.items() if len(files) == 1}
    for files in owners.values():
        if len(files) == 1:
            continue
        relative = {full: os.path.relpath(full, common).replace(os.sep, "/") for full in files}
        plain = {full: _id_text(os.path.splitext(rel)[0]) for full, rel in relative.items()}
        for full in files:
            repeated = sum(value == plain[full] for value in plain.values()) > 1
            candidate = _id_text(relative[full]) if repeated else plain[full]
            while candidate in taken:
                candidate += "_"
            taken.add(candidate)
            chosen[full] = candidate
    ids = [chosen[full] for full in absolute]
    renamed = {path: chosen[full] for path, full in zip(paths, absolute) if chosen[full] != stems[full]}
    return ids, renamed


def announced_image_ids(paths):
    """`unique_image_ids(paths)`'s ids, with a note on stderr listing (up to five of) the images
    whose file name repeats and that therefore got a relative path as id."""
    ids, renamed = unique_image_ids(paths)
    if renamed:
        print(
            f"note: {len(renamed)} images share a file name with another; their image ids are paths "
            f"relative to their common folder: {', '.join(list(renamed.values())[:5])}",
            file=sys.stderr,
        )
    return ids


def readable_images(items, skipped=None):
    """Yields (path, image_id, image uint8 [H, W, 3] RGB) for the (path, image_id) pairs of
    `items` whose image reads (`read_image_rgb`). Any other is skipped with a warning on stderr
    naming it, and its path appended to the list `skipped` when given."""
    for path, image_id in items:
        try:
            image = read_image_rgb(path)
        except ValueError as error:
            print(f"warning: skipped an image that cannot be read: {error}", file=sys.stderr)
            if skipped is not None:
                skipped.append(path)
            continue
        yield path, image_id, image


def folder_batches_rgb(folder, limit):
    """Yields the first `limit` images of `folder` (sorted by name, IMAGE_EXTENSIONS) one at a
    time as uint8 [1, H, W, 3] RGB batches of one (e.g. TF-TRT INT8 calibration input)."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    for name in names:
        yield np.ascontiguousarray(read_image_rgb(os.path.join(folder, name)))[None]
