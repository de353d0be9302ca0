"""DKED distillation losses (our reading; shared/DESIGN.md "DKED", reference §3.1).

Three independent loss objects, each a Keras layer (so that the auxiliary modules it owns are
tracked, trained and checkpointed by the `Distiller`) with one interface:

    loss.build_modules(teacher_shapes, student_shapes)   # once, before training
    terms = loss.compute(teacher_outputs, student_outputs, encoded, strides, image_size,
                         student_cells=None)

`*_outputs` are the detector output dicts {"backbone": [C3,C4,C5], "neck": [P3,P4,P5],
"head": [H3,H4,H5]}; `*_shapes` the same structure holding TensorShapes; `encoded` is the list
of `losses.assign.encode_targets` tensors [B, H_l, W_l, 16 + nC]; `student_cells` optionally
the student's `jol.per_cell_terms` per level (losses that need them reuse them instead of
recomputing). `compute` returns a dict of float32 scalars (the local-batch mean, already
multiplied by `weight` > 0) named by `term_names` (`head_contract.DISTILL_TERM_NAMES`).
Teacher tensors are wrapped in `stop_gradient`.

On/off: the one switch is `enabled` (constructor flag, serialised in the config). The
`Distiller` holds it at run time (`Distiller.set_loss_switches` flips it without retracing)
and multiplies each loss's terms by it (a switched-off loss contributes exactly 0); `compute`
itself always computes.

Everything is computed in float32 (inputs are cast), also under `mixed_float16`.
"""

import keras
import tensorflow as tf

from dked_tf.layers.ddc import DynamicDirectionalConv
from dked_tf.losses.assign import heatmap_max
from dked_tf.losses.jol import box_terms, gliding_gaussian
from dked_tf.ops.gaussian import hellinger_distance_tf
from dked_tf.ops.head_contract import (
    CORRELATION_TERMS,
    FIRST_CLASS_CHANNEL,
    OBJECTNESS_CHANNEL,
    PREDICTION_TERMS,
    RESPONSE_TERMS,
    TARGET_AREA_WEIGHT_CHANNEL,
    TARGET_DISTANCE_CHANNELS,
    TARGET_GLIDING_CHANNELS,
    TARGET_MIXUP_CHANNEL,
    TARGET_POSITIVE_CHANNEL,
    decode_head_level,
)


def _f32(x):
    return tf.cast(x, tf.float32)


class DistillationLoss(keras.layers.Layer):
    """Base: `weight` (> 0), `enabled`, `build_modules`, `compute`, config.

    `student_cls_scale`: factor the Distiller applies to the student's own JOL class terms
    while this loss is on (1 here; λ for `PredictionDistillationLoss`).
    """

    term_names = ()
    student_cls_scale = 1.0

    def __init__(self, weight=1.0, enabled=True, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight
        self.enabled = bool(enabled)

    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, value):
        value = float(value)
        if not value > 0.0:
            raise ValueError(
                f"distill.py: {type(self).__name__} weight must be > 0, got {value}; switch a loss "
                "off with enabled=False (or Distiller.set_loss_switches)"
            )
        self._weight = value

    def build_modules(self, teacher_shapes, student_shapes):
        self.built = True

    def compute(self, teacher_outputs, student_outputs, encoded, strides, image_size, student_cells=None):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight, enabled=self.enabled)
        return config


