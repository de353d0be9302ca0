"""OrientedDetector: backbone -> neck -> per-level GGHL-semantics heads, with decoding.

`model(images)` returns `{"backbone": [C3, C4, C5], "neck": [P3, P4, P5], "head": [H3, H4, H5]}`
(one pass, so a distiller gets every tap); `H_l` float32 raw logits `[B, S/s_l, S/s_l, 10+nC]`
(channel layout and decode in `dked_tf.ops.head_contract`). `decode` / `predict_step` give polygons, rotated
boxes, scores and classes after class-aware exact rotated NMS; `decode_cells` gives the
per-cell decode without NMS using TFLite builtin ops only (for exported graphs).
"""

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from dked_tf.layers.head import HEADS
from dked_tf.losses import assign as assign_lib
from dked_tf.losses.jol import check_objectness_target, check_quality, jol_loss, term_weights_of
from dked_tf.models import backbones as backbones_lib
from dked_tf.models import necks as necks_lib
from dked_tf.ops.head_contract import (
    HEAD_BOX_CHANNELS,
    JOL_TERM_NAMES,
    MIN_BOX_SIDE,
    TOTAL,
    decode_cell_polygons,
    decode_head_level,
)
from dked_tf.ops.nms import rotated_nms_tf
from dked_tf.ops.obb import poly_to_rbox_tf

BACKBONES = {"darknet53": backbones_lib.build_darknet53, "mobilenetv2": backbones_lib.build_mobilenetv2}


