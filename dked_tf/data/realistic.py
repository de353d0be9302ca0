"""The realistic built-in ship dataset: aerial harbour, coast, channel and open-sea scenes in the HRSC2016 format.

`make_realistic_hrsc(out_dir)` draws ~512 px scenes and writes them exactly as HRSC2016 is laid out
(`FullDataSet/{AllImages,Annotations}`, `ImageSets/{trainval,test}.txt`, one XML per image, through the
same writer as the easy set, `dked_tf.data.synthetic.write_hrsc_dataset`), so `read_hrsc` is what
training and evaluation use. It is the hard counterpart of `make_synthetic_hrsc`:

- scenes (long side `image_size`, short side 75-100 % of it): harbours (straight quays, piers jutting
  into the water, dock basins, a breakwater, quay aprons with gantry cranes, container yards, warehouses,
  buildings, roads, storage tanks), coasts (irregular shore, beaches, surf, shallow turquoise water,
  vegetation and small towns, marinas), channels and canals (moving and moored traffic) and open sea
  (swell, sun glint); clouds with their shadows and haze over some images;
- ten hull types (`HULL_TYPES`), each mapped to a real HRSC2016 Class_ID so that `class_mode="31"`
  has ten classes and `class_mode="ship"` one: aircraft carrier, destroyer, frigate, container ship,
  merchant ship (tanker or bulk carrier deck), car carrier, cruise ship, submarine, yacht, hovercraft;
  each with its own outline, deck pattern, colours, size and aspect range;
- ship length log-normal, median 45 px at 512 px (8.8 % of the long side), clipped to 15 px (2.9 %)
  .. 45 % of the side; length / width 3:1 .. 9:1 by type; any heading; shadows from one sun direction
  per image; V-shaped Kelvin wakes and turbulent stern wakes behind moving ships, none behind moored
  or anchored ones;
- crowding: ships moored side by side along quays, piers and dock walls, some rafted two deep;
  about 7 ships per image over the set (harbours up to ~25, open sea 1-3);
- ships cut by the image border (the full rotated box is annotated, `truncated=1`; ships less than a
  quarter inside are drawn but not annotated); `difficult=1` for ships under 18 px (at 512 px), low
  contrast hulls, ships more than half hidden by cloud or more than half outside the image;
- hard negatives: piers, breakwaters, pontoons, barges, elongated warehouses, container stacks,
  cranes, rocks, wakes without ships.

Defaults: 300 trainval + 100 test images, 512 px, seed 0, JPEG. Deterministic from the seed (one
generator per image, seeded by (seed, split, index)); skipped when `manifest.json` records a complete
set made with the same parameters and `REALISTIC_VERSION`. The manifest also stores set statistics.

Command line: `python -m dked_tf.data.realistic OUT_DIR [--num-train N ...]` writes a dataset;
`python -m dked_tf.data.realistic --preview docs/images/realistic_samples.png` draws samples.
"""

import argparse
import collections
import os
import sys

import cv2
import numpy as np

from dked_tf.data.synthetic import (
    _gradient,
    _image_size,
    _local_to_image,
    _noise,
    _rect,
    _write_atomic,
    default_data_dir,
    manifest_params,
    write_hrsc_dataset,
)
from dked_tf.ops.obb import mbox_to_poly

REALISTIC_VERSION = 1
REFERENCE_SIZE = 512  # pixel sizes below are for a 512 px long side and scale with the image
MIN_LENGTH = 15 / 512  # shortest ship, fraction of the long side
MEDIAN_LENGTH = 45 / 512
MAX_LENGTH = 0.45
LENGTH_SIGMA = 0.6  # of log(length)
DIFFICULT_LENGTH = 18 / 512  # ships shorter than this are difficult
SCENE_KINDS = ("harbour", "coast", "channel", "sea")
SCENE_WEIGHTS = (0.45, 0.2, 0.15, 0.2)
STREAM = 10  # per-image generators: default_rng([seed, STREAM + split code, index])

HullType = collections.namedtuple("HullType", "name class_id weight lengths aspects")
HullType.__doc__ = """A ship type: `class_id` (9-digit HRSC Class_ID), relative frequency `weight`,
`lengths` (min, max) as fractions of the image's long side, `aspects` (min, max) length / width."""
HULL_TYPES = (
    HullType("aircraft carrier", "100000005", 0.8, (0.16, 0.45), (4.2, 5.2)),  # Nimitz
    HullType("destroyer", "100000007", 1.0, (0.06, 0.30), (7.0, 8.5)),  # Arleigh Burke
    HullType("frigate", "100000009", 1.0, (0.05, 0.25), (7.5, 9.0)),  # Perry
    HullType("container ship", "100000018", 1.3, (0.07, 0.45), (6.0, 8.0)),  # Container
    HullType("merchant ship", "100000004", 1.3, (0.05, 0.45), (5.5, 7.0)),  # tanker / bulk carrier
    HullType("car carrier", "100000020", 0.6, (0.07, 0.35), (5.0, 6.5)),  # Car carrier([]==[])
    HullType("cruise ship", "100000026", 0.6, (0.08, 0.40), (6.0, 8.0)),  # Cruise
    HullType("submarine", "100000027", 0.5, (0.04, 0.20), (8.0, 9.0)),  # submarine
    HullType("yacht", "100000024", 1.6, (0.0, 0.10), (3.0, 4.5)),  # yacht
    HullType("hovercraft", "100000022", 0.6, (0.0, 0.08), (3.0, 3.6)),  # Hovercraft
)
_TYPE_INDEX = {t.name: i for i, t in enumerate(HULL_TYPES)}

WATER_COLORS = (
    (28, 52, 62),
    (34, 62, 70),
    (22, 44, 66),
    (46, 70, 72),
    (38, 58, 52),
    (52, 74, 84),
    (20, 36, 50),
    (58, 72, 66),
)
CONTAINER_COLORS = (
    (178, 62, 48),
    (44, 84, 150),
    (205, 205, 200),
    (210, 150, 52),
    (62, 122, 82),
    (122, 122, 126),
    (150, 92, 62),
    (222, 190, 72),
    (40, 130, 150),
)
ROOF_COLORS = (
    (168, 168, 165),
    (195, 195, 190),
    (140, 135, 130),
    (150, 80, 62),
    (110, 120, 135),
    (205, 200, 185),
    (90, 95, 100),
    (120, 150, 160),
)


# --------------------------------------------------------------------------- drawing primitives


def _fixed(points, origin=(0.0, 0.0)):
    """float [K, 2] pixels -> int32 [K, 1, 2] in 1/16 pixel (cv2 `shift=4`)."""
    return np.round((np.asarray(points, np.float64) - origin) * 16).astype(np.int32).reshape(-1, 1, 2)


def _coverage(polygons, height, width, pad=1):
    """Anti-aliased coverage of polygons (list of float [K, 2]) in the image window they touch.

    Returns (window slices, coverage float32 [h, w] in 0..1) or (None, None) when outside the image.
    """
    allpts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polygons], 0)
    x0, y0 = max(int(np.floor(allpts[:, 0].min())) - pad, 0), max(int(np.floor(allpts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(allpts[:, 0].max())) + pad + 1, width)
    y1 = min(int(np.ceil(allpts[:, 1].max())) + pad + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None, None
    cov = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(cov, [_fixed(p, (x0, y0)) for p in polygons], 255, cv2.LINE_AA, shift=4)
    return (slice(y0, y1), slice(x0, x1)), cov.astype(np.float32) * (1.0 / 255)


def _paint(image, polygons, color, alpha=1.0):
    """Blends `color` (RGB floats) into float32 image [H, W, 3] over polygons (list of [K, 2] pixels)."""
    if not len(polygons):
        return
    win, cov = _coverage(polygons, *image.shape[:2])
    if win is None:
        return
    patch = image[win]
    patch += (np.asarray(color, np.float32) - patch) * (alpha * cov)[..., None]


def _shade(image, polygons, factor):
    """Darkens the image by `factor` (0..1) over polygons (shadows)."""
    win, cov = _coverage(polygons, *image.shape[:2])
    if win is not None:
        image[win] *= (1.0 - factor * cov)[..., None]


def _box_mask(points):
    """Polygon rasterised in its own bounding box (unclipped): (x0, y0, mask uint8 [h, w])."""
    pts = np.asarray(points, np.float64)
    x0, y0 = int(np.floor(pts[:, 0].min())) - 1, int(np.floor(pts[:, 1].min())) - 1
    x1, y1 = int(np.ceil(pts[:, 0].max())) + 2, int(np.ceil(pts[:, 1].max())) + 2
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_fixed(pts, (x0, y0))], 1, cv2.LINE_8, shift=4)
    return x0, y0, mask


