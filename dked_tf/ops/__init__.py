"""Pure oriented-box math: conversions (`obb`), polygon IoU (`iou`), rotated NMS (`nms`), and the
head contract (`head_contract`: head and target channel layouts, the decode of raw head
outputs, clip constants, loss-term names).

numpy functions compute in float64; `*_tf` twins are TensorFlow (float32) and import TensorFlow
when first called, so `import dked_tf.ops` does not import TensorFlow. `dked_tf.ops.head_contract` is
TensorFlow code and is imported by name (`from dked_tf.ops.head_contract import ...`).
"""

from dked_tf.ops.iou import poly_iou, poly_iou_pairwise, poly_iou_pairwise_tf, poly_iou_tf
from dked_tf.ops.nms import batched_rotated_nms, fast_rotated_nms_tf, rotated_nms, rotated_nms_tf
from dked_tf.ops.obb import (
    mbox_to_poly,
    mbox_to_rbox,
    normalize_rbox,
    normalize_rbox_tf,
    orc_to_poly,
    orc_to_poly_tf,
    order_poly_for_orc,
    poly_area,
    poly_area_tf,
    poly_to_hbb,
    poly_to_hbb_tf,
    poly_to_orc,
    poly_to_orc_tf,
    poly_to_rbox,
    poly_to_rbox_tf,
    rbox_to_mbox,
    rbox_to_poly,
    rbox_to_poly_tf,
    rbox_to_xywhr,
    xywhr_to_rbox,
)

__all__ = [
    "batched_rotated_nms",
    "fast_rotated_nms_tf",
    "mbox_to_poly",
    "mbox_to_rbox",
    "normalize_rbox",
    "normalize_rbox_tf",
    "orc_to_poly",
    "orc_to_poly_tf",
    "order_poly_for_orc",
    "poly_area",
    "poly_area_tf",
    "poly_iou",
    "poly_iou_pairwise",
    "poly_iou_pairwise_tf",
    "poly_iou_tf",
    "poly_to_hbb",
    "poly_to_hbb_tf",
    "poly_to_orc",
    "poly_to_orc_tf",
    "poly_to_rbox",
    "poly_to_rbox_tf",
    "rbox_to_mbox",
    "rbox_to_poly",
    "rbox_to_poly_tf",
    "rbox_to_xywhr",
    "rotated_nms",
    "rotated_nms_tf",
    "xywhr_to_rbox",
]
