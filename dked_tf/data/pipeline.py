"""The tf.data pipeline: records -> batches of letterboxed images and padded oriented-box targets.

`build_dataset(records, image_size, batch_size, training=...)` yields `(images, targets)`:

- images: float32 [B, S, S, 3], RGB in [0, 1], letterboxed (scale = min(S/w, S/h), centred,
  padded with 0.5; `dked_tf.data.augment.letterbox_image_tf` / `letterbox_image_np` give the same
  input for one image outside the pipeline);
- targets: `polygons` float32 [B, M, 8] (pixels of the S x S input), `classes` int32 [B, M],
  `weights` float32 [B, M] (mixup weight, 0 marks padding), `difficult` bool [B, M],
  `image_index` int32 [B] (index into `records`), `scale` float32 [B], `offset` float32 [B, 2]:
  original = (input - offset) / scale (for training batches this is the last, letterbox step of
  the augmentation only).

Graph mode throughout, except the decode: parallel decode (`tf.io.decode_image`: BMP, JPEG, PNG,
GIF, WebP; TIFF with OpenCV) with AUTOTUNE inside a `tf.py_function`, so that a file that fails
to decode is named in the error (about 0.15 ms per image more than a graph-mode decode, measured
on 800 x 600 JPEGs), optional cache of decoded images, stateless randomness keyed by per-sample
seeds from `tf.data.Dataset.random(seed)`, so a pipeline is deterministic under `seed` (shuffle
order, augmentation, multi-scale sizes and mixup). See `dked_tf.data.augment` for the object rules.

Training drops the ground-truth objects that are no usable object
(`dked_tf.data.records.polygon_problems`: zero area, self-intersecting, outside the image) with
one warning (how many, the first file:line); evaluation pipelines keep every object.

Multi-scale training: with `multiscale_sizes=(...)` the size S is drawn per group of
`multiscale_every` batches (GGHL: every 10 batches from 736..864) and all images of a batch share
it; the image shape is then [B, None, None, 3] statically.
"""

import warnings

import cv2
import numpy as np
import tensorflow as tf

from dked_tf.data.augment import AugmentConfig, augment_sample_tf, mixup_batch_tf, mosaic_batch_tf
from dked_tf.data.images import image_file_problem
from dked_tf.data.records import PolygonReport, polygon_problems
from dked_tf.ops.iou import VALID

AUTOTUNE = tf.data.AUTOTUNE


def _record_tensors(records):
    n = [r.num_objects for r in records]
    polys = np.concatenate([r.polygons for r in records] + [np.zeros((0, 8), np.float32)]).astype(np.float32)
    classes = np.concatenate([r.classes for r in records] + [np.zeros((0,), np.int32)]).astype(np.int32)
    difficult = np.concatenate([r.difficult for r in records] + [np.zeros((0,), bool)]).astype(bool)
    lengths = np.asarray(n, np.int64)
    return {
        "path": tf.constant([str(r.image_path) for r in records]),
        "polygons": tf.RaggedTensor.from_row_lengths(polys, lengths),
        "classes": tf.RaggedTensor.from_row_lengths(classes, lengths),
        "difficult": tf.RaggedTensor.from_row_lengths(difficult, lengths),
        "index": tf.range(len(records), dtype=tf.int32),
    }


def _decode_eagerly(path):
    """The body of the decode's py_function: a scalar string tensor -> uint8 [H, W, 3] RGB.
    TensorFlow's decoders first; formats they do not read (TIFF) with OpenCV; a failure raises
    ValueError naming the file (TensorFlow reports it as an error of the pipeline with that text)."""
    name = path.numpy().decode("utf-8", "replace")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as error:
        problem = image_file_problem(name)
        array = cv2.imread(name, cv2.IMREAD_COLOR) if problem is None else None
        if array is None:
            detail = problem or error.message.strip().splitlines()[-1]
            raise ValueError(f"{name}: cannot decode the image: {detail}") from None
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return image if image.dtype == tf.uint8 else tf.image.convert_image_dtype(image, tf.uint8)