def _window(x0, y0, mask, height, width):
    """The part of a box mask inside the image: (image slices, mask part) or (None, None)."""
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
    if xa >= xb or ya >= yb:
        return None, None
    return (slice(ya, yb), slice(xa, xb)), mask[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _ellipse(x, y, rx, ry, n=16):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([x + rx * np.cos(a), y + ry * np.sin(a)], 1)


class _Pen:
    """Draws shapes given in a local frame (pixels; origin at (cx, cy), +x along `angle`) onto an image."""

    def __init__(self, image, cx, cy, angle, fade=1.0, base=None):
        self.image, self.cx, self.cy, self.angle = image, cx, cy, angle
        self.fade = fade  # 1: full contrast; < 1 pulls every colour towards `base` (low-contrast ships)
        self.base = None if base is None else np.asarray(base, np.float32)

    def points(self, local):
        return _local_to_image(local, self.cx, self.cy, self.angle)

    def color(self, color):
        color = np.asarray(color, np.float32)
        return color if self.base is None else self.base + self.fade * (color - self.base)

    def fill(self, local, color, alpha=1.0):
        _paint(self.image, [self.points(local)], self.color(color), alpha)

    def fill_many(self, locals_, color, alpha=1.0):
        _paint(self.image, [self.points(p) for p in locals_], self.color(color), alpha)

    def rect(self, x, y, length, width, color, alpha=1.0):
        self.fill(_rect(length, width, x, y), color, alpha)

    def shadow(self, local, offset, factor):
        _shade(self.image, [self.points(local) + offset], factor)


# --------------------------------------------------------------------------- textures


def _water(rng, height, width, scale, kind):
    """Water texture float32 [H, W, 3]: colour, multi-scale noise, swell (rougher at sea), sun glint."""
    s = scale / REFERENCE_SIZE
    base = np.array(WATER_COLORS[rng.integers(len(WATER_COLORS))], np.float32) * rng.uniform(0.85, 1.2)
    field = _noise(rng, height, width, (scale / 3, scale / 10, scale / 40), (7, 3, 1.2))
    image = base + field[..., None] * np.array([0.7, 0.9, 1.0], np.float32)
    image += _gradient(rng, height, width, rng.uniform(0, 14))[..., None]
    rough = {"sea": rng.uniform(0.6, 1.4), "coast": rng.uniform(0.3, 1.0)}.get(kind, rng.uniform(0.0, 0.35))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, np.pi)
    swell = np.zeros((height, width), np.float32)
    for k, amp in ((1.0, 1.0), (rng.uniform(0.55, 0.8), 0.6)):
        wavelength = rng.uniform(5, 11) * s * k
        a = direction + rng.uniform(-0.5, 0.5) * (k != 1.0)
        phase = (np.cos(a) * xs + np.sin(a) * ys) * (2 * np.pi / wavelength)
        phase += _noise(rng, height, width, (scale / 5, scale / 25), (3.0, 1.2))
        swell += amp * np.sin(phase)
    swell *= np.clip(0.5 + 0.5 * _noise(rng, height, width, (scale / 6, scale / 30), (1.0, 0.5)), 0, 1.5)
    image += (rough * rng.uniform(1.5, 3.5) * swell)[..., None]
    if kind in ("sea", "coast") and rng.random() < 0.35:
        gx, gy = rng.uniform(-0.2, 1.2) * width, rng.uniform(-0.2, 1.2) * height
        radius = rng.uniform(0.25, 0.6) * scale
        glow = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * radius**2))
        image += (glow * (rng.uniform(10, 35) + rng.uniform(4, 16) * np.maximum(swell, 0) ** 2))[..., None]
    return image


def _land_texture(rng, height, width, scale, urban):
    """Land float32 [H, W, 3]: concrete / soil mixed with vegetation; `urban` in 0..1 sets the mix."""
    concrete = np.array([rng.uniform(135, 170)] * 3, np.float32) + rng.uniform(-8, 8, 3)
    soil = np.array([150, 138, 112], np.float32) * rng.uniform(0.8, 1.1)
    green = np.array([72, 92, 58], np.float32) * rng.uniform(0.75, 1.15)
    mix = _noise(rng, height, width, (scale / 4, scale / 12), (1.0, 0.5))
    veg = np.clip((mix - (urban * 1.6 - 0.6)) * 1.5, 0, 1)[..., None]
    bare = np.clip(_noise(rng, height, width, (scale / 6,), (1.0,)) * 0.8 + 0.3, 0, 1)[..., None]
    ground = concrete * (1 - bare * (1 - urban)) + soil * bare * (1 - urban)
    image = ground * (1 - veg) + green * veg
    image += _noise(rng, height, width, (scale / 20, scale / 80, 2.0), (8, 5, 4))[..., None]
    return image.astype(np.float32)


class _Frame:
    """A scene's layout frame: u along the shore / quay / channel, v across it (pixels)."""

    def __init__(self, origin, angle):
        self.origin = np.asarray(origin, np.float64)
        self.angle = float(angle)
        self.t = np.array([np.cos(angle), np.sin(angle)])
        self.n = np.array([-np.sin(angle), np.cos(angle)])

    def grids(self, height, width):
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        dx, dy = xs - self.origin[0], ys - self.origin[1]
        return dx * self.t[0] + dy * self.t[1], dx * self.n[0] + dy * self.n[1]

    def to_image(self, uv):
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        return self.origin + uv[:, :1] * self.t + uv[:, 1:] * self.n

    def box(self, u0, v0, u1, v1):
        return self.to_image([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])

    def extent(self, height, width):
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64) - self.origin
        u, v = corners @ self.t, corners @ self.n
        return u.min(), u.max(), v.min(), v.max()


Berth = collections.namedtuple("Berth", "start direction length normal")
Berth.__doc__ = """A mooring line: ships lie along `direction` from `start` for `length` pixels, on the
`normal` side (unit vectors in image pixels)."""


# --------------------------------------------------------------------------- land use


