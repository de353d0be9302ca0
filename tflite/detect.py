"""Run an exported dked_tf .tflite detector on images, on the device.

Needs only a LiteRT interpreter (`ai-edge-litert`, or the older `tflite-runtime`), numpy and
OpenCV: no TensorFlow, no installed dked_tf. The .tflite holds the network and the per-cell
decode; this file does the rest: letterbox, invoke, class-aware rotated NMS in numpy, mapping
back to the original image's pixels, drawing, and DOTA Task1 result files.

    python tflite/detect.py --model student.tflite --source images/ --out results/

The sidecar `student.json` written next to the .tflite by `dked-tf export --format tflite`
gives the input size, class names, thresholds and output names.

Two files of the package, which import only numpy and OpenCV, are loaded by path, so the device
runs the package's own code: `dked_tf/ops/iou.py` (the exact polygon IoU) and
`dked_tf/data/images.py` (reading and checking image files, unique image ids). From a checkout
they are found at `../dked_tf/`; on a device, copy them next to this file (`iou.py`,
`images.py`).

An image that cannot be read is skipped with a warning naming it; the others are processed and
every Task1 file is written (atomically: a temporary file, then renamed). Images whose file names
repeat (`a/x.png`, `b/x.png`) get their relative paths as ids (`a/x`, `b/x`).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import cv2
import numpy as np

LETTERBOX_PAD_VALUE = 0.5
HERE = os.path.dirname(os.path.abspath(__file__))


def load_package_file(relative, module_name):
    """Loads `dked_tf/<relative>` by path (a copy next to this file first, then the checkout's
    `../dked_tf/<relative>`) without importing the dked_tf package (nor TensorFlow)."""
    candidates = [os.path.join(HERE, os.path.basename(relative)), os.path.join(HERE, "..", "dked_tf", relative)]
    for path in candidates:
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location(module_name, os.path.normpath(path))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ImportError(
        f"tflite/detect.py needs dked_tf/{relative} (numpy and OpenCV only): copy it next to detect.py "
        f"({candidates[0]})"
    )


geometry = load_package_file("ops/iou.py", "dked_tf_device_iou")
images = load_package_file("data/images.py", "dked_tf_device_images")
IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS
read_image_rgb = images.read_image_rgb


# ----------------------------------------------------------------------------- interpreter


def check_model_file(model_path):
    """Raises FileNotFoundError / ValueError naming `model_path` when it is missing or not a
    TFLite model (a FlatBuffer with the `TFL3` identifier at bytes 4..8)."""
    model_path = str(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such .tflite model file")
    with open(model_path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise ValueError(
            f"{model_path}: not a TFLite model (no TFL3 FlatBuffer identifier); export one with "
            "`dked-tf export --format tflite`"
        )


def make_interpreter(model_path, num_threads=2):
    """A LiteRT interpreter for `model_path` (ai-edge-litert first, then tflite-runtime)."""
    check_model_file(model_path)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(
                "tflite/detect.py needs a LiteRT interpreter: pip install ai-edge-litert "
                "(or tflite-runtime on older devices)"
            ) from error
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=int(num_threads))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{model_path}: the LiteRT interpreter cannot load it: {error}") from None
    return interpreter


def read_sidecar(model_path, sidecar_path=None):
    """The json written next to the .tflite at export (same name, `.json`)."""
    sidecar_path = sidecar_path or os.path.splitext(str(model_path))[0] + ".json"
    if not os.path.exists(sidecar_path):
        raise FileNotFoundError(
            f"{sidecar_path}: sidecar json not found; it is written by `dked-tf export "
            "--format tflite` next to the .tflite (pass --sidecar to give another path)"
        )
    try:
        with open(sidecar_path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{sidecar_path}: not a sidecar json ({error})") from None


# ----------------------------------------------------------------------------- geometry


def letterbox(image_rgb, size):
    """Scale keeping the aspect ratio (scale = min(S/w, S/h)), centre, fill the rest with 0.5.

    The same geometry as the training/evaluation pipeline: offset = ((S - w*scale)/2,
    (S - h*scale)/2) in continuous pixels (not rounded) and one bilinear affine resampling.
    image_rgb: uint8 [H, W, 3]. Returns (float32 [S, S, 3] in [0, 1], scale, offset float [2]
    = (pad x, pad y)); original = (letterboxed - offset) / scale.
    """
    height, width = image_rgb.shape[:2]
    scale = min(size / width, size / height)
    offset = np.array([(size - width * scale) / 2.0, (size - height * scale) / 2.0])
    # continuous coordinates p (pixel centres at i + 0.5): p_in = scale * p + offset;
    # OpenCV works in index coordinates q = p - 0.5. Samples between the last pixel and the
    # image border use the border pixel (the pipeline's resampler renormalizes its weights
    # there); outside the scaled image (the window) everything is 0.5.
    shift = 0.5 * scale + offset - 0.5
    matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], np.float64)
    image = image_rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    canvas = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    centres = np.arange(size) + 0.5
    inside_x = (centres >= offset[0]) & (centres <= offset[0] + width * scale)
    inside_y = (centres >= offset[1]) & (centres <= offset[1] + height * scale)
    canvas[~(inside_y[:, None] & inside_x[None, :])] = LETTERBOX_PAD_VALUE
    return canvas, scale, offset


def _signed_area(quads):
    x, y = quads[..., 0], quads[..., 1]
    return 0.5 * np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1)


def polygon_iou_one_to_many(polygon, others):
    """IoU of one quadrilateral float [8] with quadrilaterals float [M, 8] -> float64 [M]: the
    package's exact IoU (`dked_tf.ops.iou.poly_iou_pairwise`; any simple quadrilateral, zero-area
    and self-intersecting ones give 0)."""
    polygon = np.asarray(polygon, np.float64).reshape(1, 8)
    others = np.asarray(others, np.float64).reshape(-1, 8)
    return geometry.poly_iou_pairwise(np.broadcast_to(polygon, others.shape), others)


def rotated_nms(polygons, scores, iou_threshold, max_output=None):
    """Greedy NMS of rotated polygons: drop a box whose IoU with a kept one is > iou_threshold.

    polygons: float [N, 8] pixels; scores: float [N]. Returns int64 [K] kept indices in
    descending score order. All pairs are screened at once with a cheap bound (IoU <=
    min(HBB overlap, areas) / union); the IoU of a kept box (`polygon_iou_one_to_many`) is computed
    only with the not yet suppressed boxes that pass the bound.
    """
    polygons = np.asarray(polygons, np.float64).reshape(-1, 8)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    boxes = polygons[order].reshape(-1, 4, 2)
    count = len(boxes)
    low, high = boxes.min(1), boxes.max(1)
    areas = np.abs(_signed_area(boxes))
    overlap = np.clip(np.minimum(high[:, None], high[None]) - np.maximum(low[:, None], low[None]), 0, None)
    bound = np.minimum(overlap[..., 0] * overlap[..., 1], np.minimum(areas[:, None], areas[None]))
    possible = bound > iou_threshold * (areas[:, None] + areas[None] - bound)
    possible &= (areas[:, None] > 0) & (areas[None] > 0)
    suppressed = np.zeros(count, bool)
    keep = []
    for rank in range(count):
        if suppressed[rank]:
            continue
        keep.append(order[rank])
        if max_output is not None and len(keep) >= max_output:
            break
        later = np.flatnonzero(possible[rank, rank + 1 :] & ~suppressed[rank + 1 :]) + rank + 1
        if len(later):
            iou = polygon_iou_one_to_many(boxes[rank], boxes[later].reshape(-1, 8))
            suppressed[later[iou > iou_threshold]] = True
    return np.asarray(keep, np.int64)


def batched_rotated_nms(polygons, scores, classes, iou_threshold, max_output=None):
    """Class-aware rotated NMS (boxes of different classes never suppress each other).

    Returns int64 [K] kept indices in descending score order over all classes.
    """
    polygons = np.asarray(polygons, np.float64).reshape(-1, 8)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    kept = [  # at most max_output per class: the overall top max_output needs no more
        np.flatnonzero(classes == c)[
            rotated_nms(polygons[classes == c], scores[classes == c], iou_threshold, max_output)
        ]
        for c in np.unique(classes)
    ]
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return kept[:max_output] if max_output is not None else kept


def polygons_to_rboxes(polygons):
    """float [N, 8] -> [N, 5] (cx, cy, w, h, theta) via cv2.minAreaRect, w >= h, theta of the
    long side in radians in [-pi/2, pi/2)."""
    rboxes = np.zeros((len(polygons), 5), np.float64)
    for i, polygon in enumerate(np.asarray(polygons, np.float32).reshape(-1, 4, 2)):
        (cx, cy), (w, h), degrees = cv2.minAreaRect(polygon)
        theta = np.deg2rad(degrees)
        if w < h:
            w, h, theta = h, w, theta + np.pi / 2
        theta = (theta + np.pi / 2) % np.pi - np.pi / 2
        rboxes[i] = (cx, cy, w, h, theta)
    return rboxes


# ----------------------------------------------------------------------------- detector


class TFLiteDetector:
    """An exported detector: `detect(image_rgb)` -> dict of detections in original pixels.

    model_path: the .tflite; sidecar: its json (dict or path; default next to the model).
    Thresholds default to the sidecar's (those baked in at export).
    """

    def __init__(
        self,
        model_path,
        sidecar=None,
        num_threads=2,
        score_threshold=None,
        iou_threshold=None,
        max_detections=None,
        pre_nms_top_k=None,
    ):
        check_model_file(model_path)  # before the sidecar: a wrong --model is named as such
        self.sidecar = sidecar if isinstance(sidecar, dict) else read_sidecar(model_path, sidecar)
        self.interpreter = make_interpreter(model_path, num_threads)
        self.image_size = int(self.sidecar["image_size"])
        self.class_names = list(self.sidecar.get("class_names") or [])
        self.nms_mode = self.sidecar.get("nms", "host")
        self.score_threshold = float(self.sidecar["score_threshold"] if score_threshold is None else score_threshold)
        self.iou_threshold = float(self.sidecar["iou_threshold"] if iou_threshold is None else iou_threshold)
        self.max_detections = int(self.sidecar["max_detections"] if max_detections is None else max_detections)
        self.pre_nms_top_k = int(pre_nms_top_k or self.sidecar.get("pre_nms_top_k", 1000))
        self.min_box_side = float(self.sidecar.get("min_box_side", 0.1))
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_index = {}
        for detail in self.interpreter.get_output_details():
            self.output_index[detail["name"]] = detail
        self.output_names = self.sidecar["outputs"]
        self._runner = self.interpreter.get_signature_runner()
        self._input_name = self.sidecar.get("input_name", "images")
        self.timings = {}

    def prepare_input(self, letterboxed):
        """float32 [S, S, 3] in [0, 1] -> the model's input tensor [1, S, S, 3]."""
        detail = self.input_detail
        batch = letterboxed[None]
        if detail["dtype"] == np.float32:
            return batch.astype(np.float32)
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        if scale == 0:  # an unquantized uint8 input: raw pixel values
            return np.clip(np.round(batch * 255.0), info.min, info.max).astype(detail["dtype"])
        return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(detail["dtype"])

    def invoke(self, tensor):
        """Runs the network; returns the raw outputs dict (name -> numpy array, batch removed)."""
        outputs = self._runner(**{self._input_name: tensor})
        return {name: np.asarray(value)[0] for name, value in outputs.items()}

    def postprocess(self, raw):
        """Raw outputs (letterboxed pixels) -> kept detections (still letterboxed pixels)."""
        names = self.output_names
        polygons = raw[names["polygons"]].reshape(-1, 8).astype(np.float64)
        scores = raw[names["scores"]].reshape(-1).astype(np.float64)
        classes = raw[names["classes"]].reshape(-1).astype(np.int64)
        if self.nms_mode == "fast":
            valid = scores > 0
            if "num_detections" in names:
                valid &= np.arange(len(scores)) < int(np.asarray(raw[names["num_detections"]]).reshape(-1)[0])
            candidates = np.flatnonzero(valid & (scores > self.score_threshold))
            keep = candidates[np.argsort(-scores[candidates], kind="stable")][: self.max_detections]
            return polygons[keep], scores[keep], classes[keep]
        # like OrientedDetector.decode: degenerate boxes (HBB side <= min_box_side px) are dropped
        extent = np.minimum(np.ptp(polygons[:, 0::2], axis=1), np.ptp(polygons[:, 1::2], axis=1))
        candidates = np.flatnonzero((scores > self.score_threshold) & (extent > self.min_box_side))
        if len(candidates) > self.pre_nms_top_k:
            top = np.argsort(-scores[candidates], kind="stable")[: self.pre_nms_top_k]
            candidates = candidates[top]
        keep = batched_rotated_nms(
            polygons[candidates],
            scores[candidates],
            classes[candidates],
            self.iou_threshold,
            self.max_detections,
        )
        keep = candidates[keep]
        return polygons[keep], scores[keep], classes[keep]

    def detect(self, image_rgb):
        """image_rgb uint8 [H, W, 3] -> dict polygons float [K, 8] (original pixels), rboxes
        [K, 5], scores [K], classes int [K]; per-stage seconds in `self.timings`."""
        t0 = time.perf_counter()
        letterboxed, scale, offset = letterbox(image_rgb, self.image_size)
        tensor = self.prepare_input(letterboxed)
        t1 = time.perf_counter()
        raw = self.invoke(tensor)
        t2 = time.perf_counter()
        polygons, scores, classes = self.postprocess(raw)
        polygons = (polygons - np.tile(offset, 4)) / scale
        t3 = time.perf_counter()
        self.timings = {"preprocess_s": t1 - t0, "invoke_s": t2 - t1, "nms_s": t3 - t2}
        return {
            "polygons": polygons,
            "rboxes": polygons_to_rboxes(polygons),
            "scores": scores,
            "classes": classes,
        }

    def class_name(self, index):
        index = int(index)
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


