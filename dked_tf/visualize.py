"""Pictures: oriented boxes on images, detections against ground truth, PR curves, confusion
matrices, and the figure of the box conventions used throughout the package.

Drawing uses OpenCV (always installed); the plots use matplotlib with the Agg backend, imported
only when a plot is made. Every picture is written atomically (`dked_tf.files.replacing`).
"""

import math
import os

import cv2
import numpy as np

from dked_tf.files import replacing

GT_COLOR = (0, 200, 0)  # RGB
DET_COLOR = (255, 60, 0)


def _check_image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    return image


def _check_polygons(polygons, what="polygons"):
    polygons = np.asarray(polygons, np.float64)
    if polygons.size == 0:
        return polygons.reshape(0, 8)
    if polygons.ndim == 1 and polygons.shape[0] == 8:
        polygons = polygons[None]
    if polygons.ndim != 2 or polygons.shape[1] != 8:
        raise ValueError(f"{what} must be [N, 8] (x1 y1 ... x4 y4, pixels), got {list(polygons.shape)}")
    bad = np.flatnonzero(~np.isfinite(polygons).all(axis=1))
    if len(bad):
        raise ValueError(f"{what}: row {int(bad[0])} is not finite: {polygons[bad[0]].tolist()}")
    return polygons


def _per_box_colors(color, n):
    color = np.asarray(color)
    if color.ndim == 1:
        return [tuple(int(c) for c in color)] * n
    if color.shape != (n, 3):
        raise ValueError(f"color must be (r, g, b) or [N, 3] with N={n}, got {list(color.shape)}")
    return [tuple(int(c) for c in row) for row in color]


