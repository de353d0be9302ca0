"""The built-in synthetic dataset, written to disk in the real HRSC2016 and DOTA formats.

`make_synthetic_hrsc(out_dir)` draws remote-sensing-like ship scenes and writes them exactly as
HRSC2016 is laid out (`FullDataSet/{AllImages,Annotations}`, `ImageSets/{trainval,test}.txt`,
one XML per image), so the real reader (`dked_tf.data.hrsc.read_hrsc`) is what training uses.
`make_synthetic_dota(out_dir)` writes a multi-class variant in the DOTA layout
(`{train,val}/{images,labelTxt}`) with ships, planes, small and large vehicles and storage tanks.

What makes it a genuine detection task:
- backgrounds: sea with noise at several scales, gradients and wave texture; land with buildings,
  roads and clutter; harbours with piers and moored ships;
- ships: elongated hulls with a pointed bow, superstructure, deck detail (containers, pipes),
  shadows, V-shaped wakes at sea; any orientation; lengths from ~5% to ~70% of the image side
  (all three FPN levels at S=256: strides 8/16/32), aspect ratio 3:1 to 10:1;
- crowded harbours with touching, parallel ships; partial occlusion (gantries, clouds); ships cut
  by the image border (`truncated`); distractors (rocks, buoys, slicks, elongated buildings and
  container stacks on land); difficult objects (tiny, low contrast, or heavily occluded) flagged
  `difficult=1`.

Defaults (used by the main recipe): images whose long side is 256 px (short side 192–256),
300 trainval + 100 test images, seed 0, JPEG. Generation is deterministic from the seed (each
image has its own generator seeded by (seed, split, index)) and is skipped when `manifest.json`
in `out_dir` records a complete dataset made with the same parameters.

Command line: `python -m dked_tf.data.synthetic OUT_DIR [--num-train N ...]` writes a dataset;
`python -m dked_tf.data.synthetic --preview docs/images/synthetic_samples.png` draws samples.
"""

import argparse
import json
import os
import sys

import cv2
import numpy as np

from dked_tf.data.dota import write_dota_label
from dked_tf.data.hrsc import SHIP_CLASS_ID, poly_hbb, write_hrsc_xml, write_imageset
from dked_tf.data.records import ImageRecord
from dked_tf.ops.obb import mbox_to_poly
from dked_tf.terminal import progress as terminal_progress
from dked_tf.visualize import draw_polygons

GENERATOR_VERSION = 2
SYNTHETIC_DOTA_CLASSES = ("plane", "small-vehicle", "large-vehicle", "ship", "storage-tank")


# --------------------------------------------------------------------------- textures


def _noise(rng, height, width, cell_sizes, weights):
    """Sum of smooth random fields, one per cell size (pixels), float32 [H, W], ~unit scale."""
    out = np.zeros((height, width), np.float32)
    for cell, weight in zip(cell_sizes, weights):
        gh, gw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
        oy, ox = rng.integers(0, max(1, big.shape[0] - height)), rng.integers(0, max(1, big.shape[1] - width))
        out += weight * big[oy : oy + height, ox : ox + width]
    return out


def _gradient(rng, height, width, strength):
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys) / max(height, width)
    return strength * (ramp - ramp.mean())