@keras.saving.register_keras_serializable(package="dked_tf")
class OrientedDetector(keras.Model):
    """Anchor-free oriented detector with GGHL per-cell outputs at strides 8/16/32 (or 4/8/16).

    Args:
      num_classes: nC.
      backbone: "darknet53" or "mobilenetv2"; `backbone_kwargs` go to its builder
        (`width`/`depths` for Darknet53, `alpha`/`weights` for MobileNetV2).
      neck: "gghl_fpn" or "csa_drf_fpn"; `neck_kwargs` (`width`, `drop_prob`, ...).
      head: "gghl" (decoupled) or "lodet" (CSA + 1x1); `head_kwargs` (`prior_prob`, ...).
      image_size: the training/inference input side in pixels (informational; the graph
        accepts any multiple of 32).
      horizontal_threshold: decoded area ratio above which the gliding offsets are zeroed.
      score_threshold, iou_threshold, max_detections: defaults of `decode`/`predict_step`.
      plain_class_weight: passed to `jol.jol_loss` by `compute_loss` (None: the module
        default `jol.DEFAULT_PLAIN_CLASS_WEIGHT`).
      level_reference_size: passed to `assign.encode_targets` by `compute_loss` (input size
        at which GGHL's level thresholds apply; None: 800, scaled by S/800).
      loss_weights: {JOL term: weight} replacing `jol.TERM_WEIGHTS` entries, e.g. {"obb": 4}
        (the probabilistic-IoU term of the decoded quadrilateral; absent: GGHL's weights).
      quality: the JOL localisation quality, "gghl" or "probiou" (`jol` module docstring).
      objectness_target: the JOL objectness target at positive cells, "fixed" (GGHL's 0.995)
        or "quality" (the cell's own localisation quality; `jol` module docstring).
      min_gaussian_sigma: floor (in cells) of the OLA Gaussian's sigma along both axes
        (`assign.encode_targets`; 0 = GGHL).
      min_stride: stride of the finest level: 8 (GGHL's levels 8/16/32) or 4 (levels 4/8/16:
        the backbone's stride-4 stage feeds the neck, no stride-32 stage; 4x the cells of the
        finest level, for objects a few pixels wide at the input).
    """

    def __init__(
        self,
        num_classes,
        backbone="darknet53",
        neck="gghl_fpn",
        head="gghl",
        backbone_kwargs=None,
        neck_kwargs=None,
        head_kwargs=None,
        image_size=800,
        horizontal_threshold=0.9,
        score_threshold=0.05,
        iou_threshold=0.3,
        max_detections=100,
        pre_nms_top_k=1000,
        preset=None,
        plain_class_weight=None,
        level_reference_size=None,
        loss_weights=None,
        quality="gghl",
        objectness_target="fixed",
        min_gaussian_sigma=0.0,
        min_stride=8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"detector.py: unknown backbone {backbone!r}; one of {list(BACKBONES)}")
        if neck not in necks_lib.NECKS:
            raise ValueError(f"detector.py: unknown neck {neck!r}; one of {list(necks_lib.NECKS)}")
        if head not in HEADS:
            raise ValueError(f"detector.py: unknown head {head!r}; one of {list(HEADS)}")
        self.num_classes = int(num_classes)
        self.min_stride = backbones_lib.check_min_stride(min_stride)
        self.strides = backbones_lib.level_strides(self.min_stride)
        self.backbone_name, self.neck_name, self.head_name = backbone, neck, head
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.neck_kwargs = dict(neck_kwargs or {})
        self.head_kwargs = dict(head_kwargs or {})
        self.image_size = int(image_size)
        self.horizontal_threshold = float(horizontal_threshold)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.preset = preset
        self.plain_class_weight = None if plain_class_weight is None else float(plain_class_weight)
        self.level_reference_size = None if level_reference_size is None else float(level_reference_size)
        self.loss_weights = {str(k): float(v) for k, v in (loss_weights or {}).items()}
        term_weights_of(self.loss_weights)  # unknown term names fail here
        self.quality = check_quality(quality)
        self.objectness_target = check_objectness_target(objectness_target)
        self.min_gaussian_sigma = float(min_gaussian_sigma)
        if self.min_gaussian_sigma < 0:
            raise ValueError(f"detector.py: min_gaussian_sigma must be >= 0 cells, got {min_gaussian_sigma}")

        self.backbone = BACKBONES[backbone](**self.backbone_kwargs, min_stride=self.min_stride)
        backbone_channels = [int(t.shape[-1]) for t in self.backbone.outputs]
        self.neck = necks_lib.NECKS[neck](backbone_channels, **self.neck_kwargs)
        neck_channels = [int(t.shape[-1]) for t in self.neck.outputs]
        self.heads = [
            HEADS[head](self.num_classes, name=f"head_p{level}", **self.head_kwargs) for level in self.level_numbers
        ]
        for layer, channels in zip(self.heads, neck_channels):
            layer.build((None, None, None, channels))
        self.channels = {"backbone": backbone_channels, "neck": neck_channels}
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in JOL_TERM_NAMES}
        self.built = True

    @property
    def level_numbers(self):
        """Pyramid level of each output (stride 2**level): (3, 4, 5) or (2, 3, 4)."""
        return tuple(int(s).bit_length() - 1 for s in self.strides)

    # ---------------------------------------------------------------- forward
    def call(self, images, training=None):
        features = self.backbone(images, training=training)
        pyramid = self.neck(features, training=training)
        outputs = [head(p, training=training) for head, p in zip(self.heads, pyramid)]
        return {"backbone": list(features), "neck": list(pyramid), "head": outputs}

    # ---------------------------------------------------------------- decoding
    def decode_cells(self, head_outputs):
        """Per-cell decode of all levels, no NMS, TFLite-builtin ops only.

        head_outputs: list of float32 `[B, H_l, W_l, 10+nC]`. Returns dict (N = sum H_l*W_l,
        levels in order, cells row-major):
          polygons float32 [B, N, 8] (input pixels, HBB clipped to the input image),
          scores float32 [B, N] = sqrt(sigmoid(obj) * max_c sigmoid(cls_c)),
          classes int32 [B, N] (best class), objectness [B, N], class_probs [B, N, nC].
        """
        polygons, objectness, class_probs = [], [], []
        for raw, stride in zip(head_outputs, self.strides):
            decoded = decode_head_level(raw, stride)
            batch = tf.shape(decoded["obj_prob"])[0]
            poly = decode_cell_polygons(decoded, stride, self.horizontal_threshold)
            polygons.append(tf.reshape(poly, [batch, -1, 8]))
            objectness.append(tf.reshape(decoded["obj_prob"], [batch, -1]))
            class_probs.append(tf.reshape(decoded["class_prob"], [batch, -1, self.num_classes]))
        polygons = tf.concat(polygons, axis=1)
        objectness = tf.concat(objectness, axis=1)
        class_probs = tf.concat(class_probs, axis=1)
        best = tf.reduce_max(class_probs, axis=-1)
        return {
            "polygons": polygons,
            "scores": tf.sqrt(objectness * best),
            "classes": tf.cast(tf.math.argmax(class_probs, axis=-1), tf.int32),
            "objectness": objectness,
            "class_probs": class_probs,
        }

    def decode(self, head_outputs, score_threshold=None, iou_threshold=None, max_detections=None, pre_nms_top_k=None):
        """Head outputs -> detections after class-aware exact rotated NMS (per image).

        Returns dict with K = max_detections (rows past `num_detections` are zero):
        polygons float32 [B, K, 8], rboxes float32 [B, K, 5] (le90), scores [B, K],
        classes int32 [B, K], num_detections int32 [B]; input pixels. Candidates: the
        `pre_nms_top_k` best cells with score > score_threshold whose HBB sides exceed
        MIN_BOX_SIDE (0.1 px).
        """
        score_threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        iou_threshold = self.iou_threshold if iou_threshold is None else float(iou_threshold)
        k = self.max_detections if max_detections is None else int(max_detections)
        top_k = self.pre_nms_top_k if pre_nms_top_k is None else int(pre_nms_top_k)
        cells = self.decode_cells(head_outputs)
        num_classes = self.num_classes

        def one_image(args):
            polys, scores, classes = args
            count = tf.minimum(tf.shape(scores)[0], top_k)
            scores, order = tf.math.top_k(scores, k=count)
            polys = tf.gather(polys, order)
            classes = tf.gather(classes, order)
            xs, ys = polys[:, 0::2], polys[:, 1::2]
            extent = tf.minimum(
                tf.reduce_max(xs, 1) - tf.reduce_min(xs, 1), tf.reduce_max(ys, 1) - tf.reduce_min(ys, 1)
            )
            # degenerate boxes (HBB side <= MIN_BOX_SIDE px after clipping) are invalid
            valid = tf.logical_and(scores > score_threshold, extent > MIN_BOX_SIDE)
            polys = tf.boolean_mask(polys, valid)
            scores = tf.boolean_mask(scores, valid)
            classes = tf.boolean_mask(classes, valid)
            kept = []
            for c in range(num_classes):
                members = tf.reshape(tf.where(tf.equal(classes, c)), [-1])

                def class_nms(members=members):
                    keep, num_kept = rotated_nms_tf(
                        tf.gather(polys, members), tf.gather(scores, members), iou_threshold, max_output=k
                    )
                    return tf.gather(members, tf.cast(keep[:num_kept], tf.int64))

                # rotated_nms_tf cannot take zero boxes (gather on an empty order)
                kept.append(tf.cond(tf.size(members) > 0, class_nms, lambda: tf.zeros([0], tf.int64)))
            kept = tf.concat(kept, axis=0)
            kept_scores = tf.gather(scores, kept)
            n = tf.minimum(tf.shape(kept)[0], k)
            kept_scores, order = tf.math.top_k(kept_scores, k=n)
            kept = tf.gather(kept, order)
            out_polys = tf.gather(polys, kept)
            out_rboxes = poly_to_rbox_tf(out_polys)
            pad = k - n
            return (
                tf.pad(out_polys, [[0, pad], [0, 0]]),
                tf.pad(tf.cast(out_rboxes, tf.float32), [[0, pad], [0, 0]]),
                tf.pad(kept_scores, [[0, pad]]),
                tf.pad(tf.gather(classes, kept), [[0, pad]]),
                n,
            )

        polys, rboxes, scores, classes, counts = tf.map_fn(
            one_image,
            (cells["polygons"], cells["scores"], cells["classes"]),
            fn_output_signature=(
                tf.TensorSpec([k, 8], tf.float32),
                tf.TensorSpec([k, 5], tf.float32),
                tf.TensorSpec([k], tf.float32),
                tf.TensorSpec([k], tf.int32),
                tf.TensorSpec([], tf.int32),
            ),
        )
        return {"polygons": polys, "rboxes": rboxes, "scores": scores, "classes": classes, "num_detections": counts}

    def cells_function(self, image_size=None, batch_size=1):
        """A `tf.function` with a fixed input signature `[batch_size, S, S, 3]` returning
        `decode_cells(model(images)["head"])` (dict, see `decode_cells`)."""
        size = int(image_size or self.image_size)

        @tf.function(input_signature=[tf.TensorSpec([batch_size, size, size, 3], tf.float32)])
        def cells(images):
            return self.decode_cells(self(images, training=False)["head"])

        return cells

    def to_tflite(self, image_size=None, batch_size=1):
        """fp32 TFLite flatbuffer (bytes) of `cells_function`, TFLITE_BUILTINS only (fails if
        any op would need TF-Select). The variables are frozen into constants first
        (converting the un-frozen concrete function of a Keras 3 model gives a flatbuffer
        with READ_VARIABLE ops / NaN outputs). Outputs in the order of the sorted keys:
        class_probs, classes, objectness, polygons, scores."""
        concrete = self.cells_function(image_size, batch_size).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(self(images, training=False)["head"])

    # ---------------------------------------------------------------- training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Encodes the pipeline targets `y` with OLA and returns the JOL total (scalar).

        The individual terms are tracked as metrics (`obj_pos`, `obj_neg`, `cls_pos`,
        `cls_neg`, `iou`, `s`, `r`, `l`, `obb`) and appear in the `fit`/`evaluate` logs.
        """
        if y_pred is None:
            y_pred = self(x, training=training)
        head = y_pred["head"] if isinstance(y_pred, dict) else y_pred
        image_size = self._input_size(x, head)
        encoded = self.encode_targets(y, image_size)
        terms = jol_loss(
            head,
            encoded,
            self.strides,
            image_size,
            plain_class_weight=self.plain_class_weight,
            term_weights=self.loss_weights,
            quality=self.quality,
            objectness_target=self.objectness_target,
        )
        for name, tracker in self.loss_trackers.items():
            if name in terms:
                tracker.update_state(terms[name])
        total = terms[TOTAL]
        if self.losses:
            total = total + tf.add_n([tf.cast(v, total.dtype) for v in self.losses])
        return total

    def encode_targets(self, targets, image_size):
        """OLA targets of the pipeline `targets` for this detector (its classes, strides and
        `level_reference_size`): the `assign.encode_targets` levels [B, H_l, W_l, 16 + nC]."""
        return assign_lib.encode_targets(
            targets,
            image_size,
            self.num_classes,
            strides=self.strides,
            level_reference_size=self.level_reference_size,
            min_gaussian_sigma=self.min_gaussian_sigma,
        )

    def _input_size(self, images, head):
        if images is not None and images.shape[1] is not None:
            return int(images.shape[1])
        if head[0].shape[1] is not None:
            return int(head[0].shape[1]) * self.strides[0]
        return tf.shape(head[0])[1] * self.strides[0]

    @property
    def metrics(self):
        base = list(super().metrics)
        known = {id(m) for m in base}
        return base + [t for t in self.loss_trackers.values() if id(t) not in known]

    # ---------------------------------------------------------------- pretrained weights
    def load_backbone_weights(self, weights, key="weights", verbose=1):
        """Pretrained weights into the backbone: "imagenet" or a file path, as
        `backbones.load_backbone_weights` takes them for this detector's backbone ("" or None:
        nothing). Not part of the config: a saved detector keeps its own trained weights.
        Returns the number of layers set."""
        alpha = self.backbone_kwargs.get("alpha", 1.0)
        return backbones_lib.load_backbone_weights(
            self.backbone, self.backbone_name, weights, alpha=alpha, key=key, verbose=verbose
        )

    # ---------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "neck": self.neck_name,
            "head": self.head_name,
            "backbone_kwargs": dict(self.backbone_kwargs),
            "neck_kwargs": dict(self.neck_kwargs),
            "head_kwargs": dict(self.head_kwargs),
            "image_size": self.image_size,
            "horizontal_threshold": self.horizontal_threshold,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "pre_nms_top_k": self.pre_nms_top_k,
            "preset": self.preset,
            "plain_class_weight": self.plain_class_weight,
            "level_reference_size": self.level_reference_size,
            "loss_weights": dict(self.loss_weights),
            "quality": self.quality,
            "objectness_target": self.objectness_target,
            "min_gaussian_sigma": self.min_gaussian_sigma,
            "min_stride": self.min_stride,
        }

    @property
    def config(self):
        return self.get_config()

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def parameter_counts(self):
        """Trainable + non-trainable parameters of backbone, neck, heads and the total."""

        def count(weights):
            return int(sum(int(tf.size(w)) for w in weights))

        heads = [w for h in self.heads for w in h.weights]
        return {
            "backbone": count(self.backbone.weights),
            "neck": count(self.neck.weights),
            "head": count(heads),
            "total": count(self.weights),
            "trainable": count(self.trainable_weights),
        }

    def summary(self, line_length=None, positions=None, print_fn=None, **kwargs):
        """One line per part (backbone, neck, heads) with channels and parameter counts, then
        the Keras summary of the parts (`expand_nested=True` lists every layer)."""
        print_fn = print_fn or print
        counts = self.parameter_counts()
        print_fn(
            f"OrientedDetector '{self.name}'"
            + (f" (preset {self.preset})" if self.preset else "")
            + f": {self.num_classes} classes, strides {self.strides}, "
            f"input {self.image_size} px"
        )
        print_fn(
            f"  backbone {self.backbone_name:<12} taps C3/C4/C5 channels "
            f"{self.channels['backbone']}  params {counts['backbone']:,}"
        )
        print_fn(
            f"  neck     {self.neck_name:<12} P3/P4/P5 channels {self.channels['neck']}  params {counts['neck']:,}"
        )
        print_fn(
            f"  heads    {self.head_name:<12} out channels {HEAD_BOX_CHANNELS + self.num_classes}"
            f" per level  params {counts['head']:,}"
        )
        print_fn(f"  total params {counts['total']:,} (trainable {counts['trainable']:,})")
        super().summary(line_length=line_length, positions=positions, print_fn=print_fn, **kwargs)