def decode_image_tf(path, dtype=tf.float32):
    """Reads and decodes an image file into [H, W, 3] RGB: float32 in [0, 1] by default, or uint8
    with `dtype=None` (what the cache holds: 4x smaller than float; 16-bit files are reduced to
    8 bits). A file that cannot be decoded raises an error whose message names it."""
    image = tf.py_function(_decode_eagerly, [path], tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    return image if dtype is None else tf.image.convert_image_dtype(image, dtype)


def usable_objects(records, verbose=True):
    """The records without their ground-truth objects that are no usable object
    (`records.polygon_problems`: zero area, self-intersecting, outside the image), and a warning
    (when verbose and some were dropped) with how many and the first file:line.
    Returns (list of records, PolygonReport)."""
    report = PolygonReport()
    lengths = [record.num_objects for record in records]
    polygons = np.concatenate([record.polygons for record in records] + [np.zeros((0, 8), np.float32)])
    widths = np.repeat([record.width for record in records], lengths)
    heights = np.repeat([record.height for record in records], lengths)
    all_codes = np.split(polygon_problems(polygons, widths, heights), np.cumsum(lengths)[:-1])
    kept = []
    for record, codes in zip(records, all_codes):
        if (codes == VALID).all():
            kept.append(record)
        else:
            report.add(record, codes)
            kept.append(record.select(codes == VALID))
    if verbose and report.total:
        warnings.warn(f"build_dataset: dropped from training: {report.summary()}", stacklevel=3)
    return kept, report


def _pad_objects(polygons, classes, difficult, keep, max_objects):
    polygons = tf.boolean_mask(polygons, keep)[:max_objects]
    classes = tf.boolean_mask(classes, keep)[:max_objects]
    difficult = tf.boolean_mask(difficult, keep)[:max_objects]
    n = tf.shape(polygons)[0]
    pad = max_objects - n
    return {
        "polygons": tf.pad(polygons, [[0, pad], [0, 0]]),
        "classes": tf.pad(classes, [[0, pad]]),
        "weights": tf.pad(tf.ones([n], tf.float32), [[0, pad]]),
        "difficult": tf.pad(difficult, [[0, pad]]),
    }


def build_dataset(
    records,
    image_size,
    batch_size,
    *,
    training,
    max_objects=100,
    augment=None,
    seed=None,
    multiscale_sizes=None,
    multiscale_every=1,
    cache=False,
    drop_remainder=None,
    shuffle=None,
    shuffle_buffer=None,
    repeat=False,
    num_parallel_calls=AUTOTUNE,
):
    """Builds the tf.data pipeline over `records` (list of ImageRecord).

    image_size: S (int); with `multiscale_sizes` (training only) the per-batch sizes instead.
    training: shuffles, augments (geometric, HSV, mosaic, mixup), drops the last partial batch by
        default, and drops the objects that are no usable object (`usable_objects`).
    augment: AugmentConfig; None = AugmentConfig() when training; False = no augmentation.
        Not used when training is False (letterbox only).
    seed: int; the pipeline is deterministic under it. None draws one.
    multiscale_every: batches that share one size (GGHL: 10).
    cache: True (memory) or a file path: caches the decoded full-size images (uint8).
    Returns tf.data.Dataset of (images [B, S, S, 3], targets dict), see the module docstring.
    """
    records = list(records)
    if not records:
        raise ValueError("build_dataset: no records")
    if training:
        records, _ = usable_objects(records)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    if augment is None or augment is True:
        augment = AugmentConfig()
    elif augment is False:
        augment = AugmentConfig.disabled()
    if not training:
        augment = AugmentConfig.disabled()
    drop_remainder = training if drop_remainder is None else drop_remainder
    if drop_remainder and len(records) < batch_size and not repeat:
        raise ValueError(
            f"build_dataset: {len(records)} records < batch_size {batch_size} with drop_remainder: "
            "every batch would be dropped (lower batch_size, or pass drop_remainder=False / repeat=True)"
        )
    shuffle = training if shuffle is None else shuffle
    most = max(r.num_objects for r in records)
    limit = max_objects // 2 if (training and augment.mixup_prob > 0) else max_objects
    if most > limit:
        warnings.warn(
            f"build_dataset: up to {most} objects per image but max_objects={max_objects}"
            + (" (mixup puts two images' objects in one row)" if limit < max_objects else "")
            + "; objects past the limit are cut",
            stacklevel=2,
        )
    sizes = [int(s) for s in (multiscale_sizes or [image_size])] if training else [int(image_size)]
    static_size = sizes[0] if len(sizes) == 1 else None

    ds = tf.data.Dataset.from_tensor_slices(_record_tensors(records))

    def load(item):
        out = dict(item)
        out["image"] = decode_image_tf(item["path"], dtype=None)
        del out["path"]
        return out

    if cache:
        ds = ds.map(load, num_parallel_calls=num_parallel_calls)
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        buffer = shuffle_buffer or len(records)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat(None if repeat is True else repeat)
    if not cache:
        ds = ds.map(load, num_parallel_calls=num_parallel_calls)
    # per-sample seeds, and a running element index for the per-batch size
    sample_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, sample_seeds)).enumerate()
    sizes_t = tf.constant(sizes, tf.int32)
    group = batch_size * max(1, int(multiscale_every))

    def transform(position, pair):
        item, sample_seed = pair
        if static_size is not None:
            size = tf.constant(static_size, tf.int32)
        else:
            draw = tf.random.stateless_uniform(
                [], seed=tf.stack([tf.cast(seed, tf.int64), position // group]), maxval=len(sizes), dtype=tf.int32
            )
            size = sizes_t[draw]
        image, polys, keep, scale, offset = augment_sample_tf(
            tf.image.convert_image_dtype(item["image"], tf.float32),
            item["polygons"],
            sample_seed,
            size,
            augment,
            training,
        )
        targets = _pad_objects(polys, item["classes"], item["difficult"], keep, max_objects)
        targets["image_index"] = item["index"]
        targets["scale"] = scale
        targets["offset"] = offset
        if static_size is not None:
            image = tf.ensure_shape(image, [static_size, static_size, 3])
        return image, targets

    ds = ds.map(transform, num_parallel_calls=num_parallel_calls)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls)
    if training and augment.mosaic_prob > 0:
        ds = _per_batch(
            ds,
            seed + 2,
            lambda images, targets, batch_seed: mosaic_batch_tf(
                images, targets, batch_seed, augment.mosaic_prob, augment.min_visible
            ),
            num_parallel_calls,
        )
    if training and augment.mixup_prob > 0:
        ds = _per_batch(
            ds,
            seed + 1,
            lambda images, targets, batch_seed: mixup_batch_tf(
                images, targets, batch_seed, augment.mixup_prob, augment.mixup_alpha
            ),
            num_parallel_calls,
        )
    return ds.prefetch(AUTOTUNE)


def _per_batch(ds, seed, function, num_parallel_calls):
    """Maps function(images, targets, batch_seed int64 [2]) -> (images, targets) over the
    batches of `ds`, with a deterministic stream of batch seeds drawn from `seed`."""
    batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, batch_seeds)).map(
        lambda batch, batch_seed: function(*batch, batch_seed), num_parallel_calls=num_parallel_calls
    )


def unletterbox_polygons(polygons, scale, offset):
    """numpy: polygons [..., 8] in input pixels -> original image pixels ((p - offset) / scale).

    scale: scalar; offset: [2] (pad x, pad y). Returns float64 [..., 8].
    """
    polygons = np.asarray(polygons, np.float64)
    offset = np.asarray(offset, np.float64).reshape(2)
    return (polygons - np.tile(offset, 4)) / float(scale)


def letterbox_polygons(polygons, scale, offset):
    """numpy inverse of `unletterbox_polygons`: p * scale + offset."""
    polygons = np.asarray(polygons, np.float64)
    return polygons * float(scale) + np.tile(np.asarray(offset, np.float64).reshape(2), 4)