def _draw_buildings(rng, land, frame, u0, v0, u1, v1, s, sun, kind):
    """Fills the frame block [u0, u1] x [v0, v1] with one land use: containers, warehouses, houses, tanks, park."""
    height, width = land.shape[:2]
    du, dv = u1 - u0, v1 - v0
    if kind == "containers":
        row_w, gap, seg = 3.6 * s, 1.6 * s, rng.uniform(4.5, 6.5) * s
        along_u = rng.random() < 0.7
        length, across = (du, dv) if along_u else (dv, du)
        by_color = collections.defaultdict(list)
        n_rows = int(across // (row_w + gap))
        n_seg = int(length // seg)
        fill = rng.uniform(0.55, 0.95)
        lane_every = int(rng.integers(4, 9))
        for r in range(n_rows):
            if r % lane_every == lane_every - 1:
                continue
            a0 = r * (row_w + gap)
            run_color = rng.integers(len(CONTAINER_COLORS))
            for k in range(n_seg):
                if rng.random() > fill:
                    continue
                if rng.random() < 0.45:
                    run_color = rng.integers(len(CONTAINER_COLORS))
                b0 = k * seg
                if along_u:
                    box = frame.box(u0 + b0, v0 + a0, u0 + b0 + seg * 0.9, v0 + a0 + row_w)
                else:
                    box = frame.box(u0 + a0, v0 + b0, u0 + a0 + row_w, v0 + b0 + seg * 0.9)
                by_color[run_color].append(box)
        shadow = [p + sun * 1.2 * s for boxes in by_color.values() for p in boxes]
        if shadow:
            _shade(land, shadow, 0.35)
        for c, boxes in by_color.items():
            color = np.array(CONTAINER_COLORS[c], np.float32) * rng.uniform(0.85, 1.1)
            _paint(land, boxes, color)
    elif kind == "warehouses":
        n = int(rng.integers(1, 4))
        gap = 4 * s
        along_u = du > dv
        span, across = (du, dv) if along_u else (dv, du)
        w = (across - gap * (n + 1)) / n
        if w < 4 * s:
            return
        for i in range(n):
            a0 = gap + i * (w + gap)
            b0, b1 = gap, span - gap
            if rng.random() < 0.4:
                b1 = b0 + (b1 - b0) * rng.uniform(0.4, 0.9)
            box = (
                frame.box(u0 + b0, v0 + a0, u0 + b1, v0 + a0 + w)
                if along_u
                else frame.box(u0 + a0, v0 + b0, u0 + a0 + w, v0 + b1)
            )
            roof = np.array(ROOF_COLORS[rng.integers(len(ROOF_COLORS))], np.float32) * rng.uniform(0.9, 1.1)
            _shade(land, [box + sun * rng.uniform(2, 5) * s], 0.45)
            _paint(land, [box], roof)
            # roof ridge / skylights
            if along_u:
                ridge = frame.box(u0 + b0, v0 + a0 + w * 0.48, u0 + b1, v0 + a0 + w * 0.52)
            else:
                ridge = frame.box(u0 + a0 + w * 0.48, v0 + b0, u0 + a0 + w * 0.52, v0 + b1)
            _paint(land, [ridge], roof * 0.8)
    elif kind == "houses":
        size = rng.uniform(5, 12) * s
        step = size * rng.uniform(1.3, 1.9)
        houses, shadows = collections.defaultdict(list), []
        for a in np.arange(u0 + 2 * s, u1 - size, step):
            for b in np.arange(v0 + 2 * s, v1 - size, step):
                if rng.random() < 0.2:
                    continue
                hw, hh = size * rng.uniform(0.6, 1.0), size * rng.uniform(0.6, 1.0)
                box = frame.box(a, b, a + hw, b + hh)
                houses[int(rng.integers(len(ROOF_COLORS)))].append(box)
                shadows.append(box + sun * 1.5 * s)
        if shadows:
            _shade(land, shadows, 0.4)
        for c, boxes in houses.items():
            _paint(land, boxes, np.array(ROOF_COLORS[c], np.float32) * rng.uniform(0.9, 1.1))
    elif kind == "tanks":
        r = rng.uniform(5, 14) * s
        color = np.array([rng.uniform(180, 225)] * 3, np.float32)
        for a in np.arange(u0 + r + 3 * s, u1 - r, 2.6 * r):
            for b in np.arange(v0 + r + 3 * s, v1 - r, 2.6 * r):
                c = frame.to_image([[a, b]])[0]
                circle = _ellipse(c[0], c[1], r, r, 24)
                _shade(land, [circle + sun * 2.5 * s], 0.4)
                _paint(land, [circle], color)
                _paint(land, [_ellipse(c[0], c[1], r * 0.8, r * 0.8, 24)], color * 0.92)
    elif kind == "park":
        green = np.array([60, 86, 50], np.float32) * rng.uniform(0.8, 1.2)
        _paint(land, [frame.box(u0, v0, u1, v1)], green, alpha=0.7)
        for _ in range(int(rng.integers(3, 15))):
            c = frame.to_image([[rng.uniform(u0, u1), rng.uniform(v0, v1)]])[0]
            r = rng.uniform(2, 5) * s
            _paint(land, [_ellipse(c[0], c[1], r, r, 10)], green * 0.7)
    elif kind == "lot":
        _paint(land, [frame.box(u0, v0, u1, v1)], np.array([rng.uniform(110, 170)] * 3) + rng.uniform(-6, 6, 3))
        # parked trucks / trailers: small elongated boxes in rows
        for a in np.arange(u0 + 3 * s, u1 - 8 * s, 4 * s):
            if rng.random() < 0.5:
                b = v0 + rng.uniform(2, 6) * s
                box = frame.box(a, b, a + 2.2 * s, b + rng.uniform(6, 9) * s)
                _paint(land, [box], rng.uniform(80, 230, 3))


def _draw_town(rng, land, frame, v_start, v_end, u_min, u_max, s, sun, port):
    """Roads in the layout frame and blocks of land use between them, from v_start inland to v_end."""
    road_color = np.array([rng.uniform(65, 95)] * 3, np.float32)
    roads = []
    v = v_start
    first = True
    while v < v_end:
        depth = rng.uniform(30, 90) * s
        road = rng.uniform(5, 9) * s
        u = u_min - rng.uniform(0, 60) * s
        while u < u_max:
            length = rng.uniform(40, 130) * s
            near = first and port
            if near:
                kinds = (["containers", "warehouses", "lot", "tanks"], [0.55, 0.3, 0.1, 0.05])
            else:
                kinds = (
                    ["containers", "warehouses", "houses", "tanks", "park", "lot"],
                    [0.25, 0.25, 0.25, 0.07, 0.1, 0.08] if port else [0.0, 0.1, 0.6, 0.02, 0.23, 0.05],
                )
            kind = rng.choice(kinds[0], p=kinds[1])
            _draw_buildings(rng, land, frame, u, v, u + length, v + depth, s, sun, kind)
            roads.append(frame.box(u + length, v - road, u + length + road, v + depth))
            u += length + road
        roads.append(frame.box(u_min - 200 * s, v + depth, u_max + 200 * s, v + depth + road))
        v += depth + road
        first = False
    _paint(land, roads, road_color)


# --------------------------------------------------------------------------- ships


def sample_ship(rng, scale, max_length=None, types=None):
    """Draws (type index, length, width) in pixels for an image whose long side is `scale`.

    Length: log-normal with median `MEDIAN_LENGTH * scale`, clipped to [MIN_LENGTH, MAX_LENGTH] * scale
    (and to `max_length` when given); the type is drawn among those whose length range holds it
    (restricted to `types`, names, when given); width = length / aspect (at least 2.5 px, aspect >= 3).
    """
    lo, hi = MIN_LENGTH * scale, MAX_LENGTH * scale
    if max_length is not None:
        hi = max(lo, min(hi, max_length))
    length = lo
    for _ in range(30):
        length = float(np.exp(np.log(MEDIAN_LENGTH * scale) + LENGTH_SIGMA * rng.standard_normal()))
        if lo <= length <= hi:
            break
    length = float(np.clip(length, lo, hi))
    frac = length / scale
    weights = np.array(
        [
            t.weight * (t.lengths[0] <= frac <= t.lengths[1] + 1e-9) * (types is None or t.name in types)
            for t in HULL_TYPES
        ],
        np.float64,
    )
    if weights.sum() <= 0:
        weights = np.array([t.weight * (t.lengths[0] <= frac <= t.lengths[1] + 1e-9) for t in HULL_TYPES])
    kind = int(rng.choice(len(HULL_TYPES), p=weights / weights.sum()))
    aspect = rng.uniform(*HULL_TYPES[kind].aspects)
    width = max(length / aspect, 2.5)
    width = min(width, length / 3.0)
    return kind, length, width


def _hull(length, width, bow, bow_power=1.6, tip=0.0, stern=0.03, stern_width=0.8, n=7):
    """Local hull outline float [K, 2] inside [-L/2, L/2] x [-W/2, W/2], bow towards +x.

    bow / stern: fraction of the length taken by the bow / stern curve; bow_power: fullness of the
    bow (1 sharp .. 3 blunt); tip / stern_width: half-width at the bow tip / transom, fraction of W/2.
    """
    hl, hw = length / 2, width / 2
    right = []
    for a in np.linspace(0, np.pi / 2, n):
        right.append((-hl + stern * length * (1 - np.cos(a)), hw * (stern_width + (1 - stern_width) * np.sin(a))))
    for t in np.linspace(0, 1, n + 2)[1:]:
        right.append((hl - bow * length * (1 - t), hw * (tip + (1 - tip) * (1 - t**bow_power))))
    right = np.array(right)
    left = right[::-1].copy()
    left[:, 1] *= -1
    if tip == 0:
        left = left[1:]
    return np.concatenate([right, left], 0)


def _carrier_deck(length, width):
    """Flight deck outline of an aircraft carrier: angled deck to port (-y), island sponson to starboard."""
    pts = np.array(
        [
            (-0.50, -0.26),
            (-0.50, 0.30),
            (-0.30, 0.36),
            (-0.05, 0.50),
            (0.20, 0.50),
            (0.30, 0.36),
            (0.42, 0.24),
            (0.50, 0.06),
            (0.50, -0.06),
            (0.40, -0.20),
            (0.22, -0.28),
            (0.06, -0.50),
            (-0.18, -0.50),
            (-0.42, -0.36),
        ]
    )
    return pts * [length, width]


def _draw_ship(image, rng, cx, cy, length, width, angle, kind, sun, fade=1.0, base=None):
    """Draws one ship of type index `kind` (bow towards `angle`) with its shadow; returns the hull outline
    in image pixels float [K, 2]."""
    name = HULL_TYPES[kind].name
    pen = _Pen(image, cx, cy, angle, fade, base)
    L, B = length, width
    g = rng.uniform(0.9, 1.1)
    if name == "aircraft carrier":
        hull = _carrier_deck(L, B)
    elif name in ("destroyer", "frigate"):
        hull = _hull(L, B, rng.uniform(0.28, 0.36), 1.7, 0.0, 0.02, rng.uniform(0.7, 0.85))
    elif name in ("container ship", "merchant ship"):
        hull = _hull(L, B, rng.uniform(0.11, 0.17), rng.uniform(2.0, 2.8), 0.0, 0.05, rng.uniform(0.6, 0.8))
    elif name == "car carrier":
        hull = _hull(L, B, rng.uniform(0.06, 0.1), 3.0, 0.35, 0.02, 0.95)
    elif name == "cruise ship":
        hull = _hull(L, B, rng.uniform(0.16, 0.22), 2.0, 0.0, 0.08, 0.6)
    elif name == "submarine":
        hull = _hull(L, B, 0.25, 2.0, 0.12, 0.35, 0.1)
    elif name == "yacht":
        hull = _hull(L, B, rng.uniform(0.35, 0.45), 1.5, 0.0, 0.05, rng.uniform(0.65, 0.85))
    else:  # hovercraft
        hull = _hull(L, B, 0.18, 2.0, 0.45, 0.15, 0.5)
    tall = {
        "car carrier": 2.2,
        "cruise ship": 2.0,
        "aircraft carrier": 1.6,
        "container ship": 1.2,
        "submarine": 0.25,
        "yacht": 0.6,
        "hovercraft": 0.5,
    }.get(name, 1.0)
    pen.shadow(hull, sun * max(0.6, tall * (0.25 * B + 0.6)), 0.45)

    def inner(scale_l, scale_w):
        return hull * [scale_l, scale_w]

    if name == "aircraft carrier":
        deck = np.array([82, 86, 90], np.float32) * g
        pen.fill(hull, deck)
        pen.fill(inner(0.97, 0.94), deck * 1.06)
        # landing area centre line (angled ~9 deg) and axial line, white
        a = np.deg2rad(-9)
        for x0, x1, off, ang in ((-0.48, 0.05, -0.18, a), (-0.05, 0.48, 0.0, 0.0)):
            seg = np.array([[x0 * L, -0.006 * L], [x1 * L, -0.006 * L], [x1 * L, 0.006 * L], [x0 * L, 0.006 * L]])
            c, s_ = np.cos(ang), np.sin(ang)
            seg = seg @ np.array([[c, s_], [-s_, c]]) + [0, off * B]
            pen.fill(seg, (200, 200, 195), 0.8)
        # island on the starboard side, parked aircraft along the edges
        pen.shadow(_rect(0.09 * L, 0.12 * B, 0.1 * L, 0.36 * B), sun * 0.25 * B, 0.5)
        pen.rect(0.1 * L, 0.36 * B, 0.09 * L, 0.12 * B, (150, 152, 155))
        planes = [
            _rect(0.035 * L, 0.05 * B, x * L, y * B)
            for x, y in zip(rng.uniform(-0.45, 0.4, int(rng.integers(4, 14))), rng.choice([-0.38, 0.3, 0.42], 14))
        ]
        pen.fill_many(planes, (170, 172, 175), 0.9)
    elif name in ("destroyer", "frigate"):
        color = np.array([rng.uniform(108, 138)] * 3, np.float32) + [0, 2, 6]
        pen.fill(hull, color * 0.85)
        pen.fill(inner(0.95, 0.8), color)
        mid = rng.uniform(-0.08, 0.05) if name == "destroyer" else rng.uniform(-0.15, -0.02)
        blocks = [(mid * L, 0.22 * L, 0.62 * B), ((mid + 0.1) * L, 0.08 * L, 0.4 * B)]
        if name == "destroyer":
            blocks.append(((mid - 0.18) * L, 0.08 * L, 0.45 * B))
        for x, l_, w_ in blocks:
            pen.shadow(_rect(l_, w_, x), sun * 0.35 * B, 0.4)
            pen.rect(x, 0, l_, w_, color * rng.uniform(1.15, 1.35))
        pen.rect(-0.4 * L, 0, 0.14 * L, 0.7 * B, color * 1.2, 0.7)  # helicopter deck
        pen.fill(_ellipse(0.3 * L, 0, 0.025 * L, 0.025 * L, 8), color * 0.7)  # gun
    elif name == "container ship":
        hull_color = (
            np.array(
                [(40, 48, 62), (120, 40, 36), (30, 32, 36), (40, 70, 60), (70, 75, 85)][rng.integers(5)], np.float32
            )
            * g
        )
        pen.fill(hull, hull_color)
        pen.fill(inner(0.96, 0.84), hull_color * 1.35 + 10)
        bays = max(3, int(0.6 * L / max(B * 0.55, 2.5)))
        x0, x1 = -0.28 * L, 0.36 * L
        pitch = (x1 - x0) / bays
        cols = 2 if B < 8 else int(rng.integers(3, 6))
        boxes = collections.defaultdict(list)
        for i in range(bays):
            if rng.random() < 0.1:
                continue
            for j in range(cols):
                y0 = -0.4 * B + j * 0.8 * B / cols
                boxes[int(rng.integers(len(CONTAINER_COLORS)))].append(
                    _rect(pitch * 0.88, 0.8 * B / cols * 0.92, x0 + (i + 0.5) * pitch, y0 + 0.4 * B / cols)
                )
        for c, polys in boxes.items():
            pen.fill_many(polys, np.array(CONTAINER_COLORS[c], np.float32) * rng.uniform(0.85, 1.05))
        pen.shadow(_rect(0.05 * L, 0.9 * B, -0.36 * L), sun * 0.5 * B, 0.45)
        pen.rect(-0.36 * L, 0, 0.05 * L, 0.9 * B, (215, 215, 210))
    elif name == "merchant ship":
        if rng.random() < 0.5:  # tanker: red / green deck, centre pipeline, manifold
            deck = np.array([(130, 50, 40), (70, 90, 70), (110, 100, 90)][rng.integers(3)], np.float32) * g
            pen.fill(hull, deck * 0.6)
            pen.fill(inner(0.96, 0.82), deck)
            pen.rect(0.03 * L, 0, 0.66 * L, max(0.8, 0.09 * B), (190, 190, 180), 0.9)
            pen.rect(0.0, 0, 0.02 * L, 0.7 * B, (190, 190, 180), 0.8)
            for x in np.linspace(-0.2, 0.3, 4):
                pen.fill(_ellipse(x * L, 0.22 * B, 0.12 * B, 0.12 * B, 8), deck * 1.3, 0.6)
        else:  # bulk carrier: hatch covers
            deck = np.array([(60, 60, 64), (110, 45, 38), (50, 62, 80)][rng.integers(3)], np.float32) * g
            pen.fill(hull, deck * 0.7)
            pen.fill(inner(0.96, 0.82), deck)
            hatch = np.array([(120, 120, 110), (150, 70, 50), (60, 90, 130)][rng.integers(3)], np.float32)
            n = int(rng.integers(5, 10))
            pitch = 0.62 * L / n
            pen.fill_many([_rect(pitch * 0.7, 0.62 * B, -0.26 * L + (i + 0.5) * pitch) for i in range(n)], hatch)
        pen.shadow(_rect(0.07 * L, 0.85 * B, -0.38 * L), sun * 0.5 * B, 0.45)
        pen.rect(-0.38 * L, 0, 0.07 * L, 0.85 * B, (220, 220, 215))
    elif name == "car carrier":
        color = np.array([(225, 225, 222), (60, 80, 120), (200, 60, 50), (90, 95, 100)][rng.integers(4)], np.float32)
        pen.fill(hull, color * 0.9 * g)
        pen.fill(inner(0.97, 0.9), color * g)
        pen.rect(0.0, 0, 0.9 * L, max(0.6, 0.04 * B), color * 0.85)
        pen.rect(0.42 * L, 0, 0.04 * L, 0.8 * B, (40, 45, 50))  # bridge windows at the bow
    elif name == "cruise ship":
        white = np.array([232, 232, 228], np.float32) * rng.uniform(0.95, 1.05)
        pen.fill(hull, white * 0.9)
        pen.fill(inner(0.9, 0.75), white)
        pen.fill(inner(0.7, 0.5), (200, 200, 196))
        pen.rect(0.0, 0, 0.1 * L, 0.3 * B, (70, 140, 180))  # pools
        pen.rect(0.12 * L, 0, 0.06 * L, 0.25 * B, (70, 140, 180))
        pen.shadow(_rect(0.07 * L, 0.25 * B, -0.3 * L), sun * 0.4 * B, 0.5)
        pen.rect(-0.3 * L, 0, 0.07 * L, 0.25 * B, (50, 60, 70))  # funnel
        boats = [_rect(0.03 * L, 0.08 * B, x * L, y * B) for x in np.linspace(-0.25, 0.25, 7) for y in (-0.42, 0.42)]
        pen.fill_many(boats, (235, 140, 40), 0.8)
    elif name == "submarine":
        color = np.array([rng.uniform(18, 38)] * 3, np.float32)
        pen.fill(hull, color)
        pen.fill(inner(0.8, 0.5), color * 1.3)
        pen.shadow(_rect(0.07 * L, 0.28 * B, 0.15 * L), sun * 0.8 * B, 0.5)
        pen.rect(0.15 * L, 0, 0.07 * L, 0.28 * B, color * 0.7)  # sail
        pen.rect(-0.46 * L, 0, 0.02 * L, 0.9 * B, color * 0.8)
    elif name == "yacht":
        white = np.array([235, 235, 232], np.float32) * rng.uniform(0.92, 1.04)
        pen.fill(hull, white * 0.92)
        if rng.random() < 0.5:
            pen.fill(inner(0.88, 0.78), (150, 118, 80))  # teak deck
        cabin = rng.uniform(-0.1, 0.1)
        pen.rect(cabin * L, 0, 0.35 * L, 0.55 * B, white)
        pen.rect((cabin + 0.12) * L, 0, 0.08 * L, 0.5 * B, (40, 50, 60), 0.8)
    else:  # hovercraft
        pen.fill(hull, (30, 30, 32))
        pen.fill(inner(0.86, 0.76), (150, 155, 150))
        pen.rect(0.05 * L, 0, 0.3 * L, 0.45 * B, (120, 125, 122))
        for y in (-0.22, 0.22):
            pen.fill(_ellipse(-0.32 * L, y * B, 0.09 * L, 0.09 * L, 10), (50, 50, 52))
    return pen.points(hull)


def _wake(image, rng, cx, cy, length, width, angle, strength, scale):
    """Foam of a moving ship (or a lone wake when drawn without one): turbulent stern wake and the two
    arms of the Kelvin V (~19.5 deg) behind the bow."""
    height, w_img = image.shape[:2]
    turb = length * rng.uniform(0.8, 3.5)
    arm = length * rng.uniform(1.0, 3.0)
    half = np.deg2rad(rng.uniform(14, 20))
    polys = [
        np.array(
            [
                [-length * 0.45, -width * 0.35],
                [-length * 0.45 - turb, -width * 1.2],
                [-length * 0.45 - turb, width * 1.2],
                [-length * 0.45, width * 0.35],
            ]
        )
    ]
    t = max(0.6, width * 0.18)
    for side in (-1, 1):
        tip = np.array([length * 0.45, 0.0])
        end = tip + arm * np.array([-np.cos(half), side * np.sin(half)])
        normal = np.array([np.sin(half), side * np.cos(half)]) * t
        polys.append(np.array([tip + normal * 0.3, end + normal, end - normal, tip - normal * 0.3]))
    pts = [_local_to_image(p, cx, cy, angle) for p in polys]
    win, cov = _coverage(pts, height, w_img, pad=int(2 + width))
    if win is None:
        return
    # fade along the wake: strongest at the ship
    ys, xs = np.mgrid[win[0], win[1]].astype(np.float32)
    along = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    fade = np.clip(1 + (along - length * 0.45) / (max(turb, arm) + 1e-6), 0, 1) ** 1.5
    cov = cv2.GaussianBlur(cov * fade, (0, 0), max(0.7, width * 0.35))
    texture = 0.55 + 0.45 * rng.random(cov.shape).astype(np.float32)
    image[win] += (strength * cov * texture)[..., None] * np.array([0.95, 1.0, 1.0], np.float32)


# --------------------------------------------------------------------------- scenes


class _Scene:
    """Mutable state of one scene being drawn: image, land mask, occupancy and annotations."""

    def __init__(self, rng, width, height):
        self.rng, self.width, self.height = rng, width, height
        self.scale = max(width, height)
        self.s = self.scale / REFERENCE_SIZE
        sun = rng.uniform(0, 2 * np.pi)
        self.sun = np.array([np.cos(sun), np.sin(sun)]) * rng.uniform(0.7, 1.3) * max(self.s, 0.5)
        self.occupied = np.zeros((height, width), np.uint8)
        self.land = np.zeros((height, width), np.uint8)
        self.ships = []  # (hull points, mbox, header, type, low contrast)

    def free(self, points, land_tolerance=0.03, overlap_tolerance=0.02):
        """True when the polygon lies on water (up to `land_tolerance` of its area inside the image on land)
        and overlaps other objects by at most `overlap_tolerance`."""
        x0, y0, mask = _box_mask(points)
        win, part = _window(x0, y0, mask, self.height, self.width)
        if win is None:
            return False
        inside = part.sum()
        if inside < 4:
            return False
        land = (part & self.land[win]).sum()
        busy = (part & self.occupied[win]).sum()
        return land <= land_tolerance * inside and busy <= overlap_tolerance * inside

    def mark(self, points, dilate=0):
        x0, y0, mask = _box_mask(points)
        if dilate:
            mask = cv2.copyMakeBorder(mask, dilate, dilate, dilate, dilate, cv2.BORDER_CONSTANT, value=0)
            mask = cv2.dilate(mask, np.ones((2 * dilate + 1,) * 2, np.uint8))
            x0, y0 = x0 - dilate, y0 - dilate
        win, part = _window(x0, y0, mask, self.height, self.width)
        if win is not None:
            self.occupied[win] |= part

    def add_ship(self, image, cx, cy, length, width, angle, kind, moving=False, land_tolerance=0.03):
        """Places and draws a ship when its spot is free; returns True when drawn."""
        rng = self.rng
        box = _local_to_image(_rect(length, width), cx, cy, angle)
        if not self.free(box, land_tolerance):
            return False
        low_contrast = rng.random() < 0.05
        base = None
        if low_contrast:
            x0, y0, mask = _box_mask(box)
            win, part = _window(x0, y0, mask, self.height, self.width)
            base = image[win][part > 0].mean(0) if part.sum() else None
        if moving:
            _wake(image, rng, cx, cy, length, width, angle, rng.uniform(35, 80), self.scale)
        hull = _draw_ship(
            image,
            rng,
            cx,
            cy,
            length,
            width,
            angle,
            kind,
            self.sun,
            fade=rng.uniform(0.12, 0.25) if base is not None else 1.0,
            base=base,
        )
        self.mark(box, dilate=1)
        a = (angle + np.pi / 2) % np.pi - np.pi / 2
        bow = [cx + np.cos(angle) * length / 2, cy + np.sin(angle) * length / 2]
        self.ships.append((hull, [cx, cy, length, width, a], bow, kind, base is not None))
        return True

    def moor(self, image, berth, fill, raft=0.2, types=None):
        """Ships along a berth, bow to stern, touching it, some rafted two deep."""
        rng = self.rng
        pos = rng.uniform(0, 12) * self.s
        start, d, m = np.asarray(berth.start), np.asarray(berth.direction), np.asarray(berth.normal)
        angle_d = np.arctan2(d[1], d[0])
        while pos < berth.length:
            kind, length, width = sample_ship(rng, self.scale, types=types)
            if rng.random() > fill:
                pos += length * rng.uniform(0.3, 1.0)
                continue
            gap = rng.uniform(0.5, 2.5) * self.s
            centre = start + d * (pos + length / 2) + m * (width / 2 + gap)
            heading = angle_d + (np.pi if rng.random() < 0.5 else 0.0)
            if self.add_ship(image, centre[0], centre[1], length, width, heading, kind, land_tolerance=0.06):
                if rng.random() < raft:
                    k2, l2, w2 = sample_ship(rng, self.scale, max_length=length * 1.1, types=types)
                    c2 = (
                        centre
                        + m * (width / 2 + w2 / 2 + rng.uniform(0.3, 1.5) * self.s)
                        + d * rng.uniform(-0.1, 0.1) * length
                    )
                    self.add_ship(image, c2[0], c2[1], l2, w2, heading + rng.choice([0, np.pi]), k2)
                pos += length + rng.uniform(0.5, 8) * self.s
            else:
                pos += rng.uniform(3, 10) * self.s

    def at_sea(self, image, count, moving_p=0.6, types=None, margin=0.15):
        """Ships anywhere on the water (moving ones with wakes), some cut by the image border."""
        rng = self.rng
        for _ in range(count):
            for _attempt in range(15):
                kind, length, width = sample_ship(rng, self.scale, types=types)
                pad = margin * length
                cx, cy = rng.uniform(-pad, self.width + pad), rng.uniform(-pad, self.height + pad)
                if self.add_ship(
                    image,
                    cx,
                    cy,
                    length,
                    width,
                    rng.uniform(-np.pi, np.pi),
                    kind,
                    moving=rng.random() < moving_p,
                    land_tolerance=0.0,
                ):
                    break


def _composite(water, land_image, land_mask, rng, s, quay):
    """Water and land joined along the mask; quays get a dark wall line, natural shores a soft edge."""
    height, width = land_mask.shape
    grain = _noise(rng, height, width, (1.5, 4.0, 12.0), (0.035, 0.03, 0.03))
    land_image = cv2.GaussianBlur(land_image * (1 + grain)[..., None], (0, 0), 0.6)
    alpha = cv2.GaussianBlur(land_mask.astype(np.float32), (0, 0), 0.7 if quay else 1.2)[..., None]
    image = water * (1 - alpha) + land_image * alpha
    edge = (cv2.dilate(land_mask, np.ones((3, 3), np.uint8)) - land_mask).astype(np.float32)
    if quay:
        image *= (1 - 0.45 * cv2.GaussianBlur(edge, (0, 0), 0.6))[..., None]
    return image


def _breakwater(rng, image, scene, frame, u0, u1, v):
    """A rubble breakwater along u at depth v (a ship-like hard negative when short)."""
    s = scene.s
    width = rng.uniform(5, 10) * s
    box = frame.box(u0, v - width / 2, u1, v + width / 2)
    color = np.array([rng.uniform(120, 160)] * 3, np.float32) + [8, 4, 0]
    x0, y0, mask = _box_mask(box)
    win, part = _window(x0, y0, mask, scene.height, scene.width)
    if win is None:
        return
    _paint(image, [box], color)
    rough = _noise(rng, part.shape[0], part.shape[1], (2.0, 1.0), (14, 10)) if min(part.shape) > 2 else 0
    image[win] += (part * rough)[..., None]
    scene.land[win] |= part


def _negatives_on_water(rng, image, scene, count):
    """Barges, pontoons, buoys, rocks and lone wakes: on the water, not annotated."""
    s = scene.s
    for _ in range(count):
        kind = rng.choice(["barge", "pontoon", "rocks", "buoy", "wake"], p=[0.3, 0.2, 0.2, 0.1, 0.2])
        for _attempt in range(8):
            cx, cy = rng.uniform(0, scene.width), rng.uniform(0, scene.height)
            angle = rng.uniform(-np.pi, np.pi)
            if kind == "barge":
                length = rng.uniform(14, 50) * s
                width = length / rng.uniform(2.5, 5)
                box = _local_to_image(_rect(length, width), cx, cy, angle)
                if not scene.free(box, 0.0):
                    continue
                _shade(image, [box + scene.sun * 1.0], 0.4)
                color = np.array([(90, 70, 55), (60, 62, 66), (120, 110, 90)][rng.integers(3)], np.float32)
                _paint(image, [box], color * rng.uniform(0.8, 1.2))
                inner = _local_to_image(_rect(length * 0.85, width * 0.7), cx, cy, angle)
                _paint(image, [inner], color * rng.uniform(0.6, 1.4))
                scene.mark(box, 1)
            elif kind == "pontoon":
                length, width = rng.uniform(20, 70) * s, rng.uniform(2.5, 4.5) * s
                box = _local_to_image(_rect(length, width), cx, cy, angle)
                if not scene.free(box, 0.0):
                    continue
                _shade(image, [box + scene.sun * 0.6], 0.35)
                _paint(image, [box], np.array([rng.uniform(150, 200)] * 3))
                scene.mark(box, 1)
            elif kind == "rocks":
                r = rng.uniform(3, 12) * s
                k = int(rng.integers(7, 12))
                a = np.sort(rng.uniform(0, 2 * np.pi, k))
                radius = r * rng.uniform(0.5, 1.3, k)
                pts = np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], 1)
                if not scene.free(pts, 0.0):
                    continue
                _paint(image, [pts], np.array([rng.uniform(80, 130)] * 3) + [10, 5, 0])
                _paint(image, [(pts - [cx, cy]) * 0.6 + [cx, cy] - scene.sun], np.array([rng.uniform(130, 170)] * 3))
                scene.mark(pts, 1)
            elif kind == "buoy":
                pts = _ellipse(cx, cy, 1.5 * s + 0.5, 1.5 * s + 0.5, 8)
                if not scene.free(pts, 0.0):
                    continue
                _paint(image, [pts], [(230, 200, 60), (210, 60, 40)][rng.integers(2)])
            else:
                length = rng.uniform(20, 80) * s
                box = _local_to_image(_rect(length * 2, length * 0.5), cx, cy, angle)
                if not scene.free(box, 0.0):
                    continue
                _wake(image, rng, cx, cy, length, length / 7, angle, rng.uniform(20, 45), scene.scale)
            break


