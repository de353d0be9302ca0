"""The one annotation record type that every reader returns and every consumer takes."""

import dataclasses

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
    """

    image_path: str
    image_id: str
    width: int
    height: int
    polygons: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 8), np.float32))
    classes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int32))
    difficult: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), bool))

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


@dataclasses.dataclass
class DatasetInfo:
    """What goes with a list of records: the class names and the format they were read from."""

    class_names: tuple
    format: str  # "hrsc" or "dota"
    root: str = ""
