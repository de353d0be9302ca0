"""`dked-tf predict`'s work: a `Detector` (`experiment.inference`) over image files, writing DOTA
Task1 files and drawn images.

`predict_images` reads the images `detector.batch_size` at a time and detects them with the
detector (tiling large images, merging the tiles), in original pixels. An image that cannot be
read is skipped with a warning naming it; images whose file names repeat get their relative
paths as ids (`dked_tf.data.images.unique_image_ids`); an image shrunk more than
`SQUASH_WARNING` times to the model input without tiling gets a warning.
"""

import os
import sys

from dked_tf import visualize
from dked_tf.data.dota import write_task1
from dked_tf.data.images import announced_image_ids, readable_images
from dked_tf.terminal import progress as terminal_progress

# An image processed whole that is shrunk more than this many times to the model input gets a
# warning suggesting tiling (its objects shrink as much).
SQUASH_WARNING = 2.0


def _progress(items, verbose, desc):
    """A tqdm progress bar over items when verbose and on a terminal, else the items."""
    return terminal_progress(items, desc=desc, verbose=verbose, unit="img")


def predict_images(detector, paths, out_dir, *, draw=True, verbose=1, skipped=None):
    """`detector` (a `Detector`) over image files; writes `out_dir/Task1_<class>.txt` (every
    class of the detector, lines `image_id score x1 y1 ... x4 y4`, original pixels; each file
    atomically) and, with draw, `out_dir/images/<image_id>.png` with the detections drawn.

    image_id: the file name without extension; where two inputs share it, their paths relative
    to their common folder (`unique_image_ids`; a note on stderr lists them).
    An image that cannot be read is skipped with a warning on stderr naming it (and appended to
    the list `skipped` when given); the Task1 files hold every other image. An image processed
    whole and shrunk more than SQUASH_WARNING times gets a one-line warning suggesting tiling.
    verbose: 1 shows a progress bar. Returns the number of detections written.
    """
    class_names = detector.class_names
    detections = {name: [] for name in class_names}
    draw_dir = os.path.join(out_dir, "images")
    ids = announced_image_ids(paths)
    state = {"total": 0, "squash_warned": False}
    pending = []

    def flush():
        for (_, image_id, image), result in zip(pending, detector([image for _, _, image in pending])):
            for poly, score, label in zip(result.polygons, result.scores, result.labels):
                detections[label].append((image_id, float(score), poly))
            state["total"] += len(result)
            if draw:
                drawn = visualize.draw_polygons(image, result.polygons, labels=result.labels, scores=result.scores)
                visualize.save_image(os.path.join(draw_dir, image_id + ".png"), drawn)
        pending.clear()

    pairs = _progress(list(zip(paths, ids)), verbose, "predict")
    for path, image_id, image in readable_images(pairs, skipped):
        longest = max(image.shape[:2])
        whole = len(detector.windows(image)) == 1
        if whole and longest > SQUASH_WARNING * detector.image_size and not state["squash_warned"]:
            state["squash_warned"] = True
            print(
                f"warning: {path} is {image.shape[1]}x{image.shape[0]} px and is shrunk "
                f"{longest / detector.image_size:.1f}x to the model's {detector.image_size} px input (objects "
                f"shrink as much); pass --tile-size {detector.image_size} to tile it (further images like it are "
                "not named)",
                file=sys.stderr,
            )
        pending.append((path, image_id, image))
        if len(pending) == detector.batch_size:
            flush()
    flush()
    write_task1(detections, out_dir, class_names)
    return state["total"]