def _draw_cranes(rng, image, frame, quay_u, quay_v, s, sun):
    """Gantry cranes on a quay: booms reaching over the water (they hide parts of moored ships)."""
    u = quay_u[0] + rng.uniform(0, 40) * s
    color = np.array([(200, 60, 40), (60, 90, 160), (220, 220, 215), (230, 190, 50)][rng.integers(4)], np.float32)
    while u < quay_u[1]:
        boom = rng.uniform(25, 55) * s
        w = rng.uniform(2, 3.2) * s
        box = frame.box(u, quay_v - boom, u + w, quay_v + 18 * s)
        _shade(image, [box + sun * 6 * s], 0.4)
        _paint(image, [box], color)
        legs = frame.box(u - 5 * s, quay_v + 2 * s, u + w + 5 * s, quay_v + 14 * s)
        _paint(image, [legs], color * 0.8, alpha=0.6)
        u += rng.uniform(14, 45) * s


def _harbour(rng, image_shape, scene):
    height, width = image_shape
    s, S = scene.s, scene.scale
    angle = rng.uniform(-np.pi, np.pi)
    offset = rng.uniform(-0.2, 0.15) * S
    centre = np.array([width / 2, height / 2])
    frame = _Frame(centre + offset * np.array([-np.sin(angle), np.cos(angle)]), angle)
    u_min, u_max, v_min, v_max = frame.extent(height, width)
    U, V = frame.grids(height, width)
    water = _water(rng, height, width, S, "harbour")
    land_image = _land_texture(rng, height, width, S, rng.uniform(0.6, 1.0))
    # quay line v = q(u), optionally stepped
    step_u, step_d = (
        (rng.uniform(u_min, u_max) * 0.6, rng.uniform(-0.12, 0.12) * S) if rng.random() < 0.5 else (u_max + 1, 0.0)
    )
    q = np.where(U > step_u, step_d, 0.0)
    land = V > q
    apron = rng.uniform(10, 22) * s
    # dock basins cut into the land and piers jutting into the water
    features, berths = [], []
    for _ in range(int(rng.integers(0, 3))):
        wd, depth = rng.uniform(0.08, 0.2) * S, rng.uniform(0.12, 0.35) * S
        ua = rng.uniform(u_min, u_max - wd)
        if any(abs(ua + wd / 2 - f) < wd for f in features):
            continue
        features.append(ua + wd / 2)
        qa = step_d if ua > step_u else 0.0
        land &= ~((U > ua) & (U < ua + wd) & (V > qa - 1) & (V < qa + depth))
        berths += [
            Berth(frame.to_image([[ua, qa]])[0], frame.n, depth, frame.t),
            Berth(frame.to_image([[ua + wd, qa]])[0], frame.n, depth, -frame.t),
            Berth(frame.to_image([[ua, qa + depth]])[0], frame.t, wd, -frame.n),
        ]
    piers = []
    for _ in range(int(rng.integers(1, 4))):
        pw, plen = rng.uniform(8, 22) * s, rng.uniform(0.12, 0.42) * S
        up = rng.uniform(u_min + pw, u_max - pw)
        if any(abs(up - f) < 0.1 * S for f in features):
            continue
        features.append(up)
        qp = step_d if up > step_u else 0.0
        land |= (np.abs(U - up) < pw / 2) & (V > qp - plen) & (V <= qp + 1)
        piers.append((up, pw, plen, qp))
        root_l, root_r = frame.to_image([[up - pw / 2, qp], [up + pw / 2, qp]])
        berths += [Berth(root_l, -frame.n, plen, -frame.t), Berth(root_r, -frame.n, plen, frame.t)]
    for lo, hi, qv in ((u_min, step_u, 0.0), (step_u, u_max, step_d)):
        if hi > lo:
            berths.append(Berth(frame.to_image([[lo, qv]])[0], frame.t, hi - lo, -frame.n))
    land_mask = land.astype(np.uint8)
    # land use behind the quay apron, concrete apron and pier decks
    _draw_town(rng, land_image, frame, min(0.0, step_d) + apron, v_max + 10 * s, u_min, u_max, s, scene.sun, True)
    concrete = np.array([rng.uniform(150, 185)] * 3, np.float32) + rng.uniform(-5, 5, 3)
    apron_mask = land & (V < q + apron)
    land_image[apron_mask] = concrete + 6 * _noise(rng, height, width, (4.0,), (1.0,))[apron_mask][:, None]
    for up, pw, plen, qp in piers:
        _paint(
            land_image,
            [frame.box(up - pw / 2 + 1.5 * s, qp - plen + 1.5 * s, up + pw / 2 - 1.5 * s, qp)],
            concrete * 0.93,
        )
    image = _composite(water, land_image, land_mask, rng, s, quay=True)
    scene.land = land_mask
    if rng.random() < 0.4:
        v_bw = v_min + rng.uniform(0.1, 0.5) * (0 - v_min)
        u0 = rng.uniform(u_min, u_max)
        _breakwater(rng, image, scene, frame, u0, u0 + rng.uniform(0.3, 1.0) * S * rng.choice([-1, 1]), v_bw)
    _negatives_on_water(rng, image, scene, int(rng.integers(1, 5)))
    fill = rng.uniform(0.2, 0.7)
    order = rng.permutation(len(berths))
    for i in order:
        scene.moor(image, berths[i], fill, raft=rng.uniform(0.05, 0.25))
    scene.at_sea(image, int(rng.integers(0, 4)), moving_p=0.4)
    # cranes along part of the quay (drawn over moored ships)
    if rng.random() < 0.75:
        a = rng.uniform(u_min, u_max)
        b = a + rng.uniform(0.2, 0.7) * S
        qv = step_d if a > step_u else 0.0
        _draw_cranes(rng, image, frame, (a, min(b, step_u if a < step_u else u_max)), qv, s, scene.sun)
    return image


