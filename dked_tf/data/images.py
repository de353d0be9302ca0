"""Image files: the extensions we read, reading one image as RGB, listing images of folders.

numpy + OpenCV only (no TensorFlow).
"""

import os
import sys

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image_rgb(path):
    """The image at `path` as uint8 [H, W, 3] RGB. Raises ValueError naming the file when OpenCV
    cannot read it (missing, corrupt or unsupported format)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read the image (missing, corrupt or unsupported format)")
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


def folder_batches_rgb(folder, limit):
    """Yields the first `limit` images of `folder` (sorted by name, IMAGE_EXTENSIONS) one at a
    time as uint8 [1, H, W, 3] RGB batches of one (e.g. TF-TRT INT8 calibration input)."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    for name in names:
        yield np.ascontiguousarray(read_image_rgb(os.path.join(folder, name)))[None]
