"""`dked-tf predict`: detect oriented objects in images or folders of images of any size.

Images no larger than the tile size are letterboxed whole to the model input. Larger images are
cut into overlapping tiles (`--tile-size`, `--overlap`, in original pixels), each tile is
letterboxed to the model input, detections are mapped back to the image and merged across tiles
with class-aware rotated (polygon) NMS. Writes DOTA Task1 files (`Task1_<class>.txt`:
`image_id score x1 y1 ... x4 y4`, original pixels) and, unless --no-draw, the images with their
detections drawn. The detection is `dked_tf.Detector`'s (the same detections in Python).

An unreadable image is skipped with a warning naming it (the others are processed, every Task1
file is written); inputs whose file names repeat get their relative paths as image ids; bad
options (an overlap not smaller than the tile size) raise ConfigError before the model loads.
"""

import os
import sys
import time

from dked_tf.data.images import list_images
from dked_tf.experiment.inference import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_SCORE_THRESHOLD,
    Detector,
    check_tiling,
)
from dked_tf.experiment.predict import predict_images

DESCRIPTION = (
    "Detect oriented objects in images or folders of any size with a trained detector. Large "
    "images are tiled with overlap and the tiles' detections merged with rotated NMS. Writes DOTA "
    "Task1 result files (one per class, original pixel coordinates) and images with the detections drawn."
)


def add_arguments(parser):
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files and/or folders (every .png/.jpg/.jpeg/.bmp/.tif inside, not recursive)",
    )
    parser.add_argument(
        "--model",
        "--run",
        dest="model",
        required=True,
        metavar="DIR_OR_FILE",
        help="a trained detector: a run folder (model.json + model.weights.h5, as written by "
        "`dked-tf train`/`distill --out DIR` or a recipe's checkpoints/<model>/) or a one-file "
        ".keras model (`dked-tf export --format keras`)",
    )
    parser.add_argument(
        "--out",
        default="predictions",
        metavar="DIR",
        help="output folder: Task1_<class>.txt files and images/ with drawn detections",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        metavar="PX",
        help="tile side in original pixels; images whose sides are both <= this are processed "
        "whole (letterboxed). Default: the tile size the model was trained on (DOTA patches), "
        "or 0 = never tile (HRSC-style whole images)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        metavar="PX",
        help="overlap of neighbouring tiles in pixels (default: a quarter of the tile size); "
        "make it larger than the largest object so every object is whole in some tile, and "
        "smaller than the tile size",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=DEFAULT_SCORE_THRESHOLD,
        help="keep detections with score >= this (use ~0.05 for mAP evaluation)",
    )
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=DEFAULT_IOU_THRESHOLD,
        help="rotated-NMS IoU threshold, inside each tile and when merging tiles",
    )
    parser.add_argument(
        "--max-detections", type=int, default=DEFAULT_MAX_DETECTIONS, help="most detections kept per tile and per image"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images (and tiles) per forward pass"
    )
    parser.add_argument("--no-draw", action="store_true", help="do not write images with drawn detections")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="1: progress bar and summary")


def run(args):
    """Runs the detector over the inputs. Raises ConfigError for bad options (before the model
    loads); unreadable images are skipped with a warning. Returns 0, or 1 when no image was read."""
    check_tiling(args.tile_size, args.overlap)
    paths = list_images(args.inputs)
    if not paths:
        print("dked-tf predict: no images to process", file=sys.stderr)
        return 1
    detector = Detector.load(
        args.model,
        tile_size=args.tile_size,
        overlap=args.overlap,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        max_detections=args.max_detections,
        batch_size=args.batch_size,
    )
    skipped = []
    start = time.perf_counter()
    total = predict_images(detector, paths, args.out, draw=not args.no_draw, verbose=args.verbose, skipped=skipped)
    if args.verbose:
        seconds = time.perf_counter() - start
        draw_dir = os.path.join(args.out, "images")
        print(
            f"{total} detections in {len(paths) - len(skipped)} images ({seconds:.1f} s); Task1 files in {args.out}"
            + ("" if args.no_draw else f", drawn images in {draw_dir}")
        )
    if skipped:
        print(
            f"dked-tf predict: skipped {len(skipped)} of {len(paths)} images that cannot be read (named above)",
            file=sys.stderr,
        )
    return 1 if len(skipped) == len(paths) else 0