def _coast(rng, image_shape, scene):
    height, width = image_shape
    s, S = scene.s, scene.scale
    angle = rng.uniform(-np.pi, np.pi)
    centre = np.array([width / 2, height / 2])
    frame = _Frame(centre + rng.uniform(0.0, 0.3) * S * np.array([-np.sin(angle), np.cos(angle)]), angle)
    u_min, u_max, v_min, v_max = frame.extent(height, width)
    U, V = frame.grids(height, width)
    shore = _noise(rng, height, width, (S / 3, S / 8, S / 24), (0.08 * S, 0.03 * S, 0.008 * S))
    land = (V + shore) > 0
    land_mask = land.astype(np.uint8)
    water = _water(rng, height, width, S, "coast")
    dist = cv2.distanceTransform((1 - land_mask), cv2.DIST_L2, 3)
    shallow = np.exp(-dist / (rng.uniform(0.03, 0.08) * S))[..., None]
    turquoise = np.array([70, 125, 125], np.float32) * rng.uniform(0.8, 1.1)
    water = water * (1 - 0.7 * shallow) + turquoise * 0.7 * shallow
    surf = np.clip(1 - dist / (2.5 * s + 0.5), 0, 1) * (0.5 + 0.5 * _noise(rng, height, width, (3.0,), (1.0,)))
    water += (surf * 90)[..., None]
    land_image = _land_texture(rng, height, width, S, rng.uniform(0.0, 0.5))
    _draw_town(
        rng,
        land_image,
        frame,
        rng.uniform(0.05, 0.2) * S,
        v_max + 10 * s,
        u_min,
        u_max,
        s,
        scene.sun,
        rng.random() < 0.3,
    )
    inland = cv2.distanceTransform(land_mask, cv2.DIST_L2, 3)
    beach_w = rng.uniform(3, 14) * s
    sand = np.array([210, 196, 160], np.float32) * rng.uniform(0.85, 1.05)
    beach = np.clip(1.5 - inland / beach_w, 0, 1)[..., None]
    land_image = land_image * (1 - beach) + sand * beach
    image = _composite(water, land_image, land_mask, rng, s, quay=False)
    scene.land = land_mask
    if rng.random() < 0.5:  # a marina: a pier with yachts
        up = rng.uniform(u_min * 0.6, u_max * 0.6)
        pw, plen = rng.uniform(3, 6) * s, rng.uniform(0.1, 0.25) * S
        root = frame.to_image([[up, 0.02 * S]])[0]
        box = frame.box(up - pw / 2, -plen, up + pw / 2, 0.02 * S)
        _paint(image, [box], np.array([rng.uniform(150, 190)] * 3))
        x0, y0, mask = _box_mask(box)
        win, part = _window(x0, y0, mask, height, width)
        if win is not None:
            scene.land[win] |= part
        fill = rng.uniform(0.5, 0.95)
        for side in (-1, 1):
            berth = Berth(root + frame.t * side * pw / 2, -frame.n, plen, frame.t * side)
            scene.moor(image, berth, fill, raft=0.0, types=("yacht", "hovercraft"))
    _negatives_on_water(rng, image, scene, int(rng.integers(1, 5)))
    scene.at_sea(image, int(rng.integers(1, 6)), moving_p=0.6)
    return image