def _sea(rng, height, width):
    palette = [(25, 55, 85), (30, 70, 80), (45, 75, 95), (20, 40, 60), (60, 85, 95), (35, 65, 60)]
    base = np.array(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.75, 1.3)
    base += rng.uniform(-8, 8, 3)
    field = _noise(rng, height, width, (64, 24, 8), (10, 5, 2.5))
    # wave texture: fine anisotropic noise stretched along a wind direction
    small = rng.standard_normal((height // 2 + 2, width // 2 + 2)).astype(np.float32)
    k = int(rng.integers(5, 11)) | 1
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    waves = cv2.resize(cv2.filter2D(small, -1, kernel / max(kernel.sum(), 1e-6)), (width, height))
    shade = field + rng.uniform(3, 9) * waves + _gradient(rng, height, width, rng.uniform(0, 40))
    return base[None, None, :] + shade[..., None] * np.array([0.8, 1.0, 1.0], np.float32)


def _land(rng, height, width):
    palette = [(110, 100, 80), (95, 105, 75), (130, 125, 115), (150, 140, 120), (85, 90, 70)]
    base = np.array(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.8, 1.2)
    field = _noise(rng, height, width, (48, 16, 4), (14, 8, 6))
    return base[None, None, :] + field[..., None] + _gradient(rng, height, width, 25)[..., None]


def _fill(image, points, color, alpha=1.0):
    """Draws a filled polygon (float points [K, 2]) with sub-pixel, anti-aliased edges."""
    pts = np.round(np.asarray(points, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)
    if alpha >= 1.0:
        cv2.fillPoly(image, [pts], tuple(float(c) for c in color), cv2.LINE_AA, shift=4)
        return
    layer = image.copy()
    cv2.fillPoly(layer, [pts], tuple(float(c) for c in color), cv2.LINE_AA, shift=4)
    cv2.addWeighted(layer, alpha, image, 1 - alpha, 0, dst=image)


def _mask_of(points, height, width):
    mask = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(points) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, shift=4)
    return mask


def _local_to_image(points, cx, cy, angle):
    c, s = np.cos(angle), np.sin(angle)
    p = np.asarray(points, np.float64)
    return np.stack([cx + c * p[:, 0] - s * p[:, 1], cy + s * p[:, 0] + c * p[:, 1]], 1)


def _rect(length, width, x0=0.0, y0=0.0):
    hl, hw = length / 2, width / 2
    return np.array([[x0 - hl, y0 - hw], [x0 + hl, y0 - hw], [x0 + hl, y0 + hw], [x0 - hl, y0 + hw]])


# --------------------------------------------------------------------------- ships


def _hull_outline(length, width, bow_fraction):
    """Local hull outline (bow towards +x), float [K, 2]."""
    hl, hw = length / 2, width / 2
    bow = length * bow_fraction
    stern = min(width * 0.3, length * 0.1)
    right = [(-hl, hw * 0.75), (-hl + stern, hw)]
    right += [(hl - bow, hw)]
    for t in np.linspace(0.25, 1.0, 4):
        right.append((hl - bow + bow * t, hw * (1 - t**1.7)))
    left = [(x, -y) for x, y in reversed(right[:-1])]
    return np.array(right + left)


def _draw_ship(image, rng, cx, cy, length, width, angle, kind, low_contrast_color=None, wake=False):
    """Draws one ship; returns its outline in image pixels."""
    bow_fraction = rng.uniform(0.12, 0.28)
    hull = _hull_outline(length, width, bow_fraction)
    if wake:
        wake_len = length * rng.uniform(0.6, 2.0)
        spread = rng.uniform(0.15, 0.35)
        tri = np.array(
            [
                [-length / 2, -width * 0.3],
                [-length / 2 - wake_len, -wake_len * spread - width],
                [-length / 2 - wake_len, wake_len * spread + width],
                [-length / 2, width * 0.3],
            ]
        )
        layer = np.zeros(image.shape[:2], np.float32)
        _fill(layer, _local_to_image(tri, cx, cy, angle), (1.0,))
        layer = cv2.GaussianBlur(layer, (0, 0), max(1.0, width * 0.4))
        texture = 0.6 + 0.4 * rng.random(layer.shape).astype(np.float32)
        image += (layer * texture * rng.uniform(25, 60))[..., None]
    # shadow
    sdx, sdy = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0)
    _fill(image, _local_to_image(hull, cx + sdx, cy + sdy, angle), (15, 18, 22), alpha=0.6)
    palettes = {
        "warship": [(120, 125, 130), (95, 100, 108)],
        "cargo": [(60, 60, 70), (150, 40, 35), (40, 70, 120)],
        "tanker": [(110, 35, 30), (45, 45, 45)],
        "boat": [(225, 225, 220), (200, 205, 210)],
        "carrier": [(85, 88, 92)],
    }
    hull_color = np.array(palettes[kind][rng.integers(len(palettes[kind]))], np.float32) * rng.uniform(0.85, 1.15)
    if low_contrast_color is not None:
        hull_color = low_contrast_color + rng.uniform(-12, 12, 3)
    _fill(image, _local_to_image(hull, cx, cy, angle), hull_color)
    inner = _hull_outline(length * 0.92, width * 0.75, bow_fraction)
    deck_color = hull_color * rng.uniform(0.75, 1.25) + rng.uniform(-10, 10, 3)
    _fill(image, _local_to_image(inner, cx, cy, angle), deck_color)
    detail = 1.0 if low_contrast_color is None else 0.35
    hl = length / 2
    if kind == "cargo" and length > 24:
        # rows of coloured containers between bridge and bow
        colors = [(180, 60, 40), (40, 90, 160), (200, 170, 60), (70, 140, 80), (200, 200, 200)]
        n = int(rng.integers(3, 9))
        span = length * 0.55
        x = -hl + length * 0.22
        for _ in range(n):
            c = np.array(colors[rng.integers(len(colors))], np.float32)
            _fill(
                image,
                _local_to_image(_rect(span / n * 0.85, width * 0.6, x + span / n / 2), cx, cy, angle),
                deck_color + detail * (c - deck_color),
            )
            x += span / n
    elif kind == "tanker":
        _fill(
            image,
            _local_to_image(_rect(length * 0.6, max(1.0, width * 0.08), 0.0), cx, cy, angle),
            deck_color + detail * 60,
        )
    elif kind == "carrier":
        _fill(
            image,
            _local_to_image(_rect(length * 0.8, max(1.0, width * 0.05), 0.0, -width * 0.05), cx, cy, angle),
            deck_color + detail * 80,
        )
    # superstructure (bridge): near the stern for merchant ships, midship for warships
    pos = {"warship": rng.uniform(-0.1, 0.1), "boat": rng.uniform(-0.2, 0.0)}.get(kind, rng.uniform(-0.38, -0.3))
    sup = _rect(length * rng.uniform(0.08, 0.18), width * rng.uniform(0.45, 0.7), pos * length)
    if kind == "carrier":
        sup = _rect(length * 0.1, width * 0.2, 0.05 * length, width * 0.3)
    sup_color = deck_color + detail * rng.choice([-70, 70]) * np.ones(3)
    _fill(image, _local_to_image(sup + [0.8, 0.8], cx, cy, angle), deck_color * 0.5, alpha=0.5 * detail + 0.2)
    _fill(image, _local_to_image(sup, cx, cy, angle), sup_color)
    return _local_to_image(hull, cx, cy, angle)


def _draw_distractor(image, rng, land, height, width, on_land):
    kind = rng.choice(
        ["building", "containers", "road"] if on_land else ["rock", "buoy", "slick", "cloud", "pier_block"]
    )
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    angle = rng.uniform(0, np.pi)
    if kind == "building":
        size = rng.uniform(6, 40)
        _fill(image, _local_to_image(_rect(size * rng.uniform(1, 4), size) + 2, cx, cy, angle), (30, 30, 30), 0.5)
        _fill(image, _local_to_image(_rect(size * rng.uniform(1, 4), size), cx, cy, angle), rng.uniform(90, 200, 3))
    elif kind == "containers":
        n, m = rng.integers(2, 6), rng.integers(1, 4)
        for i in range(n):
            for j in range(m):
                c = [(180, 60, 40), (40, 90, 160), (200, 170, 60), (200, 200, 200)][rng.integers(4)]
                _fill(image, _local_to_image(_rect(10, 4, i * 11 - n * 5.5, j * 5 - m * 2.5), cx, cy, angle), c)
    elif kind == "road":
        _fill(image, _local_to_image(_rect(max(height, width) * 2, rng.uniform(3, 8)), cx, cy, angle), (70, 70, 72))
    elif kind == "rock":
        r = rng.uniform(3, 14)
        k = int(rng.integers(6, 11))
        a = np.sort(rng.uniform(0, 2 * np.pi, k))
        pts = np.stack(
            [cx + r * rng.uniform(0.5, 1.2, k) * np.cos(a), cy + r * rng.uniform(0.5, 1.2, k) * np.sin(a)], 1
        )
        _fill(image, pts, rng.uniform(70, 140, 3))
    elif kind == "buoy":
        cv2.circle(image, (int(cx), int(cy)), int(rng.integers(1, 3)), (230, 200, 60), -1, cv2.LINE_AA)
    elif kind == "slick":
        layer = np.zeros((height, width), np.float32)
        cv2.ellipse(layer, ((cx, cy), (rng.uniform(10, 60), rng.uniform(5, 20)), np.rad2deg(angle)), 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), 4)
        image *= (1 - 0.3 * layer)[..., None]
    elif kind == "cloud":
        layer = np.zeros((height, width), np.float32)
        cv2.circle(layer, (int(cx), int(cy)), int(rng.uniform(10, 40)), 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(6, 14)) * rng.uniform(0.3, 0.7)
        image[:] = image * (1 - layer[..., None]) + 235 * layer[..., None]
    elif kind == "pier_block":
        # floating pontoon: rectangular, no bow (a hard negative for ship detectors)
        _fill(
            image,
            _local_to_image(_rect(rng.uniform(10, 40), rng.uniform(3, 6)), cx, cy, angle),
            rng.uniform(120, 170, 3),
        )


