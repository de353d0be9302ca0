"""Distiller: DKED training of a student detector from a frozen teacher (TensorFlow backend).

    teacher = build_model("gghl_darknet53_s", num_classes)      # trained
    student = build_model("lodet_mobilenetv2_s", num_classes)
    distiller = Distiller(teacher, student)                     # the three DKED losses
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    distiller.fit(build_dataset(records, 256, 8, training=True), epochs=...)
    distiller.student.save("student.keras")                     # a plain OrientedDetector

One training step: one teacher forward (`training=False`, outside the gradient tape, frozen),
one student forward, one OLA target encoding shared by every term, the student's JOL loss
(per-cell terms computed once and reused by prediction distillation), the distillation
losses; gradients go to the student and the auxiliary modules owned by the losses (the DDC
extraction modules), never to the teacher.

Loss (per replica; `total` is what is optimised):
    total = w_s · (JOL − (1 − λ)·(jol_cls_pos + jol_cls_neg)) + corr + resp + pred_loc + pred_cls
with λ the prediction loss's `lam` (1 when that loss is off), so the class part is
λ·JOL_cls(c_S, c_GT) + (1−λ)·JOL_cls(c_T, c_S). Logged metrics: `jol_<term>` (raw GGHL JOL
terms of the student, `jol_total` = the plain JOL total, comparable with a student trained
alone), `corr`, `resp`, `pred_loc`, `pred_cls`, `total` (names in `ops.head_contract`).

Switching losses: each distillation loss's `enabled` flag is its one on/off switch. The
Distiller keeps the flags in the non-trainable variable `loss_switches` (initialised from the
losses, so `enabled=False` at construction starts a loss off) and `set_loss_switches` flips
them at run time without retracing `train_step`. A loss built switched off is left out of the
step altogether; every other loss is computed and multiplied by its switch: switched off at run
time it contributes exactly 0 (its auxiliary modules get zero gradients) and leaves the
student's JOL class terms unscaled. (Skipping it with `tf.cond` instead changes the
traced graph's floating-point rounding, and with it the trained weights, even with all losses on.)

Multi-device: under `tf.distribute.MirroredStrategy` every replica divides its local-batch
mean by `num_replicas_in_sync` before the gradient (the optimizer sums replica gradients), so
the update equals the one of the global-batch mean loss. Metrics log the local means (Keras
averages them over replicas). For several machines use `MultiWorkerMirroredStrategy` with
TF_CONFIG (README).

Mixed precision: under `mixed_float16` the models compute in float16; every loss is computed
in float32 and the compiled LossScaleOptimizer scales the loss.
"""

import keras
import tensorflow as tf

from dked_tf.losses import distill as distill_lib
from dked_tf.losses.jol import jol_terms_and_cells
from dked_tf.ops.head_contract import DISTILL_TERM_NAMES, JOL_METRIC_PREFIX, JOL_TERM_NAMES, TOTAL

JOL_METRICS = tuple(JOL_METRIC_PREFIX + name for name in JOL_TERM_NAMES + (TOTAL,))