def _channel(rng, image_shape, scene):
    height, width = image_shape
    s, S = scene.s, scene.scale
    angle = rng.uniform(-np.pi, np.pi)
    frame = _Frame(np.array([width / 2, height / 2]) + rng.uniform(-0.15, 0.15, 2) * S, angle)
    u_min, u_max, v_min, v_max = frame.extent(height, width)
    U, V = frame.grids(height, width)
    canal = rng.random() < 0.5
    half = rng.uniform(0.1, 0.2) * S
    if canal:
        centre_line = np.zeros_like(U)
    else:
        amp, period = rng.uniform(0.05, 0.2) * S, rng.uniform(1.0, 2.5) * S
        phase = rng.uniform(0, 2 * np.pi)
        centre_line = amp * np.sin(2 * np.pi * U / period + phase)
        centre_line += _noise(rng, height, width, (S / 6, S / 20), (0.02 * S, 0.006 * S))
    land = np.abs(V - centre_line) > half
    land_mask = land.astype(np.uint8)
    water = _water(rng, height, width, S, "channel")
    land_image = _land_texture(rng, height, width, S, rng.uniform(0.3, 0.9))
    for side in (-1, 1):
        sub = _Frame(frame.origin + side * frame.n * half, angle if side > 0 else angle + np.pi)
        lo, hi, _, vmax = sub.extent(height, width)
        _draw_town(
            rng,
            land_image,
            sub,
            rng.uniform(8, 25) * s,
            vmax + 10 * s,
            lo,
            hi,
            s,
            scene.sun,
            canal and rng.random() < 0.7,
        )
    if not canal:
        inland = cv2.distanceTransform(land_mask, cv2.DIST_L2, 3)
        green = np.array([70, 95, 60], np.float32)
        bank = np.clip(1.2 - inland / (rng.uniform(6, 20) * s), 0, 1)[..., None]
        land_image = land_image * (1 - bank) + green * bank
    image = _composite(water, land_image, land_mask, rng, s, quay=canal)
    scene.land = land_mask
    _negatives_on_water(rng, image, scene, int(rng.integers(0, 3)))
    if canal:
        for side in (-1, 1):
            start = frame.to_image([[u_min, side * half]])[0]
            scene.moor(image, Berth(start, frame.t, u_max - u_min, -side * frame.n), rng.uniform(0.2, 0.8), raft=0.15)
    # traffic along the channel
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(10):
            kind, length, width_ = sample_ship(rng, scene.scale, max_length=1.6 * half)
            u = rng.uniform(u_min - 0.1 * length, u_max + 0.1 * length)
            lane = rng.uniform(-0.5, 0.5) * half
            if canal:
                v, slope = lane, 0.0
            else:
                v = amp * np.sin(2 * np.pi * u / period + phase) + lane
                slope = amp * 2 * np.pi / period * np.cos(2 * np.pi * u / period + phase)
            p = frame.to_image([[u, v]])[0]
            heading = angle + np.arctan(slope) + (np.pi if rng.random() < 0.5 else 0.0)
            if scene.add_ship(
                image, p[0], p[1], length, width_, heading, kind, moving=rng.random() < 0.8, land_tolerance=0.0
            ):
                break
    return image