# ---------------------------------------------------------------- feature correlation
@keras.saving.register_keras_serializable(package="dked_tf")
class FeatureCorrelationLoss(DistillationLoss):
    """Non-local (position-to-position) correlation distillation on backbone features.

    For each chosen backbone level (default: the deepest, C5; `levels=(-2, -1)` adds stride
    16) both maps are area-resized to a common grid g×g, g = min(teacher grid, student grid,
    `max_grid`), every position's feature vector is L2-normalised over channels and the
    cosine-correlation matrix A = F·Fᵀ [B, g², g²] is formed. The loss is
    mean((A_T − A_S)²) over positions pairs and images, summed over levels, times `weight`.
    Channel widths need not match and memory is bounded by `max_grid`⁴ per image. No
    parameters (nothing to collapse).
    """

    term_names = CORRELATION_TERMS

    def __init__(self, weight=5.0, levels=(-1,), max_grid=16, enabled=True, **kwargs):
        super().__init__(weight=weight, enabled=enabled, **kwargs)
        self.levels = tuple(int(i) for i in levels)
        self.max_grid = int(max_grid)
        if self.max_grid < 1:
            raise ValueError(f"distill.py: max_grid must be >= 1, got {max_grid}")

    @staticmethod
    def correlation(features, grid):
        """features [B, H, W, C] -> cosine correlation [B, grid², grid²] (float32)."""
        features = _f32(features)
        if features.shape[1] != grid or features.shape[2] != grid:
            features = tf.image.resize(features, (grid, grid), method="area")
        flat = tf.reshape(features, (tf.shape(features)[0], grid * grid, features.shape[-1]))
        flat = tf.math.l2_normalize(flat, axis=-1, epsilon=1e-6)
        return tf.matmul(flat, flat, transpose_b=True)

    def _grid(self, teacher, student):
        sizes = [teacher.shape[1], teacher.shape[2], student.shape[1], student.shape[2]]
        if any(s is None for s in sizes):
            raise ValueError("distill.py: FeatureCorrelationLoss needs static spatial sizes")
        return max(1, min(min(sizes), self.max_grid))

    def compute(self, teacher_outputs, student_outputs, encoded, strides, image_size, student_cells=None):
        total = tf.constant(0.0, tf.float32)
        for level in self.levels:
            teacher = tf.stop_gradient(teacher_outputs["backbone"][level])
            student = student_outputs["backbone"][level]
            grid = self._grid(teacher, student)
            a_t = tf.stop_gradient(self.correlation(teacher, grid))
            a_s = self.correlation(student, grid)
            total += tf.reduce_mean(tf.square(a_t - a_s))
        return {"corr": self.weight * total}

    def get_config(self):
        config = super().get_config()
        config.update(levels=list(self.levels), max_grid=self.max_grid)
        return config


# ---------------------------------------------------------------- feature response
@keras.saving.register_keras_serializable(package="dked_tf")
class DirectionalResponseLoss(DistillationLoss):
    """Direction-adaptive feature-response distillation on the FPN (neck) outputs.

    Student side: Y'_S = Conv1x1(DDC_depthwise(P_S)) — a depthwise Dynamic Directional
    Convolution (K rotated copies, attention-mixed) followed by a 1×1 conv to the teacher's
    width. This extraction module is training-only (owned by this loss, not the student).

    Teacher side (fixed, cannot collapse): Y'_T = the teacher's P_T standardised per image and
    channel over positions, (P_T − mean_hw) / sqrt(var_hw + eps), with no trainable
    parameters, so the target can neither shrink to zero nor be moved towards the student.

    Mask G = max over classes of the OLA oriented Gaussian heatmap of that level
    (`assign.heatmap_max`); with `mask_dilation` d > 0 cells, its maximum over the
    (2d + 1) × (2d + 1) cells around each cell, so that objects thinner than a cell also pass
    their surroundings. Per level and image:
    L = Σ_hw G · mean_c (Y'_T − Y'_S)² / max(Σ_hw G, eps); images without objects give 0.
    Summed over `levels`, averaged over the batch, times `weight`.
    """

    term_names = RESPONSE_TERMS

    def __init__(
        self,
        weight=1.0,
        levels=(0, 1, 2),
        num_directions=4,
        kernel_size=3,
        temperature=1.0,
        mask_dilation=0,
        enabled=True,
        **kwargs,
    ):
        super().__init__(weight=weight, enabled=enabled, **kwargs)
        self.levels = tuple(int(i) for i in levels)
        self.mask_dilation = int(mask_dilation)
        if self.mask_dilation < 0:
            raise ValueError(f"distill.py: mask_dilation must be >= 0 cells, got {mask_dilation}")
        self.num_directions = int(num_directions)
        self.kernel_size = int(kernel_size)
        self.temperature = float(temperature)
        self.extractors = []

    def build_modules(self, teacher_shapes, student_shapes):
        if self.extractors:
            return
        for level in self.levels:
            student_shape = tuple(student_shapes["neck"][level])
            teacher_channels = int(teacher_shapes["neck"][level][-1])
            ddc = DynamicDirectionalConv(
                depthwise=True,
                kernel_size=self.kernel_size,
                num_directions=self.num_directions,
                temperature=self.temperature,
                name=f"resp_ddc_{level}",
            )
            project = keras.layers.Conv2D(teacher_channels, 1, name=f"resp_project_{level}")
            ddc.build((None,) + student_shape[1:])
            project.build((None,) + student_shape[1:])
            self.extractors.append((ddc, project))
        self.built = True

    @staticmethod
    def standardise(features, eps=1e-5):
        features = _f32(features)
        mean, variance = tf.nn.moments(features, axes=(1, 2), keepdims=True)
        return (features - mean) * tf.math.rsqrt(variance + eps)

    def compute(self, teacher_outputs, student_outputs, encoded, strides, image_size, student_cells=None):
        if not self.extractors:
            raise RuntimeError("distill.py: DirectionalResponseLoss.build_modules was not called")
        total = tf.constant(0.0, tf.float32)
        for (ddc, project), level in zip(self.extractors, self.levels):
            target = tf.stop_gradient(self.standardise(teacher_outputs["neck"][level]))
            student = _f32(project(ddc(student_outputs["neck"][level])))
            if student.shape[1] != target.shape[1] or student.shape[2] != target.shape[2]:
                student = tf.image.resize(student, tf.shape(target)[1:3], method="bilinear")
            mask = heatmap_max(_f32(encoded[level]))
            if self.mask_dilation:
                window = 2 * self.mask_dilation + 1
                mask = tf.nn.max_pool2d(mask[..., None], window, 1, "SAME")[..., 0]
            error = tf.reduce_mean(tf.square(target - student), axis=-1)  # [B, H, W]
            per_image = tf.reduce_sum(mask * error, axis=(1, 2)) / tf.maximum(tf.reduce_sum(mask, axis=(1, 2)), 1e-6)
            total += tf.reduce_mean(per_image)
        return {"resp": self.weight * total}

    def get_config(self):
        config = super().get_config()
        config.update(
            levels=list(self.levels),
            num_directions=self.num_directions,
            kernel_size=self.kernel_size,
            temperature=self.temperature,
            mask_dilation=self.mask_dilation,
        )
        return config