DEFAULT_MIN_SHIP_LENGTH = 0.05  # shortest ship at sea, as a fraction of the image's long side
DEFAULT_MAX_SHIP_ASPECT = 10.0  # most slender ship: length / width


def _aspect(rng, low, high, max_aspect):
    """Length / width drawn uniformly from [low, high], both capped at max_aspect."""
    return rng.uniform(min(low, max_aspect), min(high, max_aspect))


def _ship_size(rng, scale, min_length=DEFAULT_MIN_SHIP_LENGTH, max_aspect=DEFAULT_MAX_SHIP_ASPECT):
    """Samples (length, width) in pixels; lengths log-uniform over min_length..70% of `scale`,
    length / width in 3..10 (3..6 below 30 px), capped at max_aspect."""
    length = float(np.exp(rng.uniform(np.log(min_length * scale), np.log(0.7 * scale))))
    aspect = _aspect(rng, 3.0, 10.0, max_aspect) if length > 30 else _aspect(rng, 3.0, 6.0, max_aspect)
    width = max(3.0, length / aspect)
    return length, width


def _place(rng, candidate_mask, occupied, blocked, max_overlap=0.08):
    """True when a candidate mask overlaps other objects / land by at most `max_overlap`."""
    area = candidate_mask.sum()
    if area < 4:
        return False
    return (candidate_mask & occupied).sum() <= max_overlap * area and (candidate_mask & blocked).sum() <= 0.05 * area