def _open_sea(rng, image_shape, scene):
    height, width = image_shape
    S = scene.scale
    image = _water(rng, height, width, S, "sea")
    if rng.random() < 0.2:  # a small island
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.15) * S
        k = 24
        a = np.linspace(0, 2 * np.pi, k, endpoint=False)
        radius = r * (1 + 0.35 * np.sin(a * rng.integers(2, 5) + rng.uniform(0, 6)) + rng.uniform(-0.1, 0.1, k))
        pts = np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], 1)
        _paint(image, [pts * 1.0 + (pts - [cx, cy]) * 0.08], (200, 190, 150))
        _paint(image, [pts], np.array([78, 95, 62]) * rng.uniform(0.8, 1.1))
        x0, y0, mask = _box_mask(pts)
        win, part = _window(x0, y0, mask, height, width)
        if win is not None:
            scene.land[win] |= part
    _negatives_on_water(rng, image, scene, int(rng.integers(0, 4)))
    scene.at_sea(image, int(rng.integers(1, 4)), moving_p=0.8, margin=0.25)
    return image


def _clouds(rng, image, scene):
    """Clouds (with their shadows) and haze; returns the cloud opacity float32 [H, W] in 0..1."""
    height, width = image.shape[:2]
    S = scene.scale
    opacity = np.zeros((height, width), np.float32)
    if rng.random() < 0.3:
        field = _noise(rng, height, width, (S / 2.5, S / 7, S / 20, S / 60), (1.0, 0.5, 0.25, 0.1))
        field /= field.std() + 1e-6
        cover = rng.uniform(0.05, 0.45)
        threshold = np.quantile(field, 1 - cover)
        opacity = np.clip((field - threshold) / rng.uniform(0.3, 1.0), 0, 1) ** 0.8 * rng.uniform(0.75, 1.0)
        shift = scene.sun / (np.linalg.norm(scene.sun) + 1e-6) * rng.uniform(10, 40) * scene.s
        shadow = cv2.warpAffine(opacity, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (width, height))
        image *= (1 - 0.35 * shadow)[..., None]
        white = np.array([238, 240, 242], np.float32) + _noise(rng, height, width, (S / 30,), (6,))[..., None]
        image += (white - image) * opacity[..., None]
    if rng.random() < 0.3:
        haze = rng.uniform(0.1, 0.35) * np.clip(1 + 0.6 * _noise(rng, height, width, (S / 2,), (1.0,)), 0.2, 2)
        tint = np.array([195, 200, 205], np.float32) * rng.uniform(0.9, 1.05)
        image += (tint - image) * haze[..., None]
    return opacity


