"""`dked-tf predict`: detect oriented objects in images or folders of images of any size.

Images no larger than the tile size are letterboxed whole to the model input. Larger images are
cut into overlapping tiles (`--tile-size`, `--overlap`, in original pixels), each tile is
letterboxed to the model input, detections are mapped back to the image and merged across tiles
with class-aware rotated (polygon) NMS. Writes DOTA Task1 files (`Task1_<class>.txt`:
`image_id score x1 y1 ... x4 y4`, original pixels) and, unless --no-draw, the images with their
detections drawn.
"""

import os
import sys
import time

import numpy as np

DESCRIPTION = (
    "Detect oriented objects in images or folders of any size with a trained detector. Large "
    "images are tiled with overlap and the tiles' detections merged with rotated NMS. Writes DOTA "
    "Task1 result files (one per class, original pixel coordinates) and images with the detections drawn."
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files and/or folders (every .png/.jpg/.jpeg/.bmp/.tif inside, not recursive)")
    parser.add_argument("--model", "--run", dest="model", required=True, metavar="DIR",
                        help="folder of a trained detector (model.json + model.weights.h5, as written by "
                             "`dked-tf train`/`distill --out DIR` or a recipe's checkpoints/<model>/)")
    parser.add_argument("--out", default="predictions", metavar="DIR",
                        help="output folder: Task1_<class>.txt files and images/ with drawn detections")
    parser.add_argument("--tile-size", type=int, default=None, metavar="PX",
                        help="tile side in original pixels; images whose sides are both <= this are processed "
                             "whole (letterboxed). Default: the tile size the model was trained on (DOTA patches), "
                             "or 0 = never tile (HRSC-style whole images)")
    parser.add_argument("--overlap", type=int, default=None, metavar="PX",
                        help="overlap of neighbouring tiles in pixels (default: a quarter of the tile size); "
                             "make it larger than the largest object so every object is whole in some tile")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keep detections with score >= this (use ~0.05 for mAP evaluation)")
    parser.add_argument("--iou-threshold", type=float, default=0.3,
                        help="rotated-NMS IoU threshold, inside each tile and when merging tiles")
    parser.add_argument("--max-detections", type=int, default=300, help="most detections kept per tile and per image")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--no-draw", action="store_true", help="do not write images with drawn detections")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="1: progress bar and summary")


# ----------------------------------------------------------------------------- geometry


def tile_origins(length, tile, overlap):
    """Start offsets of tiles of side `tile` covering [0, length) with at least `overlap`
    pixels shared by neighbours; the last tile is flush with the end."""
    if tile <= 0 or length <= tile:
        return [0]
    step = max(1, tile - overlap)
    origins = list(range(0, length - tile, step))
    origins.append(length - tile)
    return sorted(set(origins))


def letterbox(image, size):
    """image uint8 [H, W, 3] RGB -> (float32 [size, size, 3] in [0, 1], scale, (pad_x, pad_y)),
    resized by scale = min(size/W, size/H), centred, padded with 0.5 (the pipeline's letterbox).
    Original pixel = (letterboxed pixel - pad) / scale."""
    import cv2

    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), 0.5, np.float32)
    pad_x, pad_y = (size - new_w) / 2.0, (size - new_h) / 2.0
    x0, y0 = int(pad_x), int(pad_y)
    canvas[y0:y0 + new_h, x0:x0 + new_w] = resized.astype(np.float32) / 255.0
    return canvas, scale, (float(x0), float(y0))