def render_hrsc_scene(
    rng, width, height, min_ship_length=DEFAULT_MIN_SHIP_LENGTH, max_ship_aspect=DEFAULT_MAX_SHIP_ASPECT
):
    """Draws one ship scene. min_ship_length: shortest ship (at sea and moored), as a fraction
    of the image's long side. max_ship_aspect: most slender ship (length / width; moored ships
    are drawn 4..8, ships at sea 3..10, both capped at it).

    Returns: (image uint8 [H, W, 3] RGB, objects: list of dicts with `mbox` (cx, cy, w, h, ang
    radians, w = length), `header` (bow x, y), `difficult`, `truncated`, `kind`).
    """
    scale = max(width, height)
    harbour = rng.random() < 0.55
    image = _sea(rng, height, width).astype(np.float32)
    land_mask = np.zeros((height, width), np.uint8)
    sea_color = image.reshape(-1, 3).mean(0)
    piers = []
    if harbour:
        normal = rng.uniform(0, 2 * np.pi)
        n = np.array([np.cos(normal), np.sin(normal)])
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        proj = (xs - width / 2) * n[0] + (ys - height / 2) * n[1]
        offset = rng.uniform(0.1, 0.35) * scale
        wobble = _noise(rng, height, width, (64, 16), (6, 2)) * rng.uniform(0.5, 2)
        land_mask = ((proj + wobble) > offset).astype(np.uint8)
        land = _land(rng, height, width).astype(np.float32)
        for _ in range(int(rng.integers(2, 10))):
            _draw_distractor(land, rng, land_mask, height, width, on_land=True)
        image = np.where(land_mask[..., None] > 0, land, image)
        # quay edge
        edge = cv2.morphologyEx(land_mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        image[edge > 0] = image[edge > 0] * 0.6 + 90
        # piers into the sea, perpendicular to the coast
        for _ in range(int(rng.integers(1, 4))):
            t = rng.uniform(-0.45, 0.45) * scale
            tangent = np.array([-n[1], n[0]])
            base = np.array([width / 2, height / 2]) + n * offset + tangent * t
            plen, pwid = rng.uniform(0.2, 0.5) * scale, rng.uniform(4, 10)
            pc = base - n * plen / 2
            pts = _local_to_image(_rect(plen + 6, pwid), pc[0], pc[1], normal)
            _fill(image, pts, rng.uniform(120, 170) * np.ones(3))
            land_mask |= _mask_of(pts, height, width)
            piers.append((pc, plen, pwid, normal))
    image = image.astype(np.float32)
    objects = []
    occupied = np.zeros((height, width), np.uint8)
    kinds = ["warship", "cargo", "tanker", "boat", "carrier"]
    kind_p = [0.3, 0.3, 0.15, 0.2, 0.05]

    def add_ship(cx, cy, length, width_, angle, moored):
        kind = rng.choice(kinds, p=kind_p)
        if kind == "boat":
            length, width_ = min(length, 0.15 * scale), max(3.0, min(length, 0.15 * scale) / rng.uniform(2.5, 4))
        hull = _hull_outline(length, width_, 0.2)
        pts = _local_to_image(hull, cx, cy, angle)
        mask = _mask_of(pts, height, width)
        inside = mask.sum()
        full_area = max(1.0, cv2.contourArea(pts.astype(np.float32)))
        if not _place(rng, mask, occupied, land_mask if not moored else np.zeros_like(land_mask)):
            return False
        if moored and (mask & land_mask).sum() > 0.1 * inside:
            return False
        low_contrast = rng.random() < 0.06
        wake = (not moored) and rng.random() < 0.5
        _draw_ship(
            image,
            rng,
            cx,
            cy,
            length,
            width_,
            angle,
            kind,
            low_contrast_color=sea_color if low_contrast else None,
            wake=wake,
        )
        occupied[:] |= mask
        truncated = inside < 0.97 * full_area
        visible = inside / full_area
        occluded = False
        if rng.random() < 0.08:
            # gantry / bridge / cloud over part of the ship
            occluded = True
            oc_len = rng.uniform(0.3, 0.8) * length
            pts_o = _local_to_image(
                _rect(rng.uniform(0.15, 0.5) * length, width_ * 3 + 10, rng.uniform(-0.3, 0.3) * length), cx, cy, angle
            )
            if rng.random() < 0.5:
                _fill(image, pts_o, rng.uniform(60, 110) * np.ones(3), alpha=0.85)
            else:
                layer = np.zeros((height, width), np.float32)
                cv2.circle(layer, (int(cx), int(cy)), int(oc_len / 2 + 3), 1.0, -1)
                layer = cv2.GaussianBlur(layer, (0, 0), 3) * 0.75
                image[:] = image * (1 - layer[..., None]) + 230 * layer[..., None]
        difficult = length < 12 or low_contrast or (occluded and rng.random() < 0.5) or visible < 0.5
        if visible < 0.25:
            return True  # less than a quarter inside the image: drawn (clutter), not annotated
        a = (angle + np.pi / 2) % np.pi - np.pi / 2
        bow = np.array([cx + np.cos(angle) * length / 2, cy + np.sin(angle) * length / 2])
        objects.append(
            {
                "mbox": [cx, cy, length, width_, a],
                "header": bow.tolist(),
                "difficult": bool(difficult),
                "truncated": bool(truncated),
                "kind": str(kind),
            }
        )
        return True

    # moored ships: alongside piers and the quay, parallel, touching
    for pc, plen, pwid, normal in piers:
        tangent = np.array([-np.sin(normal), np.cos(normal)])
        along = np.array([np.cos(normal), np.sin(normal)])
        for side in (-1, 1):
            offset = pwid / 2 + 1.0
            for _ in range(int(rng.integers(0, 4))):
                length = max(rng.uniform(0.3, 0.9) * plen, min_ship_length * scale)
                width_ = max(3.0, length / _aspect(rng, 4.0, 8.0, max_ship_aspect))
                c = pc + tangent * side * (offset + width_ / 2) + along * rng.uniform(-0.25, 0.25) * (plen - length)
                if add_ship(c[0], c[1], length, width_, normal + (np.pi if rng.random() < 0.5 else 0), True):
                    offset += width_ + rng.uniform(0.0, 2.5)
    # ships at sea (and along the quay)
    for _ in range(int(rng.integers(1, 7 if not harbour else 6))):
        for _attempt in range(12):
            length, width_ = _ship_size(rng, scale, min_ship_length, max_ship_aspect)
            margin = -0.15 * length
            cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
            if add_ship(cx, cy, length, width_, rng.uniform(-np.pi, np.pi), False):
                break
    for _ in range(int(rng.integers(1, 6))):
        _draw_distractor(image, rng, land_mask, height, width, on_land=False)
    # sensor: global gain, blur, noise
    image *= rng.uniform(0.85, 1.15)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    image += rng.normal(0, rng.uniform(1.5, 5.0), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------- DOTA scenes


def _plane_outline(length):
    """Local plane outline (nose towards +x), float [K, 2], wingspan ~ length."""
    L = length / 2
    fw = length * 0.06
    span = length * 0.5
    pts = [
        (L, 0),
        (L * 0.8, fw),
        (L * 0.15, fw),
        (-L * 0.15, span),
        (-L * 0.3, span),
        (-L * 0.1, fw),
        (-L * 0.75, fw),
        (-L * 0.95, span * 0.4),
        (-L, span * 0.4),
        (-L * 0.95, 0),
    ]
    right = pts
    left = [(x, -y) for x, y in reversed(pts[1:-1])]
    return np.array(right + left)


def render_dota_scene(rng, width, height):
    """Draws one multi-class scene. Objects: dicts with `poly` [8], `class_name`, `difficult`."""
    scale = max(width, height)
    image = _land(rng, height, width)
    # concrete apron
    apron = _noise(rng, height, width, (32, 4), (5, 3))[..., None] + rng.uniform(140, 175)
    ys, xs = np.mgrid[0:height, 0:width]
    split_angle = rng.uniform(0, np.pi)
    proj = (xs - width / 2) * np.cos(split_angle) + (ys - height / 2) * np.sin(split_angle)
    apron_mask = proj > rng.uniform(-0.2, 0.2) * scale
    image = np.where(apron_mask[..., None], apron, image)
    sea_mask = proj < -rng.uniform(0.25, 0.45) * scale
    if rng.random() < 0.75:
        image = np.where(sea_mask[..., None], _sea(rng, height, width), image)
    else:
        sea_mask = np.zeros_like(sea_mask)
    image = image.astype(np.float32)
    land_only = image.copy()
    for _ in range(int(rng.integers(3, 10))):
        _draw_distractor(land_only, rng, None, height, width, on_land=True)
    image = np.where(sea_mask[..., None], image, land_only)
    occupied = np.zeros((height, width), np.uint8)
    objects = []

    def try_add(poly_local, draw_outline, cx, cy, angle, class_name, color, difficult=False, region=None):
        pts = _local_to_image(draw_outline, cx, cy, angle)
        mask = _mask_of(pts, height, width)
        area = mask.sum()
        if area < 4 or (mask & occupied).sum() > 0.05 * area:
            return False
        if region is not None and (mask & region).sum() < 0.9 * area:
            return False
        _fill(image, pts + 1.5, (25, 25, 25), alpha=0.5)
        _fill(image, pts, color)
        occupied[:] |= mask
        box = _local_to_image(poly_local, cx, cy, angle)
        full = max(1.0, cv2.contourArea(box.astype(np.float32)))
        if area < 0.3 * full * (cv2.contourArea(pts.astype(np.float32)) / full):
            return True
        objects.append({"poly": box.reshape(-1).tolist(), "class_name": class_name, "difficult": bool(difficult)})
        return True

    apron_u8 = apron_mask.astype(np.uint8)
    # planes on the apron
    for _ in range(int(rng.integers(0, 5))):
        for _a in range(8):
            length = rng.uniform(0.06, 0.25) * scale
            outline = _plane_outline(length)
            lo, hi = outline.min(0), outline.max(0)
            box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
            if try_add(
                box,
                outline,
                rng.uniform(0, width),
                rng.uniform(0, height),
                rng.uniform(-np.pi, np.pi),
                "plane",
                rng.uniform(190, 245) * np.ones(3),
                length < 14,
                apron_u8,
            ):
                break
    # parking rows of vehicles
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, np.pi)
        cx0, cy0 = rng.uniform(0, width), rng.uniform(0, height)
        large = rng.random() < 0.35
        n = int(rng.integers(3, 10))
        vl = rng.uniform(0.035, 0.08) * scale if large else rng.uniform(0.015, 0.03) * scale
        vw = vl / (rng.uniform(2.5, 4) if large else rng.uniform(1.7, 2.3))
        for i in range(n):
            off = (i - n / 2) * (vw + rng.uniform(1, 3))
            cx = cx0 - np.sin(angle) * off
            cy = cy0 + np.cos(angle) * off
            color = rng.uniform(40, 230, 3)
            outline = _rect(vl, vw)
            try_add(
                outline,
                outline,
                cx,
                cy,
                angle + rng.normal(0, 0.05),
                "large-vehicle" if large else "small-vehicle",
                color,
                vl < 6,
            )
    # storage tanks in a grid
    if rng.random() < 0.5:
        r = rng.uniform(0.02, 0.06) * scale
        cx0, cy0 = rng.uniform(0, width), rng.uniform(0, height)
        for i in range(int(rng.integers(1, 4))):
            for j in range(int(rng.integers(1, 4))):
                cx, cy = cx0 + i * 2.4 * r, cy0 + j * 2.4 * r
                k = 24
                a = np.linspace(0, 2 * np.pi, k, endpoint=False)
                circle = np.stack([r * np.cos(a), r * np.sin(a)], 1)
                try_add(_rect(2 * r, 2 * r), circle, cx, cy, 0.0, "storage-tank", rng.uniform(170, 235) * np.ones(3))
    # ships in the sea part
    sea_u8 = sea_mask.astype(np.uint8)
    if sea_u8.sum() > 0:
        for _ in range(int(rng.integers(2, 8))):
            for _a in range(10):
                length, w = _ship_size(rng, scale * 0.6)
                cx, cy, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-np.pi, np.pi)
                hull = _hull_outline(length, w, 0.2)
                mask = _mask_of(_local_to_image(hull, cx, cy, angle), height, width)
                area = mask.sum()
                if area < 4 or (mask & sea_u8).sum() < 0.95 * area or (mask & occupied).sum() > 0:
                    continue
                _draw_ship(
                    image,
                    rng,
                    cx,
                    cy,
                    length,
                    w,
                    angle,
                    rng.choice(["warship", "cargo", "boat"]),
                    wake=rng.random() < 0.5,
                )
                occupied[:] |= mask
                box = _local_to_image(_rect(length, w), cx, cy, angle)
                objects.append({"poly": box.reshape(-1).tolist(), "class_name": "ship", "difficult": bool(length < 10)})
                break
    image += rng.normal(0, rng.uniform(1.5, 4.0), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------- writing


def _image_size(rng, image_size):
    if isinstance(image_size, (tuple, list)):
        lo, hi = image_size
        return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    long_side = int(image_size)
    short = int(round(long_side * rng.uniform(0.75, 1.0)))
    return (long_side, short) if rng.random() < 0.5 else (short, long_side)


def _atomic_path(path):
    """A temporary name next to `path` (same folder, so `os.replace` onto `path` is atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def _write_atomic(path, data):
    """Writes bytes or text to `path` through a temporary file and `os.replace`."""
    tmp = _atomic_path(path)
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def _replace_from(path, write):
    """Calls `write(tmp_path)` and moves the result onto `path` atomically."""
    tmp = _atomic_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _manifest_matches(out_dir, params):
    path = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params or not manifest.get("complete"):
        return False
    return all(os.path.isfile(os.path.join(out_dir, p)) for p in manifest.get("files", []))


def _write_manifest(out_dir, params, files, stats=None):
    manifest = {"params": params, "complete": True, "files": files}
    if stats is not None:
        manifest["stats"] = stats
    _write_atomic(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1))


def _progress(iterable, total, verbose, desc):
    return terminal_progress(iterable, total=total, desc=desc, verbose=verbose, leave=False)


def _save_image(path, image_rgb, image_format):
    """Encodes an RGB uint8 [H, W, 3] image (JPEG quality 92, or lossless) and writes it atomically."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format in ("jpg", "jpeg") else []
    ok, data = cv2.imencode("." + image_format, bgr, params)
    if not ok:
        raise OSError(f"could not encode {path}")
    _write_atomic(path, data.tobytes())


def _hrsc_record(image_dir, image_id, image_format, width, height, objects):
    """ImageRecord of one generated image: HRSC raw fields (`mbox`, `hbb`, `header`, `Class_ID`,
    `truncated`) from the object dicts of a scene renderer."""
    mbox = np.array([o["mbox"] for o in objects], np.float64).reshape(-1, 5)
    hbb = np.round(poly_hbb(mbox_to_poly(mbox))).astype(np.float64)
    mbox = np.round(mbox, 4)
    return ImageRecord(
        image_path=os.path.join(image_dir, f"{image_id}.{image_format}"),
        image_id=image_id,
        width=width,
        height=height,
        polygons=mbox_to_poly(mbox).astype(np.float32),
        classes=np.zeros(len(objects), np.int32),
        difficult=np.array([o["difficult"] for o in objects], bool),
        extra={
            "mbox": mbox,
            "hbb": hbb,
            "header": np.round(np.array([o["header"] for o in objects], np.float64).reshape(-1, 2), 2),
            "class_id": np.array([o.get("class_id", SHIP_CLASS_ID) for o in objects], dtype=object),
            "object_id": np.array([f"{image_id}{k:03d}" for k in range(len(objects))], dtype=object),
            "truncated": np.array([o["truncated"] for o in objects], bool),
            "file_name": image_id,
            "file_fmt": image_format,
            "depth": 3,
        },
    )


def manifest_params(kind, num_train, num_test, image_size, seed, image_format, version):
    """The generation parameters a dataset's manifest records (a set with other parameters is
    generated again)."""
    return {
        "kind": kind,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "image_size": image_size if isinstance(image_size, int) else list(image_size),
        "seed": int(seed),
        "image_format": image_format,
        "version": version,
    }


def write_hrsc_dataset(
    out_dir,
    params,
    render,
    num_train,
    num_test,
    seed,
    image_size,
    image_format="jpg",
    overwrite=False,
    verbose=1,
    stream=0,
    desc="synthetic HRSC2016",
    summarize=None,
):
    """Renders scenes and writes them in the HRSC2016 layout; returns the absolute `out_dir`.

    Layout: out_dir/FullDataSet/AllImages/<id>.<image_format>, out_dir/FullDataSet/Annotations/<id>.xml,
    out_dir/ImageSets/{trainval,test}.txt, out_dir/manifest.json (`params`, `complete`, `files`,
    optional `stats`). Ids are 9-digit like the real ones: 1000xxxxx (trainval), 2000xxxxx (test).

    params: the dict that identifies the set in the manifest; a complete set with the same
        params is reused unless `overwrite`.
    render: `render(rng, width, height) -> (image uint8 [H, W, 3] RGB, objects)`; each object is a
        dict with `mbox` (cx, cy, w = length, h, ang radians; pixels), `header` (bow x, y),
        `difficult`, `truncated` and optionally `class_id` (9-digit HRSC Class_ID, default 100000001).
    image_size: long side in pixels (short side drawn in [0.75, 1] of it) or a (min, max) range.
    stream: salt of the per-image generators, `default_rng([seed, stream + split_code, index])`.
    summarize: optional `summarize(list of object lists) -> dict` stored as the manifest's `stats`.
    Every file is written to a temporary name and moved into place; the manifest comes last.
    """
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    if not overwrite and _manifest_matches(out_dir, params):
        if verbose:
            print(f"{desc} dataset up to date in {out_dir}")
        return out_dir
    image_dir = os.path.join(out_dir, "FullDataSet", "AllImages")
    ann_dir = os.path.join(out_dir, "FullDataSet", "Annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(os.path.join(out_dir, "ImageSets"), exist_ok=True)
    stale = os.path.join(out_dir, "manifest.json")
    if os.path.exists(stale):
        os.remove(stale)
    files, all_objects = [], []
    jobs = [("trainval", 1, i) for i in range(num_train)] + [("test", 2, i) for i in range(num_test)]
    split_ids = {"trainval": [], "test": []}
    for split, code, index in _progress(jobs, len(jobs), verbose, desc):
        rng = np.random.default_rng([int(seed), int(stream) + code, index])
        w, h = _image_size(rng, image_size)
        image, objects = render(rng, w, h)
        image_id = f"{code}000{index + 1:05d}"
        image_name = f"{image_id}.{image_format}"
        _save_image(os.path.join(image_dir, image_name), image, image_format)
        record = _hrsc_record(image_dir, image_id, image_format, w, h, objects)
        xml_path = os.path.join(ann_dir, f"{image_id}.xml")
        _replace_from(xml_path, lambda tmp, record=record: write_hrsc_xml(record, tmp))
        split_ids[split].append(image_id)
        all_objects.append(objects)
        files += [f"FullDataSet/AllImages/{image_name}", f"FullDataSet/Annotations/{image_id}.xml"]
    for split, ids in split_ids.items():
        path = os.path.join(out_dir, "ImageSets", f"{split}.txt")
        _replace_from(path, lambda tmp, ids=ids: write_imageset(ids, tmp))
        files.append(f"ImageSets/{split}.txt")
    _write_manifest(out_dir, params, files, summarize(all_objects) if summarize else None)
    if verbose:
        print(f"wrote {desc} dataset ({num_train} trainval + {num_test} test) to {out_dir}")
    return out_dir


def make_synthetic_hrsc(
    out_dir,
    num_train=300,
    num_test=100,
    image_size=256,
    seed=0,
    image_format="jpg",
    overwrite=False,
    verbose=1,
    min_ship_length=DEFAULT_MIN_SHIP_LENGTH,
    max_ship_aspect=DEFAULT_MAX_SHIP_ASPECT,
):
    """Writes the easy synthetic ship dataset in the HRSC2016 layout; returns `out_dir`.

    Layout and caching: see `write_hrsc_dataset` (one class, Class_ID 100000001).
    image_size: long side in pixels (short side drawn in [0.75, 1] of it) or (min, max) range.
    min_ship_length: shortest ship as a fraction of the image's long side (lengths are
    log-uniform from it to 70 %). max_ship_aspect: most slender ship, length / width (the
    aspect ratios are drawn from 3..10, capped at it).
    """
    params = manifest_params("hrsc", num_train, num_test, image_size, seed, image_format, GENERATOR_VERSION)
    if float(min_ship_length) != DEFAULT_MIN_SHIP_LENGTH:
        params["min_ship_length"] = float(min_ship_length)
    if float(max_ship_aspect) != DEFAULT_MAX_SHIP_ASPECT:
        params["max_ship_aspect"] = float(max_ship_aspect)

    def render(rng, w, h):
        return render_hrsc_scene(rng, w, h, min_ship_length=min_ship_length, max_ship_aspect=max_ship_aspect)

    return write_hrsc_dataset(
        out_dir,
        params,
        render,
        num_train,
        num_test,
        seed,
        image_size,
        image_format,
        overwrite=overwrite,
        verbose=verbose,
        desc="synthetic HRSC2016",
    )


def make_synthetic_dota(
    out_dir, num_train=100, num_test=30, image_size=512, seed=0, image_format="png", overwrite=False, verbose=1
):
    """Writes a multi-class synthetic dataset in the DOTA layout; returns `out_dir`.

    out_dir/{train,val}/images/P<nnnn>.<image_format>, out_dir/{train,val}/labelTxt/P<nnnn>.txt
    (with `imagesource:` and `gsd:` headers), out_dir/manifest.json (with the class list,
    `SYNTHETIC_DOTA_CLASSES`, a subset of the DOTA v1.0 names).
    """
    params = manifest_params("dota", num_train, num_test, image_size, seed, image_format, GENERATOR_VERSION)
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    if not overwrite and _manifest_matches(out_dir, params):
        if verbose:
            print(f"synthetic DOTA dataset up to date in {out_dir}")
        return out_dir
    stale = os.path.join(out_dir, "manifest.json")
    if os.path.exists(stale):
        os.remove(stale)
    files = []
    jobs = [("train", 1, i) for i in range(num_train)] + [("val", 2, i) for i in range(num_test)]
    for split, code, index in _progress(jobs, len(jobs), verbose, "synthetic DOTA"):
        rng = np.random.default_rng([int(seed), 100 + code, index])
        w, h = _image_size(rng, image_size)
        image, objects = render_dota_scene(rng, w, h)
        image_id = f"P{code}{index:04d}"
        for sub in ("images", "labelTxt"):
            os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
        image_name = f"{image_id}.{image_format}"
        _save_image(os.path.join(out_dir, split, "images", image_name), image, image_format)
        record = ImageRecord(
            image_path=os.path.join(out_dir, split, "images", image_name),
            image_id=image_id,
            width=w,
            height=h,
            polygons=np.round(np.array([o["poly"] for o in objects], np.float64).reshape(-1, 8), 1),
            classes=np.array([SYNTHETIC_DOTA_CLASSES.index(o["class_name"]) for o in objects], np.int32),
            difficult=np.array([o["difficult"] for o in objects], bool),
            extra={"imagesource": "synthetic", "gsd": "0.5"},
        )
        _replace_from(
            os.path.join(out_dir, split, "labelTxt", f"{image_id}.txt"),
            lambda tmp, record=record: write_dota_label(record, tmp, SYNTHETIC_DOTA_CLASSES),
        )
        files += [f"{split}/images/{image_name}", f"{split}/labelTxt/{image_id}.txt"]
    _write_atomic(os.path.join(out_dir, "classes.txt"), "".join(c + "\n" for c in SYNTHETIC_DOTA_CLASSES))
    _write_manifest(out_dir, params, files + ["classes.txt"])
    if verbose:
        print(f"wrote synthetic DOTA dataset ({num_train} train + {num_test} val) to {out_dir}")
    return out_dir


def default_data_dir():
    """Where the built-in datasets go by default: $DKED_TF_DATA, else ~/.cache/dked_tf."""
    return os.environ.get("DKED_TF_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "dked_tf")


def ensure_synthetic_hrsc(out_dir=None, verbose=1, **kwargs):
    """Makes (or reuses, via the manifest) the default synthetic HRSC2016 set; returns its root.

    out_dir: default `default_data_dir()/synthetic_hrsc`; kwargs go to `make_synthetic_hrsc`.
    Read it with `read_hrsc(root, "trainval")` / `read_hrsc(root, "test")`.
    """
    out_dir = out_dir or os.path.join(default_data_dir(), "synthetic_hrsc")
    return make_synthetic_hrsc(out_dir, verbose=verbose, **kwargs)


def ensure_synthetic_dota(out_dir=None, verbose=1, **kwargs):
    """Like `ensure_synthetic_hrsc` for the DOTA variant (`default_data_dir()/synthetic_dota`);
    read with `read_dota(os.path.join(root, "train"), classes=None)`."""
    out_dir = out_dir or os.path.join(default_data_dir(), "synthetic_dota")
    return make_synthetic_dota(out_dir, verbose=verbose, **kwargs)


# --------------------------------------------------------------------------- preview


def _draw(image, polygons, labels, color):
    return draw_polygons(image, polygons, labels=labels, color=color, thickness=1)


def preview(
    path,
    num_hrsc=6,
    num_dota=2,
    image_size=256,
    seed=0,
    min_ship_length=DEFAULT_MIN_SHIP_LENGTH,
    max_ship_aspect=DEFAULT_MAX_SHIP_ASPECT,
):
    """Saves a grid of synthetic samples with their boxes (green; difficult in orange) to `path`."""
    tiles = []
    cell = image_size
    for i in range(num_hrsc):
        rng = np.random.default_rng([seed, 1, i])
        w, h = _image_size(rng, image_size)
        image, objects = render_hrsc_scene(rng, w, h, min_ship_length, max_ship_aspect)
        polys = mbox_to_poly(np.array([o["mbox"] for o in objects]).reshape(-1, 5))
        diff = np.array([o["difficult"] for o in objects], bool)
        image = _draw(image, polys[~diff], None, (0, 255, 0))
        image = _draw(image, polys[diff], None, (255, 140, 0))
        tiles.append(image)
    for i in range(num_dota):
        rng = np.random.default_rng([seed + 7, i])
        image, objects = render_dota_scene(rng, cell * 2, cell * 2)
        polys = np.array([o["poly"] for o in objects]).reshape(-1, 8)
        image = _draw(image, polys, None, (0, 255, 0))
        tiles.append(cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA))
    canvas_tiles = []
    for t in tiles:
        pad = np.full((cell, cell, 3), 255, np.uint8)
        pad[: t.shape[0], : t.shape[1]] = t[:cell, :cell]
        canvas_tiles.append(pad)
    cols = 4
    rows = int(np.ceil(len(canvas_tiles) / cols))
    while len(canvas_tiles) < rows * cols:
        canvas_tiles.append(np.full((cell, cell, 3), 255, np.uint8))
    grid = np.concatenate([np.concatenate(canvas_tiles[r * cols : (r + 1) * cols], 1) for r in range(rows)], 0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dked_tf.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", help="where to write the dataset")
    parser.add_argument("--format", choices=("hrsc", "dota"), default="hrsc")
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-ship-length",
        type=float,
        default=DEFAULT_MIN_SHIP_LENGTH,
        help="HRSC: shortest ship, fraction of the image side (default %(default)s)",
    )
    parser.add_argument(
        "--max-ship-aspect",
        type=float,
        default=DEFAULT_MAX_SHIP_ASPECT,
        help="HRSC: most slender ship, length / width (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--preview", metavar="PNG", help="save a picture of samples with their boxes")
    args = parser.parse_args(argv)
    if args.preview:
        print(
            preview(
                args.preview, seed=args.seed, min_ship_length=args.min_ship_length, max_ship_aspect=args.max_ship_aspect
            )
        )
    if args.out_dir:
        kwargs = {
            k: v
            for k, v in (("num_train", args.num_train), ("num_test", args.num_test), ("image_size", args.image_size))
            if v is not None
        }
        if args.format == "hrsc":
            make_synthetic_hrsc(
                args.out_dir,
                seed=args.seed,
                overwrite=args.overwrite,
                min_ship_length=args.min_ship_length,
                max_ship_aspect=args.max_ship_aspect,
                **kwargs,
            )
        else:
            make_synthetic_dota(args.out_dir, seed=args.seed, overwrite=args.overwrite, **kwargs)
    if not args.preview and not args.out_dir:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