def _feature_shapes(model, image_size):
    """{"backbone": [shape3, shape4, shape5], "neck": [...]} with shapes (None, H, W, C)."""
    return {
        part: [
            (None, -(-image_size // s), -(-image_size // s), int(c))
            for s, c in zip(model.strides, model.channels[part])
        ]
        for part in ("backbone", "neck")
    }


@keras.saving.register_keras_serializable(package="dked_tf")
class Distiller(keras.Model):
    """Keras model wrapping teacher, student and the DKED distillation losses.

    Args:
        teacher: trained `OrientedDetector` (frozen here: `trainable = False`).
        student: `OrientedDetector` to train (same `num_classes` and strides).
        distillation_losses: list of `losses.distill` objects; None -> the three DKED
            losses with default weights; [] -> plain student training through the Distiller.
            A loss built with `enabled=False` starts switched off (see `set_loss_switches`).
        distillation_loss_weights: optional list of floats (> 0) overriding each loss's `weight`.
        student_loss_weight: weight of the student's (GT) JOL loss.
        image_size: training input side; default `student.image_size`.
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=1.0,
        image_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if teacher.num_classes != student.num_classes:
            raise ValueError(
                f"distiller.py: teacher has {teacher.num_classes} classes, student "
                f"{student.num_classes}; they must match"
            )
        if tuple(teacher.strides) != tuple(student.strides):
            raise ValueError("distiller.py: teacher and student strides differ")
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        if distillation_losses is None:
            distillation_losses = distill_lib.default_distillation_losses()
        self.distillation_losses = list(distillation_losses)
        if distillation_loss_weights is not None:
            weights = list(distillation_loss_weights)
            if len(weights) != len(self.distillation_losses):
                raise ValueError(
                    f"distiller.py: {len(weights)} distillation_loss_weights for "
                    f"{len(self.distillation_losses)} distillation_losses"
                )
            for loss, weight in zip(self.distillation_losses, weights):
                loss.weight = float(weight)
        self.distillation_loss_weights = (
            None if distillation_loss_weights is None else [float(w) for w in distillation_loss_weights]
        )
        self.student_loss_weight = float(student_loss_weight)
        self.num_classes = int(student.num_classes)
        self.strides = tuple(int(s) for s in student.strides)
        self.image_size = int(image_size or student.image_size)
        # the losses' `enabled` flags as a variable: ablations flip them without retracing
        self.loss_switches = self.add_weight(
            name="loss_switches",
            shape=(max(1, len(self.distillation_losses)),),
            initializer="ones",
            trainable=False,
        )
        # losses built switched off are never computed (no graph, no cost); the others can be
        # switched at run time
        self.built_switched_on = tuple(loss.enabled for loss in self.distillation_losses)
        self.set_loss_switches(self.built_switched_on)
        names = list(JOL_METRICS) + list(DISTILL_TERM_NAMES) + [TOTAL]
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._build_modules()

    # ------------------------------------------------------------------ building
    def _build_modules(self):
        teacher_shapes = _feature_shapes(self.teacher, self.image_size)
        student_shapes = _feature_shapes(self.student, self.image_size)
        for loss in self.distillation_losses:
            loss.build_modules(teacher_shapes, student_shapes)
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    @property
    def auxiliary_variables(self):
        """Trainable variables owned by the distillation losses (dropped after training)."""
        return [v for loss in self.distillation_losses for v in loss.trainable_variables]

    def set_loss_switches(self, switches):
        """Switches distillation losses on (1/True) or off (0/False), one flag per entry of
        `distillation_losses`, without rebuilding or retracing (for ablations). Sets each
        loss's `enabled` flag (its config) and the `loss_switches` variable the step reads."""
        flags = [bool(s) for s in switches]
        if len(flags) != len(self.distillation_losses):
            raise ValueError(
                f"distiller.py: {len(flags)} switches for {len(self.distillation_losses)} distillation_losses"
            )
        for loss, flag, built_on in zip(self.distillation_losses, flags, self.built_switched_on):
            if flag and not built_on:
                raise ValueError(
                    f"distiller.py: {type(loss).__name__} was built switched off (enabled=False) and is not part "
                    "of the training step; build the Distiller with it enabled to switch it at run time"
                )
            loss.enabled = flag
        self.loss_switches.assign([float(f) for f in flags] or [0.0])

    # ------------------------------------------------------------------ forward
    def call(self, images, training=None):
        return self.student(images, training=training)

    def predict_step(self, data):
        return self.student.predict_step(data)

    @staticmethod
    def _split(data):
        if isinstance(data, (tuple, list)):
            return data[0], data[1]
        raise ValueError("distiller.py: the dataset must yield (images, targets)")

    def _image_size(self, images):
        if images.shape[1] is not None:
            return int(images.shape[1])
        return tf.shape(images)[1]

    def _student_jol(self, student_outputs, encoded, image_size):
        """Raw JOL terms of the student + the per-level per-cell maps (reused)."""
        return jol_terms_and_cells(
            student_outputs["head"],
            encoded,
            self.strides,
            image_size,
            plain_class_weight=self.student.plain_class_weight,
            term_weights=self.student.loss_weights,
            quality=self.student.quality,
            objectness_target=self.student.objectness_target,
        )

    def compute_terms(self, images, targets, teacher_outputs, student_outputs):
        """All loss terms (float32 scalars, local-batch means) and the total to optimise."""
        image_size = self._image_size(images)
        encoded = self.student.encode_targets(targets, image_size)
        jol, cells = self._student_jol(student_outputs, encoded, image_size)
        values = {JOL_METRIC_PREFIX + name: jol[name] for name in JOL_TERM_NAMES + (TOTAL,)}
        distill_total = tf.constant(0.0, tf.float32)
        for name in DISTILL_TERM_NAMES:
            values[name] = tf.constant(0.0, tf.float32)
        switches = tf.cast(self.loss_switches, tf.float32)
        cls_scale = 1.0
        for index, loss in enumerate(self.distillation_losses):
            if not self.built_switched_on[index]:
                continue
            switch = switches[index]
            out = loss.compute(teacher_outputs, student_outputs, encoded, self.strides, image_size, student_cells=cells)
            for name, value in out.items():
                value = tf.cast(value, tf.float32) * switch
                values[name] = values.get(name, 0.0) + value
                distill_total += value
            cls_scale = cls_scale * (1.0 - switch * (1.0 - loss.student_cls_scale))
        student_total = jol[TOTAL] - (1.0 - cls_scale) * (jol["cls_pos"] + jol["cls_neg"])
        total = self.student_loss_weight * student_total + distill_total
        extra = [tf.cast(v, tf.float32) for v in self.student.losses]
        if extra:
            total += tf.add_n(extra)
        values[TOTAL] = total
        return values

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        images, targets = self._split(data)
        teacher_outputs = self.teacher(images, training=False)
        teacher_outputs = tf.nest.map_structure(tf.stop_gradient, teacher_outputs)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            student_outputs = self.student(images, training=True)
            values = self.compute_terms(images, targets, teacher_outputs, student_outputs)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = values[TOTAL] / float(replicas)
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(values)

    def test_step(self, data):
        images, targets = self._split(data)
        student_outputs = self.student(images, training=False)
        image_size = self._image_size(images)
        encoded = self.student.encode_targets(targets, image_size)
        jol, _ = self._student_jol(student_outputs, encoded, image_size)
        values = {JOL_METRIC_PREFIX + name: jol[name] for name in JOL_TERM_NAMES + (TOTAL,)}
        values[TOTAL] = jol[TOTAL]
        return self._update_metrics(values)

    def _update_metrics(self, values):
        for name, value in values.items():
            if name in self.term_trackers:
                self.term_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.term_trackers.items()}

    @property
    def metrics(self):
        return list(self.term_trackers.values())

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [keras.saving.serialize_keras_object(loss) for loss in self.distillation_losses],
            "distillation_loss_weights": self.distillation_loss_weights,
            "student_loss_weight": self.student_loss_weight,
            "image_size": self.image_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(c) for c in config["distillation_losses"]
        ]
        return cls(**config)