# ---------------------------------------------------------------- prediction
def _per_cell_box(head, encoded_level, stride, image_size):
    """JOL_obb per cell [B, H, W]: the `box` map of `jol.per_cell_terms`
    (β(1 − GIoU) + Σ(ŝ − s)² + (r̂ − r)² + 0.2·β·Σ SmoothL1(l̂/stride, l/stride)), computed
    without the objectness / class terms that prediction distillation does not need."""
    return box_terms(decode_head_level(head, stride), encoded_level, stride, image_size)["box"]


def _soft_bce(teacher_logits, student_logits):
    """BCE(σ(z_S); target σ(z_T)) minus the target's entropy (a Bernoulli KL: same gradient as
    the BCE, 0 when the student matches the teacher)."""
    target = tf.sigmoid(teacher_logits)
    cross = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=student_logits)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=teacher_logits)
    return cross - entropy


@keras.saving.register_keras_serializable(package="dked_tf")
class PredictionDistillationLoss(DistillationLoss):
    """Prediction distillation on positive OLA cells (teacher-bounded regression + soft labels).

    With per-cell box loss JOL_obb = L_iou⁰ + L_s⁰ + L_r⁰ + 0.2·L_l (`jol.per_cell_terms`
    "box") of student (L_S) and teacher (L_T, decoded teacher predictions against the same
    targets, no gradient):

    - pred_loc = λ · Σ_pos w · L_S · [L_S + δ > L_T] / N_img (the student's own JOL_obb stays
      in the JOL loss, so L_loc = JOL_obb + λ·L_obb as in the paper);
    - pred_cls = (1−λ) · Σ_pos w · [Σ_c BCE(z_S,c, σ(z_T,c)) + BCE(z_S,obj, σ(z_T,obj))] / N_img
      (teacher probabilities as soft class and objectness labels; each BCE minus the
      teacher's entropy, i.e. a Bernoulli KL, so it is 0 when the student matches); together with the
      Distiller scaling the student's JOL class terms by `student_cls_scale` = λ this gives
      L_cls = λ·JOL_cls(c_S, c_GT) + (1−λ)·JOL_cls(c_T, c_S).

    - with `box_imitation` κ > 0, pred_loc also gets κ · Σ_pos w · (1 − H_T) · H(S, T) / N_img:
      the Hellinger distance between the Gaussians of the student's and the teacher's decoded
      quadrilaterals (`dked_tf.ops.gaussian`), each cell trusted as far as the teacher's box
      matches the ground truth (1 − H_T, H_T its distance to the target box). This passes the
      teacher's box geometry (gliding ratios included) to the student directly, not only as a
      bound on the student's regression loss.
    - with `dense_objectness` ρ > 0, pred_cls also gets ρ · Σ_neg m · KL(σ(z_T,obj) ‖ σ(z_S,obj)) / N_img
      over the negative cells (1 − positive mask, m the mixup weight): the teacher's objectness
      where no target is, so its hard negatives (piers, quays) and its soft scores next to the
      objects reach the student, which the positive-cell terms above never see.
    - with `dense_box` η > 0, pred_loc also gets η · Σ_neg m · σ(z_T,obj) · H(S, T) / N_img: on
      the negative cells, the student's decoded box pulled towards the teacher's, as far as the
      teacher believes an object is there. The JOL trains boxes only on positive cells, yet at
      test time every cell whose objectness passes the score threshold gives a box; this term
      gives the cells next to an object (which dense objectness teaches to fire) a box too.

    w = positive mask · mixup weight · area weight ω; N_img = max(1, positives of the image
    over all levels); averaged over the batch; both terms times `weight`.
    """

    term_names = PREDICTION_TERMS

    def __init__(
        self,
        weight=1.0,
        lam=0.5,
        margin=0.05,
        objectness=True,
        box_imitation=0.0,
        dense_objectness=0.0,
        dense_box=0.0,
        enabled=True,
        **kwargs,
    ):
        super().__init__(weight=weight, enabled=enabled, **kwargs)
        self.box_imitation = float(box_imitation)
        self.dense_objectness = float(dense_objectness)
        self.dense_box = float(dense_box)
        for name, value in (("dense_objectness", self.dense_objectness), ("dense_box", self.dense_box)):
            if value < 0.0:
                raise ValueError(f"distill.py: {name} must be >= 0, got {value}")
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"distill.py: lam must be in [0, 1], got {lam}")
        self.lam = float(lam)
        self.margin = float(margin)
        self.objectness = bool(objectness)

    @property
    def student_cls_scale(self):
        """Factor (λ) for the student's own JOL class terms while this loss is on."""
        return self.lam

    def compute(self, teacher_outputs, student_outputs, encoded, strides, image_size, student_cells=None):
        """`student_cells`: optional list of the student's `jol.per_cell_terms` per level
        (the Distiller passes the ones it computed for the JOL loss, saving a recomputation)."""
        loc = 0.0
        cls = 0.0
        imitation = 0.0
        background = 0.0
        background_box = 0.0
        positives = 0.0
        for level, stride in enumerate(strides):
            enc = _f32(encoded[level])
            head_s = _f32(student_outputs["head"][level])
            head_t = tf.stop_gradient(_f32(teacher_outputs["head"][level]))
            positive = enc[..., TARGET_POSITIVE_CHANNEL]
            weight = positive * enc[..., TARGET_MIXUP_CHANNEL] * enc[..., TARGET_AREA_WEIGHT_CHANNEL]
            positives += tf.reduce_sum(positive, axis=(1, 2))
            if student_cells is not None:
                box_s = _f32(student_cells[level]["box"])
            else:
                box_s = _per_cell_box(head_s, enc, stride, image_size)
            box_t = tf.stop_gradient(_per_cell_box(head_t, enc, stride, image_size))
            worse = tf.cast(box_s + self.margin > box_t, tf.float32)
            loc += tf.reduce_sum(weight * worse * box_s, axis=(1, 2))
            if self.box_imitation:
                imitation += tf.reduce_sum(weight * self._imitation(head_s, head_t, enc, stride), axis=(1, 2))
            cell = tf.reduce_sum(
                _soft_bce(head_t[..., FIRST_CLASS_CHANNEL:], head_s[..., FIRST_CLASS_CHANNEL:]),
                axis=-1,
            )
            if self.objectness:
                cell += _soft_bce(head_t[..., OBJECTNESS_CHANNEL], head_s[..., OBJECTNESS_CHANNEL])
            cls += tf.reduce_sum(weight * cell, axis=(1, 2))
            if self.dense_objectness:
                negative = (1.0 - positive) * enc[..., TARGET_MIXUP_CHANNEL]
                dense = _soft_bce(head_t[..., OBJECTNESS_CHANNEL], head_s[..., OBJECTNESS_CHANNEL])
                background += tf.reduce_sum(negative * dense, axis=(1, 2))
            if self.dense_box:
                teacher_objectness = tf.sigmoid(head_t[..., OBJECTNESS_CHANNEL])
                confidence = (1.0 - positive) * enc[..., TARGET_MIXUP_CHANNEL] * teacher_objectness
                distance = self._box_distance(head_s, head_t, stride)[0]
                background_box += tf.reduce_sum(confidence * distance, axis=(1, 2))
        normaliser = tf.maximum(positives, 1.0)
        pred_loc = self.lam * tf.reduce_mean(loc / normaliser)
        if self.box_imitation:
            pred_loc += self.box_imitation * tf.reduce_mean(imitation / normaliser)
        if self.dense_box:
            pred_loc += self.dense_box * tf.reduce_mean(background_box / normaliser)
        pred_cls = (1.0 - self.lam) * tf.reduce_mean(cls / normaliser)
        if self.dense_objectness:
            pred_cls += self.dense_objectness * tf.reduce_mean(background / normaliser)
        return {"pred_loc": self.weight * pred_loc, "pred_cls": self.weight * pred_cls}

    @staticmethod
    def _box_distance(head_s, head_t, stride):
        """H(student, teacher) per cell [B, H, W] (gradient to the student only), and the
        teacher's box Gaussian (mean, covariance terms of `gliding_gaussian`)."""
        dec_s = decode_head_level(head_s, stride)
        dec_t = decode_head_level(head_t, stride)
        student = gliding_gaussian(dec_s["pred_l"], dec_s["pred_s"], stride)
        teacher = tuple(tf.stop_gradient(t) for t in gliding_gaussian(dec_t["pred_l"], dec_t["pred_s"], stride))
        return hellinger_distance_tf(*student, *teacher), teacher

    @classmethod
    def _imitation(cls, head_s, head_t, encoded_level, stride):
        """(1 − H(teacher, target)) · H(student, teacher) per cell [B, H, W]."""
        distance, teacher = cls._box_distance(head_s, head_t, stride)
        target = gliding_gaussian(
            encoded_level[..., TARGET_DISTANCE_CHANNELS], encoded_level[..., TARGET_GLIDING_CHANNELS], stride
        )
        trust = tf.stop_gradient(1.0 - hellinger_distance_tf(*teacher, *target))
        return trust * distance

    def get_config(self):
        config = super().get_config()
        config.update(
            lam=self.lam,
            margin=self.margin,
            objectness=self.objectness,
            box_imitation=self.box_imitation,
            dense_objectness=self.dense_objectness,
            dense_box=self.dense_box,
        )
        return config


def default_distillation_losses():
    """The three DKED losses with their default weights."""
    return distillation_losses()


def distillation_losses(scales=(1.0, 1.0, 1.0), correlation=None, response=None, prediction=None):
    """The three DKED losses [correlation, response, prediction], scaled and switched.

    scales: one factor per loss: weight = scale × the loss's weight (its default unless its
    kwargs give `weight`); a scale <= 0 builds that loss switched off (`enabled=False`).
    correlation, response, prediction: constructor kwargs of each loss (dict or None).
    """
    classes = (FeatureCorrelationLoss, DirectionalResponseLoss, PredictionDistillationLoss)
    made = []
    for cls, scale, kwargs in zip(classes, scales, (correlation, response, prediction), strict=True):
        kwargs = dict(kwargs or {})
        if float(scale) > 0.0:
            loss = cls(**kwargs)
            loss.weight = loss.weight * float(scale)
        else:
            loss = cls(**{**kwargs, "enabled": False})
        made.append(loss)
    return made
