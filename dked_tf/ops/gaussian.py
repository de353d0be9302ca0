"""Oriented boxes as 2-D Gaussians, and the probabilistic IoU between two of them.

A quadrilateral is summarised by the mean and covariance of the uniform density over its
area (exact polygon moments; a rectangle of sides L x w turned by theta gets
R diag(L^2 / 12, w^2 / 12) R^T). Two such Gaussians are compared with the Bhattacharyya
distance B and its Hellinger distance H = sqrt(1 - exp(-B)); 1 - H is the probabilistic IoU
(ProbIoU, Llerena et al. 2021, also YOLOv8-OBB's box loss). Unlike the L2 loss on gliding
ratios, H weighs an error by what it does to the box: a small turn of a slender hull costs
much, the same change of a square box little.

Everything is TensorFlow, elementwise over any leading shape, float32 and differentiable.
"""

import tensorflow as tf

_EPS = 1e-7
_MAX_BHATTACHARYYA = 100.0


def polygon_gaussian_tf(polygons):
    """Mean and covariance of the uniform density over simple polygons.

    polygons: float32 [..., 2K] (x1 y1 ... xK yK, either orientation, K >= 3).
    Returns (mean [..., 2], cov [..., 3] = (var_x, var_y, cov_xy)). The moments are taken about
    the vertex mean first, so far-off coordinates cost no precision. Degenerate polygons (zero
    area) give a zero covariance.
    """
    polygons = tf.convert_to_tensor(polygons, tf.float32)
    xs, ys = polygons[..., 0::2], polygons[..., 1::2]
    origin_x = tf.reduce_mean(xs, axis=-1, keepdims=True)
    origin_y = tf.reduce_mean(ys, axis=-1, keepdims=True)
    x0, y0 = xs - origin_x, ys - origin_y
    x1, y1 = tf.roll(x0, -1, axis=-1), tf.roll(y0, -1, axis=-1)
    cross = x0 * y1 - x1 * y0
    area2 = tf.reduce_sum(cross, axis=-1)  # twice the signed area
    safe = tf.where(tf.abs(area2) > _EPS, area2, tf.ones_like(area2))
    valid = tf.abs(area2) > _EPS
    mx = tf.reduce_sum((x0 + x1) * cross, axis=-1) / (3.0 * safe)
    my = tf.reduce_sum((y0 + y1) * cross, axis=-1) / (3.0 * safe)
    # second moments about the origin divided by the area: (1/12 sum ...) / (area2 / 2)
    exx = tf.reduce_sum((x0 * x0 + x0 * x1 + x1 * x1) * cross, axis=-1) / (6.0 * safe)
    eyy = tf.reduce_sum((y0 * y0 + y0 * y1 + y1 * y1) * cross, axis=-1) / (6.0 * safe)
    exy = tf.reduce_sum((x0 * y1 + 2.0 * x0 * y0 + 2.0 * x1 * y1 + x1 * y0) * cross, axis=-1) / (12.0 * safe)
    var_x = tf.where(valid, tf.maximum(exx - mx * mx, 0.0), 0.0)
    var_y = tf.where(valid, tf.maximum(eyy - my * my, 0.0), 0.0)
    cov_xy = tf.where(valid, exy - mx * my, 0.0)
    mean = tf.stack([tf.where(valid, mx, 0.0) + origin_x[..., 0], tf.where(valid, my, 0.0) + origin_y[..., 0]], -1)
    return mean, tf.stack([var_x, var_y, cov_xy], axis=-1)


def hellinger_distance_tf(mean1, cov1, mean2, cov2, eps=_EPS):
    """Hellinger distance H in [0, 1] between two Gaussians (`polygon_gaussian_tf` layout).

    mean*: [..., 2]; cov*: [..., 3] = (var_x, var_y, cov_xy). `eps` is added to the variances.
    Returns [...]; 1 - H is the probabilistic IoU (1 for identical boxes).
    """
    a1, b1, c1 = tf.unstack(cov1 + tf.constant([eps, eps, 0.0]), 3, axis=-1)
    a2, b2, c2 = tf.unstack(cov2 + tf.constant([eps, eps, 0.0]), 3, axis=-1)
    a, b, c = 0.5 * (a1 + a2), 0.5 * (b1 + b2), 0.5 * (c1 + c2)
    det = tf.maximum(a * b - c * c, eps * eps)
    det1 = tf.maximum(a1 * b1 - c1 * c1, eps * eps)
    det2 = tf.maximum(a2 * b2 - c2 * c2, eps * eps)
    dx = mean1[..., 0] - mean2[..., 0]
    dy = mean1[..., 1] - mean2[..., 1]
    term_mean = 0.125 * (b * dx * dx + a * dy * dy - 2.0 * c * dx * dy) / det
    term_cov = 0.5 * tf.math.log(det / tf.sqrt(det1 * det2))
    distance = tf.clip_by_value(term_mean + term_cov, eps, _MAX_BHATTACHARYYA)
    return tf.sqrt(1.0 - tf.exp(-distance) + eps)


def probiou_tf(polygons1, polygons2):
    """Probabilistic IoU (1 - Hellinger distance) of two polygon tensors [..., 2K] -> [...]."""
    mean1, cov1 = polygon_gaussian_tf(polygons1)
    mean2, cov2 = polygon_gaussian_tf(polygons2)
    return 1.0 - hellinger_distance_tf(mean1, cov1, mean2, cov2)