# ----------------------------------------------------------------------------- files


def list_images(source):
    """A file, or the images of a folder (sorted by name)."""
    return images.list_images([source])


def draw_detections(image_rgb, detections, class_names=None, color=(0, 255, 0), thickness=2):
    """A copy of image_rgb uint8 [H, W, 3] with the polygons and 'class score' labels."""
    canvas = np.ascontiguousarray(image_rgb.copy())
    for polygon, score, cls in zip(detections["polygons"], detections["scores"], detections["classes"]):
        points = np.round(np.asarray(polygon).reshape(4, 2)).astype(np.int32)
        cv2.polylines(canvas, [points], True, color, thickness, cv2.LINE_AA)
        name = class_names[int(cls)] if class_names and 0 <= int(cls) < len(class_names) else str(int(cls))
        x, y = int(points[:, 0].min()), int(max(points[:, 1].min() - 3, 10))
        cv2.putText(canvas, f"{name} {score:.2f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return canvas


def write_text_atomic(path, text):
    """Writes `text` to `path` through a temporary file in the same folder and os.replace: a crash
    leaves the old file or the new one, never half of one."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_task1(results, out_dir, class_names):
    """DOTA Task1 files `Task1_<class>.txt`: `image_id score x1 y1 ... x4 y4` per line, each
    written atomically.

    results: list of (image_id, detections dict). Returns the paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    lines = {name: [] for name in class_names}
    for image_id, detections in results:
        for polygon, score, cls in zip(detections["polygons"], detections["scores"], detections["classes"]):
            name = class_names[int(cls)] if 0 <= int(cls) < len(class_names) else str(int(cls))
            coords = " ".join(f"{v:.1f}" for v in np.asarray(polygon).reshape(-1))
            lines.setdefault(name, []).append(f"{image_id} {score:.4f} {coords}\n")
    paths = []
    for name, rows in lines.items():
        paths.append(write_text_atomic(os.path.join(out_dir, f"Task1_{name}.txt"), "".join(rows)))
    return paths


def run_on_images(detector, sources, out_dir=None, draw=True, verbose=1, skipped=None):
    """Detects on every image of `sources` (a file or folder, or a list of image paths). Writes
    Task1 files (and PNGs if `draw`) into out_dir. An image that cannot be read is skipped with a
    warning naming it (and appended to the list `skipped` when given); the Task1 files hold the
    others. Image ids: file names without extension, relative paths where those repeat
    (`images.unique_image_ids`). Returns list of (image_id, detections)."""
    paths = list_images(sources) if isinstance(sources, str) else list(sources)
    ids = images.announced_image_ids(paths)
    results = []
    numbered = enumerate(images.readable_images(zip(paths, ids), skipped), 1)
    for number, (_path, image_id, image) in numbered:
        detections = detector.detect(image)
        results.append((image_id, detections))
        if out_dir and draw:
            drawn_path = os.path.join(out_dir, f"{image_id}.png")
            os.makedirs(os.path.dirname(drawn_path), exist_ok=True)
            drawn = draw_detections(image, detections, detector.class_names)
            cv2.imwrite(drawn_path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if verbose:
            stages = " ".join(f"{k[:-2]}={v * 1000:.1f}ms" for k, v in detector.timings.items())
            print(f"[{number}/{len(paths)}] {image_id}: {len(detections['scores'])} objects ({stages})")
    if out_dir:
        names = detector.class_names or sorted({str(int(c)) for _, d in results for c in d["classes"]})
        write_task1(results, out_dir, names)
    return results


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=".tflite file")
    parser.add_argument("--sidecar", default=None, help="its json (default: next to the model)")
    parser.add_argument("--source", required=True, help="an image or a folder of images")
    parser.add_argument("--out", default="tflite_results", help="folder for Task1 files and PNGs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--iou-threshold", type=float, default=None)
    parser.add_argument("--max-detections", type=int, default=None)
    parser.add_argument("--no-draw", action="store_true", help="write Task1 files only")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv=None):
    """The command line; a bad model, sidecar or source is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    skipped = []
    try:
        detector = TFLiteDetector(
            args.model,
            args.sidecar,
            num_threads=args.threads,
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            max_detections=args.max_detections,
        )
        results = run_on_images(
            detector, args.source, args.out, draw=not args.no_draw, verbose=0 if args.quiet else 1, skipped=skipped
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"detect.py: error: {error}", file=sys.stderr)
        return 2
    total = sum(len(d["scores"]) for _, d in results)
    print(
        f"{len(results)} images, {total} detections, written to {args.out}"
        + (f"; {len(skipped)} unreadable images skipped" if skipped else "")
    )
    if os.environ.get("DKED_TFLITE_CHECK_NO_TF"):
        # Used by the tests: report whether TensorFlow got imported along the way.
        print(f"tensorflow_imported={'tensorflow' in sys.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