def render_realistic_scene(rng, width, height, kind=None):
    """Draws one realistic scene of `width` x `height` pixels.

    kind: "harbour", "coast", "channel", "sea", or None to draw it (weights `SCENE_WEIGHTS`).
    Returns (image uint8 [H, W, 3] RGB, objects): one dict per annotated ship with `mbox`
    (cx, cy, w = length, h = width in pixels, ang radians in [-pi/2, pi/2)), `header` (bow x, y),
    `class_id` (9-digit HRSC Class_ID), `type` (a `HULL_TYPES` name), `difficult`, `truncated`,
    `scene` (the scene kind).
    """
    if kind is None:
        kind = SCENE_KINDS[int(rng.choice(len(SCENE_KINDS), p=SCENE_WEIGHTS))]
    scene = _Scene(rng, width, height)
    draw = {"harbour": _harbour, "coast": _coast, "channel": _channel, "sea": _open_sea}[kind]
    image = draw(rng, (height, width), scene).astype(np.float32)
    opacity = _clouds(rng, image, scene)
    # sensor: gain, colour balance, blur, noise
    image *= rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.9))
    image += rng.normal(0, rng.uniform(1.5, 4.0), image.shape).astype(np.float32)
    objects = []
    for hull, mbox, bow, type_index, low_contrast in scene.ships:
        x0, y0, mask = _box_mask(hull)
        total = max(1, int(mask.sum()))
        win, part = _window(x0, y0, mask, height, width)
        inside = int(part.sum()) if win is not None else 0
        visible = inside / total
        if visible < 0.25:
            continue  # mostly outside the image: drawn, not annotated
        cloud = float(opacity[win][part > 0].mean()) if inside else 0.0
        if cloud > 0.85:
            continue  # hidden under cloud
        difficult = mbox[2] < DIFFICULT_LENGTH * scene.scale or low_contrast or cloud > 0.5 or visible < 0.5
        objects.append(
            {
                "mbox": [float(v) for v in mbox],
                "header": [float(v) for v in bow],
                "class_id": HULL_TYPES[type_index].class_id,
                "type": HULL_TYPES[type_index].name,
                "difficult": bool(difficult),
                "truncated": bool(visible < 0.97),
                "scene": kind,
            }
        )
    return np.clip(image, 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------- dataset


def summarize(object_lists):
    """Statistics of a generated set (stored in the manifest): counts, lengths / aspects in pixels,
    truncated / difficult fractions, ships per type and per scene kind."""
    objects = [o for objs in object_lists for o in objs]
    counts = [len(objs) for objs in object_lists]
    lengths = np.array([o["mbox"][2] for o in objects], np.float64)
    aspects = np.array([o["mbox"][2] / o["mbox"][3] for o in objects], np.float64)
    if not len(objects):
        return {"images": len(object_lists), "ships": 0}
    return {
        "images": len(object_lists),
        "ships": len(objects),
        "ships_per_image_mean": round(float(np.mean(counts)), 2),
        "ships_per_image_max": int(max(counts)),
        "length_px_min": round(float(lengths.min()), 1),
        "length_px_median": round(float(np.median(lengths)), 1),
        "length_px_max": round(float(lengths.max()), 1),
        "aspect_min": round(float(aspects.min()), 2),
        "aspect_max": round(float(aspects.max()), 2),
        "truncated_fraction": round(float(np.mean([o["truncated"] for o in objects])), 3),
        "difficult_fraction": round(float(np.mean([o["difficult"] for o in objects])), 3),
        "types": dict(collections.Counter(o["type"] for o in objects).most_common()),
        "scenes": dict(collections.Counter(objs[0]["scene"] for objs in object_lists if objs).most_common()),
    }


def make_realistic_hrsc(
    out_dir, num_train=300, num_test=100, image_size=512, seed=0, image_format="jpg", overwrite=False, verbose=1
):
    """Writes the realistic ship dataset in the HRSC2016 layout; returns the absolute `out_dir`.

    out_dir/FullDataSet/AllImages/<id>.<image_format>, out_dir/FullDataSet/Annotations/<id>.xml,
    out_dir/ImageSets/{trainval,test}.txt, out_dir/manifest.json (parameters with `kind` "hrsc_realistic"
    and `version` REALISTIC_VERSION, file list, `summarize` statistics). Ids 1000xxxxx (trainval) and
    2000xxxxx (test). Class_IDs of the ten `HULL_TYPES` (read with `read_hrsc(root, class_mode="31")`
    for ten classes, `class_mode="ship"` for one).
    image_size: long side in pixels (short side drawn in [0.75, 1] of it) or (min, max) range; ship
    sizes scale with it. Skipped when the manifest shows a complete set with the same parameters.
    """
    params = manifest_params("hrsc_realistic", num_train, num_test, image_size, seed, image_format, REALISTIC_VERSION)
    return write_hrsc_dataset(
        out_dir,
        params,
        render_realistic_scene,
        num_train,
        num_test,
        seed,
        image_size,
        image_format,
        overwrite=overwrite,
        verbose=verbose,
        stream=STREAM,
        desc="realistic HRSC2016",
        summarize=summarize,
    )


def ensure_realistic_hrsc(out_dir=None, verbose=1, **kwargs):
    """Makes (or reuses, via the manifest) the realistic HRSC2016-format set; returns its root.

    out_dir: default `default_data_dir()/realistic_hrsc`; kwargs go to `make_realistic_hrsc`.
    """
    out_dir = out_dir or os.path.join(default_data_dir(), "realistic_hrsc")
    return make_realistic_hrsc(out_dir, verbose=verbose, **kwargs)


# --------------------------------------------------------------------------- preview


def preview(path, num=6, image_size=512, seed=1, columns=3, tile=400):
    """Saves a grid of realistic samples (one of each scene kind first) with their ground-truth boxes:
    green, difficult orange, bow marked by a dot. tile: tile width in pixels. Returns `path`."""
    tiles = []
    for i in range(num):
        rng = np.random.default_rng([seed, STREAM + 1, i])
        w, h = _image_size(rng, image_size)
        image, objects = render_realistic_scene(rng, w, h, kind=SCENE_KINDS[i % len(SCENE_KINDS)])
        f = tile / max(w, h)
        image = cv2.resize(image, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA)
        for o in objects:
            poly = mbox_to_poly(np.array([o["mbox"]]))[0].reshape(4, 2) * f
            color = (255, 150, 0) if o["difficult"] else (60, 255, 60)
            cv2.polylines(image, [np.round(poly * 16).astype(np.int32)], True, color, 1, cv2.LINE_AA, shift=4)
            bow = np.round(np.array(o["header"]) * f).astype(int)
            cv2.circle(image, (int(bow[0]), int(bow[1])), 2, color, -1, cv2.LINE_AA)
        label = f"{objects[0]['scene'] if objects else SCENE_KINDS[i % len(SCENE_KINDS)]}: {len(objects)} ships"
        cv2.putText(image, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        pad = np.full((tile, tile, 3), 32, np.uint8)
        pad[: image.shape[0], : image.shape[1]] = image
        tiles.append(pad)
    while len(tiles) % columns:
        tiles.append(np.full((tile, tile, 3), 32, np.uint8))
    rows = [np.concatenate(tiles[r : r + columns], 1) for r in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, 0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"could not encode {path}")
    _write_atomic(path, data.tobytes())
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dked_tf.data.realistic", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", help="where to write the dataset")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png", "bmp"), default="jpg")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--preview", metavar="PNG", help="save a picture of samples with their boxes")
    parser.add_argument("--preview-seed", type=int, default=1, help="seed of the preview's scenes")
    args = parser.parse_args(argv)
    if args.preview:
        print(preview(args.preview, seed=args.preview_seed))
    if args.out_dir:
        make_realistic_hrsc(
            args.out_dir,
            num_train=args.num_train,
            num_test=args.num_test,
            image_size=args.image_size,
            seed=args.seed,
            image_format=args.image_format,
            overwrite=args.overwrite,
        )
    if not args.preview and not args.out_dir:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
