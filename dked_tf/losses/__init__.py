"""dked_tf.losses: GGHL OLA label assignment (assign) and the JOL loss (jol)."""

from dked_tf.losses.assign import encode_targets, heatmap_max  # noqa: F401
from dked_tf.losses.jol import jol_loss, per_cell_terms  # noqa: F401
