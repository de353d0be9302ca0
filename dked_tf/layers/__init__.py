"""dked_tf.layers: serializable Keras layers (blocks, heads; DDC in `ddc.py`)."""

from dked_tf.layers.blocks import (  # noqa: F401
    CSA,
    DRF,
    SPP,
    ConvBNAct,
    CSA_part,
    CSAPart,
    DropBlock,
    SeparableConvBlock,
    channel_shuffle,
)
from dked_tf.layers.head import GGHLHead, LoDetHead  # noqa: F401