def draw_polygons(image, polygons, labels=None, scores=None, color=(0, 255, 0), thickness=2):
    """Draws oriented boxes on a copy of an image.

    image: uint8 [H, W, 3], RGB. polygons: [N, 8], pixels (x1 y1 ... x4 y4).
    labels: optional N strings (or ints); scores: optional [N] floats, written next to the box.
    color: RGB tuple, or uint8-like [N, 3] per box. The first vertex gets a filled dot, so the
    vertex order is visible.
    Returns: uint8 [H, W, 3], a new array.
    """
    canvas = np.ascontiguousarray(_check_image(image).copy())
    polygons = _check_polygons(polygons)
    n = len(polygons)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} polygons")
    if scores is not None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"scores has {len(scores)} entries for {n} polygons")
    colors = _per_box_colors(color, n)
    thickness = max(1, int(thickness))
    font_scale = max(0.35, min(canvas.shape[:2]) / 1400.0)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel
    for i in range(n):
        points = np.round(polygons[i].reshape(4, 2) * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [points], True, colors[i], thickness, cv2.LINE_AA, shift)
        cv2.circle(
            canvas, tuple(int(v) for v in points[0]), (thickness + 1) << shift, colors[i], -1, cv2.LINE_AA, shift
        )
        text = []
        if labels is not None:
            text.append(str(labels[i]))
        if scores is not None:
            text.append(f"{scores[i]:.2f}")
        if text:
            x = int(np.floor(polygons[i, 0::2].min()))
            y = int(np.floor(polygons[i, 1::2].min())) - 3
            x = min(max(x, 0), canvas.shape[1] - 1)
            y = min(max(y, 10), canvas.shape[0] - 1)
            cv2.putText(canvas, " ".join(text), (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colors[i], 1, cv2.LINE_AA)
    return canvas


def save_image(path, image_rgb):
    """Writes an RGB uint8 [H, W, 3] image (PNG/JPEG by extension); creates the folder."""
    image_rgb = _check_image(image_rgb)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with replacing(path) as temporary:
        if not cv2.imwrite(temporary, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write image {path!r} (unknown extension or unwritable folder)")
    return path


def _save_figure(fig, path, dpi):
    """Writes a matplotlib figure to `path` atomically (format from the extension) and closes it."""
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with replacing(path) as temporary:
            fig.savefig(temporary, dpi=dpi, format=os.path.splitext(str(path))[1].lstrip(".") or None)
    finally:
        plt.close(fig)
    return path


def draw_detections_vs_gt(
    image,
    gt_polys,
    det_polys,
    det_scores=None,
    labels=None,
    *,
    gt_labels=None,
    gt_color=GT_COLOR,
    det_color=DET_COLOR,
    thickness=2,
):
    """Overlay of ground truth (green) and detections (orange, with scores) on a copy of `image`.

    image: uint8 [H, W, 3] RGB; gt_polys [G, 8], det_polys [D, 8], pixels;
    det_scores: optional [D]; labels: optional D detection labels; gt_labels: optional G labels.
    """
    canvas = draw_polygons(image, gt_polys, labels=gt_labels, color=gt_color, thickness=thickness)
    return draw_polygons(
        canvas, det_polys, labels=labels, scores=det_scores, color=det_color, thickness=max(1, thickness - 1)
    )


def _read_rgb(path):
    """The image at `path` as uint8 [H, W, 3] RGB, or None when OpenCV cannot read it."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def draw_record(record, detections, min_score):
    """A record's image (RGB uint8 [H, W, 3]) with its ground truth and its detections of score
    >= min_score drawn, or None when the image cannot be read.

    record: anything with image_path, image_id and polygons [G, 8] (`data.records.ImageRecord`);
    detections: class name -> [(image_id, score, polygon [8])] in image pixels.
    """
    image = _read_rgb(record.image_path)
    if image is None:
        return None
    polys, scores, labels = [], [], []
    for name, entries in detections.items():
        for image_id, score, poly in entries:
            if image_id == record.image_id and score >= min_score:
                polys.append(np.asarray(poly, np.float32).reshape(8))
                scores.append(score)
                labels.append(name)
    polys = np.stack(polys) if polys else np.zeros((0, 8), np.float32)
    return draw_detections_vs_gt(image, record.polygons, polys, np.asarray(scores, np.float32), labels=labels)


def detection_sheet(records, entries, columns=6, tile=192, min_crop=96):
    """A contact sheet of single detections, each in a square crop of its image around it with
    the image's ground truth (green) and this detection (orange) drawn, and a caption.

    records: anything with image_path, image_id and polygons [G, 8] (`data.records.ImageRecord`);
    entries: [(image_id, polygon [8] in image pixels, caption str)], drawn left to right, top to
    bottom. A crop is at least `min_crop` px and 1.5 × the detection's extent, scaled to
    `tile` × `tile` px. An unreadable image gives a grey tile with its caption.
    Returns: uint8 [rows · tile, columns · tile, 3] RGB (None when `entries` is empty).
    """
    if not entries:
        return None
    by_id = {record.image_id: record for record in records}
    rows = (len(entries) + columns - 1) // columns
    sheet = np.full((rows * tile, columns * tile, 3), 32, np.uint8)
    for index, (image_id, polygon, caption) in enumerate(entries):
        polygon = _check_polygons(polygon, "polygon")[0]
        record = by_id.get(image_id)
        image = None if record is None else _read_rgb(record.image_path)
        if image is None:
            crop = np.full((tile, tile, 3), 96, np.uint8)
        else:
            image = draw_detections_vs_gt(image, record.polygons, polygon[None], thickness=1)
            xs, ys = polygon[0::2], polygon[1::2]
            side = max(float(min_crop), 1.5 * float(max(np.ptp(xs), np.ptp(ys))))
            size = int(round(side))
            x0 = min(max(int(round(xs.mean() - side / 2)), -size), image.shape[1])
            y0 = min(max(int(round(ys.mean() - side / 2)), -size), image.shape[0])
            padded = cv2.copyMakeBorder(image, size, size, size, size, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            crop = padded[y0 + size : y0 + 2 * size, x0 + size : x0 + 2 * size]
            crop = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_LINEAR)
        cv2.putText(crop, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        row, column = divmod(index, columns)
        sheet[row * tile : (row + 1) * tile, column * tile : (column + 1) * tile] = crop
    return sheet


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(pr_curves, path, ap=None, title=None):
    """One PNG with a precision-recall panel per class.

    pr_curves: dict class name -> (recall [K], precision [K]) (as in EvalResult.pr_curves);
    ap: optional dict class name -> AP, shown in each panel's title.
    """
    plt = _pyplot()
    names = list(pr_curves)
    count = max(1, len(names))
    cols = min(4, count)
    rows = int(math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= len(names):
            axis.axis("off")
            continue
        name = names[index]
        recall, precision = (np.asarray(v, np.float64) for v in pr_curves[name])
        if len(recall):
            # The curve the area metric integrates: precision made monotone from the right.
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            axis.plot(recall, precision, color="tab:blue", lw=1, label="precision")
            axis.step(recall, envelope, where="pre", color="tab:orange", lw=1, label="envelope")
        axis.set_xlim(0, 1.0)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("recall")
        axis.set_ylabel("precision")
        axis.grid(alpha=0.3)
        label = name if ap is None or name not in ap else f"{name}  AP={ap[name]:.4f}"
        axis.set_title(label, fontsize=9)
        if index == 0 and len(recall):
            axis.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path, dpi=100)


def plot_confusion_matrix(matrix, labels, path, normalize=False, title=None):
    """One PNG of a detection confusion matrix (Ultralytics' layout).

    matrix: int [K, K], rows predicted, columns true (`dked_tf.evaluation.confusion`; the last
    row and column are "background"); labels: K names. Cells are coloured by the share of their
    column (the true class); normalize=False writes the counts into the cells, True the shares.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(labels):
        raise ValueError(f"matrix must be [K, K] with K = {len(labels)} labels, got {list(matrix.shape)}")
    totals = matrix.sum(axis=0, keepdims=True).astype(np.float64)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = len(labels)
    side = min(16.0, 2.5 + 0.6 * size)
    fig, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    font = max(5, 10 - size // 4)
    for row in range(size):
        for col in range(size):
            value = matrix[row, col]
            if value == 0:
                continue
            text = f"{shares[row, col]:.2f}" if normalize else str(int(value))
            color = "white" if shares[row, col] > 0.5 else "black"
            axis.text(col, row, text, ha="center", va="center", fontsize=font, color=color)
    axis.set_xticks(range(size))
    axis.set_yticks(range(size))
    axis.set_xticklabels(labels, rotation=90, fontsize=font + 1)
    axis.set_yticklabels(labels, fontsize=font + 1)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(title or ("confusion matrix (normalized)" if normalize else "confusion matrix"), fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, path, dpi=100)


# ----------------------------------------------------------------------------------------------
# The box-convention figure (README)


def _image_axes(axis, width, height, title):
    axis.set_xlim(0, width)
    axis.set_ylim(height, 0)  # image coordinates: y grows downwards
    axis.set_aspect("equal")
    axis.set_title(title, fontsize=10)
    axis.annotate(
        "",
        xy=(width * 0.22, height * 0.05),
        xytext=(width * 0.03, height * 0.05),
        arrowprops=dict(arrowstyle="->", color="gray"),
    )
    axis.annotate(
        "",
        xy=(width * 0.03, height * 0.24),
        xytext=(width * 0.03, height * 0.05),
        arrowprops=dict(arrowstyle="->", color="gray"),
    )
    axis.text(width * 0.23, height * 0.06, "+x", color="gray", va="center", fontsize=8)
    axis.text(width * 0.04, height * 0.28, "+y", color="gray", fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def _rectangle_corners(cx, cy, w, h, theta):
    """Corners of a rotated rectangle (w along the direction theta from +x towards +y)."""
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-math.sin(theta), math.cos(theta)])
    c = np.array([cx, cy])
    return np.array(
        [c - u * w / 2 - v * h / 2, c + u * w / 2 - v * h / 2, c + u * w / 2 + v * h / 2, c - u * w / 2 + v * h / 2]
    )


def _closed(points):
    return np.vstack([points, points[:1]])


def box_conventions_figure(path):
    """Writes a PNG that explains the box conventions of `dked_tf.ops.obb`.

    Panels: `poly` vertex order; `rbox` le90 (w >= h, theta from +x towards +y, y down);
    HRSC2016 `mbox`; GGHL's ORC (HBB distances, v1 top / v2 right / v3 bottom / v4 left,
    gliding ratios s1..s4 and the area ratio).
    """
    plt = _pyplot()
    from matplotlib.patches import Arc

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    size = 100.0

    # poly
    axis = axes[0]
    _image_axes(axis, size, size, "poly [..., 8]: x1 y1 x2 y2 x3 y3 x4 y4")
    quad = np.array([[38, 22], [86, 42], [66, 84], [18, 62]], float)
    axis.fill(*_closed(quad).T, color="tab:blue", alpha=0.12)
    axis.plot(*_closed(quad).T, color="tab:blue", lw=2)
    for k, (x, y) in enumerate(quad):
        axis.plot(x, y, "o", color="tab:blue")
        axis.text(x + 3, y - 3, f"v{k + 1} (x{k + 1}, y{k + 1})", fontsize=8)
    axis.text(
        5,
        96,
        "pixels, image coordinates (x right, y down);\nfiles: usually clockwise on screen; IoU ignores order",
        fontsize=7.5,
    )

    # rbox (le90)
    axis = axes[1]
    _image_axes(axis, size, size, "rbox [..., 5]: cx cy w h theta (le90)")
    cx, cy, w, h, theta = 52.0, 55.0, 62.0, 24.0, math.radians(30)
    corners = _rectangle_corners(cx, cy, w, h, theta)
    axis.fill(*_closed(corners).T, color="tab:orange", alpha=0.12)
    axis.plot(*_closed(corners).T, color="tab:orange", lw=2)
    axis.plot(cx, cy, "k.")
    axis.text(cx - 14, cy + 4, "(cx, cy)", fontsize=8)
    axis.plot([cx, cx + 40], [cy, cy], color="gray", lw=1, ls="--")
    tip = np.array([cx, cy]) + 0.3 * w * np.array([math.cos(theta), math.sin(theta)])
    axis.annotate("", xy=tuple(tip), xytext=(cx, cy), arrowprops=dict(arrowstyle="->", color="k"))
    # In a y-down axis, an arc from 0 to +theta is drawn clockwise on screen, as intended.
    axis.add_patch(Arc((cx, cy), 36, 36, angle=0, theta1=0, theta2=math.degrees(theta), color="k"))
    axis.text(cx + 20, cy + 9, "theta", fontsize=8)
    mid_long = (corners[0] + corners[1]) / 2
    mid_short = (corners[1] + corners[2]) / 2
    axis.text(*(mid_long + [-6, -4]), "w (long side)", fontsize=8, rotation=-math.degrees(theta))
    axis.text(*(mid_short + [3, 2]), "h", fontsize=8)
    axis.text(
        5, 96, "w >= h; theta in [-pi/2, pi/2) radians, from +x\ntowards +y (clockwise on screen, y down)", fontsize=7.5
    )

    # HRSC2016 mbox
    axis = axes[2]
    _image_axes(axis, size, size, "HRSC2016 mbox: mbox_cx cy w h ang")
    cx, cy, w, h, ang = 50.0, 52.0, 66.0, 20.0, -0.6
    corners = _rectangle_corners(cx, cy, w, h, ang)
    axis.fill(*_closed(corners).T, color="tab:purple", alpha=0.12)
    axis.plot(*_closed(corners).T, color="tab:purple", lw=2)
    axis.plot(cx, cy, "k.")
    axis.plot([cx, cx + 40], [cy, cy], color="gray", lw=1, ls="--")
    tip = np.array([cx, cy]) + 0.3 * w * np.array([math.cos(ang), math.sin(ang)])
    axis.annotate("", xy=tuple(tip), xytext=(cx, cy), arrowprops=dict(arrowstyle="->", color="k"))
    axis.add_patch(Arc((cx, cy), 36, 36, angle=0, theta1=math.degrees(ang), theta2=0, color="k"))
    axis.text(cx + 12, cy + 8, "mbox_ang < 0", fontsize=8)
    axis.text(*((corners[2] + corners[3]) / 2 + [-4, 9]), "mbox_w", fontsize=8)
    axis.text(*((corners[1] + corners[2]) / 2 + [3, 6]), "mbox_h", fontsize=8)
    axis.text(
        5, 96, "XML fields, angle in radians, same sense as theta;\nmbox_to_rbox normalises to w >= h", fontsize=7.5
    )

    # ORC (GGHL)
    axis = axes[3]
    _image_axes(axis, size, size, "ORC (GGHL): HBB + gliding s1..s4 + area ratio")
    xmin, ymin, xmax, ymax = 20.0, 22.0, 84.0, 80.0
    bw, bh = xmax - xmin, ymax - ymin
    s = (0.30, 0.40, 0.25, 0.35)
    v = np.array(
        [[xmin + s[0] * bw, ymin], [xmax, ymin + s[1] * bh], [xmax - s[2] * bw, ymax], [xmin, ymax - s[3] * bh]]
    )
    axis.plot(
        *_closed(np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]])).T, color="gray", lw=1, ls="--"
    )
    axis.fill(*_closed(v).T, color="tab:green", alpha=0.15)
    axis.plot(*_closed(v).T, color="tab:green", lw=2)
    names = ("v1 (top)", "v2 (right)", "v3 (bottom)", "v4 (left)")
    offsets = ((-4, -3), (2, 0), (-18, 7), (-17, 1))
    for point, name, (dx, dy) in zip(v, names, offsets):
        axis.plot(*point, "o", color="tab:green")
        axis.text(point[0] + dx, point[1] + dy, name, fontsize=8)
    arrow = dict(arrowstyle="<->", color="tab:red", lw=1)
    axis.annotate("", xy=(v[0, 0], ymin - 2), xytext=(xmin, ymin - 2), arrowprops=arrow)
    axis.text(xmin + 2, ymin - 4, "s1·w", fontsize=8, color="tab:red")
    axis.annotate("", xy=(xmax + 2, v[1, 1]), xytext=(xmax + 2, ymin), arrowprops=arrow)
    axis.text(xmax + 3, ymin + 8, "s2·h", fontsize=8, color="tab:red")
    axis.annotate("", xy=(v[2, 0], ymax + 2), xytext=(xmax, ymax + 2), arrowprops=arrow)
    axis.text(v[2, 0] + 12, ymax - 2, "s3·w", fontsize=8, color="tab:red")
    axis.annotate("", xy=(xmin - 2, v[3, 1]), xytext=(xmin - 2, ymax), arrowprops=arrow)
    axis.text(xmin - 15, ymax - 3, "s4·h", fontsize=8, color="tab:red")
    axis.text(xmin + 2, ymin + bh / 2, "(xmin, ymin, xmax, ymax)\nw = xmax-xmin, h = ymax-ymin", fontsize=7)
    axis.text(
        5, 96, "s1=(x1-xmin)/w  s2=(y2-ymin)/h  s3=(xmax-x3)/w\ns4=(ymax-y4)/h;  r = area(poly)/area(HBB)", fontsize=7.5
    )

    fig.tight_layout()
    return _save_figure(fig, path, dpi=90)