def read_image_rgb(path):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read the image (missing, corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(inputs):
    """Image paths from files and folders, in the given order (folders sorted by name)."""
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


# ----------------------------------------------------------------------------- detection


def detect_image(model, image, image_size, *, tile_size=0, overlap=None, score_threshold=0.3, iou_threshold=0.3,
                 max_detections=300, batch_size=4):
    """Detections of one image uint8 [H, W, 3] RGB of any size.

    Returns (polygons float32 [K, 8] original pixels, scores float32 [K], classes int32 [K]),
    sorted by descending score.
    """
    import tensorflow as tf

    from dked_tf.ops.nms import batched_rotated_nms

    height, width = image.shape[:2]
    if tile_size and max(height, width) > tile_size:
        overlap = tile_size // 4 if overlap is None else overlap
        windows = [(x, y, min(tile_size, width - x), min(tile_size, height - y))
                   for y in tile_origins(height, tile_size, overlap) for x in tile_origins(width, tile_size, overlap)]
    else:
        windows = [(0, 0, width, height)]
    polygons, scores, classes = [], [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        boxed = [letterbox(image[y:y + h, x:x + w], image_size) for x, y, w, h in chunk]
        batch = tf.constant(np.stack([b[0] for b in boxed]))
        head = model(batch, training=False)["head"]
        out = model.decode(head, score_threshold=score_threshold, iou_threshold=iou_threshold,
                           max_detections=max_detections)
        out = {k: np.asarray(v) for k, v in out.items()}
        for i, ((x, y, _, _), (_, scale, (pad_x, pad_y))) in enumerate(zip(chunk, boxed)):
            n = int(out["num_detections"][i])
            poly = out["polygons"][i, :n].astype(np.float64).reshape(n, 4, 2)
            poly = (poly - [pad_x, pad_y]) / scale + [x, y]
            keep = out["scores"][i, :n] >= score_threshold
            polygons.append(poly.reshape(n, 8)[keep])
            scores.append(out["scores"][i, :n][keep])
            classes.append(out["classes"][i, :n][keep])
    polygons = np.concatenate(polygons).astype(np.float32) if polygons else np.zeros((0, 8), np.float32)
    scores = np.concatenate(scores).astype(np.float32) if scores else np.zeros((0,), np.float32)
    classes = np.concatenate(classes).astype(np.int32) if classes else np.zeros((0,), np.int32)
    if len(windows) > 1 and len(scores):
        keep = np.asarray(batched_rotated_nms(polygons, scores, classes, iou_threshold, max_output=max_detections))
        polygons, scores, classes = polygons[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return polygons[order], scores[order], classes[order]


def _progress(items, verbose, desc):
    if not verbose:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit="img")
    except ImportError:
        return items


def run(args):
    from dked_tf.training import load_detector

    model, meta = load_detector(args.model)
    class_names = list(meta["class_names"])
    image_size = int(meta["image_size"])
    tile_size = args.tile_size if args.tile_size is not None else int(meta.get("tile_size", 0) or 0)
    paths = list_images(args.inputs)
    if not paths:
        print("dked-tf predict: no images to process", file=sys.stderr)
        return 1
    detections = {name: [] for name in class_names}
    draw_dir = os.path.join(args.out, "images")
    start = time.perf_counter()
    total = 0
    for path in _progress(paths, args.verbose, "predict"):
        image = read_image_rgb(path)
        polys, scores, classes = detect_image(
            model, image, image_size, tile_size=tile_size, overlap=args.overlap,
            score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
            max_detections=args.max_detections, batch_size=args.batch_size)
        image_id = os.path.splitext(os.path.basename(path))[0]
        for poly, score, cls in zip(polys, scores, classes):
            detections[class_names[int(cls)]].append((image_id, float(score), poly))
        total += len(scores)
        if not args.no_draw:
            from dked_tf.visualize import draw_polygons, save_image

            labels = [class_names[int(c)] for c in classes]
            drawn = draw_polygons(image, polys, labels=labels, scores=scores)
            save_image(os.path.join(draw_dir, image_id + ".png"), drawn)
    from dked_tf.data.dota import write_task1

    write_task1(detections, args.out, class_names)
    if args.verbose:
        seconds = time.perf_counter() - start
        print(f"{total} detections in {len(paths)} images ({seconds:.1f} s); Task1 files in {args.out}"
              + ("" if args.no_draw else f", drawn images in {draw_dir}"))
    return 0
